//! Layers' requests: the bearer key, the organization header, rate limiting by class and
//! the error envelope, inside the shared HTTP envelope (`provider::http`: send, retry,
//! metrics, span, fence). Never logs headers or bodies (they can hold keys and secrets).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;

use super::LayersConfig;
use super::model::{ErrorEnvelope, Page};
use super::ratelimit::{Buckets, Class};
use crate::provider::error::{ApiFailure, ProviderError};
pub(crate) use crate::provider::http::decode;
use crate::provider::http::{
    self, Envelope, Failed, header_str, parse_retry_after, request_span, settings_of,
};
use crate::provider::types::{IdempotencyKey, Secret};

/// Hard stop for a cursor chain that never ends (a server bug must not loop forever).
const MAX_PAGES: usize = 10_000;

pub(crate) struct Request<'a> {
    pub http: http::Request,
    pub key: Option<&'a IdempotencyKey>,
    /// Idempotent by method (GET, DELETE) or by state (suspend, resume).
    pub idempotent: bool,
    /// `X-Layers-Organization`: act inside this child with the parent key.
    pub org: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, route: &'static str, path: String) -> Request<'a> {
        let idempotent = method == Method::GET || method == Method::DELETE;
        let http = http::Request::new(method, route, path);
        Request {
            http,
            key: None,
            idempotent,
            org: None,
        }
    }

    pub fn json(mut self, body: &serde_json::Value) -> Request<'a> {
        // Serialising a Value cannot fail.
        self.http.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }

    pub fn key(mut self, key: &'a IdempotencyKey) -> Request<'a> {
        self.key = Some(key);
        self
    }

    pub fn idempotent_by_state(mut self) -> Request<'a> {
        self.idempotent = true;
        self
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Request<'a> {
        self.http.query.push((name, value.into()));
        self
    }

    pub fn in_org(mut self, org: &'a str) -> Request<'a> {
        self.org = Some(org);
        self
    }

    fn retry_safe(&self) -> bool {
        self.idempotent || self.key.is_some()
    }
}

pub(crate) struct Http {
    envelope: Envelope,
    api_key: Secret,
    buckets: Arc<Buckets>,
}

impl Http {
    pub fn new(cfg: &LayersConfig, buckets: Arc<Buckets>) -> Result<Http, ProviderError> {
        let envelope = Envelope::new(settings_of!(cfg, api_root: "", max_concurrency: None))?;
        if cfg.api_key.expose().is_empty() {
            return Err(ProviderError::Invalid("the API key is empty".into()));
        }
        Ok(Http {
            envelope,
            api_key: cfg.api_key.clone(),
            buckets,
        })
    }

    /// Sends `req`, re-sending it after transient failures only when that is safe.
    pub async fn send(&self, req: &Request<'_>) -> Result<Vec<u8>, ProviderError> {
        let class = Class::of(&req.http.method);
        let span = request_span!("layers_request", req.http);
        let attempt = |_| async move {
            self.attempt(req, class).await.map_err(|err| {
                if let ProviderError::RateLimited(f) = &err {
                    // Everyone using this class waits, not just this caller.
                    let pause = f.retry_after.unwrap_or(Duration::from_secs(1));
                    self.buckets.pause(class, pause);
                }
                Failed::new(err, req.retry_safe())
            })
        };
        self.envelope.retrying(&req.http, span, attempt).await
    }

