//! `SafeUrl`: URLs a server may store and later fetch without being turned against its own
//! network (server-side request forgery).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::{Host, Url};

use super::error::ValidationError;
use super::ip::{NonPublic, classify};
use crate::ConfigError;

/// Host names that always mean "this machine" or "this network", checked after lowercasing and
/// removing trailing dots. Each entry also covers its subdomains.
const INTERNAL_SUFFIXES: &[&str] = &[
    "localhost",
    "localdomain",
    "local",
    "internal",
    "intranet",
    "lan",
    "home.arpa",
    "in-addr.arpa",
    "ip6.arpa",
    "invalid",
    "test",
    "example.internal",
];

/// Single names of cloud metadata services (they resolve through the instance's search
/// domain). Names without a dot are refused anyway; these are listed for the audit detail.
const METADATA_NAMES: &[&str] = &["metadata", "instance-data", "metadata.google.internal"];

/// The rules a [`SafeUrl`] must satisfy. Build with [`UrlPolicy::builder`].
///
/// Defaults: scheme `https` only; no user info; a host name with at least one dot (no IP
/// literals, no single-label names, no `localhost`, `*.localhost`, `*.local`, `*.internal`,
/// `*.home.arpa` and similar internal names); at most 2048 bytes; any port; no host allow-list.
#[derive(Debug, Clone)]
pub struct UrlPolicy {
    schemes: Vec<String>,
    allow_hosts: Vec<HostPattern>,
    deny_hosts: Vec<HostPattern>,
    public_ip_literals: bool,
    max_len: usize,
    ports: Option<Vec<u16>>,
}

/// An exact host name or `*.suffix` (any subdomain of suffix, not suffix itself).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    Subdomains(String),
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, ConfigError> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let bad = || ConfigError::new(format!("{text:?} is not a host name or *.suffix pattern"));
        let (sub, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lower),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || name.split('.').any(str::is_empty)
        {
            return Err(bad());
        }
        Ok(if sub {
            HostPattern::Subdomains(name)
        } else {
            HostPattern::Exact(name)
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => host == name,
            HostPattern::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

fn has_suffix(host: &str, suffix: &str) -> bool {
    host == suffix
        || host
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.'))
}

/// Builds a [`UrlPolicy`].
#[derive(Debug, Clone)]
#[must_use]
pub struct UrlPolicyBuilder {
    policy: UrlPolicy,
    errors: Vec<String>,
}

impl UrlPolicyBuilder {
    /// Replaces the scheme allow-list (default `["https"]`). Only `https` and `http` are
    /// accepted here; plain `http` is [`insecure_allow_http`](Self::insecure_allow_http).
    pub fn schemes<I, T>(mut self, schemes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.policy.schemes.clear();
        for scheme in schemes {
            let scheme = scheme.as_ref().to_ascii_lowercase();
            if scheme == "https" {
                self.policy.schemes.push(scheme);
            } else if scheme == "http" {
                self.errors
                    .push("plain http must be enabled with insecure_allow_http()".into());
            } else {
                self.errors.push(format!("unsupported scheme {scheme:?}"));
            }
        }
        self
    }
    /// Accepts `http` URLs too. Default: refused; a stored `http` URL is fetched without
    /// integrity, so a network attacker can answer in the target's name.
    pub fn insecure_allow_http(mut self) -> Self {
        if !self.policy.schemes.iter().any(|s| s == "http") {
            self.policy.schemes.push("http".into());
        }
        self
    }
    /// Only hosts matching one of these patterns are accepted (`api.example.com`,
    /// `*.example.com`). Default: any public host name.
    pub fn allow_host(mut self, pattern: &str) -> Self {
        match HostPattern::parse(pattern) {
            Ok(p) => self.policy.allow_hosts.push(p),
            Err(e) => self.errors.push(e.message().to_owned()),
        }
        self
    }
    /// Hosts matching this pattern are refused, even when an allow pattern matches.
    pub fn deny_host(mut self, pattern: &str) -> Self {
        match HostPattern::parse(pattern) {
            Ok(p) => self.policy.deny_hosts.push(p),
            Err(e) => self.errors.push(e.message().to_owned()),
        }
        self
    }
    /// Accepts IP literals that are globally routable unicast addresses (non-public ones stay
    /// refused). Default: every IP literal is refused, because literals bypass host allow-lists
    /// and are the usual carrier of SSRF payloads.
    pub fn allow_public_ip_literals(mut self) -> Self {
        self.policy.public_ip_literals = true;
        self
    }
    /// Only these ports (the scheme's default port when the URL names none). Default: any.
    pub fn ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.policy.ports = Some(ports.into_iter().collect());
        self
    }
    /// The longest accepted URL in bytes (default 2048).
    pub fn max_len(mut self, max: usize) -> Self {
        self.policy.max_len = max;
        self
    }
    /// Checks the configuration.
    pub fn build(self) -> Result<UrlPolicy, ConfigError> {
        if !self.errors.is_empty() {
            return Err(ConfigError::new(format!(
                "URL policy: {}",
                self.errors.join("; ")
            )));
        }
        if self.policy.schemes.is_empty() {
            return Err(ConfigError::new("URL policy: no scheme allowed"));
        }
        if self.policy.max_len == 0 {
            return Err(ConfigError::new("URL policy: max_len must be positive"));
        }
        if self.policy.ports.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::new("URL policy: empty port list"));
        }
        Ok(self.policy)
    }
}

