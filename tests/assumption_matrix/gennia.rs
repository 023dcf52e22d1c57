//! The Gennia worlds: one `gennia-sim` per entry. Customers a and b are created with users
//! and a plan; a third (c) starts out breaking a rule some modes enforce (an admin email
//! already used, more users than seats) and is then fixed. a is suspended while the
//! suspend's answer is lost (the retry meets "already suspended"), edited while suspended
//! (a user's role), resumed; b is deleted (Gennia has no archive: suspended).
use serde_json::{Value, json};

use crate::run::{Corgs, Entry, Outcome, PHASE, count_by_status, entry, until};
use crate::support::TestEnv;
use crate::support::gennia::{API, GenniaSim, install_provider};

pub fn entries() -> Vec<Entry> {
    vec![
        entry("default", "-", &[], &[]),
        entry(
            "dialect-validation",
            "5",
            &["--error-dialect", "validation"],
            &[],
        ),
        entry("dialect-spring", "5", &["--error-dialect", "spring"], &[]),
        entry("nulls", "6", &["--nulls"], &[]),
        entry(
            "pending",
            "7",
            &["--initial-status", "pending_onboarding"],
            &["NotSuspendable"],
        ),
        entry(
            "unique-email",
            "7",
            &["--unique-login-email"],
            &["ApiRejected"],
        ),
        entry("seats-2", "7", &["--seats", "2"], &["ApiRejected"]),
        entry("key-min-10", "+", &["--api-key-min-chars", "10"], &[]),
    ]
}

pub struct World {
    pub entry: Entry,
    pub sim: GenniaSim,
    ns: String,
    provider: String,
    plan: String,
    corgs: Corgs,
}

