//! The response body produced by the edge layer: either the inner service's body or a rendered
//! rejection.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// Boxed error type used by [`SecureBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project! {
    /// The body of a response that went through
    /// [`RequestContextLayer`](crate::context::RequestContextLayer): the inner body untouched, or
    /// a fixed problem document.
    #[derive(Debug)]
    pub struct SecureBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Fixed { bytes: Option<Bytes> },
    }
}

impl<B> SecureBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        SecureBody {
            kind: Kind::Inner { body },
        }
    }
    /// A fixed body.
    pub fn fixed(bytes: Bytes) -> Self {
        SecureBody {
            kind: Kind::Fixed {
                bytes: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }
}

/// An empty body (what a CORS preflight answer carries).
impl<B> Default for SecureBody<B> {
    fn default() -> Self {
        Self::fixed(Bytes::new())
    }
}

impl<B> Body for SecureBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body
                .poll_frame(cx)
                .map(|frame| frame.map(|r| r.map_err(Into::into))),
            KindProj::Fixed { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Fixed { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Fixed { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
