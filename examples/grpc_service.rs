//! The demo's policies over gRPC: tonic with `MethodPolicies`, JWT bearer tokens, and with
//! `--tls` mutual TLS whose client certificates map to principals.
//!
//! ```text
//! cargo run --example grpc_service            # h2c on PORTCULLIS_ADDR (default 127.0.0.1:50051)
//! cargo run --example grpc_service -- --tls   # TLS, client certificates mapped to principals
//! ```
//!
//! Service `portcullis.demo.v1.Documents` (schema in `examples/grpc_service.proto`; messages and
//! service are written by hand with prost derives and tonic's codec, so no `protoc` is needed)
//! and `grpc.health.v1.Health`, with the policies of `secure_api`:
//!
//! | method | policy |
//! |---|---|
//! | `/grpc.health.v1.Health/Check` | public |
//! | `/portcullis.demo.v1.Documents/WhoAmI` | authenticated |
//! | `/portcullis.demo.v1.Documents/GetDocument` | role `reader` (editor and admin inherit it) |
//! | `/portcullis.demo.v1.Documents/CreateDocument` | role `editor` |
//! | `/portcullis.demo.v1.Documents/DeleteDocument` | role `admin` |
//! | anything else (`Purge`, `Health/Watch`) | refused, `PERMISSION_DENIED` |
//!
//! Tokens: an ephemeral Ed25519 key signs tokens for a reader, an editor and an admin, printed at
//! startup (`authorization: Bearer ...` metadata). With `--tls` the server uses
//! `PORTCULLIS_TLS_CERT`, `PORTCULLIS_TLS_KEY` and `PORTCULLIS_TLS_CLIENT_CA`, or a throwaway PKI
//! with client certificates `spiffe://portcullis.test/{reader,editor,admin}` that carry those
//! roles. Client certificates are optional (callers without one use a token); when a request
//! carries both, the token decides.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use portcullis::Security;
use portcullis::authn::jwt::JwtAuthenticator;
use portcullis::authn::mtls::MtlsAuthenticator;
use portcullis::authz::{Rbac, authenticated, has_role, public};
use portcullis::principal::Principal;
use portcullis::routing::{MethodPolicies, MethodPoliciesLayer};
use portcullis::testing::TestKey;
use portcullis::tls::{ClientAuth, TlsIncoming, TlsServerConfig};
use serde_json::json;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) const ISSUER: &str = "https://grpc-demo.portcullis.test";
pub(crate) const AUDIENCE: &str = "portcullis-demo";
pub(crate) const TRUST_DOMAIN: &str = "portcullis.test";
pub(crate) const SERVICE: &str = "portcullis.demo.v1.Documents";

