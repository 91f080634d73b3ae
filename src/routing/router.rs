//! Deny-by-default routing for axum.
//!
//! [`SecureRouter`] wraps [`axum::Router`]. Every route is declared together with a policy:
//! `get(handler, has_role("reader"))`. A handler without a policy cannot be expressed, so
//! there is nothing to forget:
//!
//! - unknown paths are refused with 404, and methods a path does not list with 405 (with
//!   `Allow`), both as problem documents;
//! - each (path, method) gets its own guard, which authorizes on the matched route template,
//!   never the raw path;
//! - nested and merged routers keep their policies;
//! - [`SecureRouter::report`] lists every (method, route, policy), so a test or an operator can
//!   review the whole surface;
//! - requests with ambiguous paths (`%2F`, dot segments, `;`...), over-long URIs or headers and
//!   unknown methods are refused with 400 by the
//!   [request hygiene layer](crate::validate::hygiene), on by default
//!   ([`SecureRouter::with_hygiene`] configures it, [`SecureRouter::insecure_without_hygiene`]
//!   removes it).
//!
//! ```
//! use axum::body::Body;
//! use http::{Request, StatusCode};
//! use portcullis::authz::{has_role, public};
//! use portcullis::context::RequestContextLayer;
//! use portcullis::routing::{SecureRouter, get};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let routes = SecureRouter::new()
//!     .route("/health", get(|| async { "ok" }, public()))
//!     .route("/documents/{id}", get(|| async { "doc" }, has_role("reader")));
//! assert_eq!(routes.report().routes.len(), 2);
//! let app = routes.into_router().unwrap().layer(RequestContextLayer::new());
//!
//! let health = app.clone().oneshot(Request::get("/health").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(health.status(), StatusCode::OK);
//! // No principal: the reader policy refuses with 401.
//! let doc = app.clone().oneshot(Request::get("/documents/1").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(doc.status(), StatusCode::UNAUTHORIZED);
//! let unknown = app.clone().oneshot(Request::get("/nope").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
//! let wrong_method = app.oneshot(Request::delete("/health").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
//! assert_eq!(wrong_method.headers()["allow"], "GET, HEAD");
//! # });
//! ```
//!
//! # Deployment caveat
//! Policies see the principal established by [`AuthnLayer`](crate::authn::AuthnLayer): layer it
//! (and [`RequestContextLayer`](crate::context::RequestContextLayer) outside it) around the
//! router returned by [`SecureRouter::into_router`], or use [`Security`](crate::Security),
//! which does both in the right order.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use http::HeaderValue;
use pin_project_lite::pin_project;

use crate::authz::guard::{AuthzConfig, authorize, route_of};
use crate::authz::{Rbac, SharedPolicy};
use crate::context::MatchedRoute;
use crate::error::ConfigError;
use crate::rejection::Rejection;
use crate::validate::hygiene::RequestHygieneLayer;

use super::{RouteEntry, RouteReport};

/// The HTTP methods a [`SecureMethodRouter`] can route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum RouteMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl RouteMethod {
    fn name(self) -> &'static str {
        match self {
            RouteMethod::Get => "GET",
            RouteMethod::Post => "POST",
            RouteMethod::Put => "PUT",
            RouteMethod::Patch => "PATCH",
            RouteMethod::Delete => "DELETE",
        }
    }
    fn filter(self) -> MethodFilter {
        match self {
            RouteMethod::Get => MethodFilter::GET,
            RouteMethod::Post => MethodFilter::POST,
            RouteMethod::Put => MethodFilter::PUT,
            RouteMethod::Patch => MethodFilter::PATCH,
            RouteMethod::Delete => MethodFilter::DELETE,
        }
    }
}

/// What every guarded handler of a router is built with: the outermost router's authorization
/// configuration and request hygiene.
struct GuardSettings {
    config: Arc<AuthzConfig>,
    hygiene: Option<RequestHygieneLayer>,
}

/// Builds one method's axum route once the router's [`GuardSettings`] are known.
type BuildRoute<S> = Box<dyn FnOnce(&GuardSettings) -> MethodRouter<S> + Send + Sync>;

/// The methods of one path, each with its handler and policy.
pub struct SecureMethodRouter<S = ()> {
    methods: Vec<(RouteMethod, SharedPolicy, BuildRoute<S>)>,
    errors: Vec<String>,
}

impl<S> fmt::Debug for SecureMethodRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (method, policy, _) in &self.methods {
            list.entry(&(method.name(), policy));
        }
        list.finish()
    }
}

