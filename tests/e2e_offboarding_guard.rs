//! The offboarding guard (issue 16, item 3), end to end on the real control plane with
//! layers-sim: a mass deletion offboards at most `maxPerHour` orgs, the rest wait with
//! `Stalled OffboardingPaused`; the window is durable (an operator restart keeps it);
//! `orgops.dev/confirm-offboard` lets one object through; every org is archived exactly once.
mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::world::*;
use support::{apply_yaml_ok, kubectl, kubectl_ok, wait_for};

const ORGS: usize = 30;
const MAX_PER_HOUR: usize = 5;
const WAIT: Duration = Duration::from_secs(120);

fn corg_yaml(w: &World, name: &str) -> String {
    format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: CustomerOrg
metadata: {{name: {name}, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: Customer {name}
  externalId: {ns}-{name}
"#,
        ns = w.env.ns,
        provider = w.provider,
    )
}

/// Sets the OrgProvider's `spec.offboarding.maxPerHour`.
fn max_per_hour(w: &World, max: usize) {
    kubectl_ok(&[
        "patch",
        "orgprovider",
        &w.provider,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"offboarding":{{"maxPerHour":{max}}}}}}}"#),
    ]);
}

/// The CustomerOrgs still present in the test namespace.
fn corgs(w: &World) -> Vec<Value> {
    let out = w.env.kubectl(&["get", "customerorgs", "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["items"].as_array().cloned())
        .unwrap_or_default()
}

fn paused(corg: &Value) -> bool {
    condition(corg, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "OffboardingPaused")
}

/// Orgs the simulator holds as archived.
async fn archived(w: &World) -> usize {
    w.sim.state().await["orgs"]
        .as_array()
        .map(|orgs| orgs.iter().filter(|o| o["status"] == "archived").count())
        .unwrap_or(0)
}

/// Archive requests the simulator received (any status): a second archive of one org
/// would show here even if the API answered it with an error.
async fn archive_calls(w: &World) -> u64 {
    count(&w.sim.counters().await, |m, route| {
        m == "DELETE" && route == "/v1/organizations/:orgId"
    })
}

fn provider(w: &World) -> Value {
    serde_json::from_str(&kubectl_ok(&[
        "get",
        "orgprovider",
        &w.provider,
        "-o",
        "json",
    ]))
    .expect("OrgProvider JSON")
}

async fn gauge(w: &World) -> Option<u64> {
    let prefix = format!("orgops_offboarding_paused{{provider=\"{}\"}} ", w.provider);
    w.op.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
}

/// Waits until `done` orgs are archived in the simulator and the other CustomerOrgs all
/// wait with Stalled OffboardingPaused; then checks no org was archived twice.
async fn wait_released(w: &World, done: usize) {
    wait_for(
        &format!("{done} orgs archived, {} CustomerOrgs paused", ORGS - done),
        WAIT,
        || async {
            let left = corgs(w);
            left.len() == ORGS - done && left.iter().all(paused) && archived(w).await == done
        },
    )
    .await;
    let calls = archive_calls(w).await;
    if calls != done as u64 {
        let counters = w.sim.counters().await;
        panic!(
            "one archive call per offboarded org, none twice: {calls} calls for {done}: {counters}"
        );
    }
}

/// Moves every recorded offboarding an hour and a minute back. The window is state in
/// `OrgProvider.status.offboarding`, not a clock in the operator, so this is what an hour
/// passing looks like to it (a test cannot wait an hour). The patch carries the
/// resourceVersion it was computed from, as the operator's own claims do.
fn advance_window(w: &World) {
    let p = provider(w);
    let rv = p["metadata"]["resourceVersion"].clone();
    let entries: Vec<Value> = p["status"]["offboarding"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            let at: jiff::Timestamp = e["time"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("entry time");
            let back = at - jiff::SignedDuration::from_secs(3660);
            e["time"] = json!(back.to_string());
            e
        })
        .collect();
    assert!(!entries.is_empty(), "the window records offboardings: {p}");
    let patch = json!({"metadata": {"resourceVersion": rv}, "status": {"offboarding": entries}});
    kubectl_ok(&[
        "patch",
        "orgprovider",
        &w.provider,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_deletion_offboards_at_most_max_per_hour() {
    let mut w = World::with(
        "offguard",
        &["--tier", "unlimited"],
        &["--resync-interval", "20s"],
    )
    .await;
    max_per_hour(&w, MAX_PER_HOUR);

    // 30 customers in one apply.
    let names: Vec<String> = (0..ORGS).map(|i| format!("c{i:02}")).collect();
    let yaml: Vec<String> = names.iter().map(|n| corg_yaml(&w, n)).collect();
    apply_yaml_ok(&yaml.join("---\n"));
    wait_for(&format!("{ORGS} CustomerOrgs Ready"), WAIT, || async {
        let all = corgs(&w);
        all.len() == ORGS
            && all
                .iter()
                .all(|c| condition(c, "Ready").is_some_and(|r| r.0 == "True"))
    })
    .await;
    assert_eq!(live_orgs(&w.sim.state().await).len(), ORGS);

    // A pruned namespace, a bad commit: everything deleted at once.
    w.env
        .kubectl_ok(&["delete", "customerorgs", "--all", "--wait=false"]);
    wait_released(&w, MAX_PER_HOUR).await;
    let left = corgs(&w);
    let sample = text(&left[0]["metadata"]["name"], "name");
    let (_, _, message) = condition(&left[0], "Stalled").expect("Stalled");
    assert!(
        message.contains("5 offboardings through OrgProvider")
            && message.contains("next slot frees at")
            && message.contains("orgops.dev/confirm-offboard=\"true\""),
        "the message says how many, when, and how to let it through: {message}"
    );
    let window = provider(&w)["status"]["offboarding"].clone();
    assert_eq!(
        window.as_array().map(Vec::len),
        Some(MAX_PER_HOUR),
        "the window records each offboarding: {window}"
    );
    wait_for("the paused gauge at 25", WAIT, || async {
        gauge(&w).await == Some((ORGS - MAX_PER_HOUR) as u64)
    })
    .await;

    // A restart keeps the window: it lives in the OrgProvider's status, and the new
    // process re-evaluates every paused object (the gauge, rebuilt from nothing, says so).
    w.op.restart();
    wait_for(
        "the restarted operator's paused gauge at 25",
        WAIT,
        || async { gauge(&w).await == Some((ORGS - MAX_PER_HOUR) as u64) },
    )
    .await;
    wait_released(&w, MAX_PER_HOUR).await;
    let events = w.events(&sample);
    assert_eq!(
        events.matches("\"reason\": \"OffboardingPaused\"").count(),
        1,
        "one Warning Event per episode, none from later passes or the restart: {events}"
    );

    // The annotation lets exactly one object through, past the full window.
    w.env.kubectl_ok(&[
        "annotate",
        "customerorg",
        &sample,
        "orgops.dev/confirm-offboard=true",
    ]);
    wait_for(&format!("{sample} offboarded and gone"), WAIT, || async {
        !w.env
            .kubectl(&["get", "customerorg", &sample])
            .status
            .success()
    })
    .await;
    wait_released(&w, MAX_PER_HOUR + 1).await;
    let window = provider(&w)["status"]["offboarding"].clone();
    assert!(
        window.as_array().is_some_and(|e| e
            .iter()
            .any(|e| e["name"] == sample.as_str() && e["confirmed"] == true)),
        "a confirmed offboarding is still recorded in the window: {window}"
    );

    // An hour passes, again and again: five more each time, until all are offboarded.
    let mut done = MAX_PER_HOUR + 1;
    while done < ORGS {
        advance_window(&w);
        done = (done + MAX_PER_HOUR).min(ORGS);
        wait_released(&w, done).await;
    }
    let state = w.sim.state().await;
    assert!(live_orgs(&state).is_empty(), "every org archived: {state}");
    assert_eq!(archive_calls(&w).await, ORGS as u64, "each exactly once");
    wait_for("the paused gauge back to 0", WAIT, || async {
        gauge(&w).await == Some(0)
    })
    .await;
    w.cleanup().await;
}

/// The guard's claims rely on the apiserver refusing a status patch computed from an old
/// resourceVersion (two replicas never both take the last slot), and on the OrgProvider
/// controller's server-side apply of the status leaving the window alone. Both are
/// properties of the real apiserver, so they are checked here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_claim_is_refused_and_the_status_apply_keeps_the_window() {
    let w = World::new("offguard-rv", "5s").await;
    let claim = |rv: &Value, uid: &str| {
        json!({"metadata": {"resourceVersion": rv}, "status": {"offboarding": [
            {"namespace": "ns", "name": uid, "uid": uid, "time": "2026-01-01T00:00:00Z"}
        ]}})
        .to_string()
    };
    let patch = |body: String| {
        kubectl(&[
            "patch",
            "orgprovider",
            &w.provider,
            "--subresource=status",
            "--type=merge",
            "-p",
            &body,
        ])
    };
    // The operator may write the status between our read and our patch: read again then.
    let mut read = Value::Null;
    for _ in 0..10 {
        read = provider(&w)["metadata"]["resourceVersion"].clone();
        if patch(claim(&read, "first")).status.success() {
            break;
        }
    }
    assert_eq!(provider(&w)["status"]["offboarding"][0]["uid"], "first");
    let second = patch(claim(&read, "second"));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && stderr.contains("the object has been modified"),
        "a second write from the same read must be refused with 409: {stderr}"
    );
    assert_eq!(provider(&w)["status"]["offboarding"][0]["uid"], "first");

    // A spec change makes the OrgProvider controller apply a new status
    // (observedGeneration): the window must survive it.
    kubectl_ok(&[
        "patch",
        "orgprovider",
        &w.provider,
        "--type=merge",
        "-p",
        r#"{"spec":{"rateLimit":{"tier":"unlimited"}}}"#,
    ]);
    wait_for(
        "the provider status at the new generation",
        WAIT,
        || async {
            let p = provider(&w);
            p["status"]["observedGeneration"] == p["metadata"]["generation"]
        },
    )
    .await;
    let p = provider(&w);
    assert_eq!(p["status"]["offboarding"][0]["uid"], "first", "{p}");
    assert_eq!(p["status"]["rateLimitTier"], "unlimited", "{p}");
    w.cleanup().await;
}

/// Issue 27, item 5: `spec.state: archived` archives as surely as a deletion does, and a
/// mass edit to it (a bad merge, a templating error) went around the guard. It takes a slot
/// of the same window: past `maxPerHour` the object waits with `OffboardingPaused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archiving_by_spec_state_takes_a_slot_of_the_window() {
    let w = World::new("offguard-state", "5s").await;
    max_per_hour(&w, 1);
    let names = ["a1", "a2", "a3"];
    let yaml: Vec<String> = names.iter().map(|n| corg_yaml(&w, n)).collect();
    apply_yaml_ok(&yaml.join("---\n"));
    for n in names {
        w.wait_ready(n).await;
    }
    let archive: Vec<String> = yaml
        .iter()
        .map(|y| format!("{y}  state: archived\n"))
        .collect();
    apply_yaml_ok(&archive.join("---\n"));
    wait_for("one archived, two paused", WAIT, || async {
        let all = corgs(&w);
        let waiting = all
            .iter()
            .filter(|c| {
                condition(c, "Ready").is_some_and(|r| r.0 == "False" && r.1 == "OffboardingPaused")
            })
            .count();
        archived(&w).await == 1 && waiting == 2
    })
    .await;
    // Still so a few resyncs later: the window holds, nothing else was archived.
    w.resyncs(2).await;
    assert_eq!(archived(&w).await, 1);
    assert_eq!(archive_calls(&w).await, 1);
    w.cleanup().await;
}
