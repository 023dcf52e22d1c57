//! The exactly-once audit: the simulator's state against the cluster and the desired specs.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use crate::customer_orgs;
use crate::customers::Customer;
use crate::support::{Sim, TestEnv};

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
pub(crate) enum Kind {
    Lost,
    Duplicated,
    Wrong,
}

#[derive(Default)]
pub(crate) struct Audit {
    pub(crate) violations: Vec<(Kind, String)>,
}

impl Audit {
    pub(crate) fn add(&mut self, kind: Kind, msg: String) {
        self.violations.push((kind, msg));
    }
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.violations.iter().filter(|(k, _)| *k == kind).count()
    }
}

/// The simulator's view, from GET /_sim/state.
pub(crate) struct SimView {
    pub(crate) parent_balance: i64,
    pub(crate) orgs: Vec<Value>,
    pub(crate) keys: Vec<Value>,
    pub(crate) endpoints: Vec<Value>,
    pub(crate) ledgers: BTreeMap<String, Vec<Value>>,
}

impl SimView {
    pub(crate) fn parse(state: &Value) -> SimView {
        let list = |k: &str| state[k].as_array().cloned().unwrap_or_default();
        let ledgers = state["ledgers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        SimView {
            parent_balance: state["parent"]["balance"]
                .as_i64()
                .expect("parent.balance in /_sim/state"),
            orgs: list("orgs"),
            keys: list("apiKeys"),
            endpoints: list("webhookEndpoints"),
            ledgers,
        }
    }

    pub(crate) fn allocated_to(&self, org_id: &str) -> i64 {
        self.ledgers
            .get(org_id)
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["eventType"] == "allocation")
                    .filter_map(|e| e["credits"].as_i64())
                    .sum()
            })
            .unwrap_or(0)
    }

    pub(crate) fn active_keys_of(&self, org_id: &str) -> Vec<&Value> {
        self.keys
            .iter()
            .filter(|k| k["organizationId"] == org_id && k["status"] == "active")
            .collect()
    }

    pub(crate) fn endpoints_of(&self, org_id: &str) -> Vec<&Value> {
        self.endpoints
            .iter()
            .filter(|e| e["organizationId"] == org_id)
            .collect()
    }
}

pub(crate) fn secret_value(secret: &Secret, prefix: &str) -> Option<String> {
    secret.data.as_ref()?.values().find_map(|v| {
        let s = String::from_utf8(v.0.clone()).ok()?;
        s.starts_with(prefix).then_some(s)
    })
}

