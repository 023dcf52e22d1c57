//! A typed client for the YouHodler Business API's clients surface (reference
//! `other-providers.md` §1, simulated by `sims/youhodler`): OAuth client credentials with a
//! cached bearer token, one enterprise as the tenant root, clients with `Idempotency-Key`
//! creates and weak ETags (`If-Match` on PATCH and on suspend/reactivate).
//!
//! Shared with the other clients: the retry policy
//! ([`RetryPolicy`](crate::provider::layers::retry::RetryPolicy)), the metrics, body decoding,
//! transport-error and `Retry-After` parsing. What is YouHodler's own is here: the config,
//! the error envelope `{code, message, details{reason, retry_after_ms}}` and its mapping.

pub mod client;
pub mod model;
pub mod provider;

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

pub use client::*;
pub use model::*;
pub use provider::{CAPABILITIES, YouhodlerProvider};

use crate::provider::error::{ApiFailure, ProviderError};
use crate::provider::http::parse_retry_after;
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::Secret;

/// The longest a 429's `retry_after_ms` (or `Retry-After`) is obeyed for one wait.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How to reach the YouHodler API with one service account.
#[derive(Clone)]
pub struct YouhodlerConfig {
    /// The server, e.g. `https://business-api.youhodler.com`; resources sit at its root.
    pub base_url: String,
    /// The service account's OAuth `client_id` (not secret; shown in messages).
    pub client_id: String,
    pub client_secret: Secret,
    /// `spec.youhodler.enterpriseId`; when `None`, the only enterprise `GET /enterprises`
    /// lists.
    pub enterprise_id: Option<String>,
    pub metrics: Option<ProviderMetrics>,
    /// First backoff ceiling; doubles per attempt up to `retry_max_delay` (full jitter).
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts per request after transient failures (5xx, transport, timeout, 429), the
    /// first included. Only requests that are safe to re-send are re-sent.
    pub max_attempts: u32,
    /// Retries stop when the next one would start later than this after the first attempt.
    pub max_retry_time: Duration,
    /// Requests in flight at once through this client (the docs advise bounded concurrency).
    pub max_concurrency: usize,
    /// The replica's leader fence: every attempt of a write is checked and stamped right
    /// before it is sent (`crate::fence::stamp`); `None` outside the operator.
    pub fence: Option<crate::fence::Fence>,
}

impl YouhodlerConfig {
    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> YouhodlerConfig {
        YouhodlerConfig {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret,
            enterprise_id: None,
            metrics: None,
            // The docs advise starting around 250 ms, capped at a few seconds.
            retry_base_delay: Duration::from_millis(250),
            retry_max_delay: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_attempts: 5,
            max_retry_time: Duration::from_secs(60),
            max_concurrency: 4,
            fence: None,
        }
    }
}

impl fmt::Debug for YouhodlerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouhodlerConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("enterprise_id", &self.enterprise_id)
            .field("request_timeout", &self.request_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// Where [`map_error`] puts `details.reason` in the message, for [`reason`] to find it.
const REASON_OPEN: &str = " (reason: ";

/// A refusal as a [`ProviderError`]: the variant by HTTP status, `code` the envelope's
/// lower-snake code (`http_<status>` when there is none), `details.reason` at the end of the
/// message. Any text in `redact` (the client secret, the bearer token) is cut out of the
/// message, should a server ever echo it.
pub(crate) fn map_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    redact: &[&str],
) -> ProviderError {
    let status_u16 = status.as_u16();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // Not the envelope (e.g. a proxy's page): keep only the status, never the body.
    let parsed = serde_json::from_slice::<ErrorBody>(body).unwrap_or_default();
    let details = parsed.details.unwrap_or_default();
    let code = parsed
        .code
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| format!("http_{status_u16}"));
    let mut message = parsed
        .message
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    if let Some(r) = details.get("reason").and_then(|r| r.as_str()) {
        message = format!("{message}{REASON_OPEN}{r})");
    }
    for secret in redact.iter().filter(|s| !s.is_empty()) {
        message = message.replace(secret, "[REDACTED]");
    }
    let retry_after = retry_after_ms(&details)
        .or_else(|| header("retry-after").and_then(|v| parse_retry_after(&v)))
        .map(|d| d.min(MAX_RETRY_AFTER));
    let request_id = details
        .get("request_id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .or_else(|| header("x-request-id"));
    let f = ApiFailure {
        status: status_u16,
        code,
        message,
        request_id,
        retry_after,
    };
    match status_u16 {
        401 => ProviderError::Unauthenticated(f),
        403 => ProviderError::ForbiddenScope(f),
        404 => ProviderError::NotFound(f),
        409 if f.code == "idempotency_conflict" => ProviderError::IdempotencyConflict(f),
        409 | 412 => ProviderError::Conflict(f),
        400 | 422 => ProviderError::Validation(f),
        429 => ProviderError::RateLimited(f),
        500..=599 => ProviderError::Server(f),
        _ => ProviderError::Unexpected(f),
    }
}

