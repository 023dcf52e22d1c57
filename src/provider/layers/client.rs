//! HTTP core: one request with rate limiting, retries, error mapping, metrics and a
//! tracing span. Never logs headers or bodies (they can hold keys and secrets).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::de::DeserializeOwned;
use tracing::{Instrument, field::Empty};

use super::LayersConfig;
use super::model::{ErrorEnvelope, Page};
use super::ratelimit::{Buckets, Class};
use super::retry::RetryPolicy;
use crate::provider::error::{ApiFailure, ProviderError};
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::{IdempotencyKey, Secret};

/// Hard stop for a cursor chain that never ends (a server bug must not loop forever).
const MAX_PAGES: usize = 10_000;

pub(crate) struct Request<'a> {
    pub method: Method,
    /// Route template, e.g. `/v1/organizations/:orgId` (metrics and logs).
    pub route: &'static str,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    /// Serialised once so every retry sends the same bytes (idempotency fingerprint).
    pub body: Option<Vec<u8>>,
    pub key: Option<&'a IdempotencyKey>,
    /// Idempotent by method (GET, DELETE) or by state (suspend, resume).
    pub idempotent: bool,
    /// `X-Layers-Organization`: act inside this child with the parent key.
    pub org: Option<&'a str>,
}

impl<'a> Request<'a> {
    pub fn new(method: Method, route: &'static str, path: String) -> Request<'a> {
        let idempotent = method == Method::GET || method == Method::DELETE;
        Request {
            method,
            route,
            path,
            query: Vec::new(),
            body: None,
            key: None,
            idempotent,
            org: None,
        }
    }

    pub fn json(mut self, body: &serde_json::Value) -> Request<'a> {
        // Serialising a Value cannot fail.
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
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
        self.query.push((name, value.into()));
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
    client: reqwest::Client,
    base: String,
    api_key: Secret,
    buckets: Arc<Buckets>,
    policy: RetryPolicy,
    metrics: Option<ProviderMetrics>,
}

impl Http {
    pub fn new(cfg: &LayersConfig, buckets: Arc<Buckets>) -> Result<Http, ProviderError> {
        let base = cfg.base_url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base)
            .map_err(|e| ProviderError::Invalid(format!("base URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::Invalid(format!(
                "base URL {base:?} must be http or https"
            )));
        }
        if cfg.api_key.expose().is_empty() {
            return Err(ProviderError::Invalid("the API key is empty".into()));
        }
        if cfg.max_attempts == 0 {
            return Err(ProviderError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("orgops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Http {
            client,
            base,
            api_key: cfg.api_key.clone(),
            buckets,
            policy: RetryPolicy {
                max_attempts: cfg.max_attempts,
                max_retry_time: cfg.max_retry_time,
                base_delay: cfg.retry_base_delay,
                max_delay: cfg.retry_max_delay,
            },
            metrics: cfg.metrics.clone(),
        })
    }

    /// Sends `req`, re-sending it after transient failures only when that is safe.
    pub async fn send(&self, req: &Request<'_>) -> Result<Vec<u8>, ProviderError> {
        let class = Class::of(&req.method);
        let started = Instant::now();
        let mut attempt = 1u32;
        loop {
            let span = tracing::info_span!(
                "layers_request",
                method = %req.method,
                route = req.route,
                attempt,
                status = Empty,
                request_id = Empty,
            );
            let result = self.attempt(req, class).instrument(span).await;
            let err = match result {
                Ok(body) => return Ok(body),
                Err(err) => err,
            };
            if let ProviderError::RateLimited(f) = &err {
                // Everyone using this class waits, not just this caller.
                let pause = f.retry_after.unwrap_or(Duration::from_secs(1));
                self.buckets.pause(class, pause);
            }
            let unit: f64 = rand::rng().random();
            let delay = self.policy.delay(attempt, err.retry_after(), unit);
            if !self
                .policy
                .should_retry(&err, req.retry_safe(), attempt, started.elapsed(), delay)
            {
                return Err(err);
            }
            tracing::debug!(
                method = %req.method,
                route = req.route,
                attempt,
                code = err.code(),
                delay_ms = delay.as_millis() as u64,
                "retrying provider request"
            );
            if let Some(m) = &self.metrics {
                m.retried(req.route);
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
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
        if let Some(m) = &self.metrics {
            m.rate_limit_wait.observe(waited.as_secs_f64());
        }
        let mut rb = self
            .client
            .request(req.method.clone(), format!("{}{}", self.base, req.path))
            .bearer_auth(self.api_key.expose());
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(key) = req.key {
            rb = rb.header("Idempotency-Key", key.as_str());
        }
        if let Some(org) = req.org {
            rb = rb.header("X-Layers-Organization", org);
        }
        rb = match &req.body {
            Some(body) => rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            None => rb,
        };
        let start = Instant::now();
        let outcome = self.exchange(rb).await;
        let status_label = match &outcome {
            Ok((status, _, _)) => status.as_u16().to_string(),
            Err(_) => "error".to_string(),
        };
        if let Some(m) = &self.metrics {
            m.observe(
                req.route,
                req.method.as_str(),
                &status_label,
                start.elapsed().as_secs_f64(),
            );
        }
        let span = tracing::Span::current();
        span.record("status", status_label.as_str());
        let (status, headers, body) = match outcome {
            Ok(parts) => parts,
            Err(err) => {
                tracing::debug!(code = err.code(), "provider request failed");
                return Err(err);
            }
        };
        let request_id = header_str(&headers, "x-request-id");
        if let Some(id) = &request_id {
            span.record("request_id", id.as_str());
        }
        if status.is_success() {
            tracing::debug!("provider request done");
            return Ok(body);
        }
        let err = ProviderError::from_api(api_failure(status, &headers, &body, request_id));
        if let Some(id) = err.request_id() {
            span.record("request_id", id);
        }
        tracing::debug!(code = err.code(), "provider request refused");
        Err(err)
    }

    async fn exchange(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ProviderError> {
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(transport)?;
        Ok((status, headers, body.to_vec()))
    }

    pub async fn json<T: DeserializeOwned>(&self, req: &Request<'_>) -> Result<T, ProviderError> {
        let body = self.send(req).await?;
        decode(req.route, &body)
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
            let mut page_req = Request::new(req.method.clone(), req.route, req.path.clone());
            page_req.query = req.query.clone();
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
                        route: req.route.to_string(),
                        detail: "the API returned the same cursor twice".into(),
                    });
                }
                Some(next) => cursor = Some(next),
                None => return Ok(()),
            }
        }
        Err(ProviderError::Decode {
            route: req.route.to_string(),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }
}

/// Decodes a 2xx body. The error names only a position: serde messages can quote values,
/// and bodies can hold secrets.
pub(crate) fn decode<T: DeserializeOwned>(route: &str, body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body).map_err(|e| ProviderError::Decode {
        route: route.to_string(),
        detail: format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}

pub(crate) fn transport(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    // The cause chain says what failed (refused, reset, DNS); the URL adds nothing.
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::Transport(msg)
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Retry-After` in seconds (integer or decimal). HTTP dates are not used by Layers.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
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
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn decode_errors_never_quote_the_body() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            n: u64,
        }
        let err = decode::<S>("/r", br#"{"n":"whsec_topsecret"}"#).unwrap_err();
        assert!(!err.to_string().contains("whsec_topsecret"), "{err}");
        assert_eq!(err.code(), "DECODE");
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
