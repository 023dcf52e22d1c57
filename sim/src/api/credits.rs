//! Child wallet, credit events, allocation and credit config (rows 9–13).
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Ctx, Out, child, page};
use crate::CreditEvents;
use crate::error::ApiError;
use crate::ids::{org_id, txn_id};
use crate::model::{CreditEvent, Metadata, OrgStatus, State};
use crate::time::{fmt_z, month_bounds, parse_z};
use crate::validate::{self, decode_cursor};

const EVENT_TYPES: [&str; 6] = [
    "usage",
    "refund",
    "grant",
    "purchase",
    "adjustment",
    "allocation",
];
pub const MAX_CREDITS: i64 = 1_000_000_000_000;

pub fn wallet(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    Ok(Out::ok(st.orgs[&id].wallet_json(ctx.now)))
}

pub fn events(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    list_events(st, ctx, id).map(Out::ok)
}

/// `GET /v1/credits/events`: the caller's own ledger (the acting org's), any valid key, like
/// `GET /v1/credits` (row 22). Not on a reference page; Layers' own MCP client calls it.
pub fn own_events(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    if !st.orgs.contains_key(&ctx.acting) {
        return Err(ApiError::not_found("organization"));
    }
    list_events(st, ctx, ctx.acting).map(Out::ok)
}

/// One page of org `id`'s ledger, newest first, with the row-10 filters.
fn list_events(st: &State, ctx: &Ctx, id: Uuid) -> Result<Value, ApiError> {
    let event_type = match ctx.q("eventType") {
        Some(t) if !EVENT_TYPES.contains(&t) => {
            return Err(ApiError::validation(format!(
                "eventType: {t:?} is not one of {}",
                EVENT_TYPES.join(", ")
            )));
        }
        other => other,
    };
    let ts = |name: &str| -> Result<Option<i64>, ApiError> {
        match ctx.q(name) {
            None => Ok(None),
            Some(raw) => parse_z(raw).map(Some).ok_or_else(|| {
                ApiError::validation(format!(
                    "{name}: {raw:?} must be an ISO-8601 timestamp in UTC with a Z suffix"
                ))
            }),
        }
    };
    let (since, until) = (ts("since")?, ts("until")?);
    let limit = validate::limit(ctx.q("limit"), 25, 100)?;
    let before = decode_cursor(ctx.q("cursor"))?;
    // Every simulated event is org-level, so a projectId filter matches nothing.
    let by_project = ctx.q("projectId").is_some();
    let org = &st.orgs[&id];
    let render = match ctx.switches.credit_events {
        CreditEvents::WithMetadata => CreditEvent::json,
        CreditEvents::Documented => CreditEvent::documented_json,
    };
    Ok(page(
        org.ledger.len(),
        |i| org.ledger.get(i),
        |e| e.seq,
        |e| {
            !by_project
                && event_type.is_none_or(|t| e.event_type == t)
                && since.is_none_or(|s| e.created_us >= s)
                && until.is_none_or(|u| e.created_us < u)
        },
        before,
        limit,
        render,
    ))
}

pub fn allocate(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    if ctx.idem.is_none() {
        return Err(ApiError::new(
            400,
            "IDEMPOTENCY_REQUIRED",
            "POST .../credits/allocate requires an Idempotency-Key header",
        ));
    }
    let id = child(st, ctx, ctx.param(0))?;
    let map = ctx.object(&["credits", "description", "metadata"], false)?;
    let credits = validate::integer(
        map.get("credits")
            .ok_or_else(|| ApiError::validation("credits: is required"))?,
        "credits",
        1,
        MAX_CREDITS,
    )?;
    let description = validate::opt_string(&map, "description", 500)?.flatten();
    let req_meta = match map.get("metadata") {
        Some(v) if !v.is_null() => validate::metadata_new(v)?,
        _ => Metadata::new(),
    };
    if st.orgs[&id].status == OrgStatus::Archived {
        return Err(ApiError::conflict(
            "the organization is archived; it cannot receive credits",
        ));
    }
    let parent = ctx.acting;
    let available = st.orgs.get(&parent).map_or(0, |p| p.balance);
    if available < credits {
        return Err(ApiError::new(
            402,
            "BILLING_EXHAUSTED",
            format!("the parent's prepaid balance ({available}) cannot cover {credits} credits"),
        )
        .with_details(json!({ "available": available, "requested": credits })));
    }
    let txn = Uuid::new_v4();
    let (s1, s2) = (st.next_seq(), st.next_seq());
    let with_sys = |dir: &str, other: Uuid| {
        let mut m = req_meta.clone();
        m.insert("direction".into(), dir.into());
        m.insert("counterpartyOrgId".into(), org_id(other));
        m.insert("transferId".into(), txn_id(txn));
        m
    };
    if let Some(p) = st.orgs.get_mut(&parent) {
        p.balance -= credits;
        let after = p.balance;
        p.ledger.push(CreditEvent {
            id: txn,
            credits: -credits,
            event_type: "allocation".into(),
            description: description.clone(),
            metadata: with_sys("out", id),
            balance_after: after,
            created_us: ctx.now,
            seq: s1,
        });
    }
    let meta_in = with_sys("in", parent);
    let c = st
        .orgs
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    c.balance += credits;
    let balance = c.balance;
    c.ledger.push(CreditEvent {
        id: Uuid::new_v4(),
        credits,
        event_type: "allocation".into(),
        description: description.clone(),
        metadata: meta_in,
        balance_after: balance,
        created_us: ctx.now,
        seq: s2,
    });
    let transfer = |replayed: bool| {
        json!({
            "id": txn_id(txn),
            "object": "credit_transfer",
            "organizationId": org_id(id),
            "allocated": credits,
            "description": description,
            "metadata": req_meta,
            "balance": balance,
            "available": balance.max(0),
            "created": fmt_z(ctx.now),
            "replayed": replayed,
        })
    };
    Ok(Out {
        status: 201,
        body: transfer(false),
        replay: Some(transfer(true)),
    })
}

