//! The change log reconciles with the ledger, to the credit (issue 30). A chaos-style world:
//! two operator replicas with leader election SIGKILLed on a schedule, a flaky Layers API
//! (5xx, lost responses, writes committed after the client gave up), customers spending with
//! auto-refill on, credit raises landing meanwhile, and the OrgProvider's three guardrails
//! tripping (a spec above `maxCreditsPerOrg`, the hour's `maxCreditsPerHour`, the parent's
//! `minParentBalance` floor) with some holds approved by `orgops.dev/confirm-credits`.
//!
//! Afterwards the change log (both replicas' logs, every line since the start) is replayed:
//! for every customer the credits the log says were moved (distinct transfer keys of `ok`
//! and `observed` transfer records) equal the orgops-marked allocations on the provider's
//! ledger, to the credit; and every held transfer was either approved and sent once (its
//! ledger row names the approval) or never sent. The summary line goes to stderr.
//!
//! Scale: `ORGOPS_CHAOS_LEDGER_ORGS` (default 24) and `ORGOPS_CHAOS_LEDGER_KILLS` (default
//! 6). Needs `cargo build -p orgops -p layers-sim --bins` first.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams};
use rand::Rng;
use serde_json::{Value, json};
use support::chaos::{Replicas, apply, apply_all, customer_orgs, env_usize};
use support::world::install_provider;
use support::{Sim, TestEnv, kubectl_ok};

use orgops::changelog::{self, Outcome, Record};
use orgops::reconcile::plan::{ALLOCATED_TO, ALLOCATION_MARKER, APPROVED_GENERATION, TRANSFER_KEY};

const MANAGER: &str = "chaos-changelog";
const PARENT: u64 = 60_000;
const PER_ORG: i64 = 8_000;
const PER_HOUR: i64 = 30_000;
const FLOOR: i64 = 20_000;

/// Customer `i`'s first allocation: every seventh asks more than `maxCreditsPerOrg`.
fn first_allocation(i: usize) -> i64 {
    if i % 7 == 3 {
        PER_ORG + 1_000
    } else {
        500 + (i as i64 * 613) % 3_000
    }
}

fn spends(i: usize) -> bool {
    i % 4 == 1
}

fn manifest(ns: &str, provider: &str, i: usize, allocated: i64) -> Value {
    let mut credits = json!({"allocated": allocated});
    if spends(i) {
        credits["autoRefill"] = json!({"threshold": 300, "amount": 400});
    }
    // The chaos machinery addresses CustomerOrgs at v1alpha1 (the same schema).
    json!({"apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
        "metadata": {"name": format!("c{i:02}"), "namespace": ns},
        "spec": {"providerRef": {"name": provider}, "displayName": format!("Customer {i}"),
                 "externalId": format!("{ns}-c{i:02}"), "credits": credits}})
}

/// Settled: Ready at its generation, or Stalled at its generation waiting on something
/// the chaos does not change (a guardrail's hold, the parent's funds).
fn settled(o: &DynamicObject) -> bool {
    let generation = o.metadata.generation.unwrap_or(0);
    o.data["status"]["conditions"]
        .as_array()
        .is_some_and(|conds| {
            conds.iter().any(|c| {
                c["observedGeneration"].as_i64() == Some(generation)
                    && ((c["type"] == "Ready" && c["status"] == "True")
                        || (c["type"] == "Stalled"
                            && c["status"] == "True"
                            && (c["reason"] == "CreditsHeld"
                                || c["reason"] == "InsufficientCredits")))
            })
        })
}

/// Spends 40 credits a second in each spending customer's org until `stop`.
fn spend(base: String, orgs: Vec<String>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let spent = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            for org in &orgs {
                let ok = http
                    .post(format!("{base}/_sim/spend"))
                    .json(&json!({"orgId": org, "credits": 40}))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    spent.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        spent.into_inner()
    })
}

