//! The `layers-sim` binary as a child process on a free loopback port.
use super::{log_dir, random_suffix, workspace_root};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running simulator with `--control`; killed on drop.
#[derive(Debug)]
pub struct Sim {
    child: Child,
    base_url: String,
    parent_key: String,
    log_path: PathBuf,
    http: reqwest::Client,
}

fn sim_bin() -> PathBuf {
    std::env::var_os("LAYERS_SIM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/layers-sim"))
}

impl Sim {
    /// Starts `layers-sim --control --listen 127.0.0.1:0 <args>` and waits (10 s at most)
    /// for its `parent key:` and `listening on` lines.
    pub fn start(args: &[&str]) -> Sim {
        let bin = sim_bin();
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build -p layers-sim` or set LAYERS_SIM_BIN",
            bin.display()
        );
        let log_path = log_dir().join(format!("sim-{}.log", random_suffix()));
        let log = File::create(&log_path).expect("create sim log");
        let mut child = Command::new(&bin)
            .args(["--control", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone().expect("clone sim log handle"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("sim stdout");
        let (tx, rx) = mpsc::channel();
        // A plain thread keeps draining stdout into the log for the child's whole life,
        // independent of whichever tokio runtime the test uses.
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(key) = line.strip_prefix("parent key: ") {
                    let _ = tx.send(("key", key.trim().to_string()));
                } else if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(("url", addr.trim().to_string()));
                }
            }
        });
        let (mut key, mut url) = (None, None);
        while key.is_none() || url.is_none() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(("key", v)) => key = Some(v),
                Ok((_, v)) => url = Some(v),
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!(
                        "timed out after 10s waiting for layers-sim to print `parent key:` and `listening on`; log:\n{log}"
                    );
                }
            }
        }
        Sim {
            child,
            base_url: url.expect("sim url").trim_end_matches('/').to_string(),
            parent_key: key.expect("sim parent key"),
            log_path,
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
