//! One refusal type, rendered once.
//!
//! Every layer and extractor in portcullis refuses a request with a [`Rejection`]: a
//! [`RejectionKind`], a private detail for the audit event, and a few optional response
//! parameters (`Retry-After`, `Allow`). One table ([`RejectionKind::status`],
//! [`RejectionKind::grpc_code`], [`RejectionKind::title`]) decides what the client sees:
//!
//! | kind | HTTP | gRPC | `WWW-Authenticate` |
//! |---|---|---|---|
//! | `MissingCredential` | 401 | 16 `UNAUTHENTICATED` | `Bearer` |
//! | `InvalidCredential` | 401 | 16 `UNAUTHENTICATED` | `Bearer error="invalid_token"` |
//! | `InvalidCredentialRequest` | 400 | 3 `INVALID_ARGUMENT` | `Bearer error="invalid_request"` |
//! | `Forbidden` | 403 | 7 `PERMISSION_DENIED` | `Bearer error="insufficient_scope"` |
//! | `BadRequest` | 400 | 3 `INVALID_ARGUMENT` | |
//! | `NotFound` | 404 | 5 `NOT_FOUND` | |
//! | `MethodNotAllowed` | 405 | 12 `UNIMPLEMENTED` | |
//! | `PayloadTooLarge` | 413 | 3 `INVALID_ARGUMENT` | |
//! | `UnsupportedMediaType` | 415 | 3 `INVALID_ARGUMENT` | |
//! | `ValidationFailed` | 422 | 3 `INVALID_ARGUMENT` | |
//! | `RateLimited`, `LockedOut` | 429 | 8 `RESOURCE_EXHAUSTED` | |
//! | `CrossSiteRequest` | 403 | 7 `PERMISSION_DENIED` | |
//!
//! HTTP clients get an RFC 9457 `application/problem+json` body whose text is fixed per kind
//! (a validation refusal adds an `errors` member listing [`FieldError`]s: paths and codes, never
//! values);
//! gRPC clients (request `content-type: application/grpc*`) get a trailers-only response. The
//! [`detail`](Rejection::detail) never reaches the client: it goes to the audit event.
//!
//! ```
//! use http::StatusCode;
//! use portcullis::rejection::{Rejection, RejectionKind};
//!
//! let r = Rejection::invalid_credential("signature did not verify");
//! assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
//! let response = r.to_http_response(Some("req-1"));
//! let body = String::from_utf8(response.body().to_vec()).unwrap();
//! assert!(body.contains("\"status\":401"));
//! assert!(!body.contains("signature")); // the detail stays private
//! assert_eq!(
//!     response.headers()["www-authenticate"],
//!     "Bearer error=\"invalid_token\", error_description=\"The access token is invalid or expired\""
//! );
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;

/// Why a request was refused. Each kind maps to exactly one HTTP status and one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No credential was presented, and the policy needs one.
    MissingCredential,
    /// A credential was presented and is invalid (bad signature, expired, revoked, unknown key...).
    InvalidCredential,
    /// The credential could not be read: several credentials at once, an empty or malformed
    /// `Authorization` header.
    InvalidCredentialRequest,
    /// Authenticated, but the policy does not allow this.
    Forbidden,
    /// The request is malformed (not about credentials).
    BadRequest,
    /// No such route.
    NotFound,
    /// The route exists, the method does not.
    MethodNotAllowed,
    /// The body is larger than allowed.
    PayloadTooLarge,
    /// The body's media type is not accepted.
    UnsupportedMediaType,
    /// The body or parameters were well-formed but failed validation.
    ValidationFailed,
    /// Too many requests for the caller's quota.
    RateLimited,
    /// Too many failed authentications; temporarily locked out.
    LockedOut,
    /// A state-changing request from another site, or without a valid CSRF token, on a
    /// cookie-authenticated route ([`CsrfLayer`](crate::headers::CsrfLayer)).
    CrossSiteRequest,
}

/// gRPC status codes used by the rejection table.
mod grpc {
    pub(super) const INVALID_ARGUMENT: u8 = 3;
    pub(super) const NOT_FOUND: u8 = 5;
    pub(super) const PERMISSION_DENIED: u8 = 7;
    pub(super) const RESOURCE_EXHAUSTED: u8 = 8;
    pub(super) const UNIMPLEMENTED: u8 = 12;
    pub(super) const UNAUTHENTICATED: u8 = 16;
}

