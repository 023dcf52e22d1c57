//! The Gennia client against gennia-sim (in process): every operation, the error mapping,
//! pagination, and exactly-once create with no idempotency under injected faults.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gennia_sim::Started;
use orgops::provider::Secret;
use orgops::provider::error::ProviderError;
use orgops::provider::gennia::*;
use orgops::provider::metrics::ProviderMetrics;
use serde_json::{Value, json};
use sim_kit::KitConfig;

async fn sim() -> Started {
    gennia_sim::spawn(gennia_sim::GenniaConfig {
        kit: KitConfig::default(),
        ..Default::default()
    })
    .await
    .expect("spawn gennia-sim")
}

fn config(s: &Started, key: &str) -> GenniaConfig {
    let mut cfg = GenniaConfig::new(s.base_url(), Secret::new(key));
    cfg.retry_base_delay = Duration::from_millis(5);
    cfg.retry_max_delay = Duration::from_millis(50);
    cfg.request_timeout = Duration::from_secs(5);
    cfg.metrics = Some(ProviderMetrics::unregistered());
    cfg
}

fn client(s: &Started) -> GenniaClient {
    GenniaClient::new(config(s, &s.api_key)).expect("client")
}

async fn control(s: &Started, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut r = reqwest::Client::new().request(method, format!("{}{path}", s.base_url()));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("control call");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("control json")
}

async fn set_faults(s: &Started, faults: Value) {
    control(s, reqwest::Method::PUT, "/_sim/faults", Some(faults)).await;
}

async fn plan(s: &Started, body: Value) -> String {
    let p = control(s, reqwest::Method::POST, "/_sim/plans", Some(body)).await;
    p["publicId"].as_str().unwrap().to_string()
}

async fn sim_clients(s: &Started) -> Vec<Value> {
    let st = control(s, reqwest::Method::GET, "/_sim/state", None).await;
    st["clients"].as_array().unwrap().clone()
}

/// Requests the simulator saw for `method route`, by status (0 = dropped connection).
async fn counts(s: &Started, method: &str, route: &str) -> BTreeMap<u64, u64> {
    let c = control(s, reqwest::Method::GET, "/_sim/counters", None).await;
    let mut out = BTreeMap::new();
    for r in c["requests"].as_array().unwrap() {
        if r["method"] == method && r["route"] == route {
            *out.entry(r["status"].as_u64().unwrap()).or_default() += r["count"].as_u64().unwrap();
        }
    }
    out
}

fn user(email: &str, role: Role) -> NewUser {
    NewUser {
        email: email.into(),
        name: None,
        role,
    }
}

fn new_client(name: &str) -> NewClient {
    NewClient::new(name, vec![user("owner@example.test", Role::Admin)])
}

