//! The Partner API: authentication, kill switch, rate limits, idempotency, then the handlers.
pub(crate) mod credits;
mod keys;
mod me;
mod orgs;
pub(crate) mod projects;
pub(crate) mod webhooks;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Reply, ReqHeaders};
use crate::ids::{parse_id, sha256_hex};
use crate::model::{IdemEntry, OrgStatus, State};
use crate::ratelimit::{Class, Tier, Window, class_name};
use crate::router::{Matched, Op};
use crate::time::{DAY_US, fmt_z};
use crate::{
    Assumptions, InFlightMode, RateLimitScope, Shared, SuspendedWrites, UnknownFields, lock,
};

pub use crate::scopes::ADMIN;

/// Everything a handler needs about the caller and the request.
pub struct Ctx<'a> {
    pub now: i64,
    pub key_id: Uuid,
    /// The org the request acts in: `key_org`, or a direct child named by `X-Layers-Organization`.
    pub acting: Uuid,
    pub scopes: Vec<String>,
    pub tier: Tier,
    pub params: &'a [String],
    pub query: Vec<(String, String)>,
    pub body: &'a [u8],
    pub idem: Option<String>,
    /// The assumption switches in force for this request.
    pub switches: &'a Assumptions,
}

impl Ctx<'_> {
    /// The request body as a JSON object with only `allowed` fields: an unknown field is
    /// `422` (decision 17) or, with `--unknown-fields ignore`, dropped.
    pub fn object(
        &self,
        allowed: &[&str],
        empty_ok: bool,
    ) -> Result<serde_json::Map<String, Value>, ApiError> {
        crate::validate::object_with(
            self.body,
            allowed,
            empty_ok,
            self.switches.unknown_fields == UnknownFields::Ignore,
        )
    }

    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == ADMIN)
    }

    /// A data scope such as `projects:read` (`*` covers it).
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if crate::scopes::covered(&self.scopes, scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden_scope(scope))
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.has_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden_scope(ADMIN))
        }
    }

    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }
}

/// A handler's result: status, body, and the body to serve on an idempotent replay when it
/// differs (allocate flips `replayed`).
pub struct Out {
    pub status: u16,
    pub body: Value,
    pub replay: Option<Value>,
}

impl Out {
    pub fn ok(body: Value) -> Out {
        Out {
            status: 200,
            body,
            replay: None,
        }
    }
    pub fn created(body: Value) -> Out {
        Out {
            status: 201,
            body,
            replay: None,
        }
    }
}

/// Resolves `raw` to a direct child of the acting org: malformed → 422, otherwise unknown → 404.
pub fn child(st: &State, ctx: &Ctx, raw: &str) -> Result<Uuid, ApiError> {
    let id = parse_id(raw, "org").ok_or_else(|| {
        ApiError::validation(format!("{raw:?} is not a valid organization id"))
            .with_details(json!({ "field": "orgId" }))
    })?;
    match st.orgs.get(&id) {
        Some(o) if o.parent == Some(ctx.acting) => Ok(id),
        _ => Err(ApiError::not_found("organization")),
    }
}

fn rate_headers(v: &crate::ratelimit::Verdict) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("x-ratelimit-limit", v.limit.to_string()),
        ("x-ratelimit-remaining", v.remaining.to_string()),
        ("x-ratelimit-reset", v.reset_secs.to_string()),
    ];
    if let Some(d) = v.daily {
        h.push(("x-ratelimit-daily-limit", d.limit.to_string()));
        h.push(("x-ratelimit-daily-remaining", d.remaining.to_string()));
        h.push(("x-ratelimit-daily-reset", d.reset_secs.to_string()));
    }
    if let Some(s) = v.retry_after {
        h.push(("retry-after", s.to_string()));
    }
    h
}

/// How a request is held before it executes (the slow- and late-commit faults).
#[derive(Default)]
pub struct Hold {
    /// Hold the request in flight this long before it executes.
    pub slow_commit: Option<Duration>,
    /// Told once the request holds its in-flight claim or has an answer (late commit).
    pub claimed: Option<tokio::sync::oneshot::Sender<()>>,
}

