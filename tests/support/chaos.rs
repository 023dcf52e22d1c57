//! What the provider chaos suites share (Gennia, YouHodler): two operator replicas with
//! leader election, SIGKILLed on a schedule while a user's edits land; waiting for every
//! object to settle; the audit's verdict lists.
use super::{Operator, TestEnv, wait_for_some};
use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use rand::Rng;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn customer_orgs() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "CustomerOrg"),
        "customerorgs",
    )
}

/// Server-side apply of a whole manifest as field manager `manager`.
pub async fn apply(api: &Api<DynamicObject>, manager: &str, name: &str, manifest: Value) {
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(manifest),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// Applies every manifest, 16 at a time.
pub async fn apply_all(api: &Api<DynamicObject>, manager: &str, manifests: Vec<(String, Value)>) {
    stream::iter(
        manifests
            .into_iter()
            .map(|(name, m)| async move { apply(api, manager, &name, m).await }),
    )
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;
}

pub async fn delete(api: &Api<DynamicObject>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|err| panic!("delete {name}: {err}"));
}

fn ready_at_generation(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation.unwrap_or(0);
    obj.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conds| {
            conds.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "True"
                    && c["observedGeneration"].as_i64() == Some(generation)
            })
        })
}

/// Waits until every live object (`(name, deleted)`) is Ready at its generation and every
/// deleted one is gone; returns what is still pending after `timeout`.
pub async fn settle(
    api: &Api<DynamicObject>,
    expected: &[(String, bool)],
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
                for (name, deleted) in expected {
                    match (deleted, by_name.get(name)) {
                        (true, Some(_)) => pending.push(format!("{name} (deleted, still there)")),
                        (false, None) => pending.push(format!("{name} (missing)")),
                        (false, Some(o)) if !ready_at_generation(o) => pending.push(format!(
                            "{name} (not Ready: {})",
                            o.data["status"]["conditions"]
                        )),
                        _ => {}
                    }
                }
            }
            Err(e) => pending.push(format!("list failed: {e}")),
        }
        if pending.is_empty() || start.elapsed() >= timeout {
            return pending;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The one replica that says it holds the Lease (60 s at most).
pub async fn leader_of(ops: &[Operator]) -> usize {
    wait_for_some(
        "exactly one replica reporting orgops_leader 1",
        Duration::from_secs(60),
        || async {
            let mut leaders = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                if op.is_leader().await {
                    leaders.push(i);
                }
            }
            (leaders.len() == 1).then(|| leaders[0])
        },
    )
    .await
}

async fn lease_holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    match leases.get_opt(name).await {
        Ok(Some(l)) => l.spec.and_then(|s| s.holder_identity),
        _ => None,
    }
}

/// Two replicas competing for one Lease.
pub struct Replicas {
    pub ops: [Operator; 2],
    leases: Api<Lease>,
    lease_name: String,
}

impl Replicas {
    /// Starts two replicas with leader election on a Lease unique to `env`.
    pub async fn start(env: &TestEnv, client: &kube::Client, extra: &[&str]) -> Replicas {
        let lease_name = format!("chaos-{}", env.ns);
        let lease_arg = format!("--lease-name={lease_name}");
        let mut args = vec!["--leader-election=true", &lease_arg];
        args.extend_from_slice(extra);
        let first = Operator::start(env, &args).await;
        let second = first.replica("b");
        Replicas {
            ops: [first, second],
            leases: Api::namespaced(client.clone(), "orgops-system"),
            lease_name,
        }
    }

    /// `rounds` rounds: wait a random moment, SIGKILL a replica (the leader every other
    /// round) and restart it after a random pause; `batch(round)` lands the user's edits
    /// of that round, before the kill on even rounds and during the outage on odd ones.
    /// Returns how many times leadership changed hands.
    pub async fn kill_rounds(&mut self, rounds: usize, mut batch: impl AsyncFnMut(usize)) -> usize {
        let mut leader_changes = 0;
        for round in 0..rounds {
            let (up, down) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(300..2_500u64),
                    rng.random_range(100..1_500u64),
                )
            };
            tokio::time::sleep(Duration::from_millis(up)).await;
            if round % 2 == 0 {
                batch(round).await;
            }
            let leader = leader_of(&self.ops).await;
            let kill_leader = round % 2 == 0;
            let victim = if kill_leader { leader } else { 1 - leader };
            let holder_before = lease_holder(&self.leases, &self.lease_name).await;
            for op in self.ops.iter_mut() {
                assert!(
                    op.is_running(),
                    "an operator exited on its own; log: {}",
                    op.log_path().display()
                );
            }
            self.ops[victim].kill();
            if round % 2 == 1 {
                batch(round).await;
            }
            tokio::time::sleep(Duration::from_millis(down)).await;
            self.ops[victim].restart();
            if kill_leader {
                // A SIGKILLed holder's Lease expires and the other replica takes it.
                let (leases, lease_name) = (&self.leases, self.lease_name.as_str());
                wait_for_some("a new Lease holder", Duration::from_secs(60), || {
                    let before = holder_before.clone();
                    async move {
                        let now = lease_holder(leases, lease_name).await;
                        (now.is_some() && now != before).then_some(())
                    }
                })
                .await;
                leader_of(&self.ops).await;
                leader_changes += 1;
            }
        }
        leader_changes
    }

    /// True when a replica's log holds `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.ops.iter().any(|op| op.log().contains(needle))
    }

    /// Stops both replicas and deletes the Lease.
    pub async fn stop(self) {
        let Replicas {
            ops,
            leases,
            lease_name,
        } = self;
        drop(ops);
        let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
    }
}

/// Edits in random order, each customer's own edits keeping their order
/// (`customer(edit)` says whose an edit is).
pub fn shuffled<E: Copy>(edits: Vec<E>, customer: impl Fn(&E) -> usize) -> Vec<E> {
    let mut slots: Vec<usize> = edits.iter().map(&customer).collect();
    {
        let mut rng = rand::rng();
        for i in (1..slots.len()).rev() {
            slots.swap(i, rng.random_range(0..=i));
        }
    }
    let mut by_customer: HashMap<usize, std::collections::VecDeque<E>> = HashMap::new();
    for e in edits {
        by_customer.entry(customer(&e)).or_default().push_back(e);
    }
    slots
        .into_iter()
        .filter_map(|i| by_customer.get_mut(&i).and_then(|q| q.pop_front()))
        .collect()
}

/// The audit's findings, by kind.
#[derive(Default)]
pub struct Audit {
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub orphaned: Vec<String>,
    pub wrong: Vec<String>,
    /// Deleted before their client was created (nothing to offboard).
    pub never_created: usize,
}

impl Audit {
    pub fn all(&self) -> Vec<String> {
        let tag =
            |k: &str, v: &Vec<String>| v.iter().map(|m| format!("{k}: {m}")).collect::<Vec<_>>();
        let mut all = tag("lost", &self.lost);
        all.extend(tag("duplicated", &self.duplicated));
        all.extend(tag("orphaned", &self.orphaned));
        all.extend(tag("wrong", &self.wrong));
        all
    }
}
