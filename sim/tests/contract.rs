//! Contract tests: seed 002's quickstart and the documented behaviour and error rows.
mod common;

use common::{Sim, send};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn seed_002_quickstart_six_calls() {
    let s = Sim::start().await;
    // 1 create
    let r = s
        .write(
            Method::POST,
            "/v1/organizations",
            json!({ "name": "Acme Coffee", "metadata": { "externalId": "acme-coffee" } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let org = r.json["id"].as_str().unwrap().to_string();
    assert!(org.starts_with("org_"));
    assert_eq!(r.json["status"], "active");
    assert_eq!(r.json["metadata"]["externalId"], "acme-coffee");
    assert_eq!(r.json["parentOrganizationId"], s.sim.parent_org_id.as_str());
    assert!(r.json["createdAt"].as_str().unwrap().ends_with("+00:00"));
    // 2 mint
    let r = s
        .write(
            Method::POST,
            &format!("/v1/organizations/{org}/api-keys"),
            json!({ "name": "acme-integration", "scopes": ["content:read", "content:write"] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let secret = r.json["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("lp_live_"));
    assert_eq!(r.json["apiKey"]["organizationId"], org.as_str());
    assert!(r.json["apiKey"]["id"].as_str().unwrap().starts_with("key_"));
    assert!(
        !r.json["apiKey"].to_string().contains(&secret),
        "masked key must not carry the secret"
    );
    // 3 allocate
    let r = s
        .write(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
            json!({ "credits": 5000 }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.json["id"].as_str().unwrap().starts_with("txn_"));
    assert_eq!(r.json["balance"], 5000);
    assert_eq!(r.json["available"], 5000);
    assert_eq!(r.json["allocated"], 5000);
    assert_eq!(r.json["replayed"], false);
    assert!(r.json["created"].as_str().unwrap().ends_with('Z'));
    // 4 cap + refill
    let r = s
        .write(
            Method::PATCH,
            &format!("/v1/organizations/{org}/credit-config"),
            json!({ "monthlyCreditCap": 5000, "refillThreshold": 1000, "refillAmount": 2000 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["config"]["autoRefillEnabled"], true);
    // 5 firehose
    let r = s
        .write(Method::POST, "/v1/webhook-endpoints", json!({ "url": "https://quinns-crm.example.com/layers/webhooks", "events": ["content.generated", "post.published"], "scope": "all_children" }))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(
        r.json["signingSecret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    assert_eq!(r.json["endpoint"]["scope"], "all_children");
    // 6 verify
    let r = s.get(&format!("/v1/organizations/{org}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json["summary"]["balance"], 5000);
    assert_eq!(r.json["summary"]["available"], 5000);
    assert_eq!(r.json["summary"]["creditConfig"]["monthlyCreditCap"], 5000);
    assert_eq!(r.json["summary"]["creditConfig"]["autoRefillEnabled"], true);
    // the child key authenticates and sees only its own org
    let who = send(s.req_as(&secret, Method::GET, "/v1/whoami")).await;
    assert_eq!(who.status, 200);
    assert_eq!(who.json["organizationId"], org.as_str());
    assert_eq!(
        who.json["parentOrganizationId"],
        s.sim.parent_org_id.as_str()
    );
    assert_eq!(who.json["creditBalance"], 5000);
    // ledgers on both sides, and the parent was debited
    let st = s.state().await;
    assert_eq!(st["parent"]["balance"], 1_000_000 - 5000);
    let child_ledger = &st["ledgers"][&org];
    assert_eq!(child_ledger[0]["eventType"], "allocation");
    assert_eq!(child_ledger[0]["metadata"]["direction"], "in");
    let parent_ledger = st["ledgers"][s.sim.parent_org_id.as_str()]
        .as_array()
        .unwrap();
    assert!(parent_ledger.iter().any(|e| e["credits"] == -5000
        && e["metadata"]["direction"] == "out"
        && e["metadata"]["counterpartyOrgId"] == org.as_str()));
    assert!(
        !st.to_string().contains(&secret),
        "state dump must not contain secrets"
    );
    assert!(
        !st.to_string().contains(&s.key),
        "state dump must not contain the parent key"
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn auth_and_scope_errors() {
    let s = Sim::start().await;
    let r = send(s.http.get(s.url("/v1/whoami"))).await;
    r.assert_error(401, "UNAUTHENTICATED");
    let r = send(s.req_as("lp_live_nope", Method::GET, "/v1/whoami")).await;
    r.assert_error(401, "UNAUTHENTICATED");
    // Bearer is the only accepted form (NEW docs): X-Api-Key alone is refused, with a hint
    let r = send(s.http.get(s.url("/v1/whoami")).header("X-Api-Key", &s.key)).await;
    r.assert_error(401, "UNAUTHENTICATED");
    assert!(r.text.contains("Bearer"), "{}", r.text);
    let r = s.get("/v1/whoami").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json["scopes"],
        json!([
            "org:admin",
            "projects:read",
            "projects:write",
            "content:read",
            "content:write"
        ])
    );
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    // a child key lacks org:admin
    let org = s.create_org("c").await;
    let r = s.mint_read_key(&org).await;
    let child = r.json["secret"].as_str().unwrap().to_string();
    let r = send(s.req_as(&child, Method::GET, "/v1/organizations")).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    let r = send(s.req_as(
        &child,
        Method::GET,
        &format!("/v1/organizations/{org}/credit-config"),
    ))
    .await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    // org:admin is never delegable; scopes must be a subset; scopes are required
    let path = format!("/v1/organizations/{org}/api-keys");
    s.write(
        Method::POST,
        &path,
        json!({ "name": "k", "scopes": ["org:admin"] }),
    )
    .await
    .assert_error(403, "FORBIDDEN_SCOPE");
    s.write(Method::POST, &path, json!({ "name": "k", "scopes": [] }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(Method::POST, &path, json!({ "name": "k" }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(
        Method::POST,
        &path,
        json!({ "name": "", "scopes": ["content:read"] }),
    )
    .await
    .assert_error(422, "VALIDATION");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn not_found_never_forbidden_and_malformed_ids() {
    let s = Sim::start().await;
    let other = uuid::Uuid::new_v4();
    for (m, p) in [
        (Method::GET, format!("/v1/organizations/org_{other}")),
        (Method::POST, format!("/v1/organizations/{other}/suspend")),
        (
            Method::POST,
            format!("/v1/organizations/org_{other}/resume"),
        ),
        (Method::DELETE, format!("/v1/organizations/org_{other}")),
        (
            Method::GET,
            format!("/v1/organizations/org_{other}/credits"),
        ),
        (
            Method::GET,
            format!("/v1/organizations/org_{other}/api-keys"),
        ),
    ] {
        send(s.req(m, &p)).await.assert_error(404, "NOT_FOUND");
    }
    // the parent org itself is not its own child
    send(s.req(
        Method::GET,
        &format!("/v1/organizations/{}", s.sim.parent_org_id),
    ))
    .await
    .assert_error(404, "NOT_FOUND");
    for p in [
        "/v1/organizations/org_123",
        "/v1/organizations/not-a-uuid/suspend",
        "/v1/organizations/key_00000000-0000-0000-0000-000000000000",
    ] {
        let m = if p.ends_with("suspend") {
            Method::POST
        } else {
            Method::GET
        };
        send(s.req(m, p)).await.assert_error(422, "VALIDATION");
    }
    // a child's key and a sibling: 404 for everything not the caller's direct child
    let a = s.create_org("a").await;
    let b = s.create_org("b").await;
    let r = s.mint_read_key(&a).await;
    let kid = r.json["apiKey"]["id"].as_str().unwrap().to_string();
    send(s.req(
        Method::DELETE,
        &format!("/v1/organizations/{b}/api-keys/{kid}"),
    ))
    .await
    .assert_error(404, "NOT_FOUND");
    send(s.req(
        Method::DELETE,
        &format!("/v1/organizations/{a}/api-keys/key_bad"),
    ))
    .await
    .assert_error(422, "VALIDATION");
    // unknown route and wrong method
    send(s.req(Method::GET, "/v1/nope"))
        .await
        .assert_error(404, "NOT_FOUND");
    let r = send(s.req(Method::PUT, "/v1/whoami")).await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("GET"));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn lifecycle_suspend_resume_archive() {
    let s = Sim::start().await;
    let org = s.create_org("life").await;
    let r = s.mint_read_key(&org).await;
    let child = r.json["secret"].as_str().unwrap().to_string();
    s.write(
        Method::POST,
        &format!("/v1/organizations/{org}/credits/allocate"),
        json!({ "credits": 700 }),
    )
    .await;

    let r = send(s.req(Method::POST, &format!("/v1/organizations/{org}/suspend"))).await;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("suspended"))
    );
    let again = send(s.req(Method::POST, &format!("/v1/organizations/{org}/suspend"))).await;
    assert_eq!(
        (again.status, again.json["updatedAt"].clone()),
        (200, r.json["updatedAt"].clone()),
        "suspend is idempotent by state"
    );
    // the child's own key is killed everywhere, including whoami
    let k = send(s.req_as(&child, Method::GET, "/v1/whoami")).await;
    k.assert_error(503, "KILL_SWITCH");
    assert_eq!(k.json["error"]["details"]["scope"], "organization");
    // the parent keeps managing it
    assert_eq!(
        s.write(
            Method::PATCH,
            &format!("/v1/organizations/{org}"),
            json!({ "name": "life2" })
        )
        .await
        .status,
        200
    );
    assert_eq!(
        s.write(
            Method::POST,
            &format!("/v1/organizations/{org}/credits/allocate"),
            json!({ "credits": 300 })
        )
        .await
        .status,
        201
    );
    let r = send(s.req(Method::POST, &format!("/v1/organizations/{org}/resume"))).await;
    assert_eq!(r.json["status"], "active");
    assert_eq!(
        send(s.req_as(&child, Method::GET, "/v1/whoami"))
            .await
            .status,
        200
    );

    // archive: keys revoked, credits swept back, terminal
    let before = s.state().await["parent"]["balance"].as_i64().unwrap();
    let r = send(s.req(Method::DELETE, &format!("/v1/organizations/{org}"))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["status"], "archived");
    assert_eq!(r.json["reclaimedCredits"], 1000);
    assert_eq!(r.json["revokedApiKeys"], 1);
    assert!(r.json["archivedAt"].is_string());
    assert_eq!(
        s.state().await["parent"]["balance"].as_i64().unwrap(),
        before + 1000
    );
    send(s.req_as(&child, Method::GET, "/v1/whoami"))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let r = send(s.req(Method::DELETE, &format!("/v1/organizations/{org}"))).await;
    assert_eq!(
        (
            r.status,
            r.json["reclaimedCredits"].as_i64(),
            r.json["revokedApiKeys"].as_i64()
        ),
        (200, Some(0), Some(0))
    );
    for (m, p) in [
        (Method::POST, format!("/v1/organizations/{org}/suspend")),
        (Method::POST, format!("/v1/organizations/{org}/resume")),
    ] {
        send(s.req(m, &p)).await.assert_error(409, "CONFLICT");
    }
    for (m, rest, body) in [
        (Method::PATCH, "", json!({ "name": "x" })),
        (Method::POST, "/credits/allocate", json!({ "credits": 1 })),
        (
            Method::PATCH,
            "/credit-config",
            json!({ "monthlyCreditCap": 1 }),
        ),
        (
            Method::POST,
            "/api-keys",
            json!({ "name": "k", "scopes": ["content:read"] }),
        ),
    ] {
        s.write(m, &format!("/v1/organizations/{org}{rest}"), body)
            .await
            .assert_error(409, "CONFLICT");
    }
    // still readable and listed under status=archived
    assert_eq!(
        s.get(&format!("/v1/organizations/{org}")).await.json["status"],
        "archived"
    );
    let l = s.get("/v1/organizations?status=archived").await;
    assert_eq!(l.item_count(), 1);
    assert_eq!(
        s.get("/v1/organizations?status=active").await.item_count(),
        0
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn patch_metadata_merge_and_limits() {
    let s = Sim::start().await;
    let r = s.write(Method::POST, "/v1/organizations", json!({ "name": "m", "metadata": { "a": "1", "b": "2" }, "billingEmail": "ops@acme.test" })).await;
    let org = r.json["id"].as_str().unwrap().to_string();
    let p = format!("/v1/organizations/{org}");
    let r = s
        .write(
            Method::PATCH,
            &p,
            json!({ "metadata": { "a": "", "c": "3" } }),
        )
        .await;
    assert_eq!(r.json["metadata"], json!({ "b": "2", "c": "3" }));
    assert_eq!(r.json["billingEmail"], "ops@acme.test");
    let r = s
        .write(Method::PATCH, &p, json!({ "billingEmail": null }))
        .await;
    assert_eq!(r.json["billingEmail"], json!(null));
    assert_eq!(
        r.json["metadata"],
        json!({ "b": "2", "c": "3" }),
        "omitted fields are kept"
    );
    for body in [
        json!({ "metadata": { "b": null } }),
        json!({ "status": "suspended" }),
        json!({ "bogus": 1 }),
    ] {
        s.write(Method::PATCH, &p, body)
            .await
            .assert_error(422, "VALIDATION");
    }
    let r = s
        .write(Method::PATCH, &p, json!({ "metadata": null }))
        .await;
    assert_eq!(r.json["metadata"], json!({}));
    // limits
    let many: serde_json::Map<String, serde_json::Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let big: serde_json::Map<String, serde_json::Value> = (0..40)
        .map(|i| (format!("k{i:02}"), json!("v".repeat(450))))
        .collect();
    for body in [
        json!({ "name": "x", "metadata": many }),
        json!({ "name": "x", "metadata": { "k".repeat(41): "v" } }),
        json!({ "name": "x", "metadata": { "k": "v".repeat(501) } }),
        json!({ "name": "x", "metadata": big }),
        json!({ "name": "n".repeat(129) }),
        json!({}),
        json!({ "name": "x", "billingEmail": "nope" }),
    ] {
        s.write(Method::POST, "/v1/organizations", body)
            .await
            .assert_error(422, "VALIDATION");
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn credits_and_config_errors() {
    let s = Sim::with(layers_sim::SimConfig {
        parent_credits: 100,
        ..common::cfg()
    })
    .await;
    let org = s.create_org("c").await;
    let alloc = format!("/v1/organizations/{org}/credits/allocate");
    send(s.req(Method::POST, &alloc).json(&json!({ "credits": 5 })))
        .await
        .assert_error(400, "IDEMPOTENCY_REQUIRED");
    s.write(Method::POST, &alloc, json!({ "credits": 0 }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(Method::POST, &alloc, json!({ "credits": -3 }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(Method::POST, &alloc, json!({ "credits": 1.5 }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(Method::POST, &alloc, json!({ "credits": 101 }))
        .await
        .assert_error(402, "BILLING_EXHAUSTED");
    let r = s.write(Method::POST, &alloc, json!({ "credits": 60, "description": "d", "metadata": { "direction": "spoof", "po": "7" } })).await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json["metadata"],
        json!({ "direction": "spoof", "po": "7" }),
        "the transfer echoes the request metadata"
    );
    let ev = s
        .get(&format!(
            "/v1/organizations/{org}/credits/events?eventType=allocation"
        ))
        .await;
    assert_eq!(
        ev.json["items"][0]["metadata"]["direction"], "in",
        "system keys win"
    );
    assert_eq!(ev.json["items"][0]["metadata"]["po"], "7");
    assert_eq!(ev.json["items"][0]["description"], "d");
    s.get(&format!(
        "/v1/organizations/{org}/credits/events?since=2026-01-01T00:00:00%2B00:00"
    ))
    .await
    .assert_error(422, "VALIDATION");
    assert_eq!(
        s.get(&format!(
            "/v1/organizations/{org}/credits/events?since=2020-01-01T00:00:00Z"
        ))
        .await
        .status,
        200
    );
    s.get(&format!(
        "/v1/organizations/{org}/credits/events?eventType=bogus"
    ))
    .await
    .assert_error(422, "VALIDATION");
    let w = s.get(&format!("/v1/organizations/{org}/credits")).await;
    assert_eq!(
        (w.json["balance"].as_i64(), w.json["available"].as_i64()),
        (Some(60), Some(60))
    );
    let own = s.get("/v1/credits").await;
    assert_eq!(own.json["balance"], 40);

    let cc = format!("/v1/organizations/{org}/credit-config");
    s.write(Method::PATCH, &cc, json!({ "refillThreshold": 10 }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(Method::PATCH, &cc, json!({ "monthlyCreditCap": -1 }))
        .await
        .assert_error(422, "VALIDATION");
    s.write(
        Method::PATCH,
        &cc,
        json!({ "refillThreshold": 1, "refillAmount": 0 }),
    )
    .await
    .assert_error(422, "VALIDATION");
    let r = s
        .write(
            Method::PATCH,
            &cc,
            json!({ "refillThreshold": 1, "refillAmount": 5 }),
        )
        .await;
    assert_eq!(r.json["config"]["autoRefillEnabled"], true);
    let r = s
        .write(Method::PATCH, &cc, json!({ "monthlyCreditCap": 9 }))
        .await;
    assert_eq!(
        r.json["config"],
        json!({ "monthlyCreditCap": 9, "refillThreshold": 1, "refillAmount": 5, "autoRefillEnabled": true })
    );
    s.write(Method::PATCH, &cc, json!({ "refillAmount": null }))
        .await
        .assert_error(422, "VALIDATION");
    let r = s
        .write(
            Method::PATCH,
            &cc,
            json!({ "refillAmount": null, "refillThreshold": null, "monthlyCreditCap": null }),
        )
        .await;
    assert_eq!(r.json["config"]["autoRefillEnabled"], false);
    assert_eq!(
        s.get(&cc).await.json["config"]["monthlyCreditCap"],
        json!(null)
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn key_rotate_delete_and_list() {
    let s = Sim::start().await;
    let org = s.create_org("k").await;
    let base = format!("/v1/organizations/{org}/api-keys");
    let r = s
        .write(
            Method::POST,
            &base,
            json!({ "name": "k", "scopes": ["content:read"], "env": "test" }),
        )
        .await;
    let k1 = r.json["apiKey"]["id"].as_str().unwrap().to_string();
    let s1 = r.json["secret"].as_str().unwrap().to_string();
    assert!(s1.starts_with("lp_test_"));
    assert_eq!(r.json["apiKey"]["rateLimitTier"], "sandbox");
    let r = s
        .write(Method::POST, &format!("{base}/{k1}/rotate"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let k2 = r.json["apiKey"]["id"].as_str().unwrap().to_string();
    let s2 = r.json["secret"].as_str().unwrap().to_string();
    assert_ne!(k1, k2);
    assert_eq!(r.json["apiKey"]["scopes"], json!(["content:read"]));
    // the old key still works during the grace period
    assert_eq!(
        send(s.req_as(&s1, Method::GET, "/v1/whoami")).await.status,
        200
    );
    assert_eq!(
        send(s.req_as(&s2, Method::GET, "/v1/whoami")).await.status,
        200
    );
    s.write(Method::POST, &format!("{base}/{k1}/rotate"), json!({}))
        .await
        .assert_error(409, "CONFLICT");
    let l = s.get(&base).await;
    let items = l.json["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], k2.as_str(), "newest first");
    assert_eq!(items[1]["supersededBy"], k2.as_str());
    assert!(items[1]["graceUntil"].is_string());
    // delete: immediate 401, idempotent, listed as revoked
    let d = send(s.req(Method::DELETE, &format!("{base}/{k2}"))).await;
    assert_eq!(
        (
            d.status,
            d.json["deleted"].as_bool(),
            d.json["apiKey"]["status"].as_str()
        ),
        (200, Some(true), Some("revoked"))
    );
    send(s.req_as(&s2, Method::GET, "/v1/whoami"))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    let d2 = send(s.req(Method::DELETE, &format!("{base}/{k2}"))).await;
    assert_eq!(d2.status, 200);
    assert_eq!(
        d2.json["apiKey"]["revokedAt"],
        d.json["apiKey"]["revokedAt"]
    );
    s.write(Method::POST, &format!("{base}/{k2}/rotate"), json!({}))
        .await
        .assert_error(409, "CONFLICT");
    assert_eq!(s.get(&base).await.json["items"][0]["status"], "revoked");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn webhooks_and_acting_inside_a_child() {
    let s = Sim::start().await;
    let org = s.create_org("w").await;
    let hdr = ("X-Layers-Organization", org.clone());
    let create = |body: serde_json::Value| {
        s.req(Method::POST, "/v1/webhook-endpoints")
            .header(hdr.0, &hdr.1)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body)
    };
    let r = send(create(json!({ "url": "http://127.0.0.1:9/hook", "events": ["post.published"], "metadata": { "owner": "orgops" } }))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["endpoint"]["organizationId"], org.as_str());
    let ep = r.json["endpoint"]["id"].as_str().unwrap().to_string();
    send(create(
        json!({ "url": "http://example.com/h", "events": ["post.published"] }),
    ))
    .await
    .assert_error(422, "VALIDATION");
    send(create(
        json!({ "url": "https://example.com/h", "events": ["organization.suspended"] }),
    ))
    .await
    .assert_error(422, "VALIDATION");
    send(create(
        json!({ "url": "https://example.com/h", "events": [] }),
    ))
    .await
    .assert_error(422, "VALIDATION");
    // listed for the child, not for the parent
    let l = send(
        s.req(Method::GET, "/v1/webhook-endpoints")
            .header(hdr.0, &hdr.1),
    )
    .await;
    assert_eq!(l.item_count(), 1);
    assert_eq!(s.get("/v1/webhook-endpoints").await.item_count(), 0);
    send(s.req(Method::GET, &format!("/v1/webhook-endpoints/{ep}")))
        .await
        .assert_error(404, "NOT_FOUND");
    let p = send(
        s.req(Method::PATCH, &format!("/v1/webhook-endpoints/{ep}"))
            .header(hdr.0, &hdr.1)
            .json(&json!({ "status": "paused", "metadata": { "x": "1" } })),
    )
    .await;
    assert_eq!(
        (
            p.json["status"].as_str(),
            p.json["metadata"]["owner"].as_str(),
            p.json["metadata"]["x"].as_str()
        ),
        (Some("paused"), Some("orgops"), Some("1"))
    );
    send(
        s.req(Method::PATCH, &format!("/v1/webhook-endpoints/{ep}"))
            .header(hdr.0, &hdr.1)
            .json(&json!({})),
    )
    .await
    .assert_error(422, "VALIDATION");
    let rot = send(
        s.req(
            Method::POST,
            &format!("/v1/webhook-endpoints/{ep}/rotate-secret"),
        )
        .header(hdr.0, &hdr.1),
    )
    .await;
    assert!(
        rot.json["signingSecret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_")
    );
    // header errors: malformed 422, not a child 404, child key 403
    send(
        s.req(Method::GET, "/v1/webhook-endpoints")
            .header("X-Layers-Organization", "org_zzz"),
    )
    .await
    .assert_error(422, "VALIDATION");
    send(s.req(Method::GET, "/v1/webhook-endpoints").header(
        "X-Layers-Organization",
        format!("org_{}", uuid::Uuid::new_v4()),
    ))
    .await
    .assert_error(404, "NOT_FOUND");
    let k = s.mint_read_key(&org).await;
    let child = k.json["secret"].as_str().unwrap().to_string();
    send(
        s.req_as(&child, Method::GET, "/v1/webhook-endpoints")
            .header(hdr.0, &hdr.1),
    )
    .await
    .assert_error(403, "FORBIDDEN_SCOPE");
    // a child key sees its org's endpoints directly; firehose needs org:admin
    assert_eq!(
        send(s.req_as(&child, Method::GET, "/v1/webhook-endpoints"))
            .await
            .item_count(),
        1
    );
    send(s.req_as(&child, Method::POST, "/v1/webhook-endpoints").json(&json!({ "url": "https://e.com", "events": ["test.ping"], "scope": "all_children" }))).await.assert_error(403, "FORBIDDEN_SCOPE");
    // a child cannot create children
    send(
        s.req(Method::POST, "/v1/organizations")
            .header(hdr.0, &hdr.1)
            .json(&json!({ "name": "grandchild" })),
    )
    .await
    .assert_error(422, "VALIDATION");
    // archive keeps the child's endpoints (the docs list only keys and credits as swept);
    // they stay readable through the header and every write conflicts
    send(s.req(Method::DELETE, &format!("/v1/organizations/{org}"))).await;
    let g = send(
        s.req(Method::GET, &format!("/v1/webhook-endpoints/{ep}"))
            .header(hdr.0, &hdr.1),
    )
    .await;
    assert_eq!(g.status, 200, "{}", g.text);
    send(create(
        json!({ "url": "https://e.com", "events": ["test.ping"] }),
    ))
    .await
    .assert_error(409, "CONFLICT");
    send(
        s.req(Method::DELETE, &format!("/v1/webhook-endpoints/{ep}"))
            .header(hdr.0, &hdr.1),
    )
    .await
    .assert_error(409, "CONFLICT");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn pagination_newest_first_with_cursors() {
    let s = Sim::start().await;
    for i in 0..7 {
        s.create_org(&format!("o{i}")).await;
    }
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/organizations?limit=3&cursor={c}"),
            None => "/v1/organizations?limit=3".to_string(),
        };
        let r = s.get(&q).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let items = r.json["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        assert!(
            items.iter().all(|o| o.get("summary").is_none()),
            "list items have no summary"
        );
        names.extend(
            items
                .iter()
                .map(|o| o["name"].as_str().unwrap().to_string()),
        );
        match r.json["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, vec!["o6", "o5", "o4", "o3", "o2", "o1", "o0"]);
    assert_eq!(
        s.get("/v1/organizations?limit=25").await.json["nextCursor"],
        json!(null)
    );
    for q in [
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=garbage!",
        "status=deleted",
    ] {
        s.get(&format!("/v1/organizations?{q}"))
            .await
            .assert_error(422, "VALIDATION");
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_an_envelope() {
    let s = Sim::start().await;
    let post = |body: Vec<u8>, ct: &str| {
        s.req(Method::POST, "/v1/organizations")
            .header("Content-Type", ct.to_string())
            .body(body)
    };
    send(post(b"{not json".to_vec(), "application/json"))
        .await
        .assert_error(422, "VALIDATION");
    send(post(b"[1,2]".to_vec(), "application/json"))
        .await
        .assert_error(422, "VALIDATION");
    send(post(br#"{"name":"x"}"#.to_vec(), "text/plain"))
        .await
        .assert_error(415, "UNSUPPORTED_MEDIA_TYPE");
    let mut huge = br#"{"name":"x","metadata":{"a":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1024 * 1024 + 10));
    huge.extend(br#""}}"#);
    send(post(huge, "application/json"))
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE");
    send(
        s.req(Method::POST, "/v1/webhook-endpoints")
            .header("Idempotency-Key", "x".repeat(300))
            .json(&json!({})),
    )
    .await
    .assert_error(422, "VALIDATION");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn archive_deletes_webhooks_only_when_configured() {
    let s = Sim::with(layers_sim::SimConfig {
        assumptions: layers_sim::Assumptions {
            archive_deletes_webhooks: true,
            ..Default::default()
        },
        ..common::cfg()
    })
    .await;
    let org = s.create_org("w").await;
    let r = send(
        s.req(Method::POST, "/v1/webhook-endpoints")
            .header("X-Layers-Organization", &org)
            .json(&json!({ "url": "https://e.com/h", "events": ["test.ping"] })),
    )
    .await;
    let ep = r.json["endpoint"]["id"].as_str().unwrap().to_string();
    send(s.req(Method::DELETE, &format!("/v1/organizations/{org}"))).await;
    send(
        s.req(Method::GET, &format!("/v1/webhook-endpoints/{ep}"))
            .header("X-Layers-Organization", &org),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    assert_eq!(s.state().await["webhookEndpoints"], json!([]));
    s.sim.shutdown().await;
}
