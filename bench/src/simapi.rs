//! Reads the simulator's control API: request counters and state.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Result, failed};

/// One counter row: requests by method, route template and HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    pub method: String,
    pub route: String,
    pub status: u16,
    pub count: u64,
}

/// A snapshot of GET /_sim/counters.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub rows: Vec<Row>,
    pub faults_injected: u64,
}

impl Counters {
    /// Parses the counters document; rows are objects with method, route and status.
    pub fn parse(doc: &Value) -> Counters {
        let mut rows = Vec::new();
        collect_rows(doc, &mut rows);
        let faults_injected = find_u64(doc, "faultsInjected").unwrap_or(0);
        Counters {
            rows,
            faults_injected,
        }
    }

    /// Partner-API requests only (the `/_sim/` control routes are not the operator's).
    fn api_rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.route.starts_with("/_sim"))
    }

    pub fn total(&self) -> u64 {
        self.api_rows().map(|r| r.count).sum()
    }

    pub fn with_status(&self, status: u16) -> u64 {
        self.api_rows()
            .filter(|r| r.status == status)
            .map(|r| r.count)
            .sum()
    }

    /// Requests by "METHOD route".
    pub fn by_route(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for r in self.api_rows() {
            *out.entry(format!("{} {}", r.method, r.route)).or_insert(0) += r.count;
        }
        out
    }

    /// Requests by method class: (reads, writes).
    pub fn reads_writes(&self) -> (u64, u64) {
        let reads = self
            .api_rows()
            .filter(|r| r.method == "GET")
            .map(|r| r.count)
            .sum();
        (reads, self.total() - reads)
    }

    /// Successful (2xx) writes, i.e. the writes that cost a write token and did something.
    pub fn ok_writes(&self) -> u64 {
        self.api_rows()
            .filter(|r| r.method != "GET" && (200..300).contains(&r.status))
            .map(|r| r.count)
            .sum()
    }

    /// `self - before`, row by row.
    pub fn since(&self, before: &Counters) -> Counters {
        let mut old: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
        for r in &before.rows {
            *old.entry((r.method.clone(), r.route.clone(), r.status))
                .or_insert(0) += r.count;
        }
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let prev = old
                    .get(&(r.method.clone(), r.route.clone(), r.status))
                    .copied()
                    .unwrap_or(0);
                Row {
                    count: r.count.saturating_sub(prev),
                    ..r.clone()
                }
            })
            .filter(|r| r.count > 0)
            .collect();
        Counters {
            rows,
            faults_injected: self.faults_injected.saturating_sub(before.faults_injected),
        }
    }
}

fn collect_rows(v: &Value, out: &mut Vec<Row>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_rows(i, out)),
        Value::Object(map) => {
            let route = map
                .get("route")
                .or_else(|| map.get("template"))
                .or_else(|| map.get("path"));
            let method = map.get("method");
            let count = map.get("count").or_else(|| map.get("requests"));
            if let (Some(Value::String(route)), Some(Value::String(method)), Some(count)) =
                (route, method, count)
            {
                let status = map
                    .get("status")
                    .and_then(|s| {
                        s.as_u64()
                            .or_else(|| s.as_str().and_then(|s| s.parse().ok()))
                    })
                    .unwrap_or(0);
                out.push(Row {
                    method: method.clone(),
                    route: route.clone(),
                    status: u16::try_from(status).unwrap_or(0),
                    count: count.as_u64().unwrap_or(0),
                });
            } else {
                map.values().for_each(|i| collect_rows(i, out));
            }
        }
        _ => {}
    }
}

fn find_u64(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_u64)
            .or_else(|| map.values().find_map(|i| find_u64(i, key))),
        _ => None,
    }
}

/// A small client for the control API of one simulator.
#[derive(Clone)]
pub struct SimApi {
    http: reqwest::Client,
    base: String,
}

impl SimApi {
    pub fn new(base_url: &str) -> SimApi {
        SimApi {
            http: reqwest::Client::new(),
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    async fn get(&self, path: &str) -> Result<Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        if !resp.status().is_success() {
            return Err(failed(format!("GET {path}: {}", resp.status())));
        }
        Ok(resp.json().await?)
    }

    pub async fn counters(&self) -> Result<Counters> {
        Ok(Counters::parse(&self.get("/_sim/counters").await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn difference_and_totals_ignore_control_routes() {
        let before = Counters::parse(&json!({"requests": [
            {"method": "GET", "route": "/v1/whoami", "status": 200, "count": 1},
        ], "faultsInjected": 2}));
        let after = Counters::parse(&json!({"requests": [
            {"method": "GET", "route": "/v1/whoami", "status": 200, "count": 3},
            {"method": "POST", "route": "/v1/organizations", "status": 201, "count": 5},
            {"method": "POST", "route": "/v1/organizations", "status": 429, "count": 1},
            {"method": "GET", "route": "/_sim/counters", "status": 200, "count": 9},
        ], "faultsInjected": 7}));
        let d = after.since(&before);
        assert_eq!(d.total(), 8);
        assert_eq!(d.reads_writes(), (2, 6));
        assert_eq!(d.ok_writes(), 5);
        assert_eq!(d.with_status(429), 1);
        assert_eq!(d.faults_injected, 5);
        assert_eq!(d.by_route().get("POST /v1/organizations"), Some(&6));
    }
}
