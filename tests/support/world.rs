//! A CustomerOrg test world: a test namespace, a fresh simulator, an OrgProvider for it,
//! an operator with a short resync, and helpers to read objects, Events and counters.

use super::{Operator, Sim, TestEnv, apply_yaml_ok, kubectl, wait_for, wait_for_some};
use serde_json::Value;
use std::time::Duration;

pub const CONVERGE: Duration = Duration::from_secs(60);

/// A test namespace with a provider Secret, an OrgProvider (unique per test, cluster
/// scoped) pointing at a fresh simulator, and an operator with a short resync.
pub struct World {
    pub env: TestEnv,
    pub sim: Sim,
    pub op: Operator,
    pub provider: String,
}

impl World {
    pub async fn new(name: &str, resync: &str) -> World {
        World::with(name, &[], &["--resync-interval", resync]).await
    }

    /// A world whose simulator and operator get extra flags.
    pub async fn with(name: &str, sim_args: &[&str], op_args: &[&str]) -> World {
        let env = TestEnv::new(name).await;
        let sim = Sim::start(sim_args);
        let provider = format!("p-{}", env.ns);
        install_provider(&env, &sim, &provider, "parent-key");
        let lease = format!("orgops-leader-{}", env.ns);
        let mut args = vec!["--lease-name", &lease];
        args.extend_from_slice(op_args);
        let op = Operator::start(&env, &args).await;
        World {
            env,
            sim,
            op,
            provider,
        }
    }

    pub fn corg_yaml(&self, name: &str, extra_spec: &str) -> String {
        format!(
            r#"apiVersion: orgops.dev/v1alpha1
kind: CustomerOrg
metadata: {{name: {name}, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: Acme Coffee
  externalId: {ns}-{name}
  metadata: {{plan: growth}}
  credits:
    allocated: 500
    monthlyCap: 5000
    autoRefill: {{threshold: 100, amount: 200}}
  apiKeys:
  - name: integration
    scopes: [content:read, content:write]
  webhooks:
  - name: crm
    url: https://crm.example.com/layers/webhooks
    events: [content.generated]
{extra_spec}"#,
            ns = self.env.ns,
            provider = self.provider,
        )
    }

    pub fn corg(&self, name: &str) -> Value {
        let out = self
            .env
            .kubectl_ok(&["get", "customerorg", name, "-o", "json"]);
        serde_json::from_str(&out).expect("CustomerOrg JSON")
    }

    pub async fn wait_ready(&self, name: &str) -> Value {
        wait_for_some(&format!("CustomerOrg {name} Ready"), CONVERGE, || async {
            let out = self
                .env
                .kubectl(&["get", "customerorg", name, "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let generation = v["metadata"]["generation"].clone();
            let ready = v["status"]["conditions"].as_array()?.iter().any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "True"
                    && c["observedGeneration"] == generation
            });
            ready.then_some(v)
        })
        .await
    }

    pub fn events(&self, name: &str) -> String {
        self.env.kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &format!("regarding.name={name}"),
            "-o",
            "json",
        ])
    }

    /// This world's OrgProvider, merge-patched with `body` (e.g. its spec's guardrails).
    /// Merge-patches CustomerOrg `name` of this world's namespace, as a person would.
    pub fn patch_corg(&self, name: &str, body: &serde_json::Value) {
        self.env.kubectl_ok(&[
            "patch",
            "customerorg",
            name,
            "--type=merge",
            "-p",
            &body.to_string(),
        ]);
    }

    pub fn patch_provider(&self, body: &serde_json::Value) {
        super::kubectl_ok(&[
            "patch",
            "orgprovider",
            &self.provider,
            "--type=merge",
            "-p",
            &body.to_string(),
        ]);
    }

    /// The change-log records (docs/changelog.md) the operator logged for CustomerOrg
    /// `name` of this world's namespace.
    pub fn changelog(&self, name: &str) -> Vec<orgops::changelog::Record> {
        self.op
            .log()
            .lines()
            .filter_map(orgops::changelog::parse_line)
            .filter(|r| r.object.name == name && r.object.namespace == self.env.ns)
            .collect()
    }

    pub async fn writes(&self) -> u64 {
        count(&self.sim.counters().await, |m, _| m != "GET")
    }

    pub async fn cleanup(self) {
        super::world::cleanup_world(&self.provider, self.op, self.env).await;
    }
}

/// The parent key in Secret `secret` of the test namespace and a `layers` OrgProvider named
/// `provider` (cluster scoped) for `sim`, its tier read from whoami.
pub fn install_provider(env: &TestEnv, sim: &Sim, provider: &str, secret: &str) {
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        secret,
        &format!("--from-literal=apiKey={}", sim.parent_key()),
    ]);
    apply_yaml_ok(&format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: OrgProvider
metadata: {{name: {provider}}}
spec:
  type: layers
  baseUrl: {url}
  credentialsSecretRef: {{namespace: {ns}, name: {secret}, key: apiKey}}
  rateLimit: {{tier: auto}}
"#,
        url = sim.base_url(),
        ns = env.ns
    ));
}