/// One API request: authentication, switches, rate limits, idempotency, then the handler.
#[allow(clippy::too_many_arguments)]
pub async fn handle(
    shared: &Shared,
    matched: &Matched,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &ReqHeaders,
    body: &Bytes,
    rid: &str,
    hold: Hold,
) -> Reply {
    let mut extra = Vec::new();
    let r = run(
        shared, matched, method, path, query, headers, body, rid, hold, &mut extra,
    )
    .await;
    let mut reply = match r {
        Ok(reply) => reply,
        Err(err) => err.reply(rid),
    };
    // A 429 from the limiter already carries Retry-After in `extra`.
    reply
        .headers
        .retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    reply.headers.extend(extra);
    reply
}

/// Who is calling, where, and under which idempotency store key.
struct Caller {
    key_id: Uuid,
    acting: Uuid,
    scopes: Vec<String>,
    store_key: Option<String>,
    fingerprint: Option<String>,
}

/// Authentication, switches, rate limit, acting org and the idempotency key; runs once per
/// request, under the state lock.
fn admit(
    shared: &Shared,
    switches: &Assumptions,
    method: &Method,
    path: &str,
    headers: &ReqHeaders,
    body: &Bytes,
    extra: &mut Vec<(&'static str, String)>,
) -> Result<Caller, ApiError> {
    let mut st = lock(&shared.state);
    let now = st.now();

    // Authentication: `Authorization: Bearer` is the only accepted form (NEW docs, §3.1).
    let secret = headers
        .bearer
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            if headers.x_api_key {
                ApiError::unauthenticated(
                    "X-Api-Key is not accepted: send Authorization: Bearer lp_...",
                )
            } else {
                ApiError::unauthenticated("missing API key: send Authorization: Bearer lp_...")
            }
        })?;
    let key_id = *st
        .key_by_hash
        .get(&sha256_hex(secret.as_bytes()))
        .ok_or_else(|| ApiError::unauthenticated("invalid API key"))?;
    if key_id == st.parent_key_id && st.parent_key_revoked {
        return Err(ApiError::unauthenticated("this API key has been revoked"));
    }
    let (key_org, scopes) = {
        let key = st
            .keys
            .get_mut(&key_id)
            .ok_or_else(|| ApiError::unauthenticated("invalid API key"))?;
        if !key.is_active(now) {
            return Err(ApiError::unauthenticated("this API key has been revoked"));
        }
        key.last_used_us = Some(now);
        (key.org, key.scopes.clone())
    };
    if st.kill_switch {
        return Err(ApiError::kill_switch("organization"));
    }
    match st.orgs.get(&key_org).map(|o| o.status) {
        Some(OrgStatus::Active) => {}
        Some(OrgStatus::Suspended) => return Err(ApiError::kill_switch("organization")),
        _ => {
            return Err(ApiError::unauthenticated(
                "this API key's organization is archived",
            ));
        }
    }

    // Rate limits per (key, endpoint class), and the daily write cap per key.
    let class = Class::of(method);
    let bucket = match switches.rate_limit_scope {
        RateLimitScope::ParentKey => key_id,
        RateLimitScope::ChildOrg => bucket_org(&st, key_org, headers, path),
    };
    let taken = lock(&shared.limiter).take(
        shared.tier,
        crate::ratelimit::Take {
            key: key_id,
            bucket,
            class,
            burst: switches.rate_limit_burst,
        },
        now,
    );
    if let Some(v) = taken {
        extra.extend(rate_headers(&v));
        if let Some(secs) = v.retry_after {
            let midnight = (now.div_euclid(DAY_US) + 1) * DAY_US;
            let e = match (v.refused_by, v.daily) {
                (Some(Window::Day), Some(d)) => ApiError::new(
                    429,
                    "RATE_LIMITED",
                    format!(
                        "daily {} cap of {} requests reached; it resets at {}",
                        class_name(class),
                        d.limit,
                        fmt_z(midnight)
                    ),
                )
                .with_details(json!({
                    "endpointClass": class_name(class),
                    "window": "day",
                    "limit": d.limit,
                    "retryAfter": secs,
                    "resetAt": fmt_z(midnight),
                })),
                _ => ApiError::new(
                    429,
                    "RATE_LIMITED",
                    format!(
                        "rate limit of {} requests/minute for {} exceeded",
                        v.limit,
                        class_name(class)
                    ),
                )
                .with_details(json!({
                    "endpointClass": class_name(class),
                    "window": "minute",
                    "limit": v.limit,
                    "retryAfter": secs,
                })),
            };
            // Retry-After comes with the rate headers.
            return Err(e);
        }
    }

    // Acting inside a direct child.
    let mut acting = key_org;
    if let Some(raw) = headers.acting_org.as_deref() {
        if !scopes.iter().any(|s| s == ADMIN) {
            return Err(ApiError::forbidden_scope(ADMIN));
        }
        let id = parse_id(raw, "org").ok_or_else(|| {
            ApiError::validation(format!(
                "X-Layers-Organization {raw:?} is not a valid organization id"
            ))
        })?;
        match st.orgs.get(&id) {
            Some(o) if o.parent == Some(key_org) => acting = id,
            _ => return Err(ApiError::not_found("organization")),
        }
    }

    // Idempotency: every non-GET request may carry a key.
    let idem = if *method == Method::GET {
        None
    } else {
        headers.idempotency_key.clone()
    };
    let store_key = match &idem {
        Some(k) if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(ApiError::validation(
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ));
        }
        Some(k) => Some(format!("{key_org}|{acting}|{k}")),
        None => None,
    };
    let fingerprint = store_key.as_ref().map(|_| {
        let mut buf = Vec::with_capacity(path.len() + body.len() + 16);
        buf.extend_from_slice(method.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(path.as_bytes());
        buf.push(b'\n');
        buf.extend_from_slice(body);
        sha256_hex(&buf)
    });
    Ok(Caller {
        key_id,
        acting,
        scopes,
        store_key,
        fingerprint,
    })
}

