//! Money guardrails (issue 30), end to end on the real control plane with layers-sim: for
//! each of `maxCreditsPerOrg`, `maxCreditsPerHour` and `minParentBalance`, a top-up that
//! would cross it is held (Stalled CreditsHeld with the numbers, `status.heldCredits`, a
//! Warning, a metric, a `held` change-log record, and no transfer sent); approving it with
//! `orgops.dev/confirm-credits: "<generation>"` sends exactly one transfer; the same
//! approval left on the object does not carry over to the next generation (held again).
//! And funding resumes by itself: a customer refused for the parent's empty wallet is
//! Ready soon after the parent is topped up (the figure is printed, bound 60 s).
mod support;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::world::*;
use support::{kubectl_ok, wait_for, wait_for_some};

use orgops::changelog::{Outcome, Record};

const WAIT: Duration = Duration::from_secs(90);

fn corg_yaml(w: &World, name: &str, allocated: i64) -> String {
    format!(
        r#"apiVersion: orgops.dev/v1beta1
kind: CustomerOrg
metadata: {{name: {name}, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: Customer {name}
  externalId: {ns}-{name}
  credits: {{allocated: {allocated}}}
"#,
        ns = w.env.ns,
        provider = w.provider,
    )
}

fn set_guardrails(w: &World, guardrails: Value) {
    w.patch_provider(&json!({"spec": {"guardrails": guardrails}}));
}

fn set_allocated(w: &World, name: &str, allocated: i64) {
    w.patch_corg(
        name,
        &json!({"spec": {"credits": {"allocated": allocated}}}),
    );
}

fn approve(w: &World, name: &str, generation: i64) {
    w.env.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "customerorg",
        name,
        &format!("orgops.dev/confirm-credits={generation}"),
    ]);
}

