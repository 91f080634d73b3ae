//! The response future shared by [`RateLimit`](super::RateLimit) and
//! [`Lockout`](super::lockout::Lockout): refused at once, passed to the inner service (and the
//! response finished: headers added, outcome observed), or (with a shared store) checked
//! asynchronously first.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http::header::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;

use crate::ratelimit::layer::SuccessHeaders;
use crate::ratelimit::lockout::Observer;
use crate::rejection::{Rejection, RejectionKind};

/// The `RateLimit-Policy` header name.
pub(crate) const POLICY_HEADER: &str = "ratelimit-policy";
/// The `RateLimit` header name.
pub(crate) const STATE_HEADER: &str = "ratelimit";
/// The header names ready to use: appending by `&str` parses the name and copies it into a new
/// allocation whenever the header is not in the map yet.
pub(crate) const NAMES: [HeaderName; 2] = [
    HeaderName::from_static(POLICY_HEADER),
    HeaderName::from_static(STATE_HEADER),
];

/// What to do with the inner service's response.
pub(crate) enum Finish {
    /// Return it as it is.
    Nothing,
    /// Append a `RateLimit-Policy` and a `RateLimit` header.
    Headers(SuccessHeaders),
    /// Let the lockout layer count a failed authentication (or clear on success).
    Observe(Observer),
}

impl Finish {
    pub(crate) fn apply<B>(self, response: &mut Response<B>) {
        match self {
            Self::Nothing => {}
            Self::Headers(headers) => headers.apply(response.headers_mut()),
            Self::Observe(observer) => observer.observe(response),
        }
    }
}

/// Takes the service that `poll_ready` drove to readiness and leaves a fresh clone in its place,
/// for a call that awaits a shared store before reaching it (tower's readiness contract).
#[cfg(feature = "redis")]
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}

pub(crate) fn append(headers: &mut http::HeaderMap, policy: HeaderValue, state: HeaderValue) {
    let [policy_name, state_name] = NAMES;
    headers.append(policy_name, policy);
    headers.append(state_name, state);
}

type BoxedResponse<F> = Pin<Box<dyn Future<Output = <F as Future>::Output> + Send>>;

pin_project! {
    /// Response future of [`RateLimit`](super::RateLimit) and
    /// [`Lockout`](super::lockout::Lockout).
    pub struct ResponseFuture<F: Future, B> {
        #[pin]
        state: State<F, B>,
    }
}

impl<F: Future, B> ResponseFuture<F, B> {
    pub(crate) fn inner(future: F, finish: Finish) -> Self {
        Self {
            state: State::Inner { future, finish },
        }
    }

    pub(crate) fn refused(response: Response<B>) -> Self {
        Self {
            state: State::Refused {
                response: Some(response),
            },
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn boxed(future: BoxedResponse<F>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F: Future, B> {
        // Refused before reaching the inner service.
        Refused { response: Option<Response<B>> },
        // Passed to the inner service.
        Inner {
            #[pin]
            future: F,
            // `Finish::Nothing` once applied.
            finish: Finish,
        },
        // Checked against a shared store, then passed on or refused.
        Boxed { future: BoxedResponse<F> },
    }
}

impl<F: Future, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { response } => {
                // Polled after completion: answer with a bare refusal.
                Poll::Ready(Ok(response.take().unwrap_or_else(|| {
                    Rejection::new(RejectionKind::RateLimited, "polled after completion")
                        .into_deferred_response()
                })))
            }
            StateProj::Boxed { future } => future.as_mut().poll(cx),
            StateProj::Inner { future, finish } => {
                let mut response = ready!(future.poll(cx))?;
                std::mem::replace(finish, Finish::Nothing).apply(&mut response);
                Poll::Ready(Ok(response))
            }
        }
    }
}
