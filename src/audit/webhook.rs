//! An [`AlertHook`] that POSTs each alert as JSON to a URL, off the request path.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::alert::{Alert, AlertHook};
use crate::error::ConfigError;

/// POSTs every alert ([`Alert::to_json`]) to a webhook URL (chat, paging, SIEM).
///
/// [`on_alert`](AlertHook::on_alert) only puts the alert into a bounded queue; a tokio task
/// sends it, each POST under a timeout. When the queue is full (the endpoint is down and
/// alerts keep coming) further alerts are dropped and counted ([`WebhookHook::dropped`]); they
/// are still in the audit trail as `security.alert` events. The URL is never logged (webhook
/// URLs often embed a secret token).
#[derive(Clone)]
pub struct WebhookHook {
    tx: tokio::sync::mpsc::Sender<Alert>,
    dropped: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl fmt::Debug for WebhookHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookHook")
            .field("dropped", &self.dropped())
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

impl WebhookHook {
    /// Configures a hook posting to `url` (`https` unless
    /// [`insecure_allow_http`](WebhookHookBuilder::insecure_allow_http)).
    pub fn builder(url: impl Into<String>) -> WebhookHookBuilder {
        WebhookHookBuilder {
            url: url.into(),
            timeout: Duration::from_secs(5),
            queue: 64,
            allow_http: false,
        }
    }

    /// Alerts dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// POSTs that failed (error, timeout or non-2xx status).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

impl AlertHook for WebhookHook {
    fn on_alert(&self, alert: &Alert) {
        if self.tx.try_send(alert.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Configures a [`WebhookHook`].
#[must_use]
pub struct WebhookHookBuilder {
    url: String,
    timeout: Duration,
    queue: usize,
    allow_http: bool,
}

impl fmt::Debug for WebhookHookBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookHookBuilder")
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl WebhookHookBuilder {
    /// Timeout of each POST (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Alerts waiting to be sent before new ones are dropped (default 64).
    pub fn queue(mut self, queue: NonZeroUsize) -> Self {
        self.queue = queue.get();
        self
    }

    /// Accepts a plain `http` URL. The alert (and any token in the URL) then crosses the
    /// network in clear text; meant for a collector on the same host.
    pub fn insecure_allow_http(mut self) -> Self {
        self.allow_http = true;
        self
    }

    /// The hook; spawns its sender task on the current tokio runtime (fails outside one).
    pub fn build(self) -> Result<WebhookHook, ConfigError> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|_| ConfigError::new("webhook URL is not a valid URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => {
                return Err(ConfigError::new(
                    "webhook URL must be https (or insecure_allow_http)",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("webhook timeout must be positive"));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| ConfigError::new("WebhookHook::build needs a tokio runtime"))?;
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::new(format!("webhook HTTP client: {e}")))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Alert>(self.queue);
        let failures = Arc::new(AtomicU64::new(0));
        let task_failures = failures.clone();
        runtime.spawn(async move {
            while let Some(alert) = rx.recv().await {
                let sent = client
                    .post(url.clone())
                    .header("content-type", "application/json")
                    .body(alert.to_json())
                    .send()
                    .await;
                let ok = matches!(&sent, Ok(response) if response.status().is_success());
                if !ok {
                    task_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        target: "portcullis::audit::webhook",
                        alert = alert.signal.alert_name(),
                        status = sent.as_ref().ok().map(|r| r.status().as_u16()),
                        "alert webhook failed"
                    );
                }
            }
        });
        Ok(WebhookHook {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            failures,
        })
    }
}
