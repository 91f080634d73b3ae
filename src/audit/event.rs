//! The audit event schema (version [`SCHEMA_VERSION`]).

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;

use crate::context::RequestId;
use crate::principal::{AuthMethod, Principal, PrincipalKind};

/// The version of the event schema, written as `v` in every event. It changes when a field is
/// removed or changes meaning; new fields and event types keep it.
pub const SCHEMA_VERSION: u32 = 1;

/// What happened. The wire names (`authn.failure`, ...) are stable; see
/// `docs/audit-events.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// A credential was verified (sampled; off by default, the request's own event names the
    /// principal).
    AuthnSuccess,
    /// A credential was presented and refused, or could not be read.
    AuthnFailure,
    /// A request passed its policy and completed (sampled).
    AuthzAllow,
    /// A policy refused the request (including "authentication required").
    AuthzDeny,
    /// One authorization decision, with its id, policy and reason code (denials always,
    /// allows sampled by the guard).
    AuthzDecision,
    /// A rate limit refused the request.
    RateLimited,
    /// A client was locked out after repeated failures, or a locked-out client was refused.
    LockoutLocked,
    /// A token was revoked (by `jti` or by subject).
    TokenRevoked,
    /// Signing keys changed (a JWKS refresh installed a different key set) or a key ring
    /// rotated.
    KeyRotated,
    /// A configuration was loaded (at startup or on reload).
    ConfigLoaded,
    /// The alert detector saw a spike; see the `details` field.
    SecurityAlert,
    /// A request refused for its form rather than its caller: unknown route, wrong method,
    /// body too large, unsupported media type, validation failure.
    RequestRejected,
    /// The JSON-lines writer lost events (overflow with the drop policy); `details.dropped`
    /// counts them.
    AuditLoss,
    /// The hash-chained file was closed cleanly; the last line of an intact file.
    AuditSealed,
    /// A rate limit in shadow mode would have refused a request (it passed).
    RateLimitShadow,
    /// A lockout in shadow mode would have refused a request (it passed).
    LockoutShadow,
    /// The shared rate-limit store did not answer; the local limiter decided (fail open).
    RateLimitFallback,
    /// The shared rate-limit store did not answer; the request was refused (fail closed).
    RateLimitStoreUnavailable,
    /// A candidate policy evaluated beside the enforced one decided differently.
    AuthzShadowDisagreement,
    /// The shared lockout store did not answer; the layer's local counters decided (fail open).
    LockoutFallback,
    /// The shared lockout store did not answer; the request was refused (fail closed).
    LockoutStoreUnavailable,
}

impl EventType {
    /// The stable wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::AuthnSuccess => "authn.success",
            EventType::AuthnFailure => "authn.failure",
            EventType::AuthzAllow => "authz.allow",
            EventType::AuthzDeny => "authz.deny",
            EventType::AuthzDecision => "authz.decision",
            EventType::RateLimited => "ratelimit.limited",
            EventType::LockoutLocked => "lockout.locked",
            EventType::TokenRevoked => "token.revoked",
            EventType::KeyRotated => "key.rotated",
            EventType::ConfigLoaded => "config.loaded",
            EventType::SecurityAlert => "security.alert",
            EventType::RequestRejected => "request.rejected",
            EventType::AuditLoss => "audit.loss",
            EventType::AuditSealed => "audit.sealed",
            EventType::RateLimitShadow => "ratelimit.shadow",
            EventType::LockoutShadow => "lockout.shadow",
            EventType::RateLimitFallback => "ratelimit.fallback",
            EventType::RateLimitStoreUnavailable => "ratelimit.store_unavailable",
            EventType::LockoutFallback => "lockout.fallback",
            EventType::LockoutStoreUnavailable => "lockout.store_unavailable",
            EventType::AuthzShadowDisagreement => "authz.shadow_disagreement",
        }
    }

    /// The type for the wire name of a refusal in the rejection table.
    pub(crate) fn from_rejection_event(name: &str) -> EventType {
        match name {
            "authn.failure" => EventType::AuthnFailure,
            "authz.deny" => EventType::AuthzDeny,
            "ratelimit.limited" => EventType::RateLimited,
            "lockout.locked" => EventType::LockoutLocked,
            _ => EventType::RequestRejected,
        }
    }

    /// Whether this records a success (subject to sampling).
    pub const fn is_success(self) -> bool {
        matches!(self, EventType::AuthnSuccess | EventType::AuthzAllow)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How serious an event is: `WARN` for refusals and alerts, `INFO` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Normal operation.
    Info,
    /// A refusal, a loss or an alert.
    Warn,
}

impl Severity {
    /// `INFO` or `WARN`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "INFO",
            Severity::Warn => "WARN",
        }
    }
}

/// A value of an event-specific detail.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DetailValue {
    /// Text.
    Str(Cow<'static, str>),
    /// A count or size.
    U64(u64),
    /// A flag.
    Bool(bool),
}

impl From<&'static str> for DetailValue {
    fn from(v: &'static str) -> Self {
        DetailValue::Str(Cow::Borrowed(v))
    }
}
impl From<String> for DetailValue {
    fn from(v: String) -> Self {
        DetailValue::Str(Cow::Owned(v))
    }
}
impl From<u64> for DetailValue {
    fn from(v: u64) -> Self {
        DetailValue::U64(v)
    }
}
impl From<u32> for DetailValue {
    fn from(v: u32) -> Self {
        DetailValue::U64(u64::from(v))
    }
}
impl From<bool> for DetailValue {
    fn from(v: bool) -> Self {
        DetailValue::Bool(v)
    }
}