macro_rules! method_fns {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[doc = concat!("Routes `", stringify!($method), "` requests to `handler`, guarded by `policy`.")]
            pub fn $name<H, T, S>(handler: H, policy: SharedPolicy) -> SecureMethodRouter<S>
            where
                H: Handler<T, S>,
                T: 'static,
                S: Clone + Send + Sync + 'static,
            {
                SecureMethodRouter::empty().add(RouteMethod::$method, handler, policy)
            }
        )*

        impl<S: Clone + Send + Sync + 'static> SecureMethodRouter<S> {
            $(
                #[doc = concat!("Adds `", stringify!($method), "` to this path, guarded by `policy`.")]
                pub fn $name<H, T>(self, handler: H, policy: SharedPolicy) -> Self
                where
                    H: Handler<T, S>,
                    T: 'static,
                {
                    self.add(RouteMethod::$method, handler, policy)
                }
            )*
        }
    };
}

method_fns!(get => Get, post => Post, put => Put, patch => Patch, delete => Delete);

impl<S: Clone + Send + Sync + 'static> SecureMethodRouter<S> {
    fn empty() -> Self {
        Self {
            methods: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: RouteMethod, handler: H, policy: SharedPolicy) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        if self.methods.iter().any(|(m, _, _)| *m == method) {
            self.errors
                .push(format!("{} declared twice for one path", method.name()));
            return self;
        }
        let guard_policy = policy.clone();
        let build: BuildRoute<S> = Box::new(move |settings: &GuardSettings| {
            let guarded = GuardedHandler {
                handler,
                guard: Arc::new(HandlerGuard {
                    policy: guard_policy,
                    config: settings.config.clone(),
                    hygiene: settings.hygiene.clone(),
                    route: OnceLock::new(),
                }),
            };
            axum::routing::on(method.filter(), guarded)
        });
        self.methods.push((method, policy, build));
        self
    }

    fn merge_from(&mut self, other: SecureMethodRouter<S>, path: &str) {
        self.errors.extend(other.errors);
        for entry in other.methods {
            if self.methods.iter().any(|(m, _, _)| *m == entry.0) {
                self.errors
                    .push(format!("{} {path} declared twice", entry.0.name()));
            } else {
                self.methods.push(entry);
            }
        }
    }

    fn allow_header(&self) -> HeaderValue {
        let mut names: Vec<&str> = Vec::new();
        let mut sorted: Vec<RouteMethod> = self.methods.iter().map(|(m, _, _)| *m).collect();
        sorted.sort();
        for m in sorted {
            names.push(m.name());
            if m == RouteMethod::Get {
                names.push("HEAD");
            }
        }
        HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    fn into_method_router(self, settings: &GuardSettings) -> MethodRouter<S> {
        let allow = self.allow_header();
        let mut merged: Option<MethodRouter<S>> = None;
        for (_, _, build) in self.methods {
            let route = build(settings);
            merged = Some(match merged {
                None => route,
                // Methods are unique per path (checked in `add`), so merging cannot overlap.
                Some(previous) => previous.merge(route),
            });
        }
        let hygiene = settings.hygiene.clone();
        merged.unwrap_or_default().fallback(move |req: Request| {
            let refusal = hygiene_refusal(hygiene.as_ref(), &req);
            let allow = allow.clone();
            async move {
                refusal.unwrap_or_else(|| {
                    Rejection::method_not_allowed(allow).into_deferred_response()
                })
            }
        })
    }
}

/// A deny-by-default router. See the [module docs](crate::routing).
pub struct SecureRouter<S = ()> {
    routes: BTreeMap<String, SecureMethodRouter<S>>,
    nested: Vec<(String, SecureRouter<S>)>,
    config: AuthzConfig,
    errors: Vec<String>,
    hygiene: Option<RequestHygieneLayer>,
}

impl<S> fmt::Debug for SecureRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecureRouter")
            .field("routes", &self.routes)
            .field("nested", &self.nested)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> Default for SecureRouter<S> {
    fn default() -> Self {
        Self::new()
    }
}

fn join_paths(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if path == "/" {
        if prefix.is_empty() {
            "/".into()
        } else {
            prefix.into()
        }
    } else {
        format!("{prefix}{path}")
    }
}

