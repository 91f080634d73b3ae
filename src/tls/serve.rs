//! Accepting TLS connections: an HTTP server for tower services (axum routers) and an incoming
//! stream for tonic.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;
use tower_service::Service;

use super::identity::{ClientIdentity, PeerCertificates};
use super::server::TlsServerConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the TLS layer established for one connection; in the request extensions of every
/// request on it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsConnectInfo {
    /// The TCP peer.
    pub remote_addr: SocketAddr,
    /// The negotiated protocol version (`TLSv1_3`, `TLSv1_2`).
    pub protocol: Option<&'static str>,
    /// The negotiated cipher suite (`TLS13_AES_128_GCM_SHA256`, ...).
    pub cipher_suite: Option<&'static str>,
    /// The negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The verified client certificate chain, when the client sent one.
    pub peer_certificates: Option<PeerCertificates>,
}

impl TlsConnectInfo {
    fn from_stream(remote_addr: SocketAddr, stream: &TlsStream<TcpStream>) -> Self {
        let (_, session) = stream.get_ref();
        Self {
            remote_addr,
            protocol: session.protocol_version().and_then(|v| v.as_str()),
            cipher_suite: session
                .negotiated_cipher_suite()
                .and_then(|s| s.suite().as_str()),
            alpn: session.alpn_protocol().map(<[u8]>::to_vec),
            server_name: session.server_name().map(str::to_owned),
            peer_certificates: session
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|c| {
                    PeerCertificates(Arc::new(c.iter().map(|c| c.clone().into_owned()).collect()))
                }),
        }
    }
}

/// Serves `service` over TLS on `listener`: returned by [`serve`]; await it (or
/// [`with_graceful_shutdown`](Self::with_graceful_shutdown) first).
#[must_use = "a server does nothing until awaited"]
pub struct Serve<S> {
    listener: TcpListener,
    tls: TlsServerConfig,
    service: S,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Accepts TLS connections on `listener` and serves HTTP/1.1 and HTTP/2 (by ALPN) with
/// `service`, typically an axum `Router`.
///
/// Every request carries in its extensions: the peer address as `SocketAddr` and (feature
/// `axum`) `ConnectInfo<SocketAddr>`, so [`ClientIpResolver`](crate::client_ip::ClientIpResolver)
/// and the audit events see the client; [`TlsConnectInfo`];
/// [`SecureTransport`](crate::headers::SecureTransport), so
/// [`SecureHeadersLayer`](crate::headers::SecureHeadersLayer) sends HSTS; and, when the client presented a
/// verified certificate, [`PeerCertificates`] and its [`ClientIdentity`] (left out when the
/// certificate names no usable identity, for instance two SPIFFE IDs; the
/// [`MtlsAuthenticator`](crate::authn::mtls::MtlsAuthenticator) refuses those with 401).
///
/// Handshakes run concurrently, each limited by the configuration's handshake timeout; a
/// failed handshake only closes that connection. A refused client certificate (unknown CA,
/// expired, revoked, missing when required) is recorded as `tls.client_certificate_rejected`
/// on the audit target at `WARN`, with the client address and the reason; other handshake
/// failures as `tls.handshake_failed` at `DEBUG`. Errors of `accept` itself (out of file descriptors) are
/// retried after a short pause rather than ending the server.
pub fn serve<S, B>(listener: TcpListener, tls: TlsServerConfig, service: S) -> Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Serve {
        listener,
        tls,
        service,
        shutdown: None,
    }
}

impl<S> Serve<S> {
    /// Stops accepting when `signal` completes, then waits for open connections to finish
    /// their requests (HTTP/2 connections get a GOAWAY, idle HTTP/1.1 ones are closed).
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = std::io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self))
    }
}

async fn run<S, B>(serve: Serve<S>) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let Serve {
        listener,
        tls,
        service,
        shutdown,
    } = serve;
    let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer enables hyper's default header read timeout for HTTP/1.1 (slow-header clients).
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let acceptor = tls.acceptor();
    loop {
        let (tcp, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let timeout = tls.handshake_timeout();
        let service = service.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(stream) = handshake(&acceptor, tcp, remote_addr, timeout).await else {
                return;
            };
            let info = TlsConnectInfo::from_stream(remote_addr, &stream);
            let identity = info
                .peer_certificates
                .as_ref()
                .and_then(|p| ClientIdentity::from_chain(&p.0).ok());
            let hyper_service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                let ext = req.extensions_mut();
                ext.insert(remote_addr);
                #[cfg(feature = "axum")]
                ext.insert(axum::extract::ConnectInfo(remote_addr));
                if let Some(peer) = &info.peer_certificates {
                    ext.insert(peer.clone());
                }
                if let Some(identity) = &identity {
                    ext.insert(identity.clone());
                }
                ext.insert(info.clone());
                // The request came over TLS: `SecureHeadersLayer` may send HSTS.
                ext.insert(crate::headers::SecureTransport);
                service.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), hyper_service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, client_ip = %remote_addr.ip(), "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    timeout: std::time::Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            // A client certificate that failed verification (unknown CA, expired, revoked) is
            // a security event; other failures (scanners, protocol mismatches) are noise.
            let certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|tls| {
                    matches!(
                        tls,
                        rustls::Error::InvalidCertificate(_)
                            | rustls::Error::NoCertificatesPresented
                    )
                });
            if certificate {
                crate::audit::global().record(
                    crate::audit::AuditEvent::new(crate::audit::EventType::AuthnFailure)
                        .with_reason_code("tls.client_certificate_rejected")
                        .with_reason(e.to_string())
                        .with_client_ip(remote_addr.ip()),
                );
            } else {
                tracing::debug!(
                    target: "portcullis::tls",
                    event = "tls.handshake_failed",
                    client_ip = %remote_addr.ip(),
                    reason = %e,
                    "TLS handshake failed"
                );
            }
            None
        }
        Err(_) => {
            tracing::debug!(
                target: "portcullis::tls",
                event = "tls.handshake_failed",
                client_ip = %remote_addr.ip(),
                reason = "handshake timeout",
                "TLS handshake timed out"
            );
            None
        }
    }
}

/// TLS connections accepted on a listener, as a stream for tonic's
/// `Server::serve_with_incoming` (so tonic serves with this crate's configuration: hot
/// reload, CRLs, the same cipher policy).
///
/// Handshakes run concurrently in a background task owned by the stream (each limited by the
/// handshake timeout); only completed handshakes are yielded, failures are recorded like in
/// [`serve`]. With the `tonic` feature, tonic then puts its `TlsConnectInfo` (peer address and
/// certificates) into the request extensions, which
/// [`ClientIdentity::from_extensions`] and the mTLS authenticator read. Dropping the stream
/// stops accepting.
#[derive(Debug)]
pub struct TlsIncoming {
    receiver: mpsc::Receiver<TlsStream<TcpStream>>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsIncoming {
    /// Starts accepting on `listener` (inside a tokio runtime).
    pub fn new(listener: TcpListener, tls: TlsServerConfig) -> Self {
        let (sender, receiver) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            let acceptor = tls.acceptor();
            loop {
                let (tcp, remote_addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                let timeout = tls.handshake_timeout();
                tokio::spawn(async move {
                    if let Some(stream) = handshake(&acceptor, tcp, remote_addr, timeout).await {
                        // The receiver is gone only when the server stopped.
                        let _ = sender.send(stream).await;
                    }
                });
            }
        });
        Self { receiver, task }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_util::Stream for TlsIncoming {
    type Item = Result<TlsStream<TcpStream>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx).map(|s| s.map(Ok))
    }
}
