//! RBAC minimality: every rule in deploy/rbac.yaml is needed. Each case runs the real
//! operator (leader election on) bound to a copy of the ClusterRole `orgops` and the Role
//! `orgops-leader-election` with one rule (or one verb) removed, on the same small scenario,
//! and the case's test checks that the capability the rule grants is broken. The `full`
//! case, bound to the unchanged rules, shows the scenario exercises every capability.
//!
//! All cases run at once (one thread each) the first time any test here asks for a result,
//! so the file costs about one scenario's time.
mod support;

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::{
    OPERATOR_SA, Sim, TestEnv, apply_yaml_ok, free_port, kubectl, log_dir, workspace_root,
    write_token_kubeconfig,
};

/// Long enough for the full role to converge on a busy 2-core machine; the cases where
/// nothing should happen wait this long too.
const READY_WAIT: Duration = Duration::from_secs(45);
/// Time the full role gets to delete the Secret of a removed key.
const DELETE_WAIT: Duration = Duration::from_secs(20);
const LEASE_NS: &str = "orgops-system";

/// What one run of the scenario showed.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Ready=True for the current generation.
    ready: bool,
    /// The simulator holds an org for the CustomerOrg.
    org_created: bool,
    finalizer: bool,
    /// The operator wrote conditions (beyond the CRD's status default).
    status_written: bool,
    /// The Secret of key k1 exists.
    key_secret: bool,
    /// Events about the CustomerOrg.
    events: usize,
    /// After k2 was removed from the spec (only tried once Ready), its Secret went away.
    removed_key_secret_deleted: bool,
    log: String,
}

/// One binding of the scenario: the rules the operator gets.
struct Case {
    name: String,
    cluster_rules: Vec<Value>,
    lease_rules: Vec<Value>,
}

fn rbac_docs() -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join("deploy/rbac.yaml"))
        .expect("read deploy/rbac.yaml");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let yaml = serde_yaml::Value::deserialize(doc).expect("YAML document");
            serde_json::to_value(yaml).expect("YAML as JSON")
        })
        .collect()
}

fn rules_of(docs: &[Value], kind: &str, name: &str) -> Vec<Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .and_then(|d| d["rules"].as_array().cloned())
        .unwrap_or_else(|| panic!("deploy/rbac.yaml has no {kind} {name} with rules"))
}

fn resource_of(rule: &Value) -> String {
    rule["resources"][0]
        .as_str()
        .expect("rule resource")
        .replace('/', "_")
}

/// The full rules, then one case per rule removed, then the verb-level cases.
fn cases() -> Vec<Case> {
    let docs = rbac_docs();
    let cluster = rules_of(&docs, "ClusterRole", "orgops");
    let lease = rules_of(&docs, "Role", "orgops-leader-election");
    let mut out = vec![Case {
        name: "full".into(),
        cluster_rules: cluster.clone(),
        lease_rules: lease.clone(),
    }];
    for i in 0..cluster.len() {
        let mut rules = cluster.clone();
        let removed = rules.remove(i);
        out.push(Case {
            name: resource_of(&removed),
            cluster_rules: rules,
            lease_rules: lease.clone(),
        });
    }
    for i in 0..lease.len() {
        let mut rules = lease.clone();
        let removed = rules.remove(i);
        out.push(Case {
            name: resource_of(&removed),
            cluster_rules: cluster.clone(),
            lease_rules: rules,
        });
    }
    for (resource, verb) in [
        ("customerorgs", "patch"),
        ("secrets", "create"),
        ("secrets", "delete"),
    ] {
        let rules: Vec<Value> = cluster
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r["resources"][0] == resource {
                    let verbs: Vec<Value> = r["verbs"]
                        .as_array()
                        .expect("verbs")
                        .iter()
                        .filter(|v| *v != verb)
                        .cloned()
                        .collect();
                    assert_ne!(
                        verbs.len(),
                        r["verbs"].as_array().map_or(0, Vec::len),
                        "{resource} has no verb {verb} in deploy/rbac.yaml"
                    );
                    r["verbs"] = Value::Array(verbs);
                }
                r
            })
            .collect();
        out.push(Case {
            name: format!("{resource}_{verb}"),
            cluster_rules: rules,
            lease_rules: lease.clone(),
        });
    }
    out
}

/// The operator process bound to the reduced roles; killed on drop.
struct Running {
    child: Child,
    log_path: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn corg_yaml(ns: &str, provider: &str, keys: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrg\nmetadata: {{name: acme, namespace: {ns}}}\nspec:\n  providerRef: {{name: {provider}}}\n  displayName: Acme Coffee\n  externalId: {ns}-acme\n  credits: {{allocated: 100}}\n  apiKeys:\n"
    );
    for key in keys {
        yaml.push_str(&format!("  - name: {key}\n    scopes: [content:read]\n"));
    }
    yaml
}

fn exists(env: &TestEnv, args: &[&str]) -> bool {
    env.kubectl(args).status.success()
}

