//! What every matrix world shares: applying and reading CustomerOrgs through the API server,
//! waiting without panicking (a world that fails reports why and the others go on), the
//! outcome of one entry and the report.
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use crate::layers::route_diff;
use crate::support::chaos::customer_orgs;
pub use crate::support::world::count_by_status;
use crate::support::{Operator, TestEnv, kubectl};

/// How long one phase of a world may take before the entry is reported as failed.
pub const PHASE: Duration = Duration::from_secs(90);

/// An entry (see [`Entry`]).
pub const fn entry(
    name: &'static str,
    row: &'static str,
    flags: &'static [&'static str],
    named: &'static [&'static str],
) -> Entry {
    Entry {
        name,
        row,
        flags,
        named,
    }
}

/// One alternative of one assumption: a simulator started with `flags`.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Short, DNS-safe; prefixes the entry's object names.
    pub name: &'static str,
    /// The row (0 = the default answers, a further assumption otherwise named).
    pub row: &'static str,
    pub flags: &'static [&'static str],
    /// Reasons this entry may stop with instead of Ready, and what they mean.
    pub named: &'static [&'static str],
}

/// What a world ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The named conditions met on the way (reason: message), in order.
    pub named: Vec<String>,
    /// What the audit (or a phase that never ended) found wrong.
    pub violations: Vec<String>,
    /// Writes the simulator counted, and how many of them it refused (4xx/429).
    pub writes: u64,
    pub refused: u64,
}

impl Outcome {
    pub fn fail(&mut self, msg: impl Into<String>) {
        self.violations.push(msg.into());
    }
}

/// Polls `check` every 250 ms until it yields `Some`; `Err` naming `what` after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The CustomerOrgs of the matrix namespace, written and read like a GitOps tool does
/// (server-side apply, field manager `matrix`).
#[derive(Clone)]
pub struct Corgs {
    pub api: Api<DynamicObject>,
}

impl Corgs {
    pub async fn new(ns: &str, client: kube::Client) -> Corgs {
        Corgs {
            api: Api::namespaced_with(client, ns, &customer_orgs()),
        }
    }

    pub async fn apply(&self, name: &str, manifest: Value) -> Result<(), String> {
        self.api
            .patch(
                name,
                &PatchParams::apply("matrix").force(),
                &Patch::Apply(manifest),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("apply {name}: {e}"))
    }

    pub async fn delete(&self, name: &str) -> Result<(), String> {
        self.api
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(|e| format!("delete {name}: {e}"))
    }

    pub async fn get(&self, name: &str) -> Option<Value> {
        let obj = self.api.get_opt(name).await.ok()??;
        serde_json::to_value(obj).ok()
    }

    /// Ready=True at the current generation, or Ready=False with one of `named` as reason
    /// (returned with its message) at the current generation.
    pub async fn wait(
        &self,
        name: &str,
        what: &str,
        named: &[&str],
    ) -> Result<(Value, Option<String>), String> {
        let last = std::sync::Mutex::new(Value::Null);
        let found = until(&format!("{name} {what}"), PHASE, || async {
            let v = self.get(name).await?;
            let generation = v["metadata"]["generation"].clone();
            let ready = v["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready" && c["observedGeneration"] == generation)?
                .clone();
            *last.lock().unwrap_or_else(|p| p.into_inner()) = v.clone();
            if ready["status"] == "True" {
                return Some((v, None));
            }
            let reason = ready["reason"].as_str().unwrap_or_default();
            named.contains(&reason).then(|| {
                (
                    v.clone(),
                    Some(format!(
                        "{reason}: {}",
                        ready["message"].as_str().unwrap_or_default()
                    )),
                )
            })
        })
        .await;
        let last = last.into_inner().unwrap_or_else(|p| p.into_inner());
        found.map_err(|e| format!("{e}; last conditions {}", last["status"]["conditions"]))
    }

    /// Ready at its generation (`true`), or stopped with one of `named` (`false`, recorded
    /// in `out` with `what`).
    pub async fn settle(
        &self,
        name: &str,
        what: &str,
        named: &[&str],
        out: &mut Outcome,
    ) -> Result<bool, String> {
        let (_, stopped) = self.wait(name, what, named).await?;
        Ok(match stopped {
            None => true,
            Some(n) => {
                out.named.push(format!("{name} ({what}): {n}"));
                false
            }
        })
    }

    /// The object's Ready condition `(reason, message)` when it is not True, and whether it
    /// describes the current generation.
    pub async fn not_ready(&self, name: &str) -> Option<(String, String, bool)> {
        let v = self.get(name).await?;
        let generation = v["metadata"]["generation"].clone();
        let ready = v["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["status"] != "True").then(|| {
            (
                ready["reason"].as_str().unwrap_or_default().to_string(),
                ready["message"].as_str().unwrap_or_default().to_string(),
                ready["observedGeneration"] == generation,
            )
        })
    }

    /// Waits until the object's Ready reason is one of `named` (any generation); returns
    /// `reason: message`.
    pub async fn wait_named(
        &self,
        name: &str,
        what: &str,
        named: &[&str],
    ) -> Result<String, String> {
        until(&format!("{name} {what}"), PHASE, || async {
            self.not_ready(name)
                .await
                .filter(|(reason, _, _)| named.contains(&reason.as_str()))
                .map(|(reason, message, _)| format!("{reason}: {message}"))
        })
        .await
    }

    pub async fn wait_gone(&self, name: &str) -> Result<(), String> {
        until(&format!("{name} deleted"), PHASE, || async {
            matches!(self.api.get_opt(name).await, Ok(None)).then_some(())
        })
        .await
    }
}

