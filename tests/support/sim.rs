//! The `layers-sim` binary as a child process on a free loopback port.
use std::path::PathBuf;
use std::process::Child;

/// A running simulator with `--control`; killed on drop.
#[derive(Debug)]
pub struct Sim {
    child: Child,
    base_url: String,
    parent_key: String,
    log_path: PathBuf,
    http: reqwest::Client,
}

impl Sim {
    /// Starts `layers-sim --control --listen 127.0.0.1:0 <args>` and waits (10 s at most)
    /// for its `parent key:` and `listening on` lines.
    pub fn start(args: &[&str]) -> Sim {
        let s = super::child::start("layers-sim", "LAYERS_SIM_BIN", "parent key: ", args);
        Sim {
            child: s.child,
            base_url: s.base_url,
            parent_key: s.key,
            log_path: s.log_path,
            http: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn parent_key(&self) -> &str {
        &self.parent_key
    }

    /// The simulator's own log (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// GET /_sim/state: orgs, keys (no secrets), webhook endpoints, ledgers.
    pub async fn state(&self) -> serde_json::Value {
        self.get_json("/_sim/state").await
    }

    /// GET /_sim/counters: requests by method, route template and status.
    pub async fn counters(&self) -> serde_json::Value {
        self.get_json("/_sim/counters").await
    }

    /// GET /_sim/writes: every non-read API request as it arrived, with its sender.
    pub async fn writes(&self) -> Vec<serde_json::Value> {
        self.get_json("/_sim/writes").await["writes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// PUT /_sim/faults with the given fault configuration.
    pub async fn set_faults(&self, faults: serde_json::Value) {
        let url = format!("{}/_sim/faults", self.base_url);
        let resp = self
            .http
            .put(&url)
            .json(&faults)
            .send()
            .await
            .expect("PUT /_sim/faults");
        assert!(
            resp.status().is_success(),
            "PUT /_sim/faults: {}",
            resp.status()
        );
    }

    /// POST /_sim/reset: fresh state, same parent key.
    pub async fn reset(&self) {
        let url = format!("{}/_sim/reset", self.base_url);
        let resp = self.http.post(&url).send().await.expect("POST /_sim/reset");
        assert!(
            resp.status().is_success(),
            "POST /_sim/reset: {}",
            resp.status()
        );
    }

    /// POST /_sim/topup: `credits` more in the parent's prepaid wallet.
    pub async fn topup(&self, credits: u64) {
        let url = format!("{}/_sim/topup", self.base_url);
        let resp = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "credits": credits }))
            .send()
            .await
            .expect("POST /_sim/topup");
        assert!(
            resp.status().is_success(),
            "POST /_sim/topup: {}",
            resp.status()
        );
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
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

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
