//! Webhook delivery of alerts: a background task per broker that claims pending deliveries
//! from the alerts table with a lease (so that with several brokers on one database each alert
//! is delivered once), POSTs each alert's JSON signed with the user's signing secret
//! (`Maestro-Signature: sha256=<hex HMAC-SHA256 of the body>`), and retries with exponential
//! backoff. The usage route only marks an alert pending and wakes the task (a [`Notify`]
//! holds at most one wake-up, and the table is the queue), so ingestion never waits on a
//! webhook.
//!
//! URLs are checked when set: `https`, or `http` only to a loopback address (tests, a local
//! relay), at most [`MAX_WEBHOOK_URL_BYTES`], no user name or password in it.
//!
//! [`Notify`]: tokio::sync::Notify

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use maestro_wire::alerts::{ALERT_ID_HEADER, MAX_WEBHOOK_URL_BYTES, SIGNATURE_HEADER, WebhookBody};
use sha2::Sha256;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::error::{DomainError, DomainResult};
use crate::app::App;
use crate::store::alerts::{AlertRecord, WebhookState};

/// Attempts before a delivery is given up (about 2 minutes of backoff in all).
pub const MAX_ATTEMPTS: u32 = 8;
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a claimed delivery is reserved for the broker that claimed it.
const LEASE: Duration = Duration::from_secs(30);
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the task looks for due deliveries without being woken (retries, and alerts
/// raised on other brokers).
const POLL: Duration = Duration::from_millis(500);
/// Most deliveries claimed (and in flight) at once.
const BATCH: i64 = 16;

/// Checks a webhook URL; returns it as given.
pub fn check_url(text: &str) -> DomainResult<String> {
    if text.len() > MAX_WEBHOOK_URL_BYTES {
        return Err(DomainError::bad_request(format!(
            "a webhook URL is at most {MAX_WEBHOOK_URL_BYTES} bytes; this one is {}",
            text.len()
        )));
    }
    let bad = |why: &str| DomainError::bad_request(format!("invalid webhook URL: {why}"));
    let url = reqwest::Url::parse(text).map_err(|_| bad("it does not parse as a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("put no user name or password in it; the body is signed instead"));
    }
    let host = url.host_str().ok_or_else(|| bad("it names no host"))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => Ok(text.to_owned()),
        "http" if loopback => Ok(text.to_owned()),
        "http" => Err(bad("use https (http is accepted only to a loopback address)")),
        _ => Err(bad("the scheme must be https")),
    }
}

/// `sha256=<hex>`: the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> Result<String, String> {
    // HMAC takes a key of any length; the error cannot happen.
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| "the signing secret cannot key an HMAC".to_owned())?;
    mac.update(body);
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// The delay before attempt `attempts + 1` (after `attempts` failed).
pub fn backoff(attempts: u32) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

/// The delivery task: runs until `shutdown`.
pub async fn task(app: Arc<App>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = app.webhook_wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
        let now_ms = crate::oauth::refresh::now_ms();
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let claimed = match app.alerts.claim_webhooks(now_ms, lease, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "could not claim webhook deliveries");
                continue;
            }
        };
        let mut set = tokio::task::JoinSet::new();
        for alert in claimed {
            let app = app.clone();
            set.spawn(async move { deliver(&app, alert).await });
        }
        while set.join_next().await.is_some() {}
    }
}

/// One attempt at delivering `alert`, and its outcome stored.
async fn deliver(app: &App, alert: AlertRecord) {
    let outcome = attempt(app, &alert).await;
    let (state, retry) = match outcome {
        Ok(()) => {
            info!(alert = alert.id, "alert delivered to the webhook");
            (WebhookState::Delivered, None)
        }
        Err(why) if alert.attempts >= MAX_ATTEMPTS => {
            warn!(alert = alert.id, attempts = alert.attempts, problem = %why, "webhook delivery given up");
            (WebhookState::Failed, None)
        }
        Err(why) => {
            let delay = i64::try_from(backoff(alert.attempts).as_millis()).unwrap_or(i64::MAX);
            debug!(alert = alert.id, attempts = alert.attempts, problem = %why, "webhook delivery will be retried");
            (WebhookState::Pending, Some(crate::oauth::refresh::now_ms().saturating_add(delay)))
        }
    };
    if let Err(e) = app.alerts.finish_webhook(alert.id, state, retry).await {
        warn!(error = %e, alert = alert.id, "could not record a webhook delivery");
    }
}

/// POSTs the alert; `Err` says why it did not arrive (no value in it).
async fn attempt(app: &App, alert: &AlertRecord) -> Result<(), String> {
    let settings =
        app.alerts.user_alert_settings(alert.owner_id).await.map_err(|e| e.to_string())?;
    let Some(url) = settings.webhook_url.as_deref() else {
        return Err("the webhook was removed".to_owned());
    };
    let Some(key) = super::alerts::open_signing_secret(app, &settings)? else {
        return Err("the webhook has no signing secret".to_owned());
    };
    let labels = match &alert.session_id {
        Some(id) => match app.store.session(id).await {
            Ok(Some(s)) => [(id.clone(), s.label)].into_iter().collect(),
            _ => Default::default(),
        },
        None => Default::default(),
    };
    let body = WebhookBody {
        event: "maestro.alert".to_owned(),
        user: alert.owner_id,
        alert: super::alerts::to_alert(alert, &labels),
    };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let signed = signature(key.expose().as_bytes(), &body)?;
    let response = app
        .oauth
        .http
        .post(url)
        .timeout(POST_TIMEOUT)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signed)
        .header(ALERT_ID_HEADER, alert.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the POST failed: {}", e.without_url()))?;
    let status = response.status();
    if status.is_success() { Ok(()) } else { Err(format!("the webhook answered {status}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_http() {
        assert!(check_url("https://hooks.example.com/maestro").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("http://[::1]:9000/hook").is_ok());
        assert!(check_url("http://localhost/hook").is_ok());
        for bad in [
            "http://hooks.example.com/x",
            "ftp://127.0.0.1/x",
            "https://user:pw@hooks.example.com/",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL_BYTES));
        assert!(check_url(&long).unwrap_err().message.contains("at most"));
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?").unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), FIRST_BACKOFF);
        assert_eq!(backoff(2), FIRST_BACKOFF * 2);
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
