//! The simulator and the operator as child processes.
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::error::{BenchError, Result, failed};

/// The workspace root (bench/..).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn log_dir() -> Result<PathBuf> {
    let dir = workspace_root().join("target/bench-logs");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub fn bin(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(default))
}

pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn stamp() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..6].to_string()
}

/// `layers-sim --control` on a free loopback port; killed on drop.
pub struct SimProc {
    child: Child,
    pub base_url: String,
    pub parent_key: String,
}

impl SimProc {
    pub fn start(tier: &str, extra: &[String]) -> Result<SimProc> {
        let bin = bin("LAYERS_SIM_BIN", "target/release/layers-sim");
        let log_path = log_dir()?.join(format!("sim-{tier}-{}.log", stamp()));
        let log = File::create(&log_path)?;
        let mut child = Command::new(&bin)
            .args(["--control", "--listen", "127.0.0.1:0", "--tier", tier])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?)
            .spawn()
            .map_err(|e| failed(format!("spawn {}: {e}", bin.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| failed("sim stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if let Some(key) = line.strip_prefix("parent key: ") {
                    let _ = tx.send((true, key.trim().to_string()));
                } else if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send((false, addr.trim().to_string()));
                }
            }
        });
        let (mut key, mut url) = (None, None);
        while key.is_none() || url.is_none() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok((true, v)) => key = Some(v),
                Ok((false, v)) => url = Some(v),
                Err(_) => {
                    let _ = child.kill();
                    return Err(failed(format!(
                        "layers-sim did not print its key and address; see {}",
                        log_path.display()
                    )));
                }
            }
        }
        let base_url = url.unwrap_or_default().trim_end_matches('/').to_string();
        let base_url = if base_url.starts_with("http") {
            base_url
        } else {
            format!("http://{base_url}")
        };
        Ok(SimProc {
            child,
            base_url,
            parent_key: key.unwrap_or_default(),
        })
    }
}

impl SimProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `orgops run` as a release binary with the admin kubeconfig; SIGKILLed on drop.
pub struct OperatorProc {
    child: Option<Child>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log_path: PathBuf,
    pub metrics_addr: String,
}

impl OperatorProc {
    pub fn start(
        kubeconfig: &Path,
        ns: &str,
        resync: &str,
        concurrency: u16,
        extra: &[String],
    ) -> Result<OperatorProc> {
        let metrics_addr = format!("127.0.0.1:{}", free_port()?);
        let mut args: Vec<String> = [
            "run",
            "--namespaces",
            ns,
            "--metrics-addr",
            &metrics_addr,
            "--resync-interval",
            resync,
            "--concurrency",
            &concurrency.to_string(),
            // A SIGKILLed leader would hold the Lease until it expires; a benchmark
            // runs one replica, so the restart figure measures the operator, not the Lease.
            "--leader-election=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().cloned());
        let mut op = OperatorProc {
            child: None,
            args,
            kubeconfig: kubeconfig.to_path_buf(),
            log_path: log_dir()?.join(format!("operator-{ns}.log")),
            metrics_addr: metrics_addr.clone(),
        };
        op.spawn()?;
        Ok(op)
    }

    fn spawn(&mut self) -> Result<()> {
        let bin = bin("ORGOPS_BIN", "target/release/orgops");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(&bin)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| failed(format!("spawn {}: {e}", bin.display())))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails when the operator exited on its own (crash or bad flags).
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => Ok(()),
            _ => Err(BenchError::Failed(format!(
                "the operator is not running; see {}",
                self.log_path.display()
            ))),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OperatorProc {
    fn drop(&mut self) {
        self.kill();
    }
}
