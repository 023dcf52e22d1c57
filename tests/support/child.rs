//! A simulator binary as a child process on a free loopback port: started with
//! `--control --listen 127.0.0.1:0`, ready once it printed its key line and `listening on`.
use super::{log_dir, random_suffix, workspace_root};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A started simulator: the child, its URL, the credential it printed, its log file.
#[derive(Debug)]
pub struct Started {
    pub child: Child,
    pub base_url: String,
    pub key: String,
    pub log_path: PathBuf,
}

/// `$env_var`, else `target/debug/<name>`.
pub fn bin(name: &str, env_var: &str) -> PathBuf {
    std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug").join(name))
}

/// Starts `name` and waits (10 s at most) for its `<key_prefix>` and `listening on` lines.
/// The key is a credential: it stays out of the log file.
pub fn start(name: &str, env_var: &str, key_prefix: &str, args: &[&str]) -> Started {
    let bin = bin(name, env_var);
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p {name}` or set {env_var}",
        bin.display()
    );
    let log_path = log_dir().join(format!("{name}-{}.log", random_suffix()));
    let log = File::create(&log_path).expect("create simulator log");
    let mut child = Command::new(&bin)
        .args(["--control", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone().expect("clone simulator log handle"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("simulator stdout");
    let (tx, rx) = mpsc::channel();
    let prefix = key_prefix.to_string();
    // A plain thread drains stdout into the log for the child's whole life, independent
    // of whichever tokio runtime the test uses.
    std::thread::spawn(move || {
        let mut log = log;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(key) = line.strip_prefix(&prefix) {
                let _ = writeln!(log, "{prefix}(redacted)");
                let _ = tx.send(("key", key.trim().to_string()));
            } else {
                let _ = writeln!(log, "{line}");
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(("url", addr.trim().to_string()));
                }
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
                    "timed out after 10s waiting for {name} to print `{key_prefix}` and `listening on`; log:\n{log}"
                );
            }
        }
    }
    Started {
        child,
        base_url: url
            .expect("simulator url")
            .trim_end_matches('/')
            .to_string(),
        key: key.expect("simulator key"),
        log_path,
    }
}
