//! The leader fence (issue 27, item 4), end to end: a leader cut off from the API server
//! but not from the provider must stop writing by itself once its Lease could have moved,
//! whatever it still believes about the Lease; another replica leads meanwhile. Before the
//! fence it kept correcting "drift" from its stale copy of the spec for as long as the
//! partition lasted, fighting the new leader.
mod support;

use serde_json::Value;
use std::time::Duration;
use support::chaos::leader_of;
use support::world::{CONVERGE, count, install_provider};
use support::{ApiProxy, Operator, Sim, TestEnv, apply_yaml_ok, wait_for};

/// Short, so the test need not wait a production Lease (15 s) twice.
const LEASE: &str = "--lease-duration=4s";

fn corg_yaml(ns: &str, provider: &str, display_name: &str) -> String {
    format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrg\nmetadata: {{name: acme, namespace: {ns}}}\nspec:\n  providerRef: {{name: {provider}}}\n  displayName: {display_name}\n  externalId: {ns}-acme\n"
    )
}

fn org_name(state: &Value, ns: &str) -> Option<String> {
    state["orgs"].as_array()?.iter().find_map(|o| {
        o["metadata"]["orgops.dev/owner"]
            .as_str()
            .filter(|m| m.starts_with(&format!("{ns}/acme/")))
            .and(o["name"].as_str().map(str::to_string))
    })
}

fn ready_at_generation(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"] == v["metadata"]["generation"]
        })
    })
}

fn org_patches(counters: &Value) -> u64 {
    count(counters, |m, route| {
        m == "PATCH" && route == "/v1/organizations/:orgId"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_writing_on_its_own() {
    let env = TestEnv::new("fence").await;
    let sim = Sim::start(&["--tier", "unlimited"]);
    let provider = format!("p-{}", env.ns);
    install_provider(&env, &sim, &provider, "parent-key");
    let lease_name = format!("fence-{}", env.ns);
    let lease = format!("--lease-name={lease_name}");
    let args = [
        "--leader-election=true",
        lease.as_str(),
        LEASE,
        "--resync-interval=2s",
    ];
    let mut direct = Operator::start(&env, &args).await;
    wait_for("the first replica leading", CONVERGE, || async {
        direct.is_leader().await
    })
    .await;
    // The second replica reaches the API server through a proxy the test can cut; it
    // takes the Lease when the first one crashes.
    let proxy = ApiProxy::start(&direct.server()).await;
    let proxied = direct.replica_via("proxied", &proxy.url());
    direct.kill();
    let mut ops = [direct, proxied];
    wait_for("the proxied replica leading", CONVERGE, || async {
        leader_of(&ops).await == 1
    })
    .await;
    ops[0].restart();

    apply_yaml_ok(&corg_yaml(&env.ns, &provider, "Alpha Coffee"));
    wait_for("acme Ready as Alpha Coffee", CONVERGE, || async {
        let out = env.kubectl(&["get", "customerorg", "acme", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| ready_at_generation(&v))
    })
    .await;

    // Partitioned: the leader keeps reaching the provider, never the API server. The
    // other replica takes over and applies the user's rename.
    proxy.cut();
    wait_for("the direct replica leading", CONVERGE, || async {
        ops[0].is_leader().await
    })
    .await;
    apply_yaml_ok(&corg_yaml(&env.ns, &provider, "Beta Coffee"));
    wait_for(
        "the org renamed Beta Coffee and Ready",
        CONVERGE,
        || async {
            let out = env.kubectl(&["get", "customerorg", "acme", "-o", "json"]);
            let ready =
                serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| ready_at_generation(&v));
            ready && org_name(&sim.state().await, &env.ns).as_deref() == Some("Beta Coffee")
        },
    )
    .await;

    // From now on nothing is left to write. A partitioned leader acting on its stale copy
    // would rename the org back every resync (2 s) and the new leader would rename it
    // again: watch for six resyncs.
    let before = org_patches(&sim.counters().await);
    let mut flips = 0;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if org_name(&sim.state().await, &env.ns).as_deref() != Some("Beta Coffee") {
            flips += 1;
        }
    }
    let after = org_patches(&sim.counters().await);
    assert_eq!(
        (flips, after - before),
        (0, 0),
        "the partitioned replica kept writing its stale plan (name seen wrong {flips} times, {} org PATCHes); log: {}",
        after - before,
        ops[1].log_path().display()
    );
    // And it gave up leading on its own.
    wait_for("the partitioned replica exiting", CONVERGE, || {
        let running = ops[1].is_running();
        async move { !running }
    })
    .await;
    assert!(
        ops[1].log().contains("leader fence expired"),
        "the partitioned replica says why it stopped: {}",
        ops[1].log_path().display()
    );
    let [a, b] = ops;
    drop(b);
    drop(a);
    drop(proxy);
    let _ = support::kubectl(&["delete", "orgprovider", &provider, "--ignore-not-found"]);
    let _ = support::kubectl(&[
        "delete",
        "lease",
        "-n",
        "orgops-system",
        &lease_name,
        "--ignore-not-found",
    ]);
    env.cleanup().await;
}
