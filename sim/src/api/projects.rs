//! Projects of the acting org (rows 33–35) and flat-project migration into children (row 8).
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Ctx, Out, page};
use crate::error::ApiError;
use crate::ids::{org_id, parse_id, prj_id};
use crate::model::{Metadata, OrgStatus, Project, State};
use crate::validate::{self, decode_cursor, email};

pub const READ: &str = "projects:read";
pub const WRITE: &str = "projects:write";
/// Project `metadata` is capped at 8 KB serialized (row 33).
const META_MAX_BYTES: usize = 8 * 1024;
/// At most this many projects in one migrate call (assumed).
const MIGRATE_MAX: usize = 1000;

fn field_err(field: &str, msg: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("{field}: {msg}")).with_details(json!({ "field": field }))
}

/// IANA-shaped: `UTC`, or `Area/Location[/More]` of letters, digits, `_`, `+`, `-`
/// (checked by shape; the simulator carries no time-zone database).
fn timezone(v: &Value) -> Result<String, ApiError> {
    let tz = validate::string(v, "timezone", 1, 64)?;
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
    };
    let ok = tz == "UTC"
        || (tz.contains('/')
            && tz.split('/').all(part_ok)
            && tz.starts_with(|c: char| c.is_ascii_uppercase()));
    if !ok {
        return Err(field_err(
            "timezone",
            "must be an IANA time zone such as \"UTC\" or \"Europe/Berlin\"",
        ));
    }
    Ok(tz)
}

fn opt<T>(
    map: &Map<String, Value>,
    name: &str,
    f: impl Fn(&Value) -> Result<T, ApiError>,
) -> Result<Option<T>, ApiError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => f(v).map(Some),
    }
}

fn writable(st: &State, ctx: &Ctx) -> Result<(), ApiError> {
    match st.orgs.get(&ctx.acting).map(|o| o.status) {
        Some(OrgStatus::Archived) => Err(ApiError::conflict("the organization is archived")),
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("organization")),
    }
}

pub fn create(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require(WRITE)?;
    let map = ctx.object(
        &[
            "name",
            "timezone",
            "customerExternalId",
            "ownerEmail",
            "primaryLanguage",
            "metadata",
            "appName",
            "appDescription",
        ],
        false,
    )?;
    let name = validate::string(
        map.get("name")
            .ok_or_else(|| field_err("name", "is required"))?,
        "name",
        3,
        30,
    )?;
    let tz = timezone(map.get("timezone").ok_or_else(|| {
        field_err(
            "timezone",
            "is required (use \"UTC\" if you have no preference)",
        )
    })?)?;
    let external = opt(&map, "customerExternalId", |v| {
        validate::string(v, "customerExternalId", 1, 255)
    })?;
    let owner = opt(&map, "ownerEmail", |v| {
        email(v).map_err(|_| field_err("ownerEmail", "must be an email address"))
    })?;
    let language = opt(&map, "primaryLanguage", |v| {
        validate::string(v, "primaryLanguage", 2, 16)
    })?
    .unwrap_or_else(|| "en".into());
    let app_name = opt(&map, "appName", |v| validate::string(v, "appName", 3, 30))?;
    let app_description = opt(&map, "appDescription", |v| {
        validate::string(v, "appDescription", 100, 1000)
    })?;
    let metadata = match map.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            let size = serde_json::to_vec(m).map_or(usize::MAX, |b| b.len());
            if size > META_MAX_BYTES {
                return Err(field_err("metadata", "must be at most 8 KB"));
            }
            m.clone()
        }
        Some(_) => return Err(field_err("metadata", "must be an object")),
    };
    writable(st, ctx)?;
    if let Some(x) = &external {
        let taken = st.orgs[&ctx.acting]
            .projects
            .iter()
            .filter_map(|p| st.projects.get(p))
            .find(|p| p.customer_external_id.as_ref() == Some(x));
        if let Some(p) = taken {
            return Err(ApiError::conflict(format!(
                "customerExternalId {x:?} is already bound to project {}",
                prj_id(p.id)
            ))
            .with_details(json!({ "field": "customerExternalId", "projectId": prj_id(p.id) })));
        }
    }
    let p = Project {
        id: Uuid::new_v4(),
        org: ctx.acting,
        name,
        timezone: tz,
        customer_external_id: external,
        owner_email: owner,
        primary_language: language,
        app_name,
        app_description,
        metadata,
        created_us: ctx.now,
        updated_us: ctx.now,
        seq: st.next_seq(),
        in_flight: false,
    };
    let body = p.json();
    if let Some(o) = st.orgs.get_mut(&ctx.acting) {
        o.projects.push(p.id);
    }
    st.projects.insert(p.id, p);
    Ok(Out::created(body))
}

