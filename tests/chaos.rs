//! Chaos suite (issue #7): a flaky Layers API, an operator SIGKILLed at random moments,
//! and users editing, suspending, resuming and deleting CustomerOrgs meanwhile. Afterwards an
//! audit of the simulator's ledger and the cluster proves nothing was lost or duplicated.
//!
//! Scale: `ORGOPS_CHAOS_ORGS` (default and "full" 200; 40 for a quick local run) and `ORGOPS_CHAOS_KILLS`
//! (default 10). Needs `cargo build -p layers-sim` first. Run with `-- --nocapture` to see
//! the summary line.
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use rand::Rng;
use serde_json::{Value, json};
use support::{Operator, Sim, TestEnv};

const MANAGER: &str = "chaos-test";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn customer_orgs() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "CustomerOrg"),
        "customerorgs",
    )
}

fn org_providers() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "OrgProvider"),
        "orgproviders",
    )
}

/// What the test asks of each customer, and how that changes during the run.
#[derive(Clone, Debug)]
struct Customer {
    name: String,
    external_id: String,
    credits: i64,
    state: &'static str,
    deleted: bool,
}

/// A user action applied while the operator is crashing.
#[derive(Clone, Copy, Debug)]
enum Edit {
    RaiseCredits(usize),
    Suspend(usize),
    Resume(usize),
    Delete(usize),
}

fn initial_customers(ns: &str, n: usize) -> Vec<Customer> {
    (0..n)
        .map(|i| Customer {
            name: format!("cust-{i:03}"),
            external_id: format!("{ns}-{i:03}"),
            credits: 100 + i as i64,
            // Several states from the start: every fifth customer begins suspended.
            state: if i % 5 == 4 { "suspended" } else { "active" },
            deleted: false,
        })
        .collect()
}

/// Disjoint groups so each customer's final spec is unambiguous.
fn planned_edits(customers: &[Customer]) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        match i % 8 {
            1 if c.state == "active" => {
                edits.push(Edit::RaiseCredits(i));
                edits.push(Edit::RaiseCredits(i));
            }
            2 if c.state == "active" => edits.push(Edit::Suspend(i)),
            3 | 4 if c.state == "suspended" => edits.push(Edit::Resume(i)),
            6 => edits.push(Edit::Delete(i)),
            7 if c.state == "active" => {
                edits.push(Edit::Suspend(i));
                edits.push(Edit::Resume(i));
            }
            _ => {}
        }
    }
    edits
}

fn manifest(ns: &str, provider: &str, c: &Customer) -> Value {
    json!({
        "apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
        "metadata": {"name": c.name, "namespace": ns},
        "spec": {
            "providerRef": {"name": provider},
            "displayName": format!("Chaos {}", c.name),
            "externalId": c.external_id,
            "state": c.state,
            "credits": {"allocated": c.credits, "monthlyCap": 10_000},
            "apiKeys": [
                {"name": "integration", "scopes": ["content:read", "content:write"]},
                {"name": "reporting", "scopes": ["content:read"]},
            ],
            "webhooks": [{
                "name": "crm",
                "url": format!("https://crm.example.com/hooks/{}", c.name),
                "events": ["content.generated", "post.published"],
            }],
        },
    })
}

/// Applies one edit as a user would (merge patch or delete) and records the new desire.
async fn apply_edit(api: &Api<DynamicObject>, customers: &mut [Customer], edit: Edit) {
    let (i, patch) = match edit {
        Edit::RaiseCredits(i) => {
            customers[i].credits += 50;
            (
                i,
                Some(json!({"spec": {"credits": {"allocated": customers[i].credits}}})),
            )
        }
        Edit::Suspend(i) => {
            customers[i].state = "suspended";
            (i, Some(json!({"spec": {"state": "suspended"}})))
        }
        Edit::Resume(i) => {
            customers[i].state = "active";
            (i, Some(json!({"spec": {"state": "active"}})))
        }
        Edit::Delete(i) => {
            customers[i].deleted = true;
            (i, None)
        }
    };
    let name = customers[i].name.clone();
    match patch {
        Some(p) => {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(p))
                .await
                .unwrap_or_else(|e| panic!("edit {name}: {e}"));
        }
        None => {
            api.delete(&name, &DeleteParams::default())
                .await
                .unwrap_or_else(|e| panic!("delete {name}: {e}"));
        }
    }
}