fn corg(env: &TestEnv) -> Value {
    let out = env.kubectl(&["get", "customerorg", "acme", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn is_ready(v: &Value) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"] == v["metadata"]["generation"]
        })
    })
}

async fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if check() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Creates the reduced roles and their bindings for the ServiceAccount of `ns`.
fn bind(ns: &str, name: &str, case: &Case) {
    let sa = kubectl(&["create", "serviceaccount", OPERATOR_SA, "-n", ns]);
    assert!(sa.status.success(), "create serviceaccount");
    let subject = json!([{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": ns}]);
    let list = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": name}, "rules": case.cluster_rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": name}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
             "metadata": {"name": name, "namespace": LEASE_NS}, "rules": case.lease_rules},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
             "metadata": {"name": name, "namespace": LEASE_NS}, "subjects": subject,
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}},
        ]
    });
    apply_yaml_ok(&list.to_string());
}

fn unbind(name: &str) {
    for (kind, ns) in [
        ("clusterrolebinding", None),
        ("clusterrole", None),
        ("rolebinding", Some(LEASE_NS)),
        ("role", Some(LEASE_NS)),
        ("lease", Some(LEASE_NS)),
    ] {
        let mut args = vec!["delete", kind, name, "--ignore-not-found", "--wait=false"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let _ = kubectl(&args);
    }
}

fn start_operator(ns: &str, name: &str) -> Running {
    let kubeconfig = write_token_kubeconfig(ns);
    let log_path = log_dir().join(format!("{ns}-operator.log"));
    let log = File::create(&log_path).expect("create operator log");
    let bin = std::env::var_os("ORGOPS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_orgops")));
    let child = Command::new(&bin)
        .args([
            "run",
            &format!("--namespaces={ns}"),
            &format!("--metrics-addr=127.0.0.1:{}", free_port()),
            "--resync-interval=5s",
            "--leader-election=true",
            &format!("--lease-namespace={LEASE_NS}"),
            &format!("--lease-name={name}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    Running { child, log_path }
}

/// The scenario: apply a CustomerOrg with keys k1 and k2, wait for Ready, look at what the
/// operator did; once Ready, drop k2 from the spec and wait for its Secret to go.
async fn run_case(case: &Case) -> Seen {
    let env = TestEnv::new(&format!("rbac-{}", case.name.replace('_', "-"))).await;
    let ns = env.ns.clone();
    let name = format!("orgops-rbac-{ns}");
    let provider = format!("p-{ns}");
    let sim = Sim::start(&[]);
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "parent-key",
        &format!("--from-literal=apiKey={}", sim.parent_key()),
    ]);
    apply_yaml_ok(&format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: OrgProvider\nmetadata: {{name: {provider}}}\nspec:\n  type: layers\n  baseUrl: {url}\n  credentialsSecretRef: {{namespace: {ns}, name: parent-key, key: apiKey}}\n",
        url = sim.base_url()
    ));
    bind(&ns, &name, case);
    let op = start_operator(&ns, &name);
    apply_yaml_ok(&corg_yaml(&ns, &provider, &["k1", "k2"]));

    let ready = poll(READY_WAIT, || is_ready(&corg(&env))).await;
    let mut seen = Seen {
        ready,
        ..Seen::default()
    };
    let v = corg(&env);
    seen.finalizer = v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "orgops.dev/offboard"));
    seen.status_written = v["status"]["conditions"]
        .as_array()
        .is_some_and(|c| !c.is_empty());
    seen.org_created = sim.state().await["orgs"]
        .as_array()
        .is_some_and(|o| !o.is_empty());
    seen.key_secret = exists(&env, &["get", "secret", "acme-k1"]);
    let events = env.kubectl_ok(&[
        "get",
        "events.events.k8s.io",
        "--field-selector=regarding.name=acme",
        "-o",
        "json",
    ]);
    seen.events = serde_json::from_str::<Value>(&events)
        .ok()
        .and_then(|e| e["items"].as_array().map(Vec::len))
        .unwrap_or(0);
    if ready && exists(&env, &["get", "secret", "acme-k2"]) {
        apply_yaml_ok(&corg_yaml(&ns, &provider, &["k1"]));
        seen.removed_key_secret_deleted =
            poll(DELETE_WAIT, || !exists(&env, &["get", "secret", "acme-k2"])).await;
    }
    seen.log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    drop(op);
    let _ = kubectl(&["delete", "orgprovider", &provider, "--ignore-not-found"]);
    unbind(&name);
    env.cleanup().await;
    seen
}

/// Cases that must run with no other operator alive: every operator writes every
/// OrgProvider's status, so another one would write it first and hide the refusal.
const ALONE: &[&str] = &["orgproviders_status"];

fn spawn_case(case: Case) -> (String, std::thread::JoinHandle<Seen>) {
    let name = case.name.clone();
    let handle = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(run_case(&case))
    });
    (name, handle)
}

