//! What the provider chaos suites share (Gennia, YouHodler): two operator replicas with
//! leader election, SIGKILLed on a schedule while a user's edits land; waiting for every
//! object to settle; the audit's verdict lists.
use super::{Operator, TestEnv, wait_for, wait_for_some};
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

/// Waits for every customer but the racing pairs to settle, deletes each pair's loser
/// (Stalled `AdoptionConflict`, default `deletionPolicy: Archive`), and waits (60 s at most)
/// for everything to settle again. `view(c)` is (name, deleted, one of a pair); `lose(c)`
/// marks a loser deleted. Returns what is still pending and the losers.
pub async fn settle_and_delete_losers<C>(
    api: &Api<DynamicObject>,
    customers: &mut [C],
    timeout: Duration,
    view: impl Fn(&C) -> (&str, bool, bool),
    lose: impl Fn(&mut C),
) -> (Vec<String>, Vec<String>) {
    let expected = |customers: &[C], all: bool| -> Vec<(String, bool)> {
        customers
            .iter()
            .map(&view)
            .filter(|(_, _, paired)| all || !paired)
            .map(|(name, deleted, _)| (name.to_string(), deleted))
            .collect()
    };
    let mut pending = settle(api, &expected(customers, false), timeout).await;
    let paired: Vec<String> = customers
        .iter()
        .map(&view)
        .filter(|(_, _, paired)| *paired)
        .map(|(name, _, _)| name.to_string())
        .collect();
    let losers = delete_pair_losers(api, paired).await;
    for c in customers.iter_mut() {
        if losers.iter().any(|l| l == view(c).0) {
            lose(c);
        }
    }
    pending.extend(settle(api, &expected(customers, true), Duration::from_secs(60)).await);
    (pending, losers)
}

/// Deletes those of `names` that are Stalled `AdoptionConflict` (each racing pair's loser,
/// with its default `deletionPolicy: Archive`); returns their names.
pub async fn delete_pair_losers(
    api: &Api<DynamicObject>,
    names: impl IntoIterator<Item = String>,
) -> Vec<String> {
    let names: Vec<String> = names.into_iter().collect();
    let objects = api
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut losers = Vec::new();
    for o in objects {
        let name = o.metadata.name.clone().unwrap_or_default();
        let conflict = o.data["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Stalled" && c["status"] == "True" && c["reason"] == "AdoptionConflict"
            })
        });
        if conflict && names.contains(&name) {
            delete(api, &name).await;
            losers.push(name);
        }
    }
    losers
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

/// Lease duration of the chaos replicas: short, so a killed or frozen leader is replaced
/// in seconds (the production default is 15 s).
pub const CHAOS_LEASE: &str = "--lease-duration=4s";

/// Two replicas competing for one Lease.
pub struct Replicas {
    pub ops: [Operator; 2],
    leases: Api<Lease>,
    lease_name: String,
    history: LeaseHistory,
    /// Unix ms when the replicas were started (writes before are the test's own).
    pub started_ms: u64,
}

