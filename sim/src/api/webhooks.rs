//! Webhook endpoints of the acting org (rows 24–29). Deliveries are not simulated; which
//! endpoints *would* receive an event is [`recipients`] (`GET /_sim/webhook-recipients`).
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Ctx, Out, page};
use crate::error::ApiError;
use crate::ids::{new_signing_secret, parse_id, sha256_hex};
use crate::model::{Endpoint, GRACE_US, Metadata, OrgStatus, State};
use crate::time::fmt_z;
use crate::validate::{self, decode_cursor};

pub const EVENT_CATALOG: [&str; 16] = [
    "job.completed",
    "job.failed",
    "job.canceled",
    "content.generated",
    "content.approved",
    "content.rejected",
    "post.scheduled",
    "post.published",
    "post.failed",
    "post.canceled",
    "social_account.connected",
    "social_account.needs_reauth",
    "social_account.revoked",
    "lease_request.assigned",
    "lease_request.rejected",
    "test.ping",
];

/// https anywhere; plain http only for localhost / 127.0.0.1 (development).
fn check_url(v: &Value) -> Result<String, ApiError> {
    let url = validate::string(v, "url", 1, 2048)?;
    let bad = || ApiError::validation("url: must be an https URL (http only for localhost)");
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    let host = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    if host.is_empty() {
        return Err(bad());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(url),
        "http" if host == "localhost" || host == "127.0.0.1" || host == "[::1]" => Ok(url),
        _ => Err(bad()),
    }
}

fn check_events(v: &Value) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::validation(
            "events: must be an array of 1 to 50 event names",
        ));
    };
    if items.is_empty() || items.len() > 50 {
        return Err(ApiError::validation("events: must have 1 to 50 entries"));
    }
    let mut out = Vec::new();
    for it in items {
        match it {
            Value::String(s) if EVENT_CATALOG.contains(&s.as_str()) => {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
            other => {
                return Err(ApiError::validation(format!(
                    "events: {other} is not in the event catalog"
                ))
                .with_details(json!({ "catalog": EVENT_CATALOG })));
            }
        }
    }
    Ok(out)
}

fn check_scope(v: &Value, ctx: &Ctx, st: &State) -> Result<String, ApiError> {
    match v.as_str() {
        Some("own") => Ok("own".into()),
        Some("all_children") => {
            ctx.require_admin()?;
            if st.orgs.get(&ctx.acting).is_some_and(|o| o.parent.is_some()) {
                return Err(ApiError::validation(
                    "scope: a child organization has no children",
                ));
            }
            Ok("all_children".into())
        }
        _ => Err(ApiError::validation(
            "scope: must be \"own\" or \"all_children\"",
        )),
    }
}

/// A project of the acting org: malformed → 422, otherwise unknown → 404.
fn own_project(st: &State, ctx: &Ctx, v: &Value) -> Result<Uuid, ApiError> {
    let bad = || {
        ApiError::validation("projectId: must be a project id (prj_… or a UUID)")
            .with_details(json!({ "field": "projectId" }))
    };
    let id = v
        .as_str()
        .and_then(|s| parse_id(s, "prj"))
        .ok_or_else(bad)?;
    match st.projects.get(&id) {
        Some(p) if p.org == ctx.acting => Ok(id),
        _ => Err(ApiError::not_found("project")),
    }
}

