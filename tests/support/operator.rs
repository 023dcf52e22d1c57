//! The `orgops` binary as a child process, authenticated as a ServiceAccount that is
//! bound to exactly the ClusterRole and Role from deploy/rbac.yaml (never admin).
use super::{ControlPlane, TestEnv, free_port, kubectl, kubectl_ok, log_dir};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Name of the ServiceAccount `Operator::start` creates in the test namespace.
pub const OPERATOR_SA: &str = "orgops";

/// A running operator; SIGKILLed on drop, its bindings removed.
#[derive(Debug)]
pub struct Operator {
    child: Option<Child>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log_path: PathBuf,
    metrics_port: u16,
    binding: String,
    http: reqwest::Client,
}

pub fn orgops_bin() -> PathBuf {
    std::env::var_os("ORGOPS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_orgops")))
}

impl Operator {
    /// Creates the ServiceAccount and its bindings, mints a token with the TokenRequest
    /// API, writes a kubeconfig with it and runs
    /// `orgops run --namespaces=<ns> --metrics-addr=127.0.0.1:<free> --resync-interval=30s
    /// --leader-election=false <extra_args>` (a default is left out when `extra_args` sets
    /// the same flag; tests of leader election should also pass a unique `--lease-name`).
    pub async fn start(env: &TestEnv, extra_args: &[&str]) -> Operator {
        let binding = bind_service_account(&env.ns);
        let kubeconfig = write_token_kubeconfig(&env.ns);
        let metrics_port = free_port();
        let mut args: Vec<String> = vec!["run".into()];
        let mut default = |flag: &str, value: String| {
            let given = extra_args
                .iter()
                .any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
            if !given {
                args.push(format!("{flag}={value}"));
            }
        };
        default("--namespaces", env.ns.clone());
        default("--metrics-addr", format!("127.0.0.1:{metrics_port}"));
        default("--resync-interval", "30s".to_string());
        // Off unless asked: every test's operator would otherwise wait on one shared Lease.
        default("--leader-election", "false".to_string());
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let mut op = Operator {
            child: None,
            args,
            kubeconfig,
            log_path: log_dir().join(format!("{}-operator.log", env.ns)),
            metrics_port,
            binding,
            http: reqwest::Client::new(),
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let bin = orgops_bin();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open operator log");
        let child = Command::new(&bin)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone operator log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
    }

    /// A second replica of this operator: same arguments, ServiceAccount and kubeconfig, its
    /// own metrics port and log `<ns>-operator-<tag>.log`. Pass `--leader-election=true` and a
    /// `--lease-name` to the first so the two compete for one Lease.
    pub fn replica(&self, tag: &str) -> Operator {
        let mut op = self.replica_unstarted(tag);
        op.spawn();
        op
    }

    /// Another operator in this namespace with `flags` instead of the same flags of this
    /// one (e.g. a second shard: its own `--lease-name` and `--shard-selector`); other
    /// flags, the ServiceAccount and kubeconfig are this one's. Log `<ns>-operator-<tag>.log`.
    pub fn sibling(&self, tag: &str, flags: &[&str]) -> Operator {
        let mut op = self.replica_unstarted(tag);
        for flag in flags {
            let name = flag.split('=').next().unwrap_or(flag);
            op.args.retain(|a| a.split('=').next().unwrap_or(a) != name);
            op.args.push(flag.to_string());
        }
        op.spawn();
        op
    }

    fn replica_unstarted(&self, tag: &str) -> Operator {
        let metrics_port = free_port();
        let args = self
            .args
            .iter()
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    format!("--metrics-addr=127.0.0.1:{metrics_port}")
                } else {
                    a.clone()
                }
            })
            .collect();
        let stem = self
            .log_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "operator".into());
        Operator {
            child: None,
            args,
            kubeconfig: self.kubeconfig.clone(),
            log_path: self.log_path.with_file_name(format!("{stem}-{tag}.log")),
            metrics_port,
            binding: self.binding.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// A second replica as [`Operator::replica`] whose API server traffic goes to `server`
    /// (`https://127.0.0.1:<port>`, e.g. a [`super::ApiProxy`] the test can cut).
    pub fn replica_via(&self, tag: &str, server: &str) -> Operator {
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&self.kubeconfig).expect("read operator kubeconfig"),
        )
        .expect("operator kubeconfig JSON");
        if let Some(cluster) = config["clusters"].get_mut(0) {
            cluster["cluster"]["server"] = server.into();
        }
        let path = self.kubeconfig.with_extension(format!("{tag}.kubeconfig"));
        write_kubeconfig(&path, &config);
        let mut op = self.replica_unstarted(tag);
        op.kubeconfig = path;
        op.spawn();
        op
    }

    /// The API server URL of this operator's kubeconfig.
    pub fn server(&self) -> String {
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&self.kubeconfig).expect("read operator kubeconfig"),
        )
        .expect("operator kubeconfig JSON");
        config["clusters"][0]["cluster"]["server"]
            .as_str()
            .expect("kubeconfig server")
            .to_string()
    }

    /// True when this process's /metrics says it holds the leader Lease (`orgops_leader 1`).
    pub async fn is_leader(&self) -> bool {
        self.metrics()
            .await
            .lines()
            .any(|l| l.trim() == "orgops_leader 1")
    }

    /// SIGKILL, as a crash would (no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the process freezes as a long GC pause or a frozen node would, its sockets
    /// and timers untouched; `resume` lets it run on from where it stopped.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`Operator::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let out = std::process::Command::new("kill")
                .args([sig, &pid])
                .output()
                .expect("run kill");
            assert!(out.status.success(), "kill {sig} {pid}: {out:?}");
        }
    }

    /// Kills and starts again with the same arguments and credentials.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `127.0.0.1:<port>` the metrics endpoint listens on.
    pub fn metrics_addr(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    /// GET /metrics as text; an empty string while the endpoint is not up.
    pub async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        match self.http.get(&url).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Everything the operator printed so far (all restarts), for secret-leak checks.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log_path
    }

    /// The ServiceAccount kubeconfig the operator runs with.
    pub fn kubeconfig(&self) -> &PathBuf {
        &self.kubeconfig
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        let _ = kubectl(&[
            "delete",
            "clusterrolebinding",
            &self.binding,
            "--ignore-not-found",
        ]);
        let _ = kubectl(&[
            "delete",
            "rolebinding",
            "-n",
            "orgops-system",
            &self.binding,
            "--ignore-not-found",
        ]);
    }
}