#[tokio::test]
async fn every_operation_against_the_simulator() {
    let s = sim().await;
    let g = client(&s);
    let h = g.health().await.unwrap();
    assert_eq!(h.status, "ok");
    assert!(h.workspace_public_id.is_some());

    let plan_id = plan(&s, json!({"name": "Pro", "creditsIncluded": 100})).await;
    let mut new = NewClient::new(
        "Acme Corp",
        vec![
            NewUser {
                email: "ada@acme.test".into(),
                name: Some("Ada".into()),
                role: Role::Admin,
            },
            user("bob@acme.test", Role::Member),
        ],
    );
    new.plan_public_id = Some(plan_id.clone());
    new.send_invitations = true;
    new.credits_override = Some(5000);
    let c = g.create_client(&new).await.unwrap();
    assert_eq!(c.workspace_name, "Acme Corp");
    assert_eq!(c.state(), ClientState::Active { billing_note: None });
    assert_eq!(c.credits_balance, Some(5000.0));
    assert_eq!(
        c.plan.as_ref().map(|p| p.public_id.as_str()),
        Some(plan_id.as_str())
    );
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.pending_invitations.len(), 2);

    assert_eq!(g.get_client(&c.public_id).await.unwrap().as_ref(), Some(&c));
    assert_eq!(
        g.get_client("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap(),
        None
    );
    let found = g
        .find_client_by_name("  acme corp ")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.public_id, c.public_id);
    assert!(g.find_client_by_name("Acme").await.unwrap().is_none());
    let listed = g
        .list_clients(&ListFilter {
            status: Some("active".into()),
            q: Some("bob@acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].public_id, c.public_id);

    let bob = c.users.iter().find(|u| u.email == "bob@acme.test").unwrap();
    let patched = g
        .patch_user(
            &c.public_id,
            &bob.public_id,
            &UserPatch {
                role: Role::Editor,
                name: Some("Robert".into()),
            },
        )
        .await
        .unwrap();
    let bob2 = patched
        .users
        .iter()
        .find(|u| u.public_id == bob.public_id)
        .unwrap();
    assert_eq!(
        (bob2.role.as_deref(), bob2.name.as_deref()),
        (Some("editor"), Some("Robert"))
    );

    let inv = c
        .pending_invitations
        .iter()
        .find(|i| i.email == "bob@acme.test")
        .unwrap();
    let resent = g
        .resend_invitation(&c.public_id, &inv.public_id)
        .await
        .unwrap();
    assert_eq!(resent.public_id, inv.public_id);
    assert!(resent.expires_at.is_some());

    let after = g.delete_user(&c.public_id, &bob.public_id).await.unwrap();
    assert!(after.users.iter().all(|u| u.public_id != bob.public_id));
    // Already gone (e.g. an earlier attempt's answer was lost): success, not an error.
    let again = g.delete_user(&c.public_id, &bob.public_id).await.unwrap();
    assert_eq!(again.public_id, c.public_id);

    let suspended = g
        .suspend_client(
            &c.public_id,
            &Suspension {
                reason: Some("unpaid invoice".into()),
                cancellation_reason: Some(CancellationReason::PaymentFailed),
            },
        )
        .await
        .unwrap();
    assert_eq!(suspended.state(), ClientState::Suspended);
    let st = sim_clients(&s).await;
    assert_eq!(st[0]["suspendReason"], "unpaid invoice");
    assert_eq!(st[0]["cancellationReason"], "payment_failed");
    // Suspending a suspended client: the API says 400, the client re-reads and succeeds.
    let twice = g
        .suspend_client(&c.public_id, &Suspension::default())
        .await
        .unwrap();
    assert_eq!(twice.state(), ClientState::Suspended);
    assert_eq!(
        counts(&s, "POST", "/public/api/v1/clients/:clientPublicId/suspend")
            .await
            .get(&400),
        Some(&1)
    );

    let back = g.reactivate_client(&c.public_id).await.unwrap();
    assert!(back.state().is_active());
    assert!(
        g.reactivate_client(&c.public_id)
            .await
            .unwrap()
            .state()
            .is_active()
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn refusals_are_typed_and_distinguishable() {
    let s = sim().await;
    let g = client(&s);

    let bad = GenniaClient::new(config(&s, "gsk_wrongwrongwrong")).unwrap();
    let err = bad.health().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthenticated(_)), "{err}");
    assert_eq!(err.code(), "INVALID_API_KEY");
    assert_eq!(
        counts(&s, "GET", "/public/api/v1/health").await.get(&401),
        Some(&1),
        "a 401 is not retried"
    );

    let mut with_plan = new_client("Planless");
    with_plan.plan_public_id = Some("9c3a4d22-1a8d-4b3f-9b1e-7a0f0c4f3e21".into());
    let err = g.create_client(&with_plan).await.unwrap_err();
    assert!(matches!(err, ProviderError::Validation(_)), "{err}");
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::PlanNotFound));

    let mut trial = new_client("Trial");
    trial.invite_to_trial = true;
    let err = g.create_client(&trial).await.unwrap_err();
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::TrialNotEnabled));

    let bad_email = NewClient::new("Bad", vec![user("not-an-address", Role::Admin)]);
    let err = g.create_client(&bad_email).await.unwrap_err();
    assert!(matches!(err, ProviderError::Validation(_)) && err.needs_human());
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::Validation));
    assert!(!err.message().is_empty());

    // Refused locally: no request sent.
    let err = g
        .create_client(&NewClient::new(
            "No admin",
            vec![user("m@x.test", Role::Viewer)],
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Invalid(_)));

    let plan_id = plan(&s, json!({"name": "Basic"})).await;
    let mut acme = new_client("Acme");
    acme.plan_public_id = Some(plan_id);
    let c = g.create_client(&acme).await.unwrap();
    let err = g.create_client(&new_client("ACME ")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err}");
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::NameTaken));

    let admin = &c.users[0];
    let err = g
        .delete_user(&c.public_id, &admin.public_id)
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::LastAdmin));
    let err = g
        .patch_user(
            &c.public_id,
            &admin.public_id,
            &UserPatch {
                role: Role::Member,
                name: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::LastAdmin));

    let err = g
        .resend_invitation(&c.public_id, "00000000-0000-4000-8000-000000000000")
        .await
        .unwrap_err();
    assert!(err.is_not_found());

    // State errors stay errors when the client is not in the target state.
    control(
        &s,
        reqwest::Method::PUT,
        &format!("/_sim/clients/{}/status", c.public_id),
        Some(json!({"status": "canceled"})),
    )
    .await;
    let err = g
        .suspend_client(&c.public_id, &Suspension::default())
        .await
        .unwrap_err();
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::NotSuspendable));
    let err = g.reactivate_client(&c.public_id).await.unwrap_err();
    assert_eq!(error_kind(&err), Some(GenniaErrorKind::NotSuspended));
    assert_eq!(
        g.get_client(&c.public_id).await.unwrap().unwrap().state(),
        ClientState::Terminal
    );
    let err = g
        .suspend_client(
            &c.public_id,
            &Suspension {
                reason: Some("x".repeat(501)),
                cancellation_reason: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Invalid(_)));
    s.sim.shutdown().await;
}

