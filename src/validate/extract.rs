//! `Valid<E>`: axum extractors that deserialize, then validate with garde, and refuse through
//! [`Rejection`].

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::{Form, Json};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;

use super::error::{code_of_serde_message, field_errors_of, validate_with_codes};
use crate::rejection::{FieldError, Rejection, RejectionKind};

/// Limits of the validated extractors, read from the request extensions (add it with
/// `axum::Extension(ValidationConfig::default().with_max_json_depth(16))`); the defaults apply
/// when none is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationConfig {
    max_json_depth: usize,
    body_limit: Option<usize>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        Self {
            max_json_depth: 32,
            body_limit: None,
        }
    }
}

impl ValidationConfig {
    /// The deepest nesting of JSON arrays and objects accepted (default 32). Checked by a scan
    /// of the raw bytes before deserializing, so hostile nesting never reaches a recursive
    /// deserializer, validator or destructor. Values below 1 are raised to 1.
    pub fn with_max_json_depth(mut self, depth: usize) -> Self {
        self.max_json_depth = depth.max(1);
        self
    }
    /// A body limit in bytes for these extractors, in addition to axum's `DefaultBodyLimit`
    /// (default: only that one, 2 MiB unless changed). The smaller limit wins.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }
    /// The configured JSON depth limit.
    pub fn max_json_depth(&self) -> usize {
        self.max_json_depth
    }
}

/// A validated `E`: `Valid<Json<T>>`, `Valid<Query<T>>`, `Valid<Path<T>>`, `Valid<Form<T>>`,
/// where `T: serde::Deserialize + garde::Validate` (with a `Default` context).
///
/// | failure | status |
/// |---|---|
/// | wrong `content-type` (JSON: `application/json` or `*/*+json`; form: `application/x-www-form-urlencoded`) | 415 |
/// | body above the limit | 413 |
/// | malformed JSON, nesting deeper than the limit, undecodable form or query | 400 |
/// | well-formed but a field has the wrong type, is missing, or is refused by a validated type or a garde rule | 422 with `errors: [{path, code}]` |
///
/// The 422 body lists every garde failure, and the first deserialization failure (serde stops
/// at the first). Paths and codes only: a submitted value is never part of a response.
///
/// ```
/// use axum::{Json, Router, routing::post, body::Body};
/// use http::{Request, StatusCode};
/// use portcullis::validate::{BoundedString, Valid};
/// use tower::ServiceExt;
///
/// #[derive(serde::Deserialize, garde::Validate)]
/// struct NewUser {
///     #[garde(dive)]
///     name: BoundedString<1, 32>,
///     #[garde(range(min = 18))]
///     age: u8,
/// }
///
/// async fn create(Valid(Json(user)): Valid<Json<NewUser>>) -> StatusCode {
///     let _ = user.name;
///     StatusCode::CREATED
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let app = Router::new().route("/users", post(create));
/// let send = |body: &'static str| {
///     app.clone().oneshot(
///         Request::post("/users")
///             .header("content-type", "application/json")
///             .body(Body::from(body))
///             .unwrap(),
///     )
/// };
/// assert_eq!(send(r#"{"name": "ada", "age": 36}"#).await.unwrap().status(), StatusCode::CREATED);
/// let refused = send(r#"{"name": "ada", "age": 7}"#).await.unwrap();
/// assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
/// assert_eq!(send(r#"{"name": "ada""#).await.unwrap().status(), StatusCode::BAD_REQUEST);
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Valid<E>(pub E);

impl<E> Valid<E> {
    /// The inner extractor.
    pub fn into_inner(self) -> E {
        self.0
    }
}

impl<E> std::ops::Deref for Valid<E> {
    type Target = E;
    fn deref(&self) -> &E {
        &self.0
    }
}

fn config(extensions: &http::Extensions) -> ValidationConfig {
    extensions
        .get::<ValidationConfig>()
        .copied()
        .unwrap_or_default()
}

fn validated<T>(value: T) -> Result<T, Rejection>
where
    T: garde::Validate,
    T::Context: Default,
{
    match validate_with_codes(&value, &T::Context::default()) {
        Ok(()) => Ok(value),
        Err(report) => Err(refuse(field_errors_of(&report))),
    }
}

fn refuse(errors: Vec<FieldError>) -> Rejection {
    let detail = errors
        .iter()
        .map(|e| format!("{}: {}", e.path(), e.code()))
        .collect::<Vec<_>>()
        .join(", ");
    Rejection::new(
        RejectionKind::ValidationFailed,
        format!("validation failed: {detail}"),
    )
    .with_field_errors(errors)
}

