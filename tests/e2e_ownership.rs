//! Nothing destructive without proof of ownership (issue 27), end to end on the real control
//! plane: the loser of an adoption race, deleted, never archives the winner's org; two
//! CustomerOrgs with one Gennia workspace name never share the workspace; two with one
//! `externalId` created at the same moment make one org.
mod support;

use serde_json::{Value, json};
use support::gennia::{CorgWaits, GenniaWorld};
use support::world::*;
use support::{apply_yaml_ok, wait_for, wait_for_some};

/// A child org made at the provider without orgops (no owner marker), as adopters find it.
async fn existing_org(w: &World, name: &str) -> String {
    let created: Value = reqwest::Client::new()
        .post(format!("{}/v1/organizations", w.sim.base_url()))
        .bearer_auth(w.sim.parent_key())
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create an org to adopt")
        .json()
        .await
        .expect("created org JSON");
    text(&created["id"], "created org id")
}

/// Waits until one of `first` and `second` is Ready and the other Stalled
/// `AdoptionConflict`; returns the winner's name.
async fn race_winner(corg: impl Fn(&str) -> Value) -> &'static str {
    wait_for_some("one Ready, the other AdoptionConflict", CONVERGE, || {
        let (a, b) = (corg("first"), corg("second"));
        async move {
            let ready = |v: &Value| condition(v, "Ready").is_some_and(|c| c.0 == "True");
            let conflict =
                |v: &Value| condition(v, "Stalled").is_some_and(|c| c.1 == "AdoptionConflict");
            match (ready(&a), ready(&b), conflict(&a), conflict(&b)) {
                (true, _, _, true) => Some("first"),
                (_, true, true, _) => Some("second"),
                _ => None,
            }
        }
    })
    .await
}

fn org<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["orgs"]
        .as_array()
        .and_then(|orgs| orgs.iter().find(|o| o["id"] == id))
        .unwrap_or(&Value::Null)
}

fn adopter(w: &World, name: &str, org_id: &str) -> String {
    without_external_id(&w.corg_yaml(name, &format!("  adoptOrgId: {org_id}\n")))
}

/// Item 1, first half: a racing claim pass (or a restore) left the winner's org in the
/// loser's `status.orgId`, and `AdoptionConflict` kept it there, ready to be offboarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_conflict_never_keeps_a_foreign_org_id() {
    let w = World::new("own-keep", "3s").await;
    let org_id = existing_org(&w, "Adopted Coffee").await;
    apply_yaml_ok(&adopter(&w, "winner", &org_id));
    w.wait_ready("winner").await;
    apply_yaml_ok(&adopter(&w, "loser", &org_id));
    w.wait_stalled("loser", "AdoptionConflict").await;
    restore_status(&w, "loser", &org_id);
    w.env
        .kubectl_ok(&["annotate", "--overwrite", "customerorg", "loser", "poke=1"]);
    wait_for(
        "loser Stalled AdoptionConflict without a foreign status.orgId",
        CONVERGE,
        || async {
            let v = w.corg("loser");
            condition(&v, "Stalled").is_some_and(|c| c.1 == "AdoptionConflict")
                && v["status"]["orgId"].is_null()
        },
    )
    .await;
    w.cleanup().await;
}

fn restore_status(w: &World, name: &str, org_id: &str) {
    patch_status(
        &w.env,
        name,
        &format!(r#"{{"status":{{"orgId":"{org_id}"}}}}"#),
    );
}

/// Item 1: the loser of an adoption race, restored from a backup with the winner's org in
/// `status.orgId` and deleted (default `deletionPolicy: Archive`), archived the winner's
/// customer. Now a deletion that cannot prove the org is its own archives nothing
/// (`OwnershipUnproven`, advising `deletionPolicy: Orphan`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_loser_of_an_adoption_race_leaves_the_winners_org() {
    let mut w = World::new("own-adopt", "3s").await;
    let org_id = existing_org(&w, "Adopted Coffee").await;
    apply_yaml_ok(&adopter(&w, "winner", &org_id));
    w.wait_ready("winner").await;
    apply_yaml_ok(&adopter(&w, "loser", &org_id));
    w.wait_stalled("loser", "AdoptionConflict").await;

    // Restored from a backup and deleted before any pass ran (the operator is down): its
    // deletion finds the winner's org recorded and must not archive it.
    w.op.kill();
    restore_status(&w, "loser", &org_id);
    w.env
        .kubectl_ok(&["delete", "customerorg", "loser", "--wait=false"]);
    w.op.restart();
    let archived = wait_for_some(
        "the loser's deletion to archive or to report OwnershipUnproven",
        CONVERGE,
        || async {
            let archived = org(&w.sim.state().await, &org_id)["status"] == "archived";
            let out = w
                .env
                .kubectl(&["get", "customerorg", "loser", "-o", "json"]);
            let unproven = serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| {
                condition(&v, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "OwnershipUnproven")
            });
            (archived || unproven).then_some(archived)
        },
    )
    .await;
    assert!(
        !archived,
        "deleting the loser archived the winner's org {org_id}"
    );
    let events = w.events("loser");
    assert!(
        events.contains("OwnershipUnproven") && events.contains("deletionPolicy: Orphan"),
        "an OwnershipUnproven Event advising deletionPolicy: Orphan: {events}"
    );
    w.org_reads(2).await;
    assert_eq!(org(&w.sim.state().await, &org_id)["status"], "active");
    w.wait_ready("winner").await;

    // The safe way out the Event names: Orphan, and the object goes, the org stays.
    w.env.kubectl_ok(&[
        "patch",
        "customerorg",
        "loser",
        "--type=merge",
        "-p",
        r#"{"spec":{"deletionPolicy":"Orphan"}}"#,
    ]);
    wait_for("the loser gone", CONVERGE, || async {
        !w.env
            .kubectl(&["get", "customerorg", "loser"])
            .status
            .success()
    })
    .await;
    assert_eq!(org(&w.sim.state().await, &org_id)["status"], "active");
    w.wait_ready("winner").await;
    w.cleanup().await;
}

