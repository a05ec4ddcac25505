//! Completion webhooks: when a render (or a batch) ends, a JSON `POST` to
//! the operator's URL, signed, retried with backoff, never holding up the
//! render.
//!
//! # Verifying a delivery
//!
//! Every delivery carries:
//! - `X-Montage-Event`: the event (`render.succeeded`, `render.failed`,
//!   `render.cancelled`, `batch.finished`);
//! - `X-Montage-Delivery`: an id, the same on every retry of one delivery
//!   (deduplicate on it);
//! - `X-Montage-Timestamp`: seconds since the Unix epoch when the delivery
//!   was made;
//! - with a secret, `X-Montage-Signature: v1=<hex>`, the HMAC-SHA256 of
//!   `<timestamp>.<body>` under the secret.
//!
//! A receiver recomputes the HMAC over the timestamp header, a `.`, and the
//! raw body bytes, compares it with the header in constant time, and
//! refuses timestamps older than a few minutes (replays). In Python:
//!
//! ```text
//! mac = hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
//! ok = hmac.compare_digest("v1=" + mac, request.headers["X-Montage-Signature"])
//! ```
//!
//! A 2xx answer ends the delivery; a network error, a 408, 429 or 5xx is
//! retried with [`storage::Backoff`] up to [`WebhookConfig::max_attempts`];
//! any other answer is final (logged).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use storage::Backoff;
use tokio::task::JoinSet;

use crate::Error;

/// Attempts per delivery unless configured otherwise.
pub const DEFAULT_ATTEMPTS: u32 = 6;

/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how completion events are posted.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The receiver, `http://` or `https://`.
    pub url: String,
    /// The HMAC key deliveries are signed with (none: unsigned).
    pub secret: Option<Vec<u8>>,
    /// Attempts per delivery (at least 1).
    pub max_attempts: u32,
    /// Waits between attempts.
    pub backoff: Backoff,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("signed", &self.secret.is_some())
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl WebhookConfig {
    /// Posts to `url`, signed with `secret` when given, with the default
    /// retries (6 attempts, 1 s doubling to 60 s, jittered).
    pub fn new(url: impl Into<String>, secret: Option<Vec<u8>>) -> Self {
        WebhookConfig {
            url: url.into(),
            secret,
            max_attempts: DEFAULT_ATTEMPTS,
            backoff: Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60))
                .with_jitter(storage::backoff::DEFAULT_JITTER),
        }
    }

    /// Checks the URL, the attempts and the secret.
    ///
    /// # Errors
    /// [`Error::Input`] naming `--webhook` or `--webhook-secret-file`.
    pub fn validate(&self) -> Result<(), Error> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| Error::Input(format!("--webhook `{}`: {e}", spec::quote(&self.url))))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::Input(format!(
                "--webhook `{}`: give an http:// or https:// URL",
                spec::quote(&self.url)
            )));
        }
        if self.max_attempts == 0 {
            return Err(Error::Input(
                "webhook attempts 0 is invalid: give at least 1".into(),
            ));
        }
        if self.secret.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::Input(
                "--webhook-secret-file: the secret is empty".into(),
            ));
        }
        Ok(())
    }
}

