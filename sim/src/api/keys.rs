//! Child API keys: mint, list, rotate, delete (rows 14–17).
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ADMIN, Ctx, Out, child, page};
use crate::error::ApiError;
use crate::ids::{new_api_key, parse_id, sha256_hex};
use crate::model::{ApiKeyRec, GRACE_US, OrgStatus, State};
use crate::scopes;
use crate::validate::{self, decode_cursor};

fn parse_scopes(v: Option<&Value>, caller: &[String]) -> Result<Vec<String>, ApiError> {
    let Some(Value::Array(items)) = v else {
        return Err(ApiError::validation(
            "scopes: is required (an array of 1 to 64 scopes)",
        ));
    };
    if items.is_empty() || items.len() > 64 {
        return Err(ApiError::validation("scopes: must have 1 to 64 entries"));
    }
    let mut out: Vec<String> = Vec::new();
    for it in items {
        let Value::String(s) = it else {
            return Err(ApiError::validation("scopes: entries must be strings"));
        };
        if !scopes::known(s) {
            return Err(ApiError::validation(format!(
                "scopes: {s:?} is not a known scope; the catalogue is {}",
                scopes::CATALOG.join(", ")
            ))
            .with_details(json!({ "field": "scopes", "scope": s, "catalog": scopes::CATALOG })));
        }
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    if out.iter().any(|s| s == ADMIN) {
        return Err(ApiError::new(
            403,
            "FORBIDDEN_SCOPE",
            "org:admin can never be delegated to a child key",
        )
        .with_details(json!({ "scope": ADMIN })));
    }
    if let Some(s) = out.iter().find(|s| !scopes::covered(caller, s)) {
        return Err(ApiError::new(
            403,
            "FORBIDDEN_SCOPE",
            format!("scope {s:?} is not among the calling key's scopes"),
        )
        .with_details(json!({ "scope": s })));
    }
    Ok(out)
}

fn new_key(
    st: &mut State,
    ctx: &Ctx,
    org: Uuid,
    name: String,
    env: String,
    scopes: Vec<String>,
) -> (ApiKeyRec, String) {
    let (secret, prefix) = new_api_key(&env);
    let rec = ApiKeyRec {
        id: Uuid::new_v4(),
        org,
        name,
        prefix,
        env,
        scopes,
        hash: sha256_hex(secret.as_bytes()),
        created_us: ctx.now,
        last_used_us: None,
        rotated_us: None,
        revoked_us: None,
        grace_until_us: None,
        superseded_by: None,
        seq: st.next_seq(),
    };
    st.insert_key(rec.clone());
    (rec, secret)
}

fn writable(st: &State, id: Uuid) -> Result<(), ApiError> {
    if st.orgs[&id].status == OrgStatus::Archived {
        return Err(ApiError::conflict("the organization is archived"));
    }
    Ok(())
}

pub fn mint(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let map = ctx.object(&["name", "scopes", "env"], false)?;
    let name = validate::string(
        map.get("name")
            .ok_or_else(|| ApiError::validation("name: is required"))?,
        "name",
        1,
        120,
    )?;
    let env = match map.get("env") {
        None | Some(Value::Null) => "live".to_string(),
        Some(Value::String(s)) if s == "live" || s == "test" => s.clone(),
        Some(_) => return Err(ApiError::validation("env: must be \"live\" or \"test\"")),
    };
    let scopes = parse_scopes(map.get("scopes"), &ctx.scopes)?;
    writable(st, id)?;
    let (rec, secret) = new_key(st, ctx, id, name, env, scopes);
    Ok(Out::created(
        json!({ "apiKey": rec.json(ctx.now, ctx.tier), "secret": secret }),
    ))
}

pub fn list(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let limit = validate::limit(ctx.q("limit"), 25, 100)?;
    let before = decode_cursor(ctx.q("cursor"))?;
    let ids = &st.orgs[&id].keys;
    let body = page(
        ids.len(),
        |i| ids.get(i).and_then(|k| st.keys.get(k)),
        |k| k.seq,
        |_| true,
        before,
        limit,
        |k| k.json(ctx.now, ctx.tier),
    );
    Ok(Out::ok(body))
}

/// The child's key named by path param 1: malformed → 422, not this child's → 404.
fn child_key(st: &State, ctx: &Ctx, org: Uuid) -> Result<Uuid, ApiError> {
    let raw = ctx.param(1);
    let kid = parse_id(raw, "key")
        .ok_or_else(|| ApiError::validation(format!("{raw:?} is not a valid API key id")))?;
    match st.keys.get(&kid) {
        Some(k) if k.org == org => Ok(kid),
        _ => Err(ApiError::not_found("API key")),
    }
}

pub fn rotate(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let kid = child_key(st, ctx, id)?;
    ctx.object(&[], true)?;
    writable(st, id)?;
    let old = st.keys[&kid].clone();
    if let Some(next) = old.superseded_by {
        return Err(
            ApiError::conflict("this key was already rotated; rotate the current key")
                .with_details(json!({ "supersededBy": crate::ids::key_id(next) })),
        );
    }
    if !old.is_active(ctx.now) {
        return Err(ApiError::conflict(
            "this key is revoked; mint a new key instead",
        ));
    }
    let (rec, secret) = new_key(
        st,
        ctx,
        id,
        old.name.clone(),
        old.env.clone(),
        old.scopes.clone(),
    );
    if let Some(k) = st.keys.get_mut(&kid) {
        k.grace_until_us = Some(ctx.now + GRACE_US);
        k.superseded_by = Some(rec.id);
        k.rotated_us = Some(ctx.now);
    }
    Ok(Out::ok(
        json!({ "apiKey": rec.json(ctx.now, ctx.tier), "secret": secret }),
    ))
}

pub fn delete(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let kid = child_key(st, ctx, id)?;
    ctx.object(&[], true)?;
    let key = st
        .keys
        .get_mut(&kid)
        .ok_or_else(|| ApiError::not_found("API key"))?;
    if key.is_active(ctx.now) {
        key.revoked_us = Some(ctx.now);
    } else if key.revoked_us.is_none() {
        // Grace ended: record when it stopped working.
        key.revoked_us = key.grace_until_us;
    }
    Ok(Out::ok(
        json!({ "apiKey": key.json(ctx.now, ctx.tier), "deleted": true }),
    ))
}
