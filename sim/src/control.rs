//! The `/_sim/` test and chaos API (only with `--control`): no auth, no faults, no limits.
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::faults::FaultConfig;
use crate::http::Reply;
use crate::ids::org_id;
use crate::model::{Org, State};
use crate::router::Op;
use crate::time::now_us;
use crate::{Shared, lock};

pub fn handle(shared: &Shared, op: Op, body: &[u8], rid: &str) -> Reply {
    if op == Op::SimState {
        let bytes = dump(&lock(&shared.state), shared);
        return Reply {
            status: 200,
            body: bytes.into(),
            headers: Vec::new(),
        };
    }
    match run(shared, op, body) {
        Ok(v) => Reply::json(200, &v),
        Err(e) => Reply::error(&e, rid),
    }
}

fn run(shared: &Shared, op: Op, body: &[u8]) -> Result<Value, ApiError> {
    match op {
        Op::SimCounters => Ok(counters(shared)),
        Op::SimReset => {
            {
                let mut st = lock(&shared.state);
                let fresh = State::fresh(
                    &st.parent_key,
                    st.parent_id,
                    st.parent_key_id,
                    shared.parent_credits,
                );
                *st = fresh;
            }
            lock(&shared.limiter).clear();
            lock(&shared.counters).clear();
            shared.faults_injected.store(0, Ordering::Relaxed);
            shared.dirty.notify_one();
            Ok(json!({ "reset": true }))
        }
        Op::SimFaultsGet => Ok(faults_json(shared)),
        Op::SimFaultsPut => {
            let cfg: FaultConfig = serde_json::from_slice(body)
                .map_err(|e| ApiError::validation(format!("invalid fault config: {e}")))?;
            cfg.validate().map_err(ApiError::validation)?;
            *shared.faults.write().unwrap_or_else(|p| p.into_inner()) = cfg;
            Ok(faults_json(shared))
        }
        _ => Err(ApiError::not_found("route")),
    }
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
    let mut rows: Vec<Value> = lock(&shared.counters)
        .iter()
        .map(|((m, route, status), n)| {
            json!({ "method": m.as_str(), "route": route, "status": status, "count": n })
        })
        .collect();
    rows.sort_by_key(|r| r.to_string());
    json!({
        "requests": rows,
        "faultsInjected": shared.faults_injected.load(Ordering::Relaxed),
    })
}

fn org_entry(o: &Org) -> Value {
    let mut v = o.json();
    v["creditConfig"] = o.config.json();
    v["balance"] = json!(o.balance);
    v["available"] = json!(o.balance.max(0));
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
    let now = now_us();
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
        "idempotencyKeys": st.idem.len(),
    });
    let mut out = serde_json::to_vec(&head).unwrap_or_else(|_| b"{\"parent\":null}".to_vec());
    out.pop(); // reopen the object
    let children = all.iter().filter(|o| o.parent.is_some());
    write_array(&mut out, "orgs", children.map(|o| org_entry(o)));
    write_array(
        &mut out,
        "apiKeys",
        keys.iter().map(|k| k.json(now, shared.tier)),
    );
    write_array(&mut out, "webhookEndpoints", eps.iter().map(|e| e.json()));
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
