//! YouHodler chaos (issues 14 and 27): 5xx, 429 with `details.retry_after_ms`, dropped
//! connections and commit-then-lose (the create, PATCH or suspend happens, its answer does
//! not arrive), while two operator replicas with leader election are SIGKILLed at random
//! moments (the leader every other time) or frozen past their Lease and let run again
//! (zombies), and users rename, retag, suspend, resume and delete with both policies; pairs
//! of CustomerOrgs sharing one `externalId` appear at the same instant, and each pair's
//! loser is deleted afterwards. The audit reads the simulator: exactly one client per
//! CustomerOrg (by `external_id`), no client without one, names, metadata and states as the
//! specs say, deletions suspended (Archive) or untouched (Orphan), nothing suspended that no
//! spec asked for, no write outside its sender's fenced window, and no secret in the logs.
//!
//! Scale: `ORGOPS_YOUHODLER_CHAOS_ORGS` (default 30), `ORGOPS_YOUHODLER_CHAOS_KILLS`
//! (default 6), `ORGOPS_YOUHODLER_CHAOS_ZOMBIES` (default 2). Needs `cargo build -p
//! youhodler-sim`. The summary line goes to stderr.
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};
use support::TestEnv;
use support::chaos::{
    Audit, Replicas, customer_orgs, env_usize, fence_audit, settle_and_delete_losers, shuffled,
};
use support::youhodler::{YouhodlerSim, install_provider, requests};

const MANAGER: &str = "chaos-youhodler";

#[derive(Clone, Debug)]
struct Customer {
    name: String,
    external_id: String,
    display: String,
    tier: String,
    orphan: bool,
    suspended: bool,
    deleted: bool,
    /// One of a pair sharing the `externalId`, created at the same instant.
    paired: bool,
    /// Lost its pair's race and was deleted afterwards (Archive): it may suspend nothing.
    loser: bool,
}

impl Customer {
    fn new(ns: &str, i: usize) -> Customer {
        Customer {
            name: format!("y-{i:03}"),
            external_id: format!("chaos-{ns}-{i:03}"),
            display: format!("Chaos {i:03}"),
            tier: "gold".into(),
            orphan: i % 7 == 3,
            suspended: false,
            deleted: false,
            paired: false,
            loser: false,
        }
    }

    /// The two of pair `k`: one `externalId`.
    fn pair(ns: &str, k: usize) -> [Customer; 2] {
        ["a", "b"].map(|side| Customer {
            name: format!("y-pair-{k}-{side}"),
            external_id: format!("chaos-{ns}-pair-{k}"),
            display: format!("Chaos pair {k}"),
            tier: "gold".into(),
            orphan: false,
            suspended: false,
            deleted: false,
            paired: true,
            loser: false,
        })
    }

    fn reason(&self) -> String {
        format!("chaos suspends {}", self.name)
    }

    fn manifest(&self, ns: &str, provider: &str) -> Value {
        let mut spec = json!({
            "providerRef": {"name": provider},
            "displayName": self.display,
            "externalId": self.external_id,
            "metadata": {"tier": self.tier},
            "state": if self.suspended { "suspended" } else { "active" },
            "deletionPolicy": if self.orphan { "Orphan" } else { "Archive" },
        });
        if self.suspended {
            spec["suspendReason"] = json!(self.reason());
        }
        json!({"apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
               "metadata": {"name": self.name, "namespace": ns}, "spec": spec})
    }
}

#[derive(Clone, Copy, Debug)]
enum Edit {
    Suspend(usize),
    Resume(usize),
    Rename(usize),
    Retag(usize),
    Delete(usize),
}

impl Edit {
    fn customer(self) -> usize {
        match self {
            Edit::Suspend(i)
            | Edit::Resume(i)
            | Edit::Rename(i)
            | Edit::Retag(i)
            | Edit::Delete(i) => i,
        }
    }
}

fn planned_edits(n: usize) -> Vec<Edit> {
    let mut edits = Vec::new();
    for i in 0..n {
        match i % 6 {
            1 => edits.push(Edit::Suspend(i)),
            2 => edits.extend([Edit::Suspend(i), Edit::Resume(i)]),
            3 => edits.push(Edit::Rename(i)),
            4 => edits.extend([Edit::Retag(i), Edit::Rename(i)]),
            _ => {}
        }
        if i % 5 == 3 {
            edits.push(Edit::Delete(i));
        }
    }
    edits
}