struct Row {
    status: StatusCode,
    grpc: u8,
    slug: &'static str,
    title: &'static str,
    detail: &'static str,
    bearer_error: Option<&'static str>,
    audit_event: &'static str,
}

impl RejectionKind {
    /// The one table. Every rendering reads from here.
    const fn row(self) -> Row {
        use RejectionKind::*;
        match self {
            MissingCredential => Row {
                status: StatusCode::UNAUTHORIZED,
                grpc: grpc::UNAUTHENTICATED,
                slug: "authentication-required",
                title: "Authentication required",
                detail: "This resource requires authentication.",
                bearer_error: None,
                audit_event: "authz.deny",
            },
            InvalidCredential => Row {
                status: StatusCode::UNAUTHORIZED,
                grpc: grpc::UNAUTHENTICATED,
                slug: "invalid-credential",
                title: "Invalid credential",
                detail: "The access token is invalid or expired.",
                bearer_error: Some("invalid_token"),
                audit_event: "authn.failure",
            },
            InvalidCredentialRequest => Row {
                status: StatusCode::BAD_REQUEST,
                grpc: grpc::INVALID_ARGUMENT,
                slug: "invalid-credential-request",
                title: "Invalid authentication request",
                detail: "The request must carry exactly one well-formed credential.",
                bearer_error: Some("invalid_request"),
                audit_event: "authn.failure",
            },
            Forbidden => Row {
                status: StatusCode::FORBIDDEN,
                grpc: grpc::PERMISSION_DENIED,
                slug: "forbidden",
                title: "Forbidden",
                detail: "You are not allowed to perform this action.",
                bearer_error: Some("insufficient_scope"),
                audit_event: "authz.deny",
            },
            BadRequest => Row {
                status: StatusCode::BAD_REQUEST,
                grpc: grpc::INVALID_ARGUMENT,
                slug: "bad-request",
                title: "Bad request",
                detail: "The request is malformed.",
                bearer_error: None,
                audit_event: "request.rejected",
            },
            NotFound => Row {
                status: StatusCode::NOT_FOUND,
                grpc: grpc::NOT_FOUND,
                slug: "not-found",
                title: "Not found",
                detail: "No such resource.",
                bearer_error: None,
                audit_event: "request.rejected",
            },
            MethodNotAllowed => Row {
                status: StatusCode::METHOD_NOT_ALLOWED,
                grpc: grpc::UNIMPLEMENTED,
                slug: "method-not-allowed",
                title: "Method not allowed",
                detail: "This method is not allowed on this resource.",
                bearer_error: None,
                audit_event: "request.rejected",
            },
            PayloadTooLarge => Row {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                grpc: grpc::INVALID_ARGUMENT,
                slug: "payload-too-large",
                title: "Payload too large",
                detail: "The request body is too large.",
                bearer_error: None,
                audit_event: "request.rejected",
            },
            UnsupportedMediaType => Row {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                grpc: grpc::INVALID_ARGUMENT,
                slug: "unsupported-media-type",
                title: "Unsupported media type",
                detail: "The request body's media type is not accepted.",
                bearer_error: None,
                audit_event: "request.rejected",
            },
            ValidationFailed => Row {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                grpc: grpc::INVALID_ARGUMENT,
                slug: "validation-failed",
                title: "Validation failed",
                detail: "The request is well-formed but some values are not acceptable.",
                bearer_error: None,
                audit_event: "request.rejected",
            },
            RateLimited => Row {
                status: StatusCode::TOO_MANY_REQUESTS,
                grpc: grpc::RESOURCE_EXHAUSTED,
                slug: "rate-limited",
                title: "Too many requests",
                detail: "The request rate limit was exceeded.",
                bearer_error: None,
                audit_event: "ratelimit.limited",
            },
            LockedOut => Row {
                status: StatusCode::TOO_MANY_REQUESTS,
                grpc: grpc::RESOURCE_EXHAUSTED,
                slug: "locked-out",
                title: "Too many requests",
                detail: "Too many failed attempts; try again later.",
                bearer_error: None,
                audit_event: "lockout.locked",
            },
            CrossSiteRequest => Row {
                status: StatusCode::FORBIDDEN,
                grpc: grpc::PERMISSION_DENIED,
                slug: "cross-site-request",
                title: "Forbidden",
                detail: "This request must come from the site itself.",
                bearer_error: None,
                audit_event: "csrf.refused",
            },
        }
    }

