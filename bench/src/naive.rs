//! The naive baseline: seed 002's six calls per customer, one customer after another.
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{Result, failed};

pub struct NaiveResult {
    pub orgs: usize,
    pub wall: Duration,
    pub calls: u64,
}

/// Provisions `n` customers with a plain HTTP client: create, mint key, allocate,
/// credit-config, webhook (inside the child, like the operator), verify GET.
pub async fn run(base_url: &str, parent_key: &str, n: usize) -> Result<NaiveResult> {
    let http = reqwest::Client::new();
    let base = base_url.trim_end_matches('/');
    let start = Instant::now();
    let mut calls = 0u64;
    for i in 0..n {
        let ext = format!("naive-{i:05}");
        let org = send(
            http.post(format!("{base}/v1/organizations")),
            parent_key,
            Some(json!({"name": format!("Customer {i:05}"), "metadata": {"externalId": ext}})),
        )
        .await?;
        let id = org["id"]
            .as_str()
            .or_else(|| org["organization"]["id"].as_str())
            .ok_or_else(|| failed(format!("create org: no id in {org}")))?
            .to_string();
        let org_url = format!("{base}/v1/organizations/{id}");
        let key_body = json!({"name": "integration", "scopes": ["content:read", "content:write"]});
        send(
            http.post(format!("{org_url}/api-keys")),
            parent_key,
            Some(key_body),
        )
        .await?;
        send(
            http.post(format!("{org_url}/credits/allocate")),
            parent_key,
            Some(json!({"credits": 10})),
        )
        .await?;
        send(
            http.patch(format!("{org_url}/credit-config")),
            parent_key,
            Some(json!({"monthlyCreditCap": 100})),
        )
        .await?;
        let hook = json!({
            "url": "https://crm.example.com/layers/webhooks",
            "events": ["content.generated", "post.published"],
        });
        let in_child = http
            .post(format!("{base}/v1/webhook-endpoints"))
            .header("X-Layers-Organization", &id);
        send(in_child, parent_key, Some(hook)).await?;
        send(http.get(&org_url), parent_key, None).await?;
        calls += 6;
    }
    Ok(NaiveResult {
        orgs: n,
        wall: start.elapsed(),
        calls,
    })
}

/// Sends `req` with the parent key (and, with a body, a fresh idempotency key); the JSON
/// answer, or the status and body as an error.
pub async fn send(req: reqwest::RequestBuilder, key: &str, body: Option<Value>) -> Result<Value> {
    let mut req = req.bearer_auth(key);
    if let Some(body) = body {
        req = req
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(failed(format!("naive call failed: {status} {text}")));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}
