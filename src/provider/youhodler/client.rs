//! The YouHodler HTTP client: a bearer token shared by every caller (one refresh at a time),
//! one request with bounded concurrency, retries only where re-sending is safe, error
//! mapping, metrics and a tracing span; then the operations. Never logs headers or bodies
//! (the token request carries the client secret, every other one the token).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell, Semaphore};
use tracing::{Instrument, field::Empty};

use super::model::*;
use super::{YouhodlerConfig, is_precondition_failed, is_state_refusal, map_error, reason};
use crate::provider::error::{ApiFailure, ProviderError};
use crate::provider::layers::client::{decode, transport};
use crate::provider::layers::retry::RetryPolicy;
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::{IdempotencyKey, Secret};

const TOKEN_ROUTE: &str = "/oauth/token";
const ENTERPRISES_ROUTE: &str = "/enterprises";
const CLIENTS_ROUTE: &str = "/clients";
const CLIENT_ROUTE: &str = "/clients/:client_id";
/// The API's largest page.
const PAGE_SIZE: u32 = 100;
/// Hard stop for a page chain that never ends (a server bug must not loop forever).
const MAX_PAGES: usize = 10_000;
/// Re-reads after a 412 (stale `If-Match`) before giving up on a write.
pub const MAX_PRECONDITION_ROUNDS: u32 = 5;
/// A token is replaced when less than max(this, 10 % of its lifetime) remains (at most half
/// its lifetime, so a short-lived token is still used).
const MIN_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token answer has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The API's longest `Idempotency-Key` (simulator assumption 8).
const MAX_KEY_LEN: usize = 255;

/// One request, built once so that every re-send carries the same bytes.
struct Call<'a> {
    method: Method,
    /// Route template, e.g. `/clients/:client_id` (metrics and logs).
    route: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    key: Option<String>,
    if_match: Option<&'a str>,
    /// Sends the bearer token (all but the token request).
    bearer: bool,
    /// Safe to re-send after an answer that may hide a commit (5xx, transport, timeout): a
    /// GET, a PATCH with `If-Match`, a POST with an `Idempotency-Key`, the token request.
    resend_safe: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, route: &'static str, path: String) -> Call<'a> {
        Call {
            resend_safe: method == Method::GET,
            method,
            route,
            path,
            query: Vec::new(),
            body: None,
            key: None,
            if_match: None,
            bearer: true,
        }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Call<'a>, ProviderError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Invalid(format!("request body of {}: {e}", self.route)))?;
        self.body = Some(bytes);
        Ok(self)
    }

    fn key(mut self, key: String) -> Call<'a> {
        self.key = Some(key);
        self.resend_safe = true;
        self
    }

    /// `If-Match`; a PATCH carrying one cannot apply twice (the first changes the ETag).
    fn if_match(mut self, etag: &'a str) -> Call<'a> {
        if !etag.is_empty() {
            self.if_match = Some(etag);
            self.resend_safe |= self.method == Method::PATCH;
        }
        self
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Call<'a> {
        self.query.push((name, value.into()));
        self
    }
}

/// A 2xx answer.
struct Answer {
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    /// The body as a client, its ETag from the header when the body has none.
    fn client(&self, route: &str) -> Result<YhClient, ProviderError> {
        let mut c: YhClient = decode(route, &self.body)?;
        if c.etag.is_empty()
            && let Some(tag) = self.headers.get(ETAG).and_then(|v| v.to_str().ok())
        {
            c.etag = tag.to_string();
        }
        Ok(c)
    }
}

/// Which token a request needs.
#[derive(Clone, Copy, Debug)]
enum Need {
    /// The cached one while it is not due for refresh.
    Cached,
    /// Not the one of this generation: the API refused it.
    Replacing(u64),
    /// One issued after the call started (the health check proves the credentials now).
    Fresh,
}

struct CachedToken {
    value: Secret,
    generation: u64,
    refresh_at: Instant,
}

/// The token and what the last fetch said; behind one async mutex, so concurrent callers
/// share one refresh and the outcome of it.
#[derive(Default)]
struct TokenSlot {
    current: Option<CachedToken>,
    generations: u64,
    fetches: u64,
    /// The token endpoint's last 401, cleared by the next issued token.
    refused: Option<ApiFailure>,
}

