//! Fault injection: every mode, run-time control through /_sim/faults, and the counters.
mod common;

use common::{Sim, send};
use layers_sim::{FaultConfig, LoseMode, SimConfig};
use reqwest::Method;
use serde_json::json;

async fn set_faults(s: &Sim, cfg: serde_json::Value) -> common::Resp {
    send(s.http.put(s.url("/_sim/faults")).json(&cfg)).await
}

async fn faults_injected(s: &Sim) -> u64 {
    send(s.http.get(s.url("/_sim/counters"))).await.json["faultsInjected"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn error_5xx_and_429_before_executing() {
    let s = Sim::start().await;
    assert_eq!(set_faults(&s, json!({ "error5xx": 1.0 })).await.status, 200);
    let r = s
        .write(Method::POST, "/v1/organizations", json!({ "name": "x" }))
        .await;
    assert!([500, 502, 503].contains(&r.status), "{}", r.text);
    assert!(["INTERNAL_ERROR", "BAD_GATEWAY", "SERVICE_UNAVAILABLE"].contains(&r.code()));
    set_faults(&s, json!({ "rateLimit429": 1.0 })).await;
    let r = s
        .write(Method::POST, "/v1/organizations", json!({ "name": "x" }))
        .await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.header("retry-after"), Some("1"));
    set_faults(&s, json!({})).await;
    assert!(
        s.state().await["orgs"].as_array().unwrap().is_empty(),
        "nothing executed"
    );
    assert_eq!(faults_injected(&s).await, 2);
    // /_sim/ routes never get faults
    set_faults(&s, json!({ "error5xx": 1.0, "reset": 1.0 })).await;
    assert_eq!(send(s.http.get(s.url("/_sim/state"))).await.status, 200);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn reset_drops_the_connection_without_executing() {
    let s = Sim::start().await;
    set_faults(&s, json!({ "reset": 1.0 })).await;
    let err = s
        .req(Method::POST, "/v1/organizations")
        .json(&json!({ "name": "x" }))
        .send()
        .await;
    assert!(err.is_err(), "the connection must be dropped");
    set_faults(&s, json!({})).await;
    assert!(s.state().await["orgs"].as_array().unwrap().is_empty());
    s.sim.shutdown().await;
}

#[tokio::test]
async fn lose_response_commits_then_replays() {
    let s = Sim::start().await;
    for mode in ["badGateway", "drop"] {
        set_faults(&s, json!({ "loseResponse": 1.0, "loseResponseMode": mode })).await;
        let key = format!("lost-{mode}");
        let mk = || {
            s.req(Method::POST, "/v1/organizations")
                .header("Idempotency-Key", key.clone())
                .json(&json!({ "name": mode }))
        };
        match mode {
            "badGateway" => send(mk()).await.assert_error(502, "BAD_GATEWAY"),
            _ => assert!(mk().send().await.is_err(), "connection dropped"),
        }
        set_faults(&s, json!({})).await;
        // the change was committed ...
        let orgs = s.state().await["orgs"].as_array().unwrap().clone();
        assert!(orgs.iter().any(|o| o["name"] == mode));
        // ... and a retry with the same key replays it instead of creating a duplicate
        let retry = send(mk()).await;
        assert_eq!(retry.status, 201);
        assert_eq!(retry.json["name"], mode);
        let n = s.state().await["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["name"] == mode)
            .count();
        assert_eq!(n, 1);
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn latency_and_per_class_overrides() {
    let s = Sim::start().await;
    set_faults(
        &s,
        json!({ "latency": 1.0, "latencyMs": 150, "write": { "error5xx": 1.0 } }),
    )
    .await;
    let t = std::time::Instant::now();
    assert_eq!(
        s.get("/v1/whoami").await.status,
        200,
        "reads use the top-level rates"
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(150));
    let w = s
        .write(Method::POST, "/v1/organizations", json!({ "name": "x" }))
        .await;
    assert!(w.status >= 500, "writes use the write override");
    let got = send(s.http.get(s.url("/_sim/faults"))).await;
    assert_eq!(got.json["latencyMs"], 150);
    assert_eq!(got.json["write"]["error5xx"], 1.0);
    for (body, field) in [
        (json!({ "reset": 2.0 }), "reset"),
        (json!({ "bogus": 1 }), "bogus"),
        (json!({ "latencyMs": "slow" }), "latencyMs"),
        (
            json!({ "loseResponseMode": "sometimes" }),
            "loseResponseMode",
        ),
        (json!({ "write": { "nope": 1 } }), "write"),
        (json!({ "slowCommit": -0.5 }), "slowCommit"),
    ] {
        let r = set_faults(&s, body.clone()).await;
        r.assert_error(422, "VALIDATION");
        assert_eq!(r.json["error"]["details"]["field"], field, "{body}");
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn start_up_faults_and_counters() {
    let s = Sim::with(SimConfig {
        faults: FaultConfig {
            lose_response: 1.0,
            lose_response_mode: LoseMode::BadGateway,
            ..FaultConfig::default()
        },
        ..common::cfg()
    })
    .await;
    s.get("/v1/whoami").await.assert_error(502, "BAD_GATEWAY");
    let c = send(s.http.get(s.url("/_sim/counters"))).await.json;
    let row = c["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/v1/whoami")
        .cloned()
        .unwrap();
    assert_eq!(
        (
            row["method"].as_str(),
            row["status"].as_u64(),
            row["count"].as_u64()
        ),
        (Some("GET"), Some(502), Some(1))
    );
    assert_eq!(c["faultsInjected"], 1);
    send(s.http.post(s.url("/_sim/reset"))).await;
    assert_eq!(faults_injected(&s).await, 0);
    s.sim.shutdown().await;
}
