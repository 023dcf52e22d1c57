//! The exactly-once audit: the simulator's state against the cluster and the desired specs.
use std::collections::{BTreeMap, HashMap};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

use crate::customer_orgs;
use crate::customers::{Customer, MONTHLY_CAP, REFILL_AMOUNT, REFILL_THRESHOLD};
use crate::support::{Sim, TestEnv};

const OWNER: &str = "orgops.dev/owner";
const ALLOCATION_MARKER: &str = "orgops.dev/allocation";

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
pub(crate) enum Kind {
    Lost,
    Duplicated,
    /// A live key or webhook endpoint (or its Secret) the spec does not list.
    Orphaned,
    /// Archived or suspended although no spec asked for it.
    WronglyOffboarded,
    /// A write that reached the API outside its sender's fenced window.
    OutsideFence,
    Wrong,
}

#[derive(Default)]
pub(crate) struct Audit {
    pub(crate) violations: Vec<(Kind, String)>,
    /// What the money check compared, for the report.
    pub(crate) money: String,
    /// Keys rotated without a rotate-keys request (a key whose Secret was lost is re-issued).
    pub(crate) reissued: usize,
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
    pub(crate) projects: Vec<Value>,
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
            projects: list("projects"),
            ledgers,
        }
    }

    /// Credits orgops moved into the org: only allocation rows carrying its marker (auto-refills
    /// and archive sweeps are allocation rows too, without it).
    pub(crate) fn allocated_to(&self, org_id: &str) -> i64 {
        self.rows(org_id, "allocation")
            .filter(|e| e["metadata"][ALLOCATION_MARKER] == "true")
            .filter_map(|e| e["credits"].as_i64())
            .sum()
    }

    /// Auto-refill credits the provider moved into the org.
    pub(crate) fn refilled_to(&self, org_id: &str) -> i64 {
        self.rows(org_id, "allocation")
            .filter(|e| e["metadata"]["reason"] == "auto_refill")
            .filter_map(|e| e["credits"].as_i64())
            .sum()
    }

    fn rows<'a>(&'a self, org_id: &str, kind: &'a str) -> impl Iterator<Item = &'a Value> {
        self.ledgers
            .get(org_id)
            .into_iter()
            .flatten()
            .filter(move |e| e["eventType"] == kind)
    }

    /// Usage settled in the org (positive).
    pub(crate) fn spent_in(&self, org_id: &str) -> i64 {
        -self
            .rows(org_id, "usage")
            .filter_map(|e| e["credits"].as_i64())
            .sum::<i64>()
    }

    /// Keys that act as the org's current key: active and not superseded by a rotation
    /// (a superseded key lives on for its documented grace).
    pub(crate) fn current_keys_of(&self, org_id: &str) -> Vec<&Value> {
        self.keys
            .iter()
            .filter(|k| {
                k["organizationId"] == org_id
                    && k["status"] == "active"
                    && k["supersededBy"].is_null()
            })
            .collect()
    }

    /// Keys of that name rotated at or after `since` (an RFC 3339 UTC time of the simulator
    /// clock; `""` counts all).
    pub(crate) fn rotations_of(&self, org_id: &str, name: &str, since: &str) -> usize {
        self.keys
            .iter()
            .filter(|k| k["organizationId"] == org_id && k["name"] == name)
            .filter(|k| !k["supersededBy"].is_null())
            .filter(|k| k["rotatedAt"].as_str().is_some_and(|t| t >= since))
            .count()
    }

    pub(crate) fn endpoints_of(&self, org_id: &str) -> Vec<&Value> {
        self.endpoints
            .iter()
            .filter(|e| e["organizationId"] == org_id)
            .collect()
    }

    /// The orgs whose owner marker starts with `prefix` (`<ns>/<name>/`).
    pub(crate) fn orgs_marked(&self, prefix: &str) -> Vec<&Value> {
        self.orgs
            .iter()
            .filter(|o| {
                o["metadata"][OWNER]
                    .as_str()
                    .is_some_and(|m| m.starts_with(prefix))
            })
            .collect()
    }
}

