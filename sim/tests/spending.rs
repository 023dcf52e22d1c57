//! Spending (`/_sim/spend`), the monthly cap, auto-refill and parent top-ups (§2.3, §2.5).
mod common;

use common::{Sim, send};
use layers_sim::SimConfig;
use reqwest::Method;
use serde_json::{Value, json};

async fn config(s: &Sim, org: &str, body: Value) {
    let r = s
        .write(
            Method::PATCH,
            &format!("/v1/organizations/{org}/credit-config"),
            body,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["eventType"] == t).collect()
}

#[tokio::test]
async fn spend_debits_usage_and_refuses_what_is_not_available() {
    let s = Sim::start().await;
    let org = s.create_org("spender").await;
    assert_eq!(s.allocate(&org, 100).await.status, 201);
    let r = s.spend(&org, 30).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            &r.json["balance"],
            &r.json["available"],
            &r.json["usedThisPeriod"]
        ),
        (&json!(70), &json!(70), &json!(30))
    );
    assert_eq!(r.json["refills"], json!([]));
    let w = s.get(&format!("/v1/organizations/{org}/credits")).await;
    assert_eq!(
        (
            w.json["balance"].as_i64(),
            w.json["usedThisPeriod"].as_i64()
        ),
        (Some(70), Some(30))
    );
    assert_eq!(w.json["currentPeriod"]["usedCredits"], 30);
    let ev = s.events(&org).await;
    let usage = of_type(&ev, "usage");
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["credits"], -30);
    assert_eq!(usage[0]["balanceAfterPrepaid"], 70);
    // more than available (no auto-refill configured): 402, nothing changes
    let r = s.spend(&org, 71).await;
    r.assert_error(402, "BILLING_EXHAUSTED");
    assert_eq!(r.json["error"]["details"]["reason"], "insufficient_balance");
    assert_eq!(
        s.get(&format!("/v1/organizations/{org}")).await.json["summary"]["balance"],
        70
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn monthly_cap_refuses_then_resets_with_the_next_period() {
    let s = Sim::start().await;
    let org = s.create_org("capped").await;
    s.allocate(&org, 1000).await;
    config(&s, &org, json!({ "monthlyCreditCap": 100 })).await;
    assert_eq!(s.spend(&org, 60).await.status, 200);
    let r = s.spend(&org, 50).await;
    r.assert_error(402, "BILLING_EXHAUSTED");
    let d = &r.json["error"]["details"];
    assert_eq!(
        (
            &d["reason"],
            &d["monthlyCreditCap"],
            &d["usedThisPeriod"],
            &d["requested"]
        ),
        (&json!("monthly_cap"), &json!(100), &json!(60), &json!(50))
    );
    assert_eq!(
        s.spend(&org, 40).await.status,
        200,
        "exactly up to the cap is allowed"
    );
    // 32 days later is always a later calendar month: the period's usage starts at 0
    s.advance(32 * 86_400).await;
    let w = s.get(&format!("/v1/organizations/{org}/credits")).await;
    assert_eq!(w.json["usedThisPeriod"], 0);
    let r = s.spend(&org, 50).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["usedThisPeriod"], 50);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn auto_refill_moves_credits_with_ledger_rows_on_both_sides() {
    let s = Sim::start().await;
    let org = s.create_org("refilled").await;
    s.allocate(&org, 100).await;
    config(
        &s,
        &org,
        json!({ "refillThreshold": 50, "refillAmount": 200 }),
    )
    .await;
    let parent_before = s.state().await["parent"]["balance"].as_i64().unwrap();
    // 60 spent → available 40 < 50 → one refill of 200
    let r = s.spend(&org, 60).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["balance"], 240);
    let refills = r.json["refills"].as_array().unwrap();
    assert_eq!(refills.len(), 1);
    let txn = refills[0]["transferId"].as_str().unwrap().to_string();
    assert!(txn.starts_with("txn_"));
    let st = s.state().await;
    assert_eq!(
        st["parent"]["balance"].as_i64().unwrap(),
        parent_before - 200
    );
    // the child's row: an allocation in, marked as a refill and never as an orgops allocation
    let ev = s.events(&org).await;
    let alloc = of_type(&ev, "allocation");
    let refill: Vec<_> = alloc
        .iter()
        .filter(|e| e["metadata"]["reason"] == "auto_refill")
        .collect();
    assert_eq!(refill.len(), 1);
    assert_eq!(refill[0]["credits"], 200);
    assert_eq!(refill[0]["metadata"]["transferId"], txn.as_str());
    assert_eq!(refill[0]["metadata"]["direction"], "in");
    let meta = refill[0]["metadata"].as_object().unwrap();
    assert!(meta.keys().all(|k| !k.starts_with("orgops")), "{meta:?}");
    // the parent's row: the same transfer, out
    let parent_ledger = st["ledgers"][s.sim.parent_org_id.as_str()]
        .as_array()
        .unwrap();
    let out: Vec<_> = parent_ledger
        .iter()
        .filter(|e| e["metadata"]["transferId"] == txn.as_str())
        .collect();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["credits"], -200);
    assert_eq!(out[0]["metadata"]["reason"], "auto_refill");
    assert_eq!(out[0]["metadata"]["counterpartyOrgId"], org.as_str());
    // balance above the threshold: no refill
    assert_eq!(s.spend(&org, 10).await.json["refills"], json!([]));
    // a spend larger than available triggers the refill first
    let org2 = s.create_org("refill-first").await;
    s.allocate(&org2, 10).await;
    config(
        &s,
        &org2,
        json!({ "refillThreshold": 50, "refillAmount": 100 }),
    )
    .await;
    let r = s.spend(&org2, 30).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["balance"], 80);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn empty_parent_fails_the_refill_then_a_topup_unblocks_it() {
    let s = Sim::with(SimConfig {
        parent_credits: 100,
        ..common::cfg()
    })
    .await;
    let org = s.create_org("poor-parent").await;
    assert_eq!(s.allocate(&org, 100).await.status, 201);
    config(
        &s,
        &org,
        json!({ "refillThreshold": 50, "refillAmount": 100 }),
    )
    .await;
    // the spend itself is covered; the refill after it finds the parent empty
    let r = s.spend(&org, 80).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["refills"], json!([]));
    assert_eq!(r.json["refillFailed"]["code"], "BILLING_EXHAUSTED");
    // a spend that needs the refill is refused with 402
    let r = s.spend(&org, 30).await;
    r.assert_error(402, "BILLING_EXHAUSTED");
    assert_eq!(r.json["error"]["details"]["reason"], "parent_exhausted");
    let ev = s.events(&org).await;
    assert_eq!(
        of_type(&ev, "usage").len(),
        1,
        "a refused spend writes nothing"
    );
    // a parent top-up (a purchase row in its ledger) unblocks it
    let t = s
        .ctl(Method::POST, "/_sim/topup", json!({ "credits": 500 }))
        .await;
    assert_eq!(t.status, 200, "{}", t.text);
    assert_eq!(t.json["balance"], 500);
    let st = s.state().await;
    let pl = st["ledgers"][s.sim.parent_org_id.as_str()]
        .as_array()
        .unwrap();
    assert_eq!(pl.last().unwrap()["eventType"], "purchase");
    let r = s.spend(&org, 30).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["balance"], 90);
    assert_eq!(s.state().await["parent"]["balance"], 400);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn allocate_402_is_replayed_under_its_key_unless_4xx_are_not_stored() {
    for store_4xx in [true, false] {
        let s = Sim::with(SimConfig {
            parent_credits: 100,
            assumptions: layers_sim::Assumptions {
                idempotency_store_4xx: store_4xx,
                ..Default::default()
            },
            ..common::cfg()
        })
        .await;
        let org = s.create_org("a").await;
        let alloc = || {
            s.req(
                Method::POST,
                &format!("/v1/organizations/{org}/credits/allocate"),
            )
            .header("Idempotency-Key", "alloc-1")
            .json(&json!({ "credits": 300 }))
        };
        let a = send(alloc()).await;
        a.assert_error(402, "BILLING_EXHAUSTED");
        s.ctl(Method::POST, "/_sim/topup", json!({ "credits": 1000 }))
            .await;
        let b = send(alloc()).await;
        if store_4xx {
            // documented replay rule: the original response, verbatim
            assert_eq!(b.text, a.text);
            assert_eq!(b.header("idempotent-replayed"), Some("true"));
            // a fresh key executes against the topped-up parent
            assert_eq!(s.allocate(&org, 300).await.status, 201);
        } else {
            assert_eq!(b.status, 201, "{}", b.text);
            assert_eq!(b.json["replayed"], false);
        }
        s.sim.shutdown().await;
    }
}

