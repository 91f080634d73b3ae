//! gRPC method policies for tonic servers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{RouteEntry, RouteReport};
use crate::authz::guard::{AuthzConfig, GuardFuture, authorize};
use crate::authz::{Rbac, SharedPolicy};
use crate::error::ConfigError;
use crate::rejection::Rejection;

/// Maps gRPC methods to policies; every method not listed is refused with
/// `PERMISSION_DENIED`.
///
/// Methods are named by their HTTP/2 path, `/package.Service/Method`. A whole service can be
/// given a policy with [`service`](Self::service); a method entry takes precedence over its
/// service's entry.
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use portcullis::authz::{authenticated, public};
/// use portcullis::context::RequestContextLayer;
/// use portcullis::routing::MethodPolicies;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let policies = MethodPolicies::new()
///     .method("/grpc.health.v1.Health/Check", public())
///     .service("inventory.v1.Stock", authenticated())
///     .build()
///     .unwrap();
/// assert_eq!(policies.report().routes.len(), 2);
///
/// let svc = ServiceBuilder::new()
///     .layer(RequestContextLayer::new())
///     .layer(policies)
///     .service(service_fn(|_req: Request<String>| async {
///         Ok::<_, std::convert::Infallible>(Response::new(String::new()))
///     }));
/// let grpc = |path: &str| {
///     Request::post(path).header("content-type", "application/grpc").body(String::new()).unwrap()
/// };
/// let check = svc.clone().oneshot(grpc("/grpc.health.v1.Health/Check")).await.unwrap();
/// assert!(check.headers().get("grpc-status").is_none()); // passed through
/// let unlisted = svc.oneshot(grpc("/grpc.health.v1.Health/Watch")).await.unwrap();
/// assert_eq!(unlisted.headers()["grpc-status"], "7"); // PERMISSION_DENIED
/// # });
/// ```
///
/// # Deployment caveat
/// Policies read the principal set by [`AuthnLayer`](crate::authn::AuthnLayer): layer
/// [`Security`](crate::Security) outside this layer.
#[derive(Debug, Default)]
#[must_use]
pub struct MethodPolicies {
    methods: BTreeMap<String, SharedPolicy>,
    services: BTreeMap<String, SharedPolicy>,
    rbac: Option<Rbac>,
    errors: Vec<String>,
}

fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

impl MethodPolicies {
    /// No methods allowed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `rbac` (role hierarchy, role permissions) for every policy.
    pub fn with_rbac(mut self, rbac: Rbac) -> Self {
        self.rbac = Some(rbac);
        self
    }

    /// Allows `/package.Service/Method` under `policy`.
    pub fn method(mut self, path: &str, policy: SharedPolicy) -> Self {
        let valid = path
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(service, method)| {
                is_service_name(service)
                    && !method.is_empty()
                    && method
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
        if !valid {
            self.errors.push(format!(
                "{path:?} is not a gRPC method path (/package.Service/Method)"
            ));
        } else if self.methods.insert(path.to_owned(), policy).is_some() {
            self.errors.push(format!("{path} declared twice"));
        }
        self
    }

    /// Allows every method of `package.Service` under `policy` (methods listed individually
    /// keep their own policy).
    pub fn service(mut self, service: &str, policy: SharedPolicy) -> Self {
        if !is_service_name(service) {
            self.errors.push(format!(
                "{service:?} is not a gRPC service name (package.Service)"
            ));
        } else if self.services.insert(service.to_owned(), policy).is_some() {
            self.errors
                .push(format!("service {service} declared twice"));
        }
        self
    }

    /// Checks the declarations and builds the layer.
    pub fn build(self) -> Result<MethodPoliciesLayer, ConfigError> {
        if !self.errors.is_empty() {
            return Err(ConfigError::new(format!(
                "invalid gRPC method policies: {}",
                self.errors.join("; ")
            )));
        }
        Ok(MethodPoliciesLayer {
            table: Arc::new(Table {
                methods: self.methods,
                services: self.services,
                config: Arc::new(AuthzConfig::new(self.rbac.unwrap_or_default())),
            }),
        })
    }
}

struct Table {
    methods: BTreeMap<String, SharedPolicy>,
    services: BTreeMap<String, SharedPolicy>,
    config: Arc<AuthzConfig>,
}

impl Table {
    fn policy_for(&self, path: &str) -> Option<&SharedPolicy> {
        self.methods.get(path).or_else(|| {
            let service = path.strip_prefix('/')?.split_once('/')?.0;
            self.services.get(service)
        })
    }
}

/// The layer built by [`MethodPolicies::build`].
#[derive(Clone)]
#[must_use]
pub struct MethodPoliciesLayer {
    table: Arc<Table>,
}

impl fmt::Debug for MethodPoliciesLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodPoliciesLayer")
            .field("methods", &self.table.methods)
            .field("services", &self.table.services)
            .finish()
    }
}

