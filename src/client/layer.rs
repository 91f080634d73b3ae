//! [`BearerTokenLayer`]: attaches a token to every outgoing request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use http::header::AUTHORIZATION;
use tower_layer::Layer;
use tower_service::Service;

use super::token::TokenSource;

/// The error of a [`BearerToken`] service: the inner service's error, or a
/// [`TokenError`](super::TokenError) when no token could be obtained.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds `Authorization: Bearer <token>` from a [`TokenSource`] to every request. See the
/// [module docs](super).
#[derive(Clone)]
#[must_use]
pub struct BearerTokenLayer {
    source: Arc<dyn TokenSource>,
}

impl fmt::Debug for BearerTokenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerTokenLayer")
            .field("source", &self.source)
            .finish()
    }
}

impl BearerTokenLayer {
    /// A layer taking its tokens from `source`.
    pub fn new(source: impl TokenSource) -> Self {
        Self {
            source: Arc::new(source),
        }
    }
}

impl<S> Layer<S> for BearerTokenLayer {
    type Service = BearerToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerToken {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service produced by [`BearerTokenLayer`].
#[derive(Clone)]
pub struct BearerToken<S> {
    inner: S,
    source: Arc<dyn TokenSource>,
}

impl<S: fmt::Debug> fmt::Debug for BearerToken<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("inner", &self.inner)
            .field("source", &self.source)
            .finish()
    }
}

/// The future of a [`BearerToken`] call.
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>,
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, B> Service<Request<B>> for BearerToken<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Take the service that was driven to readiness; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                let token = source.token().await?;
                req.headers_mut()
                    .insert(AUTHORIZATION, token.authorization()?);
                inner.call(req).await.map_err(Into::into)
            }),
        }
    }
}
