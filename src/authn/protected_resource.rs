//! RFC 9728 OAuth 2.0 Protected Resource Metadata.
//!
//! [`ProtectedResourceMetadata`] is the JSON document a client fetches from
//! `/.well-known/oauth-protected-resource` to learn which authorization servers issue tokens
//! for this API, which scopes it knows, and how to present a token (`header` only: portcullis
//! reads bearer tokens from the `Authorization` header, never from query strings or bodies).
//! With the `axum` feature, [`handler`](ProtectedResourceMetadata::handler) serves it on a
//! [`SecureRouter`](crate::routing::SecureRouter) route (it is public by nature).
//!
//! To point clients at it from every 401, configure the edge layer with
//! [`RequestContextLayer::with_resource_metadata`](crate::context::RequestContextLayer::with_resource_metadata):
//! the `WWW-Authenticate` challenge then carries `resource_metadata="<url>"` (RFC 9728 §5.1).
//!
//! Every URL is checked when the document is built: `https` (or `http` on a loopback host,
//! for development), a host, no user info, no query or fragment, printable ASCII without
//! quotes or backslashes, at most 2,048 bytes.
//!
//! ```
//! use axum::body::Body;
//! use http::{Request, StatusCode};
//! use portcullis::authn::protected_resource::ProtectedResourceMetadata;
//! use portcullis::authz::public;
//! use portcullis::routing::{SecureRouter, get};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let metadata = ProtectedResourceMetadata::builder("https://api.example.com/orders")
//!     .authorization_server("https://login.example.com")
//!     .scopes(["orders:read", "orders:write"])
//!     .build()
//!     .unwrap();
//! assert_eq!(metadata.well_known_path(), "/.well-known/oauth-protected-resource/orders");
//! assert_eq!(
//!     metadata.metadata_url(),
//!     "https://api.example.com/.well-known/oauth-protected-resource/orders"
//! );
//!
//! let app = SecureRouter::new()
//!     .route(&metadata.well_known_path(), get(metadata.handler(), public()))
//!     .into_router()
//!     .unwrap();
//! let response = app
//!     .oneshot(Request::get(metadata.well_known_path()).body(Body::empty()).unwrap())
//!     .await
//!     .unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.headers()["content-type"], "application/json");
//! # });
//! ```

use serde::Serialize;

use crate::error::ConfigError;

/// The well-known path of the metadata document for a resource without a path.
pub const WELL_KNOWN_PATH: &str = "/.well-known/oauth-protected-resource";

const MAX_URL_BYTES: usize = 2048;

/// Checks a URL that will be published (in the metadata document or inside a quoted
/// `WWW-Authenticate` parameter) and returns its authority and path.
///
/// Accepts `https://host[:port][/path]`, and `http://` for loopback hosts (`localhost`,
/// `127.0.0.0/8`, `[::1]`). Refuses user info, queries, fragments, and anything outside
/// printable ASCII, quotes and backslashes included.
pub(crate) fn check_url<'a>(what: &str, url: &'a str) -> Result<(&'a str, &'a str), ConfigError> {
    let fail = |why: &str| Err(ConfigError::new(format!("{what} {why}")));
    if url.len() > MAX_URL_BYTES {
        return fail("is longer than 2048 bytes");
    }
    if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    {
        return fail("must be printable ASCII without spaces, quotes or backslashes");
    }
    let (rest, http) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, true)
    } else {
        return fail("must be an https URL");
    };
    if rest.contains(['?', '#']) {
        return fail("must not have a query or fragment");
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return fail("must not carry user info");
    }
    let host = if authority.starts_with('[') {
        authority.split(']').next().map(|h| format!("{h}]"))
    } else {
        authority.split(':').next().map(str::to_owned)
    }
    .unwrap_or_default();
    if host.is_empty() || host == "[]" {
        return fail("has no host");
    }
    if http && !is_loopback_host(&host) {
        return fail("must use https (http is accepted for loopback hosts only)");
    }
    Ok((authority, path))
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An RFC 9728 protected-resource metadata document. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProtectedResourceMetadata {
    resource: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authorization_servers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwks_uri: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scopes_supported: Vec<String>,
    bearer_methods_supported: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_documentation: Option<String>,
    #[serde(skip)]
    well_known_path: String,
    #[serde(skip)]
    metadata_url: String,
}

impl ProtectedResourceMetadata {
    /// Starts a document for the resource identifier `resource` (the API's base URL).
    pub fn builder(resource: impl Into<String>) -> ProtectedResourceMetadataBuilder {
        ProtectedResourceMetadataBuilder {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            jwks_uri: None,
            scopes: Vec::new(),
            resource_name: None,
            resource_documentation: None,
        }
    }

    /// The resource identifier.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The path to serve the document on: `/.well-known/oauth-protected-resource` followed by
    /// the resource's path, if it has one (RFC 9728 §3.1).
    pub fn well_known_path(&self) -> String {
        self.well_known_path.clone()
    }

    /// The document's full URL, for
    /// [`RequestContextLayer::with_resource_metadata`](crate::context::RequestContextLayer::with_resource_metadata).
    pub fn metadata_url(&self) -> String {
        self.metadata_url.clone()
    }

