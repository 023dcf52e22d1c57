//! The `youhodler-sim` binary as a child process on a free loopback port, and a YouHodler
//! test world: a namespace, a fresh simulator, an `OrgProvider` of type `youhodler` and an
//! operator.
use super::world::{CONVERGE, count};
use super::{Operator, TestEnv, apply_yaml_ok, kubectl, wait_for, wait_for_some};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Child;

/// A running `youhodler-sim --control`; killed on drop. The test chose its credentials, so
/// it knows the secret to grep for.
#[derive(Debug)]
pub struct YouhodlerSim {
    child: Child,
    base_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub enterprise_id: String,
    log_path: PathBuf,
    http: reqwest::Client,
}

impl YouhodlerSim {
    /// Starts `youhodler-sim --control --listen 127.0.0.1:0` with fresh credentials and
    /// `args`, and waits (10 s at most) until it listens.
    pub fn start(args: &[&str]) -> YouhodlerSim {
        let client_id = format!("sa_{}", uuid::Uuid::new_v4().simple());
        let client_secret = format!("yhs_{}", uuid::Uuid::new_v4().simple());
        let enterprise_id = uuid::Uuid::new_v4().to_string();
        let mut all = vec![
            "--client-id",
            &client_id,
            "--client-secret",
            &client_secret,
            "--enterprise-id",
            &enterprise_id,
        ];
        all.extend_from_slice(args);
        let s = super::child::start(
            "youhodler-sim",
            "YOUHODLER_SIM_BIN",
            "client secret: ",
            &all,
        );
        YouhodlerSim {
            child: s.child,
            base_url: s.base_url,
            client_id,
            client_secret,
            enterprise_id,
            log_path: s.log_path,
            http: reqwest::Client::new(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GET /_sim/state (never shows the secret or tokens).
    pub async fn state(&self) -> Value {
        self.call(reqwest::Method::GET, "/_sim/state", None).await
    }

    /// Every client, suspended ones included (YouHodler has no delete).
    pub async fn clients(&self) -> Vec<Value> {
        self.state().await["clients"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The clients whose `external_id` is `ext`.
    pub async fn clients_with_external_id(&self, ext: &str) -> Vec<Value> {
        self.clients()
            .await
            .into_iter()
            .filter(|c| c["external_id"] == ext)
            .collect()
    }

    /// GET /_sim/counters: requests by method, route template and status.
    pub async fn counters(&self) -> Value {
        self.call(reqwest::Method::GET, "/_sim/counters", None)
            .await
    }

    /// GET /_sim/writes: every non-read API request as it arrived, with its sender.
    pub async fn writes(&self) -> Vec<Value> {
        self.call(reqwest::Method::GET, "/_sim/writes", None).await["writes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn set_faults(&self, faults: Value) {
        self.call(reqwest::Method::PUT, "/_sim/faults", Some(faults))
            .await;
    }

    /// Moves the simulator's clock (tokens expire with it).
    pub async fn advance_clock(&self, seconds: u64) {
        self.call(
            reqwest::Method::POST,
            "/_sim/clock",
            Some(json!({"advanceSeconds": seconds})),
        )
        .await;
    }

    /// Revokes (`true`) or restores the client secret.
    pub async fn revoke_secret(&self, revoked: bool) {
        let path = if revoked {
            "/_sim/credentials/revoke"
        } else {
            "/_sim/credentials/restore"
        };
        self.call(reqwest::Method::POST, path, None).await;
    }

    /// An out-of-band edit, as someone in YouHodler's console would make (a new ETag).
    pub async fn edit_client(&self, id: &str, edit: Value) -> Value {
        self.call(
            reqwest::Method::PATCH,
            &format!("/_sim/clients/{id}"),
            Some(edit),
        )
        .await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url));
        if let Some(b) = body {
            r = r.json(&b);
        }
        super::ok_json(r, &format!("{method} {path}")).await
    }
}

impl Drop for YouhodlerSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests to `method route` with `status` (0 = dropped connection).
pub fn requests(counters: &Value, method: &str, route: &str, status: u64) -> u64 {
    counters["requests"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| {
                    r["method"] == method
                        && r["route"] == route
                        && r["status"].as_u64() == Some(status)
                })
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Token requests (`POST /oauth/token`), any status.
pub fn token_requests(counters: &Value) -> u64 {
    count(counters, |m, route| m == "POST" && route == "/oauth/token")
}

/// Requests about clients (every `/clients…` route).
pub fn client_requests(counters: &Value) -> u64 {
    count(counters, |_, route| route.starts_with("/clients"))
}

/// Writes to clients (anything but GET on `/clients…`).
pub fn client_writes(counters: &Value) -> u64 {
    count(counters, |m, route| {
        m != "GET" && route.starts_with("/clients")
    })
}

/// The credentials Secret and a `youhodler` OrgProvider named `provider` for `sim` (the
/// enterprise found with `GET /enterprises`). The offboarding guard is opened wide.
pub fn install_provider(env: &TestEnv, sim: &YouhodlerSim, provider: &str) {
    let secret = format!("{provider}-credentials");
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &secret,
        &format!("--from-literal=clientId={}", sim.client_id),
        &format!("--from-literal=clientSecret={}", sim.client_secret),
    ]);
    apply_yaml_ok(&format!(
        r#"apiVersion: orgops.dev/v1alpha1
kind: OrgProvider
metadata: {{name: {provider}}}
spec:
  type: youhodler
  baseUrl: {url}
  credentialsSecretRef: {{namespace: {ns}, name: {secret}}}
  offboarding: {{maxPerHour: 10000}}
"#,
        url = sim.base_url(),
        ns = env.ns
    ));
}

/// A namespace, a fresh `youhodler-sim`, a `youhodler` OrgProvider and an operator.
pub struct YouhodlerWorld {
    pub env: TestEnv,
    pub sim: YouhodlerSim,
    pub op: Operator,
    pub provider: String,
}

impl super::corgs::CorgWaits for YouhodlerWorld {
    fn env(&self) -> &TestEnv {
        &self.env
    }
}

impl YouhodlerWorld {
    pub async fn new(name: &str, resync: &str, sim_args: &[&str]) -> YouhodlerWorld {
        let env = TestEnv::new(name).await;
        let sim = YouhodlerSim::start(sim_args);
        let provider = format!("y-{}", env.ns);
        install_provider(&env, &sim, &provider);
        let lease = format!("orgops-leader-{}", env.ns);
        let op =
            Operator::start(&env, &["--lease-name", &lease, "--resync-interval", resync]).await;
        YouhodlerWorld {
            env,
            sim,
            op,
            provider,
        }
    }

    /// A CustomerOrg on this world's provider; `spec_tail` is more YAML under `spec:`.
    pub fn corg_yaml(&self, name: &str, display: &str, spec_tail: &str) -> String {
        format!(
            r#"apiVersion: orgops.dev/v1alpha1
kind: CustomerOrg
metadata: {{name: {name}, namespace: {ns}}}
spec:
  providerRef: {{name: {provider}}}
  displayName: {display}
{spec_tail}"#,
            ns = self.env.ns,
            provider = self.provider,
        )
    }

    /// The one client with `external_id` `ext`; panics when there is none or several.
    pub async fn client(&self, ext: &str) -> Value {
        let found = self.sim.clients_with_external_id(ext).await;
        assert_eq!(found.len(), 1, "exactly one client {ext:?}: {found:?}");
        found[0].clone()
    }

    /// Waits until the one client with `external_id` `ext` satisfies `pred`.
    pub async fn wait_client(&self, ext: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for_some(&format!("client {ext:?}: {what}"), CONVERGE, || async {
            let found = self.sim.clients_with_external_id(ext).await;
            (found.len() == 1 && pred(&found[0])).then(|| found[0].clone())
        })
        .await
    }

    /// Waits until the operator checked its provider `n` more times (each check fetches
    /// a fresh token): evidence that resyncs happened.
    pub async fn provider_checks(&self, n: u64) {
        let start = token_requests(&self.sim.counters().await);
        wait_for(&format!("{n} provider checks"), CONVERGE, || async {
            token_requests(&self.sim.counters().await) >= start + n
        })
        .await;
    }

    pub async fn cleanup(self) {
        super::world::cleanup_world(&self.provider, self.op, self.env).await;
    }
}