/// whoami with a child key: its org id, or "KILL_SWITCH" for a suspended child.
pub(crate) async fn whoami(
    http: &reqwest::Client,
    base: &str,
    key: &str,
) -> Result<String, String> {
    let resp = http
        .get(format!("{base}/v1/whoami"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| format!("whoami transport error: {e}"))?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match status {
        200 => body["organizationId"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| "whoami: no organizationId".into()),
        503 if body["error"]["code"] == "KILL_SWITCH" => Ok("KILL_SWITCH".into()),
        other => Err(format!("whoami answered {other} {}", body["error"]["code"])),
    }
}

/// Every invariant of issue #7, checked against the simulator and the cluster.
pub(crate) async fn audit(
    env: &TestEnv,
    sim: &Sim,
    customers: &[Customer],
    starting_total: i64,
) -> Audit {
    let mut audit = Audit::default();
    let view = SimView::parse(&sim.state().await);
    let client = env.client().await;
    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &env.ns, &customer_orgs());
    let secrets: Api<Secret> = Api::namespaced(client, &env.ns);
    let live: HashMap<String, DynamicObject> = corgs
        .list(&ListParams::default())
        .await
        .expect("list CustomerOrgs")
        .items
        .into_iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
        .collect();
    let mut by_ext: HashMap<&str, Vec<&Value>> = HashMap::new();
    for org in &view.orgs {
        if let Some(ext) = org["metadata"]["externalId"].as_str() {
            by_ext.entry(ext).or_default().push(org);
        }
    }
    let known_ext: BTreeSet<&str> = customers.iter().map(|c| c.external_id.as_str()).collect();
    for org in &view.orgs {
        let ext = org["metadata"]["externalId"].as_str().unwrap_or("");
        if org["status"] != "archived" && !known_ext.contains(ext) {
            audit.add(
                Kind::Duplicated,
                format!(
                    "live org {} (externalId {ext:?}) belongs to no CustomerOrg",
                    org["id"]
                ),
            );
        }
    }

    let http = reqwest::Client::new();
    let mut key_checks = Vec::new();
    for c in customers {
        let orgs = by_ext
            .get(c.external_id.as_str())
            .cloned()
            .unwrap_or_default();
        if c.deleted {
            if live.contains_key(&c.name) {
                audit.add(
                    Kind::Wrong,
                    format!("{}: deleted but still present", c.name),
                );
            }
            if orgs.len() > 1 {
                audit.add(
                    Kind::Duplicated,
                    format!("{}: {} orgs were created", c.name, orgs.len()),
                );
            }
            // The offboarding the user asked for was lost: a live org nobody accounts for.
            for org in orgs.iter().filter(|o| o["status"] != "archived") {
                audit.add(
                    Kind::Lost,
                    format!(
                        "{}: deleted but org {} is {}",
                        c.name, org["id"], org["status"]
                    ),
                );
            }
            continue;
        }
        let Some(obj) = live.get(&c.name) else {
            audit.add(Kind::Lost, format!("{}: CustomerOrg is gone", c.name));
            continue;
        };
        match orgs.len() {
            0 => {
                audit.add(Kind::Lost, format!("{}: no child org", c.name));
                continue;
            }
            1 => {}
            n => audit.add(
                Kind::Duplicated,
                format!("{}: {n} child orgs were created", c.name),
            ),
        }
        let live_orgs: Vec<&&Value> = orgs.iter().filter(|o| o["status"] != "archived").collect();
        let Some(org) = live_orgs.first() else {
            audit.add(Kind::Lost, format!("{}: its only org is archived", c.name));
            continue;
        };
        let org_id = org["id"].as_str().unwrap_or_default().to_string();
        let status = &obj.data["status"];
        if status["orgId"].as_str() != Some(org_id.as_str()) {
            audit.add(
                Kind::Wrong,
                format!(
                    "{}: status.orgId {} but the org is {org_id}",
                    c.name, status["orgId"]
                ),
            );
        }
        if org["status"] != c.state {
            audit.add(
                Kind::Wrong,
                format!(
                    "{}: org is {} but spec says {}",
                    c.name, org["status"], c.state
                ),
            );
        }
        let allocated = view.allocated_to(&org_id);
        if allocated < c.credits {
            audit.add(
                Kind::Lost,
                format!(
                    "{}: {allocated} credits allocated, spec {}",
                    c.name, c.credits
                ),
            );
        } else if allocated > c.credits {
            audit.add(
                Kind::Duplicated,
                format!(
                    "{}: {allocated} credits allocated, spec {}",
                    c.name, c.credits
                ),
            );
        }

        // Keys: exactly the spec's keys are active, each one in a Secret that authenticates.
        let active = view.active_keys_of(&org_id);
        let status_keys = status["apiKeys"].as_array().cloned().unwrap_or_default();
        if active.len() > 2 {
            audit.add(
                Kind::Duplicated,
                format!("{}: {} active keys for 2 in spec", c.name, active.len()),
            );
        }
        for key in &active {
            if !status_keys.iter().any(|s| s["id"] == key["id"]) {
                audit.add(
                    Kind::Duplicated,
                    format!("{}: active key {} is not in status", c.name, key["id"]),
                );
            }
        }
        for name in ["integration", "reporting"] {
            let entry = status_keys.iter().find(|s| s["name"] == name);
            let secret_name = entry
                .and_then(|e| e["secretName"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}-{name}", c.name));
            let secret = secrets
                .get_opt(&secret_name)
                .await
                .expect("read key Secret");
            match secret.as_ref().and_then(|s| secret_value(s, "lp_")) {
                Some(key) => key_checks.push((c.name.clone(), name, key, org_id.clone(), c.state)),
                None => audit.add(
                    Kind::Lost,
                    format!(
                        "{}: key {name} has no Secret {secret_name} with a key",
                        c.name
                    ),
                ),
            }
        }

        // Webhooks: exactly one endpoint, in status, with its signing secret stored.
        let endpoints = view.endpoints_of(&org_id);
        let status_hooks = status["webhooks"].as_array().cloned().unwrap_or_default();
        match endpoints.len() {
            0 => audit.add(Kind::Lost, format!("{}: no webhook endpoint", c.name)),
            1 => {}
            n => audit.add(
                Kind::Duplicated,
                format!("{}: {n} webhook endpoints for 1 in spec", c.name),
            ),
        }
        for ep in &endpoints {
            if !status_hooks.iter().any(|s| s["id"] == ep["id"]) {
                audit.add(
                    Kind::Duplicated,
                    format!("{}: endpoint {} is not in status", c.name, ep["id"]),
                );
            }
        }
        let hook_secret = status_hooks
            .iter()
            .find(|s| s["name"] == "crm")
            .and_then(|e| e["secretName"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}-crm-webhook", c.name));
        let secret = secrets
            .get_opt(&hook_secret)
            .await
            .expect("read webhook Secret");
        if secret
            .as_ref()
            .and_then(|s| secret_value(s, "whsec_"))
            .is_none()
        {
            audit.add(
                Kind::Lost,
                format!(
                    "{}: webhook signing secret missing from Secret {hook_secret}",
                    c.name
                ),
            );
        }
    }

    // Every key Secret authenticates as its own child.
    let base = sim.base_url().to_string();
    let results: Vec<_> = stream::iter(key_checks)
        .map(|(name, key_name, key, org_id, state)| {
            let http = http.clone();
            let base = base.clone();
            async move {
                (
                    name,
                    key_name,
                    org_id,
                    state,
                    whoami(&http, &base, &key).await,
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (name, key_name, org_id, state, result) in results {
        match result {
            Ok(id) if id == org_id => {}
            Ok(id) if id == "KILL_SWITCH" && state == "suspended" => {}
            Ok(id) => audit.add(
                Kind::Wrong,
                format!("{name}: key {key_name} authenticates as {id}, not {org_id}"),
            ),
            Err(e) => audit.add(
                Kind::Lost,
                format!("{name}: key {key_name} does not authenticate: {e}"),
            ),
        }
    }

    // Archived orgs keep no active keys; money is conserved.
    for org in view.orgs.iter().filter(|o| o["status"] == "archived") {
        let id = org["id"].as_str().unwrap_or_default();
        if !view.active_keys_of(id).is_empty() {
            audit.add(
                Kind::Wrong,
                format!("archived org {id} still has active keys"),
            );
        }
    }
    let children: i64 = view.orgs.iter().filter_map(|o| o["balance"].as_i64()).sum();
    let total = view.parent_balance + children;
    if total < starting_total {
        audit.add(
            Kind::Lost,
            format!("parent + children = {total}, started with {starting_total}"),
        );
    } else if total > starting_total {
        audit.add(
            Kind::Duplicated,
            format!("parent + children = {total}, started with {starting_total}"),
        );
    }
    audit
}

/// The audit must be able to fail: an extra key and an extra credit behind the operator's
/// back (it is stopped by now) are reported as duplicates.
pub(crate) async fn audit_catches_tampering(
    env: &TestEnv,
    sim: &Sim,
    customers: &[Customer],
    starting_total: i64,
) {
    let Some(c) = customers.iter().find(|c| !c.deleted) else {
        return;
    };
    let state = sim.state().await;
    let org_id = SimView::parse(&state)
        .orgs
        .iter()
        .find(|o| {
            o["metadata"]["externalId"] == c.external_id.as_str() && o["status"] != "archived"
        })
        .and_then(|o| o["id"].as_str().map(str::to_string))
        .expect("the audited customer has an org");
    let http = reqwest::Client::new();
    let base = format!("{}/v1/organizations/{org_id}", sim.base_url());
    for (path, body) in [
        (
            "api-keys",
            json!({"name": "rogue", "scopes": ["content:read"]}),
        ),
        ("credits/allocate", json!({"credits": 1})),
    ] {
        let resp = http
            .post(format!("{base}/{path}"))
            .bearer_auth(sim.parent_key())
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
            .send()
            .await
            .expect("tamper request");
        assert!(
            resp.status().is_success(),
            "tamper {path}: {}",
            resp.status()
        );
    }
    let audit = audit(env, sim, customers, starting_total).await;
    let dups: Vec<&String> = audit
        .violations
        .iter()
        .filter(|(k, m)| *k == Kind::Duplicated && m.starts_with(&format!("{}:", c.name)))
        .map(|(_, m)| m)
        .collect();
    assert!(
        dups.iter().any(|m| m.contains("active key"))
            && dups.iter().any(|m| m.contains("credits allocated")),
        "the audit missed a rogue key and an extra credit on {}: {:?}",
        c.name,
        audit.violations
    );
}
