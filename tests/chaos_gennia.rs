//! Gennia chaos (issues 13 and 27): an API with no idempotency at all, made flaky — 5xx,
//! dropped connections and commit-then-lose (the create happens, its answer does not
//! arrive) — while two operator replicas with leader election are SIGKILLed at random
//! moments (the leader every other time) or frozen past their Lease and let run again
//! (zombies), and users suspend, resume, change roles, remove users and delete with both
//! policies; pairs of CustomerOrgs sharing one workspace name appear at the same instant,
//! and each pair's loser is deleted afterwards. The audit reads the simulator: exactly one
//! client per CustomerOrg (by workspace name), no client without a CustomerOrg, states and
//! users as the specs say, deletions suspended (Archive) or untouched (Orphan), nothing
//! suspended that no spec asked for, and no write outside its sender's fenced window.
//!
//! Scale: `ORGOPS_GENNIA_CHAOS_ORGS` (default 30), `ORGOPS_GENNIA_CHAOS_KILLS` (default 6),
//! `ORGOPS_GENNIA_CHAOS_ZOMBIES` (default 2).
//! Needs `cargo build -p gennia-sim`. The summary line goes to stderr even when output is
//! captured.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};
use support::TestEnv;
use support::chaos::{
    Audit, Replicas, customer_orgs, env_usize, fence_audit, settle_and_delete_losers, shuffled,
};
use support::gennia::{GenniaSim, creates_with_status, install_provider};

const MANAGER: &str = "chaos-gennia";

/// One customer: the spec as the user last applied it, and whether it was deleted.
#[derive(Clone, Debug)]
struct Customer {
    name: String,
    workspace: String,
    orphan: bool,
    suspended: bool,
    /// email → (name, role)
    users: BTreeMap<String, (String, String)>,
    deleted: bool,
    /// One of a pair sharing the workspace name, created at the same instant.
    paired: bool,
    /// Lost its pair's race and was deleted afterwards (Archive): it may suspend nothing.
    loser: bool,
}

impl Customer {
    fn new(ns: &str, i: usize) -> Customer {
        let mut users = BTreeMap::new();
        users.insert(
            format!("admin{i}@chaos.example"),
            (format!("Admin {i}"), "admin".to_string()),
        );
        users.insert(
            format!("member{i}@chaos.example"),
            (format!("Member {i}"), "member".to_string()),
        );
        if i.is_multiple_of(2) {
            users.insert(
                format!("viewer{i}@chaos.example"),
                (format!("Viewer {i}"), "viewer".to_string()),
            );
        }
        Customer {
            name: format!("g-{i:03}"),
            // Unique per run: the simulator refuses a second workspace of one name anyway.
            workspace: format!("Chaos {ns} {i:03}"),
            orphan: i % 7 == 3,
            suspended: false,
            users,
            deleted: false,
            paired: false,
            loser: false,
        }
    }

    /// The two of pair `k`: one workspace name, each its own admin.
    fn pair(ns: &str, k: usize) -> [Customer; 2] {
        ["a", "b"].map(|side| {
            let mut users = BTreeMap::new();
            users.insert(
                format!("admin-{k}-{side}@chaos.example"),
                (format!("Admin {k}{side}"), "admin".to_string()),
            );
            Customer {
                name: format!("g-pair-{k}-{side}"),
                workspace: format!("Chaos {ns} pair {k}"),
                orphan: false,
                suspended: false,
                users,
                deleted: false,
                paired: true,
                loser: false,
            }
        })
    }

    fn manifest(&self, ns: &str, provider: &str, plan: &str) -> Value {
        let users: Vec<Value> = self
            .users
            .iter()
            .map(|(email, (name, role))| json!({"email": email, "name": name, "role": role}))
            .collect();
        let mut spec = json!({
            "providerRef": {"name": provider},
            "displayName": self.workspace,
            "state": if self.suspended { "suspended" } else { "active" },
            "deletionPolicy": if self.orphan { "Orphan" } else { "Archive" },
            "gennia": {
                "planId": plan,
                "initialCredits": 100,
                "users": users,
            },
        });
        if self.suspended {
            spec["suspendReason"] = json!(format!("chaos suspends {}", self.name));
            spec["gennia"]["cancellationReason"] = json!("not_needed");
        }
        json!({"apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
               "metadata": {"name": self.name, "namespace": ns}, "spec": spec})
    }
}

/// A user's edit of one customer.
#[derive(Clone, Copy, Debug)]
enum Edit {
    Suspend(usize),
    Resume(usize),
    /// member → editor
    Promote(usize),
    /// the viewer leaves
    RemoveViewer(usize),
    Delete(usize),
}

impl Edit {
    fn customer(self) -> usize {
        match self {
            Edit::Suspend(i)
            | Edit::Resume(i)
            | Edit::Promote(i)
            | Edit::RemoveViewer(i)
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
            3 => edits.push(Edit::Promote(i)),
            4 => edits.push(Edit::RemoveViewer(i)),
            _ => {}
        }
        // Every fifth customer is deleted: Archive ones get suspended, Orphan ones stay.
        if i % 5 == 3 {
            edits.push(Edit::Delete(i));
        }
    }
    edits
}