/// Creates the ServiceAccount (if missing), a ClusterRoleBinding to ClusterRole `orgops`
/// and a RoleBinding to Role `orgops-leader-election`, both named `orgops-e2e-<ns>`.
pub fn bind_service_account(ns: &str) -> String {
    super::control_plane::reapply_rbac();
    let binding = format!("orgops-e2e-{ns}");
    let subject = format!("{ns}:{OPERATOR_SA}");
    let sa = kubectl(&["create", "serviceaccount", OPERATOR_SA, "-n", ns]);
    assert!(
        sa.status.success() || String::from_utf8_lossy(&sa.stderr).contains("AlreadyExists"),
        "create serviceaccount: {}",
        String::from_utf8_lossy(&sa.stderr)
    );
    kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole=orgops",
        &format!("--serviceaccount={subject}"),
    ]);
    kubectl_ok(&[
        "create",
        "rolebinding",
        &binding,
        "-n",
        "orgops-system",
        "--role=orgops-leader-election",
        &format!("--serviceaccount={subject}"),
    ]);
    binding
}

/// Mints a ServiceAccount token (TokenRequest API) and writes a kubeconfig that uses it
/// with the test cluster's server and CA.
pub fn write_token_kubeconfig(ns: &str) -> PathBuf {
    write_token_kubeconfig_for(ns, OPERATOR_SA)
}

/// As [`write_token_kubeconfig`], for the ServiceAccount `sa` of `ns`.
pub fn write_token_kubeconfig_for(ns: &str, sa: &str) -> PathBuf {
    let token = kubectl_ok(&["create", "token", sa, "-n", ns, "--duration=2h"]);
    let admin = ControlPlane::ensure()
        .kubeconfig
        .to_string_lossy()
        .into_owned();
    let view = kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "--flatten",
        "-o",
        "json",
        "--kubeconfig",
        &admin,
    ]);
    let mut config: serde_json::Value = serde_json::from_str(&view).expect("kubeconfig JSON");
    let user = serde_json::json!([{"name": "orgops", "user": {"token": token.trim()}}]);
    config["users"] = user;
    if let Some(ctx) = config["contexts"].get_mut(0) {
        ctx["context"]["user"] = "orgops".into();
    }
    let path = log_dir().join(format!("{ns}-{sa}.kubeconfig"));
    write_kubeconfig(&path, &config);
    path
}

/// Writes a kubeconfig holding a token: an owner-only file.
fn write_kubeconfig(path: &std::path::Path, config: &serde_json::Value) {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("create kubeconfig");
    serde_json::to_writer_pretty(file, config).expect("write kubeconfig");
}

/// A ClusterRole with get/list/watch on CustomerOrgs, OrgProviders, ParentWebhooks and Secrets only: what
/// `orgops plan` and `orgops import` need, and no write.
const READ_ONLY_ROLE: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: orgops-plan-e2e}
rules:
- apiGroups: [orgops.dev]
  resources: [customerorgs, orgproviders, parentwebhooks]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list]
"#;

/// A ServiceAccount of `ns` bound to the read-only role alone (not the operator's); its
/// kubeconfig.
pub fn read_only_kubeconfig(ns: &str) -> PathBuf {
    super::apply_yaml_ok(READ_ONLY_ROLE);
    kubectl_ok(&["create", "serviceaccount", "plan-reader", "-n", ns]);
    let binding = format!("orgops-plan-e2e-{ns}");
    let _ = kubectl(&[
        "delete",
        "clusterrolebinding",
        &binding,
        "--ignore-not-found",
    ]);
    kubectl_ok(&[
        "create",
        "clusterrolebinding",
        &binding,
        "--clusterrole=orgops-plan-e2e",
        &format!("--serviceaccount={ns}:plan-reader"),
    ]);
    write_token_kubeconfig_for(ns, "plan-reader")
}
