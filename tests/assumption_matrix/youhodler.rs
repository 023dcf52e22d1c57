//! The YouHodler worlds: one `youhodler-sim` per entry, three customers (more than one page
//! where a mode shrinks pages). a is suspended, edited while suspended (renamed, a metadata
//! key removed) and reactivated; b is deleted (no close endpoint: suspended); c stays. Every
//! lifecycle change must be requested exactly once: the simulator counts what it accepted.
use serde_json::{Value, json};

use crate::run::{Corgs, Entry, Outcome, PHASE, count_by_status, entry, until};
use crate::support::TestEnv;
use crate::support::youhodler::{YouhodlerSim, install_provider, token_requests};

pub fn entries() -> Vec<Entry> {
    vec![
        entry("default", "-", &[], &[]),
        entry(
            "async-30",
            "8",
            &["--lifecycle", "async:30"],
            &["TransitionPending"],
        ),
        entry("page-2", "9", &["--max-page-size", "2"], &[]),
        entry(
            "token-camel",
            "9",
            &["--max-page-size", "2", "--page-token-param", "pageToken"],
            &[],
        ),
        entry(
            "token-strict",
            "9",
            &[
                "--max-page-size",
                "2",
                "--page-token-param",
                "pageToken",
                "--unknown-query",
                "reject",
            ],
            &[],
        ),
        entry("merge", "10", &["--patch-metadata", "merge"], &[]),
        entry(
            "conflict-422",
            "+",
            &["--state-conflict", "not-admissible"],
            &[],
        ),
        entry("ext-repeat", "+", &["--unique-external-id", "false"], &[]),
    ]
}

pub struct World {
    pub entry: Entry,
    pub sim: YouhodlerSim,
    ns: String,
    provider: String,
    corgs: Corgs,
}

impl crate::run::World for World {
    async fn new(env: &TestEnv, entry: Entry, client: kube::Client) -> World {
        let sim = YouhodlerSim::start(entry.flags);
        let provider = format!("{}-{}", env.ns, entry.name);
        install_provider(env, &sim, &provider);
        World {
            entry,
            sim,
            ns: env.ns.clone(),
            provider,
            corgs: Corgs::new(&env.ns, client).await,
        }
    }

    fn entry(&self) -> &Entry {
        &self.entry
    }

    const API: &'static str = "/clients";

    async fn counters(&self) -> Value {
        self.sim.counters().await
    }

    async fn script(&self, out: &mut Outcome) -> Result<(), String> {
        self.world(out).await
    }
}

impl World {
    fn name(&self, customer: &str) -> String {
        format!("y{}-{customer}", self.entry.name)
    }

    fn ext(&self, customer: &str) -> String {
        format!("{}-{}", self.ns, self.name(customer))
    }

    fn manifest(&self, customer: &str, display: &str, state: &str, metadata: Value) -> Value {
        json!({
            "apiVersion": "orgops.dev/v1alpha1",
            "kind": "CustomerOrg",
            "metadata": {"name": self.name(customer), "namespace": self.ns},
            "spec": {
                "providerRef": {"name": self.provider},
                "displayName": display,
                "externalId": self.ext(customer),
                "metadata": metadata,
                "state": state,
                "suspendReason": "KYC review",
            }
        })
    }

    async fn apply(
        &self,
        customer: &str,
        display: &str,
        state: &str,
        metadata: Value,
    ) -> Result<(), String> {
        self.corgs
            .apply(
                &self.name(customer),
                self.manifest(customer, display, state, metadata),
            )
            .await
    }

    /// Ready at the current generation (a named condition a pending transition showed is
    /// recorded by [`World::lifecycle_lands`]; it must give way to Ready).
    async fn settle(&self, customer: &str, what: &str) -> Result<(), String> {
        self.corgs
            .wait(&self.name(customer), what, &[])
            .await
            .map(|_| ())
    }