/// `details.retry_after_ms`, a number or a numeric string.
fn retry_after_ms(details: &serde_json::Value) -> Option<Duration> {
    let v = details.get("retry_after_ms")?;
    let ms = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

/// The `details.reason` of a YouHodler refusal (e.g. `external_id_taken`,
/// `already_suspended`, `pending_approvals`), from where [`map_error`] put it.
pub fn reason(err: &ProviderError) -> Option<&str> {
    let m = err.api_failure()?.message.as_str();
    let start = m.rfind(REASON_OPEN)? + REASON_OPEN.len();
    m[start..].split_once(')').map(|(r, _)| r)
}

/// 409 `state_conflict` (`external_id_taken`): another client of the enterprise has this
/// `external_id`. The create was refused; whether to adopt that client is the caller's call.
pub fn is_external_id_taken(err: &ProviderError) -> bool {
    err.api_failure()
        .is_some_and(|f| f.status == 409 && f.code == "state_conflict")
        && reason(err) == Some("external_id_taken")
}

/// 412: the `If-Match` ETag was stale (re-read, re-check, retry).
pub fn is_precondition_failed(err: &ProviderError) -> bool {
    err.api_failure().is_some_and(|f| f.status == 412)
}

/// A lifecycle refusal that may mean "already there": 409 `state_conflict` (the simulator's
/// `already_suspended` / `not_suspended`) or any 422 `not_admissible` (the docs leave open
/// which one the API sends).
pub fn is_state_refusal(err: &ProviderError) -> bool {
    err.api_failure()
        .is_some_and(|f| (f.status == 409 && f.code == "state_conflict") || f.status == 422)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn map(status: u16, body: &str) -> ProviderError {
        map_error(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
            &["s3cr3t"],
        )
    }

    #[test]
    fn statuses_map_to_variants_with_the_code_and_reason() {
        let e = map(
            409,
            r#"{"code":"state_conflict","message":"A client with this external_id already exists.","details":{"reason":"external_id_taken"}}"#,
        );
        assert!(matches!(e, ProviderError::Conflict(_)) && e.needs_human());
        assert_eq!(e.code(), "state_conflict");
        assert_eq!(reason(&e), Some("external_id_taken"));
        assert!(is_external_id_taken(&e) && is_state_refusal(&e));
        let e = map(
            409,
            r#"{"code":"idempotency_conflict","message":"x","details":{"reason":"key_payload_mismatch"}}"#,
        );
        assert!(matches!(e, ProviderError::IdempotencyConflict(_)));
        assert!(!is_external_id_taken(&e) && !is_state_refusal(&e));
        let e = map(412, r#"{"code":"precondition_failed","message":"stale"}"#);
        assert!(matches!(e, ProviderError::Conflict(_)) && is_precondition_failed(&e));
        assert_eq!(reason(&e), None);
        for (status, want) in [(400, "Validation"), (422, "Validation")] {
            let e = map(status, r#"{"code":"not_admissible","message":"no"}"#);
            assert!(
                matches!(e, ProviderError::Validation(_)),
                "{status} {want}: {e:?}"
            );
        }
        assert!(is_state_refusal(&map(422, r#"{"code":"not_admissible"}"#)));
        assert!(map(401, "{}").is_auth());
        assert!(matches!(map(403, "{}"), ProviderError::ForbiddenScope(_)));
        assert!(map(404, "{}").is_not_found());
        assert!(matches!(map(503, "{}"), ProviderError::Server(_)));
        assert!(matches!(map(410, "{}"), ProviderError::Unexpected(_)));
        assert_eq!(map(502, "<html>").code(), "http_502");
    }

    #[test]
    fn rate_limits_wait_retry_after_ms_capped() {
        let e = map(
            429,
            r#"{"code":"rate_limited","message":"slow down","details":{"retry_after_ms":5000}}"#,
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(5)));
        let e = map(429, r#"{"details":{"retry_after_ms":"120000"}}"#);
        assert_eq!(e.retry_after(), Some(MAX_RETRY_AFTER));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        h.insert("x-request-id", HeaderValue::from_static("req_9"));
        let e = map_error(StatusCode::TOO_MANY_REQUESTS, &h, b"", &[]);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.request_id(), Some("req_9"));
    }

    #[test]
    fn messages_never_carry_the_secret_or_a_foreign_body() {
        let e = map(
            401,
            r#"{"code":"unauthorized","message":"bad secret s3cr3t","details":{"reason":"invalid_client"}}"#,
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert_eq!(reason(&e), Some("invalid_client"));
        let e = map(502, "<html>token eyJleak</html>");
        assert!(!e.to_string().contains("eyJleak"), "{e}");
    }

    #[test]
    fn config_debug_redacts_the_secret() {
        let cfg = YouhodlerConfig::new("http://127.0.0.1:1", "sa_1", Secret::new("supersecret"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("[REDACTED]") && shown.contains("sa_1"));
    }
}