#[tokio::test]
async fn lists_every_page_with_filters() {
    let s = sim().await;
    let g = Arc::new(client(&s));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..205 {
        let g = g.clone();
        tasks.spawn(async move {
            let name = if i % 50 == 0 {
                format!("Blue {i}")
            } else {
                format!("Client {i}")
            };
            g.create_client(&new_client(&name)).await.unwrap()
        });
    }
    let mut created = Vec::new();
    while let Some(c) = tasks.join_next().await {
        created.push(c.unwrap());
    }
    let all = g.list_clients(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 205);
    let ids: HashSet<_> = all.iter().map(|c| c.public_id.clone()).collect();
    assert_eq!(ids.len(), 205);
    assert_eq!(
        counts(&s, "GET", "/public/api/v1/clients").await.get(&200),
        Some(&3),
        "three pages of 100"
    );
    let blue = g
        .list_clients(&ListFilter {
            status: None,
            q: Some("blue".into()),
        })
        .await
        .unwrap();
    assert_eq!(blue.len(), 5);
    for c in created.iter().take(3) {
        control(
            &s,
            reqwest::Method::PUT,
            &format!("/_sim/clients/{}/status", c.public_id),
            Some(json!({"status": "past_due"})),
        )
        .await;
    }
    let due = g
        .list_clients(&ListFilter {
            status: Some("past_due".into()),
            q: None,
        })
        .await
        .unwrap();
    assert_eq!(due.len(), 3);
    match due[0].state() {
        ClientState::Active {
            billing_note: Some(n),
        } => assert!(n.contains("past_due")),
        other => panic!("{other:?}"),
    }
    s.sim.shutdown().await;
}