pub(crate) fn secret_value(secret: &Secret, prefix: &str) -> Option<String> {
    secret.data.as_ref()?.values().find_map(|v| {
        let s = String::from_utf8(v.0.clone()).ok()?;
        s.starts_with(prefix).then_some(s)
    })
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
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

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> Option<&'a Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub(crate) fn is_adoption_conflict(obj: &DynamicObject) -> bool {
    condition(obj, "Stalled")
        .is_some_and(|c| c["status"] == "True" && c["reason"] == "AdoptionConflict")
}

struct KeyCheck {
    customer: String,
    key_name: String,
    key: String,
    org_id: String,
    suspended: bool,
}

/// Everything the chaos run must leave behind, checked against the simulator and the cluster.
pub(crate) async fn audit(
    env: &TestEnv,
    sim: &Sim,
    customers: &[Customer],
    starting_total: i64,
) -> Audit {
    let mut audit = Audit::default();
    let ns = env.ns.as_str();
    let view = SimView::parse(&sim.state().await);
    let client = env.client().await;
    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_orgs());
    let secrets: Api<Secret> = Api::namespaced(client, ns);
    let live: HashMap<String, DynamicObject> = corgs
        .list(&ListParams::default())
        .await
        .expect("list CustomerOrgs")
        .items
        .into_iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
        .collect();
    let owned_secrets: Vec<Secret> = secrets
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=orgops"))
        .await
        .expect("list orgops Secrets")
        .items;

    // Every live org is accounted for: its owner marker names an existing CustomerOrg (same
    // uid), or a customer deleted with deletionPolicy Orphan.
    let mut accounted: HashMap<String, bool> = HashMap::new();
    for (name, obj) in &live {
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        accounted.insert(format!("{ns}/{name}/{uid}"), true);
    }
    for c in customers.iter().filter(|c| c.deleted && c.orphan) {
        accounted.insert(format!("{ns}/{}/{}", c.name, c.uid), true);
    }
    for org in view.orgs.iter().filter(|o| o["status"] != "archived") {
        let marker = org["metadata"][OWNER].as_str().unwrap_or("");
        if !accounted.contains_key(marker) {
            audit.add(
                Kind::Duplicated,
                format!(
                    "live org {} (owner marker {marker:?}) belongs to no CustomerOrg",
                    org["id"]
                ),
            );
        }
    }

    // Racing pairs (one adoptOrgId, or one externalId created at the same instant):
    // exactly one owns the org; the other lost, was then deleted, and owns nothing.
    let mut winners: Vec<&Customer> = Vec::new();
    let mut pairs: std::collections::BTreeMap<&str, Vec<&Customer>> = Default::default();
    for c in customers {
        if let Some(p) = &c.pair {
            pairs.entry(p.as_str()).or_default().push(c);
        }
    }
    for (pair, racers) in &pairs {
        let owners: Vec<&&Customer> = racers
            .iter()
            .filter(|c| {
                view.orgs_marked(&c.marker_prefix(ns))
                    .iter()
                    .any(|o| o["status"] != "archived")
                    || racers
                        .first()
                        .and_then(|r| r.adopt.as_ref())
                        .is_some_and(|target| {
                            view.orgs.iter().any(|o| {
                                o["id"] == target.as_str()
                                    && o["metadata"][OWNER].as_str()
                                        == Some(format!("{ns}/{}/{}", c.name, c.uid).as_str())
                            })
                        })
            })
            .collect();
        match owners.as_slice() {
            [w] if !w.loser => winners.push(w),
            other => audit.add(
                Kind::Wrong,
                format!(
                    "racing pair {pair}: {} of the pair own a live org (exactly one, the winner, should): {:?}",
                    other.len(),
                    other.iter().map(|c| c.name.as_str()).collect::<Vec<_>>()
                ),
            ),
        }
        for c in racers.iter().filter(|c| c.loser) {
            if live.contains_key(&c.name) {
                audit.add(
                    Kind::Wrong,
                    format!(
                        "{}: the deleted loser of pair {pair} is still there",
                        c.name
                    ),
                );
            }
            let own = view.orgs_marked(&c.marker_prefix(ns));
            if !own.is_empty() {
                audit.add(
                    Kind::Duplicated,
                    format!("{}: lost the race yet owns {} orgs", c.name, own.len()),
                );
            }
        }
    }

    // Nothing archived or suspended that no spec asked for: an archived org belongs to a
    // customer deleted with Archive; a suspended one to a customer whose spec says so.
    for org in view
        .orgs
        .iter()
        .filter(|o| o["status"] == "archived" || o["status"] == "suspended")
    {
        let marker = org["metadata"][OWNER].as_str().unwrap_or("");
        let owner = customers
            .iter()
            .find(|c| marker == format!("{ns}/{}/{}", c.name, c.uid));
        let asked = match (org["status"].as_str(), owner) {
            (Some("archived"), Some(c)) => c.deleted && !c.orphan && !c.loser,
            (Some("suspended"), Some(c)) => c.state == "suspended",
            _ => false,
        };
        if !asked {
            audit.add(
                Kind::WronglyOffboarded,
                format!(
                    "org {} is {} but no spec asked for it (owner marker {marker:?})",
                    org["id"], org["status"]
                ),
            );
        }
    }

    let http = reqwest::Client::new();
    let mut key_checks = Vec::new();
    for c in customers {
        if c.pair.is_some() && !winners.iter().any(|w| w.name == c.name) {
            continue;
        }
        let orgs = view.orgs_marked(&c.marker_prefix(ns));
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
            for org in &orgs {
                let archived = org["status"] == "archived";
                if c.orphan && archived {
                    audit.add(
                        Kind::Wrong,
                        format!("{}: Orphan delete archived org {}", c.name, org["id"]),
                    );
                } else if !c.orphan && !archived {
                    // The offboarding the user asked for was lost: a live org nobody owns.
                    audit.add(
                        Kind::Lost,
                        format!(
                            "{}: Archive delete left org {} {}",
                            c.name, org["id"], org["status"]
                        ),
                    );
                }
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
                format!("{}: {n} child orgs carry its owner marker", c.name),
            ),
        }
        let Some(org) = orgs.iter().find(|o| o["status"] != "archived") else {
            audit.add(Kind::Lost, format!("{}: its only org is archived", c.name));
            continue;
        };
        let org_id = org["id"].as_str().unwrap_or_default().to_string();
        let status = &obj.data["status"];
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        if org["metadata"][OWNER].as_str() != Some(format!("{ns}/{}/{uid}", c.name).as_str()) {
            audit.add(
                Kind::Wrong,
                format!(
                    "{}: org owner marker {} is not this object's uid",
                    c.name, org["metadata"][OWNER]
                ),
            );
        }
        if let Some(ext) = &c.external_id
            && org["metadata"]["externalId"] != ext.as_str()
        {
            audit.add(
                Kind::Wrong,
                format!(
                    "{}: org externalId {} not {ext}",
                    c.name, org["metadata"]["externalId"]
                ),
            );
        }
        for project in &c.migrate {
            let holder = view
                .projects
                .iter()
                .find(|p| p["id"] == project.as_str())
                .map(|p| p["organizationId"].clone());
            if holder.as_ref().and_then(Value::as_str) != Some(org_id.as_str()) {
                audit.add(
                    Kind::Lost,
                    format!(
                        "{}: project {project} is in {holder:?}, not in its org {org_id}",
                        c.name
                    ),
                );
            }
        }
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
        if org["name"] != c.display_name.as_str() {
            audit.add(
                Kind::Wrong,
                format!(
                    "{}: org name {} but displayName {:?}",
                    c.name, org["name"], c.display_name
                ),
            );
        }
        let config = &org["creditConfig"];
        let want_config = if c.spends {
            json!({"autoRefillEnabled": true, "monthlyCreditCap": MONTHLY_CAP,
                   "refillAmount": REFILL_AMOUNT, "refillThreshold": REFILL_THRESHOLD})
        } else {
            json!({"monthlyCreditCap": MONTHLY_CAP, "autoRefillEnabled": false})
        };
        if config["monthlyCreditCap"] != want_config["monthlyCreditCap"]
            || config["autoRefillEnabled"] != want_config["autoRefillEnabled"]
            || (c.spends
                && (config["refillAmount"] != want_config["refillAmount"]
                    || config["refillThreshold"] != want_config["refillThreshold"]))
        {
            audit.add(
                Kind::Wrong,
                format!("{}: credit config {config}, want {want_config}", c.name),
            );
        }
        let allocated = view.allocated_to(&org_id);
        if allocated != c.credits {
            audit.add(
                if allocated < c.credits {
                    Kind::Lost
                } else {
                    Kind::Duplicated
                },
                format!(
                    "{}: {allocated} credits allocated (orgops-marked), spec {}",
                    c.name, c.credits
                ),
            );
        }

        // Keys: exactly one current key per spec key, with the spec's scopes, no other.
        let current = view.current_keys_of(&org_id);
        for key in &current {
            let name = key["name"].as_str().unwrap_or_default();
            let Some(spec) = c.keys.iter().find(|k| k.name == name) else {
                audit.add(
                    Kind::Orphaned,
                    format!(
                        "{}: live key {} ({name:?}) is not in spec",
                        c.name, key["id"]
                    ),
                );
                continue;
            };
            let mut have: Vec<&str> = key["scopes"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            have.sort_unstable();
            let mut want = spec.scopes.clone();
            want.sort_unstable();
            if have != want {
                audit.add(
                    Kind::Wrong,
                    format!("{}: key {name} has scopes {have:?}, spec {want:?}", c.name),
                );
            }
        }
        for spec in &c.keys {
            let live_ids: Vec<&str> = current
                .iter()
                .filter(|k| k["name"] == spec.name.as_str())
                .filter_map(|k| k["id"].as_str())
                .collect();
            match live_ids.len() {
                0 => audit.add(Kind::Lost, format!("{}: no live key {}", c.name, spec.name)),
                1 => {}
                n => audit.add(
                    Kind::Duplicated,
                    format!("{}: {n} live keys named {}", c.name, spec.name),
                ),
            }
            // A rotation answers the annotation exactly once. Other rotations are the
            // operator re-issuing a key whose Secret a kill lost (counted, not a violation).
            let since = c.rotate_requested_at.as_deref();
            let requested = since.map_or(0, |t| view.rotations_of(&org_id, &spec.name, t));
            if requested > 1 {
                audit.add(
                    Kind::Duplicated,
                    format!(
                        "{}: key {} rotated {requested} times for one rotate-keys value",
                        c.name, spec.name
                    ),
                );
            }
            audit.reissued += view.rotations_of(&org_id, &spec.name, "") - requested;
            let secret = owned_secrets.iter().find(|s| {
                owned_by(s, &c.name) && annotation(s, "orgops.dev/key-name") == Some(&spec.name)
            });
            let Some(secret) = secret else {
                audit.add(
                    Kind::Lost,
                    format!("{}: no owned Secret for key {}", c.name, spec.name),
                );
                continue;
            };
            let key_id = annotation(secret, "orgops.dev/key-id").unwrap_or("");
            if !live_ids.contains(&key_id) {
                audit.add(
                    Kind::Wrong,
                    format!(
                        "{}: Secret of key {} names {key_id:?}, live {live_ids:?}",
                        c.name, spec.name
                    ),
                );
            }
            if let Some(value) = &c.rotate
                && annotation(secret, "orgops.dev/rotated-for") != Some(value.as_str())
            {
                audit.add(
                    Kind::Wrong,
                    format!(
                        "{}: key {} Secret not rotated for {value}",
                        c.name, spec.name
                    ),
                );
            }
            match secret_value(secret, "lp_") {
                Some(key) => key_checks.push(KeyCheck {
                    customer: c.name.clone(),
                    key_name: spec.name.clone(),
                    key,
                    org_id: org_id.clone(),
                    suspended: c.state == "suspended",
                }),
                None => audit.add(
                    Kind::Lost,
                    format!("{}: Secret of key {} holds no key", c.name, spec.name),
                ),
            }
        }
        if let Some(value) = &c.rotate
            && status["keysRotatedFor"] != value.as_str()
        {
            audit.add(
                Kind::Wrong,
                format!(
                    "{}: status.keysRotatedFor {} not {value}",
                    c.name, status["keysRotatedFor"]
                ),
            );
        }

        // Webhooks: exactly one endpoint per spec webhook with its URL, no other.
        let endpoints = view.endpoints_of(&org_id);
        for ep in &endpoints {
            let name = ep["metadata"]["orgops.dev/webhook"].as_str().unwrap_or("");
            if !c.hooks.iter().any(|h| h.name == name) {
                audit.add(
                    Kind::Orphaned,
                    format!(
                        "{}: live webhook endpoint {} ({name:?}) is not in spec",
                        c.name, ep["id"]
                    ),
                );
            }
        }
        for spec in &c.hooks {
            let mine: Vec<&&Value> = endpoints
                .iter()
                .filter(|e| e["metadata"]["orgops.dev/webhook"] == spec.name.as_str())
                .collect();
            match mine.as_slice() {
                [] => audit.add(
                    Kind::Lost,
                    format!("{}: no webhook endpoint {}", c.name, spec.name),
                ),
                [ep] => {
                    if ep["url"] != spec.url.as_str() {
                        audit.add(
                            Kind::Wrong,
                            format!(
                                "{}: webhook {} url {} not {}",
                                c.name, spec.name, ep["url"], spec.url
                            ),
                        );
                    }
                }
                more => audit.add(
                    Kind::Duplicated,
                    format!(
                        "{}: {} endpoints for webhook {}",
                        c.name,
                        more.len(),
                        spec.name
                    ),
                ),
            }
            let ids: Vec<&str> = mine.iter().filter_map(|e| e["id"].as_str()).collect();
            let secret = owned_secrets.iter().find(|s| {
                owned_by(s, &c.name) && annotation(s, "orgops.dev/webhook-name") == Some(&spec.name)
            });
            match secret {
                Some(s)
                    if secret_value(s, "whsec_").is_some()
                        && ids.contains(&annotation(s, "orgops.dev/webhook-id").unwrap_or("")) => {}
                Some(_) => audit.add(
                    Kind::Wrong,
                    format!(
                        "{}: Secret of webhook {} holds no signing secret for {ids:?}",
                        c.name, spec.name
                    ),
                ),
                None => audit.add(
                    Kind::Lost,
                    format!("{}: no owned Secret for webhook {}", c.name, spec.name),
                ),
            }
        }

        // No Secret left over from a removed key or webhook.
        for s in owned_secrets.iter().filter(|s| owned_by(s, &c.name)) {
            let stale = match (
                annotation(s, "orgops.dev/key-name"),
                annotation(s, "orgops.dev/webhook-name"),
            ) {
                (Some(k), _) => !c.keys.iter().any(|x| x.name == k),
                (_, Some(w)) => !c.hooks.iter().any(|x| x.name == w),
                _ => false,
            };
            if stale {
                audit.add(
                    Kind::Orphaned,
                    format!(
                        "{}: Secret {} of a removed key or webhook is still there",
                        c.name,
                        s.metadata.name.clone().unwrap_or_default()
                    ),
                );
            }
        }
    }

    // Every key Secret authenticates as its own child.
    let base = sim.base_url().to_string();
    let results: Vec<_> = stream::iter(key_checks)
        .map(|k| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let r = whoami(&http, &base, &k.key).await;
                (k, r)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (k, result) in results {
        match result {
            Ok(id) if id == k.org_id => {}
            Ok(id) if id == "KILL_SWITCH" && k.suspended => {}
            Ok(id) => audit.add(
                Kind::Wrong,
                format!(
                    "{}: key {} authenticates as {id}, not {}",
                    k.customer, k.key_name, k.org_id
                ),
            ),
            Err(e) => audit.add(
                Kind::Lost,
                format!(
                    "{}: key {} does not authenticate: {e}",
                    k.customer, k.key_name
                ),
            ),
        }
    }

    // Archived orgs keep no active keys.
    for org in view.orgs.iter().filter(|o| o["status"] == "archived") {
        let id = org["id"].as_str().unwrap_or_default();
        if view
            .keys
            .iter()
            .any(|k| k["organizationId"] == id && k["status"] == "active")
        {
            audit.add(
                Kind::Wrong,
                format!("archived org {id} still has active keys"),
            );
        }
    }

    // Money is conserved: parent + children + everything spent = the starting total.
    let children: i64 = view.orgs.iter().filter_map(|o| o["balance"].as_i64()).sum();
    let spent: i64 = view
        .orgs
        .iter()
        .filter_map(|o| o["id"].as_str())
        .map(|id| view.spent_in(id))
        .sum();
    let refilled: i64 = view
        .orgs
        .iter()
        .filter_map(|o| o["id"].as_str())
        .map(|id| view.refilled_to(id))
        .sum();
    let total = view.parent_balance + children + spent;
    audit.money = format!(
        "parent {} + children {children} + spent {spent} = {total} (start {starting_total}; \
         {refilled} credits auto-refilled)",
        view.parent_balance
    );
    if total != starting_total {
        audit.add(
            if total < starting_total {
                Kind::Lost
            } else {
                Kind::Duplicated
            },
            format!("money not conserved: {}", audit.money),
        );
    }
    audit
}