    async fn attempt(&self, req: &Request<'_>, class: Class) -> Result<Vec<u8>, ProviderError> {
        let waited = self.buckets.acquire(class).await.map_err(|left| {
            ProviderError::RateLimited(ApiFailure {
                status: 429,
                code: "RATE_LIMITED".into(),
                message: "an earlier 429 paused this class of requests until the provider's window resets".into(),
                request_id: None,
                retry_after: Some(left),
            })
        })?;
        if let Some(m) = self.envelope.metrics() {
            m.rate_limit_wait.observe(waited.as_secs_f64());
        }
        let mut rb = self
            .envelope
            .request(&req.http)
            .bearer_auth(self.api_key.expose());
        if let Some(key) = req.key {
            rb = rb.header("Idempotency-Key", key.as_str());
        }
        if let Some(org) = req.org {
            rb = rb.header("X-Layers-Organization", org);
        }
        // The provider's bucket may be empty (its burst may be far smaller than the
        // tier's limit, or shared with others, issue 28): wait one refill before the next
        // request of this class instead of meeting a 429.
        let pace = |headers: &HeaderMap| {
            if let Some(wait) = bucket_empty_for(headers) {
                self.buckets.pause(class, wait);
            }
        };
        let reply = self
            .envelope
            .exchange(rb, &req.http, req.http.writes(), |reply| {
                pace(&reply.headers);
                let request_id = reply.header("x-request-id");
                let failure = api_failure(reply.status, &reply.headers, &reply.body, request_id);
                in_flight(ProviderError::from_api(failure), &reply.body)
            })
            .await?;
        pace(&reply.headers);
        Ok(reply.body)
    }

    pub async fn json<T: DeserializeOwned>(&self, req: &Request<'_>) -> Result<T, ProviderError> {
        let body = self.send(req).await?;
        decode(req.http.route, &body)
    }

    /// Follows `nextCursor` to the end and returns every item.
    pub async fn list_all<T: DeserializeOwned>(
        &self,
        req: Request<'_>,
        limit: u32,
    ) -> Result<Vec<T>, ProviderError> {
        let mut items = Vec::new();
        self.list_each(req, limit, |item| items.push(item)).await?;
        Ok(items)
    }

