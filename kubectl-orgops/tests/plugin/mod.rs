//! Runs the plugin binary against the test control plane (shared by the plugin's e2e tests).

use std::process::{Command, Stdio};

use super::support::ControlPlane;

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// `kubectl-orgops ARGS` with the test cluster's kubeconfig and no stdin.
pub fn plugin(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-orgops"))
        .env("KUBECONFIG", &ControlPlane::ensure().kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl-orgops");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
