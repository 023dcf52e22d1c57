//! The Layers worlds: one `layers-sim` per entry, three customers each (create, fund, key,
//! webhook; suspend; edit while suspended; resume; delete), audited against the simulator.
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{Value, json};

use crate::run::{Corgs, Entry, Outcome, PHASE, count_by_status, entry, until, writes_under};
use crate::support::world::install_provider;
use crate::support::{Sim, TestEnv};

const OWNER: &str = "orgops.dev/owner";
const MARKER: &str = "orgops.dev/allocation";
const PARENT_CREDITS: i64 = 1_000_000;

pub fn entries() -> Vec<Entry> {
    vec![
        entry("default", "-", &[], &[]),
        entry("credit-doc", "1", &["--credit-events", "documented"], &[]),
        entry(
            "susp-refuse",
            "2",
            &["--suspended-writes", "refuse"],
            &["SuspendedOrgReadOnly"],
        ),
        entry(
            "in-flight",
            "3",
            &[
                "--idempotency-in-flight",
                "conflict",
                "--fault-late-commit",
                "0.5",
                "--fault-slow-commit-ms",
                "1500",
            ],
            &[],
        ),
        entry(
            "burst-5",
            "4",
            &["--tier", "standard", "--rate-limit-burst", "5"],
            &[],
        ),
        entry(
            "per-org",
            "4",
            &[
                "--tier",
                "standard",
                "--rate-limit-scope",
                "child-org",
                "--rate-limit-burst",
                "5",
            ],
            &[],
        ),
        entry(
            "fixed-window",
            "4",
            &[
                "--tier",
                "standard",
                "--rate-limit-algorithm",
                "fixed-window",
            ],
            &[],
        ),
        entry(
            "daily-cap",
            "4",
            &["--tier", "standard", "--daily-write-cap", "6"],
            &["RateLimited"],
        ),
        entry("unknown-ok", "+", &["--unknown-fields", "ignore"], &[]),
        entry("store-4xx-skip", "+", &["--idempotency-4xx", "skip"], &[]),
        entry("archive-wh", "+", &["--archive-webhooks", "delete"], &[]),
    ]
}

/// One customer's spec, as the world edits it.
#[derive(Clone)]
struct Spec {
    display: String,
    state: &'static str,
    credits: i64,
    plan: &'static str,
    keys: Vec<&'static str>,
    webhook: bool,
}

pub struct World {
    pub entry: Entry,
    pub sim: Sim,
    ns: String,
    provider: String,
    corgs: Corgs,
    secrets: Api<Secret>,
}

impl crate::run::World for World {
    /// Starts the entry's simulator and its OrgProvider (`<ns>-<entry>`).
    async fn new(env: &TestEnv, entry: Entry, client: kube::Client) -> World {
        let sim = Sim::start(entry.flags);
        let provider = format!("{}-{}", env.ns, entry.name);
        install_provider(env, &sim, &provider, &format!("pk-{}", entry.name));
        World {
            entry,
            sim,
            ns: env.ns.clone(),
            provider,
            corgs: Corgs::new(&env.ns, client.clone()).await,
            secrets: Api::namespaced(client, &env.ns),
        }
    }

    fn entry(&self) -> &Entry {
        &self.entry
    }

    const API: &'static str = "/v1/";

    async fn counters(&self) -> Value {
        self.sim.counters().await
    }

    async fn script(&self, out: &mut Outcome) -> Result<(), String> {
        if self.entry.name == "daily-cap" {
            self.daily_cap(out).await
        } else {
            self.world(out).await
        }
    }
}

impl World {
    fn name(&self, customer: &str) -> String {
        format!("{}-{customer}", self.entry.name)
    }

