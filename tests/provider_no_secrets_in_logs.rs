//! No secret in logs: a full sequence (including faults, retries and error paths) with
//! every TRACE event captured; none of the parent key, minted key secrets or webhook
//! signing secrets may appear. The calls go through the change log's wrapper as the
//! operator's do, so its records (every write's) are checked too.

mod provider_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use orgops::changelog::{self, Logged, ObjectRef, Subject};

use layers_sim::Tier;
use orgops::provider::layers::{LayersProvider, RateTier};
use orgops::provider::*;
use provider_support::*;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

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

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = Buffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn trace_logs_never_contain_secrets() {
    let buffer = Buffer::default();
    // Global, so events from every task and `log` records (reqwest, hyper) are captured.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(buffer.clone())
        .with_ansi(false)
        .finish()
        .try_init()
        .expect("first subscriber in this test binary");

    let sim = sim(Tier::Unlimited, 100_000).await;
    let subject = Subject {
        provider: "layers".into(),
        object: ObjectRef {
            kind: "CustomerOrg".into(),
            namespace: "ns".into(),
            name: "acme".into(),
            uid: "u-1".into(),
            generation: 1,
        },
        ..Default::default()
    };
    let p = Logged::new(Arc::new(provider(&sim, RateTier::Unlimited)), subject);
    let mut secrets: Vec<String> = vec![sim.parent_key.clone()];
    // Retries and error logging must not leak either.
    set_faults(&sim, json!({ "error5xx": 0.2, "loseResponse": 0.2 })).await;

    p.whoami().await.unwrap();
    let org = p
        .create_org(
            &NewOrg {
                name: "Acme".into(),
                metadata: marked(&[("externalId", "acme")]),
                billing_email: None,
                extras: Default::default(),
            },
            &key("c"),
        )
        .await
        .unwrap();
    p.find_orgs_by_external_id("acme").await.unwrap();
    p.allocate_credits(&org.id, 500, &meta(&[("m", "1")]), &key("a"))
        .await
        .unwrap();
    p.list_allocations(&org.id).await.unwrap();
    p.set_credit_config(
        &org.id,
        &CreditConfig {
            monthly_cap: Some(1000),
            refill: None,
        },
    )
    .await
    .unwrap();
    let spec = NewApiKey {
        name: "k".into(),
        scopes: vec!["content:read".into()],
        env: KeyEnv::Live,
    };
    let minted = p.mint_key(&org.id, &spec, &key("m")).await.unwrap();
    secrets.push(minted.secret.expose().to_string());
    let rotated = p
        .rotate_key(&org.id, &minted.key.id, &key("r"))
        .await
        .unwrap();
    secrets.push(rotated.secret.expose().to_string());
    p.list_keys(&org.id).await.unwrap();
    let hook = p
        .create_webhook(
            &org.id,
            &NewWebhook {
                url: "https://crm.example.com/h".into(),
                events: vec!["content.generated".into()],
                metadata: meta(&[]),
            },
            &key("w"),
        )
        .await
        .unwrap();
    secrets.push(hook.signing_secret.expose().to_string());
    let new_signing = p
        .rotate_webhook_secret(&org.id, &hook.endpoint.id, &key("wr"))
        .await
        .unwrap();
    secrets.push(new_signing.expose().to_string());
    p.list_webhooks(&org.id).await.unwrap();
    let owned = proof(&p, &org.id).await;
    p.delete_webhook(&owned, &hook.endpoint.id).await.unwrap();

    set_faults(&sim, json!({})).await;
    // Error paths: a child key after suspension (503), a wrong key (401).
    let child = LayersProvider::new(fast_config(
        &sim.base_url(),
        rotated.secret.expose(),
        RateTier::Unlimited,
    ))
    .unwrap();
    p.suspend_org(&owned).await.unwrap();
    let err = child.whoami().await.unwrap_err();
    tracing::error!(error = %err, debug = ?err, "as the controller would log it");
    p.revoke_key(&owned, &rotated.key.id).await.unwrap();
    p.archive_org(&owned).await.unwrap();
    let wrong = LayersProvider::new(fast_config(
        &sim.base_url(),
        &format!("{}x", sim.parent_key),
        RateTier::Unlimited,
    ))
    .unwrap();
    let err = wrong.whoami().await.unwrap_err();
    tracing::error!(error = %err, debug = ?err, "as the controller would log it");
    // Debug of everything that holds a secret, as a careless caller would log it.
    tracing::info!(?minted, ?rotated, ?hook, ?new_signing, "returned values");
    sim.shutdown().await;

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("layers_request") && logs.contains("/v1/organizations/:orgId/api-keys"),
        "request spans were not captured"
    );
    assert!(
        logs.contains("retrying provider request"),
        "no retry logged"
    );
    assert!(logs.lines().count() > 50);
    for s in &secrets {
        assert!(s.len() > 10);
        assert!(!logs.contains(s.as_str()), "a secret appeared in the logs");
    }
    // Every write left its change-log record, and none holds a secret (checked above, on
    // the same lines; again here on the records alone).
    let records: Vec<changelog::Record> = logs.lines().filter_map(changelog::parse_line).collect();
    let calls: std::collections::BTreeSet<&str> = records.iter().map(|r| r.call.as_str()).collect();
    for call in [
        "create",
        "transfer",
        "credit-config",
        "mint",
        "rotate",
        "webhook-create",
        "webhook-rotate-secret",
        "webhook-delete",
        "suspend",
        "revoke",
        "archive",
    ] {
        assert!(calls.contains(call), "no {call} record: {calls:?}");
    }
    let encoded = serde_json::to_string(&records).unwrap();
    for s in &secrets {
        assert!(
            !encoded.contains(s.as_str()),
            "a secret in a change-log record"
        );
    }
    assert!(!encoded.contains("whsec_"));
    assert!(
        !logs.contains("whsec_"),
        "a signing secret appeared in the logs"
    );
}