/// A W3C trace context id taken from a valid `traceparent` header (32 lowercase hex digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The trace id of a `traceparent` value (`00-<trace-id>-<parent-id>-<flags>`), if it is
    /// well-formed and not all zeros.
    pub fn from_traceparent(value: &[u8]) -> Option<TraceId> {
        // version "-" trace-id(32) "-" parent-id(16) "-" flags(2); future versions may append.
        if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let is_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if !value[..2].iter().all(is_hex) || &value[..2] == b"ff" {
            return None;
        }
        let mut id = [0u8; 32];
        id.copy_from_slice(&value[3..35]);
        if !id.iter().all(is_hex) || id.iter().all(|b| *b == b'0') {
            return None;
        }
        if !value[36..52].iter().all(is_hex) || !value[53..55].iter().all(is_hex) {
            return None;
        }
        if value[..2] == *b"00" && value.len() != 55 {
            return None;
        }
        Some(TraceId(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The id's 16 bytes (its digits decoded): half the size, for state kept per request.
    /// Always `Some` (only lowercase hex digits are stored).
    pub(crate) fn to_bytes(self) -> Option<[u8; 16]> {
        crate::hex::decode(&self.0, crate::hex::Letters::Lowercase)
    }

    /// The id back from [`to_bytes`](Self::to_bytes) (lowercase digits, as they were read).
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> TraceId {
        let mut id = [0u8; 32];
        crate::hex::encode_into(&bytes, &mut id);
        TraceId(id)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event. Every field is optional except the time and the type; see
/// `docs/audit-events.md` for the meaning of each and [`SCHEMA_VERSION`].
///
/// There is no field that could carry a credential: no headers, no query string, no token,
/// no key material. The principal is recorded by its identifiers (subject, kind, issuer,
/// authentication method, key id), never by its claims.
///
/// ```
/// use portcullis::audit::{AuditEvent, EventType};
///
/// let event = AuditEvent::new(EventType::TokenRevoked)
///     .with_reason_code("revoked_by_operator")
///     .with_detail("jti", "4f1c2a");
/// let line = event.to_json();
/// assert!(line.starts_with("{\"v\":1,"));
/// assert!(line.contains("\"event\":\"token.revoked\""));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuditEvent {
    /// When the event happened.
    pub timestamp: SystemTime,
    /// What happened.
    pub event: EventType,
    /// How serious it is.
    pub severity: Severity,
    /// The request id (also in `x-request-id` and in problem bodies).
    pub request_id: Option<RequestId>,
    /// The W3C trace id of the request's `traceparent`, when it carried a valid one.
    pub trace_id: Option<TraceId>,
    /// The authorization decision id (also in the problem body of a denial).
    pub decision_id: Option<Arc<str>>,
    /// The authenticated caller, recorded by identifiers only.
    pub principal: Option<Principal>,
    /// The client address.
    pub client_ip: Option<IpAddr>,
    /// The HTTP method.
    pub method: Option<Method>,
    /// The matched route template (`/documents/{id}`), never the raw path.
    pub route: Option<Arc<str>>,
    /// The request path without its query string, truncated to 256 bytes; only on refusals
    /// before a route matched.
    pub path: Option<Box<str>>,
    /// The gRPC method (`/package.Service/Method`, truncated to 256 bytes) of a gRPC request.
    pub grpc_method: Option<Box<str>>,
    /// The HTTP status sent.
    pub status: Option<u16>,
    /// The gRPC status of a gRPC refusal.
    pub grpc_status: Option<u8>,
    /// The policies that decided.
    pub policy_ids: Vec<Arc<str>>,
    /// A stable machine-readable reason (`invalid_credential`, `no_rule_permits`, ...).
    pub reason_code: Option<&'static str>,
    /// The private human-readable detail (never shown to the client).
    pub reason: Option<Cow<'static, str>>,
    /// Time spent in the stack (or in the evaluation, for decision records).
    pub duration: Option<Duration>,
    /// Event-specific details with fixed names (documented per event type).
    pub details: Vec<(&'static str, DetailValue)>,
}

impl AuditEvent {
    /// An event of type `event`, now, with no other field set. Severity is `WARN` for
    /// refusals, losses and alerts, `INFO` otherwise.
    pub fn new(event: EventType) -> Self {
        Self::at(event, SystemTime::now())
    }

    /// [`new`](Self::new) with the time given instead of read from the clock.
    pub fn at(event: EventType, timestamp: SystemTime) -> Self {
        let severity = match event {
            EventType::AuthnFailure
            | EventType::AuthzDeny
            | EventType::RateLimited
            | EventType::LockoutLocked
            | EventType::SecurityAlert
            | EventType::RequestRejected
            | EventType::AuditLoss
            | EventType::RateLimitShadow
            | EventType::LockoutShadow
            | EventType::RateLimitFallback
            | EventType::RateLimitStoreUnavailable
            | EventType::LockoutFallback
            | EventType::LockoutStoreUnavailable => Severity::Warn,
            _ => Severity::Info,
        };
        Self {
            timestamp,
            event,
            severity,
            request_id: None,
            trace_id: None,
            decision_id: None,
            principal: None,
            client_ip: None,
            method: None,
            route: None,
            path: None,
            grpc_method: None,
            status: None,
            grpc_status: None,
            policy_ids: Vec::new(),
            reason_code: None,
            reason: None,
            duration: None,
            details: Vec::new(),
        }
    }

    /// Sets the time.
    pub fn with_timestamp(mut self, at: SystemTime) -> Self {
        self.timestamp = at;
        self
    }
    /// Sets the severity.
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }
    /// Sets the request id.
    pub fn with_request_id(mut self, id: RequestId) -> Self {
        self.request_id = Some(id);
        self
    }
    /// Sets the principal.
    pub fn with_principal(mut self, principal: Principal) -> Self {
        self.principal = Some(principal);
        self
    }
    /// Sets the client address.
    pub fn with_client_ip(mut self, ip: IpAddr) -> Self {
        self.client_ip = Some(ip);
        self
    }
    /// Sets the route template.
    pub fn with_route(mut self, route: impl Into<Arc<str>>) -> Self {
        self.route = Some(route.into());
        self
    }
    /// Adds a policy id.
    pub fn with_policy_id(mut self, id: impl Into<Arc<str>>) -> Self {
        self.policy_ids.push(id.into());
        self
    }
    /// Sets the reason code (a fixed, bounded identifier).
    pub fn with_reason_code(mut self, code: &'static str) -> Self {
        self.reason_code = Some(code);
        self
    }
    /// Sets the private reason. Never put a credential here.
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    /// Adds an event-specific detail.
    pub fn with_detail(mut self, name: &'static str, value: impl Into<DetailValue>) -> Self {
        self.details.push((name, value.into()));
        self
    }

    /// The detail named `name`.
    pub fn detail(&self, name: &str) -> Option<&DetailValue> {
        self.details
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The key id the principal authenticated with: the JWT `kid`, the API key id or the mTLS
    /// identity.
    pub fn key_id(&self) -> Option<&str> {
        match self.principal.as_ref()?.auth_method() {
            AuthMethod::Jwt { kid, .. } => kid.as_deref(),
            AuthMethod::ApiKey { key_id } => Some(key_id),
            AuthMethod::Mtls { identity } => Some(identity),
            _ => None,
        }
    }

    /// The event as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let mut buf = Vec::with_capacity(384);
        self.write_json(&mut buf);
        // Only valid UTF-8 (JSON text) is ever written into the buffer.
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Appends the event as one JSON object (no trailing newline) to `out`: the bytes of
    /// [`to_json`](Self::to_json), without allocating when `out` has room.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write_json_fields(out);
        out.push(b'}');
    }

    /// Writes `{` and every present field, without the closing brace, so a writer can append
    /// its own fields (the hash chain).
    ///
    /// The field names are fixed, so each is written with its separator and quotes as one
    /// literal; `v` always comes first and opens the object.
    pub(crate) fn write_json_fields(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(b"{\"v\":");
        push_u64(buf, u64::from(SCHEMA_VERSION));
        buf.extend_from_slice(b",\"ts\":\"");
        push_rfc3339(buf, self.timestamp);
        buf.extend_from_slice(b"\",\"event\":\"");
        buf.extend_from_slice(self.event.as_str().as_bytes());
        buf.extend_from_slice(b"\",\"level\":\"");
        buf.extend_from_slice(self.severity.as_str().as_bytes());
        buf.push(b'"');
        if let Some(id) = &self.request_id {
            buf.extend_from_slice(b",\"request_id\":\"");
            buf.extend_from_slice(id.as_bytes());
            buf.push(b'"');
        }
        if let Some(id) = &self.trace_id {
            buf.extend_from_slice(b",\"trace_id\":\"");
            buf.extend_from_slice(&id.0);
            buf.push(b'"');
        }
        if let Some(id) = &self.decision_id {
            buf.extend_from_slice(b",\"decision_id\":");
            push_json_str(buf, id);
        }
        if let Some(p) = &self.principal {
            push_principal(buf, p);
        }
        if let Some(ip) = &self.client_ip {
            buf.extend_from_slice(b",\"client_ip\":\"");
            push_ip(buf, ip);
            buf.push(b'"');
        }
        if let Some(method) = &self.method {
            // A method is a token (letters, digits and `!#$%&'*+-.^_`|~`, as `http` checks):
            // nothing to escape.
            buf.extend_from_slice(b",\"method\":\"");
            buf.extend_from_slice(method.as_str().as_bytes());
            buf.push(b'"');
        }
        if let Some(route) = &self.route {
            buf.extend_from_slice(b",\"route\":");
            push_json_str(buf, route);
        }
        if let Some(path) = &self.path {
            buf.extend_from_slice(b",\"path\":");
            push_json_str(buf, path);
        }
        if let Some(m) = &self.grpc_method {
            buf.extend_from_slice(b",\"grpc_method\":");
            push_json_str(buf, m);
        }
        if let Some(status) = self.status {
            buf.extend_from_slice(b",\"status\":");
            push_u64(buf, u64::from(status));
        }
        if let Some(status) = self.grpc_status {
            buf.extend_from_slice(b",\"grpc_status\":");
            push_u64(buf, u64::from(status));
        }
        if let Some((first, rest)) = self.policy_ids.split_first() {
            buf.extend_from_slice(b",\"policy_ids\":[");
            push_json_str(buf, first);
            for id in rest {
                buf.push(b',');
                push_json_str(buf, id);
            }
            buf.push(b']');
        }
        if let Some(code) = self.reason_code {
            buf.extend_from_slice(b",\"reason_code\":");
            push_json_str(buf, code);
        }
        if let Some(reason) = &self.reason {
            buf.extend_from_slice(b",\"reason\":");
            push_json_str(buf, reason);
        }
        if let Some(d) = self.duration {
            buf.extend_from_slice(b",\"duration_us\":");
            push_u64(buf, u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
        if !self.details.is_empty() {
            buf.extend_from_slice(b",\"details\":");
            write_details(buf, &self.details);
        }
    }

    /// The `details` as a JSON object text (for the `tracing` sink).
    pub(crate) fn details_json(&self) -> Option<String> {
        if self.details.is_empty() {
            return None;
        }
        let mut buf = Vec::new();
        write_details(&mut buf, &self.details);
        Some(String::from_utf8(buf).unwrap_or_default())
    }

    /// The `policy_ids` as a comma-separated list (for the `tracing` sink).
    pub(crate) fn policy_ids_joined(&self) -> Option<String> {
        if self.policy_ids.is_empty() {
            return None;
        }
        Some(
            self.policy_ids
                .iter()
                .map(|id| &**id)
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

/// Appends the principal's identifier fields (`,"subject":...` through `key_id`), copied
/// from those kept inside the principal when it has been formatted before.
fn push_principal(buf: &mut Vec<u8>, p: &Principal) {
    let kept = p.audit_json();
    if let Some(json) = kept.get() {
        buf.extend_from_slice(json);
        return;
    }
    let start = buf.len();
    write_principal(buf, p);
    kept.offer(&buf[start..]);
}

/// Writes the principal's identifier fields.
fn write_principal(buf: &mut Vec<u8>, p: &Principal) {
    buf.extend_from_slice(b",\"subject\":");
    push_json_str(buf, p.subject());
    buf.extend_from_slice(match p.kind() {
        PrincipalKind::Service => b",\"principal_kind\":\"service\"",
        _ => b",\"principal_kind\":\"user\"",
    });
    if let Some(issuer) = p.issuer() {
        buf.extend_from_slice(b",\"issuer\":");
        push_json_str(buf, issuer);
    }
    let method = p.auth_method();
    buf.extend_from_slice(b",\"auth_method\":");
    push_json_str(buf, method.name());
    let key_id = match method {
        AuthMethod::Jwt { kid, .. } => kid.as_deref(),
        AuthMethod::ApiKey { key_id } => Some(key_id.as_str()),
        AuthMethod::Mtls { identity } => Some(identity.as_str()),
        _ => None,
    };
    if let Some(key_id) = key_id {
        buf.extend_from_slice(b",\"key_id\":");
        push_json_str(buf, key_id);
    }
}

fn write_details(buf: &mut Vec<u8>, details: &[(&'static str, DetailValue)]) {
    buf.push(b'{');
    for (i, (name, value)) in details.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        push_json_str(buf, name);
        buf.push(b':');
        match value {
            DetailValue::Str(s) => push_json_str(buf, s),
            DetailValue::U64(n) => push_u64(buf, *n),
            DetailValue::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        }
    }
    buf.push(b'}');
}

/// For each byte of a JSON string value: 0 when it is copied as is, otherwise the character
/// written after the backslash (`u` for a `\u00XX` escape).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x7f] = b'u';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table
};

/// Appends `value` as a JSON string (quotes and escapes).
pub(crate) fn push_json_str(buf: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = value.as_bytes();
    buf.reserve(rest.len() + 2);
    buf.push(b'"');
    loop {
        let clean = clean_prefix(rest);
        buf.extend_from_slice(&rest[..clean]);
        let Some((&b, tail)) = rest[clean..].split_first() else {
            break;
        };
        match ESCAPE[usize::from(b)] {
            b'u' => buf.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            escape => buf.extend_from_slice(&[b'\\', escape]),
        }
        rest = tail;
    }
    buf.push(b'"');
}

/// The length of the longest prefix of `bytes` that needs no escaping: eight bytes at a time
/// (the last, partial, eight read overlapping those before), then byte by byte from the first
/// eight holding a byte to escape.
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Non-zero when some byte of `v` is below `n` (exact as to whether one is, for n <= 0x80).
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let special = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        below(v, 0x20)
            | below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
            | below(v ^ (ONES * 0x7f), 1)
            != 0
    };
    let mut clean = 0;
    for chunk in bytes.chunks_exact(8) {
        if special(chunk) {
            break;
        }
        clean += 8;
    }
    let len = bytes.len();
    if clean == len || (clean >= 8 && len - clean < 8 && !special(&bytes[len - 8..])) {
        return len;
    }
    clean
        + bytes[clean..]
            .iter()
            .position(|&b| ESCAPE[usize::from(b)] != 0)
            .unwrap_or(len - clean)
}

/// Appends `n` in decimal.
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    let len = n.checked_ilog10().map_or(1, |log| log as usize + 1);
    let mut digits = [0u8; 20];
    fixed_digits(&mut digits[..len], n);
    // A fixed-size copy (no call), then the digits kept.
    let end = buf.len() + len;
    buf.extend_from_slice(&digits);
    buf.truncate(end);
}

/// Writes `n` (below 10^`width`) as exactly `width` decimal digits into `out`.
fn fixed_digits(out: &mut [u8], mut n: u64) {
    for slot in out.iter_mut().rev() {
        // `n % 10` is a single digit.
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Each octet's decimal digits followed by a dot, left-aligned (`7.`, `42.`, `203.`).
static OCTET_DOT: [[u8; 4]; 256] = {
    let mut table = [[0u8; 4]; 256];
    let mut n = 0;
    while n < 256 {
        // Below 256: each quotient is a single digit.
        let (hundreds, tens, ones) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = if n >= 100 {
            [b'0' + hundreds, b'0' + tens, b'0' + ones, b'.']
        } else if n >= 10 {
            [b'0' + tens, b'0' + ones, b'.', 0]
        } else {
            [b'0' + ones, b'.', 0, 0]
        };
        n += 1;
    }
    table
};

/// Appends the address as `Display` writes it: dotted IPv4 by hand; IPv6 (rare in practice)
/// through its `Display` into a stack buffer.
fn push_ip(buf: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Four octets with their dots (at most 16 bytes), written four bytes at a time.
            let mut out = [0u8; 16];
            let mut len = 0;
            for octet in v4.octets() {
                out[len..len + 4].copy_from_slice(&OCTET_DOT[usize::from(octet)]);
                len += 2 + usize::from(octet >= 10) + usize::from(octet >= 100);
            }
            // A fixed-size copy (no call), then the text kept without the last dot.
            let end = buf.len() + len - 1;
            buf.extend_from_slice(&out);
            buf.truncate(end);
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // The longest IPv6 text (`ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff`, or an
            // IPv4-mapped form) is 45 bytes.
            let mut out = [0u8; 64];
            let mut rest: &mut [u8] = &mut out;
            if write!(rest, "{v6}").is_ok() {
                let len = 64 - rest.len();
                buf.extend_from_slice(&out[..len]);
            } else {
                buf.extend_from_slice(v6.to_string().as_bytes());
            }
        }
    }
}

/// RFC 3339 UTC time with microseconds: `2026-01-31T12:00:00.000000Z`.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let mut buf = Vec::with_capacity(27);
    push_rfc3339(&mut buf, at);
    // Only ASCII digits and separators are written.
    String::from_utf8(buf).unwrap_or_default()
}

/// Appends [`rfc3339`] of `at`, without `core::fmt`. The text up to the second is kept per
/// thread for the last second seen, so most events format only the microseconds.
fn push_rfc3339(buf: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        /// The last second formatted on this thread (since the epoch) and its text (with
        /// some fraction); starts with the epoch itself.
        static LAST_SECOND: Cell<(u64, [u8; 27])> =
            const { Cell::new((0, *b"1970-01-01T00:00:00.000000Z")) };
    }
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (last, mut text) = LAST_SECOND.get();
    if last != secs {
        let Some(new) = date_time(secs) else {
            push_wide_rfc3339(buf, since);
            return;
        };
        text = new;
        LAST_SECOND.set((secs, text));
    }
    fixed_digits(&mut text[20..26], u64::from(since.subsec_micros()));
    buf.extend_from_slice(&text);
}

/// [`push_rfc3339`] of a year past 9999, wider than four digits as `{:04}` writes it.
#[cold]
fn push_wide_rfc3339(buf: &mut Vec<u8>, since: Duration) {
    let (year, mut text) = civil(since.as_secs());
    fixed_digits(&mut text[20..26], u64::from(since.subsec_micros()));
    push_u64(buf, year);
    buf.extend_from_slice(&text[4..]);
}

/// `YYYY-MM-DDTHH:MM:SS.000000Z` of `secs` since the epoch, unless its year has more than
/// four digits.
#[inline(never)]
fn date_time(secs: u64) -> Option<[u8; 27]> {
    let (year, text) = civil(secs);
    (year < 10_000).then_some(text)
}

/// The year of `secs` since the epoch and its `YYYY-MM-DDTHH:MM:SS.000000Z` (the year's
/// digits left as `0000` when it has more than four).
fn civil(secs: u64) -> (u64, [u8; 27]) {
    // Civil date from days since the epoch (H. Hinnant's algorithm); every quantity is
    // non-negative since `days` is.
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    if year < 10_000 {
        fixed_digits(&mut out[..4], year);
    }
    fixed_digits(&mut out[5..7], month);
    fixed_digits(&mut out[8..10], day);
    fixed_digits(&mut out[11..13], rem / 3600);
    fixed_digits(&mut out[14..16], (rem / 60) % 60);
    fixed_digits(&mut out[17..19], rem % 60);
    (year, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(951_782_400_000_000 + 86_399_123_456);
        assert_eq!(rfc3339(t), "2000-02-29T23:59:59.123456Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_798_761_599);
        assert_eq!(rfc3339(t), "2026-12-31T23:59:59.000000Z");
    }

    #[test]
    fn json_is_valid_and_escaped() {
        let event = AuditEvent::new(EventType::AuthzDeny)
            .with_reason("quote \" backslash \\ newline \n control \u{1} unicode é")
            .with_policy_id("has_role(admin)")
            .with_detail("n", 3u64)
            .with_detail("flag", true)
            .with_detail("name", "x\"y");
        let value: serde_json::Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(
            value["reason"],
            "quote \" backslash \\ newline \n control \u{1} unicode é"
        );
        assert_eq!(value["policy_ids"][0], "has_role(admin)");
        assert_eq!(value["details"]["n"], 3);
        assert_eq!(value["details"]["flag"], true);
        assert_eq!(value["details"]["name"], "x\"y");
        assert_eq!(value["v"], SCHEMA_VERSION);
        assert_eq!(value["level"], "WARN");
        assert_eq!(
            event.details_json().unwrap(),
            r#"{"n":3,"flag":true,"name":"x\"y"}"#
        );
    }

    /// The formatter before it stopped using `core::fmt` and temporary strings, kept to check
    /// that the output has not changed by a byte.
    mod previous {
        use super::super::*;

        pub(super) fn to_json(e: &AuditEvent) -> String {
            let mut buf = Vec::new();
            write_json_fields(e, &mut buf);
            buf.push(b'}');
            String::from_utf8(buf).unwrap()
        }

        fn write_json_fields(e: &AuditEvent, buf: &mut Vec<u8>) {
            let mut w = JsonObject { buf, first: true };
            w.raw("v", itoa(u64::from(SCHEMA_VERSION)).as_bytes());
            w.string_raw("ts", &rfc3339(e.timestamp));
            w.string_raw("event", e.event.as_str());
            w.string_raw("level", e.severity.as_str());
            if let Some(id) = &e.request_id {
                w.string_raw("request_id", id.as_str());
            }
            if let Some(id) = &e.trace_id {
                w.string_raw("trace_id", id.as_str());
            }
            if let Some(id) = &e.decision_id {
                w.string("decision_id", id);
            }
            if let Some(p) = &e.principal {
                w.string("subject", p.subject());
                w.string_raw(
                    "principal_kind",
                    match p.kind() {
                        PrincipalKind::Service => "service",
                        _ => "user",
                    },
                );
                if let Some(issuer) = p.issuer() {
                    w.string("issuer", issuer);
                }
                w.string("auth_method", p.auth_method().name());
                if let Some(key_id) = e.key_id() {
                    w.string("key_id", key_id);
                }
            }
            if let Some(ip) = &e.client_ip {
                w.string_raw("client_ip", &ip.to_string());
            }
            if let Some(method) = &e.method {
                w.string("method", method.as_str());
            }
            if let Some(route) = &e.route {
                w.string("route", route);
            }
            if let Some(path) = &e.path {
                w.string("path", path);
            }
            if let Some(m) = &e.grpc_method {
                w.string("grpc_method", m);
            }
            if let Some(status) = e.status {
                w.raw("status", itoa(u64::from(status)).as_bytes());
            }
            if let Some(status) = e.grpc_status {
                w.raw("grpc_status", itoa(u64::from(status)).as_bytes());
            }
            if !e.policy_ids.is_empty() {
                w.key("policy_ids");
                w.buf.push(b'[');
                for (i, id) in e.policy_ids.iter().enumerate() {
                    if i > 0 {
                        w.buf.push(b',');
                    }
                    push_json_str(w.buf, id);
                }
                w.buf.push(b']');
            }
            if let Some(code) = e.reason_code {
                w.string("reason_code", code);
            }
            if let Some(reason) = &e.reason {
                w.string("reason", reason);
            }
            if let Some(d) = e.duration {
                w.raw(
                    "duration_us",
                    itoa(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)).as_bytes(),
                );
            }
            if !e.details.is_empty() {
                w.key("details");
                write_details(w.buf, &e.details);
            }
        }

        fn write_details(buf: &mut Vec<u8>, details: &[(&'static str, DetailValue)]) {
            buf.push(b'{');
            for (i, (name, value)) in details.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                push_json_str(buf, name);
                buf.push(b':');
                match value {
                    DetailValue::Str(s) => push_json_str(buf, s),
                    DetailValue::U64(n) => buf.extend_from_slice(itoa(*n).as_bytes()),
                    DetailValue::Bool(b) => {
                        buf.extend_from_slice(if *b { b"true" } else { b"false" })
                    }
                }
            }
            buf.push(b'}');
        }

        struct JsonObject<'a> {
            buf: &'a mut Vec<u8>,
            first: bool,
        }

        impl JsonObject<'_> {
            fn key(&mut self, name: &str) {
                self.buf.push(if self.first { b'{' } else { b',' });
                self.first = false;
                self.buf.push(b'"');
                self.buf.extend_from_slice(name.as_bytes());
                self.buf.extend_from_slice(b"\":");
            }
            fn raw(&mut self, name: &str, value: &[u8]) {
                self.key(name);
                self.buf.extend_from_slice(value);
            }
            fn string_raw(&mut self, name: &str, value: &str) {
                self.key(name);
                self.buf.push(b'"');
                self.buf.extend_from_slice(value.as_bytes());
                self.buf.push(b'"');
            }
            fn string(&mut self, name: &str, value: &str) {
                self.key(name);
                push_json_str(self.buf, value);
            }
        }

        pub(super) fn push_json_str(buf: &mut Vec<u8>, value: &str) {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.push(b'"');
            let bytes = value.as_bytes();
            let mut start = 0;
            for (i, &b) in bytes.iter().enumerate() {
                let escape: &[u8] = match b {
                    b'"' => b"\\\"",
                    b'\\' => b"\\\\",
                    b'\n' => b"\\n",
                    b'\r' => b"\\r",
                    b'\t' => b"\\t",
                    0..=0x1f | 0x7f => b"",
                    _ => continue,
                };
                buf.extend_from_slice(&bytes[start..i]);
                if escape.is_empty() {
                    buf.extend_from_slice(&[
                        b'\\',
                        b'u',
                        b'0',
                        b'0',
                        HEX[usize::from(b >> 4)],
                        HEX[usize::from(b & 0xf)],
                    ]);
                } else {
                    buf.extend_from_slice(escape);
                }
                start = i + 1;
            }
            buf.extend_from_slice(&bytes[start..]);
            buf.push(b'"');
        }

        pub(super) fn itoa(n: u64) -> String {
            n.to_string()
        }

        pub(super) fn rfc3339(at: SystemTime) -> String {
            let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
            let secs = since.as_secs();
            let days = i64::try_from(secs / 86_400).unwrap_or(0);
            let rem = secs % 86_400;
            let z = days + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z.rem_euclid(146_097);
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day = doy - (153 * mp + 2) / 5 + 1;
            let month = if mp < 10 { mp + 3 } else { mp - 9 };
            let year = yoe + era * 400 + i64::from(month <= 2);
            format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                rem / 3600,
                (rem / 60) % 60,
                rem % 60,
                since.subsec_micros()
            )
        }
    }

    fn new_line(e: &AuditEvent) -> String {
        let mut buf = Vec::new();
        e.write_json(&mut buf);
        let line = String::from_utf8(buf).unwrap();
        assert_eq!(line, e.to_json());
        line
    }

    #[test]
    fn integers_times_and_addresses_match_core_fmt() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            65_535,
            1_000_000,
            u64::from(u32::MAX),
            u64::MAX - 1,
        ]
        .into_iter()
        .chain([u64::MAX])
        {
            let mut buf = Vec::new();
            push_u64(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
        }
        let mut times = vec![
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_secs(1),
            UNIX_EPOCH + Duration::from_nanos(999),
            UNIX_EPOCH + Duration::from_nanos(1_999),
            UNIX_EPOCH + Duration::from_secs(951_782_399),
            UNIX_EPOCH + Duration::from_secs(951_868_800),
            UNIX_EPOCH + Duration::from_secs(253_402_300_799) + Duration::from_micros(999_999),
            UNIX_EPOCH + Duration::from_secs(253_402_300_800),
            UNIX_EPOCH + Duration::from_secs(4_102_444_800),
            SystemTime::now(),
        ];
        // Every day boundary over four centuries, and one odd instant per day.
        for day in (0u64..146_097 * 2).step_by(7) {
            times.push(UNIX_EPOCH + Duration::from_secs(day * 86_400));
            times.push(
                UNIX_EPOCH
                    + Duration::from_secs(day * 86_400 + 86_399)
                    + Duration::from_micros(day % 1_000_000),
            );
        }
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(1 << 40)) {
            times.push(far);
        }
        for t in times {
            assert_eq!(rfc3339(t), previous::rfc3339(t), "{t:?}");
        }
        let mut addrs: Vec<IpAddr> = vec![
            "0.0.0.0".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
            "10.0.1.9".parse().unwrap(),
            "100.20.3.0".parse().unwrap(),
            "::".parse().unwrap(),
            "::1".parse().unwrap(),
            "::ffff:192.0.2.128".parse().unwrap(),
            "::192.0.2.128".parse().unwrap(),
            "2001:db8::1".parse().unwrap(),
            "2001:db8:0:0:1:0:0:1".parse().unwrap(),
            "2001:0:0:1::".parse().unwrap(),
            "fe80::1:0:0:0".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            addrs.push(IpAddr::from(((x >> 32) as u32).to_be_bytes()));
            let mut segments = [0u16; 8];
            for (i, s) in segments.iter_mut().enumerate() {
                // Many zero runs of every length.
                *s = if (x >> (i * 3)) & 3 == 0 {
                    (x >> (40 + i)) as u16
                } else {
                    0
                };
            }
            addrs.push(IpAddr::from(segments));
        }
        for ip in addrs {
            let mut buf = Vec::new();
            push_ip(&mut buf, &ip);
            assert_eq!(buf, ip.to_string().as_bytes(), "{ip}");
        }
    }

    #[test]
    fn strings_are_escaped_as_before() {
        let mut all_bytes = String::new();
        for c in (0u32..0x100).chain([0x2028, 0x10ffff, 0xfffd]) {
            all_bytes.push(char::from_u32(c).unwrap());
        }
        for s in [
            "",
            "plain",
            "\"",
            "\\",
            "a\u{0}b\u{1f}c\u{7f}d",
            "\n\r\t\u{8}\u{c}",
            "é ü 日本 😀",
            "</script>",
            all_bytes.as_str(),
        ]
        .into_iter()
        .map(str::to_owned)
        .chain(
            // Every special byte at every offset of the word-at-a-time scan, beside
            // multi-byte characters.
            (0u8..0x80)
                .filter(|b| ESCAPE[usize::from(*b)] != 0)
                .flat_map(|b| {
                    (0..20).map(move |at| {
                        let mut s = "abcdefgh-é-ü-ijklmnopq".repeat(2);
                        let mut at = at;
                        while !s.is_char_boundary(at) {
                            at += 1;
                        }
                        s.insert(at, char::from(b));
                        s.push(char::from(b));
                        s
                    })
                }),
        )
        .chain((0..20).map(|n| "ÿ~".repeat(n)))
        {
            let s = s.as_str();
            let (mut new, mut old) = (Vec::new(), Vec::new());
            push_json_str(&mut new, s);
            previous::push_json_str(&mut old, s);
            assert_eq!(new, old, "{s:?}");
            let back: String = serde_json::from_slice(&new).unwrap();
            assert_eq!(back, s);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_escapes_as_before(
            s in proptest::prelude::any::<String>(),
            ascii in "[\\x00-\\x7f]{0,40}",
        ) {
            for s in [s.as_str(), ascii.as_str()] {
                let (mut new, mut old) = (Vec::new(), Vec::new());
                push_json_str(&mut new, s);
                previous::push_json_str(&mut old, s);
                proptest::prop_assert_eq!(new, old);
            }
        }
    }

    /// The per-thread second against the `core::fmt` formatter: the same second again, the
    /// next, the one before, far ones, the first and last instants of a second, day, month and
    /// year ends (Unix time has no leap second: a UTC leap second's 23:59:59 is followed by
    /// 00:00:00 here as in the reference), and five-digit years (never kept) between kept
    /// seconds; on threads that start at the preset second and elsewhere.
    #[test]
    fn kept_seconds_format_as_the_reference() {
        let seconds: &[u64] = &[
            0,
            1,
            59,
            60,
            86_399,
            86_400,
            78_796_799,      // 1972-06-30T23:59:59, before a leap second
            78_796_800,      // 1972-07-01
            951_782_399,     // 2000-02-28T23:59:59
            951_782_400,     // 2000-02-29
            951_868_800,     // 2000-03-01
            946_684_799,     // 1999-12-31T23:59:59
            1_483_228_799,   // 2016-12-31T23:59:59, before a leap second
            1_483_228_800,   // 2017-01-01
            2_147_483_647,   // 2038-01-19T03:14:07
            4_107_542_399,   // 2100-02-28T23:59:59 (2100 is not a leap year)
            4_107_542_400,   // 2100-03-01
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800, // 10000-01-01
            253_402_300_801,
            1 << 40,
            1_795_416_340,
        ];
        let mut instants = Vec::new();
        for &secs in seconds {
            for nanos in [0, 999, 1_000, 500_000_000, 999_999_000, 999_999_999] {
                instants.push((secs, nanos));
            }
            // Back and forth around it.
            for near in [secs + 1, secs, secs.saturating_sub(1), secs, secs + 1] {
                instants.push((near, 123_456_789));
            }
        }
        let now = SystemTime::now();
        let check = |order: &mut dyn Iterator<Item = (u64, u32)>| {
            for (secs, nanos) in order {
                let t = UNIX_EPOCH + Duration::new(secs, nanos);
                let expected = previous::rfc3339(t);
                assert_eq!(rfc3339(t), expected, "{secs}.{nanos:09}");
                // Appended after what the buffer holds.
                let mut buf = b"x".to_vec();
                push_rfc3339(&mut buf, t);
                assert_eq!(&buf[1..], expected.as_bytes());
            }
            assert_eq!(rfc3339(now), previous::rfc3339(now));
        };
        check(&mut instants.iter().copied());
        check(&mut instants.iter().rev().copied());
        // Each thread keeps its own second, starting with the epoch's.
        std::thread::scope(|scope| {
            // The epoch's last nanosecond, a day later, and the first second of year 10000.
            for (secs, nanos) in [(0, 0), (0, 999_999_999), (86_400, 0), (253_402_300_800, 0)] {
                let instants = &instants;
                scope.spawn(move || {
                    let t = UNIX_EPOCH + Duration::new(secs, nanos);
                    assert_eq!(rfc3339(t), previous::rfc3339(t));
                    check(&mut instants.iter().copied());
                });
            }
        });
    }

    /// The principal's fields, kept inside it from its second event on, against the reference
    /// formatter on every event: every authentication method, with and without issuer and
    /// key id, subjects and issuers with quotes, backslashes, control and non-ASCII characters;
    /// shared by clones and by threads formatting it at once.
    #[test]
    fn kept_principal_fields_match_the_reference() {
        for i in 0..40u64 {
            let e = full_event(i);
            let p = e.principal.clone().unwrap();
            let reference = previous::to_json(&e);
            assert!(p.audit_json().get().is_none());
            assert_eq!(e.to_json(), reference);
            for _ in 0..3 {
                assert_eq!(e.to_json(), reference);
            }
            let mut direct = Vec::new();
            write_principal(&mut direct, &p);
            assert_eq!(p.audit_json().get(), Some(&direct[..]));
            // A clone shares what was kept; other fields around it change.
            let mut other = AuditEvent::new(EventType::AuthnSuccess)
                .with_timestamp(UNIX_EPOCH + Duration::from_secs(i))
                .with_principal(p.clone());
            assert_eq!(new_line(&other), previous::to_json(&other));
            other.request_id = Some(RequestId::generate());
            other.client_ip = Some(IpAddr::from([10, 0, 0, 1]));
            assert_eq!(new_line(&other), previous::to_json(&other));
        }
        // Threads formatting principals for the first times at once.
        for i in 0..5u64 {
            let e = full_event(i);
            let reference = previous::to_json(&e);
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        for _ in 0..50 {
                            assert_eq!(e.to_json(), reference);
                        }
                    });
                }
            });
        }
        // A principal built with nothing but a subject, and one with an empty subject.
        for subject in ["", "x"] {
            let p = Principal::builder(subject, AuthMethod::Other(String::new())).build();
            let e = AuditEvent::new(EventType::AuthzAllow).with_principal(p);
            for _ in 0..3 {
                assert_eq!(new_line(&e), previous::to_json(&e));
            }
        }
    }

    /// Strings of every length up to past four words, clean and with each byte to escape at
    /// each position (the last word read overlaps the one before it), and with a multi-byte
    /// character at the end.
    #[test]
    fn every_length_and_position_escapes_as_before() {
        let check = |s: &str| {
            let (mut new, mut old) = (Vec::new(), Vec::new());
            push_json_str(&mut new, s);
            previous::push_json_str(&mut old, s);
            assert_eq!(new, old, "{s:?}");
        };
        let specials: Vec<u8> = (0u8..0x80)
            .filter(|b| ESCAPE[usize::from(*b)] != 0)
            .collect();
        for len in 0..=40 {
            let clean: String = ('a'..='z').chain('0'..='9').cycle().take(len).collect();
            check(&clean);
            check(&format!("{clean}é"));
            check(&format!("é{clean}"));
            for &b in &specials {
                for at in 0..len {
                    let mut bytes = clean.clone().into_bytes();
                    bytes[at] = b;
                    check(&String::from_utf8(bytes).unwrap());
                }
            }
        }
    }

    /// A method is written without escaping: every name `http` accepts needs none.
    #[test]
    fn methods_need_no_escaping() {
        let mut names: Vec<Vec<u8>> = (0u8..=255).map(|b| vec![b]).collect();
        // Long extension methods are stored apart from short ones.
        names.extend((0u8..=255).map(|b| vec![b; 24]));
        names.extend(
            [
                "GET",
                "PROPFIND",
                "M-SEARCH",
                "!#$%&'*+-.^_`|~",
                "a\"b",
                "a\\b",
                "é",
            ]
            .map(|name| name.as_bytes().to_vec()),
        );
        let mut accepted = 0;
        for name in names {
            let Ok(method) = Method::from_bytes(&name) else {
                continue;
            };
            accepted += 1;
            let mut escaped = Vec::new();
            push_json_str(&mut escaped, method.as_str());
            assert_eq!(escaped, [b"\"", method.as_str().as_bytes(), b"\""].concat());
        }
        assert!(accepted > 150, "{accepted}");
        let mut e = AuditEvent::new(EventType::AuthzAllow);
        for method in [
            Method::GET,
            Method::from_bytes(b"X-CUSTOM-METHOD-NAME").unwrap(),
        ] {
            e.method = Some(method);
            assert_eq!(new_line(&e), previous::to_json(&e));
        }
    }

    /// Integers at every change of length, and every IPv4 octet in every position.
    #[test]
    fn integer_lengths_and_octets_match_core_fmt() {
        let mut n = 1u64;
        loop {
            for m in [n - 1, n, n + 1, n.saturating_mul(5)] {
                let mut buf = b"x".to_vec();
                push_u64(&mut buf, m);
                assert_eq!(&buf[1..], m.to_string().as_bytes());
            }
            let Some(next) = n.checked_mul(10) else {
                break;
            };
            n = next;
        }
        for octet in 0..=255u8 {
            for ip in [
                [octet, 0, 0, 0],
                [0, octet, 0, 0],
                [255, 255, octet, 255],
                [1, 22, 255, octet],
                [octet; 4],
            ] {
                let ip = IpAddr::from(ip);
                let mut buf = b"x".to_vec();
                push_ip(&mut buf, &ip);
                assert_eq!(&buf[1..], ip.to_string().as_bytes());
            }
        }
    }

    fn full_event(i: u64) -> AuditEvent {
        let methods = [
            AuthMethod::Jwt {
                kid: Some("key-2026\"01".into()),
                alg: "RS256".into(),
            },
            AuthMethod::Jwt {
                kid: None,
                alg: "EdDSA".into(),
            },
            AuthMethod::ApiKey {
                key_id: "ak_\u{1}live".into(),
            },
            AuthMethod::Mtls {
                identity: "spiffe://example.org/ns/é/sa/web".into(),
            },
            AuthMethod::Other("custom\tname".into()),
        ];
        let method = methods[usize::try_from(i % 5).unwrap()].clone();
        let mut principal = Principal::builder(format!("user-{i} \"q\" \\ \n 日本"), method).kind(
            if i.is_multiple_of(2) {
                PrincipalKind::User
            } else {
                PrincipalKind::Service
            },
        );
        if !i.is_multiple_of(3) {
            principal = principal.issuer("https://idp.example/\u{7f}");
        }
        let mut e = AuditEvent::new(EventType::AuthzDeny)
            .with_timestamp(
                UNIX_EPOCH + Duration::from_micros(1_790_000_000_000_000 + i * 7_919_113),
            )
            .with_request_id(RequestId::generate())
            .with_principal(principal.build())
            .with_client_ip(if i.is_multiple_of(2) {
                IpAddr::from([203, 0, 113, u8::try_from(i % 256).unwrap()])
            } else {
                IpAddr::from([
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    0,
                    u16::try_from(i % 65_536).unwrap(),
                ])
            })
            .with_route("/api/documents/{id}")
            .with_policy_id("has_role(admin)")
            .with_policy_id("scope \"x\"")
            .with_reason_code("forbidden")
            .with_reason(format!("policy denied \u{0}\u{1b}[31m {i}"))
            .with_detail("n", i)
            .with_detail("flag", i.is_multiple_of(2))
            .with_detail("name", "x\"y\n");
        e.trace_id =
            TraceId::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        e.decision_id = Some(format!("dec-{i}\u{2028}").into());
        e.method = Some(http::Method::from_bytes(b"PROPFIND").unwrap());
        e.path = Some(format!("/api/ü/{i}?").into_boxed_str());
        e.grpc_method = Some("/pkg.Service/Method".into());
        e.status = Some(u16::try_from(i % 600).unwrap());
        e.grpc_status = Some(u8::try_from(i % 17).unwrap());
        e.duration = Some(Duration::from_nanos(i * 1_234_567));
        e
    }

    #[test]
    fn lines_are_byte_identical_to_the_previous_formatter() {
        let types = [
            EventType::AuthnSuccess,
            EventType::AuthzAllow,
            EventType::AuthzDecision,
            EventType::AuditLoss,
            EventType::LockoutStoreUnavailable,
        ];
        for i in 0..500u64 {
            let full = full_event(i);
            let line = new_line(&full);
            assert_eq!(line, previous::to_json(&full));
            let _: serde_json::Value = serde_json::from_str(&line).unwrap();

            // Every field set or unset, following the bits of `i`.
            let mut e = full.clone();
            e.event = types[usize::try_from(i % 5).unwrap()];
            e.severity = if i % 2 == 0 {
                Severity::Info
            } else {
                Severity::Warn
            };
            let bit = |n: u32| i & (1 << n) != 0;
            if bit(0) {
                e.request_id = None;
            }
            if bit(1) {
                e.trace_id = None;
            }
            if bit(2) {
                e.decision_id = None;
            }
            if bit(3) {
                e.principal = None;
            }
            if bit(4) {
                e.client_ip = None;
            }
            if bit(5) {
                e.method = None;
                e.route = None;
            }
            if bit(6) {
                e.path = None;
                e.grpc_method = None;
            }
            if bit(7) {
                e.status = None;
                e.grpc_status = None;
            }
            if bit(8) {
                e.policy_ids.clear();
                e.reason_code = None;
                e.reason = None;
            }
            if i % 3 == 0 {
                e.policy_ids.truncate(1);
                e.duration = None;
                e.details.clear();
            }
            assert_eq!(new_line(&e), previous::to_json(&e));
        }
        let bare = AuditEvent::new(EventType::ConfigLoaded).with_timestamp(UNIX_EPOCH);
        assert_eq!(
            new_line(&bare),
            r#"{"v":1,"ts":"1970-01-01T00:00:00.000000Z","event":"config.loaded","level":"INFO"}"#
        );
        assert_eq!(new_line(&bare), previous::to_json(&bare));
        let mut huge = bare.with_timestamp(SystemTime::now());
        huge.duration = Some(Duration::MAX);
        huge.details.push(("max", DetailValue::U64(u64::MAX)));
        assert_eq!(new_line(&huge), previous::to_json(&huge));
    }

    #[test]
    fn trace_id_bytes_round_trip() {
        for digits in [
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "0123456789abcdef0123456789abcdef",
            "ffffffffffffffffffffffffffffffff",
            "00000000000000000000000000000001",
        ] {
            let traceparent = format!("00-{digits}-00f067aa0ba902b7-01");
            let id = TraceId::from_traceparent(traceparent.as_bytes()).unwrap();
            let bytes = id.to_bytes().unwrap();
            assert_eq!(crate::hex::encode(&bytes), digits);
            assert_eq!(TraceId::from_bytes(bytes), id);
            assert_eq!(TraceId::from_bytes(bytes).as_str(), digits);
        }
    }

    #[test]
    fn traceparent_parsing() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceId::from_traceparent(ok).unwrap().as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"garbage",
        ] {
            assert!(TraceId::from_traceparent(bad).is_none(), "{bad:?}");
        }
    }
}
