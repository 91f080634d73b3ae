//! Accepting TLS connections: an HTTP server for tower services (axum routers) and an incoming
//! stream for tonic.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;
use tower_service::Service;

use super::identity::{ClientIdentity, PeerCertificates};
use super::server::{ReloadStatus, TlsServerConfig};

/// The default [`Serve::with_max_connection_age`].
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);

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
    max_connection_age: Option<Duration>,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("tls", &self.tls)
            .field("max_connection_age", &self.max_connection_age)
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
///
/// A client certificate is verified at the handshake only, so an open connection would
/// outlive the certificate's revocation. When the CRLs change
/// ([`ReloadStatus::crl_generation`](super::ReloadStatus::crl_generation)), every connection
/// that presented a client certificate is shut down gracefully: HTTP/2 gets a GOAWAY and
/// finishes its streams in flight, HTTP/1.1 closes after the request in flight. Its client
/// reconnects and is verified against the new CRLs. Every connection is also shut down the
/// same way after [`DEFAULT_MAX_CONNECTION_AGE`] (see
/// [`with_max_connection_age`](Serve::with_max_connection_age)), which bounds how long any
/// verification result is trusted. Such a shutdown is recorded as `tls.connection_drained`
/// at `DEBUG` on the `portcullis::tls` target.
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
        max_connection_age: Some(DEFAULT_MAX_CONNECTION_AGE),
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

    /// Shuts every connection down gracefully once it is `age` old (default
    /// [`DEFAULT_MAX_CONNECTION_AGE`]), so no handshake's verification is trusted longer.
    /// `None` keeps connections open for as long as their clients use them (they are still
    /// closed when the CRLs change).
    pub fn with_max_connection_age(mut self, age: Option<Duration>) -> Self {
        self.max_connection_age = age;
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
        max_connection_age,
    } = serve;
    let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
    // `true` asks every connection to finish; `closed()` resolves once all have ended.
    let (stopping, stop) = watch::channel(false);
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
        let mut stop = stop.clone();
        // Subscribed before the handshake: a CRL installed while it runs counts as a change.
        let mut status = tls.subscribe();
        let crl_generation = status.borrow_and_update().crl_generation;
        let deadline = max_connection_age.map(|age| tokio::time::Instant::now() + age);
        tokio::spawn(async move {
            let Some(stream) = handshake(&acceptor, tcp, remote_addr, timeout).await else {
                return;
            };
            let info = TlsConnectInfo::from_stream(remote_addr, &stream);
            let has_client_certificate = info.peer_certificates.is_some();
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
            let mut conn = std::pin::pin!(conn);
            let drain = drain_reason(
                &mut stop,
                has_client_certificate.then_some((&mut status, crl_generation)),
                deadline,
            );
            let mut drain = std::pin::pin!(drain);
            let mut draining = false;
            let result = loop {
                tokio::select! {
                    result = conn.as_mut() => break result,
                    reason = drain.as_mut(), if !draining => {
                        draining = true;
                        tracing::debug!(
                            target: "portcullis::tls",
                            event = "tls.connection_drained",
                            client_ip = %remote_addr.ip(),
                            reason,
                            "closing the connection gracefully"
                        );
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, client_ip = %remote_addr.ip(), "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stop);
    // Every connection task holds a receiver: this ends when the last one has finished.
    let _ = stopping.send(true);
    stopping.closed().await;
    Ok(())
}

/// Resolves when a connection must be shut down: the server stops, the CRLs changed since
/// the connection was verified (only for connections with a client certificate), or the
/// connection reached its maximum age.
async fn drain_reason(
    stop: &mut watch::Receiver<bool>,
    crls: Option<(&mut watch::Receiver<ReloadStatus>, u64)>,
    deadline: Option<tokio::time::Instant>,
) -> &'static str {
    let revocation = async {
        let changed = match crls {
            Some((status, verified)) => status
                .wait_for(|s| s.crl_generation != verified)
                .await
                .is_ok(),
            None => false,
        };
        // Not changed means no client certificate, or the configuration is gone (which
        // `Serve` prevents by holding it): nothing to wait for.
        if !changed {
            std::future::pending::<()>().await;
        }
    };
    let age = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        // An error means the server future was dropped: that ends the server as well.
        _ = stop.wait_for(|stopping| *stopping) => "server shutdown",
        () = revocation => "CRLs changed",
        () = age => "maximum connection age",
    }
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