/// A YouHodler client for one service account. Cheap to share behind an `Arc`.
pub struct YouhodlerClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: Secret,
    configured_enterprise: Option<String>,
    discovered_enterprise: OnceCell<String>,
    token: Mutex<TokenSlot>,
    /// Completed token fetches, readable without the lock.
    fetches_done: AtomicU64,
    policy: RetryPolicy,
    permits: Semaphore,
    metrics: Option<ProviderMetrics>,
}

impl YouhodlerClient {
    pub fn new(cfg: YouhodlerConfig) -> Result<YouhodlerClient, ProviderError> {
        let invalid = |what: String| Err(ProviderError::Invalid(what));
        let client_id = cfg.client_id.trim().to_string();
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return invalid(
                "the clientId of the credentials Secret is empty or not printable".into(),
            );
        }
        if cfg.client_secret.expose().trim().is_empty() {
            return invalid("the clientSecret of the credentials Secret is empty".into());
        }
        let configured_enterprise = match cfg.enterprise_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(id) if is_safe_id(id) => Some(id.to_string()),
            Some(id) => {
                return invalid(format!(
                    "spec.youhodler.enterpriseId {id:?} is not an enterprise id"
                ));
            }
        };
        if cfg.max_attempts == 0 || cfg.max_concurrency == 0 {
            return invalid("max_attempts and max_concurrency must be at least 1".into());
        }
        let (base, http) = http_client(&cfg)?;
        let policy = RetryPolicy {
            base_delay: cfg.retry_base_delay,
            max_delay: cfg.retry_max_delay,
            max_attempts: cfg.max_attempts,
            max_retry_time: cfg.max_retry_time,
        };
        Ok(YouhodlerClient {
            http,
            base,
            client_id,
            client_secret: cfg.client_secret,
            configured_enterprise,
            discovered_enterprise: OnceCell::new(),
            token: Mutex::new(TokenSlot::default()),
            fetches_done: AtomicU64::new(0),
            policy,
            permits: Semaphore::new(cfg.max_concurrency),
            metrics: cfg.metrics,
        })
    }

    // ---- operations ----

    /// Fetches a token (forced fresh) and resolves the enterprise: for the OrgProvider
    /// health check. Returns (client_id, enterprise_id). A configured enterprise that
    /// `GET /enterprises` does not list (when it lists any) is an error naming
    /// `spec.youhodler.enterpriseId`.
    pub async fn whoami(&self) -> Result<(String, String), ProviderError> {
        self.bearer(Need::Fresh).await?;
        let enterprise = match &self.configured_enterprise {
            None => self.enterprise_id().await?,
            Some(id) => {
                let listed = self.list_enterprises().await?;
                if !listed.is_empty() && !listed.iter().any(|e| e.id == *id) {
                    return Err(ProviderError::Invalid(format!(
                        "spec.youhodler.enterpriseId {id:?} is not among the enterprises service account {} sees ({})",
                        self.client_id,
                        ids(&listed)
                    )));
                }
                id.clone()
            }
        };
        Ok((self.client_id.clone(), enterprise))
    }

    /// The configured enterprise id, else the only one `GET /enterprises` lists (cached); an
    /// error naming `spec.youhodler.enterpriseId` when there are none or several.
    pub async fn enterprise_id(&self) -> Result<String, ProviderError> {
        if let Some(id) = &self.configured_enterprise {
            return Ok(id.clone());
        }
        self.discovered_enterprise
            .get_or_try_init(|| async {
                let listed = self.list_enterprises().await?;
                match listed.as_slice() {
                    [one] if is_safe_id(&one.id) => Ok(one.id.clone()),
                    [one] => Err(ProviderError::Decode {
                        route: ENTERPRISES_ROUTE.into(),
                        detail: format!("enterprise id {:?} is not an id", one.id),
                    }),
                    [] => Err(ProviderError::Invalid(format!(
                        "service account {} sees no enterprise: set spec.youhodler.enterpriseId",
                        self.client_id
                    ))),
                    many => Err(ProviderError::Invalid(format!(
                        "service account {} sees {} enterprises ({}): set spec.youhodler.enterpriseId to one of them",
                        self.client_id,
                        many.len(),
                        ids(many)
                    ))),
                }
            })
            .await
            .cloned()
    }

    /// Every enterprise `GET /enterprises` lists (all pages).
    pub async fn list_enterprises(&self) -> Result<Vec<Enterprise>, ProviderError> {
        self.all_pages(ENTERPRISES_ROUTE, &[]).await
    }

    /// `GET /clients/{id}`; `Ok(None)` on 404 (not on a 404 for the route itself).
    pub async fn get_client(&self, id: &str) -> Result<Option<YhClient>, ProviderError> {
        match self.read_client(id).await {
            Ok(c) => Ok(Some(c)),
            Err(e)
                if e.is_not_found()
                    && !matches!(reason(&e), Some("route_not_found" | "enterprise_not_found")) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Every client (all pages), oldest first; with `external_id`, only those carrying it
    /// (filtered by the API and checked again here).
    pub async fn list_clients(
        &self,
        external_id: Option<&str>,
    ) -> Result<Vec<YhClient>, ProviderError> {
        let filter: Vec<(&'static str, String)> = external_id
            .map(|e| vec![("external_id", e.to_string())])
            .unwrap_or_default();
        let mut clients: Vec<YhClient> = self.all_pages(CLIENTS_ROUTE, &filter).await?;
        if let Some(e) = external_id {
            clients.retain(|c| c.external_id.as_deref() == Some(e));
        }
        Ok(clients)
    }

    /// Every client (all pages), handed to `each` page by page.
    pub async fn each_client(&self, each: impl FnMut(YhClient)) -> Result<(), ProviderError> {
        self.each_item(CLIENTS_ROUTE, &[], each).await
    }

    /// `POST /clients` with `Idempotency-Key: key`; a transient failure is re-sent with the
    /// same key, so the client is created once. 409 `external_id_taken` is
    /// [`ProviderError::Conflict`] (see [`is_external_id_taken`](super::is_external_id_taken));
    /// nothing is adopted here.
    pub async fn create_client(
        &self,
        new: &NewClient,
        key: &IdempotencyKey,
    ) -> Result<YhClient, ProviderError> {
        if new.display_name.trim().is_empty() {
            return Err(ProviderError::Invalid(
                "a client needs a non-empty display_name".into(),
            ));
        }
        let key = checked_key(key)?;
        let body = CreateBody {
            display_name: &new.display_name,
            scope_ref: format!("enterprises/{}", self.enterprise_id().await?),
            external_id: new.external_id.as_deref(),
            metadata: &new.metadata,
        };
        let call = Call::new(Method::POST, CLIENTS_ROUTE, CLIENTS_ROUTE.into())
            .json(&body)?
            .key(key.to_string());
        self.send(&call).await?.client(CLIENTS_ROUTE)
    }

    /// Brings the client to `patch`: reads it (for the ETag); returns it unchanged, with no
    /// PATCH, when it already matches; else PATCHes with `If-Match`. A 412 re-reads,
    /// re-checks and retries, at most [`MAX_PRECONDITION_ROUNDS`] times, then
    /// [`ProviderError::Conflict`]. A 2xx whose body does not show the change is an error.
    pub async fn patch_client(
        &self,
        id: &str,
        patch: &ClientPatch,
    ) -> Result<YhClient, ProviderError> {
        let path = client_path(id, "")?;
        if patch
            .display_name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(ProviderError::Invalid(
                "display_name cannot be empty".into(),
            ));
        }
        for round in 1..=MAX_PRECONDITION_ROUNDS {
            let current = self.read_client(id).await?;
            if patch.is_satisfied_by(&current) {
                return Ok(current);
            }
            if current.etag.is_empty() {
                return Err(ProviderError::Decode {
                    route: CLIENT_ROUTE.into(),
                    detail: "the client has no etag to send as If-Match".into(),
                });
            }
            let call = Call::new(Method::PATCH, CLIENT_ROUTE, path.clone())
                .json(patch)?
                .if_match(&current.etag);
            let err = match self.send(&call).await.and_then(|a| a.client(CLIENT_ROUTE)) {
                Ok(updated) if patch.is_satisfied_by(&updated) => return Ok(updated),
                Ok(updated) => return Err(not_applied(200, "PATCH", id, &updated)),
                Err(e) => e,
            };
            if !is_precondition_failed(&err) {
                return Err(err);
            }
            tracing::debug!(
                round,
                "PATCH refused on a stale ETag; reading the client again"
            );
        }
        Err(etag_kept_changing(id, "PATCH"))
    }

    /// `POST /clients/{id}/suspend {reason}` with `If-Match` from a fresh read and an
    /// `Idempotency-Key` derived from `key`, that ETag and this call (see [`scoped_key`]). Already
    /// suspended at the read: no POST. 409 `state_conflict` or 422 counts as success when a
    /// re-read shows the client suspended. 412: re-read and retry (bounded).
    pub async fn suspend_client(
        &self,
        id: &str,
        reason: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<YhClient, ProviderError> {
        self.transition(id, reason, key, Transition::Suspend).await
    }

    /// `POST /clients/{id}/reactivate {reason}`: the mirror image of
    /// [`suspend_client`](Self::suspend_client); already active is success.
    pub async fn reactivate_client(
        &self,
        id: &str,
        reason: Option<&str>,
        key: &IdempotencyKey,
    ) -> Result<YhClient, ProviderError> {
        self.transition(id, reason, key, Transition::Reactivate)
            .await
    }

    async fn read_client(&self, id: &str) -> Result<YhClient, ProviderError> {
        let call = Call::new(Method::GET, CLIENT_ROUTE, client_path(id, "")?);
        self.send(&call).await?.client(CLIENT_ROUTE)
    }

    async fn transition(
        &self,
        id: &str,
        reason: Option<&str>,
        key: &IdempotencyKey,
        to: Transition,
    ) -> Result<YhClient, ProviderError> {
        let path = client_path(id, to.verb())?;
        checked_key(key)?;
        let body = TransitionBody { reason };
        let call_tag: u32 = rand::rng().random();
        for round in 1..=MAX_PRECONDITION_ROUNDS {
            let current = self.read_client(id).await?;
            if to.reached(&current) {
                return Ok(current);
            }
            let call = Call::new(Method::POST, to.route(), path.clone())
                .json(&body)?
                .key(scoped_key(key, &current.etag, call_tag))
                .if_match(&current.etag);
            let err = match self.send(&call).await.and_then(|a| a.client(to.route())) {
                Ok(c) if to.reached(&c) => return Ok(c),
                // A 2xx whose body does not show the move (the docs' own example does not):
                // the client as it is now decides.
                Ok(answered) => {
                    let now = self.read_client(id).await?;
                    return if to.reached(&now) {
                        Ok(now)
                    } else {
                        Err(not_applied(201, to.verb(), id, &answered))
                    };
                }
                Err(e) => e,
            };
            if is_precondition_failed(&err) {
                tracing::debug!(
                    round,
                    action = to.verb(),
                    "refused on a stale ETag; reading the client again"
                );
                continue;
            }
            if is_state_refusal(&err) {
                let now = self.read_client(id).await?;
                if to.reached(&now) {
                    tracing::debug!(
                        action = to.verb(),
                        code = err.code(),
                        "refused, but the client is already there"
                    );
                    return Ok(now);
                }
            }
            return Err(err);
        }
        Err(etag_kept_changing(id, to.verb()))
    }

    /// Follows `next_page_token` to the end (`page_size` at the API's maximum).
    async fn all_pages<T: DeserializeOwned + HasId>(
        &self,
        route: &'static str,
        filter: &[(&'static str, String)],
    ) -> Result<Vec<T>, ProviderError> {
        let mut items = Vec::new();
        self.each_item(route, filter, |item| items.push(item))
            .await?;
        Ok(items)
    }

    /// Follows `next_page_token` to the end, handing each item (once, by id) to `each` as
    /// its page arrives: a long listing is never held whole.
    async fn each_item<T: DeserializeOwned + HasId>(
        &self,
        route: &'static str,
        filter: &[(&'static str, String)],
        mut each: impl FnMut(T),
    ) -> Result<(), ProviderError> {
        let mut seen = HashSet::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut call = Call::new(Method::GET, route, route.into())
                .query("page_size", PAGE_SIZE.to_string());
            call.query.extend(filter.iter().cloned());
            if let Some(t) = &token {
                call = call.query("page_token", t.clone());
            }
            let page: Page<T> = decode(route, &self.send(&call).await?.body)?;
            page.items
                .into_iter()
                .filter(|item| seen.insert(item.id().to_string()))
                .for_each(&mut each);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(ProviderError::Decode {
                        route: route.into(),
                        detail: "the API returned the same page token twice".into(),
                    });
                }
                Some(next) => token = Some(next),
                None => return Ok(()),
            }
        }
        Err(ProviderError::Decode {
            route: route.into(),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    // ---- token ----

    /// A bearer token and its generation. Callers queue on one lock: whoever finds the token
    /// due fetches it, the others use that one (or get that refusal) — one request, however
    /// many callers.
    async fn bearer(&self, need: Need) -> Result<(Secret, u64), ProviderError> {
        let seen = self.fetches_done.load(Ordering::Acquire);
        let mut slot = self.token.lock().await;
        let fetched_meanwhile = slot.fetches > seen;
        if let Some(t) = &slot.current {
            let fresh_enough = Instant::now() < t.refresh_at;
            let usable = match need {
                Need::Cached => fresh_enough,
                Need::Replacing(refused) => t.generation != refused && fresh_enough,
                Need::Fresh => fetched_meanwhile,
            };
            if usable {
                return Ok((t.value.clone(), t.generation));
            }
        }
        if fetched_meanwhile && let Some(f) = &slot.refused {
            return Err(ProviderError::Unauthenticated(f.clone()));
        }
        // Boxed: the token request goes through `send`, which calls here.
        let outcome = Box::pin(self.fetch_token()).await;
        slot.fetches += 1;
        self.fetches_done.store(slot.fetches, Ordering::Release);
        match outcome {
            Ok(t) => {
                slot.generations += 1;
                let generation = slot.generations;
                slot.current = Some(CachedToken {
                    value: t.0.clone(),
                    generation,
                    refresh_at: t.1,
                });
                slot.refused = None;
                Ok((t.0, generation))
            }
            Err(e) => {
                if let ProviderError::Unauthenticated(f) = &e {
                    slot.current = None;
                    slot.refused = Some(f.clone());
                }
                Err(e)
            }
        }
    }

    /// `POST /oauth/token` (client credentials): the token and when to replace it.
    async fn fetch_token(&self) -> Result<(Secret, Instant), ProviderError> {
        let asked_at = Instant::now();
        let mut call =
            Call::new(Method::POST, TOKEN_ROUTE, TOKEN_ROUTE.into()).json(&TokenRequest {
                client_id: &self.client_id,
                client_secret: self.client_secret.expose(),
                grant_type: "client_credentials",
            })?;
        call.bearer = false;
        // Issuing a token changes nothing the caller relies on: always safe to re-send.
        call.resend_safe = true;
        let answer = match self.send(&call).await {
            Ok(a) => a,
            Err(ProviderError::Unauthenticated(mut f)) => {
                f.message = format!(
                    "the client secret was refused: check the credentials Secret's clientId/clientSecret (service account {}; {})",
                    self.client_id, f.message
                );
                return Err(ProviderError::Unauthenticated(f));
            }
            Err(e) => return Err(e),
        };
        let t: TokenResponse = decode(TOKEN_ROUTE, &answer.body)?;
        if t.access_token.expose().is_empty()
            || t.token_type
                .as_deref()
                .is_some_and(|k| !k.eq_ignore_ascii_case("bearer"))
        {
            return Err(ProviderError::Decode {
                route: TOKEN_ROUTE.into(),
                detail: "the token answer has no bearer access_token".into(),
            });
        }
        let lifetime = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let margin = MIN_REFRESH_MARGIN.max(lifetime / 10).min(lifetime / 2);
        tracing::debug!(expires_in_s = lifetime.as_secs(), "access token issued");
        Ok((t.access_token, asked_at + lifetime - margin))
    }

    // ---- HTTP core ----

    /// Sends `call` with a bearer token (fetched or refreshed as needed). A 401 fetches a
    /// new token and re-sends once. Transient failures (5xx, transport, timeout) are
    /// re-sent with backoff when that is safe; a 429 is re-sent after its
    /// `retry_after_ms`.
    async fn send(&self, call: &Call<'_>) -> Result<Answer, ProviderError> {
        let started = Instant::now();
        let mut attempt = 1u32;
        let mut need = Need::Cached;
        let mut renewed = false;
        loop {
            let token = match call.bearer {
                true => Some(
                    self.bearer(std::mem::replace(&mut need, Need::Cached))
                        .await?,
                ),
                false => None,
            };
            let span = tracing::info_span!(
                "youhodler_request",
                method = %call.method,
                route = call.route,
                attempt,
                status = Empty,
                request_id = Empty,
            );
            let secret = token.as_ref().map(|t| &t.0);
            let err = match self.exchange(call, secret).instrument(span).await {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            if let (ProviderError::Unauthenticated(f), Some((_, generation))) = (&err, &token) {
                if !renewed {
                    // Expired or revoked since it was cached: one new token, one re-send
                    // (a 401 means the request was not executed).
                    tracing::debug!(route = call.route, "access token refused; renewing it");
                    renewed = true;
                    need = Need::Replacing(*generation);
                    continue;
                }
                let mut f = f.clone();
                f.message = format!(
                    "{} (a newly issued access token was refused too)",
                    f.message
                );
                return Err(ProviderError::Unauthenticated(f));
            }
            self.backoff(call, err, attempt, started).await?;
            attempt += 1;
        }
    }

    /// Waits before `call` is sent again after `err`; gives `err` back instead when it must
    /// not be re-sent (not transient, not safe to repeat, or out of attempts or time). A 429
    /// was not executed, so even a request that is not safe to repeat may be sent again.
    async fn backoff(
        &self,
        call: &Call<'_>,
        err: ProviderError,
        attempt: u32,
        started: Instant,
    ) -> Result<(), ProviderError> {
        let delay = self
            .policy
            .delay(attempt, err.retry_after(), rand::rng().random());
        let safe = call.resend_safe || matches!(err, ProviderError::RateLimited(_));
        if !self
            .policy
            .should_retry(&err, safe, attempt, started.elapsed(), delay)
        {
            return Err(err);
        }
        if let Some(m) = &self.metrics {
            m.retried(call.route);
        }
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(
            route = call.route,
            attempt,
            code = err.code(),
            delay_ms,
            "re-sending after a transient failure"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// One request and its answer; a refusal as a [`ProviderError`].
    async fn exchange(
        &self,
        call: &Call<'_>,
        token: Option<&Secret>,
    ) -> Result<Answer, ProviderError> {
        // Held for the exchange only, not for a backoff sleep. The semaphore is never
        // closed, so acquiring cannot fail.
        let _permit = self.permits.acquire().await.ok();
        let mut rb = self
            .http
            .request(call.method.clone(), format!("{}{}", self.base, call.path))
            .query(&call.query);
        if let Some(t) = token {
            rb = rb.bearer_auth(t.expose());
        }
        if let Some(k) = &call.key {
            rb = rb.header("Idempotency-Key", k.as_str());
        }
        if let Some(tag) = call.if_match {
            rb = rb.header("If-Match", tag);
        }
        if let Some(body) = &call.body {
            rb = rb
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let start = Instant::now();
        let received = async {
            let resp = rb.send().await.map_err(transport)?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(transport)?;
            Ok::<_, ProviderError>((status, headers, body.to_vec()))
        }
        .await;
        self.record(call, received.as_ref().ok().map(|r| r.0), start.elapsed());
        let (status, headers, body) = received.inspect_err(|e| {
            tracing::debug!(code = e.code(), "request failed");
        })?;
        if status.is_success() {
            return Ok(Answer { headers, body });
        }
        let redact = [
            self.client_secret.expose(),
            token.map(Secret::expose).unwrap_or_default(),
        ];
        let err = map_error(status, &headers, &body, &redact);
        if let Some(id) = err.request_id() {
            tracing::Span::current().record("request_id", id);
        }
        tracing::debug!(code = err.code(), "request refused");
        Err(err)
    }

    /// Metrics and the span's status for one exchange (`None`: no answer).
    fn record(&self, call: &Call<'_>, status: Option<StatusCode>, took: Duration) {
        let label = status.map_or_else(|| "error".to_string(), |s| s.as_u16().to_string());
        tracing::Span::current().record("status", label.as_str());
        if let Some(m) = &self.metrics {
            m.observe(call.route, call.method.as_str(), &label, took.as_secs_f64());
        }
    }
}

/// Names the service account and the server; never the secret or a token.
impl fmt::Debug for YouhodlerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouhodlerClient")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("enterprise_id", &self.configured_enterprise)
            .finish_non_exhaustive()
    }
}

/// The server's root (no trailing `/`) and an HTTP client with the configured timeouts.
fn http_client(cfg: &YouhodlerConfig) -> Result<(String, reqwest::Client), ProviderError> {
    let base = cfg.base_url.trim_end_matches('/');
    if !url::Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
        return Err(ProviderError::Invalid(format!(
            "base URL {base:?} is not an http(s) URL"
        )));
    }
    reqwest::Client::builder()
        .user_agent(concat!("orgops/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(cfg.connect_timeout)
        .timeout(cfg.request_timeout)
        .build()
        .map(|http| (base.to_string(), http))
        .map_err(|e| ProviderError::Invalid(format!("HTTP client: {e}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transition {
    Suspend,
    Reactivate,
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Transition::Suspend => "suspend",
            Transition::Reactivate => "reactivate",
        }
    }

    fn route(self) -> &'static str {
        match self {
            Transition::Suspend => "/clients/:client_id/suspend",
            Transition::Reactivate => "/clients/:client_id/reactivate",
        }
    }

    fn reached(self, c: &YhClient) -> bool {
        match self {
            Transition::Suspend => c.is_suspended(),
            Transition::Reactivate => c.is_active(),
        }
    }
}

/// List rows deduplicated across pages by id.
trait HasId {
    fn id(&self) -> &str;
}

impl HasId for YhClient {
    fn id(&self) -> &str {
        &self.id
    }
}

impl HasId for Enterprise {
    fn id(&self) -> &str {
        &self.id
    }
}

fn ids(enterprises: &[Enterprise]) -> String {
    enterprises
        .iter()
        .map(|e| e.id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Ids go into paths: the API's are UUIDs; anything else is refused before sending.
fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `/clients/{id}` or `/clients/{id}/{action}`, with `id` checked first.
fn client_path(id: &str, action: &str) -> Result<String, ProviderError> {
    if !is_safe_id(id) {
        return Err(ProviderError::Invalid(format!(
            "{id:?} is not a YouHodler client id"
        )));
    }
    Ok(match action {
        "" => format!("/clients/{id}"),
        a => format!("/clients/{id}/{a}"),
    })
}

/// The API takes keys of 1 to 255 printable characters.
fn checked_key(key: &IdempotencyKey) -> Result<&str, ProviderError> {
    let k = key.as_str();
    if k.is_empty() || k.len() > MAX_KEY_LEN || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProviderError::Invalid(format!(
            "idempotency key {k:?} must be 1 to {MAX_KEY_LEN} printable characters"
        )));
    }
    Ok(k)
}

/// The `Idempotency-Key` of one lifecycle POST: the caller's key, the ETag the POST is
/// conditional on and `call` (one random number per `suspend_client`/`reactivate_client`
/// call). The API stores refusals (4xx) under a key too, and the key's fingerprint covers
/// neither `If-Match` nor why a refusal happened; with the bare key
/// - after a 412 the next try (a new ETag) would get the stored 412 back, for good;
/// - a suspend after a reactivate would get the first suspend's stored "success";
/// - a suspend refused while approvals were pending (422, which does not change the ETag)
///   would be refused again from the store after they are settled, for the key's 24 h.
///
/// Re-sends of one POST inside one call keep their key, so a lost answer is replayed, not
/// applied twice. Across calls the fresh read (already there: no POST) and `If-Match` (the
/// first commit changes the ETag) keep a transition from applying twice.
pub fn scoped_key(key: &IdempotencyKey, etag: &str, call: u32) -> String {
    let tag: String = etag
        .trim()
        .trim_start_matches("W/")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    let suffix = format!("{tag}.{call:08x}");
    let base = key.as_str();
    if base.len() + 1 + suffix.len() <= MAX_KEY_LEN {
        format!("{base}.{suffix}")
    } else {
        format!("{}.{suffix}", &hex::encode(Sha256::digest(base))[..32])
    }
}

/// A 2xx whose client does not show what the request asked for.
fn not_applied(status: u16, action: &str, id: &str, answered: &YhClient) -> ProviderError {
    ProviderError::Unexpected(ApiFailure {
        status,
        code: "change_not_applied".into(),
        message: format!(
            "{action} of client {id} answered {status} but the client does not show the change (status {:?}, etag {})",
            answered.status, answered.etag
        ),
        request_id: None,
        retry_after: None,
    })
}

fn etag_kept_changing(id: &str, action: &str) -> ProviderError {
    ProviderError::Conflict(ApiFailure {
        status: 412,
        code: "precondition_failed".into(),
        message: format!(
            "{action} of client {id}: the ETag kept changing ({MAX_PRECONDITION_ROUNDS} reads, each stale by the write); something else keeps writing this client"
        ),
        request_id: None,
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys_are_checked_before_sending() {
        assert_eq!(
            client_path("9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21", "suspend").unwrap(),
            "/clients/9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21/suspend"
        );
        for bad in ["", "../x", "a/b", "a?b", &"x".repeat(129)] {
            assert!(client_path(bad, "").is_err(), "{bad}");
        }
        assert!(checked_key(&IdempotencyKey("k-1".into())).is_ok());
        assert!(checked_key(&IdempotencyKey("".into())).is_err());
        assert!(checked_key(&IdempotencyKey("a b".into())).is_err());
        assert!(checked_key(&IdempotencyKey("x".repeat(256))).is_err());
    }

    #[test]
    fn lifecycle_keys_are_scoped_by_etag_and_call() {
        let k = IdempotencyKey("orgops-suspend-1".into());
        assert_eq!(
            scoped_key(&k, "W/\"a1b2c3d4\"", 0xbeef),
            "orgops-suspend-1.a1b2c3d4.0000beef"
        );
        assert_eq!(
            scoped_key(&k, "\"a1b2c3d4\"", 1),
            scoped_key(&k, "W/\"a1b2c3d4\"", 1)
        );
        assert_ne!(scoped_key(&k, "W/\"a1\"", 1), scoped_key(&k, "W/\"a2\"", 1));
        assert_ne!(scoped_key(&k, "W/\"a1\"", 1), scoped_key(&k, "W/\"a1\"", 2));
        assert_eq!(scoped_key(&k, "", 1), "orgops-suspend-1..00000001");
        let long = IdempotencyKey("k".repeat(250));
        let scoped = scoped_key(&long, "W/\"a1b2c3d4\"", 7);
        assert!(scoped.len() <= MAX_KEY_LEN && scoped.ends_with(".a1b2c3d4.00000007"));
        assert_eq!(scoped, scoped_key(&long, "W/\"a1b2c3d4\"", 7), "stable");
        assert!(checked_key(&IdempotencyKey(scoped)).is_ok());
    }

    #[test]
    fn only_safe_requests_are_resent() {
        assert!(Call::new(Method::GET, "/r", "/r".into()).resend_safe);
        assert!(!Call::new(Method::POST, "/r", "/r".into()).resend_safe);
        assert!(
            Call::new(Method::POST, "/r", "/r".into())
                .key("k".into())
                .resend_safe
        );
        assert!(!Call::new(Method::PATCH, "/r", "/r".into()).resend_safe);
        assert!(
            Call::new(Method::PATCH, "/r", "/r".into())
                .if_match("W/\"1\"")
                .resend_safe
        );
        assert!(
            !Call::new(Method::POST, "/r", "/r".into())
                .if_match("W/\"1\"")
                .resend_safe
        );
    }

    #[test]
    fn client_debug_shows_no_secret() {
        let cfg = YouhodlerConfig::new("http://127.0.0.1:1", "sa_1", Secret::new("supersecret"));
        let c = YouhodlerClient::new(cfg).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("supersecret") && shown.contains("sa_1"),
            "{shown}"
        );
    }

    #[test]
    fn bad_configurations_are_refused() {
        let ok = || YouhodlerConfig::new("http://127.0.0.1:1", "sa_1", Secret::new("s"));
        assert!(YouhodlerClient::new(ok()).is_ok());
        let mut c = ok();
        c.base_url = "ftp://x".into();
        assert!(YouhodlerClient::new(c).is_err());
        let mut c = ok();
        c.client_secret = Secret::new(" ");
        assert!(YouhodlerClient::new(c).is_err());
        let mut c = ok();
        c.enterprise_id = Some("enterprises/../x".into());
        let err = YouhodlerClient::new(c).unwrap_err();
        assert!(
            err.to_string().contains("spec.youhodler.enterpriseId"),
            "{err}"
        );
        let mut c = ok();
        c.max_attempts = 0;
        assert!(YouhodlerClient::new(c).is_err());
    }
}
