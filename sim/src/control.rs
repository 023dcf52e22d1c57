//! The `/_sim/` test and chaos API (only with `--control`): no auth, no faults, no limits.
use serde_json::{Map, Value, json};

use crate::api::credits::{self, MAX_CREDITS};
use crate::api::webhooks;
use crate::error::ApiError;
use crate::faults::FaultConfig;
use crate::http::Reply;
use crate::ids::{org_id, parse_id, prj_id};
use crate::model::{Org, OrgStatus, State};
use crate::router::{Matched, Op};
use crate::store::Seed;
use crate::time::fmt_z;
use crate::validate::{self, object};
use crate::{Shared, lock};

/// At most ten years per `POST /_sim/clock` call.
const MAX_ADVANCE_SECS: i64 = 10 * 366 * 86_400;

pub fn handle(
    shared: &Shared,
    matched: &Matched,
    query: Option<&str>,
    body: &[u8],
    rid: &str,
) -> Reply {
    let op = matched.op;
    if op == Op::SimState {
        let bytes = dump(&lock(&shared.state), shared);
        return Reply {
            status: 200,
            body: bytes.into(),
            headers: Vec::new(),
        };
    }
    match run(shared, matched, query, body) {
        Ok(v) => Reply::json(200, &v),
        Err(e) => e.reply(rid),
    }
}

