//! The Gennia HTTP client: one request with bounded concurrency, retries (only where
//! re-sending is safe), error mapping, metrics and a tracing span; then the operations.
//! Never logs headers or bodies (they can hold the key).

use std::collections::HashSet;
use std::fmt;

use reqwest::{Method, StatusCode, header::HeaderMap};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::*;
use super::{ClientState, GenniaConfig, GenniaErrorKind, code_from_message, error_kind};
use crate::provider::error::{ApiFailure, ProviderError};
use crate::provider::http::{
    self, Envelope, Failed, decode, parse_retry_after, request_span, settings_of,
};
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
    http: http::Request,
    /// Safe to re-send: a GET, or a call idempotent by state (suspend, reactivate, PATCH of
    /// absolute values, DELETE). Create and resend-invitation are not.
    retry_safe: bool,
}

impl Request {
    fn new(method: Method, route: &'static str, path: String) -> Request {
        let retry_safe = method == Method::GET || method == Method::DELETE;
        let http = http::Request::new(method, route, path);
        Request { http, retry_safe }
    }

    fn json(mut self, body: &impl Serialize) -> Result<Request, ProviderError> {
        self.http = self.http.json(body)?;
        Ok(self)
    }

    fn idempotent_by_state(mut self) -> Request {
        self.retry_safe = true;
        self
    }

    fn query(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.http = self.http.query(name, value);
        self
    }
}

/// A Gennia client for one hub key. Cheap to share behind an `Arc`.
pub struct GenniaClient {
    envelope: Envelope,
    api_key: Secret,
}

impl fmt::Debug for GenniaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenniaClient")
            .field("base", &self.envelope.base())
            .field("api_key", &self.api_key)
            .finish_non_exhaustive()
    }
}

impl GenniaClient {
    pub fn new(cfg: GenniaConfig) -> Result<GenniaClient, ProviderError> {
        let envelope = Envelope::new(
            settings_of!(cfg, api_root: API_ROOT, max_concurrency: Some(cfg.max_concurrency)),
        )?;
        if cfg.api_key.expose().trim().is_empty() {
            return Err(ProviderError::Invalid("the API key is empty".into()));
        }
        Ok(GenniaClient {
            envelope,
            api_key: cfg.api_key,
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
        // Any refusal, not only "duplicate name": Gennia's error codes are not documented
        // (one VALIDATION_ERROR for everything, or none at all, is as plausible; issue 28).
        // The name was free at the lookup; a client of that name now is a create that
        // raced ours, to adopt; none means the refusal was about the request.
        if err.api_failure().is_some_and(|f| f.status == 400) {
            if let Some(c) = self.find_client_by_name(name).await? {
                tracing::info!(
                    code = err.code(),
                    "create refused and the workspace name is taken now; adopting the existing client"
                );
                return Ok((c, Ensured::Found));
            }
            return Err(err);
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

    /// Sends a state transition; a 400 is success when a fresh read shows the client
    /// already in the target state. Any 400, not only one of kind `refused`: Gennia's
    /// error codes are not documented, and a dialect without them (one `VALIDATION_ERROR`,
    /// or Spring's default body) must not turn "already suspended" after a lost answer into
    /// "edit the spec" (issue 28, row 5). `refused` names the rule for the logs.
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
        if err.api_failure().is_none_or(|f| f.status != 400) {
            return Err(err);
        }
        tracing::debug!(
            route = req.http.route,
            code = err.code(),
            expected = ?refused,
            "state change refused; reading the client"
        );
        match self.get_client(client_id).await? {
            Some(c) if reached(&c.state()) => {
                tracing::debug!(
                    route = req.http.route,
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
        decode(req.http.route, &body)
    }

    /// Sends `req`, re-sending it after transient failures only when that is safe.
    async fn send(&self, req: &Request) -> Result<Vec<u8>, ProviderError> {
        let span = request_span!("gennia_request", req.http);
        let attempt = |_| async {
            self.attempt(req)
                .await
                .map_err(|e| Failed::new(e, req.retry_safe))
        };
        self.envelope.retrying(&req.http, span, attempt).await
    }

    async fn attempt(&self, req: &Request) -> Result<Vec<u8>, ProviderError> {
        let rb = self
            .envelope
            .request(&req.http)
            .header("X-Api-Key", self.api_key.expose());
        let reply = self
            .envelope
            .exchange(rb, &req.http, req.http.writes(), |r| {
                map_error(r.status, &r.headers, &r.body)
            })
            .await?;
        Ok(reply.body)
    }
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
        Some(b) => {
            let b = b.nested().unwrap_or(b);
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
#[path = "client_tests.rs"]
mod tests;
