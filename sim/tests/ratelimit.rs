//! Rate limits (§3.4): token buckets per key and endpoint class, headers on every response.
mod common;

use common::{Sim, send};
use layers_sim::{SimConfig, Tier};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn standard_write_bucket_runs_out_with_retry_after() {
    let s = Sim::with(SimConfig {
        tier: Tier::Standard,
        ..common::cfg()
    })
    .await;
    let org = s.create_org("r").await; // 1 write
    let path = format!("/v1/organizations/{org}");
    let minted = s
        .write(
            Method::POST,
            &format!("{path}/api-keys"),
            json!({ "name": "k", "scopes": ["content:read"] }),
        )
        .await; // 2 writes
    let child = minted.json["secret"].as_str().unwrap().to_string();
    let mut limited = None;
    for i in 0..70 {
        let r = send(s.req(Method::PATCH, &path).json(&json!({ "name": "same" }))).await;
        assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("write-light"));
        assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
        if r.status == 429 {
            limited = Some((i, r));
            break;
        }
    }
    let (i, r) = limited.expect("the 60/min write bucket must run out");
    assert!((57..=60).contains(&i), "limited after {i} more writes");
    r.assert_error(429, "RATE_LIMITED");
    let ra: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&ra));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // buckets are per key: the child key's write bucket is full
    let c = send(
        s.req_as(&child, Method::POST, "/v1/webhook-endpoints")
            .json(&json!({ "url": "https://e.com", "events": ["test.ping"] })),
    )
    .await;
    assert_eq!(c.status, 201, "{}", c.text);
    assert_eq!(c.header("x-ratelimit-remaining"), Some("59"));
    // reads have their own bucket
    let g = s.get(&path).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.header("x-ratelimit-endpoint-class"), Some("read-light"));
    assert_eq!(g.header("x-ratelimit-limit"), Some("120"));
    assert_eq!(g.header("x-ratelimit-remaining"), Some("119"));
    // the bucket refills at 1 token/s
    tokio::time::sleep(std::time::Duration::from_millis(1100 * ra)).await;
    let r = send(s.req(Method::PATCH, &path).json(&json!({ "name": "same" }))).await;
    assert_eq!(r.status, 200);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn unlimited_tier_never_limits() {
    let s = Sim::start().await;
    for _ in 0..200 {
        let r = s.get("/v1/whoami").await;
        assert_eq!(r.status, 200);
        assert!(r.header("x-ratelimit-limit").is_none());
        assert_eq!(r.header("x-ratelimit-endpoint-class"), Some("read-light"));
    }
    assert_eq!(s.get("/v1/whoami").await.json["rateLimitTier"], "unlimited");
    s.sim.shutdown().await;
}