impl Default for UrlPolicy {
    fn default() -> Self {
        Self {
            schemes: vec!["https".into()],
            allow_hosts: Vec::new(),
            deny_hosts: Vec::new(),
            public_ip_literals: false,
            max_len: 2048,
            ports: None,
        }
    }
}

/// The outcome of the parse-time checks: the URL and its normalized host.
struct Checked {
    url: Url,
}

impl UrlPolicy {
    /// Starts from the defaults.
    pub fn builder() -> UrlPolicyBuilder {
        UrlPolicyBuilder {
            policy: UrlPolicy::default(),
            errors: Vec::new(),
        }
    }

    /// Parses `input` and applies every check that needs no network. See [`SafeUrl`].
    pub fn parse<R: UrlRules>(&self, input: &str) -> Result<SafeUrl<R>, ValidationError> {
        self.check(input).map(|c| SafeUrl {
            url: c.url,
            rules: PhantomData,
        })
    }

    fn check(&self, input: &str) -> Result<Checked, ValidationError> {
        let err = ValidationError::new;
        if input.len() > self.max_len {
            return Err(err("url_length"));
        }
        // The WHATWG parser strips these silently; a URL that needs stripping is not one a
        // well-behaved client sends, and the stripped characters hide payloads from reviewers.
        if input.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
            return Err(err("url_syntax"));
        }
        let url = Url::parse(input).map_err(|_| err("url_syntax"))?;
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(err("url_scheme"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("url_userinfo"));
        }
        if let Some(ports) = &self.ports {
            let port = url.port_or_known_default().ok_or(err("url_port"))?;
            if !ports.contains(&port) {
                return Err(err("url_port"));
            }
        }
        match url.host() {
            None => return Err(err("url_host")),
            Some(Host::Ipv4(v4)) => self.check_ip_literal(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_ip_literal(IpAddr::V6(v6))?,
            Some(Host::Domain(domain)) => self.check_domain(domain)?,
        }
        Ok(Checked { url })
    }

    fn check_ip_literal(&self, ip: IpAddr) -> Result<(), ValidationError> {
        if classify(ip).is_err() {
            return Err(ValidationError::new("url_private_address"));
        }
        if !self.public_ip_literals || !self.allow_hosts.is_empty() {
            return Err(ValidationError::new("url_ip_literal"));
        }
        Ok(())
    }