/// A CustomerOrg manifest without its `externalId` line.
pub fn without_external_id(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.trim_start().starts_with("externalId:"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Merge-patches CustomerOrg `name`'s status subresource with `json`, as a restore, a
/// `kubectl patch` or a lost write would leave it.
pub fn patch_status(env: &TestEnv, name: &str, json: &str) {
    env.kubectl_ok(&[
        "patch",
        "customerorg",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json,
    ]);
}

/// Deletes a world's OrgProvider, stops its operator and removes its namespace.
pub async fn cleanup_world(provider: &str, op: Operator, env: TestEnv) {
    let _ = kubectl(&["delete", "orgprovider", provider, "--ignore-not-found"]);
    drop(op);
    env.cleanup().await;
}

/// Requests the simulator counted whose (method, route template) pass `keep`.
pub fn count(counters: &Value, keep: impl Fn(&str, &str) -> bool) -> u64 {
    count_by_status(counters, |m, r, _| keep(m, r))
}

/// Requests the simulator counted whose (method, route template, status) pass `keep`
/// (status 0: the connection was dropped).
pub fn count_by_status(counters: &Value, keep: impl Fn(&str, &str, u64) -> bool) -> u64 {
    counters["requests"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| {
                    keep(
                        r["method"].as_str().unwrap_or_default(),
                        r["route"].as_str().unwrap_or_default(),
                        r["status"].as_u64().unwrap_or(0),
                    )
                })
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// A string field the test relies on; `what` names it when it is missing.
pub fn text(v: &Value, what: &str) -> String {
    v.as_str().expect(what).to_string()
}

pub fn live_orgs(state: &Value) -> Vec<Value> {
    state["orgs"]
        .as_array()
        .map(|orgs| {
            orgs.iter()
                .filter(|o| o["status"] != "archived")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

pub async fn whoami_with(sim: &Sim, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v1/whoami", sim.base_url()))
        .bearer_auth(key)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub fn secret_value(env: &TestEnv, name: &str, key: &str) -> Option<String> {
    let out = env.kubectl(&[
        "get",
        "secret",
        name,
        "-o",
        &format!("jsonpath={{.data.{key}}}"),
    ]);
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    let b64 = String::from_utf8_lossy(&out.stdout).to_string();
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b64.as_bytes())?;
            c.wait_with_output()
        })
        .ok()?;
    Some(String::from_utf8_lossy(&decoded.stdout).trim().to_string())
}

/// (status, reason, message) of condition `type_`, if present.
pub fn condition(corg: &Value, type_: &str) -> Option<(String, String, String)> {
    let c = corg["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?;
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    Some((s("status"), s("reason"), s("message")))
}

impl World {
    /// Waits until Stalled=True with `reason` at the current generation; returns the object.
    pub async fn wait_stalled(&self, name: &str, reason: &str) -> Value {
        wait_for_some(
            &format!("CustomerOrg {name} Stalled {reason}"),
            CONVERGE,
            || async {
                let out = self
                    .env
                    .kubectl(&["get", "customerorg", name, "-o", "json"]);
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                let generation = v["metadata"]["generation"].clone();
                let stalled = v["status"]["conditions"].as_array()?.iter().any(|c| {
                    c["type"] == "Stalled"
                        && c["status"] == "True"
                        && c["reason"] == reason
                        && c["observedGeneration"] == generation
                });
                stalled.then_some(v)
            },
        )
        .await
    }

    /// Waits until the operator checked its provider (GET /v1/whoami, once per resync)
    /// `n` more times: evidence that time passed for the operator, so a test can then
    /// assert that nothing else happened meanwhile.
    pub async fn resyncs(&self, n: u64) {
        let whoami = |c: &Value| count(c, |m, route| m == "GET" && route == "/v1/whoami");
        let start = whoami(&self.sim.counters().await);
        wait_for(&format!("{n} provider resyncs"), CONVERGE, || async {
            whoami(&self.sim.counters().await) >= start + n
        })
        .await;
    }

    /// Waits until the org was read `n` more times (one GET per resync of a converged object).
    pub async fn org_reads(&self, n: u64) {
        let reads = |c: &Value| {
            count(c, |m, route| {
                m == "GET" && route == "/v1/organizations/:orgId"
            })
        };
        let start = reads(&self.sim.counters().await);
        wait_for(&format!("{n} org reads"), CONVERGE, || async {
            reads(&self.sim.counters().await) >= start + n
        })
        .await;
    }

    /// API requests about child orgs (not the OrgProvider checks, not /_sim/).
    pub async fn org_requests(&self) -> u64 {
        let c = self.sim.counters().await;
        let calls = count(&c, |_, route| {
            route != "/v1/whoami" && route.starts_with("/v1/")
        });
        // The OrgProvider check (provider_controller: whoami, then the parent's balance for a
        // provider with an allocation ledger) runs every resync and is no call for a
        // CustomerOrg: one balance read per whoami is its, any other one counts.
        let whoami = count(&c, |m, route| m == "GET" && route == "/v1/whoami");
        let balance = count(&c, |m, route| m == "GET" && route == "/v1/credits");
        calls - balance.min(whoami)
    }
}

impl super::corgs::CorgWaits for World {
    fn env(&self) -> &TestEnv {
        &self.env
    }
}
