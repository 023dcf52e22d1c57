//! Proves the e2e harness: a real control plane answers, and the operator's
//! ServiceAccount can do exactly what deploy/rbac.yaml grants and nothing more.
mod support;

use support::{ControlPlane, OPERATOR_SA, TestEnv, bind_service_account, kubectl, kubectl_ok};

#[test]
fn control_plane_readyz_is_ok() {
    ControlPlane::ensure();
    assert_eq!(kubectl_ok(&["get", "--raw", "/readyz"]), "ok");
}

/// One RBAC rule from deploy/rbac.yaml, flattened.
struct Grant {
    group: String,
    resource: String,
    verb: String,
}

/// Reads every rule of the object named `name` of `kind` in deploy/rbac.yaml.
fn grants(kind: &str, name: &str) -> Vec<Grant> {
    let path = support::workspace_root().join("deploy/rbac.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/rbac.yaml");
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).expect("parse deploy/rbac.yaml");
        if value["kind"] != kind || value["metadata"]["name"] != name {
            continue;
        }
        for rule in value["rules"].as_array().expect("rules") {
            let strings = |key: &str| -> Vec<String> {
                rule[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        out.push(Grant {
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                        });
                    }
                }
            }
        }
    }
    assert!(
        !out.is_empty(),
        "{kind} {name} not found in deploy/rbac.yaml"
    );
    out
}

/// `kubectl auth can-i` as the test ServiceAccount; `resource` may be `res/sub`.
fn can_i(sa_ns: &str, verb: &str, group: &str, resource: &str, ns: Option<&str>) -> bool {
    let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
    let qualified = if group.is_empty() {
        res.to_string()
    } else {
        format!("{res}.{group}")
    };
    let user = format!("--as=system:serviceaccount:{sa_ns}:{OPERATOR_SA}");
    let mut args = vec!["auth", "can-i", verb, qualified.as_str(), user.as_str()];
    let sub_flag = format!("--subresource={sub}");
    if !sub.is_empty() {
        args.push(&sub_flag);
    }
    match ns {
        Some(ns) => args.extend(["-n", ns]),
        None => args.push("--all-namespaces"),
    }
    let out = kubectl(&args);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl {} gave no answer: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

#[tokio::test]
async fn service_account_gets_exactly_the_deployed_rbac() {
    let env = TestEnv::new("harness-rbac").await;
    bind_service_account(&env.ns);
    let ns = env.ns.as_str();
    let mut failures = Vec::new();

    // Everything the ClusterRole grants works in the test namespace and cluster-wide.
    for g in grants("ClusterRole", "orgops") {
        for scope in [Some(ns), None] {
            if !can_i(ns, &g.verb, &g.group, &g.resource, scope) {
                failures.push(format!(
                    "denied but granted: {} {}/{} in {scope:?}",
                    g.verb, g.group, g.resource
                ));
            }
        }
    }
    // The leader-election Role works in orgops-system only.
    for g in grants("Role", "orgops-leader-election") {
        if !can_i(ns, &g.verb, &g.group, &g.resource, Some("orgops-system")) {
            failures.push(format!(
                "denied but granted: {} {}/{} in orgops-system",
                g.verb, g.group, g.resource
            ));
        }
        if can_i(ns, &g.verb, &g.group, &g.resource, Some(ns)) {
            failures.push(format!(
                "allowed outside orgops-system: {} {}/{}",
                g.verb, g.group, g.resource
            ));
        }
    }
    // Things an operator of CustomerOrgs must never be able to do.
    let denied: &[(&str, &str, &str, Option<&str>)] = &[
        ("delete", "", "namespaces", None),
        ("create", "rbac.authorization.k8s.io", "clusterroles", None),
        (
            "create",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            None,
        ),
        (
            "escalate",
            "rbac.authorization.k8s.io",
            "clusterroles",
            None,
        ),
        ("impersonate", "", "users", None),
        ("list", "", "pods", Some(ns)),
        ("create", "", "pods", Some(ns)),
        ("get", "", "configmaps", Some(ns)),
        ("create", "", "serviceaccounts/token", Some(ns)),
        ("patch", "example.com", "customerorgs", Some(ns)),
        ("create", "orgops.dev", "customerorgs", Some(ns)),
        ("delete", "orgops.dev", "customerorgs", Some(ns)),
        ("update", "orgops.dev", "orgproviders", None),
        ("delete", "orgops.dev", "orgproviders", None),
        // Claims are released one by one, with preconditions (delete); never all at once.
        (
            "deletecollection",
            "coordination.k8s.io",
            "leases",
            Some("orgops-system"),
        ),
        // Every Lease change is a merge patch pinned to a resourceVersion, never a replace.
        (
            "update",
            "coordination.k8s.io",
            "leases",
            Some("orgops-system"),
        ),
        ("*", "*", "*", None),
    ];
    for (verb, group, resource, scope) in denied {
        if can_i(ns, verb, group, resource, *scope) {
            failures.push(format!(
                "allowed but must be denied: {verb} {group}/{resource} in {scope:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "RBAC mismatches:\n{}",
        failures.join("\n")
    );
    env.cleanup().await;
}

#[tokio::test]
async fn operator_token_kubeconfig_is_the_service_account_not_admin() {
    let env = TestEnv::new("harness-token").await;
    bind_service_account(&env.ns);
    let kubeconfig = support::write_token_kubeconfig(&env.ns);
    let as_sa = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        std::process::Command::new("kubectl")
            .args(&all)
            .output()
            .expect("run kubectl")
    };
    let who = as_sa(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&who.stdout),
        format!("system:serviceaccount:{}:{OPERATOR_SA}", env.ns)
    );
    let secrets = as_sa(&["get", "secrets", "-n", &env.ns]);
    assert!(
        secrets.status.success(),
        "{}",
        String::from_utf8_lossy(&secrets.stderr)
    );
    let pods = as_sa(&["get", "pods", "-n", &env.ns]);
    assert!(!pods.status.success());
    assert!(String::from_utf8_lossy(&pods.stderr).contains("forbidden"));
    env.cleanup().await;
}

#[tokio::test]
async fn sim_fixture_serves_its_control_api() {
    let sim = support::Sim::start(&[]);
    assert!(
        sim.base_url().starts_with("http://127.0.0.1:"),
        "{}",
        sim.base_url()
    );
    assert!(
        sim.parent_key().starts_with("lp_"),
        "parent key has the documented prefix"
    );
    let state = sim.state().await;
    assert!(
        state["parent"]["orgId"]
            .as_str()
            .is_some_and(|id| id.starts_with("org_")),
        "{state}"
    );
    assert!(sim.counters().await["requests"].is_array());
}

#[tokio::test]
async fn operator_fixture_runs_kills_and_restarts_the_binary() {
    use std::time::Duration;
    let env = TestEnv::new("harness-operator").await;
    let mut op = support::Operator::start(&env, &[]).await;
    support::wait_for(
        "the operator's /metrics to answer",
        Duration::from_secs(60),
        || async { !op.metrics().await.is_empty() },
    )
    .await;
    assert!(op.is_running());
    op.kill();
    assert!(!op.is_running());
    assert!(
        op.metrics().await.is_empty(),
        "metrics still answer after SIGKILL"
    );
    op.restart();
    support::wait_for(
        "the restarted operator's /metrics",
        Duration::from_secs(60),
        || async { !op.metrics().await.is_empty() },
    )
    .await;
    assert!(
        !op.log().is_empty(),
        "operator output is captured in {:?}",
        op.log_path()
    );
    drop(op);
    env.cleanup().await;
}