/// With `--rate-limit-scope child-org`, the organization whose bucket a request draws on:
/// the child named by `X-Layers-Organization`, else the child in the path
/// (`/v1/organizations/:orgId/…`), else the key's own org (a child key's traffic is its
/// child's). Anything that does not name a direct child of the key's org is the key org's.
fn bucket_org(st: &State, key_org: Uuid, headers: &ReqHeaders, path: &str) -> Uuid {
    let named = headers.acting_org.clone().or_else(|| {
        path.strip_prefix("/v1/organizations/")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_string)
    });
    named
        .and_then(|raw| parse_id(&raw, "org"))
        .filter(|id| st.orgs.get(id).is_some_and(|o| o.parent == Some(key_org)))
        .unwrap_or(key_org)
}

/// Removes an in-flight marker when the request that set it ends, however it ends
/// (a dropped connection cancels the future while it sleeps).
struct InFlight<'a> {
    shared: &'a Shared,
    key: Option<String>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            lock(&self.shared.state).in_flight.remove(&k);
            self.shared.idem_done.notify_waiters();
        }
    }
}

enum Step {
    Done(Reply),
    Wait,
    Sleep(Duration),
}

#[allow(clippy::too_many_arguments)]
async fn run(
    shared: &Shared,
    matched: &Matched,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &ReqHeaders,
    body: &Bytes,
    rid: &str,
    hold: Hold,
    extra: &mut Vec<(&'static str, String)>,
) -> Result<Reply, ApiError> {
    let Hold {
        mut slow_commit,
        mut claimed,
    } = hold;
    let switches = shared.switches.get();
    let caller = admit(shared, &switches, method, path, headers, body, extra)?;
    let query = crate::validate::query_pairs(query);
    let mut claim = InFlight { shared, key: None };
    let mut slept = false;
    loop {
        let step = {
            let mut st = lock(&shared.state);
            let now = st.now();
            let mut step = None;
            if !slept && let (Some(k), Some(fp)) = (&caller.store_key, &caller.fingerprint) {
                if st.in_flight.contains(k) {
                    if switches.idempotency_in_flight == InFlightMode::Conflict {
                        let mut e = ApiError::new(
                            409,
                            "IDEMPOTENCY_CONFLICT",
                            "a request with this Idempotency-Key is still in progress; retry after it finishes",
                        )
                        .with_details(json!({ "inFlight": true }));
                        e.retry_after = Some(1);
                        return Err(e);
                    }
                    step = Some(Step::Wait);
                } else if let Some(e) = st.idem.get(k)
                    && e.stored_us + shared.idem_window_us > now
                {
                    if &e.fingerprint != fp {
                        return Err(ApiError::new(
                            409,
                            "IDEMPOTENCY_CONFLICT",
                            "this Idempotency-Key was already used with a different request",
                        ));
                    }
                    let body = e.replay_body.clone().unwrap_or_else(|| e.body.clone());
                    return Ok(Reply {
                        status: e.status,
                        body: Bytes::from(body),
                        headers: vec![("idempotent-replayed", "true".into())],
                    });
                }
            }
            if step.is_none()
                && let Some(d) = slow_commit.take()
            {
                if let Some(k) = &caller.store_key {
                    st.in_flight.insert(k.clone());
                    claim.key = Some(k.clone());
                }
                step = Some(Step::Sleep(d));
            }
            match step {
                Some(s) => {
                    if let Some(tx) = claimed.take() {
                        let _ = tx.send(());
                    }
                    s
                }
                None => {
                    let ctx = Ctx {
                        now,
                        key_id: caller.key_id,
                        acting: caller.acting,
                        scopes: caller.scopes.clone(),
                        tier: shared.tier,
                        params: &matched.params,
                        query: query.clone(),
                        body,
                        idem: headers.idempotency_key.clone(),
                        switches: &switches,
                    };
                    let reply = execute(shared, &mut st, &ctx, matched.op, &caller, rid);
                    if let Some(k) = claim.key.take() {
                        st.in_flight.remove(&k);
                        drop(st);
                        shared.idem_done.notify_waiters();
                    }
                    Step::Done(reply)
                }
            }
        };
        match step {
            Step::Done(reply) => {
                if *method != Method::GET {
                    shared.dirty.notify_one();
                }
                return Ok(reply);
            }
            Step::Wait => {
                let _ =
                    tokio::time::timeout(Duration::from_millis(20), shared.idem_done.notified())
                        .await;
            }
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                slept = true;
            }
        }
    }
}

