//! RBAC minimality, in both install modes: every rule in deploy/rbac.yaml (cluster-wide) and
//! in deploy/overlays/namespaced/rbac.yaml (namespaced) is needed. Each case runs the real
//! operator (leader election on) bound to a copy of one mode's roles with one rule (or one
//! verb) removed, on the same small scenario, and the case's test checks that the capability
//! the rule grants is broken. The `full` and `ns_full` cases, bound to the unchanged rules,
//! show the scenario exercises every capability. Namespaced cases (`ns_*`) put the CustomerOrg
//! in one namespace (Role `orgops`) and the operator's Lease and provider credentials in
//! another (Roles `orgops-credentials`, `orgops-leader-election`), as the overlay installs it.
//! `namespaced_install_*` installs the overlay's RBAC itself and checks what the operator can
//! and cannot reach.
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
    OPERATOR_SA, Sim, TestEnv, apply_yaml_ok, create_namespace_without_finalizer_policy, free_port,
    kubectl, kubectl_ok, log_dir, workspace_root, write_token_kubeconfig,
};

/// Long enough for the full role to converge on a busy 2-core machine: the most any wait
/// of a case takes (each ends on its condition).
const READY_WAIT: Duration = Duration::from_secs(45);
/// Time the full role gets to delete the Secret of a removed key.
const DELETE_WAIT: Duration = Duration::from_secs(20);
/// A case the operator's refusal stopped: after the refusal is logged, nothing the scenario
/// looks at (both objects, the namespace's Secrets, the provider's state) changes for this
/// long. Longer than the operator's first retries (1, 2, 4 s), which change nothing.
const QUIET: Duration = Duration::from_secs(10);
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
    /// The ParentWebhook `hook`: Ready at its generation.
    pwh_ready: bool,
    /// The simulator holds an endpoint on the parent org.
    pwh_endpoint: bool,
    pwh_finalizer: bool,
    pwh_status_written: bool,
    /// Its signing Secret exists.
    pwh_secret: bool,
    /// Once Ready, the CustomerOrg held a claim (a Lease in the operator's namespace).
    claim_made: bool,
    /// After the CustomerOrg was deleted (only tried once Ready), its claims went with it.
    claim_released: bool,
    log: String,
}

/// One binding of the scenario: the rules the operator gets.
#[derive(Clone)]
struct Case {
    name: String,
    /// ClusterRole (cluster-wide mode: everything; namespaced: OrgProviders only).
    cluster_rules: Vec<Value>,
    lease_rules: Vec<Value>,
    /// Namespaced mode: the Roles in the CustomerOrg's and in the operator's namespace.
    namespaced: Option<NsRules>,
}

#[derive(Clone)]
struct NsRules {
    watched: Vec<Value>,
    credentials: Vec<Value>,
}

const NAMESPACED_RBAC: &str = "deploy/overlays/namespaced/rbac.yaml";

fn rbac_docs() -> Vec<Value> {
    yaml_docs("deploy/rbac.yaml")
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace_root().join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"));
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
        .unwrap_or_else(|| panic!("the RBAC file has no {kind} {name} with rules"))
}

/// `rules` without the verb `verb` of the rule for `resource` (which must have it).
fn without_verb(rules: &[Value], resource: &str, verb: &str) -> Vec<Value> {
    rules
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
                    "{resource} has no verb {verb}"
                );
                r["verbs"] = Value::Array(verbs);
            }
            r
        })
        .collect()
}

/// Every rule list with one rule removed: (name of the removed rule's resource, rest).
fn each_removed(rules: &[Value]) -> Vec<(String, Vec<Value>)> {
    (0..rules.len())
        .map(|i| {
            let mut rest = rules.to_vec();
            let removed = rest.remove(i);
            (resource_of(&removed), rest)
        })
        .collect()
}

