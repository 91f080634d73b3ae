//! Shared fixtures: the demo app of `examples/secure_api.rs` (same routes, policies, role
//! hierarchy, stack and body limit, with simple handlers), keys, token minting (valid and
//! hostile), and the checks every refusal must pass.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::KeyPair as _;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Request, header};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::Security;
use portcullis::authn::jwt::{JwtAuthenticator, VerificationKey};
use portcullis::authz::{Rbac, authenticated, has_role, public};
use portcullis::clock::SharedClock;
use portcullis::principal::Principal;
use portcullis::routing::{SecureRouter, get, post};
use portcullis::testing::TestKey;
use portcullis::validate::{BoundedString, SafeUrl, Valid, parses_as};
use serde_json::{Value, json};
use tower::ServiceExt;

pub(crate) const ISSUER: &str = "https://issuer.test";
pub(crate) const AUDIENCE: &str = "portcullis-demo";
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// Key id of the Ed25519 key the demo app trusts.
pub(crate) const ED_KID: &str = "ed-1";
/// Key id of the RSA key (pinned to RS256) the demo app also trusts.
pub(crate) const RSA_KID: &str = "rsa-1";

/// The keys every test shares (RSA generation is slow in debug builds: do it once).
pub(crate) struct Keys {
    /// The trusted Ed25519 signing key.
    pub(crate) signing: TestKey,
    /// Another Ed25519 key that claims the trusted key's `kid`.
    pub(crate) impostor: TestKey,
    /// A key whose `kid` the app does not know.
    pub(crate) stranger: TestKey,
    /// The trusted RSA key, pinned to RS256.
    pub(crate) rsa: RsaKey,
}

/// An RSA key with its public half in the encodings an attacker would find published.
pub(crate) struct RsaKey {
    pub(crate) encoding: EncodingKey,
    pub(crate) public_pem: String,
    pub(crate) public_der: Vec<u8>,
}

impl RsaKey {
    fn generate() -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate RSA key");
        let private: Pkcs8V1Der<'static> = pair.as_der().expect("encode RSA private key");
        let public: PublicKeyX509Der<'static> =
            pair.public_key().as_der().expect("encode RSA public key");
        let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", private.as_ref()).as_bytes())
            .expect("load RSA private key");
        Self {
            encoding,
            public_pem: pem("PUBLIC KEY", public.as_ref()),
            public_der: public.as_ref().to_vec(),
        }
    }

    /// The verification key the app is configured with: the public PEM, RS256 only.
    pub(crate) fn verification_key(&self) -> VerificationKey {
        VerificationKey::from_pem(self.public_pem.as_bytes(), Algorithm::RS256)
            .expect("RSA public PEM")
            .with_kid(RSA_KID)
    }

    /// A legitimate RS256 token.
    pub(crate) fn mint(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(RSA_KID.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign RS256")
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

pub(crate) static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    signing: TestKey::ed25519(ED_KID),
    impostor: TestKey::ed25519(ED_KID),
    stranger: TestKey::ed25519("kid-nobody-knows"),
    rsa: RsaKey::generate(),
});

/// Seconds since the Unix epoch, from the system clock (the demo app uses the system clock).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Claims of a token valid for ten minutes, for `sub` holding `roles`.
pub(crate) fn claims(sub: &str, roles: &[&str]) -> Value {
    let mut claims = KEYS.signing.claims(sub, ISSUER, AUDIENCE);
    claims["roles"] = json!(roles);
    claims
}

/// A valid token for `sub` with `roles`, signed by the trusted Ed25519 key.
pub(crate) fn token(sub: &str, roles: &[&str]) -> String {
    KEYS.signing.mint(&claims(sub, roles))
}