/// Delivers events in the background.
pub struct Webhooks {
    config: WebhookConfig,
    client: reqwest::Client,
    deliveries: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A sender for `config`.
    ///
    /// # Errors
    /// [`Error::Input`] for an invalid configuration, [`Error::Internal`]
    /// if no HTTP client can be built.
    pub fn new(config: WebhookConfig) -> Result<Self, Error> {
        config.validate()?;
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("montage/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("the webhook HTTP client: {e}")))?;
        Ok(Webhooks {
            config,
            client,
            deliveries: Mutex::new(JoinSet::new()),
        })
    }

    /// Posts `event` (whose `event` field names it) in the background and
    /// returns at once.
    pub fn notify(&self, name: &'static str, event: &impl Serialize) {
        let body = match serde_json::to_vec(event) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = name, error = %e, "the webhook event does not serialize");
                return;
            }
        };
        let delivery = Delivery {
            id: delivery_id(),
            name,
            body,
            config: self.config.clone(),
            client: self.client.clone(),
        };
        if let Ok(mut set) = self.deliveries.lock() {
            // Finished deliveries are collected as new ones start.
            while set.try_join_next().is_some() {}
            set.spawn(delivery.run());
        }
    }

    /// Waits up to `within` for deliveries still being attempted (a CLI
    /// calls this before it exits), then gives up on the rest.
    pub async fn settle(&self, within: Duration) {
        let mut set = match self.deliveries.lock() {
            Ok(mut set) => std::mem::take(&mut *set),
            Err(_) => return,
        };
        if tokio::time::timeout(within, async { while set.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                pending = set.len(),
                "webhook deliveries still failing at exit: given up"
            );
        }
    }
}

/// One event to deliver, with its retries.
struct Delivery {
    id: String,
    name: &'static str,
    body: Vec<u8>,
    config: WebhookConfig,
    client: reqwest::Client,
}

impl Delivery {
    async fn run(self) {
        for attempt in 1..=self.config.max_attempts {
            match self.attempt().await {
                Ok(()) => {
                    tracing::info!(event = self.name, delivery = %self.id, attempt, "webhook delivered");
                    return;
                }
                Err((retry, why)) => {
                    tracing::warn!(event = self.name, delivery = %self.id, attempt, error = %why, "webhook delivery failed");
                    if !retry || attempt == self.config.max_attempts {
                        return;
                    }
                    tokio::time::sleep(self.config.backoff.delay(attempt)).await;
                }
            }
        }
    }

    /// One POST; on failure, whether retrying may help and why.
    async fn attempt(&self) -> Result<(), (bool, String)> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let mut request = self
            .client
            .post(&self.config.url)
            .header("content-type", "application/json")
            .header("x-montage-event", self.name)
            .header("x-montage-delivery", &self.id)
            .header("x-montage-timestamp", &timestamp);
        if let Some(secret) = &self.config.secret {
            request = request.header("x-montage-signature", sign(secret, &timestamp, &self.body));
        }
        let response = request
            .body(self.body.clone())
            .send()
            .await
            .map_err(|e| (true, e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
        Err((retry, format!("the receiver answered {status}")))
    }
}

/// The signature header's value: `v1=` and the hex HMAC-SHA256 of
/// `<timestamp>.<body>` under `secret`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh delivery id: time and randomness, unique enough to deduplicate.
fn delivery_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{nanos:x}-{:016x}", fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // Judged by an independent implementation: Python's hmac.
        let sig = sign(b"key", "1700000000", b"{\"a\":1}");
        let expected = std::process::Command::new("python3")
            .args([
                "-c",
                "import hmac,hashlib,sys; print('v1='+hmac.new(b'key', b'1700000000.{\"a\":1}', hashlib.sha256).hexdigest())",
            ])
            .output()
            .expect("python3 runs");
        assert_eq!(sig, String::from_utf8_lossy(&expected.stdout).trim());
    }

    #[test]
    fn configs_are_checked() {
        assert!(
            WebhookConfig::new("https://hooks.example/montage", None)
                .validate()
                .is_ok()
        );
        assert_eq!(
            WebhookConfig::new("ftp://x/y", None)
                .validate()
                .expect_err("scheme")
                .to_string(),
            "--webhook `ftp://x/y`: give an http:// or https:// URL"
        );
        assert!(WebhookConfig::new("not a url", None).validate().is_err());
        assert_eq!(
            WebhookConfig::new("http://h/x", Some(Vec::new()))
                .validate()
                .expect_err("empty secret")
                .to_string(),
            "--webhook-secret-file: the secret is empty"
        );
    }
}
