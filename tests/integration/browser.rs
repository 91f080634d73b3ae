//! A real browser (headless Chromium) against the `secure_api` example: CORS from an allowed
//! and a disallowed loopback origin, and a nonce-based Content-Security-Policy. Also, without a
//! browser, the example's promise of secure headers on every response.
//!
//! The example runs with `PORTCULLIS_CORS_ORIGINS` naming one page server's origin; two page
//! servers (the allowed and a disallowed origin, both loopback, different ports) serve the same
//! page under the HTML secure-headers profile. Chromium loads each page and dumps the DOM the
//! page's scripts wrote. Without Chromium (or the built example) the test skips with a loud
//! message, except when `CI` is set: then it fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use portcullis::headers::{CspNonce, HTML_CSP, Profile, SecureHeadersLayer};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn unavailable(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "the browser test is required in CI: {why}"
    );
    eprintln!("\n!!! SKIPPING browser test: {why} !!!\n");
}

/// `PORTCULLIS_CHROMIUM`, or the first Chromium/Chrome on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PORTCULLIS_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| {
            [
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ]
            .map(|name| dir.join(name))
        })
        .find(|candidate| candidate.is_file())
}

/// The example binary `cargo test` builds next to the test binaries.
fn example() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples/secure_api")))
        .filter(|path| path.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Kills the child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts the example with CORS for `allowed_origin`; returns it and the reader token it printed.
async fn start_example(binary: &PathBuf, addr: &str, allowed_origin: &str) -> (Running, String) {
    let mut child = Command::new(binary)
        .env("PORTCULLIS_ADDR", addr)
        .env("PORTCULLIS_CORS_ORIGINS", allowed_origin)
        .env_remove("PORTCULLIS_ISSUER")
        .env_remove("REDIS_URL")
        .env_remove("PORTCULLIS_CEDAR_POLICIES")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let stdout = child.stdout.take().expect("piped stdout");
    let running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut token = None;
    // Dev mode prints `READER_TOKEN=...` once it listens; audit lines follow.
    while let Some(line) = lines.next_line().await.expect("example stdout") {
        if let Some(value) = line.strip_prefix("READER_TOKEN=") {
            token = Some(value.to_owned());
            break;
        }
    }
    // Keep draining so the example never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    // The tokens are printed after binding; still, make sure it answers.
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the example answers on {addr}");
    (running, token.expect("the example printed a reader token"))
}

/// The page both origins serve: a nonce-carrying script that calls the API (with and without
/// the token) and records what it could read, and an inline script without the nonce.
fn page(nonce: &CspNonce, api: &str, token: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><title>portcullis browser test</title></head>
<body>
<script nonce="{nonce}">
  function record(id, text) {{
    const p = document.createElement('p');
    p.id = id;
    p.textContent = text;
    document.body.appendChild(p);
  }}
  record('nonce-script', 'ran');
  fetch('{api}/api/me', {{ headers: {{ authorization: 'Bearer {token}' }} }})
    .then(r => r.json().then(body => record('with-token', 'read ' + r.status + ' ' + body.subject)))
    .catch(e => record('with-token', 'blocked ' + e.name));
  fetch('{api}/api/me')
    .then(r => r.json().then(body => record('anonymous', 'read ' + r.status + ' ' + body.title)))
    .catch(e => record('anonymous', 'blocked ' + e.name));
</script>
<script>
  const p = document.createElement('p');
  p.id = 'injected-script';
  p.textContent = 'ran';
  document.body.appendChild(p);
</script>
</body></html>"#
    )
}

/// Serves the page on `addr` under the HTML profile, allowed to connect to `api`.
async fn serve_page(addr: SocketAddr, api: String, token: String) {
    let headers = SecureHeadersLayer::builder(Profile::Html)
        .content_security_policy(format!("{HTML_CSP}; connect-src {api}"))
        .build()
        .expect("page CSP");
    let app = Router::new()
        .route(
            "/",
            get(move |nonce: CspNonce| {
                let body = page(&nonce, &api, &token);
                async move { Html(body) }
            }),
        )
        .layer(headers);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind page server");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// Loads `url` in headless Chromium and returns the DOM after the page's scripts ran.
async fn dump_dom(chromium: &PathBuf, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "portcullis-chromium-{}",
        portcullis::testing::random_id()
    ));
    let output = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && dom.contains("</html>"),
        "chromium failed ({}): {}\n{}",
        output.status,
        dom,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

