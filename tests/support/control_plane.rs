//! Finds or starts the control plane once per test binary and installs CRDs and RBAC.
use super::{run_kubectl, workspace_root};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The cluster the tests talk to (admin credentials).
#[derive(Debug)]
pub struct ControlPlane {
    /// Admin kubeconfig; tests and kubectl use it, the operator never does.
    pub kubeconfig: PathBuf,
}

static CONTROL_PLANE: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// Reuses a reachable control plane or runs `hack/control-plane/up` (under a file
    /// lock, so parallel test binaries do not race), then applies `crds/` and
    /// `deploy/rbac.yaml` with server-side apply. Panics with the reason on failure.
    pub fn ensure() -> &'static ControlPlane {
        CONTROL_PLANE.get_or_init(|| {
            let kubeconfig = find_or_start();
            install_crds_and_rbac(&kubeconfig);
            ControlPlane { kubeconfig }
        })
    }

    /// A kube client with admin credentials.
    pub async fn client(&self) -> kube::Client {
        client_for(&self.kubeconfig).await
    }
}

/// A kube client for any kubeconfig file (e.g. the operator's ServiceAccount one).
pub async fn client_for(kubeconfig: &Path) -> kube::Client {
    let raw = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config =
        kube::Config::from_custom_kubeconfig(raw, &kube::config::KubeConfigOptions::default())
            .await
            .expect("load kubeconfig");
    kube::Client::try_from(config).expect("build kube client")
}

fn use_existing_cluster() -> bool {
    std::env::var("ORGOPS_USE_EXISTING_CLUSTER").is_ok_and(|v| v == "1")
}

fn find_or_start() -> PathBuf {
    if use_existing_cluster() {
        // Only with the explicit switch do we touch whatever KUBECONFIG points at.
        let path = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .expect("ORGOPS_USE_EXISTING_CLUSTER=1 needs KUBECONFIG");
        assert!(
            readyz_ok(&path),
            "ORGOPS_USE_EXISTING_CLUSTER=1 but the cluster in {} does not answer /readyz",
            path.display()
        );
        return path;
    }
    // hack/control-plane/up's state directory: ORGOPS_CP_DIR when set (a control plane on
    // ports of its own), as hack/control-plane/common.sh reads it.
    let dir = std::env::var_os("ORGOPS_CP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/control-plane"));
    let local = dir.join("kubeconfig");
    if readyz_ok(&local) {
        return local;
    }
    let lock_path = dir.join(".up.lock");
    std::fs::create_dir_all(&dir).expect("create the control plane's directory");
    let lock = File::create(&lock_path).expect("create up lock file");
    lock.lock().expect("lock the control plane's .up.lock");
    // Another test binary may have started it while we waited for the lock.
    if !readyz_ok(&local) {
        let up = workspace_root().join("hack/control-plane/up");
        let out = Command::new(&up)
            .output()
            .expect("run hack/control-plane/up");
        assert!(
            out.status.success(),
            "hack/control-plane/up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(lock);
    assert!(
        readyz_ok(&local),
        "control plane is up but /readyz is not ok"
    );
    local
}

fn readyz_ok(kubeconfig: &Path) -> bool {
    if !kubeconfig.exists() {
        return false;
    }
    let out = run_kubectl(
        kubeconfig,
        &["get", "--raw", "/readyz", "--request-timeout=5s"],
        None,
    );
    out.status.success() && out.stdout == b"ok"
}

fn install_crds_and_rbac(kubeconfig: &Path) {
    let root = workspace_root();
    let ok = |args: &[&str], what: &str| {
        let out = run_kubectl(kubeconfig, args, None);
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let crds = root.join("crds");
    let has_crds = std::fs::read_dir(&crds)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        })
        .unwrap_or(false);
    let crds = crds.to_string_lossy().into_owned();
    let apply = |path: &str, what: &str| {
        ok(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=orgops-e2e",
                "-f",
                path,
            ],
            what,
        )
    };
    if has_crds {
        apply(&crds, "applying crds/");
        ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "-f",
                &crds,
            ],
            "waiting for the CRDs to be Established",
        );
    }
    // The RBAC file holds namespaced objects in orgops-system.
    let ns = run_kubectl(
        kubeconfig,
        &[
            "create",
            "namespace",
            "orgops-system",
            "--dry-run=client",
            "-o",
            "yaml",
        ],
        None,
    );
    assert!(ns.status.success(), "render orgops-system namespace");
    let out = run_kubectl(
        kubeconfig,
        &[
            "apply",
            "--server-side",
            "--field-manager=orgops-e2e",
            "-f",
            "-",
        ],
        Some(&String::from_utf8_lossy(&ns.stdout)),
    );
    assert!(
        out.status.success(),
        "creating namespace orgops-system failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    apply_rbac(kubeconfig);
}

/// Applies deploy/rbac.yaml again (before each operator start): the test control plane may
/// be shared by checkouts of other versions, whose test binaries apply their own copy.
pub fn reapply_rbac() {
    apply_rbac(&ControlPlane::ensure().kubeconfig);
}

fn apply_rbac(kubeconfig: &Path) {
    let rbac = workspace_root()
        .join("deploy/rbac.yaml")
        .to_string_lossy()
        .into_owned();
    let out = run_kubectl(
        kubeconfig,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=orgops-e2e",
            "-f",
            &rbac,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "applying deploy/rbac.yaml failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