/// Applies one edit (server-side apply of the whole spec, or a delete); nothing once the
/// customer was deleted.
async fn edit(
    api: &Api<DynamicObject>,
    ns: &str,
    provider: &str,
    plan: &str,
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
        Edit::Promote(_) => {
            if let Some(u) = c.users.get_mut(&format!("member{i}@chaos.example")) {
                u.1 = "editor".into();
            }
        }
        Edit::RemoveViewer(_) => {
            c.users.remove(&format!("viewer{i}@chaos.example"));
        }
        Edit::Delete(_) => {
            c.deleted = true;
            support::chaos::delete(api, &c.name).await;
            return;
        }
    }
    support::chaos::apply(api, MANAGER, &c.name, c.manifest(ns, provider, plan)).await;
}

/// Simulator state against the specs.
fn audit(clients: &[Value], customers: &[Customer], objects: &[DynamicObject]) -> Audit {
    let mut a = Audit::default();
    let mut by_name: HashMap<&str, Vec<&Value>> = HashMap::new();
    for c in clients {
        by_name
            .entry(c["workspaceName"].as_str().unwrap_or_default())
            .or_default()
            .push(c);
    }
    let objs: HashMap<String, &DynamicObject> = objects
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), o))
        .collect();
    for cust in customers {
        if cust.loser {
            // Deleted after losing its pair's race: nothing of it may exist (the client of
            // that name is the winner's, audited with it).
            if objs.contains_key(&cust.name) {
                a.wrong
                    .push(format!("{}: the deleted loser is still there", cust.name));
            }
            continue;
        }
        let found = by_name.remove(cust.workspace.as_str()).unwrap_or_default();
        let client = match found.as_slice() {
            // Deleted before its client was made: nothing to offboard. (A create that did
            // commit shows up by name and must then be suspended or left as it was.)
            [] if cust.deleted => {
                a.never_created += 1;
                continue;
            }
            [] => {
                a.lost
                    .push(format!("{}: no client {:?}", cust.name, cust.workspace));
                continue;
            }
            [one] => *one,
            many => {
                a.duplicated.push(format!(
                    "{}: {} clients {:?}",
                    cust.name,
                    many.len(),
                    cust.workspace
                ));
                continue;
            }
        };
        let status = client["subscriptionStatus"].as_str().unwrap_or_default();
        let want = if cust.deleted {
            if cust.orphan {
                if cust.suspended {
                    "suspended"
                } else {
                    "active"
                }
            } else {
                "suspended"
            }
        } else if cust.suspended {
            "suspended"
        } else {
            "active"
        };
        if status != want {
            let finding = format!("{}: client is {status}, the spec says {want}", cust.name);
            if status == "suspended" {
                a.wrongly_offboarded.push(finding);
            } else {
                a.wrong.push(finding);
            }
        }
        if cust.suspended && !cust.deleted {
            let reason = format!("chaos suspends {}", cust.name);
            if client["suspendReason"] != reason.as_str() {
                a.wrong.push(format!(
                    "{}: suspendReason {} (want {reason:?})",
                    cust.name, client["suspendReason"]
                ));
            }
        }
        if cust.deleted {
            continue;
        }
        let mut users: Vec<(String, String, String)> = client["users"]
            .as_array()
            .map(|us| {
                us.iter()
                    .map(|u| {
                        let s = |k: &str| u[k].as_str().unwrap_or_default().to_string();
                        (s("email"), s("name"), s("role"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        users.sort();
        let want_users: Vec<(String, String, String)> = cust
            .users
            .iter()
            .map(|(e, (n, r))| (e.clone(), n.clone(), r.clone()))
            .collect();
        if users != want_users {
            a.wrong.push(format!(
                "{}: users {users:?}, the spec says {want_users:?}",
                cust.name
            ));
        }
        match objs.get(&cust.name) {
            Some(o) if o.data["status"]["orgId"] == client["publicId"] => {}
            Some(o) => a.wrong.push(format!(
                "{}: status.orgId {} but its client is {}",
                cust.name, o.data["status"]["orgId"], client["publicId"]
            )),
            None => a
                .lost
                .push(format!("{}: the CustomerOrg is gone", cust.name)),
        }
    }
    for (name, left) in by_name {
        a.orphaned.push(format!(
            "{} client(s) named {name:?} belong to no CustomerOrg",
            left.len()
        ));
    }
    a
}

/// The audit itself can fail: a duplicated, a stray, a lost and a wrongly suspended client,
/// each made up from the real end state, are each reported.
fn audit_catches_tampering(clients: &[Value], customers: &[Customer], objects: &[DynamicObject]) {
    let live = customers
        .iter()
        .find(|c| !c.deleted && !c.suspended)
        .expect("a live, active customer");
    let index = clients
        .iter()
        .position(|c| c["workspaceName"] == live.workspace.as_str())
        .expect("its client");
    let mut dup = clients.to_vec();
    dup.push(clients[index].clone());
    assert_eq!(
        audit(&dup, customers, objects).duplicated.len(),
        1,
        "a duplicate"
    );
    let mut stray = clients.to_vec();
    stray.push(json!({"workspaceName": "Made outside orgops", "subscriptionStatus": "active"}));
    assert_eq!(
        audit(&stray, customers, objects).orphaned.len(),
        1,
        "a stray client"
    );
    let mut lost = clients.to_vec();
    lost.remove(index);
    assert_eq!(
        audit(&lost, customers, objects).lost.len(),
        1,
        "a lost client"
    );
    let mut wrong = clients.to_vec();
    wrong[index]["subscriptionStatus"] = json!("suspended");
    assert_eq!(
        audit(&wrong, customers, objects).wrongly_offboarded.len(),
        1,
        "suspended although no spec asked for it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gennia_chaos_creates_each_client_exactly_once() {
    let started = Instant::now();
    let n = env_usize("ORGOPS_GENNIA_CHAOS_ORGS", 30);
    let kills = env_usize("ORGOPS_GENNIA_CHAOS_KILLS", 6);
    let settle_secs = env_usize("ORGOPS_GENNIA_CHAOS_SETTLE_SECS", 120.max(n * 3)) as u64;

    let env = TestEnv::new("gennia-chaos").await;
    let sim = GenniaSim::start(&[]);
    let plan = sim
        .create_plan("Chaos", json!({"creditsIncluded": 10, "seatsIncluded": 10}))
        .await;
    let provider = format!("g-{}", env.ns);
    install_provider(&env, &sim, &provider);
    let client = env.client().await;

    // Faults from the first request on. Reads: 5xx and dropped connections. Writes: the
    // same, plus commit-then-lose on a quarter of them (half 502, half a closed connection).
    sim.set_faults(json!({
        "latency": 0.2, "latencyMs": 200,
        "read": {"error5xx": 0.10, "reset": 0.05, "latency": 0.2},
        "write": {"error5xx": 0.10, "reset": 0.05, "loseResponse": 0.25, "latency": 0.2},
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
            .map(|c| (c.name.clone(), c.manifest(&env.ns, &provider, &plan)))
            .collect(),
    )
    .await;

    let zombies = env_usize("ORGOPS_GENNIA_CHAOS_ZOMBIES", 2);
    let mut replicas =
        Replicas::start(&env, &client, &["--concurrency=8", "--resync-interval=10s"]).await;
    let edits = shuffled(planned_edits(n), |e| e.customer());
    let per_round = edits.len().div_ceil((kills + zombies).max(1));
    let mut edits = edits.into_iter();
    let rounds = replicas
        .chaos_rounds(kills, zombies, async |round| {
            if round == 1 {
                // Pairs sharing one workspace name, each pair's two objects at once.
                for k in 0..3 {
                    let [a, b] = Customer::pair(&env.ns, k);
                    let (ma, mb) = (
                        a.manifest(&env.ns, &provider, &plan),
                        b.manifest(&env.ns, &provider, &plan),
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
                edit(&corgs, &env.ns, &provider, &plan, &mut customers, e).await;
            }
        })
        .await;
    let leader_changes = rounds.leader_changes;
    for e in edits {
        edit(&corgs, &env.ns, &provider, &plan, &mut customers, e).await;
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
    if replicas.logged(sim.api_key()) {
        audit.wrong.push("an operator logged the hub key".into());
    }
    // Every client came from a create: answered 201, or committed and its answer lost.
    let answered = creates_with_status(&counters, 201);
    let lost_answers = (clients.len() as u64).saturating_sub(answered);
    let refused_duplicate = creates_with_status(&counters, 400);
    let started_ms = replicas.started_ms;
    let (leases, stopped_ms) = replicas.stop().await;
    let fence = fence_audit(&sim.writes().await, &leases, (started_ms, stopped_ms), &[]);
    audit.outside_fence.extend(fence.outside.iter().cloned());
    if losers.len() != 3 {
        audit.wrong.push(format!(
            "3 racing pairs, but {} losers: {losers:?}",
            losers.len()
        ));
    }

    let line = format!(
        "gennia chaos: {} orgs, {} kills, {leader_changes} leader changes, {} zombie pauses, \
         {faults} faults injected, {lost_answers} create answers lost after commit, \
         {refused_duplicate} duplicate-name refusals, {} deleted before created, {} pairs' losers \
         deleted; {} lost, {} duplicated, {} orphaned clients, {} wrongly offboarded, {} writes \
         outside a fence (of {}), {} wrong; chaos phase {:.0}s, settled at {:.0}s, total {:.0}s\n",
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
    }
    if !violations.is_empty() {
        let path = support::log_dir().join(format!("{}-gennia-sim-state.json", env.ns));
        let _ = std::fs::write(&path, sim.state().await.to_string());
        eprintln!("gennia chaos: simulator state in {}", path.display());
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
    assert!(
        lost_answers > 0,
        "no create answer was lost after its commit, so commit-then-lose was not exercised"
    );
    assert!(
        leader_changes >= kills / 2 + zombies && rounds.zombies == zombies,
        "only {leader_changes} leader changes and {} zombies in {kills} kills and {zombies} freezes",
        rounds.zombies
    );
}