/// The `alg: none` attack: an unsigned token naming the trusted `kid`.
pub(crate) fn alg_none_token(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT", "kid": ED_KID});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An HS256 token under `kid`, keyed with `secret` (for the RSA-public-key-as-HMAC-secret
/// confusion).
pub(crate) fn hs256_token(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("sign HS256")
}

/// The role hierarchy of the demo: admin ⊇ editor ⊇ reader.
pub(crate) fn rbac() -> Rbac {
    Rbac::builder()
        .inherit("admin", "editor")
        .inherit("editor", "reader")
        .build()
        .expect("acyclic roles")
}

/// The JWT authenticator of the demo: both trusted keys, default leeway, lifetime and size.
pub(crate) fn jwt() -> JwtAuthenticator {
    jwt_builder().build().expect("JWT configuration")
}

/// The demo's JWT configuration, to be completed (clock, keys...) by the caller.
pub(crate) fn jwt_builder() -> portcullis::authn::jwt::JwtAuthenticatorBuilder {
    JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .key(KEYS.signing.verification_key())
        .key(KEYS.rsa.verification_key())
}

/// A JWT authenticator trusting only `key`, on `clock`.
pub(crate) fn jwt_with_clock(key: &TestKey, clock: SharedClock) -> JwtAuthenticator {
    JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .key(key.verification_key())
        .clock(clock)
        .build()
        .expect("JWT configuration")
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn me(principal: Principal) -> Json<Value> {
    Json(json!({"subject": principal.subject(), "roles": principal.roles()}))
}

async fn read_document(Path(id): Path<u64>) -> Json<Value> {
    Json(json!({"id": id, "title": "Welcome"}))
}

/// The body of `POST /api/documents`, validated as the example validates it.
#[derive(serde::Deserialize, garde::Validate)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewDocument {
    #[garde(custom(parses_as::<BoundedString<1, 200>>))]
    title: String,
    #[garde(custom(parses_as::<SafeUrl>))]
    url: String,
}

async fn create_document(
    principal: Principal,
    Valid(Json(new)): Valid<Json<NewDocument>>,
) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        Json(json!({"id": 2, "title": new.title, "url": new.url, "owner": principal.subject()})),
    )
}

async fn delete_document(Path(_id): Path<u64>) -> StatusCode {
    StatusCode::NO_CONTENT
}

async fn routes_report() -> Json<Value> {
    Json(serde_json::to_value(demo_routes().report()).expect("report serializes"))
}

/// The route table of `examples/secure_api.rs` (its contract routes) with simple handlers.
pub(crate) fn demo_routes() -> SecureRouter {
    SecureRouter::with_rbac(rbac())
        .route("/health", get(health, public()))
        .route("/api/me", get(me, authenticated()))
        .route("/api/documents", post(create_document, has_role("editor")))
        .route(
            "/api/documents/{id}",
            get(read_document, has_role("reader")).delete(delete_document, has_role("admin")),
        )
        .route("/admin/routes", get(routes_report, has_role("admin")))
}

/// Wraps a router the way the example does: body limit inside, the Security stack outside.
pub(crate) fn secure(router: Router, jwt: JwtAuthenticator) -> Router {
    let security = Security::builder()
        .authenticator(jwt)
        .build()
        .expect("Security stack");
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(security)
}

/// The demo app with the demo authenticator.
pub(crate) fn demo_app() -> Router {
    demo_app_with(jwt())
}

/// The demo app with another authenticator (for clocks and key rotation).
pub(crate) fn demo_app_with(jwt: JwtAuthenticator) -> Router {
    secure(demo_routes().into_router().expect("demo routes"), jwt)
}

/// A request, optionally with `Authorization: Bearer` headers (two of them for the
/// several-credentials case) and a JSON body for POSTs.
pub(crate) fn request(method: &http::Method, path: &str, bearers: &[&str]) -> Request<Body> {
    let mut builder = Request::builder().method(method.clone()).uri(path);
    for token in bearers {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if method == http::Method::POST {
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"title": "Notes", "url": "https://example.com/notes"}).to_string(),
            ))
            .expect("request")
    } else {
        builder.body(Body::empty()).expect("request")
    }
}

/// Marks the request as coming from `addr`, as `into_make_service_with_connect_info` would.
pub(crate) fn with_peer(mut req: Request<Body>, addr: SocketAddr) -> Request<Body> {
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

/// Sends one request through `app` and collects the response.
pub(crate) async fn send(app: &Router, req: Request<Body>) -> (http::response::Parts, Bytes) {
    let response = app.clone().oneshot(req).await.expect("infallible router");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts, bytes)
}