fn config_json(st: &State, id: Uuid) -> Value {
    let org = &st.orgs[&id];
    json!({
        "organizationId": org_id(id),
        "config": org.config.json(),
        "balance": org.balance,
        "available": org.balance.max(0),
    })
}

pub fn config_get(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    Ok(Out::ok(config_json(st, id)))
}

pub fn config_patch(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    let id = child(st, ctx, ctx.param(0))?;
    let map = ctx.object(
        &["monthlyCreditCap", "refillThreshold", "refillAmount"],
        true,
    )?;
    let field = |name: &str, min: i64| -> Result<Option<Option<i64>>, ApiError> {
        match map.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => validate::integer(v, name, min, MAX_CREDITS).map(|n| Some(Some(n))),
        }
    };
    let cap = field("monthlyCreditCap", 0)?;
    let threshold = field("refillThreshold", 0)?;
    let amount = field("refillAmount", 1)?;
    let org = st
        .orgs
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    if org.status == OrgStatus::Archived {
        return Err(ApiError::conflict("the organization is archived"));
    }
    let mut cfg = org.config.clone();
    if let Some(v) = cap {
        cfg.cap = v;
    }
    if let Some(v) = threshold {
        cfg.threshold = v;
    }
    if let Some(v) = amount {
        cfg.amount = v;
    }
    if cfg.threshold.is_some() != cfg.amount.is_some() {
        return Err(ApiError::validation(
            "refill is both-or-neither: refillThreshold and refillAmount must both be set or both be null",
        )
        .with_details(json!({ "fields": ["refillThreshold", "refillAmount"] })));
    }
    if cfg != org.config {
        org.config = cfg;
        org.updated_us = ctx.now;
    }
    Ok(Out::ok(config_json(st, id)))
}

/// Adds `credits` to the parent's prepaid balance (`POST /_sim/topup`), with a `purchase`
/// row in its ledger.
pub fn topup(st: &mut State, credits: i64, now: i64) -> Value {
    let parent = st.parent_id;
    let seq = st.next_seq();
    let Some(p) = st.orgs.get_mut(&parent) else {
        return json!({ "organizationId": org_id(parent), "balance": 0 });
    };
    p.balance += credits;
    let after = p.balance;
    p.ledger.push(CreditEvent {
        id: Uuid::new_v4(),
        credits,
        event_type: "purchase".into(),
        description: Some("prepaid top-up (simulator)".into()),
        metadata: Metadata::new(),
        balance_after: after,
        created_us: now,
        seq,
    });
    json!({ "organizationId": org_id(parent), "credits": credits, "balance": after })
}

fn billing_exhausted(message: String, details: Value) -> ApiError {
    ApiError::new(402, "BILLING_EXHAUSTED", message).with_details(details)
}

