//! The root crate's e2e fixture (control plane, test namespace, simulator, operator under
//! its deploy/ RBAC), reused file by file; only the workspace paths differ here.
#![allow(dead_code, unused_imports)]

#[path = "../../../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../../../tests/support/env.rs"]
mod env;
#[path = "../../../tests/support/operator.rs"]
mod operator;
#[path = "../../../tests/support/sim.rs"]
mod sim;

pub use control_plane::ControlPlane;
pub use env::TestEnv;
pub use operator::Operator;
pub use sim::Sim;

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("kubectl-orgops lives inside the workspace")
        .to_path_buf()
}

pub fn log_dir() -> PathBuf {
    let dir = workspace_root().join("target/e2e-logs");
    std::fs::create_dir_all(&dir).expect("create target/e2e-logs");
    dir
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port");
    listener.local_addr().expect("local addr").port()
}

pub fn random_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

pub fn kubectl(args: &[&str]) -> Output {
    kubectl_with_stdin(args, None)
}

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

pub fn apply_yaml_ok(yaml: &str) {
    let out = kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml));
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n--- yaml ---\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kubectl_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let kubeconfig = ControlPlane::ensure().kubeconfig.clone();
    run_kubectl(&kubeconfig, args, stdin)
}

pub(crate) fn run_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl (is it installed?)");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("kubectl stdin");
        pipe.write_all(input.as_bytes())
            .expect("write kubectl stdin");
    }
    child.wait_with_output().expect("wait for kubectl")
}

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