/// The active endpoints that would receive an event of `org` (optionally of one project and
/// one event type): its own org-wide endpoints, its project's endpoints, and — for a child —
/// its parent's `all_children` endpoints (the firehose), whenever they were created.
pub fn recipients(st: &State, org: Uuid, project: Option<Uuid>, event: Option<&str>) -> Vec<Value> {
    let Some(o) = st.orgs.get(&org) else {
        return Vec::new();
    };
    let wants = |e: &Endpoint| {
        e.status == "active" && event.is_none_or(|t| e.events.iter().any(|x| x == t))
    };
    let mut out = Vec::new();
    for e in o.endpoints.iter().filter_map(|id| st.endpoints.get(id)) {
        if wants(e) && (e.project.is_none() || e.project == project) {
            out.push(recipient(e, "own"));
        }
    }
    if let Some(parent) = o.parent.and_then(|p| st.orgs.get(&p)) {
        for e in parent
            .endpoints
            .iter()
            .filter_map(|id| st.endpoints.get(id))
        {
            if wants(e) && e.scope == "all_children" {
                out.push(recipient(e, "all_children"));
            }
        }
    }
    out
}

fn recipient(e: &Endpoint, via: &str) -> Value {
    json!({
        "id": e.id,
        "organizationId": crate::ids::org_id(e.org),
        "projectId": e.project.map(crate::ids::prj_id),
        "url": e.url,
        "scope": e.scope,
        "via": via,
    })
}

fn writable(st: &State, ctx: &Ctx) -> Result<(), ApiError> {
    if st
        .orgs
        .get(&ctx.acting)
        .is_some_and(|o| o.status == OrgStatus::Archived)
    {
        return Err(ApiError::conflict("the organization is archived"));
    }
    Ok(())
}

fn description(map: &Map<String, Value>) -> Result<Option<Option<String>>, ApiError> {
    validate::opt_string(map, "description", 500)
}

pub fn create(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let map = ctx.object(
        &[
            "url",
            "events",
            "description",
            "metadata",
            "scope",
            "projectId",
        ],
        false,
    )?;
    let project = match map.get("projectId") {
        None | Some(Value::Null) => None,
        Some(v) => Some(own_project(st, ctx, v)?),
    };
    let url = check_url(
        map.get("url")
            .ok_or_else(|| ApiError::validation("url: is required"))?,
    )?;
    let events = check_events(
        map.get("events")
            .ok_or_else(|| ApiError::validation("events: is required"))?,
    )?;
    let desc = description(&map)?.flatten();
    let metadata = match map.get("metadata") {
        Some(v) if !v.is_null() => validate::metadata_new(v)?,
        _ => Metadata::new(),
    };
    let scope = match map.get("scope") {
        Some(v) => check_scope(v, ctx, st)?,
        None => "own".into(),
    };
    if project.is_some() && scope == "all_children" {
        return Err(ApiError::validation(
            "scope: a project-scoped endpoint cannot be all_children",
        )
        .with_details(json!({ "field": "scope" })));
    }
    writable(st, ctx)?;
    let secret = new_signing_secret();
    let ep = Endpoint {
        id: Uuid::new_v4(),
        org: ctx.acting,
        url,
        description: desc,
        status: "active".into(),
        events,
        scope,
        metadata,
        secret_hash: sha256_hex(secret.as_bytes()),
        previous_secret_expires_us: None,
        project,
        created_us: ctx.now,
        updated_us: ctx.now,
        seq: st.next_seq(),
    };
    let body = json!({ "endpoint": ep.json(), "signingSecret": secret });
    if let Some(o) = st.orgs.get_mut(&ctx.acting) {
        o.endpoints.push(ep.id);
    }
    st.endpoints.insert(ep.id, ep);
    Ok(Out::created(body))
}

pub fn list(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let status = match ctx.q("status") {
        None => None,
        Some(s @ ("active" | "paused" | "auto_paused")) => Some(s.to_string()),
        Some(other) => {
            return Err(ApiError::validation(format!(
                "status: {other:?} is not one of active, paused, auto_paused"
            )));
        }
    };
    let limit = validate::limit(ctx.q("limit"), 25, 100)?;
    let before = decode_cursor(ctx.q("cursor"))?;
    // A projectId filter keeps only that project's endpoints (org-wide ones are excluded).
    let by_project = match ctx.q("projectId") {
        None => None,
        Some(raw) => Some(parse_id(raw, "prj").ok_or_else(|| {
            ApiError::validation(format!("projectId: {raw:?} is not a valid project id"))
                .with_details(json!({ "field": "projectId" }))
        })?),
    };
    let org = st
        .orgs
        .get(&ctx.acting)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let ids = &org.endpoints;
    let body = page(
        ids.len(),
        |i| ids.get(i).and_then(|e| st.endpoints.get(e)),
        |e| e.seq,
        |e| {
            by_project.is_none_or(|p| e.project == Some(p))
                && status.as_ref().is_none_or(|s| &e.status == s)
        },
        before,
        limit,
        Endpoint::json,
    );
    Ok(Out::ok(body))
}