    /// The document as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        // Serializing strings and vectors of strings cannot fail.
        serde_json::to_value(self).unwrap_or_default()
    }

    /// An axum handler serving the document (`200`, `application/json`, cacheable for an
    /// hour). Route it with the public policy on [`well_known_path`](Self::well_known_path).
    #[cfg(feature = "axum")]
    pub fn handler(
        &self,
    ) -> impl Fn() -> std::future::Ready<axum::response::Response> + Clone + Send + Sync + 'static
    {
        let body = bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default());
        move || {
            let mut response = axum::response::Response::new(axum::body::Body::from(body.clone()));
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("public, max-age=3600"),
            );
            std::future::ready(response)
        }
    }
}

/// Configures a [`ProtectedResourceMetadata`] document.
#[derive(Debug)]
#[must_use]
pub struct ProtectedResourceMetadataBuilder {
    resource: String,
    authorization_servers: Vec<String>,
    jwks_uri: Option<String>,
    scopes: Vec<String>,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
}

impl ProtectedResourceMetadataBuilder {
    /// Adds the issuer URL of an authorization server whose tokens this resource accepts
    /// (`authorization_servers`; repeat for several).
    pub fn authorization_server(mut self, issuer: impl Into<String>) -> Self {
        self.authorization_servers.push(issuer.into());
        self
    }
    /// Adds scopes to `scopes_supported`.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }
    /// The URL of this resource's own JWKS (`jwks_uri`), when it signs responses.
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.jwks_uri = Some(url.into());
        self
    }
    /// A human-readable name (`resource_name`).
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }
    /// A URL of developer documentation (`resource_documentation`).
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }
    /// Checks every URL and builds the document.
    pub fn build(self) -> Result<ProtectedResourceMetadata, ConfigError> {
        let (authority, path) = check_url("resource", &self.resource)?;
        for server in &self.authorization_servers {
            check_url("authorization server", server)?;
        }
        if let Some(url) = &self.jwks_uri {
            check_url("jwks_uri", url)?;
        }
        if let Some(url) = &self.resource_documentation {
            check_url("resource_documentation", url)?;
        }
        let printable = |s: &String| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        };
        if !self.scopes.iter().all(printable) {
            return Err(ConfigError::new(
                "scopes must be non-empty printable ASCII without spaces, quotes or backslashes",
            ));
        }
        let path = path.trim_end_matches('/');
        let well_known_path = format!("{WELL_KNOWN_PATH}{path}");
        let scheme = if self.resource.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let metadata_url = format!("{scheme}://{authority}{well_known_path}");
        Ok(ProtectedResourceMetadata {
            resource: self.resource,
            authorization_servers: self.authorization_servers,
            jwks_uri: self.jwks_uri,
            scopes_supported: self.scopes,
            bearer_methods_supported: ["header"],
            resource_name: self.resource_name,
            resource_documentation: self.resource_documentation,
            well_known_path,
            metadata_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn document_fields_and_paths() {
        let m = ProtectedResourceMetadata::builder("https://api.example.com")
            .authorization_server("https://login.example.com/realms/x")
            .scopes(["a", "b"])
            .resource_name("Orders")
            .build()
            .unwrap();
        assert_eq!(m.well_known_path(), WELL_KNOWN_PATH);
        assert_eq!(
            m.metadata_url(),
            "https://api.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            m.to_json(),
            json!({
                "resource": "https://api.example.com",
                "authorization_servers": ["https://login.example.com/realms/x"],
                "scopes_supported": ["a", "b"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Orders",
            })
        );
        let dev = ProtectedResourceMetadata::builder("http://127.0.0.1:8080/api/")
            .build()
            .unwrap();
        assert_eq!(
            dev.metadata_url(),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource/api"
        );
    }

    #[test]
    fn urls_are_checked() {
        for bad in [
            "",
            "api.example.com",
            "ftp://api.example.com",
            "http://api.example.com",
            "http://10.0.0.1",
            "https://",
            "https://user:pw@api.example.com",
            "https://api.example.com/?q=1",
            "https://api.example.com/#x",
            "https://api.example.com/\"x",
            "https://api.example.com/a b",
            "https://api.example.com/\r\nx",
            "https://api.example.com/\\x",
            "https://api.example.com/é",
        ] {
            assert!(
                ProtectedResourceMetadata::builder(bad).build().is_err(),
                "{bad:?}"
            );
        }
        for good in [
            "https://api.example.com",
            "https://api.example.com:8443/v1",
            "http://localhost:8080",
            "http://[::1]:8080/x",
            "https://[2001:db8::1]/x",
        ] {
            assert!(
                ProtectedResourceMetadata::builder(good).build().is_ok(),
                "{good:?}"
            );
        }
        assert!(
            ProtectedResourceMetadata::builder("https://api.example.com")
                .authorization_server("https://x\"y")
                .build()
                .is_err()
        );
        assert!(
            ProtectedResourceMetadata::builder("https://api.example.com")
                .scopes(["has space"])
                .build()
                .is_err()
        );
    }
}
