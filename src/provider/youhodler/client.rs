//! The YouHodler HTTP client: a bearer token shared by every caller (one refresh at a time),
//! one request with bounded concurrency, retries only where re-sending is safe, error
//! mapping, metrics and a tracing span; then the operations. Never logs headers or bodies
//! (the token request carries the client secret, every other one the token).

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::Method;
use reqwest::header::{ETAG, HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, OnceCell};

use super::model::*;
use super::{YouhodlerConfig, is_precondition_failed, is_state_refusal, map_error, reason};
use crate::provider::error::{ApiFailure, ProviderError};
use crate::provider::http::{self, Envelope, Failed, decode, request_span, settings_of};
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
/// The API's longest `Idempotency-Key` (simulator assumption 8).
const MAX_KEY_LEN: usize = 255;

/// One request, built once so that every re-send carries the same bytes.
struct Call<'a> {
    http: http::Request,
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
        let resend_safe = method == Method::GET;
        let http = http::Request::new(method, route, path);
        Call {
            http,
            key: None,
            if_match: None,
            bearer: true,
            resend_safe,
        }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Call<'a>, ProviderError> {
        self.http = self.http.json(body)?;
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
            self.resend_safe |= self.http.method == Method::PATCH;
        }
        self
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Call<'a> {
        self.http = self.http.query(name, value);
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