    /// The HTTP status for this kind.
    pub const fn status(self) -> StatusCode {
        self.row().status
    }
    /// The gRPC status code for this kind.
    pub const fn grpc_code(self) -> u8 {
        self.row().grpc
    }
    /// The fixed, public title.
    pub const fn title(self) -> &'static str {
        self.row().title
    }
    /// The fixed, public explanation shown to clients.
    pub const fn public_detail(self) -> &'static str {
        self.row().detail
    }
    /// The RFC 6750 `error` code, for kinds that carry a Bearer challenge with one.
    pub const fn bearer_error(self) -> Option<&'static str> {
        self.row().bearer_error
    }
    /// The problem `type` URI.
    pub fn problem_type(self) -> String {
        format!("urn:portcullis:problem:{}", self.row().slug)
    }
    /// The audit event type this refusal is recorded under (`authn.failure`, `authz.deny`, ...).
    pub const fn audit_event_type(self) -> &'static str {
        self.row().audit_event
    }
    /// Every kind, in declaration order (the metrics' static label keys are built from it).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) const ALL: [RejectionKind; 13] = {
        use RejectionKind::*;
        [
            MissingCredential,
            InvalidCredential,
            InvalidCredentialRequest,
            Forbidden,
            BadRequest,
            NotFound,
            MethodNotAllowed,
            PayloadTooLarge,
            UnsupportedMediaType,
            ValidationFailed,
            RateLimited,
            LockedOut,
            CrossSiteRequest,
        ]
    };
    /// A stable snake_case name for logs and metrics (`invalid_credential`, ...).
    pub const fn name(self) -> &'static str {
        use RejectionKind::*;
        match self {
            MissingCredential => "missing_credential",
            InvalidCredential => "invalid_credential",
            InvalidCredentialRequest => "invalid_credential_request",
            Forbidden => "forbidden",
            BadRequest => "bad_request",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            ValidationFailed => "validation_failed",
            RateLimited => "rate_limited",
            LockedOut => "locked_out",
            CrossSiteRequest => "cross_site_request",
        }
    }
    /// Whether the response carries a `WWW-Authenticate: Bearer` challenge.
    pub const fn has_challenge(self) -> bool {
        matches!(
            self,
            RejectionKind::MissingCredential
                | RejectionKind::InvalidCredential
                | RejectionKind::InvalidCredentialRequest
                | RejectionKind::Forbidden
        )
    }
}

#[derive(Clone)]
struct Inner {
    kind: RejectionKind,
    detail: Cow<'static, str>,
    retry_after: Option<Duration>,
    allow: Option<HeaderValue>,
    policy_id: Option<Arc<str>>,
    decision_id: Option<Arc<str>>,
    field_errors: Option<Arc<[FieldError]>>,
}

/// The most field errors one problem document lists; the rest are counted in the audit detail
/// only, so a hostile body with thousands of bad items cannot inflate the response.
pub const MAX_FIELD_ERRORS: usize = 32;

/// One failed field of a [`RejectionKind::ValidationFailed`] refusal: where (a path such as
/// `items[2].name`) and why (a stable code such as `length`), never the submitted value.
///
/// Both parts are sanitized on construction: a path component that is not identifier-like (a
/// map key a client chose, say) is shown as `*`, and a code that is not a short
/// `snake_case`/dotted word becomes `invalid`, so no client-controlled text can reach the
/// response through a field error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    path: String,
    code: Cow<'static, str>,
}

impl FieldError {
    /// A field error at `path` (components separated by `.`, indexes as `[n]`) with `code`.
    pub fn new(path: &str, code: impl Into<Cow<'static, str>>) -> Self {
        let code = code.into();
        let code = if is_code(&code) {
            code
        } else {
            Cow::Borrowed("invalid")
        };
        Self {
            path: sanitize_path(path),
            code,
        }
    }
    /// The sanitized path (empty for the value as a whole).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The code.
    pub fn code(&self) -> &str {
        &self.code
    }
}