#[tokio::test]
async fn spend_and_topup_refuse_bad_bodies_and_wrong_orgs() {
    let s = Sim::start().await;
    let org = s.create_org("x").await;
    for (body, field) in [
        (json!({ "orgId": org }), "credits"),
        (json!({ "credits": 5 }), "orgId"),
        (json!({ "orgId": org, "credits": 0 }), "credits"),
        (json!({ "orgId": org, "credits": "5" }), "credits"),
        (json!({ "orgId": 7, "credits": 5 }), "orgId"),
        (json!({ "orgId": "org_nope", "credits": 5 }), "orgId"),
        (json!({ "orgId": org, "credits": 5, "extra": 1 }), "extra"),
    ] {
        let r = s.ctl(Method::POST, "/_sim/spend", body.clone()).await;
        r.assert_error(422, "VALIDATION");
        assert_eq!(r.json["error"]["details"]["field"], field, "{body}");
    }
    let r = send(
        s.http
            .post(s.url("/_sim/spend"))
            .body("not json")
            .header("content-type", "application/json"),
    )
    .await;
    r.assert_error(422, "VALIDATION");
    for (body, field) in [
        (json!({}), "credits"),
        (json!({ "credits": -1 }), "credits"),
        (json!({ "credits": 1, "orgId": org }), "orgId"),
    ] {
        let r = s.ctl(Method::POST, "/_sim/topup", body).await;
        r.assert_error(422, "VALIDATION");
        assert_eq!(r.json["error"]["details"]["field"], field);
    }
    // not a child of the partner (the partner itself included): 404
    s.spend(&format!("org_{}", uuid::Uuid::new_v4()), 1)
        .await
        .assert_error(404, "NOT_FOUND");
    s.spend(&s.sim.parent_org_id, 1)
        .await
        .assert_error(404, "NOT_FOUND");
    // a suspended child spends nothing (its work is held); an archived one conflicts
    s.allocate(&org, 10).await;
    send(s.req(Method::POST, &format!("/v1/organizations/{org}/suspend"))).await;
    s.spend(&org, 1).await.assert_error(503, "KILL_SWITCH");
    send(s.req(Method::DELETE, &format!("/v1/organizations/{org}"))).await;
    s.spend(&org, 1).await.assert_error(409, "CONFLICT");
    s.sim.shutdown().await;
}
