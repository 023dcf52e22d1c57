//! End-to-end fixture shared by every integration test (`mod support;`).
//!
//! Real things only: a kube-apiserver on loopback (or an existing cluster when
//! `ORGOPS_USE_EXISTING_CLUSTER=1`), the real `kubectl`, the `layers-sim` binary and the
//! `orgops` binary authenticating as a ServiceAccount bound to `deploy/rbac.yaml`.
// Each test binary uses a different part of the fixture.
#![allow(dead_code, unused_imports)]

pub mod chaos;
mod child;
mod control_plane;
pub mod corgs;
mod env;
pub mod gennia;
pub mod import;
mod operator;
mod proxy;
mod sim;
pub mod world;
pub mod youhodler;

pub use control_plane::{ControlPlane, client_for};
pub use env::{TestEnv, create_namespace_without_finalizer_policy};
pub use gennia::{GenniaSim, GenniaWorld};
pub use operator::{
    OPERATOR_SA, Operator, bind_service_account, orgops_bin, read_only_kubeconfig,
    write_token_kubeconfig, write_token_kubeconfig_for,
};
pub use proxy::ApiProxy;
pub use sim::Sim;

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (where Cargo.toml, crds/ and deploy/ live): the package directory
/// or, for a member crate whose tests include this fixture (kubectl-orgops), the nearest
/// directory above it holding the workspace's Cargo.lock.
pub fn workspace_root() -> PathBuf {
    let package = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    package
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(package)
        .to_path_buf()
}

/// Directory for process logs that tests read back (and CI keeps on failure).
pub fn log_dir() -> PathBuf {
    let dir = workspace_root().join("target/e2e-logs");
    std::fs::create_dir_all(&dir).expect("create target/e2e-logs");
    dir
}

/// A loopback port that was free a moment ago, for a child process to listen on (and to
/// listen on again after a restart). Taken below the kernel's ephemeral range
/// (32768-60999 by default): a port from `bind(0)` comes from that range, and once released
/// any outgoing connection may take it as its local port before the child binds it, which
/// made an operator exit at start-up now and then. Never the same port twice in a process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rand::random_range(21_000..32_000u16);
        if handed_out.contains(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        handed_out.insert(port);
        return port;
    }
    panic!("no free loopback port in 21000-31999");
}

/// Short random lowercase suffix for unique names.
pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// Runs the real `kubectl` against the test control plane; never panics.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with_stdin(args, None)
}

/// Runs `kubectl` and returns its stdout; panics with stderr when it fails.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `kubectl apply -f -` (client-side, as a GitOps user would); returns the output even
/// when the apiserver rejects the object, so tests can assert on the message.
pub fn apply_yaml(yaml: &str) -> Output {
    kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))
}

/// `apply_yaml` that panics with kubectl's stderr when the apply fails.
pub fn apply_yaml_ok(yaml: &str) {
    let out = apply_yaml(yaml);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n--- yaml ---\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn kubectl_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let kubeconfig = ControlPlane::ensure().kubeconfig.clone();
    run_kubectl(&kubeconfig, args, stdin)
}

/// Runs kubectl with an explicit kubeconfig (used before the control plane is cached).
pub(crate) fn run_kubectl(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl (is it installed?)");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("kubectl stdin");
        pipe.write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("wait for kubectl")
}

/// Polls `check` every 250 ms until it returns true; panics after `timeout` saying what
/// it waited for.
pub async fn wait_for<F, Fut>(desc: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_some(desc, timeout, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Like `wait_for`, but returns the value once `check` yields `Some`.
pub async fn wait_for_some<T, F, Fut>(desc: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {desc}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sends `req` and returns its JSON body (`null` when empty); panics naming `what` when the
/// request fails or the status is not 2xx.
pub async fn ok_json(req: reqwest::RequestBuilder, what: &str) -> serde_json::Value {
    let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{what}: {status}: {text}");
    serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
}
