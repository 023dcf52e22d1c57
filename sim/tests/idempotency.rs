//! Idempotency (§3.2): byte-for-byte replay, conflicts, scoping, stored failures, concurrency.
mod common;

use common::{Sim, send};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn replay_is_byte_for_byte_and_does_not_reexecute() {
    let s = Sim::start().await;
    let mint = |key: &str, body: serde_json::Value| {
        s.req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", key.to_string())
            .json(&body)
    };
    let a = send(mint("k1", json!({ "name": "Acme" }))).await;
    let b = send(mint("k1", json!({ "name": "Acme" }))).await;
    assert_eq!((a.status, b.status), (201, 201));
    assert_eq!(a.text, b.text, "replay must be byte-identical");
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));
    assert_eq!(s.get("/v1/organizations").await.item_count(), 1);
    // same key, different body
    send(mint("k1", json!({ "name": "Other" })))
        .await
        .assert_error(409, "IDEMPOTENCY_CONFLICT");
    // same key on a different route is a different request too
    let org = a.json["id"].as_str().unwrap();
    let k = send(
        s.req(Method::POST, &format!("/v1/organizations/{org}/api-keys"))
            .header("Idempotency-Key", "k1")
            .json(&json!({ "name": "Acme" })),
    )
    .await;
    k.assert_error(409, "IDEMPOTENCY_CONFLICT");
    // without a key every call executes
    send(
        s.req(Method::POST, "/v1/organizations")
            .json(&json!({ "name": "dup" })),
    )
    .await;
    send(
        s.req(Method::POST, "/v1/organizations")
            .json(&json!({ "name": "dup" })),
    )
    .await;
    assert_eq!(s.get("/v1/organizations").await.item_count(), 3);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn mint_and_allocate_replays() {
    let s = Sim::start().await;
    let org = s.create_org("a").await;
    let mint = || {
        s.req(Method::POST, &format!("/v1/organizations/{org}/api-keys"))
            .header("Idempotency-Key", "mint-1")
            .json(&json!({ "name": "k", "scopes": ["content:read"] }))
    };
    let a = send(mint()).await;
    let b = send(mint()).await;
    assert_eq!(a.text, b.text, "a replayed mint returns the same secret");
    assert_eq!(
        s.get(&format!("/v1/organizations/{org}/api-keys"))
            .await
            .item_count(),
        1
    );

    let alloc = || {
        s.req(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
        )
        .header("Idempotency-Key", "alloc-1")
        .json(&json!({ "credits": 250 }))
    };
    let a = send(alloc()).await;
    let b = send(alloc()).await;
    assert_eq!(a.json["replayed"], false);
    assert_eq!(b.json["replayed"], true);
    assert_eq!(a.json["id"], b.json["id"]);
    let mut a2 = a.json.clone();
    a2["replayed"] = json!(true);
    assert_eq!(a2, b.json, "replayed is the only difference");
    assert_eq!(
        s.get(&format!("/v1/organizations/{org}/credits"))
            .await
            .json["balance"],
        250,
        "no second debit"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn errors_4xx_are_stored_and_keys_are_scoped_per_acting_org() {
    let s = Sim::with(layers_sim::SimConfig {
        parent_credits: 10,
        ..common::cfg()
    })
    .await;
    let org = s.create_org("a").await;
    let alloc = || {
        s.req(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
        )
        .header("Idempotency-Key", "poor")
        .json(&json!({ "credits": 11 }))
    };
    let a = send(alloc()).await;
    a.assert_error(402, "BILLING_EXHAUSTED");
    let b = send(alloc()).await;
    assert_eq!(a.text, b.text, "a stored 4xx is replayed as is");
    // the same Idempotency-Key acting inside a child is a separate namespace
    let inside = send(
        s.req(Method::POST, "/v1/webhook-endpoints")
            .header("Idempotency-Key", "poor")
            .header("X-Layers-Organization", &org)
            .json(&json!({ "url": "https://e.com", "events": ["test.ping"] })),
    )
    .await;
    assert_eq!(inside.status, 201, "{}", inside.text);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_duplicates_execute_once() {
    let s = Sim::start().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let rb = s
            .req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", "same")
            .json(&json!({ "name": "race" }));
        tasks.push(tokio::spawn(send(rb)));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201);
        bodies.push(r.text);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(s.get("/v1/organizations").await.item_count(), 1);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn window_expiry_allows_reexecution() {
    let s = Sim::with(layers_sim::SimConfig {
        idempotency_window: std::time::Duration::from_millis(200),
        ..common::cfg()
    })
    .await;
    let mk = || {
        s.req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", "w")
            .json(&json!({ "name": "w" }))
    };
    let a = send(mk()).await;
    s.advance(1).await;
    let b = send(mk()).await;
    assert_ne!(
        a.json["id"], b.json["id"],
        "after the window the key is fresh"
    );
    s.sim.shutdown().await;
}

/// A sim whose every write is held in flight for `ms` before it executes.
async fn slow_sim(mode: layers_sim::InFlightMode, ms: u64) -> Sim {
    Sim::with(layers_sim::SimConfig {
        assumptions: layers_sim::Assumptions {
            idempotency_in_flight: mode,
            ..Default::default()
        },
        faults: layers_sim::FaultConfig {
            slow_commit: 1.0,
            slow_commit_ms: ms,
            ..Default::default()
        },
        ..common::cfg()
    })
    .await
}

/// Waits (bounded) until the simulator reports `n` idempotency keys in flight.
async fn until_in_flight(s: &Sim, n: u64) {
    for _ in 0..500 {
        if s.state().await["idempotencyInFlight"] == n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("never saw {n} request(s) in flight");
}

#[tokio::test]
async fn duplicate_while_in_flight_gets_409_in_conflict_mode() {
    let s = slow_sim(layers_sim::InFlightMode::Conflict, 1000).await;
    let mk = || {
        s.req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", "slow")
            .json(&json!({ "name": "slow" }))
    };
    let first = tokio::spawn(send(mk()));
    until_in_flight(&s, 1).await;
    let dup = send(mk()).await;
    dup.assert_error(409, "IDEMPOTENCY_CONFLICT");
    assert_eq!(dup.json["error"]["details"]["inFlight"], true);
    assert_eq!(dup.header("retry-after"), Some("1"));
    let first = first.await.unwrap();
    assert_eq!(first.status, 201, "{}", first.text);
    // once the original finished, the duplicate is a plain replay
    let again = send(mk()).await;
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.state().await["idempotencyInFlight"], 0);
    let counters = s.get("/_sim/counters").await;
    assert!(counters.json["faultsInjected"].as_u64().unwrap() >= 1);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn duplicate_while_in_flight_waits_and_replays_by_default() {
    let s = slow_sim(layers_sim::InFlightMode::Wait, 300).await;
    let mk = || {
        s.req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", "slow")
            .json(&json!({ "name": "slow" }))
    };
    let first = tokio::spawn(send(mk()));
    until_in_flight(&s, 1).await;
    let dup = send(mk()).await;
    let first = first.await.unwrap();
    assert_eq!((first.status, dup.status), (201, 201));
    assert_eq!(dup.text, first.text);
    assert_eq!(dup.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.get("/v1/organizations").await.item_count(), 1);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_dropped_in_flight_request_releases_its_key() {
    let s = slow_sim(layers_sim::InFlightMode::Conflict, 60_000).await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let rb = client
        .post(s.url("/v1/organizations"))
        .bearer_auth(&s.key)
        .header("Idempotency-Key", "gone")
        .json(&json!({ "name": "gone" }));
    let task = tokio::spawn(rb.send());
    until_in_flight(&s, 1).await;
    assert!(task.await.unwrap().is_err(), "the client gave up");
    until_in_flight(&s, 0).await;
    s.sim.shutdown().await;
}