fn is_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_lowercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn is_identifier(part: &str) -> bool {
    (1..=64).contains(&part.len())
        && part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Keeps identifier components and numeric indexes, replaces anything else by `*`.
fn sanitize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len().min(256));
    for (i, component) in path.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        let (name, indexes) = match component.find('[') {
            Some(at) => component.split_at(at),
            None => (component, ""),
        };
        if !name.is_empty() || i > 0 || indexes.is_empty() {
            out.push_str(if is_identifier(name) || (name.is_empty() && i == 0) {
                name
            } else {
                "*"
            });
        }
        for index in indexes.split_inclusive(']') {
            let digits = index
                .strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .filter(|d| (1..=10).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()));
            out.push('[');
            out.push_str(digits.unwrap_or("*"));
            out.push(']');
        }
        if out.len() > 256 {
            out.truncate(256);
            break;
        }
    }
    out
}

/// A refused request: what the client is told (fixed per kind) and what the audit log is told
/// (the private detail).
///
/// A rejection travels in the response extensions so that the outermost layer
/// ([`RequestContextLayer`](crate::context::RequestContextLayer)) renders it once and records
/// it. Construct one with the shorthand constructors; never put a credential in the detail.
#[derive(Clone)]
pub struct Rejection {
    inner: Box<Inner>,
}

