//! Gennia end to end (issue 13): the real control plane, the `gennia-sim` binary and the
//! `orgops` operator under its deploy/ RBAC. A client workspace is created once with its
//! users and plan, suspended with a reason and resumed, its users' roles changed and a user
//! removed; deletion suspends it (Gennia has no archive) and says so; a rebuilt cluster
//! finds the client by its workspace name instead of creating another; a field Gennia cannot
//! honour stalls the object without a single API call.
mod support;

use serde_json::Value;
use support::gennia::{
    API, CorgWaits, GenniaWorld, client_requests, cond, creates_with_status, current, users_of,
    writes,
};
use support::world::count;
use support::{apply_yaml_ok, wait_for};

fn triple(email: &str, name: &str, role: &str) -> (String, String, String) {
    (email.into(), name.into(), role.into())
}

fn gennia_block(plan: &str, users: &str, extra: &str) -> String {
    format!(
        r#"  gennia:
    planId: {plan}
    initialCredits: 300
    sendInvitations: true
    users:
{users}{extra}"#
    )
}

const THREE_USERS: &str = r#"    - {email: ada@acme.example, name: Ada Admin, role: admin}
    - {email: bob@acme.example, name: Bob Builder, role: member}
    - {email: cyd@acme.example, name: Cyd Viewer, role: viewer}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_suspend_resume_users_delete() {
    let w = GenniaWorld::new("gennia-life", "5s").await;

    // The provider: Ready with the hub key; capabilities say what a CustomerOrg may use.
    let provider = wait_for_provider_ready(&w).await;
    let caps: Vec<String> = provider["status"]["capabilities"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert!(!caps.is_empty(), "status.capabilities is empty: {provider}");
    for unsupported in ["apiKeys", "webhooks", "migrateProjects"] {
        assert!(
            !caps.iter().any(|c| c == unsupported),
            "a gennia provider must not list {unsupported}: {caps:?}"
        );
    }

    // Create with users and a plan → Ready, exactly one client, as the spec says.
    let workspace = format!("Acme Coffee {}", w.env.ns);
    let spec = gennia_block(&w.plan_id, THREE_USERS, "");
    apply_yaml_ok(&w.corg_yaml("acme", &workspace, &spec));
    let corg = w.wait_ready("acme").await;
    let client = w.client(&workspace).await;
    let org_id = client["publicId"].as_str().expect("publicId").to_string();
    assert_eq!(corg["status"]["orgId"], org_id.as_str(), "status.orgId");
    assert_eq!(corg["status"]["state"], "active");
    assert_eq!(client["subscriptionStatus"], "active");
    assert_eq!(client["plan"]["publicId"], w.plan_id.as_str(), "plan");
    assert_eq!(client["creditsBalance"], 300, "initialCredits");
    assert_eq!(
        corg["status"]["credits"]["balance"], 300,
        "status.credits.balance: {}",
        corg["status"]
    );
    assert_eq!(
        users_of(&client),
        vec![
            triple("ada@acme.example", "Ada Admin", "admin"),
            triple("bob@acme.example", "Bob Builder", "member"),
            triple("cyd@acme.example", "Cyd Viewer", "viewer"),
        ]
    );
    assert_eq!(
        client["invitationsSent"], 3,
        "sendInvitations: one per user"
    );
    let c = w.sim.counters().await;
    assert_eq!(creates_with_status(&c, 201), 1, "one create request: {c}");

    // Suspend with a reason: sent to Gennia with the cancellation reason.
    let suspended = format!(
        "  state: suspended\n  suspendReason: Invoice 2026-11 unpaid after three reminders\n{}",
        gennia_block(
            &w.plan_id,
            THREE_USERS,
            "    cancellationReason: payment_failed\n"
        )
    );
    apply_yaml_ok(&w.corg_yaml("acme", &workspace, &suspended));
    let corg = w.wait_ready("acme").await;
    assert_eq!(corg["status"]["state"], "suspended");
    let client = w.client(&workspace).await;
    assert_eq!(client["subscriptionStatus"], "suspended");
    assert_eq!(
        client["suspendReason"],
        "Invoice 2026-11 unpaid after three reminders"
    );
    assert_eq!(client["cancellationReason"], "payment_failed");

    // Resume.
    apply_yaml_ok(&w.corg_yaml("acme", &workspace, &spec));
    let corg = w.wait_ready("acme").await;
    assert_eq!(corg["status"]["state"], "active");
    assert_eq!(w.client(&workspace).await["subscriptionStatus"], "active");

    // Users: Bob becomes an editor, Cyd's name changes, then Cyd is removed.
    let renamed = r#"    - {email: ada@acme.example, name: Ada Admin, role: admin}
    - {email: bob@acme.example, name: Bob Builder, role: editor}
    - {email: cyd@acme.example, name: Cyd Reader, role: viewer}
"#;
    apply_yaml_ok(&w.corg_yaml("acme", &workspace, &gennia_block(&w.plan_id, renamed, "")));
    w.wait_ready("acme").await;
    assert_eq!(
        users_of(&w.client(&workspace).await),
        vec![
            triple("ada@acme.example", "Ada Admin", "admin"),
            triple("bob@acme.example", "Bob Builder", "editor"),
            triple("cyd@acme.example", "Cyd Reader", "viewer"),
        ]
    );
    let two = r#"    - {email: ada@acme.example, name: Ada Admin, role: admin}
    - {email: bob@acme.example, name: Bob Builder, role: editor}
"#;
    apply_yaml_ok(&w.corg_yaml("acme", &workspace, &gennia_block(&w.plan_id, two, "")));
    w.wait_ready("acme").await;
    let client = w.client(&workspace).await;
    assert_eq!(
        users_of(&client),
        vec![
            triple("ada@acme.example", "Ada Admin", "admin"),
            triple("bob@acme.example", "Bob Builder", "editor"),
        ]
    );
    let deleted: Vec<&str> = client["deletedUsers"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["email"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(deleted, vec!["cyd@acme.example"], "Cyd was removed");

    // A user added after creation cannot be created through Gennia's API: the Ready
    // condition says so, naming the user, and the operator does not loop on it.
    let added = format!("{two}    - {{email: dee@acme.example, name: Dee New, role: member}}\n");
    apply_yaml_ok(&w.corg_yaml("acme", &workspace, &gennia_block(&w.plan_id, &added, "")));
    let corg = w
        .wait_corg("acme", "Ready names the added user", |v| {
            current(v, "Ready").is_some_and(|c| {
                c["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("dee@acme.example"))
            })
        })
        .await;
    let ready = cond(&corg, "Ready").expect("Ready");
    eprintln!("added user: Ready={} {}: {}", ready.0, ready.1, ready.2);
    let before = writes(&w.sim.counters().await);
    // Three provider checks at a 5 s resync: the object was reconciled meanwhile.
    w.provider_checks(3).await;
    let after = writes(&w.sim.counters().await);
    assert_eq!(
        after, before,
        "the operator kept writing to Gennia for a user it cannot add"
    );
    assert!(
        !users_of(&w.client(&workspace).await)
            .iter()
            .any(|u| u.0 == "dee@acme.example"),
        "no API can add a user, yet one appeared"
    );

    // Delete (deletionPolicy Archive, the default): Gennia has no archive, so the client
    // is suspended and an Event says so.
    w.env
        .kubectl_ok(&["delete", "customerorg", "acme", "--wait=false"]);
    w.wait_gone("acme").await;
    let client = w.client(&workspace).await;
    assert_eq!(
        client["subscriptionStatus"], "suspended",
        "deletion suspends: {client}"
    );
    wait_for(
        "an Event about suspending instead of archiving",
        support::world::CONVERGE,
        || {
            let found = w.events("acme").iter().any(|e| {
                let note = e["note"].as_str().unwrap_or_default().to_lowercase();
                e["reason"] == "Suspended" && note.contains("gennia") && note.contains("archive")
            });
            async move { found }
        },
    )
    .await;
    assert_eq!(w.sim.clients().await.len(), 1, "still exactly one client");
    assert!(
        !w.op.log().contains(w.sim.api_key()),
        "the operator logged the hub key"
    );
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_cluster_reapplied_creates_nothing() {
    let w = GenniaWorld::new("gennia-lost", "5s").await;
    let workspace = format!("Globex {}", w.env.ns);
    let users = "    - {email: hank@globex.example, name: Hank, role: admin}\n";
    let spec = gennia_block(&w.plan_id, users, "");
    let orphan = format!("  deletionPolicy: Orphan\n{spec}");
    apply_yaml_ok(&w.corg_yaml("globex", &workspace, &orphan));
    let corg = w.wait_ready("globex").await;
    let org_id = corg["status"]["orgId"].as_str().expect("orgId").to_string();
    assert_eq!(w.client(&workspace).await["publicId"], org_id.as_str());

    // The cluster is lost: the object goes without touching the client (Orphan).
    w.env
        .kubectl_ok(&["delete", "customerorg", "globex", "--wait=false"]);
    w.wait_gone("globex").await;
    assert_eq!(w.client(&workspace).await["subscriptionStatus"], "active");
    let creates_before = creates(&w.sim.counters().await);

    // A fresh object (another name, no status) with the same workspace name: found by name.
    apply_yaml_ok(&w.corg_yaml("globex-rebuilt", &workspace, &spec));
    let corg = w.wait_ready("globex-rebuilt").await;
    assert_eq!(
        corg["status"]["orgId"],
        org_id.as_str(),
        "the re-applied object adopts the client it had"
    );
    let c = w.sim.counters().await;
    assert_eq!(creates(&c), creates_before, "no create request: {c}");
    assert_eq!(w.sim.clients().await.len(), 1, "zero new clients");
    w.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_on_gennia_stall_with_zero_calls() {
    let w = GenniaWorld::new("gennia-unsupported", "3s").await;
    wait_for_provider_ready(&w).await;
    let spec = format!(
        r#"  apiKeys:
  - name: integration
    scopes: [content:read]
  credits: {{allocated: 100}}
{}"#,
        gennia_block(
            &w.plan_id,
            "    - {email: ann@initech.example, name: Ann, role: admin}\n",
            ""
        )
    );
    let workspace = format!("Initech {}", w.env.ns);
    apply_yaml_ok(&w.corg_yaml("initech", &workspace, &spec));
    let corg = w.wait_stalled("initech", "UnsupportedByProvider").await;
    let (_, _, message) = cond(&corg, "Stalled").expect("Stalled");
    assert!(
        message.contains("apiKeys") && message.contains("credits.allocated"),
        "the message names every unsupported field: {message}"
    );
    assert_ne!(
        current(&corg, "Ready").map(|c| c["status"].clone()),
        Some(Value::from("True")),
        "a stalled object is not Ready"
    );

    // Time passes for the operator (resyncs), the object is touched, still no call at all.
    w.env
        .kubectl_ok(&["label", "customerorg", "initech", "touched=yes"]);
    w.provider_checks(2).await;
    let c = w.sim.counters().await;
    assert_eq!(client_requests(&c), 0, "zero client API calls: {c}");
    assert!(w.sim.clients().await.is_empty(), "no client was created");

    // Dropping the unsupported fields lets it converge.
    apply_yaml_ok(&w.corg_yaml(
        "initech",
        &workspace,
        &gennia_block(
            &w.plan_id,
            "    - {email: ann@initech.example, name: Ann, role: admin}\n",
            "",
        ),
    ));
    w.wait_ready("initech").await;
    w.client(&workspace).await;
    w.cleanup().await;
}

fn creates(c: &Value) -> u64 {
    support::world::count(c, |m, route| {
        m == "POST" && route == format!("{}/clients", support::gennia::API)
    })
}

async fn wait_for_provider_ready(w: &GenniaWorld) -> Value {
    support::corgs::wait_provider_ready(&w.provider).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_the_hub_does_not_have_stalls_with_the_apis_message_and_no_storm() {
    let w = GenniaWorld::new("gennia-badplan", "3s").await;
    wait_for_provider_ready(&w).await;
    let workspace = format!("Hooli {}", w.env.ns);
    let stranger = "00000000-0000-4000-8000-000000000000";
    apply_yaml_ok(&w.corg_yaml(
        "hooli",
        &workspace,
        &gennia_block(
            stranger,
            "    - {email: gav@hooli.example, role: admin}\n",
            "",
        ),
    ));
    let corg = w.wait_stalled("hooli", "ApiRejected").await;
    let (_, _, message) = cond(&corg, "Stalled").expect("Stalled");
    assert!(message.contains("edit the spec"), "{message}");
    // The refusal is kept until the spec changes: no more creates, whatever time passes.
    let creates = |c: &Value| {
        count(c, |m, route| {
            m == "POST" && route == format!("{API}/clients")
        })
    };
    let before = creates(&w.sim.counters().await);
    w.provider_checks(3).await;
    assert_eq!(creates(&w.sim.counters().await), before, "no retry storm");
    assert!(w.sim.clients().await.is_empty(), "no client was created");
    w.cleanup().await;
}
