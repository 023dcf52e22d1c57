//! Rate limits (§3.4): per-minute limits per key and endpoint class (token bucket or fixed
//! window), headers on every response. The daily cap is in clock.rs.
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
    // the bucket refills at 1 token/s on the simulator's clock
    s.advance(ra as i64).await;
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

#[tokio::test]
async fn fixed_window_refuses_until_the_next_minute() {
    let s = Sim::with(SimConfig {
        tier: Tier::Standard,
        rate_limit_algorithm: layers_sim::RateLimitAlgorithm::FixedWindow,
        ..common::cfg()
    })
    .await;
    assert_eq!(s.state().await["rateLimitAlgorithm"], "fixed-window");
    // start one second into a fresh simulated minute so the loop stays inside one window
    let now: jiff::Timestamp = s.get("/_sim/clock").await.json["now"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    s.advance(60 - now.as_second().rem_euclid(60) + 1).await;
    let org = s.create_org("f").await;
    let path = format!("/v1/organizations/{org}/suspend");
    let mut refused = None;
    for i in 0..61 {
        let r = send(s.req(Method::POST, &path)).await;
        if r.status == 429 {
            refused = Some((i, r));
            break;
        }
        assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
    }
    let (i, r) = refused.expect("the 61st write in one window must be refused");
    assert_eq!(i, 59, "create + 59 writes fill the window of 60");
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.json["error"]["details"]["window"], "minute");
    let ra: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&ra), "Retry-After {ra}");
    assert_eq!(
        r.header("x-ratelimit-reset")
            .map(|v| v.parse::<i64>().unwrap()),
        Some(ra)
    );
    s.advance(ra).await;
    let r = send(s.req(Method::POST, &path)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("59"));
    s.sim.shutdown().await;
}