/// What the rounds did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rounds {
    /// SIGKILLs (of the leader or of the standby).
    pub kills: usize,
    /// Leaders frozen (SIGSTOP) past their Lease, then let run again.
    pub zombies: usize,
    pub leader_changes: usize,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Replicas {
    /// Starts two replicas with leader election on a Lease unique to `env` (short, see
    /// [`CHAOS_LEASE`]), and a record of who held the Lease when.
    pub async fn start(env: &TestEnv, client: &kube::Client, extra: &[&str]) -> Replicas {
        let lease_name = format!("chaos-{}", env.ns);
        let lease_arg = format!("--lease-name={lease_name}");
        let mut args = vec!["--leader-election=true", &lease_arg, CHAOS_LEASE];
        args.extend_from_slice(extra);
        let leases: Api<Lease> = Api::namespaced(client.clone(), "orgops-system");
        let history = LeaseHistory::start(leases.clone(), lease_name.clone());
        let started_ms = now_ms();
        let first = Operator::start(env, &args).await;
        let second = first.replica("b");
        Replicas {
            ops: [first, second],
            leases,
            lease_name,
            history,
            started_ms,
        }
    }

    /// `kills + zombies` rounds: wait a random moment, then either SIGKILL a replica (the
    /// leader every other kill) and restart it after a random pause, or freeze the leader
    /// (SIGSTOP) until the other replica took its Lease, let it run again (SIGCONT) as a
    /// zombie, and wait for it to notice and exit by itself (then start it again as a
    /// standby). `batch(round)` lands the user's edits of that round: before the kill on
    /// even rounds, during the outage or the freeze on odd ones and on every freeze.
    pub async fn chaos_rounds(
        &mut self,
        kills: usize,
        zombies: usize,
        mut batch: impl AsyncFnMut(usize),
    ) -> Rounds {
        let total = kills + zombies;
        let every = total.checked_div(zombies).unwrap_or(usize::MAX).max(1);
        let mut done = Rounds::default();
        for round in 0..total {
            let zombie = done.zombies < zombies && round % every == every / 2;
            let (up, down) = {
                let mut rng = rand::rng();
                (
                    rng.random_range(300..2_500u64),
                    rng.random_range(100..1_500u64),
                )
            };
            tokio::time::sleep(Duration::from_millis(up)).await;
            for op in self.ops.iter_mut() {
                assert!(
                    op.is_running(),
                    "an operator exited on its own; log: {}",
                    op.log_path().display()
                );
            }
            if zombie {
                self.zombie_round(round, &mut batch).await;
                done.zombies += 1;
                done.leader_changes += 1;
                continue;
            }
            if round % 2 == 0 {
                batch(round).await;
            }
            let leader = leader_of(&self.ops).await;
            let kill_leader = done.kills % 2 == 0;
            let victim = if kill_leader { leader } else { 1 - leader };
            let holder_before = lease_holder(&self.leases, &self.lease_name).await;
            self.ops[victim].kill();
            done.kills += 1;
            if round % 2 == 1 {
                batch(round).await;
            }
            tokio::time::sleep(Duration::from_millis(down)).await;
            self.ops[victim].restart();
            if kill_leader {
                // A SIGKILLed holder's Lease expires and the other replica takes it.
                self.new_holder(holder_before).await;
                leader_of(&self.ops).await;
                done.leader_changes += 1;
            }
        }
        done
    }

    /// Freezes the leader past its Lease while `batch` lands edits; the other replica
    /// leads; the frozen one, let run again, must stop writing and exit on its own.
    async fn zombie_round(&mut self, round: usize, batch: &mut impl AsyncFnMut(usize)) {
        let leader = leader_of(&self.ops).await;
        let holder_before = lease_holder(&self.leases, &self.lease_name).await;
        self.ops[leader].pause();
        batch(round).await;
        self.new_holder(holder_before).await;
        wait_for(
            "the other replica leading while the old leader is frozen",
            Duration::from_secs(60),
            || async { self.ops[1 - leader].is_leader().await },
        )
        .await;
        self.ops[leader].resume();
        let zombie = &mut self.ops[leader];
        wait_for_some(
            "the zombie leader exiting on its own",
            Duration::from_secs(60),
            || {
                let running = zombie.is_running();
                async move { (!running).then_some(()) }
            },
        )
        .await;
        assert!(
            zombie.log().contains("lost the leader Lease"),
            "the zombie says why it stopped; log: {}",
            zombie.log_path().display()
        );
        zombie.restart();
    }

    async fn new_holder(&self, before: Option<String>) {
        let (leases, lease_name) = (&self.leases, self.lease_name.as_str());
        wait_for_some("a new Lease holder", Duration::from_secs(60), || {
            let before = before.clone();
            async move {
                let now = lease_holder(leases, lease_name).await;
                (now.is_some() && now != before).then_some(())
            }
        })
        .await;
    }

    /// True when a replica's log holds `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.ops.iter().any(|op| op.log().contains(needle))
    }

    /// Stops both replicas and deletes the Lease; returns who held it when (Unix ms,
    /// holder) and when the replicas were stopped.
    pub async fn stop(self) -> (LeaseSamples, u64) {
        let Replicas {
            ops,
            leases,
            lease_name,
            history,
            ..
        } = self;
        drop(ops);
        let stopped_ms = now_ms();
        let samples = history.stop().await;
        let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
        (samples, stopped_ms)
    }
}

/// (Unix ms, holder) samples of a Lease.
pub type LeaseSamples = Vec<(u64, Option<String>)>;

