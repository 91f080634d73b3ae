//! Deny-by-default routing: axum routes and gRPC methods that cannot exist without a policy.
//!
//! - [`SecureRouter`] (feature `axum`) wraps [`axum::Router`]: every route is declared with a
//!   policy, unknown paths are 404 and unlisted methods 405.
//! - [`MethodPolicies`] maps gRPC methods (`/package.Service/Method`) to policies for a tonic
//!   server; unlisted methods are refused with `PERMISSION_DENIED`.
//!
//! Both produce a [`RouteReport`] listing every (method, route, policy), so a test or an
//! operator can review the whole surface.

mod grpc;
#[cfg(feature = "axum")]
mod router;

use std::fmt;

use serde::Serialize;

pub use grpc::{MethodPolicies, MethodPoliciesLayer, MethodPolicyService};
#[cfg(feature = "axum")]
pub use router::{SecureMethodRouter, SecureRouter, delete, get, patch, post, put};

/// One line of a [`RouteReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// The HTTP method (`GET` also serves `HEAD`).
    pub method: String,
    /// The route template.
    pub route: String,
    /// The policy's description.
    pub policy: String,
}

/// Every route of a [`SecureRouter`] with its policy, sorted by route then method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    /// The entries.
    pub routes: Vec<RouteEntry>,
}

impl RouteReport {
    /// The policy of `method route`, if declared.
    pub fn policy_of(&self, method: &str, route: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|e| e.method == method && e.route == route)
            .map(|e| e.policy.as_str())
    }
}

impl fmt::Display for RouteReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.routes {
            writeln!(f, "{:<7} {:<40} {}", e.method, e.route, e.policy)?;
        }
        Ok(())
    }
}

impl RouteReport {
    /// Appends the entries of `other` (for example the gRPC methods of a service that also
    /// serves HTTP routes) and keeps the list sorted.
    pub fn extend(&mut self, other: RouteReport) {
        self.routes.extend(other.routes);
        self.routes
            .sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
    }
}