    /// The simulator's one client with this customer's external id.
    async fn client(&self, customer: &str) -> Result<Value, String> {
        let found = self.sim.clients_with_external_id(&self.ext(customer)).await;
        match found.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{}: {} clients", self.name(customer), other.len())),
        }
    }

    /// Nothing written while the operator checks its provider twice (a token each time).
    async fn quiet(&self, what: &str) -> Result<(), String> {
        crate::run::quiet(what, || self.sim.counters(), token_requests, "/clients").await
    }

    /// With `--lifecycle async`, a transition the operator asked for is accepted but not
    /// applied: it must wait without asking again (checked over two provider checks, its
    /// named condition recorded), and converge once the simulator's clock applies it.
    async fn lifecycle_lands(
        &self,
        customer: &str,
        to: &str,
        out: &mut Outcome,
    ) -> Result<(), String> {
        if !self.entry.flags.contains(&"--lifecycle") {
            return Ok(());
        }
        until(
            &format!("{customer}'s move to {to} accepted"),
            PHASE,
            || async {
                let c = self.client(customer).await.ok()?;
                (c["pending_transition"]["to"] == to || c["status"] == to).then_some(())
            },
        )
        .await?;
        let named = self
            .corgs
            .wait_named(&self.name(customer), "says it waits", self.entry.named)
            .await;
        let waited = self.quiet(&format!("{customer}'s {to} pending")).await;
        self.sim.advance_clock(31).await;
        out.named
            .push(format!("{} ({to}): {}", self.name(customer), named?));
        waited
    }

    async fn world(&self, out: &mut Outcome) -> Result<(), String> {
        let full = json!({"segment": "corporate", "tier": "gold"});
        for customer in ["a", "b", "c"] {
            self.apply(customer, "Wayne", "active", full.clone())
                .await?;
        }
        for customer in ["a", "b", "c"] {
            self.settle(customer, "created").await?;
        }
        self.apply("a", "Wayne", "suspended", full.clone()).await?;
        self.lifecycle_lands("a", "suspended", out).await?;
        self.settle("a", "suspended").await?;
        // Edit while suspended: renamed, and a metadata key removed.
        let less = json!({"segment": "corporate"});
        self.apply("a", "Wayne Two", "suspended", less.clone())
            .await?;
        self.settle("a", "edited while suspended").await?;
        self.apply("a", "Wayne Two", "active", less).await?;
        self.lifecycle_lands("a", "active", out).await?;
        self.settle("a", "resumed").await?;
        self.corgs.delete(&self.name("b")).await?;
        self.lifecycle_lands("b", "suspended", out).await?;
        self.corgs.wait_gone(&self.name("b")).await?;
        self.quiet("converged").await?;

        let a = self.client("a").await?;
        if a["status"] != "active" || a["display_name"] != "Wayne Two" {
            out.fail(format!("a is {} {:?}", a["status"], a["display_name"]));
        }
        if a["metadata"].get("tier").is_some() || a["metadata"]["segment"] != "corporate" {
            out.fail(format!("a's metadata {}", a["metadata"]));
        }
        let b = self.client("b").await?;
        if b["status"] != "suspended" {
            out.fail(format!("deleted b is {}, not suspended", b["status"]));
        }
        for (customer, want) in [("a", 2), ("b", 1), ("c", 0)] {
            let c = self.client(customer).await?;
            let got = c["transitions_accepted"].as_u64().unwrap_or(0);
            if got != want {
                out.fail(format!(
                    "{customer}: {got} suspend/reactivate requests accepted, {want} asked for"
                ));
            }
        }
        let all = self.sim.clients().await.len();
        if all != 3 {
            out.fail(format!("{all} clients for 3 customers"));
        }
        let lists = count_by_status(&self.sim.counters().await, |m, r, s| {
            m == "GET" && r == "/clients" && s >= 400
        });
        if lists > 0 {
            out.fail(format!("{lists} client listing(s) refused"));
        }
        Ok(())
    }
}
