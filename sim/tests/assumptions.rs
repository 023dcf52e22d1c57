//! Assumption switches (issue #28): each selects another plausible answer where the Layers
//! docs are silent; the defaults are what the other suites test.
mod common;

use common::{Sim, send};
use layers_sim::{
    Assumptions, CreditEvents, FaultConfig, InFlightMode, RateLimitScope, SimConfig,
    SuspendedWrites, Tier, UnknownFields,
};
use reqwest::Method;
use serde_json::json;

async fn sim_with(assumptions: Assumptions) -> Sim {
    Sim::with(SimConfig {
        assumptions,
        ..common::cfg()
    })
    .await
}

#[tokio::test]
async fn documented_credit_events_carry_no_metadata_but_the_state_keeps_it() {
    let s = sim_with(Assumptions {
        credit_events: CreditEvents::Documented,
        ..Default::default()
    })
    .await;
    let org = s.create_org("a").await;
    let r = s
        .write(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
            json!({"credits": 10, "description": "d", "metadata": {"m": "1"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["metadata"]["m"], "1", "the transfer still echoes it");
    let events = s.events(&org).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e["credits"].clone(), e["eventType"].clone()),
        (json!(10), json!("allocation"))
    );
    assert!(
        e.get("metadata").is_none() && e.get("description").is_none(),
        "{e}"
    );
    // The parent's own ledger (GET /v1/credits/events) shows the debit, also bare.
    let own = s.get("/v1/credits/events?eventType=allocation").await;
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(own.json["items"][0]["credits"], -10);
    assert!(own.json["items"][0].get("metadata").is_none());
    // The control view keeps everything (the audits read it).
    let state = s.state().await;
    assert_eq!(state["ledgers"][&org][0]["metadata"]["m"], "1");
    // Switched back at run time: the same events show their metadata.
    let r = s
        .ctl(
            Method::PATCH,
            "/_sim/assumptions",
            json!({"creditEvents": "with-metadata"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["creditEvents"], "with-metadata");
    assert_eq!(s.events(&org).await[0]["metadata"]["direction"], "in");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn assumptions_are_shown_and_changed_strictly() {
    let s = Sim::start().await;
    let r = s.get("/_sim/assumptions").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json,
        json!({"creditEvents": "with-metadata", "suspendedWrites": "allow",
               "idempotencyInFlight": "wait", "idempotencyStore4xx": true,
               "archiveDeletesWebhooks": false, "rateLimitBurst": null,
               "rateLimitScope": "parent-key", "unknownFields": "reject"})
    );
    let bad = s
        .ctl(Method::PATCH, "/_sim/assumptions", json!({"nope": 1}))
        .await;
    bad.assert_error(422, "VALIDATION");
    let bad = s
        .ctl(
            Method::PATCH,
            "/_sim/assumptions",
            json!({"suspendedWrites": "maybe"}),
        )
        .await;
    bad.assert_error(422, "VALIDATION");
    assert_eq!(
        s.get("/_sim/assumptions").await.json["suspendedWrites"],
        "allow"
    );
    // A reset keeps the switches, like the fault config.
    s.ctl(
        Method::PATCH,
        "/_sim/assumptions",
        json!({"suspendedWrites": "refuse"}),
    )
    .await;
    s.ctl(Method::POST, "/_sim/reset", json!({})).await;
    assert_eq!(
        s.get("/_sim/assumptions").await.json["suspendedWrites"],
        "refuse"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_refusing_provider_allows_only_resume_archive_and_reads_on_a_suspended_child() {
    let s = sim_with(Assumptions {
        suspended_writes: SuspendedWrites::Refuse,
        ..Default::default()
    })
    .await;
    let org = s.create_org("s").await;
    let path = format!("/v1/organizations/{org}");
    let r = s
        .write(Method::POST, &format!("{path}/suspend"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for (method, route, body) in [
        (Method::PATCH, path.clone(), json!({"name": "t"})),
        (
            Method::POST,
            format!("{path}/credits/allocate"),
            json!({"credits": 1}),
        ),
        (
            Method::PATCH,
            format!("{path}/credit-config"),
            json!({"monthlyCreditCap": 5}),
        ),
        (
            Method::POST,
            format!("{path}/api-keys"),
            json!({"name": "k", "scopes": ["content:read"]}),
        ),
    ] {
        let r = s.write(method, &route, body).await;
        r.assert_error(409, "CONFLICT");
        assert!(r.text.contains("suspended"), "{}", r.text);
    }
    let hook = send(
        s.req(Method::POST, "/v1/webhook-endpoints")
            .header("X-Layers-Organization", &org)
            .json(&json!({"url": "https://h.example/x", "events": ["post.published"]})),
    )
    .await;
    hook.assert_error(409, "CONFLICT");
    assert_eq!(s.get(&path).await.status, 200, "reads work");
    assert_eq!(s.get(&format!("{path}/credits/events")).await.status, 200);
    let r = s
        .write(Method::POST, &format!("{path}/resume"), json!({}))
        .await;
    assert_eq!(r.json["status"], "active");
    let r = s.write(Method::PATCH, &path, json!({"name": "t"})).await;
    assert_eq!(r.status, 200, "writes work again once resumed: {}", r.text);
    s.write(Method::POST, &format!("{path}/suspend"), json!({}))
        .await;
    let r = send(s.req(Method::DELETE, &path)).await;
    assert_eq!(
        (r.status, r.json["status"].clone()),
        (200, json!("archived"))
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_late_commit_lands_after_the_connection_closed_and_a_retry_meets_it_in_flight() {
    let s = Sim::with(SimConfig {
        assumptions: Assumptions {
            idempotency_in_flight: InFlightMode::Conflict,
            ..Default::default()
        },
        faults: FaultConfig {
            late_commit: 1.0,
            slow_commit_ms: 400,
            ..Default::default()
        },
        ..common::cfg()
    })
    .await;
    let mk = || {
        s.req(Method::POST, "/v1/organizations")
            .header("Idempotency-Key", "late")
            .json(&json!({"name": "late"}))
    };
    assert!(
        mk().send().await.is_err(),
        "no answer: the connection is closed"
    );
    // The write goes on: a retry finds it in flight...
    s.ctl(Method::PUT, "/_sim/faults", json!({})).await;
    let dup = send(mk()).await;
    dup.assert_error(409, "IDEMPOTENCY_CONFLICT");
    assert_eq!(dup.json["error"]["details"]["inFlight"], true);
    // ...and, once it committed, replays it: one org.
    let mut replay = None;
    for _ in 0..100 {
        let r = send(mk()).await;
        if r.status == 201 {
            replay = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let replay = replay.expect("the late commit never landed");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(s.get("/v1/organizations").await.item_count(), 1);
    let counters = s.get("/_sim/counters").await.json;
    let dropped = counters["requests"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["status"] == 0 && r["route"] == "/v1/organizations");
    assert!(dropped, "the closed connection is counted: {counters}");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_small_burst_and_per_org_buckets() {
    let s = Sim::with(SimConfig {
        tier: Tier::Standard,
        assumptions: Assumptions {
            rate_limit_burst: Some(3),
            rate_limit_scope: RateLimitScope::ChildOrg,
            ..Default::default()
        },
        ..common::cfg()
    })
    .await;
    let (a, b) = (s.create_org("a").await, s.create_org("b").await);
    let sim = &s;
    let patch = |org: &str| {
        let path = format!("/v1/organizations/{org}");
        async move {
            sim.write(Method::PATCH, &path, json!({"billingEmail": "x@y.example"}))
                .await
        }
    };
    for _ in 0..3 {
        assert_eq!(patch(&a).await.status, 200);
    }
    let r = patch(&a).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
    // b's bucket is its own.
    assert_eq!(patch(&b).await.status, 200);
    // A child key's traffic draws on its child's bucket: three reads of b by the parent
    // empty b's read bucket, and the child's own whoami is refused.
    let key = s.mint_read_key(&b).await.json["secret"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        assert_eq!(s.get(&format!("/v1/organizations/{b}")).await.status, 200);
    }
    let me = send(s.req_as(&key, Method::GET, "/v1/whoami")).await;
    me.assert_error(429, "RATE_LIMITED");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn unknown_body_fields_can_be_ignored() {
    let body = json!({"name": "Proj", "timezone": "UTC", "tagline": "t", "brandVoice": "b",
                      "targetGender": "any"});
    let strict = Sim::start().await;
    strict
        .write(Method::POST, "/v1/projects", body.clone())
        .await
        .assert_error(422, "VALIDATION");
    strict.sim.shutdown().await;
    let lenient = sim_with(Assumptions {
        unknown_fields: UnknownFields::Ignore,
        ..Default::default()
    })
    .await;
    let r = lenient.write(Method::POST, "/v1/projects", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json.get("tagline").is_none());
    lenient.sim.shutdown().await;
}