/// One auto-refill of `child`: moves `refillAmount` from the parent, writing an `allocation`
/// pair marked `reason: "auto_refill"` (never an orgops marker). `Err` = the parent is short.
fn refill(st: &mut State, child: Uuid, now: i64) -> Result<Option<Value>, ApiError> {
    let Some(amount) = st.orgs.get(&child).and_then(|c| c.config.amount) else {
        return Ok(None);
    };
    let parent = st.parent_id;
    let parent_balance = st.orgs.get(&parent).map_or(0, |p| p.balance);
    if parent_balance < amount {
        return Err(billing_exhausted(
            format!(
                "auto-refill of {amount} credits failed: the parent's prepaid balance is {parent_balance}"
            ),
            json!({ "reason": "parent_exhausted", "parentAvailable": parent_balance.max(0), "requested": amount }),
        ));
    }
    let txn = Uuid::new_v4();
    let (s1, s2) = (st.next_seq(), st.next_seq());
    let meta = |dir: &str, other: Uuid| {
        Metadata::from([
            ("direction".to_string(), dir.to_string()),
            ("counterpartyOrgId".to_string(), org_id(other)),
            ("transferId".to_string(), txn_id(txn)),
            ("reason".to_string(), "auto_refill".to_string()),
        ])
    };
    let desc = Some("auto-refill".to_string());
    let mut parent_after = 0;
    if let Some(p) = st.orgs.get_mut(&parent) {
        p.balance -= amount;
        parent_after = p.balance;
        p.ledger.push(CreditEvent {
            id: txn,
            credits: -amount,
            event_type: "allocation".into(),
            description: desc.clone(),
            metadata: meta("out", child),
            balance_after: parent_after,
            created_us: now,
            seq: s1,
        });
    }
    let meta_in = meta("in", parent);
    if let Some(c) = st.orgs.get_mut(&child) {
        c.balance += amount;
        let after = c.balance;
        c.ledger.push(CreditEvent {
            id: Uuid::new_v4(),
            credits: amount,
            event_type: "allocation".into(),
            description: desc,
            metadata: meta_in,
            balance_after: after,
            created_us: now,
            seq: s2,
        });
    }
    Ok(Some(json!({
        "transferId": txn_id(txn),
        "credits": amount,
        "parentBalance": parent_after,
    })))
}

/// Whether auto-refill is on and `available` is below the threshold.
fn wants_refill(st: &State, child: Uuid) -> bool {
    st.orgs.get(&child).is_some_and(|c| {
        c.config.amount.is_some() && c.config.threshold.is_some_and(|t| c.balance.max(0) < t)
    })
}

/// Usage in a child (`POST /_sim/spend`), as a generation settling would: the monthly cap,
/// then the balance (with one auto-refill first when it is on and `available` is below the
/// threshold), the `usage` ledger row, then one auto-refill if `available` fell below the
/// threshold. The caller has checked that `child` is a live, active child.
pub fn spend(st: &mut State, child: Uuid, credits: i64, now: i64) -> Result<Value, ApiError> {
    let (period_start, _) = month_bounds(now);
    {
        let c = st
            .orgs
            .get_mut(&child)
            .ok_or_else(|| ApiError::not_found("organization"))?;
        if c.period_start_us != period_start {
            c.period_start_us = period_start;
            c.used_this_period = 0;
        }
        if let Some(cap) = c.config.cap
            && c.used_this_period + credits > cap
        {
            return Err(billing_exhausted(
                format!(
                    "the monthly credit cap ({cap}) would be exceeded: {} used this period, {credits} requested",
                    c.used_this_period
                ),
                json!({
                    "reason": "monthly_cap",
                    "monthlyCreditCap": cap,
                    "usedThisPeriod": c.used_this_period,
                    "requested": credits,
                }),
            ));
        }
    }
    let mut refills = Vec::new();
    let short = |st: &State| st.orgs.get(&child).map_or(0, |c| c.balance.max(0)) < credits;
    if short(st) && wants_refill(st, child) {
        refills.extend(refill(st, child, now)?);
    }
    if short(st) {
        let available = st.orgs.get(&child).map_or(0, |c| c.balance.max(0));
        return Err(billing_exhausted(
            format!("available credits ({available}) cannot cover {credits}"),
            json!({ "reason": "insufficient_balance", "available": available, "requested": credits }),
        ));
    }
    let seq = st.next_seq();
    let c = st
        .orgs
        .get_mut(&child)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    c.balance -= credits;
    c.used_this_period += credits;
    let after = c.balance;
    c.ledger.push(CreditEvent {
        id: Uuid::new_v4(),
        credits: -credits,
        event_type: "usage".into(),
        description: Some("simulated usage".into()),
        metadata: Metadata::new(),
        balance_after: after,
        created_us: now,
        seq,
    });
    let mut refill_failed = Value::Null;
    if wants_refill(st, child) {
        match refill(st, child, now) {
            Ok(r) => refills.extend(r),
            Err(e) => {
                refill_failed =
                    json!({ "code": e.code, "message": e.message, "details": e.details })
            }
        }
    }
    let c = &st.orgs[&child];
    Ok(json!({
        "organizationId": org_id(child),
        "spent": credits,
        "balance": c.balance,
        "available": c.balance.max(0),
        "usedThisPeriod": c.used_this_period,
        "monthlyCreditCap": c.config.cap,
        "refills": refills,
        "refillFailed": refill_failed,
    }))
}