async fn edit(
    api: &Api<DynamicObject>,
    ns: &str,
    provider: &str,
    customers: &mut [Customer],
    e: Edit,
) {
    let i = e.customer();
    let c = &mut customers[i];
    if c.deleted {
        return;
    }
    match e {
        Edit::Suspend(_) => c.suspended = true,
        Edit::Resume(_) => c.suspended = false,
        Edit::Rename(_) => c.display = format!("{} renamed", c.display),
        Edit::Retag(_) => c.tier = "platinum".into(),
        Edit::Delete(_) => {
            c.deleted = true;
            support::chaos::delete(api, &c.name).await;
            return;
        }
    }
    support::chaos::apply(api, MANAGER, &c.name, c.manifest(ns, provider)).await;
}

/// Simulator state against the specs.
fn audit(clients: &[Value], customers: &[Customer], objects: &[DynamicObject]) -> Audit {
    let mut a = Audit::default();
    let mut by_ext: HashMap<&str, Vec<&Value>> = HashMap::new();
    for c in clients {
        by_ext
            .entry(c["external_id"].as_str().unwrap_or_default())
            .or_default()
            .push(c);
    }
    let objs: HashMap<String, &DynamicObject> = objects
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
        .collect();
    for cust in customers {
        if cust.loser {
            // Deleted after losing its pair's race: the client of that externalId is the
            // winner's, audited with it.
            if objs.contains_key(&cust.name) {
                a.wrong
                    .push(format!("{}: the deleted loser is still there", cust.name));
            }
            continue;
        }
        let found = by_ext.remove(cust.external_id.as_str()).unwrap_or_default();
        let client = match found.as_slice() {
            [] if cust.deleted => {
                a.never_created += 1;
                continue;
            }
            [] => {
                a.lost.push(format!("{}: no client", cust.name));
                continue;
            }
            [one] => *one,
            many => {
                a.duplicated
                    .push(format!("{}: {} clients", cust.name, many.len()));
                continue;
            }
        };
        let status = client["status"].as_str().unwrap_or_default();
        let suspended = if cust.deleted {
            !cust.orphan || cust.suspended
        } else {
            cust.suspended
        };
        let want = if suspended { "suspended" } else { "active" };
        if status != want {
            let finding = format!("{}: client is {status}, the spec says {want}", cust.name);
            if status == "suspended" {
                a.wrongly_offboarded.push(finding);
            } else {
                a.wrong.push(finding);
            }
        }
        if cust.deleted {
            continue;
        }
        if cust.suspended && client["last_reason"] != cust.reason().as_str() {
            a.wrong.push(format!(
                "{}: suspend reason {}",
                cust.name, client["last_reason"]
            ));
        }
        if client["display_name"] != cust.display.as_str() {
            a.wrong.push(format!(
                "{}: display_name {} (want {:?})",
                cust.name, client["display_name"], cust.display
            ));
        }
        if client["metadata"]["tier"] != cust.tier.as_str() {
            a.wrong.push(format!(
                "{}: metadata {} (want tier {:?})",
                cust.name, client["metadata"], cust.tier
            ));
        }
        match objs.get(&cust.name) {
            Some(o) if o.data["status"]["orgId"] == client["id"] => {}
            Some(o) => a.wrong.push(format!(
                "{}: status.orgId {} but its client is {}",
                cust.name, o.data["status"]["orgId"], client["id"]
            )),
            None => a
                .lost
                .push(format!("{}: the CustomerOrg is gone", cust.name)),
        }
    }
    for (ext, left) in by_ext {
        a.orphaned.push(format!(
            "{} client(s) with external_id {ext:?} belong to no CustomerOrg",
            left.len()
        ));
    }
    a
}