/// The acting org's endpoint named by the path: malformed → 422, otherwise unknown → 404.
fn own(st: &State, ctx: &Ctx) -> Result<Uuid, ApiError> {
    let raw = ctx.param(0);
    let id = (raw.len() == 36)
        .then(|| Uuid::try_parse(raw).ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::validation(format!("{raw:?} is not a valid endpoint id (a UUID)"))
        })?;
    match st.endpoints.get(&id) {
        Some(e) if e.org == ctx.acting => Ok(id),
        _ => Err(ApiError::not_found("webhook endpoint")),
    }
}

pub fn get(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let id = own(st, ctx)?;
    Ok(Out::ok(st.endpoints[&id].json()))
}

pub fn patch(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let id = own(st, ctx)?;
    let map = ctx.object(
        &[
            "url",
            "events",
            "description",
            "status",
            "metadata",
            "scope",
        ],
        true,
    )?;
    if map.is_empty() {
        return Err(ApiError::validation("at least one field must be sent"));
    }
    let url = map.get("url").map(check_url).transpose()?;
    let events = map.get("events").map(check_events).transpose()?;
    let desc = description(&map)?;
    let status = match map.get("status") {
        None => None,
        Some(Value::String(s)) if s == "active" || s == "paused" => Some(s.clone()),
        Some(_) => {
            return Err(ApiError::validation(
                "status: must be \"active\" or \"paused\"",
            ));
        }
    };
    let scope = map
        .get("scope")
        .map(|v| check_scope(v, ctx, st))
        .transpose()?;
    writable(st, ctx)?;
    let ep = st
        .endpoints
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    let mut metadata = ep.metadata.clone();
    if let Some(v) = map.get("metadata") {
        validate::merge_metadata(&mut metadata, v)?;
    }
    ep.metadata = metadata;
    if let Some(u) = url {
        ep.url = u;
    }
    if let Some(e) = events {
        ep.events = e;
    }
    if let Some(d) = desc {
        ep.description = d;
    }
    if let Some(s) = status {
        ep.status = s;
    }
    if let Some(s) = scope {
        ep.scope = s;
    }
    ep.updated_us = ctx.now;
    Ok(Out::ok(ep.json()))
}

pub fn delete(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let id = own(st, ctx)?;
    ctx.object(&[], true)?;
    writable(st, ctx)?;
    st.endpoints.remove(&id);
    if let Some(o) = st.orgs.get_mut(&ctx.acting) {
        o.endpoints.retain(|e| *e != id);
    }
    Ok(Out::ok(json!({ "id": id, "deleted": true })))
}

pub fn rotate(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    let id = own(st, ctx)?;
    ctx.object(&[], true)?;
    writable(st, ctx)?;
    let secret = new_signing_secret();
    let ep = st
        .endpoints
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    ep.secret_hash = sha256_hex(secret.as_bytes());
    ep.previous_secret_expires_us = Some(ctx.now + GRACE_US);
    ep.updated_us = ctx.now;
    Ok(Out::ok(json!({
        "endpointId": id,
        "signingSecret": secret,
        "previousSecretExpiresAt": fmt_z(ctx.now + GRACE_US),
        "warning": "store the new signing secret now; it is not shown again. The previous secret stays valid until previousSecretExpiresAt.",
    })))
}