impl<S: Clone + Send + Sync + 'static> SecureRouter<S> {
    /// An empty router with no role hierarchy.
    pub fn new() -> Self {
        Self::with_config(AuthzConfig::default())
    }

    /// An empty router whose policies use `rbac` (role hierarchy and role permissions).
    pub fn with_rbac(rbac: Rbac) -> Self {
        Self::with_config(AuthzConfig::new(rbac))
    }

    /// An empty router with a full authorization configuration.
    pub fn with_config(config: AuthzConfig) -> Self {
        Self {
            routes: BTreeMap::new(),
            nested: Vec::new(),
            config,
            errors: Vec::new(),
            hygiene: Some(RequestHygieneLayer::new()),
        }
    }

    /// Replaces the default request hygiene layer (for other limits or extra methods). Only the
    /// outermost router's setting applies.
    pub fn with_hygiene(mut self, hygiene: RequestHygieneLayer) -> Self {
        self.hygiene = Some(hygiene);
        self
    }

    /// Serves requests without the hygiene checks. Default: on. Without them, ambiguous paths
    /// reach the router and handlers, and any method or header volume the HTTP server accepts
    /// is let through.
    pub fn insecure_without_hygiene(mut self) -> Self {
        self.hygiene = None;
        self
    }

    /// Declares `path` with its methods and policies. Declaring the same path again adds
    /// methods; declaring the same method twice is a configuration error reported by
    /// [`into_router`](Self::into_router).
    pub fn route(mut self, path: &str, methods: SecureMethodRouter<S>) -> Self {
        if !path.starts_with('/') {
            self.errors
                .push(format!("route {path:?} must start with '/'"));
            return self;
        }
        match self.routes.get_mut(path) {
            Some(existing) => existing.merge_from(methods, path),
            None => {
                self.routes.insert(path.to_owned(), methods);
            }
        }
        self
    }

    /// Mounts `router` under `prefix`. Its routes keep their policies; the outer router's
    /// authorization configuration applies.
    pub fn nest(mut self, prefix: &str, router: SecureRouter<S>) -> Self {
        if !prefix.starts_with('/') || prefix == "/" {
            self.errors.push(format!(
                "nest prefix {prefix:?} must start with '/' and not be '/'"
            ));
            return self;
        }
        self.nested.push((prefix.to_owned(), router));
        self
    }

    /// Adds every route of `other` to this router.
    pub fn merge(mut self, other: SecureRouter<S>) -> Self {
        self.errors.extend(other.errors);
        for (path, methods) in other.routes {
            self = self.route(&path, methods);
        }
        self.nested.extend(other.nested);
        self
    }

    /// Every (method, route, policy) this router will serve.
    pub fn report(&self) -> RouteReport {
        let mut routes = Vec::new();
        self.collect("", &mut routes);
        routes.sort_by(|a, b| (&a.route, &a.method).cmp(&(&b.route, &b.method)));
        RouteReport { routes }
    }

    fn collect(&self, prefix: &str, out: &mut Vec<RouteEntry>) {
        for (path, methods) in &self.routes {
            for (method, policy, _) in &methods.methods {
                out.push(RouteEntry {
                    method: method.name().to_owned(),
                    route: join_paths(prefix, path),
                    policy: policy.id().to_string(),
                });
            }
        }
        for (nested_prefix, router) in &self.nested {
            router.collect(&join_paths(prefix, nested_prefix), out);
        }
    }

    fn collect_errors(&self, out: &mut Vec<String>) {
        out.extend(self.errors.iter().cloned());
        for methods in self.routes.values() {
            out.extend(methods.errors.iter().cloned());
        }
        for (_, router) in &self.nested {
            router.collect_errors(out);
        }
    }

    /// Counts, for every full path, how many routers (this one and the nested ones) declare it.
    fn collect_paths(&self, prefix: &str, out: &mut BTreeMap<String, usize>) {
        for path in self.routes.keys() {
            *out.entry(join_paths(prefix, path)).or_default() += 1;
        }
        for (nested_prefix, router) in &self.nested {
            router.collect_paths(&join_paths(prefix, nested_prefix), out);
        }
    }

    fn into_axum(self, settings: &GuardSettings) -> Router<S> {
        let mut router = Router::new();
        for (path, methods) in self.routes {
            router = router.route(&path, methods.into_method_router(settings));
        }
        for (prefix, nested) in self.nested {
            router = router.nest(&prefix, nested.into_axum(settings));
        }
        router
    }

    /// Builds the axum router: every declared route behind its guard, 404 for everything
    /// else. Fails if the declaration has errors (duplicate methods, malformed paths).
    pub fn into_router(self) -> Result<Router<S>, ConfigError> {
        let mut errors = Vec::new();
        self.collect_errors(&mut errors);
        // axum cannot combine one path's methods across nested routers (it panics), so a path
        // declared in several places is a declaration error, like a method declared twice.
        let mut paths = BTreeMap::new();
        self.collect_paths("", &mut paths);
        errors.extend(
            paths
                .into_iter()
                .filter(|(_, count)| *count > 1)
                .map(|(path, _)| format!("{path} declared by more than one (nested) router")),
        );
        if !errors.is_empty() {
            return Err(ConfigError::new(format!(
                "invalid routes: {}",
                errors.join("; ")
            )));
        }
        // Each handler is built with the guard, the configuration and the hygiene checks
        // rather than wrapped in `Router::layer`/`route_layer` levels: axum boxes every such
        // level and clones the boxes for each request.
        let settings = GuardSettings {
            config: Arc::new(self.config.clone()),
            hygiene: self.hygiene.clone(),
        };
        let hygiene = settings.hygiene.clone();
        Ok(self
            .into_axum(&settings)
            .fallback(move |req: Request| {
                let refusal = hygiene_refusal(hygiene.as_ref(), &req);
                async move {
                    refusal.unwrap_or_else(|| Rejection::not_found().into_deferred_response())
                }
            }))
    }
}