fn owned_by(secret: &Secret, customer: &str) -> bool {
    secret
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.kind == "CustomerOrg" && r.name == customer)
        })
}

/// The audit must be able to fail: behind the stopped operators' backs, a rogue key, a rogue
/// webhook endpoint, one more marked credit and a rogue org are all reported.
pub(crate) async fn audit_catches_tampering(
    env: &TestEnv,
    sim: &Sim,
    customers: &[Customer],
    starting_total: i64,
) {
    let Some(c) = customers
        .iter()
        .find(|c| !c.deleted && c.pair.is_none() && c.state == "active")
    else {
        return;
    };
    let state = sim.state().await;
    let org_id = SimView::parse(&state)
        .orgs_marked(&c.marker_prefix(&env.ns))
        .iter()
        .find(|o| o["status"] != "archived")
        .and_then(|o| o["id"].as_str().map(str::to_string))
        .expect("the audited customer has an org");
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let org_url = format!("{base}/v1/organizations/{org_id}");
    for (url, acting, body) in [
        (
            format!("{org_url}/api-keys"),
            None,
            json!({"name": "rogue", "scopes": ["content:read"]}),
        ),
        (
            format!("{org_url}/credits/allocate"),
            None,
            json!({"credits": 1, "metadata": {ALLOCATION_MARKER: "true"}}),
        ),
        (
            format!("{base}/v1/webhook-endpoints"),
            Some(org_id.as_str()),
            json!({"url": "https://rogue.example.com/hook", "events": ["content.generated"]}),
        ),
        (
            format!("{base}/v1/organizations"),
            None,
            json!({"name": "rogue org"}),
        ),
    ] {
        let mut req = http
            .post(&url)
            .bearer_auth(sim.parent_key())
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body);
        if let Some(acting) = acting {
            req = req.header("X-Layers-Organization", acting);
        }
        let resp = req.send().await.expect("tamper request");
        assert!(
            resp.status().is_success(),
            "tamper {url}: {}",
            resp.status()
        );
    }
    // And one more customer's org archived behind the operators' backs.
    let other = customers
        .iter()
        .filter(|d| !d.deleted && d.pair.is_none() && d.name != c.name)
        .find_map(|d| {
            SimView::parse(&state)
                .orgs_marked(&d.marker_prefix(&env.ns))
                .iter()
                .find(|o| o["status"] == "active")
                .and_then(|o| o["id"].as_str().map(str::to_string))
        })
        .expect("another live customer's org");
    let resp = http
        .delete(format!("{base}/v1/organizations/{other}"))
        .bearer_auth(sim.parent_key())
        .send()
        .await
        .expect("tamper archive");
    assert!(
        resp.status().is_success(),
        "tamper archive: {}",
        resp.status()
    );
    let audit = audit(env, sim, customers, starting_total).await;
    let about = |kind: Kind, needle: &str| {
        audit
            .violations
            .iter()
            .any(|(k, m)| *k == kind && m.contains(needle))
    };
    let prefix = format!("{}: ", c.name);
    let caught = [
        about(Kind::Orphaned, &format!("{prefix}live key")),
        about(Kind::Orphaned, &format!("{prefix}live webhook endpoint")),
        about(
            Kind::Duplicated,
            &format!("{prefix}{} credits", c.credits + 1),
        ),
        about(Kind::Duplicated, "belongs to no CustomerOrg"),
        about(Kind::WronglyOffboarded, &other),
    ];
    assert!(
        caught.iter().all(|c| *c),
        "the audit missed tampering on {} (rogue key, rogue webhook, extra credit, rogue org, archived org = {caught:?}): {:?}",
        c.name,
        audit.violations
    );
}

