//! Child organizations: create, list, get, patch, suspend/resume, archive (rows 1–7).
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Ctx, Out, child, page};
use crate::error::ApiError;
use crate::ids::org_id;
use crate::model::{CreditConfig, CreditEvent, Metadata, Org, OrgStatus, State};
use crate::time::fmt_org;
use crate::validate::{self, decode_cursor, email};

pub fn create(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let acting_is_child = st.orgs.get(&ctx.acting).is_none_or(|o| o.parent.is_some());
    if acting_is_child {
        return Err(ApiError::validation(
            "the organization hierarchy is one level deep: a child organization cannot create children",
        ));
    }
    let map = ctx.object(&["name", "metadata", "billingEmail"], false)?;
    let name = validate::string(
        map.get("name")
            .ok_or_else(|| ApiError::validation("name: is required"))?,
        "name",
        1,
        128,
    )?;
    let metadata = match map.get("metadata") {
        Some(v) if !v.is_null() => validate::metadata_new(v)?,
        _ => Metadata::new(),
    };
    let billing_email = match map.get("billingEmail") {
        Some(v) if !v.is_null() => Some(email(v)?),
        _ => None,
    };
    let id = new_child(st, ctx.acting, name, metadata, billing_email, ctx.now);
    Ok(Out::created(st.orgs[&id].json()))
}

/// Inserts a new active child of `parent` with an empty wallet and returns its id.
pub fn new_child(
    st: &mut State,
    parent: Uuid,
    name: String,
    metadata: Metadata,
    billing_email: Option<String>,
    now: i64,
) -> Uuid {
    let id = Uuid::new_v4();
    let seq = st.next_seq();
    let org = Org {
        id,
        parent: Some(parent),
        name,
        status: OrgStatus::Active,
        metadata,
        billing_email,
        created_us: now,
        updated_us: now,
        archived_us: None,
        config: CreditConfig::default(),
        balance: 0,
        seq,
        children: Vec::new(),
        keys: Vec::new(),
        endpoints: Vec::new(),
        ledger: Vec::new(),
        period_start_us: 0,
        used_this_period: 0,
        projects: Vec::new(),
    };
    st.orgs.insert(id, org);
    if let Some(p) = st.orgs.get_mut(&parent) {
        p.children.push(id);
    }
    id
}

pub fn list(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let status = match ctx.q("status") {
        None => None,
        Some("active") => Some(OrgStatus::Active),
        Some("suspended") => Some(OrgStatus::Suspended),
        Some("archived") => Some(OrgStatus::Archived),
        Some(other) => {
            return Err(ApiError::validation(format!(
                "status: {other:?} is not one of active, suspended, archived"
            )));
        }
    };
    let limit = validate::limit(ctx.q("limit"), 25, 200)?;
    let before = decode_cursor(ctx.q("cursor"))?;
    let Some(me) = st.orgs.get(&ctx.acting) else {
        return Err(ApiError::not_found("organization"));
    };
    let kids = &me.children;
    let body = page(
        kids.len(),
        |i| kids.get(i).and_then(|id| st.orgs.get(id)),
        |o| o.seq,
        |o| status.is_none_or(|s| o.status == s),
        before,
        limit,
        Org::json,
    );
    Ok(Out::ok(body))
}

pub fn get(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let org = &st.orgs[&id];
    Ok(Out::ok(org.json_with_summary(org.projects.len())))
}

fn not_archived(org: &Org) -> Result<(), ApiError> {
    if org.status == OrgStatus::Archived {
        Err(
            ApiError::conflict("the organization is archived (terminal); create a new one")
                .with_details(json!({ "status": "archived" })),
        )
    } else {
        Ok(())
    }
}