fn run(
    shared: &Shared,
    matched: &Matched,
    query: Option<&str>,
    body: &[u8],
) -> Result<Value, ApiError> {
    match matched.op {
        Op::SimCounters => Ok(counters(shared)),
        Op::SimWrites => Ok(shared.counters.writes_json()),
        Op::SimReset => {
            {
                let mut st = lock(&shared.state);
                let fresh = State::fresh(Seed {
                    parent_key: &st.parent_key,
                    parent_id: st.parent_id,
                    parent_key_id: st.parent_key_id,
                    credits: shared.parent_credits,
                    scopes: &shared.parent_scopes,
                    clock_offset_us: st.clock_offset_us,
                });
                *st = fresh;
            }
            lock(&shared.limiter).clear();
            shared.counters.clear();
            shared.dirty.notify_one();
            Ok(json!({ "reset": true }))
        }
        Op::SimFaultsGet => Ok(faults_json(shared)),
        Op::SimFaultsPut => {
            let cfg = parse_faults(body)?;
            cfg.validate().map_err(|e| {
                let field = e.split_whitespace().next().unwrap_or("").to_string();
                ApiError::validation(e).with_details(json!({ "field": field }))
            })?;
            *shared.faults.write().unwrap_or_else(|p| p.into_inner()) = cfg;
            Ok(faults_json(shared))
        }
        Op::SimClockGet => Ok(clock_json(&lock(&shared.state))),
        Op::SimClock => {
            let map = object(body, &["advanceSeconds"], false)?;
            let secs = validate::integer(
                required(&map, "advanceSeconds")?,
                "advanceSeconds",
                0,
                MAX_ADVANCE_SECS,
            )?;
            let mut st = lock(&shared.state);
            st.clock_offset_us += secs * 1_000_000;
            let v = clock_json(&st);
            drop(st);
            shared.dirty.notify_one();
            Ok(v)
        }
        Op::SimTopup => {
            let map = object(body, &["credits"], false)?;
            let n = validate::integer(required(&map, "credits")?, "credits", 1, MAX_CREDITS)?;
            let mut st = lock(&shared.state);
            let now = st.now();
            let v = credits::topup(&mut st, n, now);
            drop(st);
            shared.dirty.notify_one();
            Ok(v)
        }
        Op::SimSpend => {
            let map = object(body, &["orgId", "credits"], false)?;
            let raw = validate::string(required(&map, "orgId")?, "orgId", 1, 64)?;
            let n = validate::integer(required(&map, "credits")?, "credits", 1, MAX_CREDITS)?;
            let id = parse_id(&raw, "org").ok_or_else(|| {
                ApiError::validation(format!("orgId: {raw:?} is not a valid organization id"))
                    .with_details(json!({ "field": "orgId" }))
            })?;
            let mut st = lock(&shared.state);
            let now = st.now();
            match st.orgs.get(&id) {
                Some(o) if o.parent == Some(st.parent_id) => match o.status {
                    OrgStatus::Active => {}
                    OrgStatus::Suspended => return Err(ApiError::kill_switch("organization")),
                    OrgStatus::Archived => {
                        return Err(ApiError::conflict(
                            "the organization is archived; it cannot spend",
                        ));
                    }
                },
                _ => return Err(ApiError::not_found("organization")),
            }
            if st.kill_switch {
                return Err(ApiError::kill_switch("organization"));
            }
            let r = credits::spend(&mut st, id, n, now);
            drop(st);
            shared.dirty.notify_one();
            r
        }
        Op::SimSwitchesGet => Ok(switches_json(&lock(&shared.state))),
        Op::SimAssumptionsGet => Ok(shared.switches.view()),
        Op::SimAssumptionsPatch => shared
            .switches
            .patch(body)
            .map_err(|e| ApiError::new(e.status, e.code, e.message)),
        Op::SimSwitchesPatch => {
            let map = object(body, &["killSwitch", "parentKeyRevoked"], false)?;
            let flag = |name: &str| -> Result<Option<bool>, ApiError> {
                match map.get(name) {
                    None => Ok(None),
                    Some(Value::Bool(b)) => Ok(Some(*b)),
                    Some(_) => Err(
                        ApiError::validation(format!("{name}: must be true or false"))
                            .with_details(json!({ "field": name })),
                    ),
                }
            };
            let (kill, revoked) = (flag("killSwitch")?, flag("parentKeyRevoked")?);
            let mut st = lock(&shared.state);
            if let Some(k) = kill {
                st.kill_switch = k;
            }
            if let Some(r) = revoked {
                st.parent_key_revoked = r;
            }
            let v = switches_json(&st);
            drop(st);
            shared.dirty.notify_one();
            Ok(v)
        }
        Op::SimProjectInFlight => {
            let raw = matched.params.first().map(String::as_str).unwrap_or("");
            let id = parse_id(raw, "prj").ok_or_else(|| {
                ApiError::validation(format!("projectId: {raw:?} is not a valid project id"))
                    .with_details(json!({ "field": "projectId" }))
            })?;
            let map = object(body, &["inFlight"], false)?;
            let Value::Bool(flag) = required(&map, "inFlight")? else {
                return Err(ApiError::validation("inFlight: must be true or false")
                    .with_details(json!({ "field": "inFlight" })));
            };
            let mut st = lock(&shared.state);
            let p = st
                .projects
                .get_mut(&id)
                .ok_or_else(|| ApiError::not_found("project"))?;
            p.in_flight = *flag;
            let v = json!({
                "projectId": prj_id(p.id),
                "organizationId": org_id(p.org),
                "inFlight": p.in_flight,
            });
            drop(st);
            shared.dirty.notify_one();
            Ok(v)
        }
        Op::SimWebhookRecipients => {
            let q = validate::query_pairs(query);
            let get = |n: &str| q.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
            if let Some((k, _)) = q
                .iter()
                .find(|(k, _)| !["orgId", "projectId", "eventType"].contains(&k.as_str()))
            {
                return Err(
                    ApiError::validation(format!("unknown query parameter {k:?}"))
                        .with_details(json!({ "field": k })),
                );
            }
            let raw = get("orgId").ok_or_else(|| {
                ApiError::validation("orgId: is required").with_details(json!({ "field": "orgId" }))
            })?;
            let org = parse_id(raw, "org").ok_or_else(|| {
                ApiError::validation(format!("orgId: {raw:?} is not a valid organization id"))
                    .with_details(json!({ "field": "orgId" }))
            })?;
            let project = match get("projectId") {
                None => None,
                Some(p) => Some(parse_id(p, "prj").ok_or_else(|| {
                    ApiError::validation(format!("projectId: {p:?} is not a valid project id"))
                        .with_details(json!({ "field": "projectId" }))
                })?),
            };
            let event = get("eventType");
            if let Some(e) = event
                && !webhooks::EVENT_CATALOG.contains(&e)
            {
                return Err(ApiError::validation(format!(
                    "eventType: {e:?} is not in the event catalog"
                ))
                .with_details(json!({ "field": "eventType" })));
            }
            let st = lock(&shared.state);
            let o = st
                .orgs
                .get(&org)
                .ok_or_else(|| ApiError::not_found("organization"))?;
            Ok(json!({
                "organizationId": org_id(org),
                "status": o.status.name(),
                "deliveriesHeld": o.status != OrgStatus::Active,
                "endpoints": webhooks::recipients(&st, org, project, event),
            }))
        }
        _ => Err(ApiError::not_found("route")),
    }
}

/// The fault config of a PUT body; a refusal names the offending top-level field.
fn parse_faults(body: &[u8]) -> Result<FaultConfig, ApiError> {
    let map = object(body, FAULT_FIELDS, false)?;
    for (k, v) in &map {
        let one = Value::Object(Map::from_iter([(k.clone(), v.clone())]));
        if let Err(e) = serde_json::from_value::<FaultConfig>(one) {
            return Err(
                ApiError::validation(format!("{k}: {e}")).with_details(json!({ "field": k }))
            );
        }
    }
    serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::validation(format!("invalid fault config: {e}")))
}