/// Item 3: two CustomerOrgs with one `externalId`, created at the same moment, both found
/// nothing and both created (and funded) an org. Now the first to claim the identity
/// creates; the other is `AdoptionConflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customer_orgs_with_one_external_id_created_at_once_make_one_org() {
    let w = World::new("own-extid", "3s").await;
    // Every request a little slow, so both passes are in flight together.
    w.sim
        .set_faults(json!({"latency": 1.0, "latencyMs": 300}))
        .await;
    let one = |name: &str| {
        w.corg_yaml(name, "").replace(
            &format!("externalId: {}-{name}", w.env.ns),
            "externalId: shared-customer",
        )
    };
    apply_yaml_ok(&format!("{}---\n{}", one("first"), one("second")));
    let winner = race_winner(|name| w.corg(name)).await;
    let state = w.sim.state().await;
    let shared: Vec<&Value> = state["orgs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["metadata"]["externalId"] == "shared-customer")
        .collect();
    assert_eq!(shared.len(), 1, "one org for one externalId: {shared:?}");
    let loser = if winner == "first" { "second" } else { "first" };
    assert!(w.corg(loser)["status"]["orgId"].is_null());
    w.cleanup().await;
}

fn workspace_corg(w: &GenniaWorld, name: &str, workspace: &str, admin: &str) -> String {
    w.corg_yaml(
        name,
        workspace,
        &format!(
            "  gennia:\n    planId: {plan}\n    users:\n    - {{email: {admin}, name: Admin, role: admin}}\n",
            plan = w.plan_id
        ),
    )
}

/// Item 2: Gennia workspaces carry no metadata; two CustomerOrgs with one `displayName`
/// both took the workspace (one "created" it, the other silently adopted it), removed each
/// other's users, and deleting either suspended it. Now the workspace name is claimed in
/// the cluster before the create: one owns it, the other is `AdoptionConflict`, and
/// deleting the other leaves the workspace alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_customer_orgs_with_one_workspace_name_never_share_it() {
    let w = GenniaWorld::new("own-gennia", "3s").await;
    let workspace = format!("Shared {}", w.env.ns);
    apply_yaml_ok(&format!(
        "{}---\n{}",
        workspace_corg(&w, "first", &workspace, "ada@first.example"),
        workspace_corg(&w, "second", &workspace, "bob@second.example"),
    ));
    let winner = race_winner(|name| w.corg(name)).await;
    let (loser, admin) = if winner == "first" {
        ("second", "ada@first.example")
    } else {
        ("first", "bob@second.example")
    };
    w.provider_checks(2).await;
    let client = w.client(&workspace).await;
    let emails: Vec<&str> = client["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["email"].as_str())
        .collect();
    assert_eq!(emails, vec![admin], "the winner's users only: {client}");
    let removals = count(&w.sim.counters().await, |m, _| m == "DELETE");
    assert_eq!(removals, 0, "users removed from the shared workspace");
    assert!(w.corg(loser)["status"]["orgId"].is_null());

    support::kubectl_ok(&[
        "delete",
        "customerorg",
        loser,
        "-n",
        &w.env.ns,
        "--wait=false",
    ]);
    wait_for("the loser gone", CONVERGE, || async {
        !w.env
            .kubectl(&["get", "customerorg", loser])
            .status
            .success()
    })
    .await;
    w.provider_checks(2).await;
    let client = w.client(&workspace).await;
    assert_eq!(
        client["subscriptionStatus"], "active",
        "deleting the loser suspended the winner's workspace: {client}"
    );
    let suspends = count(&w.sim.counters().await, |m, route| {
        m == "POST" && route.ends_with("/suspend")
    });
    assert_eq!(suspends, 0, "deleting the loser suspended the workspace");
    w.wait_ready(winner).await;
    w.cleanup().await;
}

/// Issue 27, item 5: Gennia cannot rename a workspace, so a changed `displayName` stalls;
/// if the status was lost meanwhile the next pass looked the new name up, found nothing and
/// created a second workspace. The object's claim on the name it created names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_and_a_lost_status_never_make_a_second_workspace() {
    let w = GenniaWorld::new("own-rename", "3s").await;
    let workspace = format!("Renamed {}", w.env.ns);
    apply_yaml_ok(&workspace_corg(&w, "acme", &workspace, "ada@acme.example"));
    w.wait_ready("acme").await;
    let renamed = format!("{workspace} Two");
    apply_yaml_ok(&workspace_corg(&w, "acme", &renamed, "ada@acme.example"));
    w.wait_stalled("acme", "UnsupportedByProvider").await;
    patch_status(
        &w.env,
        "acme",
        r#"{"status":{"orgId":null,"state":null,"conditions":null}}"#,
    );
    w.env
        .kubectl_ok(&["annotate", "--overwrite", "customerorg", "acme", "poke=1"]);
    w.provider_checks(3).await;
    let v = w.corg("acme");
    let clients = w.sim.clients().await;
    assert_eq!(
        clients.len(),
        1,
        "one workspace, not a second one under the new name: {clients:?}; {}",
        v["status"]
    );
    w.cleanup().await;
}