/// Who held a Lease when, sampled every 100 ms from the API server.
pub struct LeaseHistory {
    samples: std::sync::Arc<std::sync::Mutex<LeaseSamples>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseHistory {
    pub fn start(leases: Api<Lease>, name: String) -> LeaseHistory {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(lease) = leases.get_opt(&name).await {
                    let holder = lease
                        .and_then(|l| l.spec)
                        .and_then(|s| s.holder_identity)
                        .filter(|h| !h.is_empty());
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((now_ms(), holder));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        LeaseHistory {
            samples,
            stop,
            task,
        }
    }

    pub async fn stop(self) -> LeaseSamples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// How long after its stamped deadline a write may arrive: the stamp is taken right
/// before the request is sent, the arrival is logged once the simulator parsed it.
pub const ARRIVAL_SLACK_MS: u64 = 250;

/// The fence audit's findings over the simulator's write log (`GET /_sim/writes`).
#[derive(Debug, Default)]
pub struct FenceAudit {
    /// Writes the replicas sent (in the window, routes not exempt).
    pub writes: usize,
    /// Replicas seen sending them.
    pub replicas: usize,
    pub outside: Vec<String>,
}

/// Every write that arrived between `from_ms` and `to_ms` (while the replicas ran) on a
/// route not in `exempt` must name its replica and its fence deadline, must arrive by that
/// deadline (+ [`ARRIVAL_SLACK_MS`]), and must not come from a replica after another one
/// was seen holding the Lease that the writer had been seen holding (`leases`: Unix ms,
/// holder, as [`LeaseHistory`] sampled them).
pub fn fence_audit(
    writes: &[Value],
    leases: &[(u64, Option<String>)],
    (from_ms, to_ms): (u64, u64),
    exempt: &[&str],
) -> FenceAudit {
    let mut audit = FenceAudit::default();
    let mut replicas = std::collections::HashSet::new();
    for w in writes {
        let at = w["atMs"].as_u64().unwrap_or(0);
        let route = w["route"].as_str().unwrap_or_default();
        if at < from_ms || at > to_ms || exempt.contains(&route) {
            continue;
        }
        audit.writes += 1;
        let what = format!("{} {route} at {at}", w["method"].as_str().unwrap_or("?"));
        let Some(replica) = w["replica"].as_str() else {
            audit.outside.push(format!("{what}: names no replica"));
            continue;
        };
        replicas.insert(replica.to_string());
        match w["fenceDeadlineMs"].as_u64() {
            None => audit
                .outside
                .push(format!("{what} by {replica}: no fence deadline")),
            Some(deadline) if at > deadline + ARRIVAL_SLACK_MS => audit.outside.push(format!(
                "{what} by {replica}: {} ms after its fence closed",
                at - deadline
            )),
            Some(_) => {}
        }
        let mut held = false;
        for (t, holder) in leases.iter().take_while(|(t, _)| *t <= at) {
            match holder.as_deref() {
                Some(h) if h == replica => held = true,
                Some(other) if held => {
                    audit.outside.push(format!(
                        "{what} by {replica}: {other} was seen holding the Lease at {t}, after it"
                    ));
                    break;
                }
                _ => {}
            }
        }
    }
    audit.replicas = replicas.len();
    audit
}

/// The fence audit must be able to fail: a write after its deadline, one without a
/// replica, and one by a replica after another took its Lease are each reported.
pub fn fence_audit_catches_violations() {
    let leases = vec![
        (1_000, Some("a".to_string())),
        (2_000, Some("a".to_string())),
        (3_000, Some("b".to_string())),
    ];
    let w = |at: u64, replica: Option<&str>, deadline: Option<u64>| {
        serde_json::json!({"atMs": at, "method": "POST", "route": "/x",
                           "replica": replica, "fenceDeadlineMs": deadline})
    };
    let fine = [
        w(1_500, Some("a"), Some(2_500)),
        w(3_100, Some("b"), Some(6_000)),
    ];
    assert!(
        fence_audit(&fine, &leases, (0, 10_000), &[])
            .outside
            .is_empty()
    );
    for (bad, why) in [
        (w(2_900, Some("a"), Some(2_500)), "after its deadline"),
        (w(1_500, None, Some(2_500)), "without a replica"),
        (w(3_200, Some("a"), Some(9_000)), "after b took the Lease"),
    ] {
        let a = fence_audit(&[bad], &leases, (0, 10_000), &[]);
        assert_eq!(a.outside.len(), 1, "a write {why} is reported: {a:?}");
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
    /// Archived or suspended although no spec asked for it.
    pub wrongly_offboarded: Vec<String>,
    /// Writes outside the sender's fenced window.
    pub outside_fence: Vec<String>,
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
        all.extend(tag("wrongly offboarded", &self.wrongly_offboarded));
        all.extend(tag("outside a fence", &self.outside_fence));
        all.extend(tag("wrong", &self.wrong));
        all
    }
}
