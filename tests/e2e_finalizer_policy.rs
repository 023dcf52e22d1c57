//! The finalizer policy (`deploy/finalizer-policy.yaml`, a MutatingAdmissionPolicy) on
//! the real kube-apiserver, with no operator running: a new CustomerOrg is stored with the
//! offboarding finalizer (the operator's finalizer patch, one write per new customer, is
//! not needed); a GitOps re-apply that does not list it (server-side apply as another
//! field manager, as Flux does; a plain merge patch) keeps it; a deleting object never gets
//! it back, so the operator's removal ends the deletion; a namespace labelled
//! `orgops.dev/finalizer-policy=off` is left out (there the operator adds it itself).
mod support;

use serde_json::Value;
use std::time::Duration;
use support::{TestEnv, kubectl, kubectl_with_stdin, wait_for, workspace_root};

const FINALIZER: &str = "orgops.dev/offboard";

fn manifest(ns: &str, display: &str) -> String {
    format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrg\nmetadata:\n  name: acme\n  namespace: {ns}\nspec:\n  displayName: {display}\n  providerRef:\n    name: nobody\n"
    )
}

/// Server-side apply as Flux's field manager; returns the stored object.
fn flux_apply(ns: &str, display: &str) -> Value {
    let out = kubectl_with_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=kustomize-controller",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(&manifest(ns, display)),
    );
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("object JSON")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn get(env: &TestEnv) -> Option<Value> {
    let out = env.kubectl(&["get", "customerorg", "acme", "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("object JSON"))
}

/// Installs the policy (it is optional, so the harness does not) and waits until the API
/// server applies it: a server-side dry-run create comes back with the finalizer.
async fn install_policy(env: &TestEnv) {
    let policy = workspace_root().join("deploy/finalizer-policy.yaml");
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=orgops-e2e",
        "-f",
        &policy.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "apply the policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = manifest(&env.ns, "Probe");
    wait_for(
        "the finalizer policy to apply",
        Duration::from_secs(90),
        || {
            let probe = probe.clone();
            async move {
                let out = kubectl_with_stdin(
                    &["create", "--dry-run=server", "-o", "json", "-f", "-"],
                    Some(&probe),
                );
                out.status.success()
                    && serde_json::from_slice::<Value>(&out.stdout)
                        .is_ok_and(|o| finalizers(&o) == [FINALIZER])
            }
        },
    )
    .await;
}

/// Removed again, so the other test binaries see the cluster the harness set up.
fn remove_policy() {
    let policy = workspace_root().join("deploy/finalizer-policy.yaml");
    let _ = kubectl(&[
        "delete",
        "--ignore-not-found",
        "-f",
        &policy.to_string_lossy(),
    ]);
}

/// One test (not two): the policy is cluster-wide and removed at the end.
#[tokio::test]
async fn the_policy_stores_the_finalizer_keeps_it_and_respects_opted_out_namespaces() {
    let env = TestEnv::new("finalizer-policy").await;
    install_policy(&env).await;
    let created = flux_apply(&env.ns, "Acme");
    assert_eq!(
        finalizers(&created),
        [FINALIZER],
        "stored with the finalizer"
    );

    // GitOps re-applies without it: the applier does not own it, and the policy puts it back
    // after an update that drops it.
    let reapplied = flux_apply(&env.ns, "Acme Coffee");
    assert_eq!(finalizers(&reapplied), [FINALIZER], "kept by a re-apply");
    env.drop_finalizers("customerorg", "acme");
    let patched = get(&env).expect("still there");
    assert_eq!(
        finalizers(&patched),
        [FINALIZER],
        "put back after an update"
    );

    // Deleting: no finalizer is ever added back, so its removal (the operator's, here by
    // hand) lets the object go.
    env.kubectl_ok(&["delete", "customerorg", "acme", "--wait=false"]);
    let deleting = get(&env).expect("held by the finalizer");
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    env.drop_finalizers("customerorg", "acme");
    env.kubectl_ok(&["wait", "--for=delete", "customerorg/acme", "--timeout=30s"]);

    // A namespace labelled off is left out.
    let off = TestEnv::without_finalizer_policy("finalizer-policy-off").await;
    let created = flux_apply(&off.ns, "Acme");
    remove_policy();
    assert!(
        finalizers(&created).is_empty(),
        "the policy reached an opted-out namespace: {created}"
    );
    off.cleanup().await;
    env.cleanup().await;
}
