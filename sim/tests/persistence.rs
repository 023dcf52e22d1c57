//! --state-file: state survives a restart; /_sim/reset; the control API is off by default.
mod common;

use common::{Sim, send};
use layers_sim::SimConfig;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let cfg = SimConfig {
        state_file: Some(file.clone()),
        ..common::cfg()
    };
    let s = Sim::with(cfg.clone()).await;
    let org = s.create_org("persist").await;
    // No Idempotency-Key: a stored mint response would (by design) keep the secret for replays.
    let k = send(
        s.req(Method::POST, &format!("/v1/organizations/{org}/api-keys"))
            .json(&json!({ "name": "k", "scopes": ["content:read"] })),
    )
    .await;
    let child = k.json["secret"].as_str().unwrap().to_string();
    let alloc = s
        .req(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
        )
        .header("Idempotency-Key", "p1")
        .json(&json!({ "credits": 42 }));
    let first = send(alloc).await;
    // the clock, spending and switches are state too
    s.advance(7200).await;
    assert_eq!(s.spend(&org, 2).await.status, 200);
    s.ctl(
        Method::PATCH,
        "/_sim/switches",
        json!({ "parentKeyRevoked": true }),
    )
    .await;
    let parent_key = s.key.clone();
    let parent_org = s.sim.parent_org_id.clone();
    s.sim.shutdown().await;

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains(&child),
        "child secrets are stored only as hashes"
    );

    let s = Sim::with(cfg).await;
    assert_eq!(s.key, parent_key, "the parent key is kept");
    assert_eq!(s.sim.parent_org_id, parent_org);
    let r = s.get(&format!("/v1/organizations/{org}")).await;
    assert_eq!(r.status, 401, "the parent key stays revoked: {}", r.text);
    s.ctl(
        Method::PATCH,
        "/_sim/switches",
        json!({ "parentKeyRevoked": false }),
    )
    .await;
    assert_eq!(s.get("/_sim/clock").await.json["offsetSeconds"], 7200);
    let r = s.get(&format!("/v1/organizations/{org}")).await;
    assert_eq!(r.json["summary"]["balance"], 40);
    let w = s.get(&format!("/v1/organizations/{org}/credits")).await;
    assert_eq!(w.json["usedThisPeriod"], 2);
    assert_eq!(
        send(s.req_as(&child, Method::GET, "/v1/whoami"))
            .await
            .status,
        200
    );
    // the idempotency store survives too
    let again = send(
        s.req(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
        )
        .header("Idempotency-Key", "p1")
        .json(&json!({ "credits": 42 })),
    )
    .await;
    assert_eq!(again.json["id"], first.json["id"]);
    assert_eq!(again.json["replayed"], true);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn reset_restores_a_fresh_world() {
    let s = Sim::start().await;
    let org = s.create_org("gone").await;
    s.write(
        Method::POST,
        &format!("/v1/organizations/{org}/credits/allocate"),
        json!({ "credits": 10 }),
    )
    .await;
    assert_eq!(send(s.http.post(s.url("/_sim/reset"))).await.status, 200);
    let st = s.state().await;
    assert!(st["orgs"].as_array().unwrap().is_empty());
    assert_eq!(st["parent"]["balance"], 1_000_000);
    assert_eq!(
        s.get("/v1/whoami").await.status,
        200,
        "same parent key after reset"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn control_api_only_when_enabled() {
    let s = Sim::with(SimConfig {
        control: false,
        ..common::cfg()
    })
    .await;
    send(s.http.get(s.url("/_sim/state")))
        .await
        .assert_error(404, "NOT_FOUND");
    send(s.http.post(s.url("/_sim/reset")))
        .await
        .assert_error(404, "NOT_FOUND");
    s.sim.shutdown().await;
}
