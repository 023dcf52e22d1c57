//! Issue 15 end to end: flat projects migrated into a CustomerOrg (`spec.migrateProjects`).
//! Real control plane, `layers-sim`, `orgops run`.
mod support;

use serde_json::{Value, json};
use support::world::{World, condition, count, live_orgs};
use support::{apply_yaml_ok, wait_for_some};

async fn create_project(w: &World, http: &reqwest::Client, name: &str) -> String {
    let resp = http
        .post(format!("{}/v1/projects", w.sim.base_url()))
        .bearer_auth(w.sim.parent_key())
        .json(&json!({"name": name, "timezone": "UTC"}))
        .send()
        .await
        .expect("simulator");
    assert!(
        resp.status().is_success(),
        "create project: {}",
        resp.status()
    );
    let v: Value = resp.json().await.expect("project JSON");
    v["id"].as_str().expect("project id").to_string()
}

async fn in_flight(w: &World, http: &reqwest::Client, project: &str, on: bool) {
    let resp = http
        .put(format!(
            "{}/_sim/projects/{project}/in-flight",
            w.sim.base_url()
        ))
        .json(&json!({ "inFlight": on }))
        .send()
        .await
        .expect("simulator");
    assert!(resp.status().is_success());
}

fn migrations(counters: &Value) -> u64 {
    count(counters, |m, r| {
        m == "POST" && r == "/v1/organizations/migrate"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_flat_projects_become_one_managed_org_once_work_in_flight_ends() {
    let w = World::new("migrate", "3s").await;
    let http = reqwest::Client::new();
    let p1 = create_project(&w, &http, "acme-web").await;
    let p2 = create_project(&w, &http, "acme-app").await;
    in_flight(&w, &http, &p1, true).await;
    apply_yaml_ok(&w.corg_yaml("acme", &format!("  migrateProjects: [{p1}, {p2}]\n")));

    // All or nothing: refused while a project has work in flight, retried with backoff
    // (Reconciling, not Stalled), nothing moved.
    wait_for_some(
        "migrate refused and retried",
        support::world::CONVERGE,
        || async {
            let v = w.corg("acme");
            let (status, _, message) = condition(&v, "Reconciling")?;
            let retried = migrations(&w.sim.counters().await) >= 2;
            (status == "True" && message.contains("work in flight") && retried).then_some(())
        },
    )
    .await;
    let v = w.corg("acme");
    assert_eq!(condition(&v, "Stalled").map(|c| c.0), Some("False".into()));
    assert!(live_orgs(&w.sim.state().await).is_empty(), "nothing moved");

    in_flight(&w, &http, &p1, false).await;
    let ready = w.wait_ready("acme").await;
    let org_id = ready["status"]["orgId"]
        .as_str()
        .expect("orgId")
        .to_string();
    let mut projects: Vec<String> = ready["status"]["projects"]
        .as_array()
        .expect("status.projects")
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    projects.sort();
    let mut want = vec![p1.clone(), p2.clone()];
    want.sort();
    assert_eq!(projects, want);

    let state = w.sim.state().await;
    let live = live_orgs(&state);
    assert_eq!(live.len(), 1, "exactly one child: {live:?}");
    let child = &live[0];
    assert_eq!(child["id"], org_id.as_str());
    // Renamed from the migration's name to spec.displayName and tagged.
    assert_eq!(child["name"], "Acme Coffee");
    let ns = &w.env.ns;
    assert_eq!(
        child["metadata"]["externalId"],
        format!("{ns}-acme").as_str()
    );
    assert!(
        child["metadata"]["orgops.dev/owner"]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!("{ns}/acme/")))
    );
    for p in state["projects"].as_array().expect("projects") {
        if p["id"] == p1.as_str() || p["id"] == p2.as_str() {
            assert_eq!(p["organizationId"], org_id.as_str(), "project moved: {p}");
        }
    }
    // Then managed as usual: credits, a key in its Secret, a webhook.
    assert_eq!(ready["status"]["credits"]["allocated"], 500);
    assert!(
        w.env
            .kubectl(&["get", "secret", "acme-integration"])
            .status
            .success()
    );
    assert!(
        w.env
            .kubectl(&["get", "secret", "acme-crm-webhook"])
            .status
            .success()
    );
    // Quiet after: no second migration, no second child.
    let n = migrations(&w.sim.counters().await);
    w.org_reads(3).await;
    assert_eq!(migrations(&w.sim.counters().await), n);
    assert_eq!(live_orgs(&w.sim.state().await).len(), 1);

    // A project that is not the partner's: Stalled with the API's message, no retry storm.
    let stranger = "prj_00000000-0000-4000-8000-000000000000";
    apply_yaml_ok(&w.corg_yaml("stranger", &format!("  migrateProjects: [{stranger}]\n")));
    let stalled = w.wait_stalled("stranger", "ApiRejected").await;
    let (_, _, message) = condition(&stalled, "Stalled").expect("Stalled");
    assert!(
        message.contains("NOT_FOUND") && message.contains("immutable"),
        "{message}"
    );
    let tries = migrations(&w.sim.counters().await);
    w.org_reads(3).await;
    assert_eq!(migrations(&w.sim.counters().await), tries, "no retry storm");
    w.cleanup().await;
}