fn ready_at_generation(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation.unwrap_or(0);
    let status = &obj.data["status"];
    status["conditions"].as_array().is_some_and(|conds| {
        conds.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"]
                    .as_i64()
                    .or_else(|| status["observedGeneration"].as_i64())
                    == Some(generation)
        })
    })
}

/// Waits until every live object is Ready at its generation and every deleted one is gone.
/// Returns the names still pending (empty on success).
async fn settle(
    api: &Api<DynamicObject>,
    customers: &[Customer],
    timeout: Duration,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let by_name: HashMap<String, &DynamicObject> = list
                    .items
                    .iter()
                    .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
                    .collect();
                for c in customers {
                    match (c.deleted, by_name.get(&c.name)) {
                        (true, Some(_)) => {
                            pending.push(format!("{} (deleted, finalizer not removed)", c.name))
                        }
                        (false, None) => pending.push(format!("{} (missing)", c.name)),
                        (false, Some(o)) if !ready_at_generation(o) => {
                            let conds = o.data["status"]["conditions"].to_string();
                            pending.push(format!("{} (not Ready: {conds})", c.name));
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => pending.push(format!("list failed: {e}")),
        }
        if pending.is_empty() || start.elapsed() >= timeout {
            return pending;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Kind {
    Lost,
    Duplicated,
    Wrong,
}

#[derive(Default)]
struct Audit {
    violations: Vec<(Kind, String)>,
}

impl Audit {
    fn add(&mut self, kind: Kind, msg: String) {
        self.violations.push((kind, msg));
    }
    fn count(&self, kind: Kind) -> usize {
        self.violations.iter().filter(|(k, _)| *k == kind).count()
    }
}

/// The simulator's view, from GET /_sim/state.
struct SimView {
    parent_balance: i64,
    orgs: Vec<Value>,
    keys: Vec<Value>,
    endpoints: Vec<Value>,
    ledgers: BTreeMap<String, Vec<Value>>,
}

impl SimView {
    fn parse(state: &Value) -> SimView {
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

    fn allocated_to(&self, org_id: &str) -> i64 {
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

    fn active_keys_of(&self, org_id: &str) -> Vec<&Value> {
        self.keys
            .iter()
            .filter(|k| k["organizationId"] == org_id && k["status"] == "active")
            .collect()
    }

    fn endpoints_of(&self, org_id: &str) -> Vec<&Value> {
        self.endpoints
            .iter()
            .filter(|e| e["organizationId"] == org_id)
            .collect()
    }
}

fn secret_value(secret: &Secret, prefix: &str) -> Option<String> {
    secret.data.as_ref()?.values().find_map(|v| {
        let s = String::from_utf8(v.0.clone()).ok()?;
        s.starts_with(prefix).then_some(s)
    })
}

/// whoami with a child key: its org id, or "KILL_SWITCH" for a suspended child.
async fn whoami(http: &reqwest::Client, base: &str, key: &str) -> Result<String, String> {
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
async fn audit(env: &TestEnv, sim: &Sim, customers: &[Customer], starting_total: i64) -> Audit {
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
            for org in orgs.iter().filter(|o| o["status"] != "archived") {
                audit.add(
                    Kind::Wrong,
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
async fn audit_catches_tampering(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_nothing_and_duplicates_nothing() {
    let n = env_usize("ORGOPS_CHAOS_ORGS", 200);
    let kills = env_usize("ORGOPS_CHAOS_KILLS", 10);
    let settle_secs = env_usize("ORGOPS_CHAOS_SETTLE_SECS", 240.max(n * 3)) as u64;

    let env = TestEnv::new("chaos").await;
    let sim = Sim::start(&["--tier", "unlimited"]);
    let starting_total = SimView::parse(&sim.state().await).parent_balance;
    let client = env.client().await;

    // The provider: parent key in a Secret, an OrgProvider named after the namespace.
    let provider = env.ns.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &env.ns);
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "layers-parent-key", "namespace": env.ns},
        "stringData": {"apiKey": sim.parent_key()}});
    secrets
        .patch(
            "layers-parent-key",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await
        .expect("create parent key Secret");
    let providers: Api<DynamicObject> = Api::all_with(client.clone(), &org_providers());
    let prov = json!({"apiVersion": "orgops.dev/v1alpha1", "kind": "OrgProvider",
        "metadata": {"name": provider},
        "spec": {"type": "layers", "baseUrl": sim.base_url(),
                 "credentialsSecretRef": {"namespace": env.ns, "name": "layers-parent-key", "key": "apiKey"},
                 "rateLimit": {"tier": "auto"}}});
    providers
        .patch(
            &provider,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(prov),
        )
        .await
        .expect("create OrgProvider");

    // Faults from the first request on: 10 % 5xx, 5 % lost responses, 5 % 429, latency.
    sim.set_faults(
        json!({"error5xx": 0.10, "loseResponse": 0.05, "rateLimit429": 0.05,
                          "latency": 0.2, "latencyMs": 300}),
    )
    .await;

    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &env.ns, &customer_orgs());
    let mut customers = initial_customers(&env.ns, n);
    stream::iter(customers.iter().map(|c| manifest(&env.ns, &provider, c)))
        .map(|obj| {
            let api = corgs.clone();
            async move {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(obj),
                )
                .await
                .unwrap_or_else(|e| panic!("create {name}: {e}"));
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;

    let lease = format!("chaos-{}", env.ns);
    let mut op = Operator::start(
        &env,
        &[
            "--concurrency",
            "8",
            "--lease-name",
            &lease,
            "--lease-namespace",
            "orgops-system",
        ],
    )
    .await;

    // Kill at random moments; apply a share of the edits each round, alternately while the
    // operator is up (racing its writes) and while it is down (found on restart).
    let mut edits = planned_edits(&customers);
    {
        let mut rng = rand::rng();
        for i in (1..edits.len()).rev() {
            edits.swap(i, rng.random_range(0..=i));
        }
    }
    let per_round = edits.len().div_ceil(kills.max(1));
    let mut edits = edits.into_iter();
    for round in 0..kills {
        let (up, down) = {
            let mut rng = rand::rng();
            (
                rng.random_range(1_000..6_000u64),
                rng.random_range(100..2_000u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(up)).await;
        let batch: Vec<Edit> = edits.by_ref().take(per_round).collect();
        if round % 2 == 0 {
            for e in &batch {
                apply_edit(&corgs, &mut customers, *e).await;
            }
        }
        assert!(
            op.is_running(),
            "the operator exited on its own; log: {}",
            op.log_path().display()
        );
        op.kill();
        if round % 2 == 1 {
            for e in &batch {
                apply_edit(&corgs, &mut customers, *e).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(down)).await;
        op.restart();
    }
    for e in edits {
        apply_edit(&corgs, &mut customers, e).await;
    }

    let pending = settle(&corgs, &customers, Duration::from_secs(settle_secs)).await;
    let faults = sim.counters().await["faultsInjected"].as_u64().unwrap_or(0);
    sim.set_faults(json!({})).await;
    let mut audit = audit(&env, &sim, &customers, starting_total).await;
    for p in pending {
        audit.add(
            Kind::Wrong,
            format!("not settled after {settle_secs}s: {p}"),
        );
    }
    let log = op.log();
    if log.contains(sim.parent_key()) {
        audit.add(Kind::Wrong, "the operator logged the parent key".into());
    }
    drop(op);
    if audit.violations.is_empty() {
        audit_catches_tampering(&env, &sim, &customers, starting_total).await;
    }

    println!(
        "chaos: {n} orgs, {kills} kills, {faults} faults injected, {} lost, {} duplicated",
        audit.count(Kind::Lost),
        audit.count(Kind::Duplicated)
    );
    let mut listed: Vec<String> = audit
        .violations
        .iter()
        .map(|(k, m)| format!("{k:?}: {m}"))
        .collect();
    listed.sort();
    let _ = providers.delete(&provider, &DeleteParams::default()).await;
    if listed.is_empty() {
        env.cleanup().await;
    }
    assert!(
        listed.is_empty(),
        "{} violations:\n{}",
        listed.len(),
        listed.join("\n")
    );
    assert!(
        faults > 0,
        "the simulator injected no faults, so this run proved nothing"
    );
}