/// The messages of `examples/grpc_service.proto`.
pub(crate) mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WhoAmIRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WhoAmIResponse {
        #[prost(string, tag = "1")]
        pub(crate) subject: String,
        #[prost(string, tag = "2")]
        pub(crate) kind: String,
        #[prost(string, repeated, tag = "3")]
        pub(crate) roles: Vec<String>,
        #[prost(string, tag = "4")]
        pub(crate) auth_method: String,
        #[prost(string, tag = "5")]
        pub(crate) spiffe_id: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct GetDocumentRequest {
        #[prost(uint64, tag = "1")]
        pub(crate) id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct CreateDocumentRequest {
        #[prost(string, tag = "1")]
        pub(crate) title: String,
        #[prost(string, tag = "2")]
        pub(crate) url: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Document {
        #[prost(uint64, tag = "1")]
        pub(crate) id: u64,
        #[prost(string, tag = "2")]
        pub(crate) title: String,
        #[prost(string, tag = "3")]
        pub(crate) url: String,
        #[prost(string, tag = "4")]
        pub(crate) owner: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct DeleteDocumentRequest {
        #[prost(uint64, tag = "1")]
        pub(crate) id: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct DeleteDocumentResponse {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PurgeRequest {}
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PurgeResponse {}
}

type Documents = Arc<RwLock<BTreeMap<u64, pb::Document>>>;
type UnaryFuture<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;

/// One unary method as a tonic `UnaryService`.
struct Unary<Req, Res, F> {
    handler: F,
    _types: PhantomData<fn(Req) -> Res>,
}

impl<Req, Res, F> tonic::server::UnaryService<Req> for Unary<Req, Res, F>
where
    F: FnMut(Request<Req>) -> UnaryFuture<Res>,
{
    type Response = Res;
    type Future = UnaryFuture<Res>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        (self.handler)(request)
    }
}

fn unary<Req, Res, F>(handler: F) -> Unary<Req, Res, F> {
    Unary {
        handler,
        _types: PhantomData,
    }
}

/// The `Documents` service: what tonic's code generator would write, by hand.
#[derive(Clone, Default)]
pub(crate) struct DocumentsService {
    documents: Documents,
}

impl NamedService for DocumentsService {
    const NAME: &'static str = SERVICE;
}

fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    // The method policies ran first; a missing principal here would be a stack misconfiguration.
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("authentication required"))
}

impl DocumentsService {
    fn who_am_i(request: Request<pb::WhoAmIRequest>) -> UnaryFuture<pb::WhoAmIResponse> {
        Box::pin(async move {
            let p = principal(&request)?;
            let kind = serde_json::to_value(p.kind())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            Ok(Response::new(pb::WhoAmIResponse {
                subject: p.subject().to_owned(),
                kind,
                roles: p.roles().to_vec(),
                auth_method: p.auth_method().name().to_owned(),
                spiffe_id: p
                    .attribute("spiffe_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            }))
        })
    }

    fn get(
        documents: Documents,
    ) -> impl FnMut(Request<pb::GetDocumentRequest>) -> UnaryFuture<pb::Document> {
        move |request| {
            let documents = documents.clone();
            Box::pin(async move {
                let id = request.get_ref().id;
                let found = documents
                    .read()
                    .map_err(|_| Status::unavailable("store unavailable"))?
                    .get(&id)
                    .cloned();
                found
                    .map(Response::new)
                    .ok_or_else(|| Status::not_found("no such document"))
            })
        }
    }

    fn create(
        documents: Documents,
    ) -> impl FnMut(Request<pb::CreateDocumentRequest>) -> UnaryFuture<pb::Document> {
        move |request| {
            let documents = documents.clone();
            Box::pin(async move {
                let owner = principal(&request)?.subject().to_owned();
                let new = request.into_inner();
                let title_len = new.title.chars().count();
                if !(1..=200).contains(&title_len) || !new.url.starts_with("https://") {
                    return Err(Status::invalid_argument(
                        "title must be 1..=200 characters and url an https URL",
                    ));
                }
                let mut documents = documents
                    .write()
                    .map_err(|_| Status::unavailable("store unavailable"))?;
                let id = documents.keys().next_back().map_or(1, |last| last + 1);
                let document = pb::Document {
                    id,
                    title: new.title,
                    url: new.url,
                    owner,
                };
                documents.insert(id, document.clone());
                Ok(Response::new(document))
            })
        }
    }

    fn delete(
        documents: Documents,
    ) -> impl FnMut(Request<pb::DeleteDocumentRequest>) -> UnaryFuture<pb::DeleteDocumentResponse>
    {
        move |request| {
            let documents = documents.clone();
            Box::pin(async move {
                let id = request.get_ref().id;
                let removed = documents
                    .write()
                    .map_err(|_| Status::unavailable("store unavailable"))?
                    .remove(&id);
                removed
                    .map(|_| Response::new(pb::DeleteDocumentResponse {}))
                    .ok_or_else(|| Status::not_found("no such document"))
            })
        }
    }

    fn purge(_request: Request<pb::PurgeRequest>) -> UnaryFuture<pb::PurgeResponse> {
        Box::pin(async { Ok(Response::new(pb::PurgeResponse {})) })
    }
}

impl<B> tower::Service<http::Request<B>> for DocumentsService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let documents = self.documents.clone();
        let path = req
            .uri()
            .path()
            .strip_prefix("/portcullis.demo.v1.Documents/");
        match path {
            Some("WhoAmI") => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(unary(Self::who_am_i), req).await)
            }),
            Some("GetDocument") => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(unary(Self::get(documents)), req).await)
            }),
            Some("CreateDocument") => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(unary(Self::create(documents)), req).await)
            }),
            Some("DeleteDocument") => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(unary(Self::delete(documents)), req).await)
            }),
            Some("Purge") => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(unary(Self::purge), req).await)
            }),
            _ => Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// The method table: the policies of `secure_api`, over gRPC.
pub(crate) fn method_policies() -> Result<MethodPoliciesLayer, BoxError> {
    let rbac = Rbac::builder()
        .inherit("admin", "editor")
        .inherit("editor", "reader")
        .build()?;
    let method = |name: &str| format!("/{SERVICE}/{name}");
    Ok(MethodPolicies::new()
        .with_rbac(rbac)
        .method("/grpc.health.v1.Health/Check", public())
        .method(&method("WhoAmI"), authenticated())
        .method(&method("GetDocument"), has_role("reader"))
        .method(&method("CreateDocument"), has_role("editor"))
        .method(&method("DeleteDocument"), has_role("admin"))
        .build()?)
}

/// Client certificates: every certificate the client CA verified is admitted; the throwaway
/// identities `spiffe://portcullis.test/{reader,editor,admin}` carry those roles. A bearer
/// token on the same request decides instead of the certificate.
pub(crate) fn mtls_authenticator() -> Result<MtlsAuthenticator, BoxError> {
    let mut builder = MtlsAuthenticator::builder()
        .allow_any_verified_certificate()
        .prefer_authorization_header();
    for role in ["reader", "editor", "admin"] {
        builder = builder.roles_for_spiffe_id(format!("spiffe://{TRUST_DOMAIN}/{role}"), [role]);
    }
    Ok(builder.build()?)
}