/// One customer's users: (email, role).
type Users = Vec<(String, &'static str)>;

impl crate::run::World for World {
    async fn new(env: &TestEnv, entry: Entry, client: kube::Client) -> World {
        let sim = GenniaSim::start(entry.flags);
        let plan = sim
            .create_plan("Growth", json!({"priceCents": 4900, "creditsIncluded": 50}))
            .await;
        let provider = format!("{}-{}", env.ns, entry.name);
        install_provider(env, &sim, &provider);
        World {
            entry,
            sim,
            ns: env.ns.clone(),
            provider,
            plan,
            corgs: Corgs::new(&env.ns, client).await,
        }
    }

    fn entry(&self) -> &Entry {
        &self.entry
    }

    const API: &'static str = API;

    async fn counters(&self) -> Value {
        self.sim.counters().await
    }

    async fn script(&self, out: &mut Outcome) -> Result<(), String> {
        self.world(out).await
    }
}

impl World {
    fn name(&self, customer: &str) -> String {
        format!("g{}-{customer}", self.entry.name)
    }

    /// The workspace name: unique per hub, so unique per entry is enough.
    fn workspace(&self, customer: &str) -> String {
        format!("{} {customer}", self.entry.name)
    }

    fn email(&self, customer: &str, who: &str) -> String {
        format!("{who}@{}-{customer}.example", self.entry.name)
    }

    fn manifest(&self, customer: &str, state: &str, users: &Users) -> Value {
        let users: Vec<Value> = users
            .iter()
            .map(|(email, role)| json!({"email": email, "role": role}))
            .collect();
        json!({
            "apiVersion": "orgops.dev/v1alpha1",
            "kind": "CustomerOrg",
            "metadata": {"name": self.name(customer), "namespace": self.ns},
            "spec": {
                "providerRef": {"name": self.provider},
                "displayName": self.workspace(customer),
                "state": state,
                "suspendReason": "unpaid invoice",
                "gennia": {"planId": self.plan, "users": users},
            }
        })
    }

    async fn apply(&self, customer: &str, state: &str, users: &Users) -> Result<(), String> {
        self.corgs
            .apply(&self.name(customer), self.manifest(customer, state, users))
            .await
    }

    /// Ready, or one of the entry's named reasons (recorded).
    async fn settle(&self, customer: &str, what: &str, out: &mut Outcome) -> Result<bool, String> {
        let name = self.name(customer);
        self.corgs.settle(&name, what, self.entry.named, out).await
    }

    /// The simulator's client of that workspace (exactly one), or `Err`.
    async fn client(&self, customer: &str) -> Result<Value, String> {
        let found = self.sim.clients_named(&self.workspace(customer)).await;
        match found.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!(
                "{}: {} clients named {:?}",
                self.name(customer),
                other.len(),
                self.workspace(customer)
            )),
        }
    }

    async fn ctl(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, String> {
        let r = reqwest::Client::new()
            .request(method, format!("{}{path}", self.sim.base_url()))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        status
            .is_success()
            .then_some(v.clone())
            .ok_or_else(|| format!("{path}: {status} {v}"))
    }

    async fn onboard(&self, customer: &str) -> Result<(), String> {
        let id = self.client(customer).await?["publicId"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.ctl(
            reqwest::Method::POST,
            &format!("/_sim/clients/{id}/onboard"),
            json!({}),
        )
        .await
        .map(|_| ())
    }

    /// Nothing written while the operator checks its provider twice (`GET /health`).
    async fn quiet(&self, what: &str) -> Result<(), String> {
        let health =
            |c: &Value| count_by_status(c, |m, r, _| m == "GET" && r == format!("{API}/health"));
        crate::run::quiet(what, || self.sim.counters(), health, API).await
    }

    async fn world(&self, out: &mut Outcome) -> Result<(), String> {
        let mut a: Users = vec![
            (self.email("a", "ops"), "admin"),
            (self.email("a", "dev"), "editor"),
        ];
        let b: Users = vec![(self.email("b", "ops"), "admin")];
        let c_fixed: Users = vec![
            (self.email("c", "ops"), "admin"),
            (self.email("c", "dev"), "member"),
        ];
        // c breaks the rule its entry enforces, or nothing.
        let c_first: Users = match self.entry.name {
            "unique-email" => vec![(self.email("a", "ops"), "admin")],
            "seats-2" => {
                let mut crowd = c_fixed.clone();
                crowd.push((self.email("c", "qa"), "viewer"));
                crowd
            }
            _ => c_fixed.clone(),
        };
        self.apply("a", "active", &a).await?;
        self.apply("b", "active", &b).await?;
        for customer in ["a", "b"] {
            if !self.settle(customer, "created", out).await? {
                return Err(format!("{customer} did not converge"));
            }
        }
        // After a exists: with one login per email, c is the one refused.
        self.apply("c", "active", &c_first).await?;
        if !self.settle("c", "created", out).await? {
            self.quiet("a create the provider refused").await?;
            self.apply("c", "active", &c_fixed).await?;
            if !self.settle("c", "fixed", out).await? {
                return Err("c did not converge once its spec was fixed".into());
            }
        }

        // Suspend, with the answer lost: the client's re-send meets "not active".
        self.sim
            .set_faults(json!({"loseResponseMode": "badGateway", "write": {"loseResponse": 1.0}}))
            .await;
        self.apply("a", "suspended", &a).await?;
        let suspended = |c: &Value| c["subscriptionStatus"] == "suspended";
        let named = until("a suspended, or a named condition", PHASE, || async {
            if self.client("a").await.is_ok_and(|c| suspended(&c)) {
                return Some(None);
            }
            let (reason, message, current) = self.corgs.not_ready(&self.name("a")).await?;
            (current && self.entry.named.contains(&reason.as_str()))
                .then(|| Some(format!("{reason}: {message}")))
        })
        .await;
        let named = match named {
            Ok(n) => n,
            Err(e) => {
                self.sim.set_faults(json!({})).await;
                return Err(e);
            }
        };
        if let Some(n) = named {
            out.named.push(format!("{} (suspend): {n}", self.name("a")));
            let waited = self.quiet("a suspend the provider cannot do yet").await;
            // A user finishes onboarding: the workspace is active and can be suspended.
            self.onboard("a").await?;
            waited?;
            until("a suspended after onboarding", PHASE, || async {
                self.client("a").await.ok().filter(suspended)
            })
            .await?;
        }
        self.sim.set_faults(json!({})).await;
        // Ready now, not the waiting condition an earlier pass left at this generation.
        self.corgs.wait(&self.name("a"), "suspended", &[]).await?;

        // Edit while suspended: a user's role.
        a[1].1 = "viewer";
        self.apply("a", "suspended", &a).await?;
        self.settle("a", "edited while suspended", out).await?;
        self.apply("a", "active", &a).await?;
        self.settle("a", "resumed", out).await?;

        if self.entry.name == "pending" {
            // b has never been onboarded: offboarding cannot suspend it yet.
            self.corgs.delete(&self.name("b")).await?;
            let named = self
                .corgs
                .wait_named(
                    &self.name("b"),
                    "waiting to be offboarded",
                    &["NotSuspendable"],
                )
                .await?;
            out.named
                .push(format!("{} (delete): {named}", self.name("b")));
            self.quiet("an offboarding the provider cannot do yet")
                .await?;
            self.onboard("b").await?;
        } else {
            self.corgs.delete(&self.name("b")).await?;
        }
        self.corgs.wait_gone(&self.name("b")).await?;
        self.quiet("converged").await?;

        // Audit: one client each, as the spec says.
        let ca = self.client("a").await?;
        if ca["subscriptionStatus"] != "active" {
            out.fail(format!("a is {}", ca["subscriptionStatus"]));
        }
        let mut roles: Vec<(String, String)> = ca["users"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| {
                (
                    u["email"].as_str().unwrap_or_default().to_string(),
                    u["role"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        roles.sort();
        let mut want: Vec<(String, String)> =
            a.iter().map(|(e, r)| (e.clone(), r.to_string())).collect();
        want.sort();
        if roles != want {
            out.fail(format!("a's users {roles:?}, spec {want:?}"));
        }
        let cb = self.client("b").await?;
        if cb["subscriptionStatus"] != "suspended" {
            out.fail(format!(
                "deleted b is {}, not suspended",
                cb["subscriptionStatus"]
            ));
        }
        let cc = self.client("c").await?;
        if cc["users"].as_array().map_or(0, Vec::len) != c_fixed.len() {
            out.fail(format!("c has users {}", cc["users"]));
        }
        let all = self.sim.clients().await.len();
        if all != 3 {
            out.fail(format!("{all} clients for 3 customers"));
        }
        Ok(())
    }
}
