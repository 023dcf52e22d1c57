//! GitOps health on objects the operator really produced: the live CustomerOrg JSON from
//! the apiserver goes through Argo CD's Lua health check (hack/health/health.lua, run by
//! `lua5.4`) and through the real kstatus library (Flux, `kstatus-check`).
//!
//! `kstatus-check` comes from `hack/tools/build` (which prints where it keeps the tools, and
//! builds them if missing); this test fails (never skips) when a tool is absent.
mod support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Operator, Sim, TestEnv, apply_yaml_ok, kubectl, wait_for_some, workspace_root};

const CONVERGE: Duration = Duration::from_secs(60);

fn kstatus_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new(workspace_root().join("hack/tools/build"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run hack/tools/build");
        assert!(out.status.success(), "hack/tools/build failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("kstatus-check")
    })
    .clone()
}

/// Fails with what to run when a verdict tool is missing.
fn require_tools() {
    let bin = kstatus_bin();
    assert!(
        bin.is_file(),
        "{} is missing after hack/tools/build",
        bin.display()
    );
    let lua = Command::new("lua5.4").arg("-v").output();
    assert!(
        lua.is_ok_and(|o| o.status.success()),
        "lua5.4 is missing: install it (apt-get install lua5.4) to run the Argo CD health check"
    );
}

/// Runs `program args` with `input` on stdin and returns the first tab-separated field of
/// its stdout (the verdict) and the whole line.
fn verdict(program: &str, args: &[&str], input: &str) -> (String, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write object to stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let status = line.split('\t').next().unwrap_or_default().to_string();
    (status, line)
}

/// Argo CD's verdict for a live object.
fn argo(obj: &str) -> (String, String) {
    let runner = workspace_root().join("hack/health/run.lua");
    verdict("lua5.4", &[runner.to_str().expect("utf-8 path"), "-"], obj)
}

/// Flux's (kstatus) verdict for a live object.
fn kstatus(obj: &str) -> (String, String) {
    verdict(kstatus_bin().to_str().expect("utf-8 path"), &["-"], obj)
}

struct World {
    env: TestEnv,
    sim: Sim,
    good: String,
    refused: String,
}