impl MethodPoliciesLayer {
    /// Every declared method and service with its policy. Service-wide entries are listed as
    /// `/package.Service/*`.
    pub fn report(&self) -> RouteReport {
        let mut routes: Vec<RouteEntry> = self
            .table
            .methods
            .iter()
            .map(|(path, policy)| (path.clone(), policy))
            .chain(
                self.table
                    .services
                    .iter()
                    .map(|(service, policy)| (format!("/{service}/*"), policy)),
            )
            .map(|(route, policy)| RouteEntry {
                method: "GRPC".into(),
                route,
                policy: policy.id().to_string(),
            })
            .collect();
        routes.sort_by(|a, b| a.route.cmp(&b.route));
        RouteReport { routes }
    }
}

impl<S> Layer<S> for MethodPoliciesLayer {
    type Service = MethodPolicyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MethodPolicyService {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service produced by [`MethodPoliciesLayer`].
#[derive(Clone)]
pub struct MethodPolicyService<S> {
    inner: S,
    table: Arc<Table>,
}

impl<S: fmt::Debug> fmt::Debug for MethodPolicyService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodPolicyService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MethodPolicyService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let Some(policy) = self.table.policy_for(path) else {
            let rejection = Rejection::forbidden(format!(
                "gRPC method {} is not listed",
                crate::audit::truncate(path, 256)
            ))
            .with_policy_id("method_policies:unlisted");
            return GuardFuture::denied(rejection.into_deferred_response());
        };
        let route: Arc<str> = Arc::from(path);
        match authorize(policy, Some(&self.table.config), route, req) {
            Ok((req, route)) => GuardFuture::allowed(self.inner.call(req), route),
            Err(response) => GuardFuture::denied(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{authenticated, has_role, public};

    #[test]
    fn declarations_are_validated() {
        for bad in [
            "Health/Check",
            "/grpc.health.v1.Health",
            "/a..b/C",
            "/a.B/",
            "/a.B/C/D",
        ] {
            assert!(
                MethodPolicies::new().method(bad, public()).build().is_err(),
                "{bad}"
            );
        }
        assert!(
            MethodPolicies::new()
                .service("a..b", public())
                .build()
                .is_err()
        );
        let dup = MethodPolicies::new()
            .method("/a.B/C", public())
            .method("/a.B/C", authenticated())
            .build();
        assert!(dup.is_err());
    }

    #[test]
    fn method_entries_win_over_service_entries() {
        let layer = MethodPolicies::new()
            .service("inv.Stock", has_role("reader"))
            .method("/inv.Stock/Delete", has_role("admin"))
            .build()
            .unwrap();
        let t = &layer.table;
        assert_eq!(
            &**t.policy_for("/inv.Stock/Get").unwrap().id(),
            "has_role(reader)"
        );
        assert_eq!(
            &**t.policy_for("/inv.Stock/Delete").unwrap().id(),
            "has_role(admin)"
        );
        assert!(t.policy_for("/inv.Other/Get").is_none());
        assert!(t.policy_for("/inv.Stock").is_none());
        let report = layer.report();
        assert_eq!(
            report.policy_of("GRPC", "/inv.Stock/*"),
            Some("has_role(reader)")
        );
    }
}