/// `a.b[3]` from serde_path_to_error's path (its own rendering uses the same shape). With
/// `drop_last`, the last segment is left out (it is an unknown key the client sent).
fn path_text(path: &serde_path_to_error::Path, drop_last: bool) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    let count = path.iter().count();
    let keep = if drop_last {
        count.saturating_sub(1)
    } else {
        count
    };
    for segment in path.iter().take(keep) {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

fn data_error(path: &serde_path_to_error::Path, message: &str) -> Rejection {
    let code = code_of_serde_message(message);
    let mut text = path_text(path, code == "unknown_field");
    // serde names a missing or duplicate field from the type's own definition (never from the
    // input), so it can complete the path; an unknown field's name is input and is left out.
    if let Some(field) = declared_field_of(message) {
        if !text.is_empty() {
            text.push('.');
        }
        text.push_str(field);
    }
    refuse(vec![FieldError::new(&text, code)])
}

fn declared_field_of(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("duplicate field `"))?;
    rest.split_once('`').map(|(field, _)| field)
}

fn bad_request(detail: &'static str) -> Rejection {
    Rejection::new(RejectionKind::BadRequest, detail)
}

/// Whether the deepest nesting of arrays and objects in `json` stays within `max`, scanning
/// bytes (strings and escapes skipped) without recursion.
pub(crate) fn json_depth_within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    Some(essence)
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| {
        m == "application/json"
            || m.split_once('/')
                .is_some_and(|(_, sub)| sub.ends_with("+json"))
    })
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Rejection> {
    let limit = config(req.extensions()).body_limit;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(limit), Some(declared)) = (limit, declared)
        && declared > limit as u64
    {
        return Err(Rejection::new(
            RejectionKind::PayloadTooLarge,
            "declared body length above the validation limit",
        ));
    }
    let req = match limit {
        // Streams past the limit stop being read at the limit.
        Some(limit) => {
            req.map(|body| axum::body::Body::new(http_body_util::Limited::new(body, limit)))
        }
        None => req,
    };
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            Rejection::new(RejectionKind::PayloadTooLarge, "body above the limit")
        } else {
            bad_request("body could not be read")
        }
    })
}

/// Deserializes JSON after the depth check; exposed for the fuzz targets and tests.
pub(crate) fn json_value<T: DeserializeOwned>(
    bytes: &[u8],
    config: &ValidationConfig,
) -> Result<T, Rejection> {
    if !json_depth_within(bytes, config.max_json_depth) {
        return Err(bad_request("JSON nested deeper than the limit"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let (path, inner) = (e.path().clone(), e.into_inner());
        match inner.classify() {
            serde_json::error::Category::Data => data_error(&path, &inner.to_string()),
            _ => Rejection::new(
                RejectionKind::BadRequest,
                format!(
                    "malformed JSON at line {} column {}",
                    inner.line(),
                    inner.column()
                ),
            ),
        }
    })?;
    de.end()
        .map_err(|_| bad_request("trailing characters after the JSON value"))?;
    Ok(value)
}

fn urlencoded<T: DeserializeOwned>(text: &[u8]) -> Result<T, Rejection> {
    let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(text));
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().clone();
        data_error(&path, &e.into_inner().to_string())
    })
}

fn form_urlencoded_parse(text: &[u8]) -> url::form_urlencoded::Parse<'_> {
    url::form_urlencoded::parse(text)
}

impl<T, S> FromRequest<S> for Valid<Json<T>>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        if !is_json(req.headers()) {
            return Err(Rejection::new(
                RejectionKind::UnsupportedMediaType,
                "expected application/json",
            ));
        }
        let config = config(req.extensions());
        let bytes = body_bytes(req, state).await?;
        let value = json_value::<T>(&bytes, &config)?;
        Ok(Valid(Json(validated(value)?)))
    }
}

impl<T, S> FromRequest<S> for Valid<Form<T>>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        // Like axum's `Form`: GET and HEAD carry the form in the query string.
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let value = urlencoded::<T>(req.uri().query().unwrap_or("").as_bytes())?;
            return Ok(Valid(Form(validated(value)?)));
        }
        if media_type(req.headers()).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(Rejection::new(
                RejectionKind::UnsupportedMediaType,
                "expected application/x-www-form-urlencoded",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        let value = urlencoded::<T>(&bytes)?;
        Ok(Valid(Form(validated(value)?)))
    }
}

impl<T, S> FromRequestParts<S> for Valid<Query<T>>
where
    T: DeserializeOwned + garde::Validate,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        let value = urlencoded::<T>(parts.uri.query().unwrap_or("").as_bytes())?;
        Ok(Valid(Query(validated(value)?)))
    }
}