/// The orgops transfers into `name`'s org, from the simulator's ledger (credits each).
async fn transfers(w: &World, name: &str) -> Vec<i64> {
    let ext = format!("{}-{name}", w.env.ns);
    let state = w.sim.state().await;
    let Some(org) = live_orgs(&state)
        .into_iter()
        .find(|o| o["metadata"]["externalId"] == ext.as_str())
    else {
        return Vec::new();
    };
    let id = text(&org["id"], "org id");
    state["ledgers"][&id]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|e| {
                    e["eventType"] == "allocation"
                        && e["metadata"]["orgops.dev/allocation"] == "true"
                        && e["credits"].as_i64().unwrap_or(0) > 0
                })
                .filter_map(|e| e["credits"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// Allocate requests the simulator answered with success.
async fn sent(w: &World) -> u64 {
    count_by_status(&w.sim.counters().await, |m, route, status| {
        m == "POST" && route == "/v1/organizations/:orgId/credits/allocate" && status < 300
    })
}

/// Waits for Stalled CreditsHeld at the current generation; checks what it says.
async fn held(w: &World, name: &str, guardrail: &str, numbers: &[&str]) -> Value {
    let v = w.wait_stalled(name, "CreditsHeld").await;
    let generation = v["metadata"]["generation"].as_i64().expect("generation");
    let (_, _, message) = condition(&v, "Stalled").expect("Stalled");
    assert!(
        message.contains(&format!("guardrails.{guardrail}"))
            && message.contains("nothing was sent")
            && message.contains(&format!("orgops.dev/confirm-credits=\"{generation}\"")),
        "the message names the guardrail and the approval: {message}"
    );
    for n in numbers {
        assert!(message.contains(n), "the message has {n}: {message}");
    }
    let h = &v["status"]["heldCredits"];
    assert_eq!(h["generation"], generation, "{h}");
    assert!(
        h["guardrails"]
            .as_array()
            .is_some_and(|g| g.iter().any(|x| x == guardrail)),
        "{h}"
    );
    let (ready, reason, _) = condition(&v, "Ready").expect("Ready");
    assert_eq!((ready.as_str(), reason.as_str()), ("False", "CreditsHeld"));
    v
}

fn transfer_records(w: &World, name: &str, outcome: Outcome) -> Vec<Record> {
    w.changelog(name)
        .into_iter()
        .filter(|r| r.call == "transfer" && r.outcome == outcome)
        .collect()
}

async fn metric(w: &World, line_prefix: &str) -> Option<u64> {
    w.op.metrics().await.lines().find_map(|l| {
        l.strip_prefix(line_prefix)
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The three acts for one guardrail: held, approved (exactly one transfer), stale
/// approval (held again at the next generation, nothing more sent).
async fn held_approved_stale(
    w: &World,
    name: &str,
    guardrail: &str,
    numbers: &[&str],
    raise_to: i64,
) {
    let before = sent(w).await;
    let v = held(w, name, guardrail, numbers).await;
    assert_eq!(transfers(w, name).await, Vec::<i64>::new(), "nothing sent");
    assert_eq!(sent(w).await, before, "no transfer request was answered");
    let events = w.events(name);
    assert!(
        events.contains("CreditsHeld") && events.contains("Warning"),
        "a Warning Event: {events}"
    );
    let held_records = transfer_records(w, name, Outcome::Held);
    assert_eq!(held_records.len(), 1, "one held record: {held_records:?}");
    assert!(held_records[0].guardrails.iter().any(|g| g == guardrail));
    let gauge = format!(
        "orgops_credits_held{{provider=\"{}\",guardrail=\"{guardrail}\"}} ",
        w.provider
    );
    wait_for("the held gauge at 1", WAIT, || async {
        metric(w, &gauge).await == Some(1)
    })
    .await;
    let counter = format!(
        "orgops_credit_holds_total{{provider=\"{}\",guardrail=\"{guardrail}\"}} ",
        w.provider
    );
    assert_eq!(metric(w, &counter).await, Some(1), "one hold counted");

    // Approved for this generation: sent, once.
    let generation = v["metadata"]["generation"].as_i64().expect("generation");
    approve(w, name, generation);
    let ready = w.wait_ready(name).await;
    assert!(ready["status"]["heldCredits"].is_null(), "no longer held");
    let moved = transfers(w, name).await;
    assert_eq!(moved.len(), 1, "exactly one transfer: {moved:?}");
    let ok = transfer_records(w, name, Outcome::Ok);
    assert_eq!(ok.len(), 1, "one transfer record: {ok:?}");
    assert_eq!(ok[0].approval, Some(generation), "{:?}", ok[0]);
    assert!(
        ok[0].guardrails.iter().any(|g| g == guardrail),
        "{:?}",
        ok[0]
    );
    assert!(
        ok[0].result["transferId"]
            .as_str()
            .is_some_and(|t| t.starts_with("txn_")),
        "{:?}",
        ok[0]
    );
    assert!(ok[0].request_id.is_some(), "the provider's request id");
    let after_approval = sent(w).await;

    // The annotation stays; the next generation needs its own approval.
    set_allocated(w, name, raise_to);
    held(w, name, guardrail, &[]).await;
    w.resyncs(2).await;
    assert_eq!(
        transfers(w, name).await,
        moved,
        "the stale approval sent nothing"
    );
    assert_eq!(sent(w).await, after_approval);
    assert_eq!(
        transfer_records(w, name, Outcome::Held).len(),
        2,
        "the second hold is recorded too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_credits_per_org_holds_a_spec_above_it() {
    let w = World::with(
        "gr-org",
        &["--tier", "unlimited"],
        &["--resync-interval", "10s"],
    )
    .await;
    set_guardrails(&w, json!({"maxCreditsPerOrg": 1000}));
    support::apply_yaml_ok(&corg_yaml(&w, "big", 5000));
    held_approved_stale(
        &w,
        "big",
        "maxCreditsPerOrg",
        &["spec.credits.allocated 5000", "maxCreditsPerOrg 1000"],
        6000,
    )
    .await;
    // Below the bound, a customer is funded without anyone's approval.
    support::apply_yaml_ok(&corg_yaml(&w, "small", 900));
    w.wait_ready("small").await;
    assert_eq!(transfers(&w, "small").await, vec![900]);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_credits_per_hour_holds_past_the_window_across_customers() {
    let w = World::with(
        "gr-hour",
        &["--tier", "unlimited"],
        &["--resync-interval", "10s"],
    )
    .await;
    set_guardrails(&w, json!({"maxCreditsPerHour": 1000}));
    support::apply_yaml_ok(&corg_yaml(&w, "first", 800));
    w.wait_ready("first").await;
    assert_eq!(transfers(&w, "first").await, vec![800]);
    let window = serde_json::from_str::<Value>(&kubectl_ok(&[
        "get",
        "orgprovider",
        &w.provider,
        "-o",
        "json",
    ]))
    .expect("OrgProvider")["status"]["creditWindow"]
        .clone();
    let claimed: i64 = window
        .as_array()
        .map(|b| b.iter().filter_map(|e| e["credits"].as_i64()).sum())
        .unwrap_or(0);
    assert_eq!(
        claimed, 800,
        "the durable window holds the transfer: {window}"
    );
    // A second customer: 800 + 500 > 1000 in the hour.
    support::apply_yaml_ok(&corg_yaml(&w, "second", 500));
    held_approved_stale(
        &w,
        "second",
        "maxCreditsPerHour",
        &[
            "800 credits moved in the last hour",
            "these 500",
            "fits from",
        ],
        900,
    )
    .await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_parent_balance_holds_below_the_floor() {
    let w = World::with(
        "gr-floor",
        &["--tier", "unlimited", "--parent-credits", "10000"],
        &["--resync-interval", "10s"],
    )
    .await;
    set_guardrails(&w, json!({"minParentBalance": 8000}));
    support::apply_yaml_ok(&corg_yaml(&w, "c", 5000));
    held_approved_stale(
        &w,
        "c",
        "minParentBalance",
        &["balance 10000", "these 5000", "minParentBalance 8000"],
        6000,
    )
    .await;
    // The floor waits on the parent's funds: a top-up that covers it releases the hold by
    // itself (no approval), through the OrgProvider's balance check.
    w.sim.topup(10_000).await;
    w.wait_ready("c").await;
    assert_eq!(transfers(&w, "c").await, vec![5000, 1000]);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funding_resumes_soon_after_the_parent_is_topped_up() {
    // Default --slow-retry (5 min) and --funds-check-interval (15 s).
    let w = World::with(
        "gr-funds",
        &["--tier", "unlimited", "--parent-credits", "100"],
        &["--resync-interval", "10m"],
    )
    .await;
    support::apply_yaml_ok(&corg_yaml(&w, "c", 5000));
    w.wait_stalled("c", "InsufficientCredits").await;
    // Another customer of the same parent, not waiting on funds: not re-triggered.
    support::apply_yaml_ok(&corg_yaml(&w, "calm", 0));
    let calm = w.wait_ready("calm").await;
    let calm_version = calm["metadata"]["resourceVersion"].clone();
    let org_reads = |c: &Value| {
        count(c, |m, route| {
            m == "GET" && route == "/v1/organizations/:orgId"
        })
    };
    let reads_before = org_reads(&w.sim.counters().await);

    let started = Instant::now();
    w.sim.topup(10_000).await;
    w.wait_ready("c").await;
    let took = started.elapsed();
    eprintln!(
        "funds: parent top-up -> CustomerOrg Ready in {:.1} s (bound 60 s; --funds-check-interval 15s, --slow-retry 5m)",
        took.as_secs_f64()
    );
    assert_eq!(transfers(&w, "c").await, vec![5000]);
    assert!(
        took < Duration::from_secs(120),
        "top-up -> Ready took {took:?}, far past the 60 s goal"
    );
    // Exactly the waiting customer was re-triggered: the other one's org was not read
    // again (its resync is 10 minutes away) and its status was not rewritten.
    let reads = org_reads(&w.sim.counters().await) - reads_before;
    assert!(
        reads <= 2,
        "only the waiting customer's org is read (and verified): {reads} reads"
    );
    assert_eq!(
        w.corg("calm")["metadata"]["resourceVersion"],
        calm_version,
        "the other customer was left alone"
    );
    let ok = wait_for_some("the transfer's change-log record", WAIT, || async {
        transfer_records(&w, "c", Outcome::Ok).into_iter().next()
    })
    .await;
    assert_eq!(ok.result["credits"], 5000);
    w.cleanup().await;
}
