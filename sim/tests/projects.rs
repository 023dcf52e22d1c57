//! Projects (rows 33–35), migrate (row 8), `projectCount`, and which endpoints would receive
//! a child's events (firehose `scope: all_children`, rows 24/27).
mod common;

use common::{Sim, send};
use layers_sim::SimConfig;
use reqwest::Method;
use serde_json::{Value, json};

const ORG_HDR: &str = "X-Layers-Organization";

async fn project(s: &Sim, acting: Option<&str>, body: Value) -> common::Resp {
    let mut rb = s
        .req(Method::POST, "/v1/projects")
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body);
    if let Some(org) = acting {
        rb = rb.header(ORG_HDR, org);
    }
    send(rb).await
}

async fn new_project(s: &Sim, acting: Option<&str>, name: &str) -> String {
    let r = project(s, acting, json!({ "name": name, "timezone": "UTC" })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.json["id"].as_str().unwrap().to_string()
}

fn ids(r: &common::Resp) -> Vec<String> {
    r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn projects_create_list_get_with_limits_and_isolation() {
    let s = Sim::start().await;
    let r = project(
        &s,
        None,
        json!({ "name": "Acme app", "timezone": "Europe/Berlin", "customerExternalId": "cust-1",
                "ownerEmail": "a@acme.io", "metadata": { "tier": "gold" } }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let p1 = r.json["id"].as_str().unwrap().to_string();
    assert!(p1.starts_with("prj_"));
    assert_eq!(r.json["organizationId"], s.sim.parent_org_id.as_str());
    assert_eq!(
        (
            &r.json["customerExternalId"],
            &r.json["primaryLanguage"],
            &r.json["status"]
        ),
        (&json!("cust-1"), &json!("en"), &json!("active"))
    );
    let p2 = new_project(&s, None, "Beta shop").await;
    let l = s.get("/v1/projects").await;
    assert_eq!(ids(&l), vec![p2.clone(), p1.clone()], "newest first");
    assert_eq!(
        ids(&s.get("/v1/projects?search=ACME").await),
        vec![p1.clone()]
    );
    assert_eq!(
        ids(&s.get("/v1/projects?customerExternalId=cust-1").await),
        vec![p1.clone()]
    );
    assert_eq!(s.get("/v1/projects?status=archived").await.item_count(), 0);
    let page = s.get("/v1/projects?limit=1").await;
    assert_eq!(ids(&page), vec![p2.clone()]);
    let cursor = page.json["nextCursor"].as_str().unwrap();
    assert_eq!(
        ids(&s
            .get(&format!("/v1/projects?limit=1&cursor={cursor}"))
            .await),
        vec![p1.clone()]
    );
    let g = s.get(&format!("/v1/projects/{p1}")).await;
    assert_eq!(g.json["metadata"]["tier"], "gold");
    let bare = p1.trim_start_matches("prj_");
    assert_eq!(s.get(&format!("/v1/projects/{bare}")).await.status, 200);
    // documented limits and errors
    for (body, field) in [
        (json!({ "name": "ab", "timezone": "UTC" }), "name"),
        (json!({ "name": "a".repeat(31), "timezone": "UTC" }), "name"),
        (json!({ "name": "abc" }), "timezone"),
        (
            json!({ "name": "abc", "timezone": "not a zone" }),
            "timezone",
        ),
        (
            json!({ "name": "abc", "timezone": "UTC", "metadata": { "x": "y".repeat(9000) } }),
            "metadata",
        ),
        (
            json!({ "name": "abc", "timezone": "UTC", "id": "prj_x" }),
            "id",
        ),
    ] {
        let r = project(&s, None, body.clone()).await;
        r.assert_error(422, "VALIDATION");
        assert_eq!(r.json["error"]["details"]["field"], field, "{body}");
    }
    project(
        &s,
        None,
        json!({ "name": "Dup", "timezone": "UTC", "customerExternalId": "cust-1" }),
    )
    .await
    .assert_error(409, "CONFLICT");
    s.get("/v1/projects?limit=201")
        .await
        .assert_error(422, "VALIDATION");
    s.get("/v1/projects?cursor=zz")
        .await
        .assert_error(422, "VALIDATION");
    s.get("/v1/projects/prj_nope")
        .await
        .assert_error(422, "VALIDATION");
    // a child's project: visible inside the child, 404 for the parent's own view
    let org = s.create_org("child").await;
    let pc = new_project(&s, Some(&org), "Child app").await;
    s.get(&format!("/v1/projects/{pc}"))
        .await
        .assert_error(404, "NOT_FOUND");
    let inside = send(
        s.req(Method::GET, &format!("/v1/projects/{pc}"))
            .header(ORG_HDR, &org),
    )
    .await;
    assert_eq!(inside.json["organizationId"], org.as_str());
    send(
        s.req(Method::GET, &format!("/v1/projects/{p1}"))
            .header(ORG_HDR, &org),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    // projectCount in the org summary
    new_project(&s, Some(&org), "Child two").await;
    let summary = s.get(&format!("/v1/organizations/{org}")).await;
    assert_eq!(summary.json["summary"]["projectCount"], 2);
    // scopes: a content-only child key is refused
    let k = s.mint_read_key(&org).await.json["secret"]
        .as_str()
        .unwrap()
        .to_string();
    send(s.req_as(&k, Method::GET, "/v1/projects"))
        .await
        .assert_error(403, "FORBIDDEN_SCOPE");
    s.sim.shutdown().await;
    // a parent key without projects scopes is refused too
    let s = Sim::with(SimConfig {
        parent_scopes: vec!["org:admin".into(), "content:read".into()],
        ..common::cfg()
    })
    .await;
    let r = project(&s, None, json!({ "name": "abc", "timezone": "UTC" })).await;
    r.assert_error(403, "FORBIDDEN_SCOPE");
    assert_eq!(
        r.json["error"]["details"]["requiredScope"],
        "projects:write"
    );
    s.sim.shutdown().await;
}

async fn flight(s: &Sim, p: &str, on: bool) -> common::Resp {
    s.ctl(
        Method::PUT,
        &format!("/_sim/projects/{p}/in-flight"),
        json!({ "inFlight": on }),
    )
    .await
}

async fn recipients(s: &Sim, q: &str) -> common::Resp {
    s.get(&format!("/_sim/webhook-recipients?{q}")).await
}

async fn migrate(s: &Sim, key: &str, mapping: Value) -> common::Resp {
    send(
        s.req(Method::POST, "/v1/organizations/migrate")
            .header("Idempotency-Key", key)
            .json(&json!({ "mapping": mapping })),
    )
    .await
}

#[tokio::test]
async fn migrate_moves_projects_into_one_child_per_name_and_replays() {
    let s = Sim::start().await;
    let a1 = new_project(&s, None, "Acme web").await;
    let a2 = new_project(&s, None, "Acme ios").await;
    let b1 = new_project(&s, None, "Beta web").await;
    let keep = new_project(&s, None, "Stays flat").await;
    let mapping = json!({ a1.clone(): "Acme", a2.clone(): "Acme", b1.clone(): "Beta" });
    let r = migrate(&s, "mig-1", mapping.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (&r.json["projectsMoved"], &r.json["childrenCreated"]),
        (&json!(3), &json!(2))
    );
    let children = r.json["children"].as_array().unwrap();
    let acme = children.iter().find(|c| c["name"] == "Acme").unwrap();
    let acme_id = acme["id"].as_str().unwrap().to_string();
    let mut moved: Vec<&str> = acme["projectIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    moved.sort();
    let mut want = vec![a1.as_str(), a2.as_str()];
    want.sort();
    assert_eq!(moved, want);
    // the children exist, own the projects, and the partner keeps only the unmapped one
    let orgs = s.get("/v1/organizations").await;
    assert_eq!(orgs.item_count(), 2);
    assert_eq!(ids(&s.get("/v1/projects").await), vec![keep.clone()]);
    let inside = send(s.req(Method::GET, "/v1/projects").header(ORG_HDR, &acme_id)).await;
    assert_eq!(inside.item_count(), 2);
    let summary = s.get(&format!("/v1/organizations/{acme_id}")).await;
    assert_eq!(summary.json["summary"]["projectCount"], 2);
    // idempotent replay: same result, no second child
    let again = migrate(&s, "mig-1", mapping.clone()).await;
    assert_eq!(again.text, r.text);
    assert_eq!(s.get("/v1/organizations").await.item_count(), 2);
    // without the key the projects are no longer the partner's: 404 naming them, nothing made
    let fresh = migrate(&s, "mig-2", mapping).await;
    fresh.assert_error(404, "NOT_FOUND");
    assert_eq!(
        fresh.json["error"]["details"]["projectIds"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.get("/v1/organizations").await.item_count(), 2);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn migrate_is_all_or_nothing_while_work_is_in_flight() {
    let s = Sim::start().await;
    let p1 = new_project(&s, None, "One app").await;
    let p2 = new_project(&s, None, "Two app").await;
    let r = flight(&s, &p2, true).await;
    assert_eq!(
        r.json,
        json!({ "projectId": p2, "organizationId": s.sim.parent_org_id, "inFlight": true })
    );
    let mapping = json!({ p1.clone(): "Cust", p2.clone(): "Cust" });
    let refused = migrate(&s, "m-1", mapping.clone()).await;
    refused.assert_error(409, "CONFLICT");
    assert_eq!(refused.json["error"]["details"]["projectIds"], json!([p2]));
    assert_eq!(
        s.get("/v1/organizations").await.item_count(),
        0,
        "no child created"
    );
    assert_eq!(s.get("/v1/projects").await.item_count(), 2, "nothing moved");
    flight(&s, &p2, false).await;
    // the refusal is a stored 4xx: its key replays it; a new key migrates, exactly one child
    migrate(&s, "m-1", mapping.clone())
        .await
        .assert_error(409, "CONFLICT");
    let ok = migrate(&s, "m-2", mapping).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    assert_eq!(ok.json["childrenCreated"], 1);
    assert_eq!(s.get("/v1/organizations").await.item_count(), 1);
    // control-call errors
    flight(&s, &p1, true).await; // p1 now belongs to the child; the switch still finds it
    let r = s
        .ctl(
            Method::PUT,
            &format!("/_sim/projects/prj_{}/in-flight", uuid::Uuid::new_v4()),
            json!({ "inFlight": true }),
        )
        .await;
    r.assert_error(404, "NOT_FOUND");
    let r = flight(&s, &p1, true).await;
    assert_eq!(r.status, 200);
    let r = s
        .ctl(
            Method::PUT,
            &format!("/_sim/projects/{p1}/in-flight"),
            json!({ "inFlight": "yes" }),
        )
        .await;
    r.assert_error(422, "VALIDATION");
    assert_eq!(r.json["error"]["details"]["field"], "inFlight");
    let r = s
        .ctl(
            Method::PUT,
            "/_sim/projects/bogus/in-flight",
            json!({ "inFlight": true }),
        )
        .await;
    assert_eq!(r.json["error"]["details"]["field"], "projectId");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn migrate_refuses_bad_requests() {
    let s = Sim::start().await;
    let p = new_project(&s, None, "Some app").await;
    for body in [
        json!({}),
        json!({ "mapping": {} }),
        json!({ "mapping": [] }),
        json!({ "mapping": { "prj_bad": "X" } }),
        json!({ "mapping": { p.clone(): "" } }),
        json!({ "mapping": { p.clone(): 5 } }),
        json!({ "mapping": { p.clone(): "X" }, "extra": 1 }),
    ] {
        let r = s
            .write(Method::POST, "/v1/organizations/migrate", body.clone())
            .await;
        r.assert_error(422, "VALIDATION");
        assert!(
            r.json["error"]["details"]["field"].is_string(),
            "{body}: {}",
            r.text
        );
    }
    let other = format!("prj_{}", uuid::Uuid::new_v4());
    let r = s
        .write(
            Method::POST,
            "/v1/organizations/migrate",
            json!({ "mapping": { p.clone(): "X", other.clone(): "X" } }),
        )
        .await;
    r.assert_error(404, "NOT_FOUND");
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&other)
    );
    assert_eq!(s.get("/v1/organizations").await.item_count(), 0);
    // a child cannot migrate into grandchildren; a child key lacks org:admin
    let org = s.create_org("c").await;
    let r = send(
        s.req(Method::POST, "/v1/organizations/migrate")
            .header(ORG_HDR, &org)
            .json(&json!({ "mapping": { p.clone(): "X" } })),
    )
    .await;
    r.assert_error(422, "VALIDATION");
    let k = s.mint_read_key(&org).await.json["secret"]
        .as_str()
        .unwrap()
        .to_string();
    send(
        s.req_as(&k, Method::POST, "/v1/organizations/migrate")
            .json(&json!({ "mapping": { p: "X" } })),
    )
    .await
    .assert_error(403, "FORBIDDEN_SCOPE");
    s.sim.shutdown().await;
}

#[tokio::test]
async fn firehose_covers_children_created_after_it() {
    let s = Sim::start().await;
    let hook = |acting: Option<&str>, body: Value| {
        let mut rb = s.req(Method::POST, "/v1/webhook-endpoints").json(&body);
        if let Some(o) = acting {
            rb = rb.header(ORG_HDR, o);
        }
        send(rb)
    };
    let early = s.create_org("early").await;
    let fh = hook(None, json!({ "url": "https://p.example/fh", "events": ["post.published"], "scope": "all_children" })).await;
    assert_eq!(fh.status, 201, "{}", fh.text);
    assert_eq!(fh.json["endpoint"]["scope"], "all_children");
    let fh_id = fh.json["endpoint"]["id"].as_str().unwrap().to_string();
    // the parent's own-scope endpoint never receives children's events
    hook(
        None,
        json!({ "url": "https://p.example/own", "events": ["post.published"] }),
    )
    .await;
    let late = s.create_org("late").await;
    let own = hook(
        Some(&late),
        json!({ "url": "https://c.example/h", "events": ["post.published", "job.failed"] }),
    )
    .await;
    let own_id = own.json["endpoint"]["id"].as_str().unwrap().to_string();
    let ids_of = |r: &common::Resp| -> Vec<String> {
        r.json["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = recipients(&s, &format!("orgId={late}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids_of(&r), vec![own_id.clone(), fh_id.clone()]);
    assert_eq!(r.json["endpoints"][1]["via"], "all_children");
    assert_eq!(
        ids_of(&recipients(&s, &format!("orgId={early}")).await),
        vec![fh_id.clone()]
    );
    // event filter and paused endpoints
    assert_eq!(
        ids_of(&recipients(&s, &format!("orgId={late}&eventType=job.failed")).await),
        vec![own_id.clone()]
    );
    send(
        s.req(Method::PATCH, &format!("/v1/webhook-endpoints/{fh_id}"))
            .json(&json!({ "status": "paused" })),
    )
    .await;
    assert_eq!(
        ids_of(&recipients(&s, &format!("orgId={late}")).await),
        vec![own_id.clone()]
    );
    // a project-scoped endpoint only for that project's events
    let prj = new_project(&s, Some(&late), "Late app").await;
    let pe = hook(
        Some(&late),
        json!({ "url": "https://c.example/p", "events": ["post.published"], "projectId": prj }),
    )
    .await;
    assert_eq!(pe.status, 201, "{}", pe.text);
    assert_eq!(pe.json["endpoint"]["projectId"], prj.as_str());
    let pe_id = pe.json["endpoint"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        ids_of(&recipients(&s, &format!("orgId={late}")).await),
        vec![own_id.clone()]
    );
    assert_eq!(
        ids_of(&recipients(&s, &format!("orgId={late}&projectId={prj}")).await),
        vec![own_id, pe_id.clone()]
    );
    let filtered = send(
        s.req(
            Method::GET,
            &format!("/v1/webhook-endpoints?projectId={prj}"),
        )
        .header(ORG_HDR, &late),
    )
    .await;
    assert_eq!(filtered.item_count(), 1);
    // another org's project, firehose without org:admin, bad control queries
    hook(
        None,
        json!({ "url": "https://p.example/x", "events": ["post.published"], "projectId": prj }),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    let k = s.mint_read_key(&late).await.json["secret"]
        .as_str()
        .unwrap()
        .to_string();
    send(s.req_as(&k, Method::POST, "/v1/webhook-endpoints").json(
        &json!({ "url": "https://e.com", "events": ["test.ping"], "scope": "all_children" }),
    ))
    .await
    .assert_error(403, "FORBIDDEN_SCOPE");
    for (q, field) in [
        ("", "orgId"),
        ("orgId=x", "orgId"),
        (&format!("orgId={late}&eventType=nope") as &str, "eventType"),
        (&format!("orgId={late}&foo=1"), "foo"),
    ] {
        let r = recipients(&s, q).await;
        r.assert_error(422, "VALIDATION");
        assert_eq!(r.json["error"]["details"]["field"], field, "{q}");
    }
    s.sim.shutdown().await;
}
