//! The [`Security`] builder: the portcullis stack assembled in the right order, once.

use std::sync::Arc;

use tower::util::Either;
use tower_layer::{Identity, Layer, Stack};

use crate::authn::{Authenticator, AuthnLayer};
use crate::context::RequestContextLayer;
use crate::error::ConfigError;
use crate::headers::{CorsLayer, SecureHeadersLayer};

/// Assembles the request-context edge and authentication in the order of the request flow:
///
/// ```text
/// client ─► SecureHeaders ─► [CORS] ─► RequestContext (request id, rendering, audit) ─► Authenticate ─► your router
/// ```
///
/// The secure headers (API profile, see [`headers`](crate::headers)) are on by default and
/// reach every response, the rendered refusals included.
///
/// `Router::layer(security)` (below) is the shortest way to apply it. In a busy server, wrap the
/// finished router instead (`security.layer(router)` or a `ServiceBuilder`) and serve that
/// service with `axum::ServiceExt::into_make_service_with_connect_info`, mapping the body with
/// `axum::body::Body::new`; `Router::new().fallback_service(..)` also works at the cost of one
/// boxed level. `Router::layer` boxes the stack around every route and axum clones that chain of
/// boxes on every request, which costs dozens of allocations per request in a deep stack
/// (`examples/secure_api.rs` serves its stack directly; figures in `docs/benchmarks.md`).
///
/// ```
/// use axum::body::Body;
/// use http::{Request, StatusCode};
/// use portcullis::Security;
/// use portcullis::authz::authenticated;
/// use portcullis::routing::{SecureRouter, get};
/// use portcullis::testing::TestKey;
/// use tower::ServiceExt;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let key = TestKey::ed25519("k1");
/// let jwt = portcullis::authn::jwt::JwtAuthenticator::builder()
///     .issuer("https://issuer.test")
///     .audience("api")
///     .key(key.verification_key())
///     .build()
///     .unwrap();
/// let security = Security::builder().authenticator(jwt).build().unwrap();
/// let app = SecureRouter::new()
///     .route("/me", get(|| async { "hi" }, authenticated()))
///     .into_router()
///     .unwrap()
///     .layer(security);
///
/// let token = key.mint(&key.claims("alice", "https://issuer.test", "api"));
/// let ok = app.clone()
///     .oneshot(Request::get("/me").header("authorization", format!("Bearer {token}")).body(Body::empty()).unwrap())
///     .await.unwrap();
/// assert_eq!(ok.status(), StatusCode::OK);
/// let anonymous = app.oneshot(Request::get("/me").body(Body::empty()).unwrap()).await.unwrap();
/// assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
/// # });
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Security {
    layer: SecurityStack,
}

/// Innermost first: authentication, the edge, CORS (optional), secure headers.
type SecurityStack = Stack<
    Stack<Stack<AuthnLayer, RequestContextLayer>, Either<CorsLayer, Identity>>,
    SecureHeadersLayer,
>;

impl Security {
    /// Starts the stack.
    pub fn builder() -> SecurityBuilder {
        SecurityBuilder {
            authenticators: Vec::new(),
            context: RequestContextLayer::new(),
            secure_headers: SecureHeadersLayer::api(),
            cors: None,
        }
    }
}

impl<S> Layer<S> for Security {
    type Service = <SecurityStack as Layer<S>>::Service;

    fn layer(&self, inner: S) -> Self::Service {
        self.layer.layer(inner)
    }
}

/// Builds a [`Security`] stack.
#[derive(Debug)]
#[must_use]
pub struct SecurityBuilder {
    authenticators: Vec<Arc<dyn Authenticator>>,
    context: RequestContextLayer,
    secure_headers: SecureHeadersLayer,
    cors: Option<CorsLayer>,
}

impl SecurityBuilder {
    /// Adds an authenticator (tried in the order added).
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticators.push(Arc::new(authenticator));
        self
    }
    /// Replaces the edge layer (for example to change its options).
    pub fn request_context(mut self, context: RequestContextLayer) -> Self {
        self.context = context;
        self
    }
    /// Replaces the secure response headers (default: [`SecureHeadersLayer::api`]); for
    /// example [`SecureHeadersLayer::html`] for server-rendered pages, or
    /// [`SecureHeadersLayer::insecure_disabled`] when another component sets them.
    pub fn secure_headers(mut self, headers: SecureHeadersLayer) -> Self {
        self.secure_headers = headers;
        self
    }
    /// Lets the origins of `cors` call the service from browsers (default: no CORS, browsers
    /// keep the same-origin policy). Placed outside the edge, so preflights are answered before
    /// authentication and rendered refusals still carry the CORS headers the caller's script
    /// needs to read them.
    pub fn cors(mut self, cors: CorsLayer) -> Self {
        self.cors = Some(cors);
        self
    }
    /// Checks the configuration and assembles the stack.
    ///
    /// A stack without authenticators is refused: it would make every caller anonymous.
    pub fn build(self) -> Result<Security, ConfigError> {
        if self.authenticators.is_empty() {
            return Err(ConfigError::new(
                "Security needs at least one authenticator",
            ));
        }
        Ok(Security {
            layer: Stack::new(
                Stack::new(
                    Stack::new(
                        AuthnLayer::from_authenticators(self.authenticators),
                        self.context,
                    ),
                    match self.cors {
                        Some(cors) => Either::Left(cors),
                        None => Either::Right(Identity::new()),
                    },
                ),
                self.secure_headers,
            ),
        })
    }
}