/// Writes (not GET) to routes under `prefix`: (all, refused with a 4xx).
pub fn writes_under(counters: &Value, prefix: &str) -> (u64, u64) {
    let all = count_by_status(counters, |m, r, _| m != "GET" && r.starts_with(prefix));
    let refused = count_by_status(counters, |m, r, s| {
        m != "GET" && r.starts_with(prefix) && (400..500).contains(&s)
    });
    (all, refused)
}

/// No write reaches the simulator while the operator checks its provider twice more
/// (`checks` counts those checks in a counters snapshot, `prefix` is the API's route prefix):
/// nothing repeats, nothing loops. `counters` reads the simulator's counters.
pub async fn quiet<F, Fut>(
    what: &str,
    counters: F,
    checks: impl Fn(&Value) -> u64,
    prefix: &str,
) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Value>,
{
    let before = counters().await;
    let start = checks(&before);
    let after = until(&format!("2 provider checks ({what})"), PHASE, || async {
        let c = counters().await;
        (checks(&c) >= start + 2).then_some(c)
    })
    .await?;
    let delta = writes_under(&after, prefix).0 - writes_under(&before, prefix).0;
    if delta > 0 {
        return Err(format!(
            "{delta} write(s) while nothing was left to do ({what}): {}",
            route_diff(&before, &after)
        ));
    }
    Ok(())
}

/// One provider's kind of world: built per entry, then run.
#[allow(async_fn_in_trait)]
pub trait World: Sized {
    async fn new(env: &TestEnv, entry: Entry, client: kube::Client) -> Self;
    fn entry(&self) -> &Entry;
    /// The world's phases; an `Err` is the phase that never ended.
    async fn script(&self, out: &mut Outcome) -> Result<(), String>;
    /// The simulator's counters, and the route prefix of its API.
    async fn counters(&self) -> Value;
    const API: &'static str;

    async fn run(&self) -> Outcome {
        let mut out = Outcome::default();
        if let Err(e) = self.script(&mut out).await {
            out.fail(e);
        }
        let (writes, refused) = writes_under(&self.counters().await, Self::API);
        out.writes = writes;
        out.refused = refused;
        out
    }
}

/// Runs `entries` of one provider at once in a namespace of their own, with one operator,
/// then reports (and panics naming the failed entries).
pub async fn matrix<W: World>(provider: &str, entries: Vec<Entry>) {
    let entries = selected(provider, entries);
    if entries.is_empty() {
        return;
    }
    let env = TestEnv::new(&format!("matrix-{provider}")).await;
    let client = env.client().await;
    let mut worlds = Vec::new();
    for e in entries {
        worlds.push(W::new(&env, e, client.clone()).await);
    }
    let lease = format!("orgops-leader-{}", env.ns);
    let op = Operator::start(
        &env,
        &[
            "--lease-name",
            &lease,
            "--resync-interval",
            "5s",
            "--slow-retry",
            "20s",
        ],
    )
    .await;
    let results = futures::future::join_all(
        worlds
            .iter()
            .map(|w| async move { (w.entry().clone(), w.run().await) }),
    )
    .await;
    drop(op);
    for w in &worlds {
        let p = format!("{}-{}", env.ns, w.entry().name);
        let _ = kubectl(&[
            "delete",
            "orgprovider",
            &p,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
    env.cleanup().await;
    report(provider, results);
}

/// The clients' retry policy: at most this many attempts per request (the first included).
pub const MAX_ATTEMPTS: u64 = 5;

/// Prints one line per entry and panics naming every entry with violations. Besides each
/// world's own audit: no entry sends more writes than the default world's times the retry
/// policy's attempts (each write re-sent at most that often, nothing repeated beyond it).
pub fn report(provider: &str, mut results: Vec<(Entry, Outcome)>) {
    let baseline = results
        .iter()
        .find(|(e, _)| e.name == "default")
        .map(|(_, o)| o.writes);
    if let Some(base) = baseline {
        for (_, out) in &mut results {
            if out.writes > base * MAX_ATTEMPTS {
                out.fail(format!(
                    "{} writes: the default world needs {base}, and {MAX_ATTEMPTS} attempts each would be {}",
                    out.writes,
                    base * MAX_ATTEMPTS
                ));
            }
        }
    }
    let mut failed = Vec::new();
    for (entry, out) in &results {
        let verdict = if !out.violations.is_empty() {
            "FAILED"
        } else if out.named.is_empty() {
            "converged"
        } else {
            "named condition"
        };
        eprintln!(
            "matrix {provider}/{} (row {}, {}): {verdict}; {} writes, {} refused{}{}",
            entry.name,
            entry.row,
            if entry.flags.is_empty() {
                "defaults".to_string()
            } else {
                entry.flags.join(" ")
            },
            out.writes,
            out.refused,
            out.named
                .iter()
                .map(|n| format!("\n    met {n}"))
                .collect::<String>(),
            out.violations
                .iter()
                .map(|v| format!("\n    VIOLATION {v}"))
                .collect::<String>(),
        );
        if !out.violations.is_empty() {
            failed.push(entry.name);
        }
    }
    assert!(
        failed.is_empty(),
        "{provider}: {} of {} matrix entries failed: {}",
        failed.len(),
        results.len(),
        failed.join(", ")
    );
}

/// The entries `ORGOPS_MATRIX` selects (comma-separated `provider/entry` or `provider`);
/// all when unset.
pub fn selected(provider: &str, all: Vec<Entry>) -> Vec<Entry> {
    let Ok(filter) = std::env::var("ORGOPS_MATRIX") else {
        return all;
    };
    all.into_iter()
        .filter(|e| {
            filter
                .split(',')
                .map(str::trim)
                .any(|f| f == provider || f == format!("{provider}/{}", e.name) || f == e.name)
        })
        .collect()
}
