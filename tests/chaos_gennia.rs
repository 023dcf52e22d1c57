//! Gennia chaos (issue 13): an API with no idempotency at all, made flaky — 5xx, dropped
//! connections and commit-then-lose (the create happens, its answer does not arrive) — while
//! two operator replicas with leader election are SIGKILLed at random moments (the leader
//! every other time) and users suspend, resume, change roles, remove users and delete with
//! both policies. Afterwards the audit reads the simulator: exactly one client per
//! CustomerOrg (by workspace name), no client without a CustomerOrg, states and users as the
//! specs say, deletions suspended (Archive) or untouched (Orphan).
//!
//! Scale: `ORGOPS_GENNIA_CHAOS_ORGS` (default 30) and `ORGOPS_GENNIA_CHAOS_KILLS` (default 6).
//! Needs `cargo build -p gennia-sim`. The summary line goes to stderr even when output is
//! captured.
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use rand::Rng;
use serde_json::{Value, json};
use support::gennia::{GenniaSim, creates_with_status, install_provider};
use support::{Operator, TestEnv, wait_for_some};

const MANAGER: &str = "chaos-gennia";

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
        }
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

async fn apply(api: &Api<DynamicObject>, ns: &str, provider: &str, plan: &str, c: &Customer) {
    let obj = c.manifest(ns, provider, plan);
    api.patch(
        &c.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {}: {e}", c.name));
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
            api.delete(&c.name, &DeleteParams::default())
                .await
                .unwrap_or_else(|err| panic!("delete {}: {err}", c.name));
            return;
        }
    }
    apply(api, ns, provider, plan, c).await;
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

/// Waits until every live object is Ready at its generation and every deleted one is gone;
/// returns what is still pending.
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
                            pending.push(format!("{} (deleted, still there)", c.name))
                        }
                        (false, None) => pending.push(format!("{} (missing)", c.name)),
                        (false, Some(o)) if !ready_at_generation(o) => pending.push(format!(
                            "{} (not Ready: {})",
                            c.name, o.data["status"]["conditions"]
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
async fn leader_of(ops: &[Operator]) -> usize {
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

#[derive(Default)]
struct Audit {
    lost: Vec<String>,
    duplicated: Vec<String>,
    orphaned: Vec<String>,
    wrong: Vec<String>,
    /// Deleted before their client was created (nothing to offboard).
    never_created: usize,
}

impl Audit {
    fn all(&self) -> Vec<String> {
        let tag =
            |k: &str, v: &Vec<String>| v.iter().map(|m| format!("{k}: {m}")).collect::<Vec<_>>();
        let mut all = tag("lost", &self.lost);
        all.extend(tag("duplicated", &self.duplicated));
        all.extend(tag("orphaned", &self.orphaned));
        all.extend(tag("wrong", &self.wrong));
        all
    }
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
            a.wrong.push(format!(
                "{}: client is {status}, the spec says {want}",
                cust.name
            ));
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
    assert!(
        !audit(&wrong, customers, objects).wrong.is_empty(),
        "a wrong state"
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
    stream::iter(
        customers
            .iter()
            .map(|c| apply(&corgs, &env.ns, &provider, &plan, c)),
    )
    .buffer_unordered(16)
    .collect::<Vec<()>>()
    .await;

    let lease_name = format!("chaos-{}", env.ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "orgops-system");
    let lease_arg = format!("--lease-name={lease_name}");
    let first = Operator::start(
        &env,
        &[
            "--leader-election=true",
            &lease_arg,
            "--concurrency=8",
            "--resync-interval=10s",
        ],
    )
    .await;
    let second = first.replica("b");
    let mut ops = [first, second];

    // Edits in random order, but each customer's own edits keep their order.
    let mut edits = planned_edits(n);
    {
        let mut rng = rand::rng();
        for i in (1..edits.len()).rev() {
            edits.swap(i, rng.random_range(0..=i));
        }
        let mut by_customer: BTreeMap<usize, Vec<Edit>> = BTreeMap::new();
        for e in planned_edits(n) {
            let i = e.customer();
            by_customer.entry(i).or_default().push(e);
        }
        for slot in edits.iter_mut() {
            let i = slot.customer();
            let queue = by_customer.get_mut(&i).expect("edits of a customer");
            *slot = queue.remove(0);
        }
    }
    let per_round = edits.len().div_ceil(kills.max(1));
    let mut edits = edits.into_iter();
    let mut leader_changes = 0usize;
    for round in 0..kills {
        let (up, down) = {
            let mut rng = rand::rng();
            (
                rng.random_range(300..2_500u64),
                rng.random_range(100..1_500u64),
            )
        };
        tokio::time::sleep(Duration::from_millis(up)).await;
        let batch: Vec<Edit> = edits.by_ref().take(per_round).collect();
        if round % 2 == 0 {
            for e in &batch {
                edit(&corgs, &env.ns, &provider, &plan, &mut customers, *e).await;
            }
        }
        let leader = leader_of(&ops).await;
        let kill_leader = round % 2 == 0;
        let victim = if kill_leader { leader } else { 1 - leader };
        let holder_before = lease_holder(&leases, &lease_name).await;
        for op in ops.iter_mut() {
            assert!(
                op.is_running(),
                "an operator exited on its own; log: {}",
                op.log_path().display()
            );
        }
        ops[victim].kill();
        if round % 2 == 1 {
            for e in &batch {
                edit(&corgs, &env.ns, &provider, &plan, &mut customers, *e).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(down)).await;
        ops[victim].restart();
        if kill_leader {
            // A SIGKILLed holder's Lease expires and the other replica takes it.
            wait_for_some("a new Lease holder", Duration::from_secs(60), || {
                let leases = leases.clone();
                let lease_name = lease_name.clone();
                let before = holder_before.clone();
                async move {
                    let now = lease_holder(&leases, &lease_name).await;
                    (now.is_some() && now != before).then_some(())
                }
            })
            .await;
            leader_of(&ops).await;
            leader_changes += 1;
        }
    }
    for e in edits {
        edit(&corgs, &env.ns, &provider, &plan, &mut customers, e).await;
    }
    let chaos_done = started.elapsed();

    let pending = settle(&corgs, &customers, Duration::from_secs(settle_secs)).await;
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
    for op in &ops {
        if op.log().contains(sim.api_key()) {
            audit.wrong.push("an operator logged the hub key".into());
        }
    }
    // Every client came from a create: answered 201, or committed and its answer lost.
    let answered = creates_with_status(&counters, 201);
    let lost_answers = (clients.len() as u64).saturating_sub(answered);
    let refused_duplicate = creates_with_status(&counters, 400);
    let [a, b] = ops;
    drop(b);
    drop(a);

    let line = format!(
        "gennia chaos: {} orgs, {kills} kills, {leader_changes} leader changes, {faults} faults injected, \
         {lost_answers} create answers lost after commit, {refused_duplicate} duplicate-name refusals, \
         {} deleted before created; {} lost, {} duplicated, {} orphaned clients, {} wrong; \
         chaos phase {:.0}s, settled at {:.0}s, total {:.0}s\n",
        customers.len(),
        audit.never_created,
        audit.lost.len(),
        audit.duplicated.len(),
        audit.orphaned.len(),
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
    let _ = leases.delete(&lease_name, &DeleteParams::default()).await;
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
        leader_changes >= kills / 2,
        "only {leader_changes} leader changes in {kills} kills"
    );
}