/// The namespaced-mode cases: `ns_full`, one per rule of each Role/ClusterRole removed, and
/// the verb-level cases.
fn namespaced_cases() -> Vec<Case> {
    let docs = yaml_docs(NAMESPACED_RBAC);
    let full = Case {
        name: "ns_full".into(),
        cluster_rules: rules_of(&docs, "ClusterRole", "orgops-providers"),
        lease_rules: rules_of(&docs, "Role", "orgops-leader-election"),
        namespaced: Some(NsRules {
            watched: rules_of(&docs, "Role", "orgops"),
            credentials: rules_of(&docs, "Role", "orgops-credentials"),
        }),
    };
    let ns = full.namespaced.clone().expect("namespaced rules");
    let mut out = vec![full.clone()];
    for (resource, rest) in each_removed(&full.cluster_rules) {
        let mut c = full.clone();
        c.name = format!("ns_{resource}");
        c.cluster_rules = rest;
        out.push(c);
    }
    for (resource, rest) in each_removed(&full.lease_rules) {
        let mut c = full.clone();
        c.name = format!("ns_{resource}");
        c.lease_rules = rest;
        out.push(c);
    }
    for (resource, rest) in each_removed(&ns.watched) {
        let mut c = full.clone();
        c.name = format!("ns_{resource}");
        c.namespaced = Some(NsRules {
            watched: rest,
            credentials: ns.credentials.clone(),
        });
        out.push(c);
    }
    for (resource, rest) in each_removed(&ns.credentials) {
        let mut c = full.clone();
        c.name = format!("ns_credentials_{resource}");
        c.namespaced = Some(NsRules {
            watched: ns.watched.clone(),
            credentials: rest,
        });
        out.push(c);
    }
    for (resource, verb) in [
        ("customerorgs", "patch"),
        ("parentwebhooks", "patch"),
        ("secrets", "create"),
        ("secrets", "delete"),
    ] {
        let mut c = full.clone();
        c.name = format!("ns_{resource}_{verb}");
        c.namespaced = Some(NsRules {
            watched: without_verb(&ns.watched, resource, verb),
            credentials: ns.credentials.clone(),
        });
        out.push(c);
    }
    for verb in ["list", "delete"] {
        let mut c = full.clone();
        c.name = format!("ns_leases_{verb}");
        c.lease_rules = without_verb(&full.lease_rules, "leases", verb);
        out.push(c);
    }
    out
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
        namespaced: None,
    }];
    for (name, rules) in each_removed(&cluster) {
        out.push(Case {
            name,
            cluster_rules: rules,
            lease_rules: lease.clone(),
            namespaced: None,
        });
    }
    for (name, rules) in each_removed(&lease) {
        out.push(Case {
            name,
            cluster_rules: cluster.clone(),
            lease_rules: rules,
            namespaced: None,
        });
    }
    for (resource, verb) in [
        ("customerorgs", "patch"),
        ("parentwebhooks", "patch"),
        ("secrets", "create"),
        ("secrets", "delete"),
    ] {
        out.push(Case {
            name: format!("{resource}_{verb}"),
            cluster_rules: without_verb(&cluster, resource, verb),
            lease_rules: lease.clone(),
            namespaced: None,
        });
    }
    for verb in ["list", "delete"] {
        out.push(Case {
            name: format!("leases_{verb}"),
            cluster_rules: cluster.clone(),
            lease_rules: without_verb(&lease, "leases", verb),
            namespaced: None,
        });
    }
    out
}

/// The operator process bound to the reduced roles; killed on drop.
struct Running {
    child: Child,
    log_path: PathBuf,
    /// Metrics, /healthz and /readyz.
    port: u16,
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

fn pwh_yaml(ns: &str, provider: &str) -> String {
    format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: ParentWebhook\nmetadata: {{name: hook, namespace: {ns}}}\nspec:\n  providerRef: {{name: {provider}}}\n  url: https://hooks.example.com/{ns}\n  events: [post.published]\n"
    )
}

