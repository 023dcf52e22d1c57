//! ParentWebhook on the real control plane with layers-sim: admission, a firehose Ready with
//! a Secret whose signing secret is the simulator's (its state file keeps the SHA-256), a
//! child created afterwards covered by it, out-of-band edits corrected, rotation by
//! annotation and after a lost Secret, deletion, adoption after a lost cluster, and an API
//! refusal that stalls without a retry storm.
mod support;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use support::world::{CONVERGE, World, condition, count, secret_value, text};
use support::{apply_yaml, apply_yaml_ok, log_dir, random_suffix, wait_for, wait_for_some};

fn pwh_yaml(w: &World, name: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: ParentWebhook
metadata: {{name: {name}, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  url: https://hooks.example.com/firehose
  events: [post.published, content.generated]
  description: every customer's events
{extra}"#,
        ns = w.env.ns,
        provider = w.provider
    )
}

fn pwh(w: &World, name: &str) -> Option<Value> {
    let out = w.env.kubectl(&["get", "parentwebhook", name, "-o", "json"]);
    serde_json::from_slice(&out.stdout).ok()
}

async fn wait_pwh(w: &World, name: &str, type_: &str, reason: Option<&str>) -> Value {
    wait_for_some(
        &format!("ParentWebhook {name} {type_} {reason:?}"),
        CONVERGE,
        || async {
            let v = pwh(w, name)?;
            let generation = v["metadata"]["generation"].clone();
            let ok = v["status"]["conditions"].as_array()?.iter().any(|c| {
                c["type"] == type_
                    && c["status"] == "True"
                    && c["observedGeneration"] == generation
                    && reason.is_none_or(|r| c["reason"] == r)
            });
            ok.then_some(v)
        },
    )
    .await
}

/// The parent's endpoints in the simulator.
async fn parent_endpoints(w: &World) -> Vec<Value> {
    let state = w.sim.state().await;
    let parent = state["parent"]["orgId"].clone();
    state["webhookEndpoints"]
        .as_array()
        .map(|eps| {
            eps.iter()
                .filter(|e| e["organizationId"] == parent)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The SHA-256 the simulator keeps for the endpoint's signing secret (its state file).
fn stored_hash(state_file: &Path, id: &str) -> Option<String> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let state: Value = serde_json::from_str(&text).ok()?;
    state["endpoints"][id]["secret_hash"]
        .as_str()
        .map(String::from)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Waits until the Secret holds a `whsec_` signing secret for endpoint `id` that the
/// simulator accepts as the endpoint's current one; returns it.
async fn wait_working_secret(w: &World, state_file: &Path, secret: &str, id: &str) -> String {
    wait_for_some(
        &format!("Secret {secret} holding the signing secret of {id}"),
        CONVERGE,
        || async {
            let value = secret_value(&w.env, secret, "signingSecret")?;
            let annotated = w.env.kubectl(&[
                "get",
                "secret",
                secret,
                "-o",
                "jsonpath={.metadata.annotations.orgops\\.dev/endpoint-id}",
            ]);
            let matches = String::from_utf8_lossy(&annotated.stdout) == id
                && value.starts_with("whsec_")
                && stored_hash(state_file, id) == Some(sha256_hex(&value));
            matches.then_some(value)
        },
    )
    .await
}

fn state_file() -> PathBuf {
    log_dir().join(format!("pwh-sim-{}.json", random_suffix()))
}

async fn world(name: &str, state: &Path, sim_extra: &[&str]) -> World {
    let state = state.to_string_lossy().into_owned();
    let mut sim_args = vec!["--state-file", state.as_str()];
    sim_args.extend_from_slice(sim_extra);
    World::with(name, &sim_args, &["--resync-interval", "4s"]).await
}

fn rejection(yaml: &str) -> String {
    let out = apply_yaml(yaml);
    assert!(!out.status.success(), "accepted: {yaml}");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn firehose_lifecycle() {
    let state = state_file();
    let w = world("pwh-life", &state, &[]).await;

    // Admission: https, 1-50 events, the scope enum.
    let bad_url = pwh_yaml(&w, "bad", "").replace(
        "https://hooks.example.com/firehose",
        "http://hooks.example.com",
    );
    assert!(rejection(&bad_url).contains("url must use https"));
    let no_events = pwh_yaml(&w, "bad", "").replace("[post.published, content.generated]", "[]");
    assert!(rejection(&no_events).contains("spec.events"));
    let many: Vec<String> = (0..51).map(|i| format!("e{i}.x")).collect();
    let too_many = pwh_yaml(&w, "bad", "").replace(
        "[post.published, content.generated]",
        &format!("[{}]", many.join(", ")),
    );
    assert!(rejection(&too_many).contains("spec.events"));
    assert!(rejection(&pwh_yaml(&w, "bad", "  scope: all_children\n")).contains("spec.scope"));

    apply_yaml_ok(&pwh_yaml(&w, "firehose", ""));
    let v = wait_pwh(&w, "firehose", "Ready", None).await;
    let id = text(&v["status"]["endpointId"], "status.endpointId");
    assert_eq!(v["spec"]["scope"], "allChildren", "defaulted");
    let eps = parent_endpoints(&w).await;
    assert_eq!(eps.len(), 1, "one endpoint on the parent: {eps:?}");
    let ep = &eps[0];
    assert_eq!(ep["id"], id.as_str());
    assert_eq!(ep["scope"], "all_children");
    assert_eq!(ep["description"], "every customer's events");
    assert_eq!(
        ep["metadata"]["orgops.dev/parent-webhook"],
        format!("{}/firehose", w.env.ns)
    );
    let first = wait_working_secret(&w, &state, "firehose-signing-secret", &id).await;
    let status = serde_json::to_string(&v["status"]).unwrap();
    assert!(!status.contains("whsec_"), "no secret in status");

    // A child created afterwards is covered by the firehose.
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let org = text(&corg["status"]["orgId"], "status.orgId");
    let recipients: Value = reqwest::get(format!(
        "{}/_sim/webhook-recipients?orgId={org}",
        w.sim.base_url()
    ))
    .await
    .expect("recipients")
    .json()
    .await
    .expect("recipients JSON");
    assert!(
        recipients["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .any(|e| e["id"] == id.as_str() && e["via"] == "all_children"),
        "the firehose does not cover the new child: {recipients}"
    );

    // Out-of-band edits with the parent key are set back.
    let resp = reqwest::Client::new()
        .patch(format!("{}/v1/webhook-endpoints/{id}", w.sim.base_url()))
        .bearer_auth(w.sim.parent_key())
        .json(&json!({"url": "https://evil.example.com/x", "events": ["test.ping"], "status": "paused"}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(resp.status().as_u16(), 200);
    wait_for("the endpoint set back to the spec", CONVERGE, || async {
        parent_endpoints(&w).await.iter().any(|e| {
            e["id"] == id.as_str()
                && e["url"] == "https://hooks.example.com/firehose"
                && e["status"] == "active"
                && e["events"].as_array().is_some_and(|ev| ev.len() == 2)
        })
    })
    .await;
    assert!(w.events("firehose").contains("DriftCorrected"));

    // Each new rotate-secret value rotates once.
    w.env.kubectl_ok(&[
        "annotate",
        "parentwebhook",
        "firehose",
        "orgops.dev/rotate-secret=r1",
    ]);
    let rotated = wait_for_some("rotation recorded in status", CONVERGE, || async {
        let v = pwh(&w, "firehose")?;
        (v["status"]["secretRotatedFor"] == "r1").then_some(v)
    })
    .await;
    assert!(rotated["status"]["previousSecretExpiresAt"].is_string());
    let second = wait_working_secret(&w, &state, "firehose-signing-secret", &id).await;
    assert_ne!(first, second, "rotated");
    let rotations = |c: &Value| {
        count(c, |m, r| {
            m == "POST" && r == "/v1/webhook-endpoints/:endpointId/rotate-secret"
        })
    };
    let after_one = rotations(&w.sim.counters().await);
    w.resyncs(2).await;
    assert_eq!(
        rotations(&w.sim.counters().await),
        after_one,
        "one rotation per value"
    );

    // A lost Secret is restored by a rotation.
    w.env
        .kubectl_ok(&["delete", "secret", "firehose-signing-secret"]);
    let third = wait_working_secret(&w, &state, "firehose-signing-secret", &id).await;
    assert_ne!(third, second);
    for (what, text) in [
        (
            "operator log",
            std::fs::read_to_string(w.op.log_path()).unwrap_or_default(),
        ),
        ("Events", w.events("firehose")),
    ] {
        for secret in [&first, &second, &third] {
            assert!(
                !text.contains(secret.as_str()),
                "a signing secret in the {what}"
            );
        }
    }

    // Deletion deletes the endpoint.
    w.env
        .kubectl_ok(&["delete", "parentwebhook", "firehose", "--wait=false"]);
    wait_for("endpoint deleted and object gone", CONVERGE, || async {
        parent_endpoints(&w).await.is_empty() && pwh(&w, "firehose").is_none()
    })
    .await;
    w.env
        .kubectl_ok(&["delete", "customerorg", "acme", "--wait=false"]);
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_cluster_reapply_adopts_the_endpoint() {
    let state = state_file();
    let mut w = world("pwh-adopt", &state, &[]).await;
    apply_yaml_ok(&pwh_yaml(&w, "firehose", "  scope: own\n"));
    let v = wait_pwh(&w, "firehose", "Ready", None).await;
    let id = text(&v["status"]["endpointId"], "status.endpointId");

    // The cluster loses the object while the operator is down (finalizer gone with it).
    w.op.kill();
    w.env.kubectl_ok(&[
        "patch",
        "parentwebhook",
        "firehose",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    w.env.kubectl_ok(&["delete", "parentwebhook", "firehose"]);
    wait_for("Secret garbage-collected", CONVERGE, || async {
        !w.env
            .kubectl(&["get", "secret", "firehose-signing-secret"])
            .status
            .success()
    })
    .await;
    let creates_before = count(&w.sim.counters().await, |m, r| {
        m == "POST" && r == "/v1/webhook-endpoints"
    });

    // Re-applied from Git: the same endpoint, adopted, its secret rotated into the Secret.
    w.op.restart();
    apply_yaml_ok(&pwh_yaml(&w, "firehose", "  scope: own\n"));
    let v = wait_pwh(&w, "firehose", "Ready", None).await;
    assert_eq!(
        v["status"]["endpointId"],
        id.as_str(),
        "adopted, not created"
    );
    wait_working_secret(&w, &state, "firehose-signing-secret", &id).await;
    let eps = parent_endpoints(&w).await;
    assert_eq!(eps.len(), 1, "zero second endpoints: {eps:?}");
    assert_eq!(eps[0]["scope"], "own");
    assert_eq!(
        count(&w.sim.counters().await, |m, r| m == "POST"
            && r == "/v1/webhook-endpoints"),
        creates_before,
        "no create after the rebuild"
    );
    assert!(w.events("firehose").contains("Adopted"));

    // A scope change is patched in place.
    apply_yaml_ok(&pwh_yaml(&w, "firehose", "  scope: allChildren\n"));
    wait_for("scope patched", CONVERGE, || async {
        parent_endpoints(&w)
            .await
            .iter()
            .any(|e| e["id"] == id.as_str() && e["scope"] == "all_children")
    })
    .await;
    wait_pwh(&w, "firehose", "Ready", None).await;
    w.env
        .kubectl_ok(&["delete", "parentwebhook", "firehose", "--wait=false"]);
    wait_for("endpoint deleted", CONVERGE, || async {
        parent_endpoints(&w).await.is_empty()
    })
    .await;
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_refusal_stalls_with_the_api_message_and_no_retry_storm() {
    let state = state_file();
    let w = world("pwh-refused", &state, &[]).await;
    // Admission cannot know the provider's event catalog; the API refuses the name (422).
    let yaml = pwh_yaml(&w, "firehose", "").replace(
        "[post.published, content.generated]",
        "[post.published, post.exploded]",
    );
    apply_yaml_ok(&yaml);
    let v = wait_pwh(&w, "firehose", "Stalled", Some("ApiRejected")).await;
    let (_, _, message) = condition(&v, "Stalled").expect("Stalled");
    assert!(
        message.contains("create the endpoint") && message.contains("post.exploded"),
        "{message}"
    );
    assert_eq!(condition(&v, "Ready").expect("Ready").0, "False");
    let creates = |c: &Value| count(c, |m, r| m == "POST" && r == "/v1/webhook-endpoints");
    // One create in all: the pass that adds the finalizer must not be followed by a
    // second one (its own finalizer event) that asks again.
    w.resyncs(2).await;
    assert_eq!(
        creates(&w.sim.counters().await),
        1,
        "one create, no retry until the spec changes"
    );
    assert!(parent_endpoints(&w).await.is_empty());
    // Fixing the spec converges.
    apply_yaml_ok(&pwh_yaml(&w, "firehose", ""));
    wait_pwh(&w, "firehose", "Ready", None).await;
    assert_eq!(parent_endpoints(&w).await.len(), 1);
    w.env
        .kubectl_ok(&["delete", "parentwebhook", "firehose", "--wait=false"]);
    wait_for("endpoint deleted", CONVERGE, || async {
        parent_endpoints(&w).await.is_empty()
    })
    .await;
    w.cleanup().await;
}