/// The orgops-marked allocation rows of each org on the simulator's ledgers.
fn ledger_rows(state: &Value) -> BTreeMap<String, Vec<Value>> {
    state["ledgers"]
        .as_object()
        .map(|all| {
            all.iter()
                .map(|(org, rows)| {
                    let marked = rows
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| {
                            e["eventType"] == "allocation"
                                && e["metadata"][ALLOCATION_MARKER] == "true"
                                && e["credits"].as_i64().unwrap_or(0) > 0
                        })
                        .cloned()
                        .collect();
                    (org.clone(), marked)
                })
                .collect()
        })
        .unwrap_or_default()
}

struct Customer {
    name: String,
    uid: String,
    org: String,
}

/// What the replay found.
#[derive(Default)]
struct Report {
    by_log: i64,
    by_ledger: i64,
    /// Held transfers approved and sent once, and never sent.
    approved: usize,
    never_sent: usize,
    /// Everything that does not add up.
    faults: Vec<String>,
}

/// Replays `records` against the orgops rows of each customer's ledger (`ledgers`, by org).
fn reconcile(
    customers: &[Customer],
    records: &[Record],
    ledgers: &BTreeMap<String, Vec<Value>>,
) -> Report {
    let mut report = Report::default();
    for c in customers {
        let mine: Vec<&Record> = records
            .iter()
            .filter(|r| r.object.uid == c.uid && r.call == "transfer")
            .collect();
        // The transfers that moved credits, per the log: one per distinct key (a replay or
        // an `observed` record of the same transfer is the same transfer).
        let mut moved: BTreeMap<&str, i64> = BTreeMap::new();
        for r in mine
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Observed))
        {
            let key = r.idempotency_key.as_deref().unwrap_or("(no key)");
            let credits = r.result["credits"].as_i64().unwrap_or(0);
            if let Some(seen) = moved.insert(key, credits)
                && seen != credits
            {
                report.faults.push(format!(
                    "{}: two records of transfer {key} disagree: {seen} and {credits} credits",
                    c.name
                ));
            }
        }
        let log_sum: i64 = moved.values().sum();
        let rows = ledgers.get(&c.org).cloned().unwrap_or_default();
        let ledger_sum: i64 = rows.iter().filter_map(|r| r["credits"].as_i64()).sum();
        report.by_log += log_sum;
        report.by_ledger += ledger_sum;
        if log_sum != ledger_sum {
            report.faults.push(format!(
                "{} ({}): {log_sum} credits per the log, {ledger_sum} per the ledger",
                c.name, c.org
            ));
        }
        for row in &rows {
            let key = row["metadata"][TRANSFER_KEY].as_str().unwrap_or_default();
            if !moved.contains_key(key) {
                report.faults.push(format!(
                    "{}: ledger row {} (key {key}) has no record in the change log",
                    c.name, row["eventId"]
                ));
            }
        }
        // Every held transfer: approved and sent once (its ledger row names the approval),
        // or never sent.
        let holds: BTreeSet<(i64, i64)> = mine
            .iter()
            .filter(|r| r.outcome == Outcome::Held)
            .filter_map(|r| Some((r.object.generation, r.changes.first()?.after.as_i64()?)))
            .collect();
        for (generation, to) in holds {
            let sent: Vec<&Value> = rows
                .iter()
                .filter(|r| r["metadata"][ALLOCATED_TO].as_str() == Some(to.to_string().as_str()))
                .collect();
            match sent.as_slice() {
                [] => report.never_sent += 1,
                [row] => {
                    let approved = row["metadata"][APPROVED_GENERATION]
                        .as_str()
                        .and_then(|g| g.parse::<i64>().ok());
                    if approved.is_some_and(|g| g >= generation) {
                        report.approved += 1;
                    } else {
                        report.faults.push(format!(
                            "{}: the transfer to {to} held at generation {generation} was sent without an approval: {row}",
                            c.name
                        ));
                    }
                }
                more => report.faults.push(format!(
                    "{}: the transfer to {to} held at generation {generation} was sent {} times",
                    c.name,
                    more.len()
                )),
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_log_reconciles_with_the_ledger_to_the_credit() {
    let started = Instant::now();
    let n = env_usize("ORGOPS_CHAOS_LEDGER_ORGS", 24);
    let kills = env_usize("ORGOPS_CHAOS_LEDGER_KILLS", 6);
    let env = TestEnv::new("chaoslog").await;
    let sim = Sim::start(&[
        "--tier",
        "unlimited",
        "--parent-credits",
        &PARENT.to_string(),
    ]);
    let client = env.client().await;
    let provider = format!("p-{}", env.ns);
    install_provider(&env, &sim, &provider, "parent-key");
    kubectl_ok(&[
        "patch",
        "orgprovider",
        &provider,
        "--type=merge",
        "-p",
        &json!({"spec": {"guardrails": {"maxCreditsPerOrg": PER_ORG,
            "maxCreditsPerHour": PER_HOUR, "minParentBalance": FLOOR}}})
        .to_string(),
    ]);
    // Faults from the first request on: 5xx, lost answers, writes committed after their
    // client hung up (the answer is lost, the transfer happens).
    sim.set_faults(
        json!({"error5xx": 0.08, "loseResponse": 0.05, "lateCommit": 0.03,
        "slowCommitMs": 600}),
    )
    .await;
    let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &env.ns, &customer_orgs());
    let mut allocated: Vec<i64> = (0..n).map(first_allocation).collect();
    apply_all(
        &corgs,
        MANAGER,
        (0..n)
            .map(|i| {
                (
                    format!("c{i:02}"),
                    manifest(&env.ns, &provider, i, allocated[i]),
                )
            })
            .collect(),
    )
    .await;
    let mut replicas =
        Replicas::start(&env, &client, &["--resync-interval=5s", "--concurrency=8"]).await;

    // The spenders start once their orgs exist.
    let stop = Arc::new(AtomicBool::new(false));
    let mut spender = None;
    let mut approvals = 0usize;
    let raised = AtomicU64::new(0);
    let rounds = replicas
        .chaos_rounds(kills, 0, async |round| {
            if round == 1 {
                let state = sim.state().await;
                let orgs: Vec<String> = state["orgs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|o| {
                        o["metadata"]["externalId"].as_str().is_some_and(|e| {
                            e.strip_prefix(&format!("{}-c", env.ns))
                                .and_then(|i| i.parse::<usize>().ok())
                                .is_some_and(spends)
                        })
                    })
                    .filter_map(|o| o["id"].as_str().map(str::to_string))
                    .collect();
                spender = Some(spend(sim.base_url().to_string(), orgs, stop.clone()));
            }
            // Raises: two customers ask for more credits.
            for _ in 0..2 {
                let i = rand::rng().random_range(0..n);
                allocated[i] += rand::rng().random_range(5..30) * 100;
                apply(
                    &corgs,
                    MANAGER,
                    &format!("c{i:02}"),
                    manifest(&env.ns, &provider, i, allocated[i]),
                )
                .await;
                raised.fetch_add(1, Ordering::Relaxed);
            }
            // Approvals: a person approves one held top-up, at the generation it is held at.
            if round % 2 == 1 {
                let list = corgs.list(&ListParams::default()).await.expect("list");
                if let Some(held) = list.items.iter().find(|o| {
                    o.data["status"]["heldCredits"]["generation"].as_i64() == o.metadata.generation
                }) {
                    let name = held.metadata.name.clone().unwrap_or_default();
                    let generation = held.metadata.generation.unwrap_or(0);
                    env.kubectl_ok(&[
                        "annotate",
                        "--overwrite",
                        "customerorg",
                        &name,
                        &format!("orgops.dev/confirm-credits={generation}"),
                    ]);
                    approvals += 1;
                }
            }
        })
        .await;

    // Faults off; everyone settles (Ready, or held / waiting on funds at its generation).
    sim.set_faults(json!({})).await;
    stop.store(true, Ordering::Relaxed);
    let spent = match spender {
        Some(s) => s.await.expect("spender"),
        None => 0,
    };
    // Settled means each object's status has caught up with its org's ledger too: every
    // transfer, even one whose answer was lost, has been read back by a pass (which writes
    // its `observed` record before its status).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = corgs.list(&ListParams::default()).await.expect("list");
        let ledgers = ledger_rows(&sim.state().await);
        let pending: Vec<String> = list
            .items
            .iter()
            .filter(|o| {
                let org = o.data["status"]["orgId"].as_str().unwrap_or_default();
                let on_ledger: i64 = ledgers
                    .get(org)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["credits"].as_i64())
                    .sum();
                !settled(o) || o.data["status"]["credits"]["allocated"].as_i64() != Some(on_ledger)
            })
            .map(|o| {
                format!(
                    "{}: {} {}",
                    o.metadata.name.clone().unwrap_or_default(),
                    o.data["status"]["credits"],
                    o.data["status"]["conditions"]
                )
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled after the chaos: {pending:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Replay the change log.
    let records: Vec<Record> = replicas
        .ops
        .iter()
        .flat_map(|op| {
            op.log()
                .lines()
                .filter_map(changelog::parse_line)
                .collect::<Vec<_>>()
        })
        .filter(|r| r.object.namespace == env.ns)
        .collect();
    let list = corgs.list(&ListParams::default()).await.expect("list");
    let ledgers = ledger_rows(&sim.state().await);
    let customers: Vec<Customer> = list
        .items
        .iter()
        .map(|o| Customer {
            name: o.metadata.name.clone().unwrap_or_default(),
            uid: o.metadata.uid.clone().unwrap_or_default(),
            org: o.data["status"]["orgId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect();
    let report = reconcile(&customers, &records, &ledgers);
    let outcomes = |o: Outcome| {
        records
            .iter()
            .filter(|r| r.call == "transfer" && r.outcome == o)
            .count()
    };
    eprintln!(
        "changelog reconciliation: {} customers, {} records, {} credits moved per the log, {} per the ledger, difference {}; {} held transfers: {} approved and sent once, {} never sent; transfer records: {} ok, {} observed, {} refused, {} unknown; {kills} kills ({} leader changes), {approvals} approvals, {} raises, {spent} spends; {:.0} s",
        customers.len(),
        records.len(),
        report.by_log,
        report.by_ledger,
        report.by_log - report.by_ledger,
        report.approved + report.never_sent,
        report.approved,
        report.never_sent,
        outcomes(Outcome::Ok),
        outcomes(Outcome::Observed),
        outcomes(Outcome::Refused),
        outcomes(Outcome::Unknown),
        rounds.leader_changes,
        raised.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    assert!(report.faults.is_empty(), "{:#?}", report.faults);
    assert_eq!(report.by_log, report.by_ledger);
    assert!(
        report.approved > 0 && report.never_sent > 0,
        "guardrails tripped and were approved: the test proved nothing otherwise"
    );
    assert!(report.by_ledger > 0);
    // The replay can fail: without one transfer's records, the log and the ledger differ.
    let key = records
        .iter()
        .find(|r| r.call == "transfer" && r.outcome == Outcome::Ok)
        .and_then(|r| r.idempotency_key.clone())
        .expect("a transfer");
    let tampered: Vec<Record> = records
        .iter()
        .filter(|r| r.idempotency_key.as_deref() != Some(key.as_str()))
        .cloned()
        .collect();
    let caught = reconcile(&customers, &tampered, &ledgers);
    assert!(
        caught.by_log < caught.by_ledger && !caught.faults.is_empty(),
        "a log missing a transfer must not reconcile"
    );
    replicas.stop().await;
    drop(sim);
    env.cleanup().await;
}