    fn check_domain(&self, domain: &str) -> Result<(), ValidationError> {
        let err = ValidationError::new;
        // The parser lowercased and IDNA-mapped the name (full-width letters, `%`-escapes are
        // resolved); `localhost.` and `localhost` are the same name to a resolver.
        let host = domain.strip_suffix('.').unwrap_or(domain);
        if host.is_empty() || host.len() > 253 || host.split('.').any(str::is_empty) {
            return Err(err("url_host"));
        }
        if !host.contains('.') {
            // Single labels resolve through search domains: internal by construction.
            return Err(err("url_internal_host"));
        }
        if METADATA_NAMES.contains(&host)
            || INTERNAL_SUFFIXES
                .iter()
                .any(|suffix| has_suffix(host, suffix))
        {
            return Err(err("url_internal_host"));
        }
        if self.deny_hosts.iter().any(|p| p.matches(host)) {
            return Err(err("url_host_denied"));
        }
        if !self.allow_hosts.is_empty() && !self.allow_hosts.iter().any(|p| p.matches(host)) {
            return Err(err("url_host_not_allowed"));
        }
        Ok(())
    }

    /// Resolves the URL's host with `resolver` and refuses it if any address is not public
    /// (see [`ip::classify`](super::ip::classify)). Returns the vetted addresses: a fetcher
    /// must connect to exactly these (for instance `reqwest::ClientBuilder::resolve_to_addrs`),
    /// otherwise a second lookup can be answered differently (DNS rebinding).
    ///
    /// `mode` decides what a failed or empty resolution means; see [`Resolution`].
    pub async fn check_resolved<R: UrlRules>(
        &self,
        url: &SafeUrl<R>,
        resolver: &dyn Resolver,
        mode: Resolution,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        let port = url.url.port_or_known_default().unwrap_or(443);
        let host = match url.url.host() {
            Some(Host::Ipv4(v4)) => return Ok(vec![IpAddr::V4(v4)]),
            Some(Host::Ipv6(v6)) => return Ok(vec![IpAddr::V6(v6)]),
            Some(Host::Domain(domain)) => domain.strip_suffix('.').unwrap_or(domain).to_owned(),
            None => return Err(ResolveError::Refused(NonPublic::Reserved)),
        };
        let lookup = tokio::time::timeout(mode.timeout(), resolver.resolve(&host, port)).await;
        let addrs = match lookup {
            Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
            _ => {
                return match mode {
                    Resolution::Strict { .. } => Err(ResolveError::Unresolved),
                    Resolution::Lenient { .. } => Ok(Vec::new()),
                };
            }
        };
        for ip in &addrs {
            classify(*ip).map_err(ResolveError::Refused)?;
        }
        Ok(addrs)
    }
}

/// What a failed name resolution means to [`UrlPolicy::check_resolved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resolution {
    /// The name must resolve, to public addresses only, within the timeout. For code that is
    /// about to fetch the URL.
    Strict {
        /// The longest a lookup may take.
        timeout: Duration,
    },
    /// Addresses that resolve must be public; a name that does not resolve (now) is accepted
    /// with no addresses. For code that stores a URL and does not fetch it: the fetcher must
    /// check again, strictly, when it fetches.
    Lenient {
        /// The longest a lookup may take before it counts as not resolving.
        timeout: Duration,
    },
}

impl Resolution {
    /// Strict, with a 2 s timeout.
    pub const fn strict() -> Self {
        Resolution::Strict {
            timeout: Duration::from_secs(2),
        }
    }
    /// Lenient, with a 2 s timeout.
    pub const fn lenient() -> Self {
        Resolution::Lenient {
            timeout: Duration::from_secs(2),
        }
    }
    fn timeout(self) -> Duration {
        match self {
            Resolution::Strict { timeout } | Resolution::Lenient { timeout } => timeout,
        }
    }
}

/// Why [`UrlPolicy::check_resolved`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    /// The name resolved to an address that is not public.
    Refused(NonPublic),
    /// Strict mode: the name did not resolve in time, or to nothing.
    Unresolved,
}