/// Runs the handler and stores its outcome under the idempotency key: 2xx always, 4xx unless
/// `--idempotency-4xx skip`, 5xx never (a retry re-executes).
fn execute(
    shared: &Shared,
    st: &mut State,
    ctx: &Ctx,
    op: Op,
    caller: &Caller,
    rid: &str,
) -> Reply {
    let result = refuse_suspended(st, ctx, op).and_then(|()| dispatch(st, ctx, op));
    let (status, body_v, replay_v) = match result {
        Ok(out) => (out.status, out.body, out.replay),
        Err(e) => (e.status, e.body(rid), None),
    };
    let bytes = serde_json::to_string(&body_v).unwrap_or_default();
    let store = status < 400 || (status < 500 && ctx.switches.idempotency_store_4xx);
    if let (Some(k), Some(fp)) = (&caller.store_key, &caller.fingerprint)
        && store
    {
        let now = ctx.now;
        if st.idem.len() > 100_000 {
            let window = shared.idem_window_us;
            st.idem.retain(|_, e| e.stored_us + window > now);
        }
        let replay_body = replay_v.map(|v| serde_json::to_string(&v).unwrap_or_default());
        st.idem.insert(
            k.clone(),
            IdemEntry {
                fingerprint: fp.clone(),
                status,
                body: bytes.clone(),
                replay_body,
                stored_us: now,
            },
        );
    }
    Reply {
        status,
        body: Bytes::from(bytes),
        headers: Vec::new(),
    }
}

