//! Audit events.
//!
//! Every request that passes through
//! [`RequestContextLayer`](crate::context::RequestContextLayer) produces exactly one event on the
//! `tracing` target [`TARGET`] (`portcullis::audit`): `WARN` for a refusal, `INFO` for a
//! completed request. Route a subscriber to that target to keep the audit trail apart from
//! application logs; the `secure_api` example writes them as JSON lines.
//!
//! Fields of every event:
//!
//! | field | meaning |
//! |---|---|
//! | `event` | `authn.failure`, `authz.deny`, `request.rejected`, `ratelimit.limited`, `lockout.locked`, `request.completed` |
//!
//! Authorization decisions additionally write their own `authz.decision` records (see
//! [`authz::decision`](crate::authz::decision)).
//! | `request_id` | the id also returned in `x-request-id` and in problem bodies |
//! | `method` | HTTP method |
//! | `route` | matched route template (`/documents/{id}`), when routing happened |
//! | `path` | request path without the query string (truncated to 256 bytes), on refusals before routing |
//! | `client_ip` | peer address (or a [`ClientIp`](crate::context::ClientIp) set by an outer layer) |
//! | `subject`, `auth_method` | the principal, when authenticated |
//! | `status` | HTTP status sent (200 for gRPC; see `grpc_status`) |
//! | `grpc_status` | gRPC status for gRPC refusals |
//! | `kind`, `reason`, `policy` | refusals only: the rejection kind, the private detail, the deciding policy |
//! | `decision_id` | refusals by a policy: links to the `authz.decision` record and the problem body |
//! | `duration_us` | time spent in the stack |
//!
//! No field can hold a credential: the query string is dropped, headers are never recorded, and
//! rejection details are written by portcullis without token material.

use std::net::IpAddr;

/// The `tracing` target of audit events.
pub const TARGET: &str = "portcullis::audit";

/// One request's audit record, emitted once at the edge.
#[derive(Debug)]
pub(crate) struct AuditRecord<'a> {
    pub(crate) event: &'static str,
    pub(crate) request_id: &'a str,
    pub(crate) method: &'a str,
    pub(crate) route: Option<&'a str>,
    pub(crate) path: Option<&'a str>,
    pub(crate) client_ip: Option<IpAddr>,
    pub(crate) subject: Option<&'a str>,
    pub(crate) auth_method: Option<&'a str>,
    pub(crate) status: u16,
    pub(crate) grpc_status: Option<u8>,
    pub(crate) kind: Option<&'a str>,
    pub(crate) reason: Option<&'a str>,
    pub(crate) policy: Option<&'a str>,
    pub(crate) decision_id: Option<&'a str>,
    pub(crate) duration_us: u64,
}

impl AuditRecord<'_> {
    pub(crate) fn emit(&self) {
        macro_rules! audit {
            ($level:expr) => {
                tracing::event!(
                    target: "portcullis::audit",
                    $level,
                    event = self.event,
                    request_id = self.request_id,
                    method = self.method,
                    route = self.route,
                    path = self.path,
                    client_ip = self.client_ip.map(tracing::field::display),
                    subject = self.subject,
                    auth_method = self.auth_method,
                    status = self.status,
                    grpc_status = self.grpc_status,
                    kind = self.kind,
                    reason = self.reason,
                    policy = self.policy,
                    decision_id = self.decision_id,
                    duration_us = self.duration_us,
                )
            };
        }
        if self.kind.is_some() {
            audit!(tracing::Level::WARN);
        } else {
            audit!(tracing::Level::INFO);
        }
    }
}

/// Truncates `path` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(path: &str, max: usize) -> &str {
    if path.len() <= max {
        return path;
    }
    let mut end = max;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}