impl ResolveError {
    /// The field error code (`url_private_address`, `url_unresolved`).
    pub const fn code(self) -> &'static str {
        match self {
            ResolveError::Refused(_) => "url_private_address",
            ResolveError::Unresolved => "url_unresolved",
        }
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Refused(why) => {
                write!(f, "host resolves to a non-public address ({why:?})")
            }
            ResolveError::Unresolved => f.write_str("host did not resolve"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// The future returned by [`Resolver::resolve`].
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Name resolution for [`UrlPolicy::check_resolved`], injectable for tests.
pub trait Resolver: Send + Sync {
    /// Every address of `host` (port given for resolvers that need one).
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The operating system's resolver (`getaddrinfo` on a blocking thread, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, port)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of names, for tests: unknown names fail to resolve.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: Arc<BTreeMap<String, Vec<IpAddr>>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `host` (lowercase, no trailing dot) with `addrs`.
    pub fn with(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        Arc::make_mut(&mut self.names)
            .insert(host.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> ResolveFuture<'a> {
        let found = self.names.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown name"))
        })
    }
}

/// Which [`UrlPolicy`] a [`SafeUrl`] type checks against; implement it on a marker type to give
/// a field its own policy (`SafeUrl<PartnerUrls>`).
///
/// ```
/// use std::sync::LazyLock;
/// use portcullis::validate::{SafeUrl, UrlPolicy, UrlRules};
///
/// struct PartnerUrls;
/// impl UrlRules for PartnerUrls {
///     fn policy() -> &'static UrlPolicy {
///         static POLICY: LazyLock<UrlPolicy> = LazyLock::new(|| {
///             UrlPolicy::builder().allow_host("*.partner.example").build().unwrap_or_default()
///         });
///         &POLICY
///     }
/// }
/// assert!("https://api.partner.example/x".parse::<SafeUrl<PartnerUrls>>().is_ok());
/// assert!("https://evil.example/x".parse::<SafeUrl<PartnerUrls>>().is_err());
/// ```
pub trait UrlRules: 'static {
    /// The policy.
    fn policy() -> &'static UrlPolicy;
}

/// The default [`UrlPolicy`]: https only, public host names only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DefaultUrlRules;

impl UrlRules for DefaultUrlRules {
    fn policy() -> &'static UrlPolicy {
        static POLICY: LazyLock<UrlPolicy> = LazyLock::new(UrlPolicy::default);
        &POLICY
    }
}

/// A URL that passed the parse-time SSRF checks of `R`'s [`UrlPolicy`] (default: https, no user
/// info, a public-looking host name, no IP literal).
///
/// Parsing follows the WHATWG URL standard, as browsers and most HTTP clients do, so the host
/// checked here is the host a client connects to: `http://2130706433/`, `http://0x7f.1/`,
/// `http://017700000001/` and `http://[::ffff:127.0.0.1]/` are all loopback literals and
/// refused; `LOCALHOST.`, `foo.localhost` and full-width `ｌｏｃａｌｈｏｓｔ` are internal names
/// and refused.
///
/// A host name is not resolved here: what a name resolves to can change between this check
/// and a fetch. Code that fetches calls [`UrlPolicy::check_resolved`] (strict mode) right before,
/// and connects to the returned addresses.
///
/// ```
/// use portcullis::validate::SafeUrl;
///
/// assert!("https://example.com/doc".parse::<SafeUrl>().is_ok());
/// for bad in [
///     "http://example.com/",          // scheme
///     "https://user:pw@example.com/", // user info
///     "https://127.0.0.1/",
///     "https://2130706433/",
///     "https://0x7f.1/",
///     "https://[::ffff:127.0.0.1]/",
///     "https://169.254.169.254/latest/meta-data/",
///     "https://localhost/",
///     "https://api.localhost./",
///     "https://metadata.google.internal/",
/// ] {
///     assert!(bad.parse::<SafeUrl>().is_err(), "{bad}");
/// }
/// ```
pub struct SafeUrl<R: UrlRules = DefaultUrlRules> {
    url: Url,
    rules: PhantomData<fn() -> R>,
}

