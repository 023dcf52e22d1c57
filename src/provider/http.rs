//! The HTTP envelope the three provider clients share: one `reqwest` client with the
//! configured connect and request timeouts, one exchange (bounded concurrency, the leader
//! fence's stamp on every write, metrics, the span's status and request id, the request id
//! noted for the change log, a refusal classified by the provider's own decoder), and one
//! retry loop (re-sent only where the request is safe to repeat, with the policy's
//! backoff). What differs per provider stays in its client: authentication, how a
//! refusal's body reads, rate-limit buckets (Layers), token renewal (YouHodler).
//! Never logs headers or bodies (they can hold keys and secrets).

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::error::ProviderError;
use super::layers::retry::RetryPolicy;
use super::metrics::ProviderMetrics;

/// The span of one attempt of an [`Request`], named per provider (`layers_request`, ...):
/// method, route template, attempt, and the status and request id once known.
macro_rules! request_span {
    ($name:literal, $req:expr) => {
        |attempt: u32| {
            tracing::info_span!(
                $name,
                method = %$req.method,
                route = $req.route,
                attempt,
                status = tracing::field::Empty,
                request_id = tracing::field::Empty,
            )
        }
    };
}
pub(crate) use request_span;

/// The envelope's [`Settings`] from a provider's config: each config names the same knobs
/// (`base_url`, the timeouts, the retry policy's four, `metrics`, `fence`).
macro_rules! settings_of {
    ($cfg:expr, api_root: $root:expr, max_concurrency: $max:expr) => {
        $crate::provider::http::Settings {
            base_url: &$cfg.base_url,
            api_root: $root,
            connect_timeout: $cfg.connect_timeout,
            request_timeout: $cfg.request_timeout,
            policy: $crate::provider::layers::retry::RetryPolicy {
                max_attempts: $cfg.max_attempts,
                max_retry_time: $cfg.max_retry_time,
                base_delay: $cfg.retry_base_delay,
                max_delay: $cfg.retry_max_delay,
            },
            max_concurrency: $max,
            metrics: $cfg.metrics.clone(),
            fence: $cfg.fence.clone(),
        }
    };
}
pub(crate) use settings_of;

/// What a client's envelope is made from (each provider's config names the same knobs).
pub(crate) struct Settings<'a> {
    pub base_url: &'a str,
    /// Appended to the server's root (Gennia's `/public/api/v1`), or empty.
    pub api_root: &'a str,
    pub connect_timeout: Duration,
    /// Each request's timeout (`--provider-request-timeout`).
    pub request_timeout: Duration,
    pub policy: RetryPolicy,
    /// Requests in flight at once; `None`: unbounded (Layers paces by its buckets).
    pub max_concurrency: Option<usize>,
    pub metrics: Option<ProviderMetrics>,
    pub fence: Option<crate::fence::Fence>,
}

/// A provider client's HTTP envelope. Cheap to share inside the client.
pub(crate) struct Envelope {
    client: reqwest::Client,
    base: String,
    policy: RetryPolicy,
    permits: Option<Semaphore>,
    metrics: Option<ProviderMetrics>,
    fence: Option<crate::fence::Fence>,
}

/// What every provider's request has: built once, so every re-send carries the same bytes.
pub(crate) struct Request {
    pub method: Method,
    /// Route template, e.g. `/v1/organizations/:orgId` (metrics and logs).
    pub route: &'static str,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: Method, route: &'static str, path: String) -> Request {
        Request {
            method,
            route,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    pub fn json(mut self, body: &impl Serialize) -> Result<Request, ProviderError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Invalid(format!("request body of {}: {e}", self.route)))?;
        self.body = Some(bytes);
        Ok(self)
    }

    pub fn query(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.query.push((name, value.into()));
        self
    }

    /// A write: refused while the leader fence is closed (reads never are).
    pub fn writes(&self) -> bool {
        self.method != Method::GET
    }
}

/// One answer: its status, headers and body.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        header_str(&self.headers, name)
    }
}

/// One failed attempt, and whether the request may be sent again after it (the policy
/// still decides: a transient error, attempts and time left).
pub(crate) struct Failed {
    pub error: ProviderError,
    pub resend_safe: bool,
}

impl Failed {
    pub fn new(error: ProviderError, resend_safe: bool) -> Failed {
        Failed { error, resend_safe }
    }

    /// Given back as it is, never re-sent.
    pub fn fatal(error: ProviderError) -> Failed {
        Failed::new(error, false)
    }
}