fn join_case(
    (name, handle): (String, std::thread::JoinHandle<Seen>),
) -> (String, Result<Seen, String>) {
    let result = handle.join().map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "scenario panicked".into())
    });
    (name, result)
}

/// Every case's result, computed once for all tests of this file: the shared cases in
/// parallel, then each `ALONE` case by itself.
fn results() -> &'static HashMap<String, Result<Seen, String>> {
    static RESULTS: OnceLock<HashMap<String, Result<Seen, String>>> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let (alone, shared): (Vec<Case>, Vec<Case>) = cases()
            .into_iter()
            .partition(|c| ALONE.contains(&c.name.as_str()));
        let handles: Vec<_> = shared.into_iter().map(spawn_case).collect();
        let mut results: HashMap<_, _> = handles.into_iter().map(join_case).collect();
        for case in alone {
            let (name, result) = join_case(spawn_case(case));
            results.insert(name, result);
        }
        results
    })
}

/// The case's result; the full role's, too, must show that the scenario works.
#[track_caller]
fn case(name: &str) -> &'static Seen {
    match results().get(name) {
        Some(Ok(seen)) => seen,
        Some(Err(panic)) => panic!("case {name}: the scenario failed to run: {panic}"),
        None => panic!("no case {name}: does deploy/rbac.yaml still have that rule?"),
    }
}

/// The operator's log shows the apiserver refusing `resource` (its access path broke, not
/// something else).
#[track_caller]
fn assert_refused(seen: &Seen, resource: &str) {
    let needle = format!("resource \\\"{resource}\\\"");
    let plain = format!("resource \"{resource}\"");
    assert!(
        seen.log.contains(&needle) || seen.log.contains(&plain),
        "the operator's log never shows {resource} being forbidden:\n{}",
        seen.log
    );
}

#[test]
fn rbac_full_role_exercises_every_capability() {
    let s = case("full");
    assert!(s.ready, "Ready with the full role: {s:#?}");
    assert!(s.org_created && s.finalizer && s.status_written && s.key_secret);
    assert!(s.events > 0, "Events recorded");
    assert!(s.removed_key_secret_deleted, "removed key's Secret deleted");
    assert!(
        !s.log.contains("forbidden"),
        "the full role is refused something:\n{}",
        s.log
    );
}

#[test]
fn rbac_customerorgs() {
    let s = case("customerorgs");
    assert_refused(s, "customerorgs");
    assert!(!s.org_created, "nothing reconciled without customerorgs");
    assert!(!s.finalizer && !s.status_written);
}

#[test]
fn rbac_customerorgs_patch() {
    let s = case("customerorgs_patch");
    assert_refused(s, "customerorgs");
    assert!(!s.finalizer, "finalizer added without patch");
    // The finalizer comes before the first provider write.
    assert!(!s.org_created, "an org was created without a finalizer");
}

#[test]
fn rbac_customerorgs_status() {
    let s = case("customerorgs_status");
    assert_refused(s, "customerorgs/status");
    assert!(
        s.org_created,
        "the org is still created: only status breaks"
    );
    assert!(
        !s.status_written,
        "status written without customerorgs/status"
    );
}

#[test]
fn rbac_orgproviders() {
    let s = case("orgproviders");
    assert_refused(s, "orgproviders");
    assert!(
        !s.org_created,
        "an org was created without reading OrgProviders"
    );
}

#[test]
fn rbac_orgproviders_status() {
    // Every operator in the cluster writes every OrgProvider's status, so the proof is this
    // operator's refused write; the CustomerOrg still converges.
    let s = case("orgproviders_status");
    assert_refused(s, "orgproviders/status");
    assert!(
        s.ready,
        "CustomerOrgs do not depend on writing provider status"
    );
}

#[test]
fn rbac_secrets() {
    let s = case("secrets");
    assert_refused(s, "secrets");
    assert!(
        !s.org_created,
        "credentials were read without secrets access"
    );
    assert!(!s.key_secret);
}

#[test]
fn rbac_secrets_create() {
    let s = case("secrets_create");
    assert_refused(s, "secrets");
    assert!(s.org_created, "the org is still created");
    assert!(!s.key_secret, "a new Secret was written without create");
}

#[test]
fn rbac_secrets_delete() {
    let s = case("secrets_delete");
    assert!(s.ready, "converges without delete: {s:#?}");
    assert!(
        !s.removed_key_secret_deleted,
        "a removed key's Secret was deleted without delete"
    );
    assert_refused(s, "secrets");
}

#[test]
fn rbac_events() {
    let s = case("events");
    assert_refused(s, "events");
    assert!(s.ready, "converges without Events");
    assert_eq!(s.events, 0, "Events recorded without events create");
}

#[test]
fn rbac_leases() {
    let s = case("leases");
    assert_refused(s, "leases");
    assert!(
        !s.org_created && !s.finalizer && !s.status_written,
        "something was reconciled without the leader Lease"
    );
}