/// Serves until `shutdown`: with `tls`, over TLS with the mTLS authenticator before JWT.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<TlsServerConfig>,
    jwt: JwtAuthenticator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DocumentsService>().await;
    let documents = DocumentsService::default();
    if let Ok(mut docs) = documents.documents.write() {
        docs.insert(
            1,
            pb::Document {
                id: 1,
                title: "Welcome".into(),
                url: "https://example.com/welcome".into(),
                owner: "admin".into(),
            },
        );
    }
    // With TLS the certificate is tried first; a bearer token on the same request decides.
    let mut security = Security::builder();
    if tls.is_some() {
        security = security.authenticator(mtls_authenticator()?);
    }
    let security = security.authenticator(jwt).build()?;
    let router = Server::builder()
        .layer(security)
        .layer(method_policies()?)
        .add_service(health)
        .add_service(documents);
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(TlsIncoming::new(listener, tls), shutdown)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    shutdown,
                )
                .await?
        }
    }
    Ok(())
}

/// A throwaway CA, a server certificate for `localhost`/`127.0.0.1` and client certificates
/// `spiffe://portcullis.test/{reader,editor,admin}` in `dir`; returns (CA, server cert, server
/// key).
pub(crate) fn throwaway_pki(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), BoxError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "portcullis grpc throwaway CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let write_key = |path: &Path, key: &KeyPair| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(path)?, key.serialize_pem().as_bytes())
    };

    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned()])?;
    server
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server_pem = server.signed_by(&server_key, &issuer)?.pem();
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&paths.0, ca_pem)?;
    std::fs::write(&paths.1, server_pem)?;
    write_key(&paths.2, &server_key)?;
    for role in ["reader", "editor", "admin"] {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://{TRUST_DOMAIN}/{role}")
                .as_str()
                .try_into()?,
        ));
        params.distinguished_name.push(DnType::CommonName, role);
        std::fs::write(
            dir.join(format!("{role}.pem")),
            params.signed_by(&key, &issuer)?.pem(),
        )?;
        write_key(&dir.join(format!("{role}-key.pem")), &key)?;
    }
    Ok(paths)
}

/// The TLS configuration: client certificates optional (token callers need none).
pub(crate) fn tls(cert: &Path, key: &Path, ca: &Path) -> Result<TlsServerConfig, BoxError> {
    Ok(TlsServerConfig::builder()
        .certificate_files(cert, key)
        .client_ca_file(ca)
        .client_auth(ClientAuth::Optional)
        .build()?)
}

/// The JWT authenticator for `key`, roles from the `roles` claim.
pub(crate) fn jwt(key: &TestKey) -> Result<JwtAuthenticator, BoxError> {
    Ok(JwtAuthenticator::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .key(key.verification_key())
        .build()?)
}

/// A token for `subject` with `roles`, valid for eight hours.
pub(crate) fn token(key: &TestKey, subject: &str, roles: &[&str]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    key.mint(&json!({
        "sub": subject,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 8 * 3600,
        "roles": roles,
    }))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("PORTCULLIS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:50051".into())
        .parse()?;
    let with_tls = std::env::args().skip(1).any(|a| a == "--tls");
    let key = TestKey::ed25519("grpc-demo");
    let mut _throwaway = None;
    let tls = if with_tls {
        let env = |name| std::env::var_os(name).map(PathBuf::from);
        match (
            env("PORTCULLIS_TLS_CERT"),
            env("PORTCULLIS_TLS_KEY"),
            env("PORTCULLIS_TLS_CLIENT_CA"),
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(tls(&cert, &key, &ca)?),
            _ => {
                let dir = tempfile::Builder::new()
                    .prefix("portcullis-grpc-")
                    .tempdir()?;
                let (ca, cert, server_key) = throwaway_pki(dir.path())?;
                let d = dir.path().display();
                eprintln!(
                    "throwaway PKI in {d}: ca.pem, reader.pem/reader-key.pem, editor.pem, admin.pem"
                );
                eprintln!(
                    "grpcurl -cacert {d}/ca.pem -cert {d}/admin.pem -key {d}/admin-key.pem -import-path examples -proto grpc_service.proto -d '{{\"id\": 1}}' {addr} portcullis.demo.v1.Documents/GetDocument"
                );
                let config = tls(&cert, &server_key, &ca)?;
                _throwaway = Some(dir);
                Some(config)
            }
        }
    } else {
        None
    };
    for (name, roles) in [
        ("reader", ["reader"]),
        ("editor", ["editor"]),
        ("admin", ["admin"]),
    ] {
        println!(
            "{}_TOKEN={}",
            name.to_uppercase(),
            token(&key, &format!("dev-{name}"), &roles)
        );
    }
    let _reloader = tls.as_ref().map(TlsServerConfig::spawn_reloader);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "portcullis grpc_service listening on {addr} ({})",
        if tls.is_some() {
            "TLS, client certificates optional"
        } else {
            "h2c"
        }
    );
    serve(listener, tls, jwt(&key)?, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