#[tokio::test]
async fn ensure_client_creates_exactly_once_under_faults() {
    let s = sim().await;
    let g = Arc::new(client(&s));
    set_faults(
        &s,
        json!({"error5xx": 0.15, "loseResponse": 0.15, "loseResponseMode": "mixed"}),
    )
    .await;
    let calls = Arc::new(Mutex::new(0u64));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (g, calls) = (g.clone(), calls.clone());
        tasks.spawn(async move {
            let name = format!("Tenant {i:02}");
            // Like a reconciler: call again after an error until it succeeds.
            for _ in 0..50 {
                *calls.lock().unwrap() += 1;
                match g.ensure_client(&new_client(&name)).await {
                    Ok((c, how)) => return (name, c, how),
                    Err(e) => assert!(e.is_retryable(), "{name}: {e}"),
                }
            }
            panic!("{name}: no success in 50 calls");
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap());
    }
    set_faults(&s, json!({})).await;

    let st = sim_clients(&s).await;
    assert_eq!(st.len(), 50, "exactly one client per name");
    let names: HashSet<_> = st
        .iter()
        .map(|c| c["workspaceName"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 50);
    for (name, c, _) in &results {
        let in_sim: Vec<_> = st.iter().filter(|x| x["workspaceName"] == *name).collect();
        assert_eq!(in_sim.len(), 1, "{name}");
        assert_eq!(in_sim[0]["publicId"], c.public_id.as_str());
    }
    let created = results.iter().filter(|r| r.2 == Ensured::Created).count();
    let posts: u64 = counts(&s, "POST", "/public/api/v1/clients")
        .await
        .values()
        .sum();
    let calls = *calls.lock().unwrap();
    assert!(
        posts <= calls,
        "{posts} creates sent for {calls} ensure_client calls"
    );
    let faults = control(&s, reqwest::Method::GET, "/_sim/counters", None).await["faultsInjected"]
        .as_u64()
        .unwrap();
    assert!(faults > 0, "the faults were injected");
    eprintln!(
        "50 names: {created} created, {} found/adopted, {calls} calls, {posts} creates sent, {faults} faults",
        50 - created
    );
    // And once more without faults: every name is found, nothing is sent.
    for (name, c, _) in results.iter().take(5) {
        let (again, how) = g.ensure_client(&new_client(name)).await.unwrap();
        assert_eq!(
            (again.public_id.as_str(), how),
            (c.public_id.as_str(), Ensured::Found)
        );
    }
    assert_eq!(
        counts(&s, "POST", "/public/api/v1/clients")
            .await
            .values()
            .sum::<u64>(),
        posts
    );
    s.sim.shutdown().await;
}

#[tokio::test]
async fn a_create_lost_after_commit_is_found_not_resent() {
    let s = sim().await;
    let g = client(&s);
    // Every write commits, then its answer is lost; reads are fine.
    set_faults(
        &s,
        json!({"write": {"loseResponse": 1.0}, "loseResponseMode": "drop"}),
    )
    .await;
    let (c, how) = g.ensure_client(&new_client("Lost Co")).await.unwrap();
    assert_eq!(how, Ensured::Created);
    assert_eq!(c.workspace_name, "Lost Co");
    let posts = counts(&s, "POST", "/public/api/v1/clients").await;
    assert_eq!(
        posts,
        BTreeMap::from([(0, 1)]),
        "the create is sent once and its answer was dropped"
    );
    assert_eq!(sim_clients(&s).await.len(), 1);
    s.sim.shutdown().await;
}

#[tokio::test]
async fn racing_creates_of_one_name_adopt_the_winner() {
    let s = sim().await;
    // Every request waits, so all lookups miss before any create lands.
    set_faults(&s, json!({"latency": 1.0, "latencyMs": 300})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for spelling in ["Race Co", "race co", " RACE CO", "Race Co "] {
        let g = client(&s);
        tasks.spawn(async move { g.ensure_client(&new_client(spelling)).await.unwrap() });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap());
    }
    set_faults(&s, json!({})).await;
    assert_eq!(sim_clients(&s).await.len(), 1);
    let ids: HashSet<_> = results.iter().map(|(c, _)| c.public_id.clone()).collect();
    assert_eq!(ids.len(), 1, "every caller got the same client");
    assert_eq!(
        results
            .iter()
            .filter(|(_, h)| *h == Ensured::Created)
            .count(),
        1
    );
    let posts = counts(&s, "POST", "/public/api/v1/clients").await;
    let sent: u64 = posts.values().sum();
    assert!(sent >= 2, "the race was not staged: {posts:?}");
    assert_eq!(posts.get(&400).copied().unwrap_or(0), sent - 1, "{posts:?}");
    s.sim.shutdown().await;
}

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_logs_never_contain_the_key() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // current_thread runtime: every task of this test runs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = sim().await;
    let g = client(&s);
    set_faults(&s, json!({"error5xx": 0.3, "loseResponse": 0.3})).await;
    for i in 0..5 {
        let _ = g
            .ensure_client(&new_client(&format!("Secretive {i}")))
            .await;
    }
    let _ = g.list_clients(&ListFilter::default()).await;
    let bad = GenniaClient::new(config(&s, "gsk_notthekey_butsecret")).unwrap();
    let _ = bad.health().await;
    let shown = format!("{g:?} {:?}", config(&s, &s.api_key));
    assert!(!shown.contains(&s.api_key), "{shown}");

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("gennia_request"), "the capture works: {logs}");
    assert!(!logs.contains(&s.api_key));
    assert!(!logs.contains("gsk_notthekey_butsecret"));
    s.sim.shutdown().await;
}
