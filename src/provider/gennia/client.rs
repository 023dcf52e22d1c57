//! The Gennia HTTP client: one request with bounded concurrency, retries (only where
//! re-sending is safe), error mapping, metrics and a tracing span; then the operations.
//! Never logs headers or bodies (they can hold the key).

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tracing::{Instrument, field::Empty};

use super::model::*;
use super::{ClientState, GenniaConfig, GenniaErrorKind, code_from_message, error_kind};
use crate::provider::error::{ApiFailure, ProviderError};
use crate::provider::layers::client::{decode, parse_retry_after, transport};
use crate::provider::layers::retry::RetryPolicy;
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::Secret;

const API_ROOT: &str = "/public/api/v1";
/// The API's maximum page size.
const PAGE_LIMIT: u32 = 100;
/// Hard stop for a page chain that never ends (a server bug must not loop forever).
const MAX_PAGES: u32 = 10_000;
const MAX_NAME_CHARS: usize = 150;
const MAX_REASON_CHARS: usize = 500;

/// How [`GenniaClient::ensure_client`] got its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// This call's create made it (answered, or found after an ambiguous failure although
    /// the lookup before the create had not found it).
    Created,
    /// It already existed (found before creating, or adopted after "duplicate workspace name").
    Found,
}

struct Request {
    method: Method,
    /// Route template (metrics and logs), e.g. `/public/api/v1/clients/:clientPublicId`.
    route: &'static str,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    /// Safe to re-send: a GET, or a call idempotent by state (suspend, reactivate, PATCH of
    /// absolute values, DELETE). Create and resend-invitation are not.
    retry_safe: bool,
}

impl Request {
    fn new(method: Method, route: &'static str, path: String) -> Request {
        let retry_safe = method == Method::GET || method == Method::DELETE;
        Request {
            method,
            route,
            path,
            query: Vec::new(),
            body: None,
            retry_safe,
        }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Request, ProviderError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| ProviderError::Invalid(format!("request body of {}: {e}", self.route)))?;
        self.body = Some(bytes);
        Ok(self)
    }

    fn idempotent_by_state(mut self) -> Request {
        self.retry_safe = true;
        self
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.query.push((name, value.into()));
        self
    }
}

/// A Gennia client for one hub key. Cheap to share behind an `Arc`.
pub struct GenniaClient {
    client: reqwest::Client,
    base: String,
    api_key: Secret,
    policy: RetryPolicy,
    permits: Arc<Semaphore>,
    metrics: Option<ProviderMetrics>,
}

