//! Request counters by (method, route template, status); status 0 = connection dropped.
//! Also the write log: every API request that is not a read, when it arrived and who sent
//! it (the `X-Orgops-Replica` and `X-Orgops-Fence-Deadline` headers orgops stamps on its
//! writes), so a test can check that no replica wrote outside its leader fence.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use serde_json::{Value, json};

use crate::lock;

/// One write as it arrived.
#[derive(Debug, Clone)]
struct WriteRecord {
    /// Wall clock (not the simulator clock), Unix milliseconds.
    at_ms: u64,
    method: Method,
    route: &'static str,
    replica: Option<String>,
    deadline_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Counters {
    requests: Mutex<HashMap<(Method, &'static str, u16), u64>>,
    writes: Mutex<Vec<WriteRecord>>,
    faults_injected: AtomicU64,
    /// Successful requests whose answer a lose-response fault threw away (commit-then-lose).
    lost_after_success: Mutex<HashMap<(Method, &'static str), u64>>,
}

impl Counters {
    pub fn count(&self, method: &Method, template: &'static str, status: u16) {
        *lock(&self.requests)
            .entry((method.clone(), template, status))
            .or_insert(0) += 1;
    }

    /// Logs an API request that is not a read, at its arrival, before any fault.
    pub fn arrived(&self, method: &Method, template: &'static str, headers: &http::HeaderMap) {
        if method == Method::GET || method == Method::HEAD {
            return;
        }
        let header = |name: &str| crate::header(headers, name).filter(|v| !v.is_empty());
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        lock(&self.writes).push(WriteRecord {
            at_ms,
            method: method.clone(),
            route: template,
            replica: header("x-orgops-replica"),
            deadline_ms: header("x-orgops-fence-deadline").and_then(|v| v.parse().ok()),
        });
    }

    /// `{ writes: [{atMs, method, route, replica, fenceDeadlineMs}] }` in arrival order.
    pub fn writes_json(&self) -> Value {
        let writes: Vec<Value> = lock(&self.writes)
            .iter()
            .map(|w| {
                json!({
                    "atMs": w.at_ms, "method": w.method.to_string(), "route": w.route,
                    "replica": w.replica, "fenceDeadlineMs": w.deadline_ms,
                })
            })
            .collect();
        json!({ "writes": writes })
    }

    pub fn fault_injected(&self) {
        self.faults_injected.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that succeeded (2xx, its change kept) but whose answer was lost.
    pub fn lost_after_success(&self, method: &Method, template: &'static str) {
        *lock(&self.lost_after_success)
            .entry((method.clone(), template))
            .or_insert(0) += 1;
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults_injected.load(Ordering::Relaxed)
    }

    /// How many requests matched `method` + `template` (any status, drops included).
    pub fn total(&self, method: &Method, template: &str) -> u64 {
        lock(&self.requests)
            .iter()
            .filter(|((m, t, _), _)| m == method && *t == template)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn clear(&self) {
        lock(&self.requests).clear();
        lock(&self.writes).clear();
        lock(&self.lost_after_success).clear();
        self.faults_injected.store(0, Ordering::Relaxed);
    }

    /// Every (method, route template, status, count), in no particular order.
    pub fn rows(&self) -> Vec<(String, &'static str, u16, u64)> {
        lock(&self.requests)
            .iter()
            .map(|((m, r, s), n)| (m.to_string(), *r, *s, *n))
            .collect()
    }

    /// `{ requests: [{method, route, status, count}], faultsInjected, lostAfterSuccess:
    /// [{method, route, count}] }`, rows sorted.
    pub fn json(&self) -> Value {
        let mut rows = self.rows();
        rows.sort();
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|(m, r, s, n)| json!({ "method": m, "route": r, "status": s, "count": n }))
            .collect();
        let mut lost: Vec<(String, &'static str, u64)> = lock(&self.lost_after_success)
            .iter()
            .map(|((m, r), n)| (m.to_string(), *r, *n))
            .collect();
        lost.sort();
        let lost: Vec<Value> = lost
            .into_iter()
            .map(|(m, r, n)| json!({ "method": m, "route": r, "count": n }))
            .collect();
        json!({ "requests": rows, "faultsInjected": self.faults_injected(), "lostAfterSuccess": lost })
    }
}