/// What a refusal must look like on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 401, no credential on a protected route.
    MissingCredential,
    /// 401, a credential that does not verify.
    InvalidToken,
    /// 400, the credential cannot be read (several `Authorization` headers...).
    InvalidRequest,
    /// 403, authenticated without the right role.
    Forbidden,
    /// 404.
    NotFound,
    /// 405 with this `Allow`.
    MethodNotAllowed(&'static str),
    /// 413.
    PayloadTooLarge,
    /// 400, a malformed request (ambiguous path, hygiene limits).
    BadRequest,
}

/// How the `WWW-Authenticate` header must look.
enum Challenge {
    Exactly(&'static str),
    StartsWith(&'static str),
    Absent,
}

impl Refusal {
    /// (status, problem type slug, title, public detail, challenge)
    fn row(
        self,
    ) -> (
        StatusCode,
        &'static str,
        &'static str,
        &'static str,
        Challenge,
    ) {
        match self {
            Refusal::MissingCredential => (
                StatusCode::UNAUTHORIZED,
                "authentication-required",
                "Authentication required",
                "This resource requires authentication.",
                Challenge::Exactly("Bearer"),
            ),
            Refusal::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid-credential",
                "Invalid credential",
                "The access token is invalid or expired.",
                Challenge::StartsWith("Bearer error=\"invalid_token\""),
            ),
            Refusal::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid-credential-request",
                "Invalid authentication request",
                "The request must carry exactly one well-formed credential.",
                Challenge::StartsWith("Bearer error=\"invalid_request\""),
            ),
            Refusal::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "You are not allowed to perform this action.",
                Challenge::StartsWith("Bearer error=\"insufficient_scope\""),
            ),
            Refusal::NotFound => (
                StatusCode::NOT_FOUND,
                "not-found",
                "Not found",
                "No such resource.",
                Challenge::Absent,
            ),
            Refusal::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "This method is not allowed on this resource.",
                Challenge::Absent,
            ),
            Refusal::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "The request body is too large.",
                Challenge::Absent,
            ),
            Refusal::BadRequest => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "Bad request",
                "The request is malformed.",
                Challenge::Absent,
            ),
        }
    }
}

/// Words of private failure details (token errors, policy denials, key ids, configured
/// issuer and audience) that must never reach a client. Compared case-insensitively.
pub(crate) const PRIVATE_WORDS: &[&str] = &[
    "signature",
    "kid",
    "issuer",
    "audience",
    "alg",
    "malformed",
    "unknown",
    "exceeds",
    "byte",
    "header",
    "expired ",
    " ago",
    "not valid for",
    "nbf",
    "lifetime",
    "policy",
    "has_role",
    "authenticated",
    "anonymous",
    "not granted",
    "no_rule_permits",
    "not_authenticated",
    "more than one",
    "framework",
    "no route matched",
    ED_KID,
    RSA_KID,
    ISSUER,
    AUDIENCE,
    "user-",
];

