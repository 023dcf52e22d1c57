//! Request counters by (method, route template, status); status 0 = connection dropped.
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use serde_json::{Value, json};

use crate::lock;

#[derive(Debug, Default)]
pub struct Counters {
    requests: Mutex<HashMap<(Method, &'static str, u16), u64>>,
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