fn pwh(env: &TestEnv) -> Value {
    let out = env.kubectl(&["get", "parentwebhook", "hook", "-o", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
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

/// How many refusals (`forbidden`) the operator has logged so far.
fn refusals(op: &Running) -> usize {
    std::fs::read_to_string(&op.log_path)
        .unwrap_or_default()
        .matches("forbidden")
        .count()
}

/// Everything a case's operator can change that the scenario looks at (the provider's
/// state without its clock and the keys' `lastUsedAt`, which every read moves).
async fn snapshot(env: &TestEnv, sim: &Sim) -> String {
    fn unstamped(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("lastUsedAt");
                map.remove("clock");
                map.values_mut().for_each(unstamped);
            }
            Value::Array(items) => items.iter_mut().for_each(unstamped),
            _ => {}
        }
    }
    let version = |v: Value| v["metadata"]["resourceVersion"].to_string();
    let secrets = env.kubectl(&["get", "secrets", "-o", "name"]);
    let mut state = sim.state().await;
    unstamped(&mut state);
    format!(
        "{} {} {} {state}",
        version(corg(env)),
        version(pwh(env)),
        String::from_utf8_lossy(&secrets.stdout),
    )
}

/// Waits until the CustomerOrg and the ParentWebhook are both Ready, or the operator has
/// logged a refusal and nothing changed for `QUIET` since (the refusal stopped it),
/// `READY_WAIT` at most. Returns whether each is Ready.
async fn settle(env: &TestEnv, sim: &Sim, op: &Running) -> (bool, bool) {
    let start = Instant::now();
    let mut last = String::new();
    let mut since = Instant::now();
    loop {
        let ready = (is_ready(&corg(env)), is_ready(&pwh(env)));
        if ready == (true, true) || start.elapsed() >= READY_WAIT {
            return ready;
        }
        let now = snapshot(env, sim).await;
        if now != last {
            last = now;
            since = Instant::now();
        } else if refusals(op) > 0 && since.elapsed() >= QUIET {
            return ready;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
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

/// A Role (or ClusterRole when `ns` is None) named `name` with `rules`, bound to `subject`.
fn role_and_binding(name: &str, ns: Option<&str>, rules: &[Value], subject: &Value) -> [Value; 2] {
    let (kind, meta) = match ns {
        Some(ns) => ("Role", json!({"name": name, "namespace": ns})),
        None => ("ClusterRole", json!({"name": name})),
    };
    [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
               "metadata": meta, "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": format!("{kind}Binding"),
               "metadata": meta, "subjects": subject,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}}),
    ]
}

/// Creates the ServiceAccount in `sa_ns` and the case's reduced roles and bindings: the
/// ClusterRole; the leader-election Role in `lease_ns`; in namespaced mode the Role for
/// CustomerOrgs in `ns` and the credentials Role in `lease_ns` (the operator's namespace).
fn bind(ns: &str, sa_ns: &str, lease_ns: &str, name: &str, case: &Case) {
    let sa = kubectl(&["create", "serviceaccount", OPERATOR_SA, "-n", sa_ns]);
    assert!(sa.status.success(), "create serviceaccount");
    let subject = json!([{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": sa_ns}]);
    let mut items = Vec::new();
    items.extend(role_and_binding(name, None, &case.cluster_rules, &subject));
    items.extend(role_and_binding(
        name,
        Some(lease_ns),
        &case.lease_rules,
        &subject,
    ));
    if let Some(nsr) = &case.namespaced {
        items.extend(role_and_binding(name, Some(ns), &nsr.watched, &subject));
        let creds = format!("{name}-credentials");
        items.extend(role_and_binding(
            &creds,
            Some(lease_ns),
            &nsr.credentials,
            &subject,
        ));
    }
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    apply_yaml_ok(&list.to_string());
}

fn unbind(name: &str, lease_ns: &str) {
    let creds = format!("{name}-credentials");
    for (kind, obj, ns) in [
        ("clusterrolebinding", name, None),
        ("clusterrole", name, None),
        ("rolebinding", name, Some(lease_ns)),
        ("role", name, Some(lease_ns)),
        ("rolebinding", creds.as_str(), Some(lease_ns)),
        ("role", creds.as_str(), Some(lease_ns)),
        ("lease", name, Some(lease_ns)),
    ] {
        let mut args = vec!["delete", kind, obj, "--ignore-not-found", "--wait=false"];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let _ = kubectl(&args);
    }
}

/// The operator as the ServiceAccount of `sa_ns`, watching `namespaces`, its Lease (and, in
/// namespaced mode, its provider credentials) in `own_ns` ($POD_NAMESPACE, as in a pod).
fn start_operator(sa_ns: &str, namespaces: &str, own_ns: &str, lease: &str) -> Running {
    let kubeconfig = write_token_kubeconfig(sa_ns);
    let log_path = log_dir().join(format!("{sa_ns}-{lease}-operator.log"));
    let log = File::create(&log_path).expect("create operator log");
    let bin = std::env::var_os("ORGOPS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_orgops")));
    let port = free_port();
    let child = Command::new(&bin)
        .args([
            "run",
            &format!("--namespaces={namespaces}"),
            &format!("--metrics-addr=127.0.0.1:{port}"),
            "--resync-interval=5s",
            "--leader-election=true",
            &format!("--lease-namespace={own_ns}"),
            &format!("--lease-name={lease}"),
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", own_ns)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    Running {
        child,
        log_path,
        port,
    }
}

/// The scenario: apply a CustomerOrg with keys k1 and k2, wait for Ready, look at what the
/// operator did; once Ready, drop k2 from the spec and wait for its Secret to go.
async fn run_case(case: &Case) -> Seen {
    // Without the finalizer policy: each case shows what the operator itself does (the
    // finalizer patch comes before the first provider write).
    let env =
        TestEnv::without_finalizer_policy(&format!("rbac-{}", case.name.replace('_', "-"))).await;
    let ns = env.ns.clone();
    let name = format!("orgops-rbac-{ns}");
    let provider = format!("p-{ns}");
    // Namespaced mode: the operator's own namespace holds its Lease and the credentials.
    let own_ns = case.namespaced.as_ref().map(|_| format!("{ns}-sys"));
    if let Some(own) = &own_ns {
        kubectl_ok(&["create", "namespace", own]);
    }
    let lease_ns = own_ns.clone().unwrap_or_else(|| LEASE_NS.to_string());
    let creds_ns = own_ns.clone().unwrap_or_else(|| ns.clone());
    let sim = Sim::start(&[]);
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "parent-key",
        "-n",
        &creds_ns,
        &format!("--from-literal=apiKey={}", sim.parent_key()),
    ]);
    apply_yaml_ok(&format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: OrgProvider\nmetadata: {{name: {provider}}}\nspec:\n  type: layers\n  baseUrl: {url}\n  credentialsSecretRef: {{namespace: {creds_ns}, name: parent-key, key: apiKey}}\n",
        url = sim.base_url()
    ));
    bind(&ns, &ns, &lease_ns, &name, case);
    let op = start_operator(&ns, &ns, &lease_ns, &name);
    apply_yaml_ok(&corg_yaml(&ns, &provider, &["k1", "k2"]));
    apply_yaml_ok(&pwh_yaml(&ns, &provider));

    let case_started = Instant::now();
    let (ready, pwh_ready) = settle(&env, &sim, &op).await;
    eprintln!(
        "rbac case {}: settled in {:.0}s (Ready {ready}, ParentWebhook Ready {pwh_ready})",
        case.name,
        case_started.elapsed().as_secs_f64()
    );
    let mut seen = Seen {
        ready,
        pwh_ready,
        ..Seen::default()
    };
    let h = pwh(&env);
    seen.pwh_finalizer = h["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|f| f == "orgops.dev/delete-endpoint"));
    seen.pwh_status_written = h["status"]["conditions"]
        .as_array()
        .is_some_and(|c| !c.is_empty());
    let state = sim.state().await;
    seen.pwh_endpoint = state["webhookEndpoints"].as_array().is_some_and(|eps| {
        eps.iter()
            .any(|e| e["organizationId"] == state["parent"]["orgId"])
    });
    seen.pwh_secret = exists(&env, &["get", "secret", "hook-signing-secret"]);
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
        let before = refusals(&op);
        apply_yaml_ok(&corg_yaml(&ns, &provider, &["k1"]));
        // Gone, or refused (then it stays).
        poll(DELETE_WAIT, || {
            !exists(&env, &["get", "secret", "acme-k2"]) || refusals(&op) > before
        })
        .await;
        seen.removed_key_secret_deleted = !exists(&env, &["get", "secret", "acme-k2"]);
    }
    if ready {
        // Claims: made before the create (externalId), released with the object.
        let uid = v["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let claims = || {
            let out = kubectl(&[
                "get",
                "leases",
                "-n",
                &lease_ns,
                "-l",
                &format!("orgops.dev/claim-owner-uid={uid}"),
                "-o",
                "name",
            ]);
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        seen.claim_made = !claims().is_empty();
        let before = refusals(&op);
        let _ = env.kubectl(&["delete", "customerorg", "acme", "--wait=false"]);
        // Gone, or refused (the claims or the finalizer then stay).
        poll(DELETE_WAIT, || {
            !exists(&env, &["get", "customerorg", "acme"]) || refusals(&op) > before
        })
        .await;
        let gone = !exists(&env, &["get", "customerorg", "acme"]);
        seen.claim_released = gone && claims().is_empty();
    }
    seen.log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    drop(op);
    let _ = kubectl(&["delete", "orgprovider", &provider, "--ignore-not-found"]);
    unbind(&name, &lease_ns);
    if let Some(own) = &own_ns {
        let _ = kubectl(&["delete", "namespace", own, "--wait=false"]);
    }
    env.cleanup().await;
    seen
}

/// Cases that must run with no other operator alive: every operator writes every
/// OrgProvider's status, so another one would write it first and hide the refusal.
const ALONE: &[&str] = &["orgproviders_status", "ns_orgproviders_status"];

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

/// Every case's result, computed once for all tests of this file: the shared cases of each
/// mode in parallel (one mode after the other, to keep the 2-core machine responsive), then
/// each `ALONE` case by itself.
fn results() -> &'static HashMap<String, Result<Seen, String>> {
    static RESULTS: OnceLock<HashMap<String, Result<Seen, String>>> = OnceLock::new();
    RESULTS.get_or_init(|| {
        let (alone, shared): (Vec<Case>, Vec<Case>) = cases()
            .into_iter()
            .chain(namespaced_cases())
            .partition(|c| ALONE.contains(&c.name.as_str()));
        let (namespaced, cluster): (Vec<Case>, Vec<Case>) =
            shared.into_iter().partition(|c| c.namespaced.is_some());
        let mut results = HashMap::new();
        for batch in [cluster, namespaced] {
            let handles: Vec<_> = batch.into_iter().map(spawn_case).collect();
            results.extend(handles.into_iter().map(join_case));
        }
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
        None => panic!("no case {name}: does the RBAC file still have that rule?"),
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

// Each check runs for the cluster-wide case and its namespaced twin (`ns_` prefix).

fn full_role_exercises_every_capability(name: &str) {
    let s = case(name);
    assert!(s.ready, "Ready with the full role: {s:#?}");
    assert!(s.org_created && s.finalizer && s.status_written && s.key_secret);
    assert!(s.events > 0, "Events recorded");
    assert!(s.removed_key_secret_deleted, "removed key's Secret deleted");
    assert!(
        s.claim_made && s.claim_released,
        "a claim made before the create and released on deletion: {s:#?}"
    );
    assert!(
        s.pwh_ready && s.pwh_endpoint && s.pwh_finalizer && s.pwh_status_written && s.pwh_secret,
        "ParentWebhook with the full role: {s:#?}"
    );
    assert!(
        !s.log.contains("forbidden"),
        "the full role is refused something:\n{}",
        s.log
    );
    assert!(
        !s.log.contains("lacks permissions"),
        "the start-up check reports a missing permission with the full role:\n{}",
        s.log
    );
}

fn customerorgs(name: &str) {
    let s = case(name);
    assert_refused(s, "customerorgs");
    assert!(!s.org_created, "nothing reconciled without customerorgs");
    assert!(!s.finalizer && !s.status_written);
}

fn customerorgs_patch(name: &str) {
    let s = case(name);
    assert_refused(s, "customerorgs");
    assert!(!s.finalizer, "finalizer added without patch");
    // The finalizer comes before the first provider write.
    assert!(!s.org_created, "an org was created without a finalizer");
}

fn customerorgs_status(name: &str) {
    let s = case(name);
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

fn orgproviders(name: &str) {
    let s = case(name);
    assert_refused(s, "orgproviders");
    assert!(
        !s.org_created,
        "an org was created without reading OrgProviders"
    );
    assert!(
        !s.pwh_endpoint,
        "an endpoint was created without OrgProviders"
    );
}

fn parentwebhooks(name: &str) {
    let s = case(name);
    assert_refused(s, "parentwebhooks");
    assert!(
        !s.pwh_endpoint && !s.pwh_finalizer && !s.pwh_status_written,
        "a ParentWebhook was reconciled without parentwebhooks: {s:#?}"
    );
    assert!(s.ready, "CustomerOrgs do not depend on ParentWebhooks");
}

fn parentwebhooks_patch(name: &str) {
    let s = case(name);
    assert_refused(s, "parentwebhooks");
    assert!(!s.pwh_finalizer, "finalizer added without patch");
    // The finalizer comes before the first provider write.
    assert!(
        !s.pwh_endpoint,
        "an endpoint was created without a finalizer"
    );
}

fn parentwebhooks_status(name: &str) {
    let s = case(name);
    assert_refused(s, "parentwebhooks/status");
    assert!(
        s.pwh_endpoint && s.pwh_secret,
        "the endpoint is still created"
    );
    assert!(
        !s.pwh_status_written,
        "status written without parentwebhooks/status"
    );
}

fn orgproviders_status(name: &str) {
    // Every operator in the cluster writes every OrgProvider's status, so the proof is this
    // operator's refused write; the CustomerOrg still converges.
    let s = case(name);
    assert_refused(s, "orgproviders/status");
    assert!(
        s.ready,
        "CustomerOrgs do not depend on writing provider status"
    );
}

fn secrets_create(name: &str) {
    let s = case(name);
    assert_refused(s, "secrets");
    assert!(s.org_created, "the org is still created");
    assert!(!s.key_secret, "a new Secret was written without create");
}

fn secrets_delete(name: &str) {
    let s = case(name);
    assert!(s.ready, "converges without delete: {s:#?}");
    assert!(
        !s.removed_key_secret_deleted,
        "a removed key's Secret was deleted without delete"
    );
    assert_refused(s, "secrets");
}

fn events(name: &str) {
    let s = case(name);
    assert_refused(s, "events");
    assert!(s.ready, "converges without Events");
    assert_eq!(s.events, 0, "Events recorded without events create");
}

/// Without `list` or `delete` on Leases, a deleted object's claims stay behind (the
/// object still goes: a claim whose owner is gone is taken over by the next claimant).
fn leases_verb(name: &str) {
    let s = case(name);
    assert_refused(s, "leases");
    assert!(s.ready, "converges without releasing claims: {s:#?}");
    assert!(s.claim_made, "the claim was made: {s:#?}");
    assert!(!s.claim_released, "claims released without the verb");
}

fn leases(name: &str) {
    let s = case(name);
    assert_refused(s, "leases");
    assert!(
        !s.org_created && !s.finalizer && !s.status_written,
        "something was reconciled without the leader Lease"
    );
    assert!(
        !s.pwh_endpoint && !s.pwh_finalizer,
        "a ParentWebhook was reconciled without the leader Lease"
    );
}

#[test]
fn rbac_full_role_exercises_every_capability() {
    full_role_exercises_every_capability("full");
}

#[test]
fn rbac_ns_full_roles_exercise_every_capability() {
    full_role_exercises_every_capability("ns_full");
}

#[test]
fn rbac_customerorgs() {
    customerorgs("customerorgs");
}

#[test]
fn rbac_ns_customerorgs() {
    customerorgs("ns_customerorgs");
}

#[test]
fn rbac_customerorgs_patch() {
    customerorgs_patch("customerorgs_patch");
}

#[test]
fn rbac_ns_customerorgs_patch() {
    customerorgs_patch("ns_customerorgs_patch");
}

#[test]
fn rbac_customerorgs_status() {
    customerorgs_status("customerorgs_status");
}

#[test]
fn rbac_ns_customerorgs_status() {
    customerorgs_status("ns_customerorgs_status");
}

#[test]
fn rbac_orgproviders() {
    orgproviders("orgproviders");
}

#[test]
fn rbac_ns_orgproviders() {
    orgproviders("ns_orgproviders");
}

#[test]
fn rbac_orgproviders_status() {
    orgproviders_status("orgproviders_status");
}

#[test]
fn rbac_ns_orgproviders_status() {
    orgproviders_status("ns_orgproviders_status");
}

#[test]
fn rbac_parentwebhooks() {
    parentwebhooks("parentwebhooks");
}

#[test]
fn rbac_ns_parentwebhooks() {
    parentwebhooks("ns_parentwebhooks");
}

#[test]
fn rbac_parentwebhooks_patch() {
    parentwebhooks_patch("parentwebhooks_patch");
}

#[test]
fn rbac_ns_parentwebhooks_patch() {
    parentwebhooks_patch("ns_parentwebhooks_patch");
}

#[test]
fn rbac_parentwebhooks_status() {
    parentwebhooks_status("parentwebhooks_status");
}

#[test]
fn rbac_ns_parentwebhooks_status() {
    parentwebhooks_status("ns_parentwebhooks_status");
}

#[test]
fn rbac_secrets() {
    // Cluster-wide, one rule covers the credentials and the minted keys.
    let s = case("secrets");
    assert_refused(s, "secrets");
    assert!(
        !s.org_created,
        "credentials were read without secrets access"
    );
    assert!(!s.key_secret);
}

#[test]
fn rbac_ns_secrets() {
    // Without Secrets in the CustomerOrg's namespace: no key is ever written there.
    let s = case("ns_secrets");
    assert_refused(s, "secrets");
    assert!(
        !s.key_secret,
        "a key Secret was written without secrets access"
    );
    assert!(!s.ready, "Ready without the key Secrets");
}

#[test]
fn rbac_ns_credentials_secrets() {
    // Without the credentials Role the parent key cannot be read: nothing reaches the API.
    let s = case("ns_credentials_secrets");
    assert_refused(s, "secrets");
    assert!(
        !s.org_created,
        "credentials were read without the credentials Role"
    );
    assert!(!s.key_secret);
}

#[test]
fn rbac_secrets_create() {
    secrets_create("secrets_create");
}

#[test]
fn rbac_ns_secrets_create() {
    secrets_create("ns_secrets_create");
}

#[test]
fn rbac_secrets_delete() {
    secrets_delete("secrets_delete");
}

#[test]
fn rbac_ns_secrets_delete() {
    secrets_delete("ns_secrets_delete");
}

#[test]
fn rbac_events() {
    events("events");
}

#[test]
fn rbac_ns_events() {
    events("ns_events");
}

#[test]
fn rbac_leases() {
    leases("leases");
}

#[test]
fn rbac_leases_list() {
    leases_verb("leases_list");
}

#[test]
fn rbac_leases_delete() {
    leases_verb("leases_delete");
}

#[test]
fn rbac_ns_leases_list() {
    leases_verb("ns_leases_list");
}

#[test]
fn rbac_ns_leases_delete() {
    leases_verb("ns_leases_delete");
}

#[test]
fn rbac_ns_leases() {
    leases("ns_leases");
}

/// The overlay's RBAC objects (`kubectl kustomize deploy/overlays/namespaced/`), moved into
/// this test's namespaces: orgops-system -> `own`, customers -> `watched`; cluster-scoped
/// names get `-<suffix>` so parallel runs do not share them.
fn overlay_rbac(own: &str, watched: &str, suffix: &str) -> Vec<Value> {
    let dir = workspace_root().join("deploy/overlays/namespaced");
    let text = kubectl_ok(&["kustomize", &dir.to_string_lossy()]);
    let map_ns = |ns: &str| match ns {
        "orgops-system" => own.to_string(),
        "customers" => watched.to_string(),
        other => panic!("the namespaced overlay uses an unexpected namespace {other}"),
    };
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            serde_json::to_value(serde_yaml::Value::deserialize(doc).expect("YAML document"))
                .expect("YAML as JSON")
        })
        .filter(|d| {
            [
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
            ]
            .contains(&d["kind"].as_str().unwrap_or_default())
        })
        .map(|mut d| {
            if let Some(ns) = d["metadata"]["namespace"].as_str().map(map_ns) {
                d["metadata"]["namespace"] = ns.into();
            }
            let kind = d["kind"].as_str().unwrap_or_default().to_string();
            if kind.starts_with("Cluster") {
                let name = format!(
                    "{}-{suffix}",
                    d["metadata"]["name"].as_str().unwrap_or_default()
                );
                d["metadata"]["name"] = name.into();
            }
            if kind == "ClusterRoleBinding" {
                let name = format!(
                    "{}-{suffix}",
                    d["roleRef"]["name"].as_str().unwrap_or_default()
                );
                d["roleRef"]["name"] = name.into();
            }
            if let Some(subjects) = d["subjects"].as_array_mut() {
                for s in subjects {
                    if let Some(ns) = s["namespace"].as_str().map(map_ns) {
                        s["namespace"] = ns.into();
                    }
                }
            }
            d
        })
        .collect()
}

/// `kubectl auth can-i VERB RESOURCE ... --as=<sa>` said yes.
fn can_i(args: &[&str], sa: &str) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let as_sa = format!("--as={sa}");
    all.push(&as_sa);
    String::from_utf8_lossy(&kubectl(&all).stdout).trim() == "yes"
}

async fn readyz(port: u16) -> Option<(u16, String)> {
    let resp = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let code = resp.status().as_u16();
    Some((code, resp.text().await.unwrap_or_default()))
}

/// Polls /readyz until `check(code, body)` holds (true) or READY_WAIT passes (false).
async fn readyz_until(port: u16, check: impl Fn(u16, &str) -> bool) -> bool {
    let start = Instant::now();
    loop {
        if readyz(port)
            .await
            .is_some_and(|(code, body)| check(code, &body))
        {
            return true;
        }
        if start.elapsed() >= READY_WAIT {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Namespaced mode as installed by deploy/overlays/namespaced: the operator reconciles the
/// CustomerOrgs of its namespace, leaves another namespace's alone, can read Secrets only in
/// its namespaces, and reports a watched namespace it holds no Role for.
#[tokio::test(flavor = "multi_thread")]
async fn namespaced_install_reconciles_its_namespace_and_reaches_no_other() {
    // After the rule cases: their ALONE cases need no other operator alive.
    let _ = results();
    let env = TestEnv::new("rbac-ns-install").await;
    let watched = env.ns.clone();
    let own = format!("{watched}-sys");
    let other = format!("{watched}-other");
    kubectl_ok(&["create", "namespace", &own]);
    // Left out of the finalizer policy, so a finalizer there could only be the operator's.
    create_namespace_without_finalizer_policy(&other);
    let objects = overlay_rbac(&own, &watched, &watched);
    assert!(
        !objects.iter().any(|d| d["kind"] == "ClusterRoleBinding"
            && d["roleRef"]["name"] == format!("orgops-{watched}")),
        "the namespaced overlay binds the cluster-wide ClusterRole"
    );
    apply_yaml_ok(&json!({"apiVersion": "v1", "kind": "List", "items": objects}).to_string());

    let sim = Sim::start(&[]);
    let provider = format!("p-{watched}");
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "parent-key",
        "-n",
        &own,
        &format!("--from-literal=apiKey={}", sim.parent_key()),
    ]);
    apply_yaml_ok(&format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: OrgProvider\nmetadata: {{name: {provider}}}\nspec:\n  type: layers\n  baseUrl: {url}\n  credentialsSecretRef: {{namespace: {own}, name: parent-key, key: apiKey}}\n",
        url = sim.base_url()
    ));
    let lease = format!("orgops-{watched}");
    let op = start_operator(&own, &watched, &own, &lease);
    apply_yaml_ok(&corg_yaml(&watched, &provider, &["k1"]));
    apply_yaml_ok(&corg_yaml(&other, &provider, &["k1"]));

    let ready = poll(READY_WAIT, || is_ready(&corg(&env))).await;
    let log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    assert!(
        ready,
        "CustomerOrg in the watched namespace not Ready:\n{log}"
    );
    assert!(
        exists(&env, &["get", "secret", "acme-k1"]),
        "key Secret written"
    );
    let ready_probe = readyz_until(op.port, |code, _| code == 200).await;
    assert!(
        ready_probe,
        "/readyz not ok with every Role in place:\n{log}"
    );
    // The other namespace's CustomerOrg was never touched (checked after the watched one
    // converged, so the operator had every chance).
    let untouched = kubectl_ok(&["get", "customerorg", "acme", "-n", &other, "-o", "json"]);
    let untouched: Value = serde_json::from_str(&untouched).expect("CustomerOrg JSON");
    assert!(
        untouched["metadata"]["finalizers"].is_null()
            && untouched["status"]["conditions"]
                .as_array()
                .is_none_or(|c| c.is_empty()),
        "a CustomerOrg outside --namespaces was reconciled: {untouched}"
    );

    let sa = format!("system:serviceaccount:{own}:orgops");
    assert!(
        !can_i(&["get", "secret", "-n", &other], &sa),
        "the operator can read Secrets in {other}"
    );
    assert!(!can_i(&["list", "secrets", "--all-namespaces"], &sa));
    assert!(
        !can_i(&["create", "secret", "-n", &own], &sa),
        "credentials are read-only"
    );
    assert!(!can_i(
        &["list", "customerorgs.orgops.dev", "-n", &other],
        &sa
    ));
    assert!(can_i(&["get", "secret", "-n", &watched], &sa));
    assert!(can_i(&["watch", "secret", "-n", &own], &sa));
    drop(op);

    // Told to watch a namespace it holds no Role for: an error naming the namespace and the
    // missing permissions, /readyz 503 saying the same.
    let op = start_operator(&own, &other, &own, &lease);
    let port = op.port;
    let want = format!("namespace {other}: get customerorgs.orgops.dev");
    let reported = readyz_until(port, |code, body| code == 503 && body.contains(&want)).await;
    let log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    assert!(
        reported,
        "/readyz does not report the unreadable namespace:\n{log}"
    );
    assert!(
        log.contains("lacks permissions") && log.contains(&other) && log.contains("list secrets"),
        "the log does not name the namespace and the missing permission:\n{log}"
    );
    drop(op);

    let _ = kubectl(&["delete", "orgprovider", &provider, "--ignore-not-found"]);
    for kind in ["clusterrolebinding", "clusterrole"] {
        let _ = kubectl(&[
            "delete",
            kind,
            &format!("orgops-providers-{watched}"),
            "--ignore-not-found",
        ]);
    }
    let _ = kubectl(&[
        "delete",
        "customerorg",
        "acme",
        "-n",
        &other,
        "--wait=false",
    ]);
    for ns in [&own, &other] {
        let _ = kubectl(&["delete", "namespace", ns, "--wait=false"]);
    }
    env.cleanup().await;
}
