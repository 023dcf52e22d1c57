//! The `gennia-sim` binary as a child process on a free loopback port, and a Gennia test
//! world: a namespace, a fresh simulator with a plan, an `OrgProvider` of type `gennia` and
//! an operator.
pub use super::corgs::{CorgWaits, current};
use super::world::{CONVERGE, condition, count};
use super::{
    Operator, TestEnv, apply_yaml_ok, kubectl, log_dir, random_suffix, wait_for, wait_for_some,
    workspace_root,
};
use serde_json::{Value, json};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The API's path prefix; counters use route templates under it.
pub const API: &str = "/public/api/v1";

/// A running `gennia-sim --control`; killed on drop.
#[derive(Debug)]
pub struct GenniaSim {
    child: Child,
    base_url: String,
    api_key: String,
    log_path: PathBuf,
    http: reqwest::Client,
}

impl GenniaSim {
    /// Starts `gennia-sim --control --listen 127.0.0.1:0 <args>` and waits (10 s at most)
    /// for its `api key:` and `listening on` lines.
    pub fn start(args: &[&str]) -> GenniaSim {
        let s = super::child::start("gennia-sim", "GENNIA_SIM_BIN", "api key: ", args);
        GenniaSim {
            child: s.child,
            base_url: s.base_url,
            api_key: s.key,
            log_path: s.log_path,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT` (the server: what `OrgProvider.spec.baseUrl` takes).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The hub's workspace key (`gsk_…`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GET /_sim/state: `{workspacePublicId, apiKeyPublicId, plans, clients}`.
    pub async fn state(&self) -> Value {
        self.get_json("/_sim/state").await
    }

    /// Every client, suspended and canceled included (Gennia has no delete).
    pub async fn clients(&self) -> Vec<Value> {
        self.state().await["clients"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The clients whose workspace name is `name` (the sim refuses a second one, so 0 or 1).
    pub async fn clients_named(&self, name: &str) -> Vec<Value> {
        self.clients()
            .await
            .into_iter()
            .filter(|c| c["workspaceName"] == name)
            .collect()
    }

    /// GET /_sim/counters: requests by method, route template and status.
    pub async fn counters(&self) -> Value {
        self.get_json("/_sim/counters").await
    }

    /// GET /_sim/writes: every non-read API request as it arrived, with its sender.
    pub async fn writes(&self) -> Vec<Value> {
        self.get_json("/_sim/writes").await["writes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// PUT /_sim/faults with the given fault configuration.
    pub async fn set_faults(&self, faults: Value) {
        let resp = self
            .http
            .put(format!("{}/_sim/faults", self.base_url))
            .json(&faults)
            .send()
            .await
            .expect("PUT /_sim/faults");
        let status = resp.status();
        assert!(
            status.is_success(),
            "PUT /_sim/faults: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// POST /_sim/plans `{name, ...extra}`; returns the plan's `publicId`.
    pub async fn create_plan(&self, name: &str, extra: Value) -> String {
        let mut body = json!({"name": name});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let resp = self
            .http
            .post(format!("{}/_sim/plans", self.base_url))
            .json(&body)
            .send()
            .await
            .expect("POST /_sim/plans");
        let status = resp.status();
        let plan: Value = resp.json().await.expect("plan JSON");
        assert!(status.is_success(), "POST /_sim/plans: {status}: {plan}");
        plan["publicId"]
            .as_str()
            .expect("plan publicId")
            .to_string()
    }

    /// PUT /_sim/clients/{id}/status: a billing event (`past_due`, `canceled`, ...).
    pub async fn set_client_status(&self, id: &str, status: &str) {
        let resp = self
            .http
            .put(format!("{}/_sim/clients/{id}/status", self.base_url))
            .json(&json!({"status": status}))
            .send()
            .await
            .expect("PUT /_sim/clients/{id}/status");
        assert!(
            resp.status().is_success(),
            "set client status: {}",
            resp.status()
        );
    }

    async fn get_json(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.base_url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
        resp.json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: bad JSON: {e}"))
    }
}

impl Drop for GenniaSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests about clients (every `/clients…` route), not the provider's `/health` checks.
pub fn client_requests(counters: &Value) -> u64 {
    count(counters, |_, route| {
        route.starts_with(&format!("{API}/clients"))
    })
}

/// `POST /clients` requests with the given status (0 = dropped connection).
pub fn creates_with_status(counters: &Value, status: u64) -> u64 {
    counters["requests"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| {
                    r["method"] == "POST"
                        && r["route"] == format!("{API}/clients")
                        && r["status"].as_u64() == Some(status)
                })
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Write requests (anything but GET) to the API the simulator counted (not `/_sim/`).
pub fn writes(counters: &Value) -> u64 {
    count(counters, |m, route| m != "GET" && route.starts_with(API))
}

/// The provider Secret and a `gennia` OrgProvider named `provider` (cluster scoped) for `sim`.
/// The offboarding guard is opened wide: tests that delete many objects are not about it.
pub fn install_provider(env: &TestEnv, sim: &GenniaSim, provider: &str) {
    let secret = format!("{provider}-key");
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &secret,
        &format!("--from-literal=apiKey={}", sim.api_key()),
    ]);
    apply_yaml_ok(&format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: OrgProvider
metadata: {{name: {provider}}}
spec:
  type: gennia
  baseUrl: {url}
  credentialsSecretRef: {{namespace: {ns}, name: {secret}, key: apiKey}}
  offboarding: {{maxPerHour: 10000}}
"#,
        url = sim.base_url(),
        ns = env.ns
    ));
}

/// A namespace, a fresh `gennia-sim` with one plan, a `gennia` OrgProvider and an operator.
pub struct GenniaWorld {
    pub env: TestEnv,
    pub sim: GenniaSim,
    pub op: Operator,
    pub provider: String,
    /// A plan of this hub (50 credits included, 5 seats).
    pub plan_id: String,
}

impl super::corgs::CorgWaits for GenniaWorld {
    fn env(&self) -> &TestEnv {
        &self.env
    }
}

impl GenniaWorld {
    pub async fn new(name: &str, resync: &str) -> GenniaWorld {
        let env = TestEnv::new(name).await;
        let sim = GenniaSim::start(&[]);
        let plan_id = sim
            .create_plan("Growth", json!({"priceCents": 4900, "creditsIncluded": 50}))
            .await;
        let provider = format!("g-{}", env.ns);
        install_provider(&env, &sim, &provider);
        let lease = format!("orgops-leader-{}", env.ns);
        let op =
            Operator::start(&env, &["--lease-name", &lease, "--resync-interval", resync]).await;
        GenniaWorld {
            env,
            sim,
            op,
            provider,
            plan_id,
        }
    }

    /// A CustomerOrg on this world's provider; `spec_tail` is more YAML under `spec:` (two
    /// spaces of indent).
    pub fn corg_yaml(&self, name: &str, workspace: &str, spec_tail: &str) -> String {
        format!(
            r#"apiVersion: orgops.dev/v1alpha1
kind: CustomerOrg
metadata: {{name: {name}, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: {workspace}
{spec_tail}"#,
            ns = self.env.ns,
            provider = self.provider,
        )
    }

    /// The one client named `workspace`; panics when there is none or more than one.
    pub async fn client(&self, workspace: &str) -> Value {
        let found = self.sim.clients_named(workspace).await;
        assert_eq!(
            found.len(),
            1,
            "exactly one client named {workspace:?}: {found:?}"
        );
        found[0].clone()
    }

    /// Waits until the simulator's client named `workspace` satisfies `pred`.
    pub async fn wait_client(
        &self,
        workspace: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for_some(
            &format!("client {workspace:?}: {what}"),
            CONVERGE,
            || async {
                let found = self.sim.clients_named(workspace).await;
                (found.len() == 1 && pred(&found[0])).then(|| found[0].clone())
            },
        )
        .await
    }

    /// Waits until the operator checked its provider (`GET /health`) `n` more times:
    /// evidence that resyncs happened, so a test can then assert that nothing else did.
    pub async fn provider_checks(&self, n: u64) {
        let health =
            |c: &Value| count(c, |m, route| m == "GET" && route == format!("{API}/health"));
        let start = health(&self.sim.counters().await);
        wait_for(&format!("{n} provider checks"), CONVERGE, || async {
            health(&self.sim.counters().await) >= start + n
        })
        .await;
    }

    pub async fn cleanup(self) {
        super::world::cleanup_world(&self.provider, self.op, self.env).await;
    }
}

/// (status, reason, message) of condition `type_`, whatever its generation.
pub fn cond(corg: &Value, type_: &str) -> Option<(String, String, String)> {
    condition(corg, type_)
}

/// The live users of a client as sorted (email, name, role) triples.
pub fn users_of(client: &Value) -> Vec<(String, String, String)> {
    let mut users: Vec<_> = client["users"]
        .as_array()
        .map(|us| {
            us.iter()
                .map(|u| {
                    let s = |k: &str| u[k].as_str().unwrap_or_default().to_string();
                    (s("email"), s("name"), s("role"))
                })
                .collect()
        })
        .unwrap_or_default();
    users.sort();
    users
}