/// A YouHodler client for one service account. Cheap to share behind an `Arc`.
pub struct YouhodlerClient {
    envelope: Envelope,
    client_id: String,
    client_secret: Secret,
    configured_enterprise: Option<String>,
    discovered_enterprise: OnceCell<String>,
    token: Mutex<TokenSlot>,
    /// Completed token fetches, readable without the lock.
    fetches_done: AtomicU64,
    /// How this API pages, as learned from its answers (the docs do not say, issue 28).
    paging: Paging,
    /// PATCH merges `metadata` instead of replacing it: keys to remove are sent as `null`.
    metadata_merges: AtomicBool,
    /// Lifecycle changes the API accepted (2xx) without applying them yet, by client id:
    /// not asked for again while they are pending (issue 28, row 8).
    accepted: std::sync::Mutex<std::collections::HashMap<String, (Transition, Instant)>>,
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
        let envelope = Envelope::new(
            settings_of!(cfg, api_root: "", max_concurrency: Some(cfg.max_concurrency)),
        )?;
        Ok(YouhodlerClient {
            envelope,
            client_id,
            client_secret: cfg.client_secret,
            configured_enterprise,
            discovered_enterprise: OnceCell::new(),
            token: Mutex::new(TokenSlot::default()),
            fetches_done: AtomicU64::new(0),
            paging: Paging::default(),
            metadata_merges: AtomicBool::new(false),
            accepted: std::sync::Mutex::new(std::collections::HashMap::new()),
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
        self.patch_client_from(id, |_| Ok(patch.clone())).await
    }

    /// As [`patch_client`](Self::patch_client), with the patch built from each fresh read
    /// by `build`: after a 412 the retry is computed from the client as it is now, never
    /// re-sent as computed from the stale read (a whole metadata map merged from it would
    /// bring back what the other writer removed).
    pub async fn patch_client_from(
        &self,
        id: &str,
        build: impl Fn(&YhClient) -> Result<ClientPatch, ProviderError>,
    ) -> Result<YhClient, ProviderError> {
        let path = client_path(id, "")?;
        for round in 1..=MAX_PRECONDITION_ROUNDS {
            let current = self.read_client(id).await?;
            let patch = build(&current)?;
            if patch
                .display_name
                .as_ref()
                .is_some_and(|n| n.trim().is_empty())
            {
                return Err(ProviderError::Invalid(
                    "display_name cannot be empty".into(),
                ));
            }
            let patch = &patch;
            if patch.is_satisfied_by(&current) {
                return Ok(current);
            }
            if current.etag.is_empty() {
                return Err(ProviderError::Decode {
                    route: CLIENT_ROUTE.into(),
                    detail: "the client has no etag to send as If-Match".into(),
                });
            }
            let merges = self.metadata_merges.load(Ordering::Relaxed);
            let call = Call::new(Method::PATCH, CLIENT_ROUTE, path.clone())
                .json(&patch.to_send(&current, merges))?
                .if_match(&current.etag);
            let err = match self.send(&call).await.and_then(|a| a.client(CLIENT_ROUTE)) {
                Ok(updated) if patch.is_satisfied_by(&updated) => return Ok(updated),
                // Every key sent is there and only keys left out are too many: PATCH merges
                // the map (as Layers documents) instead of replacing it (issue 28, row 10).
                // The next round removes them the RFC 7396 way, `null`.
                Ok(updated) if !merges && patch.merged_into(&updated) => {
                    tracing::info!(
                        "PATCH kept metadata keys left out of the map sent: it merges; removing them with null"
                    );
                    self.metadata_merges.store(true, Ordering::Relaxed);
                    continue;
                }
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

    // ---- HTTP core ----

    /// Sends `call` with a bearer token (fetched or refreshed as needed). A 401 fetches a
    /// new token and re-sends once. Transient failures (5xx, transport, timeout) are
    /// re-sent with backoff when that is safe; a 429 was not executed, so even a request
    /// that is not safe to repeat is re-sent after its `retry_after_ms`.
    async fn send(&self, call: &Call<'_>) -> Result<Answer, ProviderError> {
        let renewed = AtomicBool::new(false);
        let span = request_span!("youhodler_request", call.http);
        let attempt = |_| self.authorized(call, &renewed);
        self.envelope.retrying(&call.http, span, attempt).await
    }

    /// One attempt with the current token; a refused token is renewed once per `send`
    /// (`renewed`) and the request re-sent in the same attempt (a 401 means the request
    /// was not executed).
    async fn authorized(&self, call: &Call<'_>, renewed: &AtomicBool) -> Result<Answer, Failed> {
        let mut need = Need::Cached;
        loop {
            let token = match call.bearer {
                true => Some(self.bearer(need).await.map_err(Failed::fatal)?),
                false => None,
            };
            let secret = token.as_ref().map(|t| &t.0);
            let err = match self.exchange(call, secret).await {
                Ok(answer) => return Ok(answer),
                Err(e) => e,
            };
            if let (ProviderError::Unauthenticated(f), Some((_, generation))) = (&err, &token) {
                if !renewed.swap(true, Ordering::Relaxed) {
                    // Expired or revoked since it was cached: one new token, one re-send.
                    tracing::debug!(route = call.http.route, "access token refused; renewing it");
                    need = Need::Replacing(*generation);
                    continue;
                }
                let mut f = f.clone();
                f.message = format!(
                    "{} (a newly issued access token was refused too)",
                    f.message
                );
                return Err(Failed::fatal(ProviderError::Unauthenticated(f)));
            }
            let safe = call.resend_safe || matches!(err, ProviderError::RateLimited(_));
            return Err(Failed::new(err, safe));
        }
    }

    /// One request and its answer; a refusal as a [`ProviderError`].
    async fn exchange(
        &self,
        call: &Call<'_>,
        token: Option<&Secret>,
    ) -> Result<Answer, ProviderError> {
        let mut rb = self.envelope.request(&call.http);
        if let Some(t) = token {
            rb = rb.bearer_auth(t.expose());
        }
        if let Some(k) = &call.key {
            rb = rb.header("Idempotency-Key", k.as_str());
        }
        if let Some(tag) = call.if_match {
            rb = rb.header("If-Match", tag);
        }
        // The token request changes nothing at YouHodler; every other non-GET does.
        let write = call.http.writes() && call.http.route != TOKEN_ROUTE;
        let redact = [
            self.client_secret.expose(),
            token.map(Secret::expose).unwrap_or_default(),
        ];
        let reply = self
            .envelope
            .exchange(rb, &call.http, write, |r| {
                map_error(r.status, &r.headers, &r.body, &redact)
            })
            .await?;
        Ok(Answer {
            headers: reply.headers,
            body: reply.body,
        })
    }
}

/// Names the service account and the server; never the secret or a token.
impl fmt::Debug for YouhodlerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YouhodlerClient")
            .field("base", &self.envelope.base())
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("enterprise_id", &self.configured_enterprise)
            .finish_non_exhaustive()
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

mod lifecycle;
mod paging;
mod token;

pub use lifecycle::{ACCEPTED_PATIENCE, scoped_key};
use lifecycle::{Transition, etag_kept_changing, not_applied};
use paging::Paging;
use token::{Need, TokenSlot};

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