pub fn patch(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let map = ctx.object(&["name", "metadata", "billingEmail", "status"], true)?;
    if map.contains_key("status") {
        return Err(ApiError::validation(
            "status: is not editable with PATCH; use suspend, resume or DELETE (archive)",
        )
        .with_details(json!({ "field": "status" })));
    }
    let org = st
        .orgs
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    not_archived(org)?;
    let name = match map.get("name") {
        Some(v) => Some(validate::string(v, "name", 1, 128)?),
        None => None,
    };
    let mut metadata = org.metadata.clone();
    if let Some(v) = map.get("metadata") {
        validate::merge_metadata(&mut metadata, v)?;
    }
    let billing = match map.get("billingEmail") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(email(v)?)),
    };
    if let Some(n) = name {
        org.name = n;
    }
    org.metadata = metadata;
    if let Some(b) = billing {
        org.billing_email = b;
    }
    if !map.is_empty() {
        org.updated_us = ctx.now;
    }
    Ok(Out::ok(org.json()))
}

/// Suspend and resume; idempotent by state, 409 on an archived org.
pub fn set_status(st: &mut State, ctx: &Ctx, to: OrgStatus) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    ctx.object(&[], true)?;
    let org = st
        .orgs
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    not_archived(org)?;
    if org.status != to {
        org.status = to;
        org.updated_us = ctx.now;
    }
    Ok(Out::ok(org.json()))
}

/// Archive: revokes the child's active keys and sweeps its balance back to the parent; its
/// webhook endpoints stay (deleted only with `--archive-webhooks delete`). Repeating it returns the same shape with zero counts.
pub fn archive(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    ctx.object(&[], true)?;
    let now = ctx.now;
    let (archived_already, key_ids, endpoint_ids, balance) = {
        let org = &st.orgs[&id];
        (
            org.status == OrgStatus::Archived,
            org.keys.clone(),
            org.endpoints.clone(),
            org.balance.max(0),
        )
    };
    if archived_already {
        let org = &st.orgs[&id];
        return Ok(Out::ok(archive_result(org, 0, 0)));
    }
    let mut revoked = 0;
    for k in key_ids {
        if let Some(key) = st.keys.get_mut(&k)
            && key.is_active(now)
        {
            key.revoked_us = Some(now);
            revoked += 1;
        }
    }
    if ctx.switches.archive_deletes_webhooks {
        for e in &endpoint_ids {
            st.endpoints.remove(e);
        }
    }
    let parent = ctx.acting;
    if balance > 0 {
        let (s1, s2) = (st.next_seq(), st.next_seq());
        let sys = |dir: &str, other: Uuid| {
            Metadata::from([
                ("direction".to_string(), dir.to_string()),
                ("counterpartyOrgId".to_string(), org_id(other)),
                ("reason".to_string(), "archive".to_string()),
            ])
        };
        let desc = Some("unspent credits reclaimed on archive".to_string());
        if let Some(p) = st.orgs.get_mut(&parent) {
            p.balance += balance;
            let after = p.balance;
            p.ledger.push(CreditEvent {
                id: Uuid::new_v4(),
                credits: balance,
                event_type: "allocation".into(),
                description: desc.clone(),
                metadata: sys("in", id),
                balance_after: after,
                created_us: now,
                seq: s1,
            });
        }
        if let Some(c) = st.orgs.get_mut(&id) {
            c.balance -= balance;
            let after = c.balance;
            c.ledger.push(CreditEvent {
                id: Uuid::new_v4(),
                credits: -balance,
                event_type: "allocation".into(),
                description: desc,
                metadata: sys("out", parent),
                balance_after: after,
                created_us: now,
                seq: s2,
            });
        }
    }
    let org = st
        .orgs
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    org.status = OrgStatus::Archived;
    org.archived_us = Some(now);
    org.updated_us = now;
    if ctx.switches.archive_deletes_webhooks {
        org.endpoints.clear();
    }
    Ok(Out::ok(archive_result(org, balance, revoked)))
}

fn archive_result(org: &Org, reclaimed: i64, revoked: u64) -> Value {
    json!({
        "id": org_id(org.id),
        "object": "organization_archive",
        "status": "archived",
        "archivedAt": org.archived_us.map(fmt_org),
        "reclaimedCredits": reclaimed,
        "revokedApiKeys": revoked,
    })
}