/// With `--suspended-writes refuse`, a write to a suspended child other than resume and
/// archive is `409 CONFLICT`: the child named in the path, or the one the request acts in
/// (`X-Layers-Organization`). Unknown or foreign ids are left to the handler's 404/422.
fn refuse_suspended(st: &State, ctx: &Ctx, op: Op) -> Result<(), ApiError> {
    if ctx.switches.suspended_writes == SuspendedWrites::Allow {
        return Ok(());
    }
    let in_path = matches!(
        op,
        Op::OrgPatch | Op::Allocate | Op::CcfgPatch | Op::KeyMint | Op::KeyDelete | Op::KeyRotate
    );
    let in_acting = matches!(
        op,
        Op::WhCreate | Op::WhPatch | Op::WhDelete | Op::WhRotate | Op::ProjectCreate
    );
    let target = if in_path {
        child(st, ctx, ctx.param(0)).ok()
    } else if in_acting && st.orgs.get(&ctx.acting).is_some_and(|o| o.parent.is_some()) {
        Some(ctx.acting)
    } else {
        None
    };
    match target.and_then(|id| st.orgs.get(&id)) {
        Some(o) if o.status == OrgStatus::Suspended => Err(ApiError::conflict(format!(
            "organization {} is suspended: only resume, archive and reads are allowed",
            crate::ids::org_id(o.id)
        ))),
        _ => Ok(()),
    }
}

fn dispatch(st: &mut State, ctx: &Ctx, op: Op) -> Result<Out, ApiError> {
    match op {
        Op::Whoami => me::whoami(st, ctx),
        Op::OwnCredits => me::own_credits(st, ctx),
        Op::OwnEvents => credits::own_events(st, ctx),
        Op::OrgList => orgs::list(st, ctx),
        Op::OrgCreate => orgs::create(st, ctx),
        Op::Migrate => projects::migrate(st, ctx),
        Op::ProjectCreate => projects::create(st, ctx),
        Op::ProjectList => projects::list(st, ctx),
        Op::ProjectGet => projects::get(st, ctx),
        Op::OrgGet => orgs::get(st, ctx),
        Op::OrgPatch => orgs::patch(st, ctx),
        Op::OrgArchive => orgs::archive(st, ctx),
        Op::OrgSuspend => orgs::set_status(st, ctx, OrgStatus::Suspended),
        Op::OrgResume => orgs::set_status(st, ctx, OrgStatus::Active),
        Op::Wallet => credits::wallet(st, ctx),
        Op::Events => credits::events(st, ctx),
        Op::Allocate => credits::allocate(st, ctx),
        Op::CcfgGet => credits::config_get(st, ctx),
        Op::CcfgPatch => credits::config_patch(st, ctx),
        Op::KeyList => keys::list(st, ctx),
        Op::KeyMint => keys::mint(st, ctx),
        Op::KeyDelete => keys::delete(st, ctx),
        Op::KeyRotate => keys::rotate(st, ctx),
        Op::WhList => webhooks::list(st, ctx),
        Op::WhCreate => webhooks::create(st, ctx),
        Op::WhGet => webhooks::get(st, ctx),
        Op::WhPatch => webhooks::patch(st, ctx),
        Op::WhDelete => webhooks::delete(st, ctx),
        Op::WhRotate => webhooks::rotate(st, ctx),
        _ => Err(ApiError::not_found("route")),
    }
}

/// Builds one page of a newest-first listing over `len` items in ascending `seq` order,
/// read through `at`. The cursor position is found by binary search, so deep pages stay cheap.
pub fn page<'a, T: 'a>(
    len: usize,
    at: impl Fn(usize) -> Option<&'a T>,
    seq: impl Fn(&T) -> u64,
    keep: impl Fn(&T) -> bool,
    before: Option<u64>,
    limit: usize,
    render: impl Fn(&T) -> Value,
) -> Value {
    let seq_at = |i: usize| at(i).map_or(0, &seq);
    let end = match before {
        None => len,
        Some(b) => {
            let (mut lo, mut hi) = (0, len);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if seq_at(mid) < b {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        }
    };
    let mut out = Vec::with_capacity(limit.min(256));
    let mut more = false;
    for it in (0..end).rev().filter_map(&at) {
        if !keep(it) {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push((seq(it), render(it)));
    }
    let cursor = if more {
        out.last().map(|(s, _)| crate::validate::encode_cursor(*s))
    } else {
        None
    };
    json!({
        "object": "list",
        "items": out.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "nextCursor": cursor,
    })
}