/// Checks that `parts`/`body` are exactly the refusal `expected`, and that neither the body nor
/// any header value contains a secret (or any 20-character piece of one) or a private word.
pub(crate) fn check_refusal(
    parts: &http::response::Parts,
    body: &[u8],
    expected: Refusal,
    secrets: &[&str],
) -> Result<(), String> {
    let (status, slug, title, detail, challenge) = expected.row();
    let mut problems = Vec::new();
    if parts.status != status {
        problems.push(format!("status {} (expected {status})", parts.status));
    }
    let header_str = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    if header_str("content-type") != Some("application/problem+json") {
        problems.push(format!("content-type {:?}", header_str("content-type")));
    }
    if header_str("cache-control") != Some("no-store") {
        problems.push(format!("cache-control {:?}", header_str("cache-control")));
    }
    let request_id = header_str("x-request-id");
    if request_id.is_none_or(str::is_empty) {
        problems.push("no x-request-id".to_owned());
    }
    let www = header_str("www-authenticate");
    match (challenge, www) {
        (Challenge::Exactly(want), Some(got)) if got == want => {}
        (Challenge::StartsWith(want), Some(got)) if got.starts_with(want) => {}
        (Challenge::Absent, None) => {}
        (_, got) => problems.push(format!("www-authenticate {got:?}")),
    }
    if let Refusal::MethodNotAllowed(allow) = expected
        && header_str("allow") != Some(allow)
    {
        problems.push(format!(
            "allow {:?} (expected {allow:?})",
            header_str("allow")
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(mut doc) => {
            // Refusals decided by a policy link to their decision record; nothing else may.
            let decision_id = doc.as_object_mut().and_then(|o| o.remove("decision_id"));
            let by_policy = matches!(expected, Refusal::Forbidden | Refusal::MissingCredential);
            match decision_id {
                None if matches!(expected, Refusal::Forbidden) => {
                    problems.push("no decision_id on a policy refusal".to_owned());
                }
                Some(id) if !by_policy => problems.push(format!("unexpected decision_id {id}")),
                Some(id)
                    if !id.as_str().is_some_and(|id| {
                        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
                    }) =>
                {
                    problems.push(format!("malformed decision_id {id}"));
                }
                _ => {}
            }
            let want = json!({
                "type": format!("urn:portcullis:problem:{slug}"),
                "title": title,
                "status": status.as_u16(),
                "detail": detail,
                "request_id": request_id,
            });
            if doc != want {
                problems.push(format!("problem document {doc} (expected {want})"));
            }
        }
        Err(e) => problems.push(format!("body is not JSON ({e}): {:?}", body_text(body))),
    }

    let mut exposed = vec![body_text(body)];
    exposed.extend(
        parts
            .headers
            .values()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
    );
    for text in &exposed {
        for secret in secrets {
            if let Some(piece) = leaked_piece(text, secret) {
                problems.push(format!("response exposes credential material {piece:?}"));
            }
        }
        // The kind's fixed public text may use a listed word ("malformed"); only the rest counts.
        let lower = text.replace(detail, "").to_lowercase();
        for word in PRIVATE_WORDS {
            if lower.contains(&word.to_lowercase()) {
                problems.push(format!(
                    "response exposes private word {word:?} in {text:?}"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The first piece of `secret` (the whole of it when shorter than 20 characters, otherwise any
/// 20-character window) found in `text`.
pub(crate) fn leaked_piece<'a>(text: &str, secret: &'a str) -> Option<&'a str> {
    if secret.is_empty() {
        return None;
    }
    if secret.len() < 20 {
        return text.contains(secret).then_some(secret);
    }
    (0..=secret.len() - 20)
        .filter(|i| secret.is_char_boundary(*i) && secret.is_char_boundary(i + 20))
        .map(|i| &secret[i..i + 20])
        .find(|piece| text.contains(piece))
}

/// The body as text, for messages.
pub(crate) fn body_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

/// Checks a successful response: the status, and the request id every response carries.
pub(crate) fn check_success(
    parts: &http::response::Parts,
    body: &[u8],
    status: StatusCode,
) -> Result<(), String> {
    let mut problems = Vec::new();
    if parts.status != status {
        problems.push(format!(
            "status {} (expected {status}), body {:?}",
            parts.status,
            body_text(body)
        ));
    }
    if parts.headers.get("x-request-id").is_none() {
        problems.push("no x-request-id".to_owned());
    }
    if parts.headers.get("www-authenticate").is_some() {
        problems.push("success carries a WWW-Authenticate challenge".to_owned());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// What a request must get: a success status or a refusal.
pub(crate) type Outcome = Result<StatusCode, Refusal>;

/// Checks a response against an [`Outcome`].
pub(crate) fn check_outcome(
    parts: &http::response::Parts,
    body: &[u8],
    outcome: Outcome,
    secrets: &[&str],
) -> Result<(), String> {
    match outcome {
        Ok(status) => check_success(parts, body, status),
        Err(refusal) => check_refusal(parts, body, refusal, secrets),
    }
}
