//! `/_sim/clock`: the idempotency window, key-rotation grace and the daily cap follow the
//! simulator's clock (the monthly period is in spending.rs).
mod common;

use common::{Sim, send};
use layers_sim::{SimConfig, Tier};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn clock_moves_forward_only_and_refuses_bad_bodies() {
    let s = Sim::start().await;
    let before = s.get("/_sim/clock").await; // control routes ignore the bearer
    assert_eq!(before.json["offsetSeconds"], 0);
    let r = s
        .ctl(
            Method::POST,
            "/_sim/clock",
            json!({ "advanceSeconds": 3600 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["offsetSeconds"], 3600);
    assert!(r.json["now"].as_str().unwrap() > before.json["now"].as_str().unwrap());
    for body in [
        json!({}),
        json!({ "advanceSeconds": -1 }),
        json!({ "advanceSeconds": "1h" }),
        json!({ "advanceSeconds": 1.5 }),
        json!({ "advanceSeconds": 1, "x": 1 }),
    ] {
        let r = s.ctl(Method::POST, "/_sim/clock", body.clone()).await;
        r.assert_error(422, "VALIDATION");
        assert!(
            r.json["error"]["details"]["field"].is_string(),
            "{body}: {}",
            r.text
        );
    }
    // timestamps the API writes follow the clock
    let org = s.create_org("later").await;
    let o = s.get(&format!("/v1/organizations/{org}")).await;
    let created: jiff::Timestamp = o.json["createdAt"].as_str().unwrap().parse().unwrap();
    let advanced: jiff::Timestamp = r.json["now"].as_str().unwrap().parse().unwrap();
    assert!(created >= advanced, "{created} < {advanced}");
    let st = s.state().await;
    assert_eq!(st["clock"]["offsetSeconds"], 3600);
    // reset keeps the clock (time never runs backwards)
    send(s.http.post(s.url("/_sim/reset"))).await;
    assert_eq!(s.get("/_sim/clock").await.json["offsetSeconds"], 3600);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn idempotency_window_follows_the_clock() {
    let s = Sim::start().await;
    let create = || {
        s.req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", "once")
            .json(&json!({ "name": "Acme" }))
    };
    let a = send(create()).await;
    s.advance(23 * 3600).await;
    let b = send(create()).await;
    assert_eq!(a.text, b.text, "still inside the 24 h window");
    s.advance(3600 + 1).await;
    let c = send(create()).await;
    assert_eq!(c.status, 201);
    assert_ne!(
        c.json["id"], a.json["id"],
        "after 24 h the key executes again"
    );
    assert!(c.header("idempotent-replayed").is_none());
    s.sim.shutdown().await;
}

#[tokio::test]
async fn rotated_key_keeps_working_for_the_24h_grace_only() {
    let s = Sim::start().await;
    let org = s.create_org("k").await;
    let m = s.mint_read_key(&org).await;
    let old = m.json["secret"].as_str().unwrap().to_string();
    let kid = m.json["apiKey"]["id"].as_str().unwrap().to_string();
    let r = s
        .write(
            Method::POST,
            &format!("/v1/organizations/{org}/api-keys/{kid}/rotate"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new = r.json["secret"].as_str().unwrap().to_string();
    let whoami = |k: &str| send(s.req_as(k, Method::GET, "/v1/whoami"));
    assert_eq!(whoami(&old).await.status, 200);
    s.advance(23 * 3600).await;
    assert_eq!(whoami(&old).await.status, 200, "inside the grace window");
    s.advance(3600 + 1).await;
    whoami(&old).await.assert_error(401, "UNAUTHENTICATED");
    assert_eq!(whoami(&new).await.status, 200);
    let keys = s.get(&format!("/v1/organizations/{org}/api-keys")).await;
    let old_rec = keys.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == kid.as_str())
        .unwrap()
        .clone();
    assert_eq!(old_rec["status"], "revoked");
    assert_eq!(old_rec["revokedAt"], old_rec["graceUntil"]);
    s.sim.shutdown().await;
}

/// Each tier reports its documented daily write cap on writes (none on reads).
#[tokio::test]
async fn documented_daily_caps_per_tier() {
    for (tier, cap) in [
        (Tier::Standard, "10000"),
        (Tier::Pilot, "100000"),
        (Tier::Partner, "500000"),
    ] {
        let s = Sim::with(SimConfig {
            tier,
            ..common::cfg()
        })
        .await;
        let r = s
            .write(Method::POST, "/v1/organizations", json!({ "name": "x" }))
            .await;
        assert_eq!(r.header("x-ratelimit-daily-limit"), Some(cap), "{tier:?}");
        let left = cap.parse::<u64>().unwrap() - 1;
        assert_eq!(
            r.header("x-ratelimit-daily-remaining"),
            Some(left.to_string().as_str())
        );
        assert!(
            s.get("/v1/whoami")
                .await
                .header("x-ratelimit-daily-limit")
                .is_none()
        );
        s.sim.shutdown().await;
    }
}

/// The daily cap (here lowered with `daily_write_cap`; the count itself is unit-tested with
/// the documented 10,000) refuses until UTC midnight on the simulator's clock.
#[tokio::test]
async fn daily_write_cap_refuses_until_midnight() {
    let s = Sim::with(SimConfig {
        tier: Tier::Standard,
        daily_write_cap: Some(100),
        ..common::cfg()
    })
    .await;
    // start just after a UTC midnight so every write falls on the same day
    let now = s.get("/_sim/clock").await.json["now"]
        .as_str()
        .unwrap()
        .to_string();
    let t: jiff::Timestamp = now.parse().unwrap();
    s.advance(86_400 - t.as_second().rem_euclid(86_400) + 1)
        .await;
    let org = s.create_org("busy").await; // write 1
    let suspend = format!("/v1/organizations/{org}/suspend");
    for i in 2..=100 {
        if i % 50 == 0 {
            s.advance(60).await; // keep the per-minute bucket full
        }
        let r = send(s.req(Method::POST, &suspend)).await;
        assert_eq!(r.status, 200, "write {i}: {}", r.text);
        if i == 100 {
            assert_eq!(r.header("x-ratelimit-daily-limit"), Some("100"));
            assert_eq!(r.header("x-ratelimit-daily-remaining"), Some("0"));
        }
    }
    let r = send(s.req(Method::POST, &suspend)).await;
    r.assert_error(429, "RATE_LIMITED");
    let d = &r.json["error"]["details"];
    assert_eq!((&d["window"], &d["limit"]), (&json!("day"), &json!(100)));
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    let daily_reset: i64 = r
        .header("x-ratelimit-daily-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, daily_reset);
    let now = s.get("/_sim/clock").await.json["now"]
        .as_str()
        .unwrap()
        .to_string();
    let t: jiff::Timestamp = now.parse().unwrap();
    let to_midnight = 86_400 - t.as_second().rem_euclid(86_400);
    assert!(retry > 80_000, "hours away, not seconds: {retry}");
    assert!(
        (retry - to_midnight).abs() <= 1,
        "Retry-After {retry} vs {to_midnight}"
    );
    assert!(
        d["resetAt"].as_str().unwrap().ends_with("T00:00:00.000Z"),
        "{d}"
    );
    // a refused write does not use the per-minute bucket; reads are not capped per day
    assert_eq!(s.get("/v1/whoami").await.status, 200);
    s.advance(retry - 2).await;
    send(s.req(Method::POST, &suspend))
        .await
        .assert_error(429, "RATE_LIMITED");
    s.advance(2).await;
    let r = send(s.req(Method::POST, &suspend)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-ratelimit-daily-remaining"), Some("99"));
    s.sim.shutdown().await;
}