/// The firehose: Ready, exactly one parent endpoint carrying its marker (the one status
/// names), rotated for the annotation, its Secret holding that endpoint's id, and every
/// live child covered by it.
pub(crate) async fn firehose(
    env: &TestEnv,
    sim: &Sim,
    pwhs: &Api<DynamicObject>,
    audit: &mut Audit,
) {
    let ns = env.ns.as_str();
    let marker = format!("{ns}/firehose");
    // Settled like the customers: Ready at its generation, within the settle budget.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let obj = loop {
        let obj = pwhs.get("firehose").await.expect("read the firehose");
        let generation = obj.metadata.generation.unwrap_or(0);
        let ready = obj.data["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Ready"
                        && c["status"] == "True"
                        && c["observedGeneration"].as_i64() == Some(generation)
                })
            });
        if ready || std::time::Instant::now() > deadline {
            if !ready {
                audit.add(
                    Kind::Wrong,
                    format!("firehose not Ready: {}", obj.data["status"]),
                );
            }
            break obj;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let state = sim.state().await;
    let view = SimView::parse(&state);
    let parent = state["parent"]["orgId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mine: Vec<&Value> = view
        .endpoints
        .iter()
        .filter(|e| e["metadata"]["orgops.dev/parent-webhook"] == marker.as_str())
        .collect();
    match mine.as_slice() {
        [] => audit.add(Kind::Lost, "firehose: no parent endpoint".into()),
        [one] => {
            let id = one["id"].as_str().unwrap_or_default();
            if one["organizationId"] != parent.as_str() {
                audit.add(
                    Kind::Wrong,
                    format!("firehose endpoint {id} is not on the parent"),
                );
            }
            if obj.data["status"]["endpointId"].as_str() != Some(id) {
                audit.add(
                    Kind::Wrong,
                    format!(
                        "firehose status names {} not {id}",
                        obj.data["status"]["endpointId"]
                    ),
                );
            }
            if obj.data["status"]["secretRotatedFor"] != "chaos-1" {
                audit.add(
                    Kind::Wrong,
                    format!(
                        "firehose rotation: {}",
                        obj.data["status"]["secretRotatedFor"]
                    ),
                );
            }
            let client = env.client().await;
            let secrets: Api<Secret> = Api::namespaced(client, ns);
            match secrets.get_opt("firehose-signing-secret").await {
                Ok(Some(s)) => {
                    let annotated = s
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("orgops.dev/endpoint-id"))
                        .map(String::as_str);
                    if annotated != Some(id) {
                        audit.add(
                            Kind::Wrong,
                            format!("firehose Secret names endpoint {annotated:?}, not {id}"),
                        );
                    }
                }
                _ => audit.add(Kind::Lost, "firehose: its signing Secret is gone".into()),
            }
            let http = reqwest::Client::new();
            for org in view.orgs.iter().filter(|o| o["status"] == "active").take(5) {
                let url = format!(
                    "{}/_sim/webhook-recipients?orgId={}",
                    sim.base_url(),
                    org["id"].as_str().unwrap_or_default()
                );
                let r: Value = http
                    .get(url)
                    .send()
                    .await
                    .expect("recipients")
                    .json()
                    .await
                    .unwrap_or_default();
                let covered = r["endpoints"].as_array().is_some_and(|es| {
                    es.iter()
                        .any(|e| e["id"] == id && e["via"] == "all_children")
                });
                if !covered {
                    audit.add(
                        Kind::Wrong,
                        format!("child {} not covered by the firehose", org["id"]),
                    );
                }
            }
        }
        many => audit.add(
            Kind::Duplicated,
            format!("firehose: {} parent endpoints carry its marker", many.len()),
        ),
    }
}