impl<T, S> FromRequestParts<S> for Valid<Path<T>>
where
    T: DeserializeOwned + garde::Validate + Send,
    T::Context: Default,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let Path(value) = Path::<T>::from_request_parts(parts, state).await.map_err(
            |rejection| match rejection {
                PathRejection::FailedToDeserializePathParams(e) => match e.into_kind() {
                    ErrorKind::ParseErrorAtKey { key, .. } => {
                        refuse(vec![FieldError::new(&key, "invalid_type")])
                    }
                    ErrorKind::ParseErrorAtIndex { index, .. } => {
                        refuse(vec![FieldError::new(&format!("[{index}]"), "invalid_type")])
                    }
                    ErrorKind::ParseError { .. } => {
                        refuse(vec![FieldError::new("", "invalid_type")])
                    }
                    ErrorKind::DeserializeError { key, message, .. } => {
                        refuse(vec![FieldError::new(&key, code_of_serde_message(&message))])
                    }
                    ErrorKind::Message(message) => {
                        refuse(vec![FieldError::new("", code_of_serde_message(&message))])
                    }
                    ErrorKind::InvalidUtf8InPathParam { .. } => {
                        bad_request("path parameter is not UTF-8")
                    }
                    _ => bad_request("path parameters do not fit the extractor"),
                },
                _ => bad_request("path parameters unavailable"),
            },
        )?;
        Ok(Valid(Path(validated(value)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{BoundedString, Identifier, SafeUrl, Slug};
    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use serde::Deserialize;
    use tower::ServiceExt;

    #[derive(Debug, Deserialize, garde::Validate)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[garde(dive)]
        title: BoundedString<1, 10>,
        #[garde(dive)]
        url: SafeUrl,
        #[garde(length(max = 2), dive)]
        #[serde(default)]
        tags: Vec<Slug>,
        #[garde(range(max = 5))]
        #[serde(default)]
        stars: u8,
    }

    #[derive(Debug, Deserialize, garde::Validate)]
    struct Params {
        #[garde(dive)]
        name: Identifier,
        #[garde(range(min = 1, max = 100))]
        limit: u32,
    }

    async fn doc(Valid(Json(d)): Valid<Json<Doc>>) -> String {
        d.title.into_inner()
    }
    async fn form(Valid(Form(d)): Valid<Form<Params>>) -> String {
        d.name.into_inner()
    }
    async fn query(Valid(Query(p)): Valid<Query<Params>>) -> String {
        p.name.into_inner()
    }
    async fn path(Valid(Path(p)): Valid<Path<Params>>) -> String {
        format!("{}/{}", p.name, p.limit)
    }

    fn app() -> Router {
        Router::new()
            .route("/doc", post(doc))
            .route("/form", post(form).get(form))
            .route("/query", get(query))
            .route("/path/{name}/{limit}", get(path))
            .layer(axum::Extension(
                ValidationConfig::default()
                    .with_max_json_depth(8)
                    .with_body_limit(1024),
            ))
    }

    async fn send(req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
        let res = app().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json, text)
    }

    fn json_req(body: &str, content_type: &str) -> Request<Body> {
        Request::post("/doc")
            .header("content-type", content_type)
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn json_matrix() {
        let ct = "application/json";
        let ok = r#"{"title":"Hi","url":"https://example.com/a"}"#;
        let cases: Vec<(String, &str, StatusCode, serde_json::Value)> = vec![
            (ok.into(), ct, StatusCode::OK, serde_json::Value::Null),
            (
                ok.into(),
                "application/problem+json",
                StatusCode::OK,
                serde_json::Value::Null,
            ),
            (
                ok.into(),
                "Application/JSON; charset=utf-8",
                StatusCode::OK,
                serde_json::Value::Null,
            ),
            (
                ok.into(),
                "text/plain",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                serde_json::Value::Null,
            ),
            (
                ok.into(),
                "application/jsonx",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                serde_json::Value::Null,
            ),
            (
                r#"{"title":"Hi","#.into(),
                ct,
                StatusCode::BAD_REQUEST,
                serde_json::Value::Null,
            ),
            (
                format!("{ok} x"),
                ct,
                StatusCode::BAD_REQUEST,
                serde_json::Value::Null,
            ),
            (
                r#"{"title":"","url":"https://example.com/a"}"#.into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "title", "code": "length"}]),
            ),
            (
                r#"{"title":"Hi","url":"https://127.0.0.1/hunter2"}"#.into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "url", "code": "url_private_address"}]),
            ),
            (
                r#"{"title":"Hi"}"#.into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "url", "code": "required"}]),
            ),
            (
                r#"{"title":"Hi","url":"https://example.com/a","hunter2":1}"#.into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "", "code": "unknown_field"}]),
            ),
            (
                r#"{"title":"Hi","url":"https://example.com/a","tags":["ok","Not_OK"]}"#.into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "tags[1]", "code": "slug"}]),
            ),
            (
                r#"{"title":"Hi","url":"https://example.com/a","tags":["a","b","c"],"stars":9}"#
                    .into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "stars", "code": "range"}, {"path": "tags", "code": "length"}]),
            ),
            (
                r#"{"title":"Hi","url":"https://example.com/a","stars":"hunter2"}"#.into(),
                ct,
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!([{"path": "stars", "code": "invalid_type"}]),
            ),
            (
                format!(
                    r#"{{"title":"Hi","url":"https://example.com/a","tags":{}"#,
                    "[".repeat(9)
                ),
                ct,
                StatusCode::BAD_REQUEST,
                serde_json::Value::Null,
            ),
            (
                format!(
                    r#"{{"title":"{}","url":"https://example.com/a"}}"#,
                    "x".repeat(2000)
                ),
                ct,
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::Value::Null,
            ),
        ];
        let mut failures = Vec::new();
        for (body, ctype, want, errors) in cases {
            let (status, json, text) = send(json_req(&body, ctype)).await;
            if status != want {
                failures.push(format!(
                    "{body:.60} [{ctype}]: {status} (want {want}) {text}"
                ));
                continue;
            }
            if status.is_client_error() {
                if json["status"] != want.as_u16() {
                    failures.push(format!("{body:.60}: not a problem document: {text}"));
                }
                if !errors.is_null() && json["errors"] != errors {
                    failures.push(format!(
                        "{body:.60}: errors {} (want {errors})",
                        json["errors"]
                    ));
                }
                if text.contains("hunter2") || text.contains("127.0.0.1") {
                    failures.push(format!("{body:.60}: echoes input: {text}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[tokio::test]
    async fn query_path_and_form() {
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        let (s, _, t) = send(get("/query?name=abc&limit=5")).await;
        assert_eq!((s, t.as_str()), (StatusCode::OK, "abc"));
        let (s, j, t) = send(get("/query?name=1abc&limit=500")).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            j["errors"],
            serde_json::json!([{"path": "name", "code": "identifier"}])
        );
        assert!(!t.contains("1abc"));
        let (s, j, _) = send(get("/query?name=abc&limit=500")).await;
        assert_eq!(
            (s, &j["errors"]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!([{"path": "limit", "code": "range"}])
            )
        );
        let (s, j, _) = send(get("/query?name=abc&limit=lots")).await;
        assert_eq!(
            (s, &j["errors"]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!([{"path": "limit", "code": "invalid_type"}])
            )
        );

        let (s, _, t) = send(get("/path/abc/7")).await;
        assert_eq!((s, t.as_str()), (StatusCode::OK, "abc/7"));
        let (s, j, t) = send(get("/path/abc/0")).await;
        assert_eq!(
            (s, &j["errors"]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!([{"path": "limit", "code": "range"}])
            )
        );
        assert!(!t.contains("abc"));
        let (s, j, _) = send(get("/path/abc/x")).await;
        assert_eq!(
            (s, &j["errors"]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!([{"path": "limit", "code": "invalid_type"}])
            )
        );
        let (s, _, _) = send(get("/path/a-b/1")).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

        let post_form = |body: &'static str, ct: &'static str| {
            Request::post("/form")
                .header("content-type", ct)
                .body(Body::from(body))
                .unwrap()
        };
        let (s, _, t) = send(post_form(
            "name=abc&limit=3",
            "application/x-www-form-urlencoded",
        ))
        .await;
        assert_eq!((s, t.as_str()), (StatusCode::OK, "abc"));
        let (s, _, _) = send(post_form("name=abc&limit=3", "application/json")).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let (s, j, _) = send(post_form("name=abc", "application/x-www-form-urlencoded")).await;
        assert_eq!(
            (s, &j["errors"]),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!([{"path": "limit", "code": "required"}])
            )
        );
        let (s, _, t) = send(get("/form?name=q&limit=1")).await;
        assert_eq!((s, t.as_str()), (StatusCode::OK, "q"));
    }

    #[test]
    fn deep_json_is_refused_before_parsing() {
        let deep = "[".repeat(1_000_000);
        let r = json_value::<serde_json::Value>(deep.as_bytes(), &ValidationConfig::default());
        assert_eq!(r.unwrap_err().kind(), RejectionKind::BadRequest);
        assert!(json_depth_within(
            br#"{"a":"[[[[[[[[[[[[[[[[","b":"\"[[["}"#,
            2
        ));
    }

    proptest! {
        #[test]
        fn depth_scan_agrees_with_serde(s in "[\\[\\]{}\",:a\\\\ 0-9]{0,40}", max in 1usize..6) {
            // Whenever serde_json accepts the text, the scan's verdict is the true depth's.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&s) {
                fn depth(v: &serde_json::Value) -> usize {
                    match v {
                        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
                        _ => 0,
                    }
                }
                prop_assert_eq!(json_depth_within(s.as_bytes(), max), depth(&v) <= max);
            }
        }
    }
}