impl<R: UrlRules> SafeUrl<R> {
    /// Checks `input` against `R`'s policy.
    pub fn new(input: &str) -> Result<Self, ValidationError> {
        R::policy().parse(input)
    }
    /// The parsed URL.
    pub fn as_url(&self) -> &Url {
        &self.url
    }
    /// The normalized URL text.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
    /// The host name (lowercase, IDNA-encoded, trailing dots removed).
    pub fn host(&self) -> &str {
        let host = self.url.host_str().unwrap_or("");
        host.strip_suffix('.').unwrap_or(host)
    }
    /// The parsed URL, owned.
    pub fn into_url(self) -> Url {
        self.url
    }
    /// [`UrlPolicy::check_resolved`] with `R`'s policy.
    pub async fn check_resolved(
        &self,
        resolver: &dyn Resolver,
        mode: Resolution,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        R::policy().check_resolved(self, resolver, mode).await
    }
}

impl<R: UrlRules> Clone for SafeUrl<R> {
    fn clone(&self) -> Self {
        Self {
            url: self.url.clone(),
            rules: PhantomData,
        }
    }
}
impl<R: UrlRules> PartialEq for SafeUrl<R> {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}
impl<R: UrlRules> Eq for SafeUrl<R> {}
impl<R: UrlRules> std::hash::Hash for SafeUrl<R> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.url.hash(state);
    }
}
impl<R: UrlRules> fmt::Debug for SafeUrl<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SafeUrl").field(&self.url.as_str()).finish()
    }
}
impl<R: UrlRules> fmt::Display for SafeUrl<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url.as_str())
    }
}
impl<R: UrlRules> std::str::FromStr for SafeUrl<R> {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, ValidationError> {
        Self::new(s)
    }
}
impl<R: UrlRules> AsRef<str> for SafeUrl<R> {
    fn as_ref(&self) -> &str {
        self.url.as_str()
    }
}
impl<R: UrlRules> Serialize for SafeUrl<R> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.url.as_str())
    }
}
impl<'de, R: UrlRules> Deserialize<'de> for SafeUrl<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(ValidationError::into_de)
    }
}
impl<R: UrlRules> garde::Validate for SafeUrl<R> {
    type Context = ();
    fn validate_into(&self, _: &(), _: &mut dyn FnMut() -> garde::Path, _: &mut garde::Report) {}
}
impl<R: UrlRules> garde::rules::AsStr for SafeUrl<R> {
    fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

/// Fuzzing entry point: parses `input` with the default policy and checks the invariants every
/// accepted URL must keep. Panics when one is broken.
#[doc(hidden)]
pub fn __fuzz_safe_url(input: &str) {
    let permissive = UrlPolicy::builder()
        .insecure_allow_http()
        .allow_public_ip_literals()
        .build();
    let Ok(permissive) = permissive else {
        return;
    };
    for policy in [DefaultUrlRules::policy(), &permissive] {
        let Ok(url) = policy.parse::<DefaultUrlRules>(input) else {
            continue;
        };
        let parsed = url.as_url();
        assert!(matches!(parsed.scheme(), "https" | "http"));
        assert!(parsed.username().is_empty() && parsed.password().is_none());
        match parsed.host() {
            Some(Host::Ipv4(v4)) => assert!(super::ip::is_public(IpAddr::V4(v4))),
            Some(Host::Ipv6(v6)) => assert!(super::ip::is_public(IpAddr::V6(v6))),
            Some(Host::Domain(d)) => {
                let d = d.strip_suffix('.').unwrap_or(d);
                assert!(d.contains('.') && !has_suffix(d, "localhost"));
                // The normalized text must parse back to the same, still-accepted URL.
                let again = policy.parse::<DefaultUrlRules>(url.as_str());
                assert_eq!(again.ok().map(SafeUrl::into_url), Some(parsed.clone()));
            }
            None => panic!("accepted a URL without a host"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(input: &str) -> Result<(), &'static str> {
        SafeUrl::<DefaultUrlRules>::new(input)
            .map(|_| ())
            .map_err(|e| e.code())
    }

    #[test]
    fn default_policy_table() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("https://example.com/doc", Ok(())),
            ("https://EXAMPLE.com./doc?q=1#f", Ok(())),
            ("https://example.com:8443/", Ok(())),
            ("https://xn--bcher-kva.example/", Ok(())),
            ("http://example.com/", Err("url_scheme")),
            ("ftp://example.com/", Err("url_scheme")),
            ("file:///etc/passwd", Err("url_scheme")),
            ("javascript:alert(1)", Err("url_scheme")),
            ("https://user@example.com/", Err("url_userinfo")),
            ("https://:pw@example.com/", Err("url_userinfo")),
            ("https://127.0.0.1/", Err("url_private_address")),
            ("https://2130706433/", Err("url_private_address")),
            ("https://0x7f.1/", Err("url_private_address")),
            ("https://017700000001/", Err("url_private_address")),
            ("https://0177.0.0.1/", Err("url_private_address")),
            ("https://127.1/", Err("url_private_address")),
            ("https://%31%32%37.0.0.1/", Err("url_private_address")),
            ("https://[::1]/", Err("url_private_address")),
            ("https://[::ffff:127.0.0.1]/", Err("url_private_address")),
            ("https://[::ffff:7f00:1]/", Err("url_private_address")),
            ("https://[::127.0.0.1]/", Err("url_private_address")),
            ("https://[64:ff9b::a9fe:a9fe]/", Err("url_private_address")),
            ("https://[fe80::1]/", Err("url_private_address")),
            ("https://[fd00:ec2::254]/", Err("url_private_address")),
            (
                "https://169.254.169.254/latest/meta-data/",
                Err("url_private_address"),
            ),
            ("https://100.100.100.200/", Err("url_private_address")),
            ("https://10.0.0.1/", Err("url_private_address")),
            ("https://192.168.1.1/", Err("url_private_address")),
            ("https://0.0.0.0/", Err("url_private_address")),
            ("https://0/", Err("url_private_address")),
            ("https://224.0.0.1/", Err("url_private_address")),
            ("https://198.18.0.1/", Err("url_private_address")),
            ("https://192.0.2.1/", Err("url_private_address")),
            ("https://100.64.0.1/", Err("url_private_address")),
            ("https://8.8.8.8/", Err("url_ip_literal")),
            ("https://[2606:4700:4700::1111]/", Err("url_ip_literal")),
            ("https://localhost/", Err("url_internal_host")),
            ("https://LOCALHOST./", Err("url_internal_host")),
            ("https://localhost../", Err("url_host")),
            ("https://api.localhost/", Err("url_internal_host")),
            ("https://api.localhost./", Err("url_internal_host")),
            ("https://ｌｏｃａｌｈｏｓｔ/", Err("url_internal_host")),
            ("https://metadata/", Err("url_internal_host")),
            (
                "https://metadata.google.internal/",
                Err("url_internal_host"),
            ),
            ("https://printer.local/", Err("url_internal_host")),
            ("https://router.home.arpa/", Err("url_internal_host")),
            ("https://1.0.0.127.in-addr.arpa/", Err("url_internal_host")),
            ("https://intranet/", Err("url_internal_host")),
            ("https://example.com\\@evil/", Err("url_syntax")),
            (" https://example.com/", Err("url_syntax")),
            ("https://exa\tmple.com/", Err("url_syntax")),
            ("https:///path", Err("url_internal_host")),
            ("https://", Err("url_syntax")),
            ("not a url", Err("url_syntax")),
        ];
        let mut failures = Vec::new();
        for (input, want) in cases {
            let got = code(input);
            if got != *want {
                failures.push(format!("{input}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(
            code(&format!("https://example.com/{}", "a".repeat(3000))),
            Err("url_length")
        );
    }

    #[test]
    fn configured_policies() {
        let policy = UrlPolicy::builder()
            .allow_host("*.example.com")
            .allow_host("example.org")
            .deny_host("admin.example.com")
            .insecure_allow_http()
            .ports([443, 80])
            .build()
            .unwrap();
        let check = |s: &str| {
            policy
                .parse::<DefaultUrlRules>(s)
                .map(|_| ())
                .map_err(|e| e.code())
        };
        assert_eq!(check("http://api.example.com/"), Ok(()));
        assert_eq!(check("https://example.org/"), Ok(()));
        assert_eq!(check("https://example.com/"), Err("url_host_not_allowed"));
        assert_eq!(
            check("https://evilexample.com/"),
            Err("url_host_not_allowed")
        );
        assert_eq!(check("https://admin.example.com./"), Err("url_host_denied"));
        assert_eq!(check("https://api.example.com:8080/"), Err("url_port"));
        let literals = UrlPolicy::builder()
            .allow_public_ip_literals()
            .build()
            .unwrap();
        assert!(
            literals
                .parse::<DefaultUrlRules>("https://8.8.8.8/")
                .is_ok()
        );
        assert!(
            literals
                .parse::<DefaultUrlRules>("https://10.0.0.1/")
                .is_err()
        );
        assert!(UrlPolicy::builder().schemes(["http"]).build().is_err());
        assert!(UrlPolicy::builder().schemes(["gopher"]).build().is_err());
        assert!(
            UrlPolicy::builder()
                .allow_host("exa mple.com")
                .build()
                .is_err()
        );
    }

    #[tokio::test]
    async fn resolution_modes() {
        let resolver = StaticResolver::new()
            .with("public.example", ["93.184.216.34".parse().unwrap()])
            .with(
                "rebind.example",
                [
                    "93.184.216.34".parse().unwrap(),
                    "127.0.0.1".parse().unwrap(),
                ],
            )
            .with("v6.example", ["::ffff:10.0.0.1".parse().unwrap()]);
        let url = |s: &str| SafeUrl::<DefaultUrlRules>::new(s).unwrap();
        let public = url("https://public.example/")
            .check_resolved(&resolver, Resolution::strict())
            .await;
        assert_eq!(
            public.unwrap(),
            vec!["93.184.216.34".parse::<IpAddr>().unwrap()]
        );
        for host in ["rebind.example", "v6.example"] {
            let got = url(&format!("https://{host}/"))
                .check_resolved(&resolver, Resolution::lenient())
                .await;
            assert_eq!(
                got.map_err(ResolveError::code),
                Err("url_private_address"),
                "{host}"
            );
        }
        let unknown = url("https://nowhere.example/");
        assert_eq!(
            unknown
                .check_resolved(&resolver, Resolution::strict())
                .await,
            Err(ResolveError::Unresolved)
        );
        assert_eq!(
            unknown
                .check_resolved(&resolver, Resolution::lenient())
                .await,
            Ok(vec![])
        );
    }

    #[test]
    fn serde_and_garde() {
        let u: SafeUrl = serde_json::from_str("\"https://Example.com/a\"").unwrap();
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"https://example.com/a\""
        );
        let err = serde_json::from_str::<SafeUrl>("\"https://127.0.0.1/secret-path\"").unwrap_err();
        assert!(!err.to_string().contains("secret-path"));
        assert_eq!(
            crate::validate::parses_as::<SafeUrl>("https://localhost/", &())
                .unwrap_err()
                .message(),
            "url_internal_host"
        );
    }

    proptest! {
        #[test]
        fn accepted_urls_keep_their_invariants(s in "(https?://)?[a-zA-Z0-9.:@\\[\\]%/_-]{0,40}") {
            __fuzz_safe_url(&s);
        }

        #[test]
        fn every_private_ipv4_literal_form_is_refused(a in 0u8..=255, b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
            let ip = std::net::Ipv4Addr::new(a, b, c, d);
            let n = u32::from(ip);
            let forms = [
                format!("https://{ip}/"),
                format!("https://{n}/"),
                format!("https://0x{n:x}/"),
                format!("https://0{n:o}/"),
                format!("https://[::ffff:{ip}]/"),
            ];
            for form in forms {
                let accepted = SafeUrl::<DefaultUrlRules>::new(&form);
                // IP literals are refused by default whatever their range; the code says why.
                let code = accepted.map(|_| ()).unwrap_err().code();
                if super::super::ip::is_public(IpAddr::V4(ip)) && !form.contains('[') {
                    prop_assert_eq!(code, "url_ip_literal", "{}", form);
                } else {
                    prop_assert_eq!(code, "url_private_address", "{}", form);
                }
            }
        }
    }
}