const FAULT_FIELDS: &[&str] = &[
    "error5xx",
    "rateLimit429",
    "loseResponse",
    "reset",
    "latency",
    "latencyMs",
    "loseResponseMode",
    "slowCommit",
    "slowCommitMs",
    "lateCommit",
    "read",
    "write",
];

fn required<'a>(map: &'a Map<String, Value>, name: &str) -> Result<&'a Value, ApiError> {
    map.get(name).ok_or_else(|| {
        ApiError::validation(format!("{name}: is required")).with_details(json!({ "field": name }))
    })
}

fn clock_json(st: &State) -> Value {
    json!({
        "now": fmt_z(st.now()),
        "offsetSeconds": st.clock_offset_us / 1_000_000,
    })
}

fn switches_json(st: &State) -> Value {
    json!({ "killSwitch": st.kill_switch, "parentKeyRevoked": st.parent_key_revoked })
}

fn faults_json(shared: &Shared) -> Value {
    let cfg = shared
        .faults
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    serde_json::to_value(cfg).unwrap_or(Value::Null)
}

fn counters(shared: &Shared) -> Value {
    let mut rows: Vec<Value> = shared
        .counters
        .rows()
        .into_iter()
        .map(|(m, route, status, n)| {
            json!({ "method": m, "route": route, "status": status, "count": n })
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    json!({
        "requests": rows,
        "faultsInjected": shared.counters.faults_injected(),
    })
}

fn org_entry(o: &Org, now: i64) -> Value {
    let mut v = o.json();
    v["creditConfig"] = o.config.json();
    v["balance"] = json!(o.balance);
    v["available"] = json!(o.balance.max(0));
    v["usedThisPeriod"] = json!(o.used_in_period(now));
    v
}

fn write_array(out: &mut Vec<u8>, name: &str, items: impl Iterator<Item = Value>) {
    out.extend_from_slice(format!(",\"{name}\":[").as_bytes());
    for (i, v) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, &v);
    }
    out.push(b']');
}

/// The whole state, written piece by piece so 100k orgs do not build one huge JSON tree.
/// Never includes secrets or their hashes.
fn dump(st: &State, shared: &Shared) -> Vec<u8> {
    let now = st.now();
    let mut all: Vec<&Org> = st.orgs.values().collect();
    all.sort_by_key(|o| o.seq);
    let mut keys: Vec<_> = st.keys.values().collect();
    keys.sort_by_key(|k| k.seq);
    let mut eps: Vec<_> = st.endpoints.values().collect();
    eps.sort_by_key(|e| e.seq);
    let parent = st.orgs.get(&st.parent_id);
    let head = json!({
        "parent": {
            "orgId": org_id(st.parent_id),
            "name": parent.map(|p| p.name.clone()),
            "balance": parent.map_or(0, |p| p.balance),
        },
        "tier": shared.tier.name(),
        "clock": clock_json(st),
        "switches": switches_json(st),
        "idempotencyKeys": st.idem.len(),
        "idempotencyInFlight": st.in_flight.len(),
        "rateLimitAlgorithm": shared.rate_limit_algorithm.name(),
    });
    let mut out = serde_json::to_vec(&head).unwrap_or_else(|_| b"{\"parent\":null}".to_vec());
    out.pop(); // reopen the object
    let children = all.iter().filter(|o| o.parent.is_some());
    write_array(&mut out, "orgs", children.map(|o| org_entry(o, now)));
    write_array(
        &mut out,
        "apiKeys",
        keys.iter().map(|k| k.json(now, shared.tier)),
    );
    write_array(&mut out, "webhookEndpoints", eps.iter().map(|e| e.json()));
    let mut projects: Vec<_> = st.projects.values().collect();
    projects.sort_by_key(|p| p.seq);
    write_array(
        &mut out,
        "projects",
        projects.iter().map(|p| {
            let mut v = p.json();
            v["inFlight"] = json!(p.in_flight);
            v
        }),
    );
    out.extend_from_slice(b",\"ledgers\":{");
    for (i, o) in all.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut out, &org_id(o.id));
        out.push(b':');
        let _ = serde_json::to_writer(
            &mut out,
            &o.ledger.iter().map(|e| e.json()).collect::<Vec<_>>(),
        );
    }
    out.extend_from_slice(b"}}");
    out
}