impl fmt::Debug for GenniaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenniaClient")
            .field("base", &self.base)
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl GenniaClient {
    pub fn new(cfg: GenniaConfig) -> Result<GenniaClient, ProviderError> {
        let server = cfg.base_url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&server)
            .map_err(|e| ProviderError::Invalid(format!("base URL {server:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ProviderError::Invalid(format!(
                "base URL {server:?} must be http or https"
            )));
        }
        if cfg.api_key.expose().trim().is_empty() {
            return Err(ProviderError::Invalid("the API key is empty".into()));
        }
        if cfg.max_attempts == 0 {
            return Err(ProviderError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        if cfg.max_concurrency == 0 {
            return Err(ProviderError::Invalid(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("orgops/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Invalid(format!("HTTP client: {e}")))?;
        Ok(GenniaClient {
            client,
            base: format!("{server}{API_ROOT}"),
            api_key: cfg.api_key,
            policy: RetryPolicy {
                max_attempts: cfg.max_attempts,
                max_retry_time: cfg.max_retry_time,
                base_delay: cfg.retry_base_delay,
                max_delay: cfg.retry_max_delay,
            },
            permits: Arc::new(Semaphore::new(cfg.max_concurrency)),
            metrics: cfg.metrics,
        })
    }

    // ---- operations ----

    /// `GET /health`: checks the key and names the hub it belongs to.
    pub async fn health(&self) -> Result<Health, ProviderError> {
        let req = Request::new(Method::GET, "/public/api/v1/health", "/health".into());
        self.json(&req).await
    }

    /// One page of `GET /clients` (`page` is 1-based, `limit` 1–100).
    pub async fn list_clients_page(
        &self,
        filter: &ListFilter,
        page: u32,
        limit: u32,
    ) -> Result<ClientPage, ProviderError> {
        let mut req = Request::new(Method::GET, "/public/api/v1/clients", "/clients".into())
            .query("page", page.to_string())
            .query("limit", limit.to_string());
        if let Some(s) = &filter.status {
            req = req.query("status", s.clone());
        }
        if let Some(q) = &filter.q {
            req = req.query("q", q.clone());
        }
        self.json(&req).await
    }

    /// Every client matching `filter`, all pages. Pages are numbered and newest first, so a
    /// client created meanwhile shifts rows down a page: rows seen twice are dropped, none
    /// is missed (Gennia has no client delete).
    pub async fn list_clients(
        &self,
        filter: &ListFilter,
    ) -> Result<Vec<ClientListItem>, ProviderError> {
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        for page in 1..=MAX_PAGES {
            let p = self.list_clients_page(filter, page, PAGE_LIMIT).await?;
            let empty = p.items.is_empty();
            for item in p.items {
                if seen.insert(item.public_id.clone()) {
                    items.push(item);
                }
            }
            if empty || page >= p.total_pages {
                return Ok(items);
            }
        }
        Err(ProviderError::Decode {
            route: "/public/api/v1/clients".into(),
            detail: format!("more than {MAX_PAGES} pages"),
        })
    }

    /// `GET /clients/{id}`; `Ok(None)` on 404.
    pub async fn get_client(&self, client_id: &str) -> Result<Option<Client>, ProviderError> {
        let req = Request::new(
            Method::GET,
            "/public/api/v1/clients/:clientPublicId",
            format!("/clients/{}", safe_id(client_id)?),
        );
        match self.json(&req).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The client whose workspace name equals `name` (trimmed, case-insensitive: how Gennia
    /// compares names for uniqueness), read fresh.
    pub async fn find_client_by_name(&self, name: &str) -> Result<Option<Client>, ProviderError> {
        let wanted = name.trim();
        let filter = ListFilter {
            status: None,
            q: Some(wanted.to_string()),
        };
        let mut matches: Vec<ClientListItem> = self
            .list_clients(&filter)
            .await?
            .into_iter()
            .filter(|c| c.workspace_name.trim().to_lowercase() == wanted.to_lowercase())
            .collect();
        if matches.len() > 1 {
            // Uniqueness is case-insensitive in the simulator; should the API differ, the
            // exact spelling decides.
            matches.retain(|c| c.workspace_name.trim() == wanted);
        }
        match matches.as_slice() {
            [] => Ok(None),
            [one] => self.get_client(&one.public_id).await,
            _ => Err(ProviderError::Conflict(ApiFailure {
                status: 409,
                code: "AMBIGUOUS_WORKSPACE_NAME".into(),
                message: format!(
                    "{} clients of this hub are named {wanted:?}; adopt one by hand",
                    matches.len()
                ),
                request_id: None,
                retry_after: None,
            })),
        }
    }

    /// `POST /clients`, sent exactly once (no idempotency: a re-send after a lost response
    /// would be refused as a duplicate name). Prefer [`GenniaClient::ensure_client`].
    pub async fn create_client(&self, new: &NewClient) -> Result<Client, ProviderError> {
        validate_new(new)?;
        let req =
            Request::new(Method::POST, "/public/api/v1/clients", "/clients".into()).json(new)?;
        self.json(&req).await
    }

    /// Exactly-once create without idempotency: looks the workspace name up first; sends the
    /// create at most once; after an ambiguous failure (timeout, transport error, 5xx, an
    /// unreadable 2xx) looks the name up again instead of re-sending; adopts the existing
    /// client on "duplicate workspace name". When the outcome stays unknown the error is
    /// returned (retryable): calling again is safe, it starts with the lookup.
    pub async fn ensure_client(&self, new: &NewClient) -> Result<(Client, Ensured), ProviderError> {
        validate_new(new)?;
        let name = new.workspace_name.as_str();
        if let Some(c) = self.find_client_by_name(name).await? {
            return Ok((c, Ensured::Found));
        }
        let err = match self.create_client(new).await {
            Ok(c) => return Ok((c, Ensured::Created)),
            Err(e) => e,
        };
        if error_kind(&err) == Some(GenniaErrorKind::NameTaken) {
            tracing::info!("workspace name already taken in the hub; adopting the existing client");
            return match self.find_client_by_name(name).await? {
                Some(c) => Ok((c, Ensured::Found)),
                None => Err(err),
            };
        }
        if !ambiguous(&err) {
            return Err(err);
        }
        tracing::info!(
            code = err.code(),
            "create outcome unknown; looking the workspace name up instead of re-sending"
        );
        match self.find_client_by_name(name).await? {
            Some(c) => Ok((c, Ensured::Created)),
            None => Err(err),
        }
    }

    /// `POST /clients/{id}/suspend` (only from `active`). Already suspended is success: a
    /// 400 state error is checked against a fresh read first.
    pub async fn suspend_client(
        &self,
        client_id: &str,
        suspension: &Suspension,
    ) -> Result<Client, ProviderError> {
        if let Some(r) = &suspension.reason
            && r.chars().count() > MAX_REASON_CHARS
        {
            return Err(ProviderError::Invalid(format!(
                "the suspend reason has {} characters; Gennia takes at most {MAX_REASON_CHARS}",
                r.chars().count()
            )));
        }
        let req = Request::new(
            Method::POST,
            "/public/api/v1/clients/:clientPublicId/suspend",
            format!("/clients/{}/suspend", safe_id(client_id)?),
        )
        .json(suspension)?
        .idempotent_by_state();
        self.state_change(client_id, &req, GenniaErrorKind::NotSuspendable, |s| {
            *s == ClientState::Suspended
        })
        .await
    }

    /// `POST /clients/{id}/reactivate` (only from `suspended`). Already active is success.
    pub async fn reactivate_client(&self, client_id: &str) -> Result<Client, ProviderError> {
        let req = Request::new(
            Method::POST,
            "/public/api/v1/clients/:clientPublicId/reactivate",
            format!("/clients/{}/reactivate", safe_id(client_id)?),
        )
        .idempotent_by_state();
        self.state_change(
            client_id,
            &req,
            GenniaErrorKind::NotSuspended,
            ClientState::is_active,
        )
        .await
    }

    /// `POST /clients/{id}/invitations/{inv}/resend`: sends an email, so never re-sent.
    pub async fn resend_invitation(
        &self,
        client_id: &str,
        invitation_id: &str,
    ) -> Result<PendingInvitation, ProviderError> {
        let req = Request::new(
            Method::POST,
            "/public/api/v1/clients/:clientPublicId/invitations/:invitationPublicId/resend",
            format!(
                "/clients/{}/invitations/{}/resend",
                safe_id(client_id)?,
                safe_id(invitation_id)?
            ),
        );
        self.json(&req).await
    }

    /// `PATCH /clients/{id}/users/{user}`: absolute values, so safe to re-send.
    pub async fn patch_user(
        &self,
        client_id: &str,
        user_id: &str,
        patch: &UserPatch,
    ) -> Result<Client, ProviderError> {
        let req = Request::new(
            Method::PATCH,
            "/public/api/v1/clients/:clientPublicId/users/:userPublicId",
            format!(
                "/clients/{}/users/{}",
                safe_id(client_id)?,
                safe_id(user_id)?
            ),
        )
        .json(patch)?
        .idempotent_by_state();
        self.json(&req).await
    }

    /// `DELETE /clients/{id}/users/{user}`. A user that is already gone (e.g. removed by an
    /// earlier attempt whose answer was lost) is success: the client as it is now.
    pub async fn delete_user(
        &self,
        client_id: &str,
        user_id: &str,
    ) -> Result<Client, ProviderError> {
        let req = Request::new(
            Method::DELETE,
            "/public/api/v1/clients/:clientPublicId/users/:userPublicId",
            format!(
                "/clients/{}/users/{}",
                safe_id(client_id)?,
                safe_id(user_id)?
            ),
        );
        match self.json::<Client>(&req).await {
            Ok(c) => Ok(c),
            Err(e)
                if e.is_not_found() && error_kind(&e) != Some(GenniaErrorKind::ClientNotFound) =>
            {
                match self.get_client(client_id).await? {
                    Some(c) if !c.users.iter().any(|u| u.public_id == user_id) => Ok(c),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a state transition; a 400 of kind `refused` is success when a fresh read shows
    /// the client already in the target state.
    async fn state_change(
        &self,
        client_id: &str,
        req: &Request,
        refused: GenniaErrorKind,
        reached: impl Fn(&ClientState) -> bool,
    ) -> Result<Client, ProviderError> {
        let err = match self.json::<Client>(req).await {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if error_kind(&err) != Some(refused) {
            return Err(err);
        }
        match self.get_client(client_id).await? {
            Some(c) if reached(&c.state()) => {
                tracing::debug!(
                    route = req.route,
                    "state error, but the client is already in the target state"
                );
                Ok(c)
            }
            _ => Err(err),
        }
    }

    // ---- HTTP core ----

    async fn json<T: DeserializeOwned>(&self, req: &Request) -> Result<T, ProviderError> {
        let body = self.send(req).await?;
        decode(req.route, &body)
    }

    /// Sends `req`, re-sending it after transient failures only when that is safe.
    async fn send(&self, req: &Request) -> Result<Vec<u8>, ProviderError> {
        let started = Instant::now();
        let mut attempt = 1u32;
        loop {
            let span = tracing::info_span!(
                "gennia_request",
                method = %req.method,
                route = req.route,
                attempt,
                status = Empty,
                request_id = Empty,
            );
            let err = match self.attempt(req).instrument(span).await {
                Ok(body) => return Ok(body),
                Err(err) => err,
            };
            let unit: f64 = rand::rng().random();
            let delay = self.policy.delay(attempt, err.retry_after(), unit);
            if !self
                .policy
                .should_retry(&err, req.retry_safe, attempt, started.elapsed(), delay)
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

    async fn attempt(&self, req: &Request) -> Result<Vec<u8>, ProviderError> {
        // Held for the exchange only, not for a backoff sleep.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ProviderError::Invalid("the client was shut down".into()))?;
        let mut rb = self
            .client
            .request(req.method.clone(), format!("{}{}", self.base, req.path))
            .header("X-Api-Key", self.api_key.expose());
        if !req.query.is_empty() {
            rb = rb.query(&req.query);
        }
        if let Some(body) = &req.body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        let start = Instant::now();
        let outcome = exchange(rb).await;
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
        if status.is_success() {
            tracing::debug!("provider request done");
            return Ok(body);
        }
        let err = map_error(status, &headers, &body);
        if let Some(id) = err.request_id() {
            span.record("request_id", id);
        }
        tracing::debug!(code = err.code(), "provider request refused");
        Err(err)
    }
}

async fn exchange(
    rb: reqwest::RequestBuilder,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), ProviderError> {
    let resp = rb.send().await.map_err(transport)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map_err(transport)?;
    Ok((status, headers, body.to_vec()))
}

/// The create may have been applied: nothing in the answer says it was not.
fn ambiguous(err: &ProviderError) -> bool {
    matches!(
        err,
        ProviderError::Transport(_)
            | ProviderError::Timeout
            | ProviderError::Server(_)
            | ProviderError::Decode { .. }
    )
}

/// A Gennia refusal as a [`ProviderError`]; the API's code stays in `ApiFailure.code`
/// (see [`error_kind`](super::error_kind)).
pub(crate) fn map_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (code, message, body_request_id) = match parsed {
        Some(mut b) => {
            if let Some(inner) = b.error.take() {
                b = *inner;
            }
            (b.code.filter(|c| !c.is_empty()), b.message, b.request_id)
        }
        // Not JSON (e.g. a proxy's page): keep only the status, never the body.
        None => (None, None, None),
    };
    let status_u16 = status.as_u16();
    let message = message.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").into());
    let code = code
        .or_else(|| code_from_message(status_u16, &message).map(str::to_string))
        .unwrap_or_else(|| format!("HTTP_{status_u16}"));
    let f = ApiFailure {
        status: status_u16,
        code,
        message,
        request_id: body_request_id.or(request_id),
        retry_after,
    };
    match status_u16 {
        401 => ProviderError::Unauthenticated(f),
        403 => ProviderError::ForbiddenScope(f),
        404 => ProviderError::NotFound(f),
        400 => match f.code.as_str() {
            "WORKSPACE_NAME_TAKEN"
            | "CLIENT_NOT_SUSPENDABLE"
            | "CLIENT_NOT_SUSPENDED"
            | "LAST_ADMIN" => ProviderError::Conflict(f),
            _ => ProviderError::Validation(f),
        },
        429 => ProviderError::RateLimited(f),
        500..=599 => ProviderError::Server(f),
        _ => ProviderError::Unexpected(f),
    }
}

/// Ids go into the path: Gennia's are UUIDs; anything else is refused before sending.
fn safe_id(id: &str) -> Result<&str, ProviderError> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        Ok(id)
    } else {
        Err(ProviderError::Invalid(format!(
            "{id:?} is not a Gennia public id"
        )))
    }
}

fn validate_new(new: &NewClient) -> Result<(), ProviderError> {
    let name = new.workspace_name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ProviderError::Invalid(format!(
            "workspaceName must be 1 to {MAX_NAME_CHARS} characters, got {chars}"
        )));
    }
    if new.users.is_empty() {
        return Err(ProviderError::Invalid(
            "users: a client needs at least one user".into(),
        ));
    }
    if !new.users.iter().any(|u| u.role == Role::Admin) {
        return Err(ProviderError::Invalid(
            "users: a client needs at least one admin".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::Duration;

    #[test]
    fn refusals_map_to_distinguishable_errors() {
        let h = HeaderMap::new();
        let e = map_error(
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"code":"WORKSPACE_NAME_TAKEN","message":"Duplicate workspace name"}"#,
        );
        assert!(matches!(e, ProviderError::Conflict(_)));
        assert_eq!(error_kind(&e), Some(GenniaErrorKind::NameTaken));
        let e = map_error(
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"code":"VALIDATION_ERROR","message":"users: required"}"#,
        );
        assert!(matches!(e, ProviderError::Validation(_)) && e.needs_human());
        // No code in the body: the documented message decides.
        let e = map_error(
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"message":"Client is not suspended"}"#,
        );
        assert_eq!(e.code(), "CLIENT_NOT_SUSPENDED");
        let e = map_error(
            StatusCode::UNAUTHORIZED,
            &h,
            br#"{"code":"INVALID_API_KEY"}"#,
        );
        assert!(e.is_auth() && e.code() == "INVALID_API_KEY");
        let mut h429 = HeaderMap::new();
        h429.insert("retry-after", HeaderValue::from_static("2"));
        let e = map_error(StatusCode::TOO_MANY_REQUESTS, &h429, b"");
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let e = map_error(StatusCode::BAD_GATEWAY, &h, b"<html>gsk_leak</html>");
        assert!(matches!(e, ProviderError::Server(_)));
        assert!(!e.to_string().contains("gsk_leak"));
    }

    #[test]
    fn ids_and_creates_are_checked_before_sending() {
        assert!(safe_id("9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21").is_ok());
        assert!(safe_id("../x").is_err() && safe_id("").is_err());
        let admin = NewUser {
            email: "a@x.test".into(),
            name: None,
            role: Role::Admin,
        };
        assert!(validate_new(&NewClient::new("Acme", vec![admin.clone()])).is_ok());
        assert!(validate_new(&NewClient::new("  ", vec![admin.clone()])).is_err());
        assert!(validate_new(&NewClient::new("x".repeat(151), vec![admin])).is_err());
        let member = NewUser {
            email: "m@x.test".into(),
            name: None,
            role: Role::Member,
        };
        let err = validate_new(&NewClient::new("Acme", vec![member])).unwrap_err();
        assert!(err.to_string().contains("admin"));
    }

    #[test]
    fn only_reads_and_state_calls_are_retry_safe() {
        assert!(Request::new(Method::GET, "/r", "/r".into()).retry_safe);
        assert!(Request::new(Method::DELETE, "/r", "/r".into()).retry_safe);
        assert!(!Request::new(Method::POST, "/r", "/r".into()).retry_safe);
        assert!(
            Request::new(Method::POST, "/r", "/r".into())
                .idempotent_by_state()
                .retry_safe
        );
        assert!(ambiguous(&ProviderError::Timeout));
        assert!(!ambiguous(&ProviderError::Invalid("x".into())));
    }
}
