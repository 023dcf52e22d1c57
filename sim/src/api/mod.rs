//! The Partner API: authentication, kill switch, rate limits, idempotency, then the handlers.
mod credits;
mod keys;
mod me;
mod orgs;
mod webhooks;

use std::time::Instant;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::{Reply, ReqHeaders};
use crate::ids::{parse_id, sha256_hex};
use crate::model::{IdemEntry, OrgStatus, State};
use crate::ratelimit::{Class, Tier};
use crate::router::{Matched, Op};
use crate::time::now_us;
use crate::{Shared, lock};

pub const ADMIN: &str = "org:admin";

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
}

impl Ctx<'_> {
    pub fn q(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == ADMIN)
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
    if let Some(s) = v.retry_after {
        h.push(("retry-after", s.to_string()));
    }
    h
}

#[allow(clippy::too_many_arguments)]
pub fn handle(
    shared: &Shared,
    matched: &Matched,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &ReqHeaders,
    body: &Bytes,
    rid: &str,
) -> Reply {
    let mut extra = Vec::new();
    let r = run(
        shared, matched, method, path, query, headers, body, rid, &mut extra,
    );
    let mut reply = match r {
        Ok(reply) => reply,
        Err(err) => Reply::error(&err, rid),
    };
    // A 429 from the limiter already carries Retry-After in `extra`.
    reply
        .headers
        .retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    reply.headers.extend(extra);
    reply
}

#[allow(clippy::too_many_arguments)]
fn run(
    shared: &Shared,
    matched: &Matched,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &ReqHeaders,
    body: &Bytes,
    rid: &str,
    extra: &mut Vec<(&'static str, String)>,
) -> Result<Reply, ApiError> {
    let now = now_us();
    let mut st = lock(&shared.state);

    // Authentication.
    let secret = headers
        .bearer
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::unauthenticated("missing API key: send Authorization: Bearer lp_...")
        })?;
    let key_id = *st
        .key_by_hash
        .get(&sha256_hex(secret.as_bytes()))
        .ok_or_else(|| ApiError::unauthenticated("invalid API key"))?;
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
    match st.orgs.get(&key_org).map(|o| o.status) {
        Some(OrgStatus::Active) => {}
        Some(OrgStatus::Suspended) => return Err(ApiError::kill_switch("organization")),
        _ => {
            return Err(ApiError::unauthenticated(
                "this API key's organization is archived",
            ));
        }
    }

    // Rate limit per (key, endpoint class).
    let class = Class::of(method);
    if let Some(v) = lock(&shared.limiter).take(shared.tier, key_id, class, Instant::now()) {
        extra.extend(rate_headers(&v));
        if let Some(secs) = v.retry_after {
            let mut e = ApiError::new(
                429,
                "RATE_LIMITED",
                format!(
                    "rate limit of {} requests/minute for {} exceeded",
                    v.limit,
                    class.header_name()
                ),
            )
            .with_details(json!({ "endpointClass": class.header_name(), "retryAfter": secs }));
            e.retry_after = None; // Retry-After comes with the rate headers
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

    let ctx = Ctx {
        now,
        key_id,
        acting,
        scopes,
        tier: shared.tier,
        params: &matched.params,
        query: crate::validate::query_pairs(query),
        body,
        idem: headers.idempotency_key.clone(),
    };

    // Idempotency: every non-GET request may carry a key.
    let idem = if *method == Method::GET {
        None
    } else {
        ctx.idem.clone()
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
    if let (Some(k), Some(fp)) = (&store_key, &fingerprint)
        && let Some(e) = st.idem.get(k)
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

    let result = dispatch(&mut st, &ctx, matched.op);
    let (status, body_v, replay_v) = match result {
        Ok(out) => (out.status, out.body, out.replay),
        Err(e) => (e.status, e.body(rid), None),
    };
    let bytes = serde_json::to_string(&body_v).unwrap_or_default();
    // 5xx outcomes are not stored, so a retry re-executes.
    if let (Some(k), Some(fp)) = (store_key, fingerprint)
        && status < 500
    {
        if st.idem.len() > 100_000 {
            let window = shared.idem_window_us;
            st.idem.retain(|_, e| e.stored_us + window > now);
        }
        let replay_body = replay_v.map(|v| serde_json::to_string(&v).unwrap_or_default());
        st.idem.insert(
            k,
            IdemEntry {
                fingerprint: fp,
                status,
                body: bytes.clone(),
                replay_body,
                stored_us: now,
            },
        );
    }
    drop(st);
    if *method != Method::GET {
        shared.dirty.notify_one();
    }
    Ok(Reply {
        status,
        body: Bytes::from(bytes),
        headers: Vec::new(),
    })
}

fn dispatch(st: &mut State, ctx: &Ctx, op: Op) -> Result<Out, ApiError> {
    match op {
        Op::Whoami => me::whoami(st, ctx),
        Op::OwnCredits => me::own_credits(st, ctx),
        Op::OrgList => orgs::list(st, ctx),
        Op::OrgCreate => orgs::create(st, ctx),
        Op::Migrate => Err(ApiError::new(
            404,
            "NOT_FOUND",
            "POST /v1/organizations/migrate is not simulated",
        )),
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
        Op::SimState | Op::SimCounters | Op::SimReset | Op::SimFaultsGet | Op::SimFaultsPut => {
            Err(ApiError::not_found("route"))
        }
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