/// The text of `<p id="{id}">`, if the page recorded it.
fn recorded<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = format!("<p id=\"{id}\">");
    let from = dom.find(&start)? + start.len();
    let len = dom[from..].find("</p>")?;
    Some(&dom[from..from + len])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_enforces_cors_and_the_csp_nonce() {
    let Some(chromium) = chromium() else {
        return unavailable(
            "no chromium on PATH (apt-get install chromium, or set PORTCULLIS_CHROMIUM)",
        );
    };
    let Some(example) = example() else {
        return unavailable("the secure_api example is not built (`cargo test` builds it)");
    };
    let api_addr = format!("127.0.0.1:{}", free_port());
    let api = format!("http://{api_addr}");
    let allowed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let disallowed: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_example, token) = start_example(&example, &api_addr, &format!("http://{allowed}")).await;

    serve_page(allowed, api.clone(), token.clone()).await;
    serve_page(disallowed, api.clone(), token).await;

    let dom = dump_dom(&chromium, &format!("http://{allowed}/")).await;
    assert_eq!(recorded(&dom, "nonce-script"), Some("ran"), "{dom}");
    assert_eq!(
        recorded(&dom, "injected-script"),
        None,
        "the inline script without the nonce must be blocked by the CSP: {dom}"
    );
    assert_eq!(
        recorded(&dom, "with-token"),
        Some("read 200 dev-reader"),
        "the allowed origin reads the API: {dom}"
    );
    // The refusal is readable too (CORS headers on rendered rejections), and still a 401.
    assert_eq!(
        recorded(&dom, "anonymous"),
        Some("read 401 Authentication required"),
        "{dom}"
    );

    let dom = dump_dom(&chromium, &format!("http://{disallowed}/")).await;
    assert_eq!(recorded(&dom, "nonce-script"), Some("ran"), "{dom}");
    assert_eq!(recorded(&dom, "injected-script"), None, "{dom}");
    assert_eq!(
        recorded(&dom, "with-token"),
        Some("blocked TypeError"),
        "the disallowed origin's fetch must fail: {dom}"
    );
    assert_eq!(
        recorded(&dom, "anonymous"),
        Some("blocked TypeError"),
        "{dom}"
    );
}

/// The example's contract: secure headers on every response (successes, refusals, preflights),
/// and CORS for the origins of `PORTCULLIS_CORS_ORIGINS` only. Needs no browser.
#[tokio::test]
async fn the_example_sends_secure_headers_on_every_response() {
    let Some(example) = example() else {
        return unavailable("the secure_api example is not built (`cargo test` builds it)");
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let app_origin = "http://127.0.0.1:3000";
    let (_example, token) = start_example(&example, &addr, app_origin).await;
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    let cases = [
        ("public", http.get(format!("{base}/health")), 200),
        (
            "authorized",
            http.get(format!("{base}/api/me")).bearer_auth(&token),
            200,
        ),
        ("anonymous", http.get(format!("{base}/api/me")), 401),
        (
            "bad token",
            http.get(format!("{base}/api/me")).bearer_auth("x.y.z"),
            401,
        ),
        (
            "wrong role",
            http.delete(format!("{base}/api/documents/1"))
                .bearer_auth(&token),
            403,
        ),
        ("unknown path", http.get(format!("{base}/nope")), 404),
        ("unknown method", http.put(format!("{base}/health")), 405),
        (
            "preflight",
            http.request(reqwest::Method::OPTIONS, format!("{base}/api/me"))
                .header("origin", app_origin)
                .header("access-control-request-method", "GET"),
            200,
        ),
        (
            "cross-origin 401",
            http.get(format!("{base}/api/me"))
                .header("origin", app_origin),
            401,
        ),
        (
            "disallowed preflight",
            http.request(reqwest::Method::OPTIONS, format!("{base}/api/me"))
                .header("origin", "http://127.0.0.1:3001")
                .header("access-control-request-method", "GET"),
            405,
        ),
    ];
    let expected = [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-resource-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ];
    let mut problems = Vec::new();
    for (what, request, status) in cases {
        let response = request.send().await.expect(what);
        if response.status().as_u16() != status {
            problems.push(format!("{what}: status {}", response.status()));
        }
        let headers = response.headers();
        for (name, value) in expected {
            if headers.get(name).and_then(|v| v.to_str().ok()) != Some(value) {
                problems.push(format!("{what}: {name} = {:?}", headers.get(name)));
            }
        }
        for banner in ["server", "x-powered-by", "strict-transport-security"] {
            if headers.contains_key(banner) {
                problems.push(format!("{what}: {banner} present"));
            }
        }
        let acao = headers
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok());
        let want_acao = matches!(what, "preflight" | "cross-origin 401").then_some(app_origin);
        if acao != want_acao {
            problems.push(format!("{what}: access-control-allow-origin {acao:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
