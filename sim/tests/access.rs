//! Who may call: the scope catalogue, `--parent-scopes`, the partner kill switch and a revoked
//! parent key (`/_sim/switches`).
mod common;

use common::{Sim, send};
use layers_sim::SimConfig;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn mint_scopes_come_from_the_catalogue_and_the_callers_own() {
    let s = Sim::start().await;
    let org = s.create_org("c").await;
    let path = format!("/v1/organizations/{org}/api-keys");
    let mint = |scopes: serde_json::Value| {
        s.write(
            Method::POST,
            &path,
            json!({ "name": "k", "scopes": scopes }),
        )
    };
    // every data scope of the default parent key can be delegated
    let r = mint(json!([
        "projects:read",
        "projects:write",
        "content:read",
        "content:write"
    ]))
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // unknown scope: 422 naming it
    let r = mint(json!(["content:read", "ads:write"])).await;
    r.assert_error(422, "VALIDATION");
    assert_eq!(r.json["error"]["details"]["scope"], "ads:write");
    assert_eq!(r.json["error"]["details"]["field"], "scopes");
    // a catalogue scope the parent does not hold: 403 naming it
    let r = mint(json!(["*"])).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(r.json["error"]["details"]["scope"], "*");
    // org:admin is never delegable
    mint(json!(["org:admin"]))
        .await
        .assert_error(403, "FORBIDDEN_SCOPE");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn parent_scopes_flag_narrows_what_can_be_minted() {
    let s = Sim::with(SimConfig {
        parent_scopes: vec!["org:admin".into(), "content:read".into()],
        ..common::cfg()
    })
    .await;
    assert_eq!(
        s.get("/v1/whoami").await.json["scopes"],
        json!(["org:admin", "content:read"])
    );
    let org = s.create_org("c").await;
    let path = format!("/v1/organizations/{org}/api-keys");
    let r = s
        .write(
            Method::POST,
            &path,
            json!({ "name": "k", "scopes": ["content:write"] }),
        )
        .await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(r.json["error"]["details"]["scope"], "content:write");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("content:write")
    );
    assert_eq!(s.mint_read_key(&org).await.status, 201);
    s.sim.shutdown().await;
    // with `*` the parent may delegate any data scope, `*` included
    let s = Sim::with(SimConfig {
        parent_scopes: vec!["org:admin".into(), "*".into()],
        ..common::cfg()
    })
    .await;
    let org = s.create_org("c").await;
    let r = s
        .write(
            Method::POST,
            &format!("/v1/organizations/{org}/api-keys"),
            json!({ "name": "k", "scopes": ["*", "projects:write"] }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    s.sim.shutdown().await;
    // an unknown scope in the configuration refuses to start
    let err = layers_sim::spawn(SimConfig {
        parent_scopes: vec!["org:admin".into(), "everything".into()],
        ..common::cfg()
    })
    .await
    .err()
    .expect("unknown parent scope must be refused");
    assert!(err.to_string().contains("everything"), "{err}");
}

#[tokio::test]
async fn kill_switch_and_revoked_parent_key() {
    let s = Sim::start().await;
    let org = s.create_org("c").await;
    let child = s.mint_read_key(&org).await.json["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let sw = |body: serde_json::Value| s.ctl(Method::PATCH, "/_sim/switches", body);
    // kill switch: every /v1 call from any key is 503 KILL_SWITCH
    let r = sw(json!({ "killSwitch": true })).await;
    assert_eq!(
        r.json,
        json!({ "killSwitch": true, "parentKeyRevoked": false })
    );
    for r in [
        s.get("/v1/whoami").await,
        s.write(Method::POST, "/v1/organizations", json!({ "name": "x" }))
            .await,
        send(s.req_as(&child, Method::GET, "/v1/whoami")).await,
    ] {
        r.assert_error(503, "KILL_SWITCH");
        assert_eq!(r.json["error"]["details"]["scope"], "organization");
    }
    // an invalid key is still 401 first
    send(s.req_as("lp_live_nope", Method::GET, "/v1/whoami"))
        .await
        .assert_error(401, "UNAUTHENTICATED");
    // the control API keeps working
    assert_eq!(s.get("/_sim/switches").await.json["killSwitch"], true);
    sw(json!({ "killSwitch": false })).await;
    assert_eq!(s.get("/v1/whoami").await.status, 200);
    // revoked parent key: 401 for it, child keys unaffected; reversible
    sw(json!({ "parentKeyRevoked": true })).await;
    s.get("/v1/organizations")
        .await
        .assert_error(401, "UNAUTHENTICATED");
    assert_eq!(
        send(s.req_as(&child, Method::GET, "/v1/whoami"))
            .await
            .status,
        200
    );
    assert_eq!(s.state().await["switches"]["parentKeyRevoked"], true);
    sw(json!({ "parentKeyRevoked": false })).await;
    assert_eq!(s.get("/v1/organizations").await.status, 200);
    // bad bodies name the field
    for (body, field) in [
        (json!({ "killSwitch": "yes" }), "killSwitch"),
        (json!({ "parentKeyRevoked": 1 }), "parentKeyRevoked"),
        (json!({ "kill": true }), "kill"),
    ] {
        let r = sw(body).await;
        r.assert_error(422, "VALIDATION");
        assert_eq!(r.json["error"]["details"]["field"], field);
    }
    // reset clears the switches
    sw(json!({ "killSwitch": true, "parentKeyRevoked": true })).await;
    send(s.http.post(s.url("/_sim/reset"))).await;
    assert_eq!(s.get("/v1/whoami").await.status, 200);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn empty_metadata_values_are_kept_on_create_and_remove_on_patch() {
    let s = Sim::start().await;
    let r = s
        .write(
            Method::POST,
            "/v1/organizations",
            json!({ "name": "m", "metadata": { "a": "", "b": "1" } }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["metadata"], json!({ "a": "", "b": "1" }));
    let org = r.json["id"].as_str().unwrap();
    let p = s
        .write(
            Method::PATCH,
            &format!("/v1/organizations/{org}"),
            json!({ "metadata": { "b": "" } }),
        )
        .await;
    assert_eq!(p.json["metadata"], json!({ "a": "" }));
    s.write(
        Method::POST,
        "/v1/organizations",
        json!({ "name": "m", "metadata": { "a": null } }),
    )
    .await
    .assert_error(422, "VALIDATION");
    s.sim.shutdown().await;
}