/// The hygiene refusal for `req`, if the checks are on and it fails them. Checked in every
/// handler and fallback before anything else, so no handler sees a refused request.
fn hygiene_refusal(hygiene: Option<&RequestHygieneLayer>, req: &Request) -> Option<Response> {
    let hygiene = hygiene?;
    // Nested routers see the path without their prefix: check what the client sent. A layer
    // outside this router may also have rewritten the URI: then check what is routed too.
    let routed = req.uri();
    let refused = match req.extensions().get::<axum::extract::OriginalUri>() {
        Some(original) if original.0 != *routed => {
            hygiene.check_parts(req.method(), &[&original.0, routed], req.headers())
        }
        _ => hygiene.check_parts(req.method(), &[routed], req.headers()),
    };
    refused.err().map(Rejection::into_deferred_response)
}

/// A route's guard: hygiene, then the policy on the matched route template.
struct HandlerGuard {
    policy: SharedPolicy,
    config: Arc<AuthzConfig>,
    hygiene: Option<RequestHygieneLayer>,
    /// The template this route matched last time (see `route_of`).
    route: OnceLock<Arc<str>>,
}

/// A handler behind its guard. Being a [`Handler`] itself, it costs axum no extra boxed route
/// level per request, unlike a `route_layer`.
struct GuardedHandler<H> {
    handler: H,
    guard: Arc<HandlerGuard>,
}

impl<H: Clone> Clone for GuardedHandler<H> {
    fn clone(&self) -> Self {
        Self {
            handler: self.handler.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<H, T, S> Handler<T, S> for GuardedHandler<H>
where
    H: Handler<T, S>,
    T: 'static,
    S: Send + Sync + 'static,
{
    type Future = GuardedFuture<H::Future>;

    fn call(self, req: Request, state: S) -> Self::Future {
        let guard = &self.guard;
        if let Some(refusal) = hygiene_refusal(guard.hygiene.as_ref(), &req) {
            return GuardedFuture::denied(refusal);
        }
        let Some(route) = route_of(&req, &guard.route) else {
            let rejection = Rejection::forbidden("no matched route to authorize")
                .with_policy_id(guard.policy.id().clone());
            return GuardedFuture::denied(rejection.into_deferred_response());
        };
        match authorize(&guard.policy, Some(&guard.config), route, req) {
            Ok((mut req, route)) => {
                // For guards inside the handler (`PolicyGuardLayer::new`) and handlers that
                // read the router's role tables.
                req.extensions_mut().insert(guard.config.clone());
                GuardedFuture::allowed(self.handler.call(req, state), route)
            }
            Err(response) => GuardedFuture::denied(response),
        }
    }
}

pin_project! {
    /// Response future of a guarded handler.
    struct GuardedFuture<F> {
        #[pin]
        state: GuardedState<F>,
    }
}

pin_project! {
    #[project = GuardedStateProj]
    enum GuardedState<F> {
        Allowed { #[pin] future: F, route: Option<MatchedRoute> },
        Denied { response: Option<Response> },
    }
}

impl<F> GuardedFuture<F> {
    fn allowed(future: F, route: MatchedRoute) -> Self {
        Self {
            state: GuardedState::Allowed {
                future,
                route: Some(route),
            },
        }
    }
    fn denied(response: Response) -> Self {
        Self {
            state: GuardedState::Denied {
                response: Some(response),
            },
        }
    }
}

impl<F: Future<Output = Response>> Future for GuardedFuture<F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        match self.project().state.project() {
            GuardedStateProj::Allowed { future, route } => {
                let mut response = std::task::ready!(future.poll(cx));
                // The audit event at the edge names the route from the response.
                if let Some(route) = route.take() {
                    response.extensions_mut().insert(route);
                }
                Poll::Ready(response)
            }
            GuardedStateProj::Denied { response } => Poll::Ready(
                // Polled again after completion, which callers must not do: answer with a
                // fresh refusal rather than panic.
                response.take().unwrap_or_else(|| {
                    Rejection::forbidden("response future polled after completion")
                        .into_deferred_response()
                }),
            ),
        }
    }
}