/// The audit itself can fail: a duplicated, a stray, a lost and a wrongly suspended client.
fn audit_catches_tampering(clients: &[Value], customers: &[Customer], objects: &[DynamicObject]) {
    let live = customers
        .iter()
        .find(|c| !c.deleted && !c.suspended)
        .expect("a live, active customer");
    let index = clients
        .iter()
        .position(|c| c["external_id"] == live.external_id.as_str())
        .expect("its client");
    let mut dup = clients.to_vec();
    dup.push(clients[index].clone());
    assert_eq!(
        audit(&dup, customers, objects).duplicated.len(),
        1,
        "a duplicate"
    );
    let mut stray = clients.to_vec();
    stray.push(json!({"external_id": "made-outside-orgops", "status": "active"}));
    assert_eq!(
        audit(&stray, customers, objects).orphaned.len(),
        1,
        "a stray"
    );
    let mut lost = clients.to_vec();
    lost.remove(index);
    assert_eq!(
        audit(&lost, customers, objects).lost.len(),
        1,
        "a lost client"
    );
    let mut wrong = clients.to_vec();
    wrong[index]["status"] = json!("suspended");
    assert_eq!(
        audit(&wrong, customers, objects).wrongly_offboarded.len(),
        1,
        "suspended although no spec asked for it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn youhodler_chaos_creates_each_client_exactly_once() {
    let started = Instant::now();
    let n = env_usize("ORGOPS_YOUHODLER_CHAOS_ORGS", 30);
    let kills = env_usize("ORGOPS_YOUHODLER_CHAOS_KILLS", 6);
    let settle_secs = env_usize("ORGOPS_YOUHODLER_CHAOS_SETTLE_SECS", 120.max(n * 3)) as u64;

    let env = TestEnv::new("yh-chaos").await;
    // Short-lived tokens: they expire several times during the run.
    let sim = YouhodlerSim::start(&["--token-ttl", "20"]);
    let provider = format!("y-{}", env.ns);
    install_provider(&env, &sim, &provider);
    let client = env.client().await;
    sim.set_faults(json!({
        "latency": 0.2, "latencyMs": 200,
        "read": {"error5xx": 0.08, "rateLimit429": 0.05, "reset": 0.04, "latency": 0.2},
        "write": {"error5xx": 0.08, "rateLimit429": 0.05, "reset": 0.04, "loseResponse": 0.25, "latency": 0.2},
        "loseResponseMode": "mixed"
    }))
    .await;

    let mut customers: Vec<Customer> = (0..n).map(|i| Customer::new(&env.ns, i)).collect();
    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &env.ns, &customer_orgs());
    support::chaos::apply_all(
        &corgs,
        MANAGER,
        customers
            .iter()
            .map(|c| (c.name.clone(), c.manifest(&env.ns, &provider)))
            .collect(),
    )
    .await;

    let zombies = env_usize("ORGOPS_YOUHODLER_CHAOS_ZOMBIES", 2);
    let mut replicas =
        Replicas::start(&env, &client, &["--concurrency=8", "--resync-interval=10s"]).await;
    let edits = shuffled(planned_edits(n), |e| e.customer());
    let per_round = edits.len().div_ceil((kills + zombies).max(1));
    let mut edits = edits.into_iter();
    let rounds = replicas
        .chaos_rounds(kills, zombies, async |round| {
            if round == 1 {
                // Pairs sharing one externalId, each pair's two objects at once.
                for k in 0..3 {
                    let [a, b] = Customer::pair(&env.ns, k);
                    let (ma, mb) = (
                        a.manifest(&env.ns, &provider),
                        b.manifest(&env.ns, &provider),
                    );
                    tokio::join!(
                        support::chaos::apply(&corgs, MANAGER, &a.name, ma),
                        support::chaos::apply(&corgs, MANAGER, &b.name, mb),
                    );
                    customers.extend([a, b]);
                }
            }
            let batch: Vec<Edit> = edits.by_ref().take(per_round).collect();
            for e in batch {
                edit(&corgs, &env.ns, &provider, &mut customers, e).await;
            }
        })
        .await;
    let leader_changes = rounds.leader_changes;
    for e in edits {
        edit(&corgs, &env.ns, &provider, &mut customers, e).await;
    }
    let chaos_done = started.elapsed();

    let (pending, losers) = settle_and_delete_losers(
        &corgs,
        &mut customers,
        Duration::from_secs(settle_secs),
        |c| (c.name.as_str(), c.deleted, c.paired),
        |c| (c.deleted, c.loser) = (true, true),
    )
    .await;
    let settled = started.elapsed();
    let counters = sim.counters().await;
    let faults = counters["faultsInjected"].as_u64().unwrap_or(0);
    sim.set_faults(json!({})).await;

    let clients = sim.clients().await;
    let objects = corgs
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut audit = audit(&clients, &customers, &objects);
    for p in pending {
        audit
            .wrong
            .push(format!("not settled after {settle_secs}s: {p}"));
    }
    if replicas.logged(&sim.client_secret) {
        audit
            .wrong
            .push("an operator logged the client secret".into());
    }
    if replicas.logged("eyJ") {
        audit
            .wrong
            .push("an operator logged an access token".into());
    }
    // Creates that happened but whose answer was thrown away (commit-then-lose): the next
    // try was answered from the idempotency store or found the client by external_id.
    let lost_creates: u64 = counters["lostAfterSuccess"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["method"] == "POST" && r["route"] == "/clients")
                .filter_map(|r| r["count"].as_u64())
                .sum()
        })
        .unwrap_or(0);
    let rate_limited: u64 = ["GET", "POST", "PATCH"]
        .iter()
        .flat_map(|m| {
            [
                "/clients",
                "/clients/:client_id",
                "/clients/:client_id/suspend",
                "/clients/:client_id/reactivate",
            ]
            .map(|r| requests(&counters, m, r, 429))
        })
        .sum();
    let stale = requests(&counters, "PATCH", "/clients/:client_id", 412);
    let started_ms = replicas.started_ms;
    let (leases, stopped_ms) = replicas.stop().await;
    // The token request changes nothing at YouHodler and is not fenced.
    let fence = fence_audit(
        &sim.writes().await,
        &leases,
        (started_ms, stopped_ms),
        &["/oauth/token"],
    );
    audit.outside_fence.extend(fence.outside.iter().cloned());
    if losers.len() != 3 {
        audit.wrong.push(format!(
            "3 racing pairs, but {} losers: {losers:?}",
            losers.len()
        ));
    }

    let line = format!(
        "youhodler chaos: {} orgs, {} kills, {leader_changes} leader changes, {} zombie pauses, \
         {faults} faults injected ({rate_limited} 429s), {lost_creates} create answers lost after \
         commit, {stale} stale ETags, {} deleted before created, {} pairs' losers deleted; {} lost, \
         {} duplicated, {} orphaned clients, {} wrongly offboarded, {} writes outside a fence (of {}), \
         {} wrong; chaos phase {:.0}s, settled at {:.0}s, total {:.0}s\n",
        customers.len(),
        rounds.kills,
        rounds.zombies,
        audit.never_created,
        losers.len(),
        audit.lost.len(),
        audit.duplicated.len(),
        audit.orphaned.len(),
        audit.wrongly_offboarded.len(),
        audit.outside_fence.len(),
        fence.writes,
        audit.wrong.len(),
        chaos_done.as_secs_f64(),
        settled.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    let violations = audit.all();
    if violations.is_empty() {
        audit_catches_tampering(&clients, &customers, &objects);
    } else {
        let path = support::log_dir().join(format!("{}-youhodler-sim-state.json", env.ns));
        let _ = std::fs::write(&path, sim.state().await.to_string());
        eprintln!("youhodler chaos: simulator state in {}", path.display());
    }
    let _ = support::kubectl(&["delete", "orgprovider", &provider, "--ignore-not-found"]);
    if violations.is_empty() {
        env.cleanup().await;
    }
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        faults > 0,
        "no fault was injected, so this run proved nothing"
    );
    assert!(rate_limited > 0, "no 429 was injected");
    assert!(
        lost_creates > 0,
        "no create answer was lost after its commit, so commit-then-lose was not exercised"
    );
    assert!(
        leader_changes >= kills / 2 + zombies && rounds.zombies == zombies,
        "only {leader_changes} leader changes and {} zombies in {kills} kills and {zombies} freezes",
        rounds.zombies
    );
}