impl Rejection {
    /// A rejection of `kind` with a private `detail` for the audit log.
    pub fn new(kind: RejectionKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                detail: detail.into(),
                retry_after: None,
                allow: None,
                policy_id: None,
                decision_id: None,
                field_errors: None,
            }),
        }
    }
    /// 401: no credential where one is required.
    pub fn missing_credential() -> Self {
        Self::new(RejectionKind::MissingCredential, "no credential presented")
    }
    /// 401: the credential is invalid.
    pub fn invalid_credential(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::InvalidCredential, detail)
    }
    /// 400: the credential could not be read, or several were presented.
    pub fn invalid_credential_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::InvalidCredentialRequest, detail)
    }
    /// 403: authenticated but not allowed.
    pub fn forbidden(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(RejectionKind::Forbidden, detail)
    }
    /// 404.
    pub fn not_found() -> Self {
        Self::new(RejectionKind::NotFound, "no route matched")
    }
    /// 405, listing the allowed methods in `Allow`.
    pub fn method_not_allowed(allow: HeaderValue) -> Self {
        let mut r = Self::new(RejectionKind::MethodNotAllowed, "method not routed");
        r.inner.allow = Some(allow);
        r
    }

    /// An empty-bodied response with this rejection's status and headers, carrying the
    /// rejection in its extensions. Layers return this; the edge
    /// ([`RequestContextLayer`](crate::context::RequestContextLayer)) renders the body.
    pub fn into_deferred_response<B: Default>(self) -> Response<B> {
        let (parts, _) = self.to_http_response(None).into_parts();
        let mut response = Response::from_parts(parts, B::default());
        response.extensions_mut().insert(self);
        response
    }

    /// Adds a `Retry-After` (rounded up to whole seconds, at least 1).
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.inner.retry_after = Some(after);
        self
    }
    /// Records the id of the policy that refused.
    pub fn with_policy_id(mut self, policy_id: impl Into<Arc<str>>) -> Self {
        self.inner.policy_id = Some(policy_id.into());
        self
    }

    /// Records the id of the authorization decision that refused; it is shown to the client
    /// (as `decision_id` in the problem body) so an operator can find the decision record.
    pub fn with_decision_id(mut self, decision_id: impl Into<Arc<str>>) -> Self {
        self.inner.decision_id = Some(decision_id.into());
        self
    }
    /// Attaches the failed fields of a validation refusal; the problem body lists the first
    /// [`MAX_FIELD_ERRORS`] of them as `errors: [{"path": ..., "code": ...}]`.
    pub fn with_field_errors(mut self, errors: impl IntoIterator<Item = FieldError>) -> Self {
        let errors: Vec<FieldError> = errors.into_iter().take(MAX_FIELD_ERRORS).collect();
        self.inner.field_errors = (!errors.is_empty()).then(|| errors.into());
        self
    }
    /// The failed fields attached with [`with_field_errors`](Self::with_field_errors).
    pub fn field_errors(&self) -> &[FieldError] {
        self.inner.field_errors.as_deref().unwrap_or(&[])
    }
    /// The id of the authorization decision that refused, when one did.
    pub fn decision_id(&self) -> Option<&str> {
        self.inner.decision_id.as_deref()
    }

    /// The kind.
    pub fn kind(&self) -> RejectionKind {
        self.inner.kind
    }
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.inner.kind.status()
    }
    /// The private detail (for the audit event, never for the client).
    pub fn detail(&self) -> &str {
        &self.inner.detail
    }
    /// The policy that refused, when a policy did.
    pub fn policy_id(&self) -> Option<&str> {
        self.inner.policy_id.as_deref()
    }
    /// The `Retry-After` delay, when set.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Renders the RFC 9457 problem response. `request_id` is echoed so a client can quote it
    /// to an operator, who finds the detail in the audit log under the same id.
    pub fn to_http_response(&self, request_id: Option<&str>) -> Response<Bytes> {
        let kind = self.inner.kind;
        let problem = Problem {
            r#type: kind.problem_type(),
            title: kind.title(),
            status: kind.status().as_u16(),
            detail: kind.public_detail(),
            request_id,
            decision_id: self.inner.decision_id.as_deref(),
            errors: self.inner.field_errors.as_deref(),
        };
        // Serializing a struct of strings and integers cannot fail.
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = kind.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        self.insert_common_headers(headers);
        response
    }

    /// Renders a trailers-only gRPC response (HTTP 200, `grpc-status`, `grpc-message`).
    pub fn to_grpc_response(&self) -> Response<Bytes> {
        let kind = self.inner.kind;
        let mut response = Response::new(Bytes::new());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(kind.grpc_code())),
        );
        // Titles are ASCII without `%`, so they need no percent-encoding.
        headers.insert("grpc-message", HeaderValue::from_static(kind.title()));
        self.insert_common_headers(headers);
        response
    }

    fn insert_common_headers(&self, headers: &mut http::HeaderMap) {
        let kind = self.inner.kind;
        if kind.has_challenge() {
            headers.insert(header::WWW_AUTHENTICATE, bearer_challenge(kind));
        }
        if let Some(after) = self.inner.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(allow) = &self.inner.allow {
            headers.insert(header::ALLOW, allow.clone());
        }
    }
}

fn bearer_challenge(kind: RejectionKind) -> HeaderValue {
    match kind {
        RejectionKind::InvalidCredential => HeaderValue::from_static(
            "Bearer error=\"invalid_token\", error_description=\"The access token is invalid or expired\"",
        ),
        RejectionKind::InvalidCredentialRequest => HeaderValue::from_static(
            "Bearer error=\"invalid_request\", error_description=\"Exactly one well-formed credential is required\"",
        ),
        RejectionKind::Forbidden => HeaderValue::from_static(
            "Bearer error=\"insufficient_scope\", error_description=\"The credential does not allow this action\"",
        ),
        _ => HeaderValue::from_static("Bearer"),
    }
}

#[derive(Serialize)]
struct Problem<'a> {
    r#type: String,
    title: &'static str,
    status: u16,
    detail: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<&'a [FieldError]>,
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.inner.kind)
            .field("detail", &self.inner.detail)
            .field("policy_id", &self.inner.policy_id)
            .finish_non_exhaustive()
    }
}

/// Shows the public title only, so that formatting a rejection into a client-facing string can
/// never leak the detail.
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inner.kind.title())
    }
}

impl std::error::Error for Rejection {}

/// Whether a request is gRPC, judged by its `content-type` (`application/grpc`,
/// `application/grpc+proto`, `application/grpc-web`...).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(is_grpc_content_type)
}