    /// Follows `nextCursor` to the end, handing each item to `each` as its page arrives:
    /// a long listing is never held whole.
    pub async fn list_each<T: DeserializeOwned>(
        &self,
        req: Request<'_>,
        limit: u32,
        mut each: impl FnMut(T),
    ) -> Result<(), ProviderError> {
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let http = &req.http;
            let mut page_req = Request::new(http.method.clone(), http.route, http.path.clone());
            page_req.http.query = http.query.clone();
            page_req.org = req.org;
            page_req = page_req.query("limit", limit.to_string());
            if let Some(c) = &cursor {
                page_req = page_req.query("cursor", c.clone());
            }
            let page: Page<T> = self.json(&page_req).await?;
            page.items.into_iter().for_each(&mut each);
            match page.next_cursor.filter(|c| !c.is_empty()) {
                Some(next) if cursor.as_deref() == Some(next.as_str()) => {
                    return Err(ProviderError::Decode {
                        route: req.http.route.to_string(),
                        detail: "the API returned the same cursor twice".into(),
                    });
                }
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
        Err(ProviderError::Decode {
            route: req.http.route.to_string(),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }
}

/// When a response says the provider's bucket for its class is empty
/// (`X-RateLimit-Remaining: 0`), the time one token takes to come back
/// (`60 / X-RateLimit-Limit` seconds).
fn bucket_empty_for(headers: &HeaderMap) -> Option<Duration> {
    let remaining: u64 = header_str(headers, "x-ratelimit-remaining")?
        .trim()
        .parse()
        .ok()?;
    let per_minute: u64 = header_str(headers, "x-ratelimit-limit")?
        .trim()
        .parse()
        .ok()?;
    (remaining == 0 && per_minute > 0).then(|| Duration::from_secs_f64(60.0 / per_minute as f64))
}

/// A 409 `IDEMPOTENCY_CONFLICT` with `details.inFlight: true` is not a different body
/// under the key but the original request still executing (issue 28, row 3): re-sending
/// the same request later replays it.
fn in_flight(err: ProviderError, body: &[u8]) -> ProviderError {
    let ProviderError::IdempotencyConflict(f) = err else {
        return err;
    };
    let still_running = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .and_then(|e| e.error.details)
        .is_some_and(|d| d["inFlight"] == true);
    if still_running {
        ProviderError::InFlight(f)
    } else {
        ProviderError::IdempotencyConflict(f)
    }
}

pub(crate) fn api_failure(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    request_id: Option<String>,
) -> ApiFailure {
    let retry_after = header_str(headers, "retry-after").and_then(|v| parse_retry_after(&v));
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(env) => ApiFailure {
            status: status.as_u16(),
            code: if env.error.code.is_empty() {
                format!("HTTP_{}", status.as_u16())
            } else {
                env.error.code
            },
            message: env.error.message,
            request_id: env.error.request_id.or(request_id),
            retry_after,
        },
        // Not the documented envelope (e.g. a proxy's page): keep only the status.
        Err(_) => ApiFailure {
            status: status.as_u16(),
            code: format!("HTTP_{}", status.as_u16()),
            message: status.canonical_reason().unwrap_or("error").to_string(),
            request_id,
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn error_envelope_becomes_a_typed_error() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        let body = br#"{"error":{"code":"RATE_LIMITED","message":"slow down","requestId":"req_9","details":{}}}"#;
        let f = api_failure(StatusCode::TOO_MANY_REQUESTS, &h, body, None);
        let err = ProviderError::from_api(f);
        assert!(matches!(err, ProviderError::RateLimited(_)));
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(err.request_id(), Some("req_9"));
        assert_eq!(err.message(), "slow down");
    }

    #[test]
    fn non_envelope_error_keeps_only_the_status() {
        let f = api_failure(
            StatusCode::BAD_GATEWAY,
            &HeaderMap::new(),
            b"<html>lp_live_leak</html>",
            Some("req_1".into()),
        );
        assert_eq!(f.code, "HTTP_502");
        assert!(!f.message.contains("lp_live"));
        assert!(ProviderError::from_api(f).is_retryable());
    }

    #[test]
    fn an_in_flight_conflict_is_retried_a_body_conflict_is_not() {
        let h = HeaderMap::new();
        let body = br#"{"error":{"code":"IDEMPOTENCY_CONFLICT","message":"still in progress","details":{"inFlight":true}}}"#;
        let f = api_failure(StatusCode::CONFLICT, &h, body, None);
        let e = in_flight(ProviderError::from_api(f), body);
        assert!(matches!(e, ProviderError::InFlight(_)));
        assert!(e.is_retryable() && !e.needs_human());
        let body = br#"{"error":{"code":"IDEMPOTENCY_CONFLICT","message":"different body"}}"#;
        let f = api_failure(StatusCode::CONFLICT, &h, body, None);
        let e = in_flight(ProviderError::from_api(f), body);
        assert!(matches!(e, ProviderError::IdempotencyConflict(_)) && e.needs_human());
    }

    #[test]
    fn an_empty_provider_bucket_waits_one_refill() {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from_static("60"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("3"));
        assert_eq!(bucket_empty_for(&h), None);
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        assert_eq!(bucket_empty_for(&h), Some(Duration::from_secs(1)));
        assert_eq!(bucket_empty_for(&HeaderMap::new()), None);
    }

    #[test]
    fn only_idempotent_or_keyed_requests_are_retry_safe() {
        let key = IdempotencyKey("k".into());
        assert!(Request::new(Method::GET, "/r", "/r".into()).retry_safe());
        assert!(Request::new(Method::DELETE, "/r", "/r".into()).retry_safe());
        assert!(!Request::new(Method::POST, "/r", "/r".into()).retry_safe());
        assert!(!Request::new(Method::PATCH, "/r", "/r".into()).retry_safe());
        assert!(
            Request::new(Method::POST, "/r", "/r".into())
                .key(&key)
                .retry_safe()
        );
        assert!(
            Request::new(Method::POST, "/r", "/r".into())
                .idempotent_by_state()
                .retry_safe()
        );
    }
}