    fn manifest(&self, customer: &str, s: &Spec) -> Value {
        let name = self.name(customer);
        let keys: Vec<Value> = s
            .keys
            .iter()
            .map(|k| json!({"name": k, "scopes": ["content:read"]}))
            .collect();
        let hooks: Vec<Value> = if s.webhook {
            vec![
                json!({"name": "crm", "url": "https://crm.example.com/hooks",
                        "events": ["content.generated"]}),
            ]
        } else {
            Vec::new()
        };
        json!({
            "apiVersion": "orgops.dev/v1alpha1",
            "kind": "CustomerOrg",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "providerRef": {"name": self.provider},
                "displayName": s.display,
                "externalId": format!("{}-{name}", self.ns),
                "metadata": {"plan": s.plan},
                "state": s.state,
                "credits": {"allocated": s.credits, "monthlyCap": 5000},
                "apiKeys": keys,
                "webhooks": hooks,
            }
        })
    }

    async fn apply(&self, customer: &str, s: &Spec) -> Result<(), String> {
        self.corgs
            .apply(&self.name(customer), self.manifest(customer, s))
            .await
    }

    /// Ready, or one of the entry's named reasons (recorded).
    async fn settle(&self, customer: &str, what: &str, out: &mut Outcome) -> Result<bool, String> {
        let name = self.name(customer);
        self.corgs.settle(&name, what, self.entry.named, out).await
    }

    async fn writes(&self) -> (u64, u64) {
        writes_under(&self.sim.counters().await, "/v1/")
    }

    /// Nothing written while the operator checks its provider twice (whoami per resync).
    async fn quiet(&self, what: &str) -> Result<(), String> {
        let whoami = |c: &Value| count_by_status(c, |m, r, _| m == "GET" && r == "/v1/whoami");
        crate::run::quiet(what, || self.sim.counters(), whoami, "/v1/").await
    }

    fn initial() -> [(&'static str, Spec); 3] {
        let spec = |credits, keys: Vec<&'static str>, webhook| Spec {
            display: "Acme".into(),
            state: "active",
            credits,
            plan: "growth",
            keys,
            webhook,
        };
        [
            ("a", spec(500, vec!["integration"], true)),
            ("b", spec(300, vec!["integration"], false)),
            ("c", spec(200, vec![], false)),
        ]
    }

    async fn world(&self, out: &mut Outcome) -> Result<(), String> {
        let [(_, mut a), (_, b), (_, c)] = Self::initial();
        for (customer, s) in Self::initial() {
            self.apply(customer, &s).await?;
        }
        let traffic = (self.entry.name == "per-org").then(|| self.customer_traffic());
        for customer in ["a", "b", "c"] {
            if !self.settle(customer, "created", out).await? {
                return Err(format!("{customer} did not converge"));
            }
        }
        a.state = "suspended";
        self.apply("a", &a).await?;
        if !self.settle("a", "suspended", out).await? {
            return Err("a did not converge once suspended".into());
        }
        // Edit while suspended: name, metadata, a top-up and a second key.
        a.display = "Acme Two".into();
        a.plan = "pro";
        a.credits = 700;
        a.keys = vec!["integration", "extra"];
        self.apply("a", &a).await?;
        if !self.settle("a", "edited while suspended", out).await? {
            // Waiting for a person: nothing may be written meanwhile.
            self.quiet("edits refused while suspended").await?;
        }
        a.state = "active";
        self.apply("a", &a).await?;
        if !self.settle("a", "resumed", out).await? {
            return Err("the resumed customer did not converge".into());
        }
        self.corgs.delete(&self.name("b")).await?;
        self.corgs.wait_gone(&self.name("b")).await?;
        if let Some(t) = traffic {
            t.abort();
        }
        self.quiet("converged").await?;
        self.audit(&[("a", &a, false), ("b", &b, true), ("c", &c, false)], out)
            .await;
        Ok(())
    }

    /// The customers' own traffic on a's bucket (`--rate-limit-scope child-org`): its key
    /// calls whoami faster than the bucket refills.
    fn customer_traffic(&self) -> tokio::task::JoinHandle<()> {
        let secrets = self.secrets.clone();
        let secret = format!("{}-integration", self.name("a"));
        let base = self.sim.base_url().to_string();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let key = loop {
                if let Ok(Some(s)) = secrets.get_opt(&secret).await
                    && let Some(k) = s.data.as_ref().and_then(|d| d.get("apiKey"))
                    && !k.0.is_empty()
                {
                    break String::from_utf8_lossy(&k.0).to_string();
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            loop {
                let _ = http
                    .get(format!("{base}/v1/whoami"))
                    .bearer_auth(&key)
                    .send()
                    .await;
                // Half of the org's read-light refill (120/min): the customer's own
                // traffic drains the bucket without taking all of it (at 5/s it left the
                // operator nothing and the entry timed out on a loaded machine).
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
        })
    }

    /// The daily write cap is reached with the reset ~23 h away: the operator says when it
    /// will try again (a named condition) and sends nothing before that.
    async fn daily_cap(&self, out: &mut Outcome) -> Result<(), String> {
        // Move the simulator to 01:00 UTC of the next day: the cap resets in 23 hours.
        let now = self.sim_clock().await?;
        let day = 86_400;
        let advance = (day + 3600 - now.rem_euclid(day)).rem_euclid(day);
        self.advance(advance).await?;
        for (customer, s) in Self::initial() {
            self.apply(customer, &s).await?;
        }
        let named = until("one customer RateLimited", PHASE, || async {
            for customer in ["a", "b", "c"] {
                if let Some((reason, message, _)) = self.corgs.not_ready(&self.name(customer)).await
                    && reason == "RateLimited"
                {
                    return Some((customer, message));
                }
            }
            None
        })
        .await?;
        out.named
            .push(format!("{}: RateLimited: {}", self.name(named.0), named.1));
        // "... next attempt at <time>, in <N>s"
        let wait: u64 = named
            .1
            .rsplit("in ")
            .next()
            .and_then(|s| s.trim_end_matches('s').parse().ok())
            .unwrap_or(0);
        if wait < 20 * 3600 {
            out.fail(format!(
                "the condition names a wait of {wait}s, but the provider's Retry-After is ~23 h: the operator would try again before the reset"
            ));
        }
        let refused_before = self.writes().await;
        self.quiet("waiting for the daily cap's reset").await?;
        let refused_after = self.writes().await;
        if refused_after != refused_before {
            out.fail("requests reached the provider before the reset");
        }
        // Nothing doubled meanwhile.
        let state = self.sim.state().await;
        for (customer, s) in Self::initial() {
            let orgs = orgs_marked(&state, &format!("{}/{}/", self.ns, self.name(customer)));
            if orgs.len() > 1 {
                out.fail(format!("{customer}: {} orgs", orgs.len()));
            }
            for org in orgs {
                let moved = allocated(&state, org);
                if moved > s.credits {
                    out.fail(format!(
                        "{customer}: {moved} credits moved, spec {}",
                        s.credits
                    ));
                }
            }
        }
        Ok(())
    }

    async fn sim_clock(&self) -> Result<i64, String> {
        let v: Value = reqwest::get(format!("{}/_sim/clock", self.sim.base_url()))
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let now = v["now"].as_str().unwrap_or_default();
        now.parse::<jiff::Timestamp>()
            .map(|t| t.as_second())
            .map_err(|e| format!("clock {now:?}: {e}"))
    }

    async fn advance(&self, seconds: i64) -> Result<(), String> {
        let r = reqwest::Client::new()
            .post(format!("{}/_sim/clock", self.sim.base_url()))
            .json(&json!({"advanceSeconds": seconds}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        r.status()
            .is_success()
            .then_some(())
            .ok_or_else(|| format!("advance clock: {}", r.status()))
    }

    /// Exactly one org per customer, exactly the credits asked, the spec's keys and
    /// webhooks and nothing else, money conserved.
    async fn audit(&self, customers: &[(&str, &Spec, bool)], out: &mut Outcome) {
        let state = self.sim.state().await;
        for (customer, spec, deleted) in customers {
            let name = self.name(customer);
            let orgs = orgs_marked(&state, &format!("{}/{name}/", self.ns));
            let live: Vec<&Value> = orgs
                .iter()
                .copied()
                .filter(|o| o["status"] != "archived")
                .collect();
            if *deleted {
                if !live.is_empty() || orgs.len() != 1 {
                    out.fail(format!(
                        "{name}: deleted, yet {} live org(s) of {} remain",
                        live.len(),
                        orgs.len()
                    ));
                }
            } else if orgs.len() != 1 || live.len() != 1 {
                out.fail(format!(
                    "{name}: {} org(s), {} live",
                    orgs.len(),
                    live.len()
                ));
                continue;
            }
            let Some(org) = orgs.first() else { continue };
            let moved = allocated(&state, org);
            if moved != spec.credits {
                out.fail(format!(
                    "{name}: {moved} credits moved by orgops, spec {}",
                    spec.credits
                ));
            }
            if *deleted {
                continue;
            }
            let id = org["id"].as_str().unwrap_or_default();
            if org["status"] != spec.state
                || org["name"] != spec.display.as_str()
                || org["metadata"]["plan"] != spec.plan
            {
                out.fail(format!(
                    "{name}: org {} {:?} plan {} differs from the spec",
                    org["status"], org["name"], org["metadata"]["plan"]
                ));
            }
            let keys: Vec<&Value> = state["apiKeys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|k| {
                    k["organizationId"] == id
                        && k["status"] == "active"
                        && k["supersededBy"].is_null()
                })
                .collect();
            let mut names: Vec<&str> = keys.iter().filter_map(|k| k["name"].as_str()).collect();
            names.sort_unstable();
            let mut want = spec.keys.clone();
            want.sort_unstable();
            if names != want {
                out.fail(format!("{name}: live keys {names:?}, spec {want:?}"));
            }
            for key in &spec.keys {
                let secret = format!("{name}-{key}");
                let recorded = self
                    .secrets
                    .get_opt(&secret)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|s| s.metadata.annotations)
                    .and_then(|a| a.get("orgops.dev/key-id").cloned());
                let live = keys.iter().any(|k| {
                    k["name"] == *key
                        && Some(k["id"].as_str().unwrap_or_default()) == recorded.as_deref()
                });
                if !live {
                    out.fail(format!(
                        "{name}: Secret {secret} names {recorded:?}, not its live key"
                    ));
                }
            }
            let hooks = state["webhookEndpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["organizationId"] == id)
                .count();
            if hooks != usize::from(spec.webhook) {
                out.fail(format!(
                    "{name}: {hooks} webhook endpoint(s), spec {}",
                    usize::from(spec.webhook)
                ));
            }
        }
        let children: i64 = state["orgs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["balance"].as_i64())
            .sum();
        let parent = state["parent"]["balance"].as_i64().unwrap_or_default();
        if parent + children != PARENT_CREDITS {
            out.fail(format!(
                "money not conserved: parent {parent} + children {children} != {PARENT_CREDITS}"
            ));
        }
    }
}

/// Orgs (archived too) whose owner marker starts with `prefix` (`<ns>/<name>/`).
fn orgs_marked<'a>(state: &'a Value, prefix: &str) -> Vec<&'a Value> {
    state["orgs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| {
            o["metadata"][OWNER]
                .as_str()
                .is_some_and(|m| m.starts_with(prefix))
        })
        .collect()
}

/// Credits orgops moved into `org`: allocation rows with its marker (the control view keeps
/// every event's metadata whatever the API shows).
fn allocated(state: &Value, org: &Value) -> i64 {
    let id = org["id"].as_str().unwrap_or_default();
    state["ledgers"][id]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["eventType"] == "allocation" && e["metadata"][MARKER] == "true")
        .filter_map(|e| e["credits"].as_i64())
        .sum()
}

/// Which (method route status) rows grew between two counter snapshots.
pub fn route_diff(before: &Value, after: &Value) -> String {
    let rows = |c: &Value| -> BTreeMap<String, u64> {
        c["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    format!("{} {} {}", r["method"], r["route"], r["status"]),
                    r["count"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let (b, a) = (rows(before), rows(after));
    a.iter()
        .filter_map(|(k, n)| {
            let d = n - b.get(k).copied().unwrap_or(0);
            (d > 0).then(|| format!("{k} +{d}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