/// Whether a `content-type` value is gRPC's (see [`is_grpc`]).
pub(crate) fn is_grpc_content_type(content_type: &http::HeaderValue) -> bool {
    content_type.as_bytes().starts_with(b"application/grpc")
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        let (parts, body) = self.to_http_response(None).into_parts();
        let mut response =
            axum::response::Response::from_parts(parts, axum::body::Body::from(body));
        // The edge layer re-renders from this (adding the request id, or switching to gRPC).
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [RejectionKind; 13] = RejectionKind::ALL;

    #[test]
    fn table_statuses_and_grpc_codes() {
        let expected: [(u16, u8); 13] = [
            (401, 16),
            (401, 16),
            (400, 3),
            (403, 7),
            (400, 3),
            (404, 5),
            (405, 12),
            (413, 3),
            (415, 3),
            (422, 3),
            (429, 8),
            (429, 8),
            (403, 7),
        ];
        for (kind, (status, code)) in ALL.iter().zip(expected) {
            assert_eq!(kind.status().as_u16(), status, "{kind:?}");
            assert_eq!(kind.grpc_code(), code, "{kind:?}");
        }
    }

    #[test]
    fn problem_body_is_fixed_and_never_carries_detail() {
        for kind in ALL {
            let secret_detail = "eyJhbGciOiJIUzI1NiJ9.secret-token-material";
            let r = Rejection::new(kind, secret_detail);
            let response = r.to_http_response(Some("rid-42"));
            assert_eq!(response.status(), kind.status());
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/problem+json"
            );
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["status"], kind.status().as_u16());
            assert_eq!(body["title"], kind.title());
            assert_eq!(body["request_id"], "rid-42");
            assert!(
                body["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:portcullis:problem:")
            );
            let text = String::from_utf8(response.body().to_vec()).unwrap();
            assert!(!text.contains("secret"), "{kind:?} leaked detail");
            assert!(!format!("{r}").contains("secret"));
            let grpc = r.to_grpc_response();
            assert_eq!(grpc.status(), StatusCode::OK);
            assert_eq!(
                grpc.headers()["grpc-status"],
                kind.grpc_code().to_string().as_str()
            );
            assert!(grpc.body().is_empty());
        }
    }

    #[test]
    fn challenges_follow_rfc6750() {
        let missing = Rejection::missing_credential().to_http_response(None);
        assert_eq!(missing.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let forbidden = Rejection::forbidden("x").to_http_response(None);
        assert!(
            forbidden.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer error=\"insufficient_scope\"")
        );
        let not_found = Rejection::not_found().to_http_response(None);
        assert!(not_found.headers().get(header::WWW_AUTHENTICATE).is_none());
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = Rejection::new(RejectionKind::RateLimited, "x")
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(r.to_http_response(None).headers()[header::RETRY_AFTER], "2");
        let r = Rejection::new(RejectionKind::RateLimited, "x")
            .with_retry_after(Duration::from_millis(10));
        assert_eq!(r.to_http_response(None).headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn field_errors_are_listed_and_sanitized() {
        let r =
            Rejection::new(RejectionKind::ValidationFailed, "title: length").with_field_errors([
                FieldError::new("title", "length"),
                FieldError::new("items[2].name", "pattern"),
                FieldError::new("tags.secret value", "Value 'hunter2' is bad"),
                FieldError::new("m[x1]", "range"),
            ]);
        let body: serde_json::Value =
            serde_json::from_slice(r.to_http_response(None).body()).unwrap();
        assert_eq!(
            body["errors"],
            serde_json::json!([
                {"path": "title", "code": "length"},
                {"path": "items[2].name", "code": "pattern"},
                {"path": "tags.*", "code": "invalid"},
                {"path": "m[*]", "code": "range"},
            ])
        );
        let many = Rejection::new(RejectionKind::ValidationFailed, "x")
            .with_field_errors((0..100).map(|i| FieldError::new(&format!("f{i}"), "required")));
        assert_eq!(many.field_errors().len(), MAX_FIELD_ERRORS);
        let plain = Rejection::not_found().to_http_response(None);
        let body: serde_json::Value = serde_json::from_slice(plain.body()).unwrap();
        assert!(body.get("errors").is_none());
    }

    #[test]
    fn grpc_detection() {
        let mut h = http::HeaderMap::new();
        assert!(!is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&h));
    }
}