impl Envelope {
    pub fn new(s: Settings<'_>) -> Result<Envelope, ProviderError> {
        let server = s.base_url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&server)
            .map_err(|e| ProviderError::Invalid(format!("base URL {server:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::Invalid(format!(
                "base URL {server:?} must be http or https"
            )));
        }
        if s.policy.max_attempts == 0 {
            return Err(ProviderError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        if s.max_concurrency == Some(0) {
            return Err(ProviderError::Invalid(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(s.connect_timeout)
            .timeout(s.request_timeout)
            .user_agent(concat!("orgops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Invalid(format!("HTTP client: {e}")))?;
        Ok(Envelope {
            client,
            base: format!("{server}{}", s.api_root),
            policy: s.policy,
            permits: s.max_concurrency.map(Semaphore::new),
            metrics: s.metrics,
            fence: s.fence,
        })
    }

    /// The server's root and API prefix (no trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn metrics(&self) -> Option<&ProviderMetrics> {
        self.metrics.as_ref()
    }

    /// `req` to send: its path under the base, its query, its JSON body.
    pub fn request(&self, req: &Request) -> RequestBuilder {
        let mut rb = self
            .client
            .request(req.method.clone(), format!("{}{}", self.base, req.path));
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        match &req.body {
            Some(body) => rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            None => rb,
        }
    }

    /// Sends `rb` once, inside the caller's span: `write` requests are refused while the
    /// leader fence is closed and stamped otherwise; the answer is timed into the metrics
    /// under `route`, its status and request id recorded on the span; a non-2xx answer
    /// becomes the error `refusal` reads from it.
    pub async fn exchange(
        &self,
        rb: RequestBuilder,
        req: &Request,
        write: bool,
        refusal: impl FnOnce(&Reply) -> ProviderError,
    ) -> Result<Reply, ProviderError> {
        // Held for the exchange only, not for a backoff sleep. The semaphore is never
        // closed, so acquiring cannot fail.
        let _permit = match &self.permits {
            Some(p) => p.acquire().await.ok(),
            None => None,
        };
        let rb = match (write, &self.fence, &req.body) {
            // The body checks the fence again when the connection asks for it, right before
            // its bytes go out: a replica frozen between the check above and the send (a GC
            // pause, SIGSTOP) sends nothing once it wakes past its window, only headers the
            // server discards with the aborted request.
            (true, Some(fence), Some(body)) => crate::fence::stamp(Some(fence), rb)?
                .header(reqwest::header::CONTENT_LENGTH, body.len())
                .body(fenced_body(body.clone(), fence.clone())),
            (true, _, _) => crate::fence::stamp(self.fence.as_ref(), rb)?,
            (false, _, _) => rb,
        };
        let start = Instant::now();
        let received = receive(rb).await;
        let label = match &received {
            Ok(reply) => reply.status.as_u16().to_string(),
            Err(_) => "error".to_string(),
        };
        if let Some(m) = &self.metrics {
            let took = start.elapsed().as_secs_f64();
            m.observe(req.route, req.method.as_str(), &label, took);
        }
        let span = tracing::Span::current();
        span.record("status", label.as_str());
        let reply = received.inspect_err(|e| {
            tracing::debug!(code = e.code(), "provider request failed");
        })?;
        if let Some(id) = reply.header("x-request-id") {
            span.record("request_id", id.as_str());
            crate::changelog::note_request_id(&id);
        }
        if reply.status.is_success() {
            tracing::debug!("provider request done");
            return Ok(reply);
        }
        let err = refusal(&reply);
        if let Some(id) = err.request_id() {
            span.record("request_id", id);
        }
        tracing::debug!(code = err.code(), "provider request refused");
        Err(err)
    }

    /// Runs `attempt` (numbered from 1) until it succeeds, or its failure must not or need
    /// not be re-sent: not safe to repeat, not transient, or out of attempts or time. The
    /// wait between attempts is the policy's backoff, never shorter than a `Retry-After`.
    /// Each attempt runs inside its own span (`span`, see [`request_span`]).
    pub async fn retrying<T, Fut>(
        &self,
        req: &Request,
        span: impl Fn(u32) -> tracing::Span,
        mut attempt: impl FnMut(u32) -> Fut,
    ) -> Result<T, ProviderError>
    where
        Fut: Future<Output = Result<T, Failed>>,
    {
        let started = Instant::now();
        let mut n = 1u32;
        loop {
            let Failed { error, resend_safe } = match attempt(n).instrument(span(n)).await {
                Ok(done) => return Ok(done),
                Err(failed) => failed,
            };
            let unit: f64 = rand::rng().random();
            let delay = self.policy.delay(n, error.retry_after(), unit);
            if !self
                .policy
                .should_retry(&error, resend_safe, n, started.elapsed(), delay)
            {
                return Err(error);
            }
            tracing::debug!(
                method = %req.method,
                route = req.route,
                attempt = n,
                code = error.code(),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retrying provider request"
            );
            if let Some(m) = &self.metrics {
                m.retried(req.route);
            }
            tokio::time::sleep(delay).await;
            n += 1;
        }
    }
}

/// A write's body that yields its bytes only while the fence is open (see `exchange`).
fn fenced_body(bytes: Vec<u8>, fence: crate::fence::Fence) -> reqwest::Body {
    let once = futures::stream::once(async move {
        fence
            .check()
            .map(|_| bytes)
            .map_err(|closed| std::io::Error::other(closed.to_string()))
    });
    reqwest::Body::wrap_stream(once)
}

async fn receive(rb: RequestBuilder) -> Result<Reply, ProviderError> {
    let resp = rb.send().await.map_err(transport)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(transport)?;
    Ok(Reply {
        status,
        headers,
        body: body.to_vec(),
    })
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

pub(crate) fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The longest `Retry-After` believed: a daily cap resets within a day; anything beyond a
/// week is taken as a week. (Was an hour: a daily cap's reset 23 hours away meant a
/// request an hour later and another 429, every hour; issue 28.)
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 86_400);

/// `Retry-After` in seconds (integer or decimal). HTTP dates are not used by the providers.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parsing() {
        assert_eq!(
            parse_retry_after("82800"),
            Some(Duration::from_secs(82_800)),
            "a daily cap's reset, 23 hours away, is believed"
        );
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
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
    fn bad_settings_are_refused() {
        let settings = |base_url, max_concurrency| Settings {
            base_url,
            api_root: "",
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            policy: RetryPolicy {
                max_attempts: 1,
                max_retry_time: Duration::from_secs(1),
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
            max_concurrency,
            metrics: None,
            fence: None,
        };
        assert!(Envelope::new(settings("http://127.0.0.1:1/", Some(1))).is_ok());
        assert!(Envelope::new(settings("ftp://x", None)).is_err());
        assert!(Envelope::new(settings("not a url", None)).is_err());
        assert!(Envelope::new(settings("http://127.0.0.1:1", Some(0))).is_err());
    }
}