pub fn list(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require(READ)?;
    let archived_only = match ctx.q("status") {
        None | Some("active") => false,
        Some("archived") => true,
        Some(other) => {
            return Err(field_err(
                "status",
                format!("{other:?} is not one of active, archived"),
            ));
        }
    };
    let limit = validate::limit(ctx.q("limit"), 25, 200)?;
    let before = decode_cursor(ctx.q("cursor"))?;
    let search = ctx.q("search").map(str::to_lowercase);
    let external = ctx.q("customerExternalId");
    let org = st
        .orgs
        .get(&ctx.acting)
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let ids = &org.projects;
    let body = page(
        ids.len(),
        |i| ids.get(i).and_then(|p| st.projects.get(p)),
        |p| p.seq,
        |p| {
            !archived_only
                && search
                    .as_ref()
                    .is_none_or(|s| p.name.to_lowercase().contains(s))
                && external.is_none_or(|x| p.customer_external_id.as_deref() == Some(x))
        },
        before,
        limit,
        Project::json,
    );
    Ok(Out::ok(body))
}

pub fn get(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require(READ)?;
    let raw = ctx.param(0);
    let id = parse_id(raw, "prj").ok_or_else(|| {
        ApiError::validation(format!("{raw:?} is not a valid project id"))
            .with_details(json!({ "field": "projectId" }))
    })?;
    match st.projects.get(&id) {
        Some(p) if p.org == ctx.acting => Ok(Out::ok(p.json())),
        _ => Err(ApiError::not_found("project")),
    }
}

/// `POST /v1/organizations/migrate`: one new child per distinct name, each mapped project
/// moved into its child; nothing moves if any mapped project has work in flight.
pub fn migrate(st: &mut State, ctx: &Ctx) -> Result<Out, ApiError> {
    ctx.require_admin()?;
    if st.orgs.get(&ctx.acting).is_none_or(|o| o.parent.is_some()) {
        return Err(ApiError::validation(
            "the organization hierarchy is one level deep: a child organization cannot migrate projects into children",
        ));
    }
    let map = ctx.object(&["mapping"], false)?;
    let Some(Value::Object(mapping)) = map.get("mapping") else {
        return Err(field_err(
            "mapping",
            "is required: an object of project id → child organization name",
        ));
    };
    if mapping.is_empty() || mapping.len() > MIGRATE_MAX {
        return Err(field_err(
            "mapping",
            format!("must map 1 to {MIGRATE_MAX} projects"),
        ));
    }
    // Validate everything before changing anything.
    let mut groups: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut busy = Vec::new();
    for (raw, name) in mapping {
        let id = parse_id(raw, "prj")
            .ok_or_else(|| field_err("mapping", format!("{raw:?} is not a valid project id")))?;
        let name = validate::string(name, "mapping", 1, 128).map_err(|_| {
            field_err(
                "mapping",
                format!("the child name for {raw} must be a string of 1 to 128 characters"),
            )
        })?;
        match st.projects.get(&id) {
            Some(p) if p.org == ctx.acting => {
                if p.in_flight {
                    busy.push(prj_id(id));
                }
            }
            _ => missing.push(raw.clone()),
        }
        let ids = groups.entry(name).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::new(
            404,
            "NOT_FOUND",
            format!(
                "project(s) not found in this organization: {}",
                missing.join(", ")
            ),
        )
        .with_details(json!({ "projectIds": missing })));
    }
    if !busy.is_empty() {
        return Err(ApiError::conflict(format!(
            "project(s) with an execution in flight: {}; nothing was migrated, retry when they finish",
            busy.join(", ")
        ))
        .with_details(json!({ "projectIds": busy })));
    }
    writable(st, ctx)?;
    let parent = ctx.acting;
    let mut children = Vec::new();
    let mut moved = 0usize;
    for (name, ids) in groups {
        let child =
            super::orgs::new_child(st, parent, name.clone(), Metadata::new(), None, ctx.now);
        for id in &ids {
            if let Some(p) = st.projects.get_mut(id) {
                p.org = child;
                p.updated_us = ctx.now;
            }
            moved += 1;
        }
        if let Some(po) = st.orgs.get_mut(&parent) {
            po.projects.retain(|p| !ids.contains(p));
        }
        let mut owned = ids.clone();
        owned.sort_by_key(|p| st.projects.get(p).map_or(0, |p| p.seq));
        if let Some(c) = st.orgs.get_mut(&child) {
            c.projects = owned;
        }
        children.push(json!({
            "id": org_id(child),
            "name": name,
            "projectIds": ids.iter().map(|p| prj_id(*p)).collect::<Vec<_>>(),
        }));
    }
    Ok(Out::created(json!({
        "projectsMoved": moved,
        "childrenCreated": children.len(),
        "children": children,
    })))
}