impl World {
    async fn new() -> World {
        let env = TestEnv::new("gitops").await;
        let sim = Sim::start(&[]);
        env.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "parent-key",
            &format!("--from-literal=apiKey={}", sim.parent_key()),
        ]);
        // Looks like a key, but the simulator does not know it: whoami answers 401.
        env.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "revoked-key",
            "--from-literal=apiKey=lp_live_revokedrevokedrevokedrevoked",
        ]);
        let good = format!("p-{}", env.ns);
        let refused = format!("p-{}-refused", env.ns);
        for (name, secret) in [(&good, "parent-key"), (&refused, "revoked-key")] {
            apply_yaml_ok(&format!(
                "apiVersion: orgops.dev/v1alpha1\nkind: OrgProvider\nmetadata: {{name: {name}}}\nspec:\n  type: layers\n  baseUrl: {url}\n  credentialsSecretRef: {{namespace: {ns}, name: {secret}, key: apiKey}}\n",
                url = sim.base_url(),
                ns = env.ns
            ));
        }
        World {
            env,
            sim,
            good,
            refused,
        }
    }

    fn apply_corg(&self, name: &str, provider: &str, display: &str) {
        apply_yaml_ok(&format!(
            "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrg\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  providerRef: {{name: {provider}}}\n  displayName: {display}\n  externalId: {ns}-{name}\n  credits: {{allocated: 100}}\n",
            ns = self.env.ns
        ));
    }

    /// The live object exactly as the apiserver returns it.
    fn live(&self, name: &str) -> String {
        self.env
            .kubectl_ok(&["get", "customerorg", name, "-o", "json"])
    }

    /// Waits until `cond` holds on the live object; returns its JSON text.
    async fn wait_until(&self, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> String {
        wait_for_some(&format!("CustomerOrg {name}: {what}"), CONVERGE, || {
            let out = self
                .env
                .kubectl(&["get", "customerorg", name, "-o", "json"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let ok = serde_json::from_str::<Value>(&text).is_ok_and(|v| cond(&v));
            async move { ok.then_some(text) }
        })
        .await
    }

    async fn cleanup(self) {
        for p in [&self.good, &self.refused] {
            let _ = kubectl(&["delete", "orgprovider", p, "--ignore-not-found"]);
        }
        drop(self.sim);
        self.env.cleanup().await;
    }
}

fn condition<'a>(v: &'a Value, type_: &str) -> Option<&'a Value> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Ready=True for the object's current generation.
fn ready(v: &Value) -> bool {
    condition(v, "Ready").is_some_and(|c| {
        c["status"] == "True" && c["observedGeneration"] == v["metadata"]["generation"]
    })
}

#[track_caller]
fn assert_verdicts(state: &str, obj: &str, want_argo: &str, want_kstatus: Option<&str>) {
    let (a, a_line) = argo(obj);
    let (k, k_line) = kstatus(obj);
    assert_eq!(a, want_argo, "{state}: Argo CD says {a_line}\n{obj}");
    match want_kstatus {
        Some(want) => assert_eq!(k, want, "{state}: kstatus says {k_line}\n{obj}"),
        None => assert_ne!(k, "Current", "{state}: kstatus says {k_line}\n{obj}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_verdicts_on_live_objects() {
    require_tools();
    let w = World::new().await;

    // Brand-new, no operator running: only the CRD's status default is there.
    w.apply_corg("acme", &w.good, "Acme Coffee");
    let fresh = w.live("acme");
    let v: Value = serde_json::from_str(&fresh).expect("JSON");
    assert_eq!(
        v["status"]["observedGeneration"], -1,
        "the CRD default must be stored: {fresh}"
    );
    assert_verdicts("brand-new", &fresh, "Progressing", None);
    let (k, _) = kstatus(&fresh);
    assert_eq!(k, "InProgress", "brand-new: {fresh}");

    let lease = format!("orgops-leader-{}", w.env.ns);
    let mut op =
        Operator::start(&w.env, &["--resync-interval", "5s", "--lease-name", &lease]).await;

    // Converged.
    let converged = w.wait_until("acme", "Ready", ready).await;
    assert_verdicts("converged", &converged, "Healthy", Some("Current"));

    // Stalled: the provider refuses the parent key.
    w.apply_corg("refused", &w.refused, "Refused Coffee");
    let stalled = w
        .wait_until("refused", "Stalled=True", |v| {
            condition(v, "Stalled").is_some_and(|c| c["status"] == "True")
        })
        .await;
    assert_verdicts("stalled", &stalled, "Degraded", Some("Failed"));

    // Reconciling: the spec changed and the operator has not seen it yet.
    op.kill();
    w.apply_corg("acme", &w.good, "Acme Coffee Roasters");
    let changed = w.live("acme");
    let v: Value = serde_json::from_str(&changed).expect("JSON");
    assert_ne!(
        v["metadata"]["generation"], v["status"]["observedGeneration"],
        "spec change must bump the generation: {changed}"
    );
    assert_verdicts("reconciling", &changed, "Progressing", Some("InProgress"));

    // The operator comes back and converges the new generation.
    op.restart();
    let again = w.wait_until("acme", "Ready again", ready).await;
    assert_verdicts("converged again", &again, "Healthy", Some("Current"));
    let state = w.sim.state().await;
    assert!(
        state["orgs"]
            .as_array()
            .is_some_and(|o| o.iter().any(|o| o["name"] == "Acme Coffee Roasters")),
        "the new displayName reached the provider: {state}"
    );

    // Paused: the operator acknowledges the annotation.
    w.env
        .kubectl_ok(&["annotate", "customerorg", "acme", "orgops.dev/paused=true"]);
    let paused = w
        .wait_until("acme", "Reconciling reason Paused", |v| {
            condition(v, "Reconciling").is_some_and(|c| c["reason"] == "Paused")
        })
        .await;
    // kstatus has no "suspended": it keeps reporting the last observed health.
    assert_verdicts("paused", &paused, "Suspended", Some("Current"));

    drop(op);
    w.cleanup().await;
}
