//! Every `Provider` operation of the Layers client against the in-process simulator,
//! including the documented error paths.

mod provider_support;

use std::time::{Duration, Instant};

use layers_sim::Tier;
use orgops::provider::error::ProviderError;
use orgops::provider::layers::{LayersConfig, LayersProvider, RateTier};
use orgops::provider::metrics::ProviderMetrics;
use orgops::provider::*;
use provider_support::*;
use serde_json::json;

fn new_org(name: &str, external_id: &str) -> NewOrg {
    NewOrg {
        name: name.into(),
        metadata: marked(&[("externalId", external_id), ("plan", "growth")]),
        billing_email: Some("ops@acme.example".into()),
        extras: Default::default(),
    }
}

fn content_key(name: &str) -> NewApiKey {
    NewApiKey {
        name: name.into(),
        scopes: vec!["content:read".into(), "content:write".into()],
        env: KeyEnv::Live,
    }
}

#[tokio::test]
async fn whoami_and_auth_failures() {
    let sim = sim(Tier::Pilot, 1_000).await;
    let p = provider(&sim, RateTier::Pilot);
    let me = p.whoami().await.unwrap();
    assert_eq!(me.organization_id, sim.parent_org_id);
    assert!(me.scopes.iter().any(|s| s == "org:admin"));
    assert_eq!(me.rate_limit_tier, "pilot");
    assert_eq!(RateTier::from_whoami(&me.rate_limit_tier), RateTier::Pilot);
    assert!(p.capabilities().webhooks && p.capabilities().find_by_external_id);

    let wrong = LayersProvider::new(fast_config(
        &sim.base_url(),
        "lp_live_AAAAAAAAAAAAAAAA_wrongsecret",
        RateTier::Pilot,
    ))
    .unwrap();
    let err = wrong.whoami().await.unwrap_err();
    assert!(matches!(err, ProviderError::Unauthenticated(_)), "{err}");
    assert!(err.is_auth() && err.needs_human() && !err.is_retryable());
    assert!(err.request_id().is_some_and(|r| !r.is_empty()));
    sim.shutdown().await;
}

#[tokio::test]
async fn org_lifecycle_and_errors() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider(&sim, RateTier::Unlimited);

    let org = p
        .create_org(&new_org("Acme", "acme"), &key("create-acme"))
        .await
        .unwrap();
    assert!(org.id.starts_with("org_"));
    assert_eq!(org.status, OrgStatus::Active);
    // Same key, same body: the same org, not a second one.
    let again = p
        .create_org(&new_org("Acme", "acme"), &key("create-acme"))
        .await
        .unwrap();
    assert_eq!(again.id, org.id);
    assert_eq!(state(&sim).await["orgs"].as_array().unwrap().len(), 1);
    // Same key, different body.
    let err = p
        .create_org(&new_org("Other", "other"), &key("create-acme"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::IdempotencyConflict(_)),
        "{err}"
    );
    assert!(err.needs_human());

    // GET one has the summary; a bare UUID is accepted.
    let got = p.get_org(&org.id).await.unwrap().unwrap();
    assert_eq!(got.metadata.get("externalId").unwrap(), "acme");
    assert!(got.summary.is_some());
    let bare = org.id.trim_start_matches("org_");
    assert_eq!(p.get_org(bare).await.unwrap().unwrap().id, org.id);
    let missing = "org_00000000-0000-4000-8000-000000000000";
    assert!(p.get_org(missing).await.unwrap().is_none());

    // PATCH merges metadata, "" removes a key, Some(None) clears the email.
    let patched = p
        .update_org(
            &org.id,
            &OrgPatch {
                name: Some("Acme Coffee".into()),
                metadata: Some(meta(&[("plan", ""), ("tier", "gold")])),
                billing_email: Some(None),
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.name, "Acme Coffee");
    assert_eq!(
        patched.metadata,
        marked(&[("externalId", "acme"), ("tier", "gold")])
    );
    assert_eq!(patched.billing_email, None);

    // find by externalId sees active and suspended children, not others.
    p.create_org(&new_org("Beta", "beta"), &key("create-beta"))
        .await
        .unwrap();
    let found = p.find_orgs_by_external_id("acme").await.unwrap();
    assert_eq!(found.iter().map(|o| &o.id).collect::<Vec<_>>(), [&org.id]);

    // suspend / resume are idempotent by state.
    let owned = proof(&p, &org.id).await;
    assert_eq!(
        p.suspend_org(&owned).await.unwrap().status,
        OrgStatus::Suspended
    );
    assert_eq!(
        p.suspend_org(&owned).await.unwrap().status,
        OrgStatus::Suspended
    );
    assert_eq!(p.find_orgs_by_external_id("acme").await.unwrap().len(), 1);
    assert_eq!(
        p.resume_org(&org.id).await.unwrap().status,
        OrgStatus::Active
    );
    assert_eq!(
        p.resume_org(&org.id).await.unwrap().status,
        OrgStatus::Active
    );

    // archive reclaims credits; a repeat is a no-op; archived is terminal.
    p.allocate_credits(&org.id, 300, &meta(&[]), &key("alloc-a"))
        .await
        .unwrap();
    let archived = p.archive_org(&owned).await.unwrap();
    assert_eq!(archived.reclaimed_credits, 300);
    assert_eq!(p.archive_org(&owned).await.unwrap().reclaimed_credits, 0);
    let err = p.resume_org(&org.id).await.unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err}");
    assert!(err.needs_human());
    assert!(p.find_orgs_by_external_id("acme").await.unwrap().is_empty());

    // Nothing destructive without a proof, and no proof for a missing org (404), a
    // malformed id (422 from the API) or an unsafe one (refused locally).
    use orgops::provider::owned::{Unproven, prove};
    let owner = test_owner();
    let err = prove(&p, None, missing, &owner).await.unwrap_err();
    assert!(matches!(err, Unproven::Gone(_)), "{err}");
    let err = prove(&p, None, "org_not-a-uuid", &owner).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Unproven::Provider {
                source: ProviderError::Validation(_),
                ..
            }
        ),
        "{err}"
    );
    let err = prove(&p, None, "../whoami", &owner).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Unproven::Provider {
                source: ProviderError::Invalid(_),
                ..
            }
        ),
        "{err}"
    );
    let beta = p.find_orgs_by_external_id("beta").await.unwrap();
    let mut other = test_owner();
    other.uid = "uid-2".into();
    let err = prove(&p, None, &beta[0].id, &other).await.unwrap_err();
    assert!(
        matches!(err, Unproven::NotOurs { .. }),
        "another object's org: {err}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn credits_config_allocations_and_pagination() {
    let sim = sim(Tier::Unlimited, 10_000).await;
    let p = provider(&sim, RateTier::Unlimited);
    let org = p
        .create_org(&new_org("Acme", "acme"), &key("c"))
        .await
        .unwrap();

    let want = CreditConfig {
        monthly_cap: Some(5000),
        refill: Some(Refill {
            threshold: 1000,
            amount: 2000,
        }),
    };
    assert_eq!(p.set_credit_config(&org.id, &want).await.unwrap(), want);
    assert_eq!(p.get_credit_config(&org.id).await.unwrap(), want);
    let cleared = CreditConfig::default();
    assert_eq!(
        p.set_credit_config(&org.id, &cleared).await.unwrap(),
        cleared
    );
    let bad = CreditConfig {
        monthly_cap: None,
        refill: Some(Refill {
            threshold: 10,
            amount: 0,
        }),
    };
    let err = p.set_credit_config(&org.id, &bad).await.unwrap_err();
    assert!(matches!(err, ProviderError::Validation(_)), "{err}");

    let m = meta(&[("orgops.dev/uid", "u1")]);
    let t = p
        .allocate_credits(&org.id, 250, &m, &key("alloc-1"))
        .await
        .unwrap();
    assert!(!t.replayed && t.id.starts_with("txn_"));
    assert_eq!((t.credits, t.balance), (250, 250));
    let replay = p
        .allocate_credits(&org.id, 250, &m, &key("alloc-1"))
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.id, t.id);
    let err = p
        .allocate_credits(&org.id, 999_999, &m, &key("alloc-big"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::BillingExhausted(_)), "{err}");
    assert!(err.needs_human());

    // 150 more allocations: the ledger spans two pages of 100.
    for i in 0..150 {
        p.allocate_credits(&org.id, 1, &m, &key(format!("small-{i}")))
            .await
            .unwrap();
    }
    let ledger = p.list_allocations(&org.id).await.unwrap();
    assert_eq!(ledger.len(), 151);
    assert_eq!(ledger.iter().map(|a| a.credits).sum::<i64>(), 400);
    assert!(ledger.iter().all(|a| {
        a.metadata
            .as_ref()
            .and_then(|m| m.get("orgops.dev/uid"))
            .map(String::as_str)
            == Some("u1")
    }));
    assert_eq!(
        state(&sim).await["parent"]["balance"].as_i64(),
        Some(10_000 - 400)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn child_keys_mint_list_rotate_revoke() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider(&sim, RateTier::Unlimited);
    let org = p
        .create_org(&new_org("Acme", "acme"), &key("c"))
        .await
        .unwrap();

    let minted = p
        .mint_key(&org.id, &content_key("integration"), &key("mint-1"))
        .await
        .unwrap();
    assert!(minted.key.id.starts_with("key_"));
    assert_eq!(minted.key.status, KeyStatus::Active);
    assert!(!format!("{minted:?}").contains(minted.secret.expose()));
    // The secret authenticates as the child.
    let child = LayersProvider::new(fast_config(
        &sim.base_url(),
        minted.secret.expose(),
        RateTier::Unlimited,
    ))
    .unwrap();
    assert_eq!(child.whoami().await.unwrap().organization_id, org.id);
    // A replay returns the same key and secret.
    let replay = p
        .mint_key(&org.id, &content_key("integration"), &key("mint-1"))
        .await
        .unwrap();
    assert_eq!(replay.key.id, minted.key.id);
    assert_eq!(replay.secret, minted.secret);

    let err = p
        .mint_key(
            &org.id,
            &NewApiKey {
                name: "admin".into(),
                scopes: vec!["org:admin".into()],
                env: KeyEnv::Live,
            },
            &key("mint-admin"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::ForbiddenScope(_)), "{err}");

    let rotated = p
        .rotate_key(&org.id, &minted.key.id, &key("rot-1"))
        .await
        .unwrap();
    assert_ne!(rotated.key.id, minted.key.id);
    assert_ne!(rotated.secret, minted.secret);
    let keys = p.list_keys(&org.id).await.unwrap();
    assert_eq!(keys.len(), 2);
    let old = keys.iter().find(|k| k.id == minted.key.id).unwrap();
    assert_eq!(old.superseded_by.as_deref(), Some(rotated.key.id.as_str()));
    let err = p
        .rotate_key(&org.id, &minted.key.id, &key("rot-2"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Conflict(_)), "{err}");

    let owned = proof(&p, &org.id).await;
    p.revoke_key(&owned, &rotated.key.id).await.unwrap();
    p.revoke_key(&owned, &rotated.key.id).await.unwrap();
    let keys = p.list_keys(&org.id).await.unwrap();
    let new = keys.iter().find(|k| k.id == rotated.key.id).unwrap();
    assert_eq!(new.status, KeyStatus::Revoked);
    let err = p
        .revoke_key(&owned, "key_00000000-0000-4000-8000-000000000000")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // A suspended child's own keys hit the kill switch.
    let live = p
        .mint_key(&org.id, &content_key("second"), &key("mint-2"))
        .await
        .unwrap();
    p.suspend_org(&owned).await.unwrap();
    let child = LayersProvider::new(fast_config(
        &sim.base_url(),
        live.secret.expose(),
        RateTier::Unlimited,
    ))
    .unwrap();
    let err = child.whoami().await.unwrap_err();
    assert!(matches!(err, ProviderError::KillSwitch(_)), "{err}");
    assert!(err.is_auth() && !err.is_retryable());
    sim.shutdown().await;
}

#[tokio::test]
async fn webhooks_inside_the_child() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider(&sim, RateTier::Unlimited);
    let org = p
        .create_org(&new_org("Acme", "acme"), &key("c"))
        .await
        .unwrap();
    let other = p
        .create_org(&new_org("Beta", "beta"), &key("c2"))
        .await
        .unwrap();

    let new = NewWebhook {
        url: "https://crm.example.com/hooks".into(),
        events: vec!["content.generated".into()],
        metadata: meta(&[("orgops.dev/name", "crm")]),
    };
    let created = p.create_webhook(&org.id, &new, &key("wh-1")).await.unwrap();
    assert!(created.signing_secret.expose().starts_with("whsec_"));
    let replay = p.create_webhook(&org.id, &new, &key("wh-1")).await.unwrap();
    assert_eq!(replay.endpoint.id, created.endpoint.id);
    assert_eq!(replay.signing_secret, created.signing_secret);

    let listed = p.list_webhooks(&org.id).await.unwrap();
    assert_eq!(listed, vec![created.endpoint.clone()]);
    assert!(p.list_webhooks(&other.id).await.unwrap().is_empty());

    let updated = p
        .update_webhook(
            &org.id,
            &created.endpoint.id,
            &WebhookPatch {
                events: Some(vec!["content.generated".into(), "post.published".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.events.len(), 2);
    assert_eq!(updated.url, new.url);

    let rotated = p
        .rotate_webhook_secret(&org.id, &created.endpoint.id, &key("wh-rot"))
        .await
        .unwrap();
    assert_ne!(rotated, created.signing_secret);

    // The endpoint lives in the child: another child cannot see or touch it.
    let err = p
        .update_webhook(
            &other.id,
            &created.endpoint.id,
            &WebhookPatch {
                url: Some("https://x.example.com".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    let err = p
        .create_webhook(
            &org.id,
            &NewWebhook {
                events: vec!["no.such.event".into()],
                ..new.clone()
            },
            &key("wh-bad"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Validation(_)), "{err}");

    let owned = proof(&p, &org.id).await;
    p.delete_webhook(&owned, &created.endpoint.id)
        .await
        .unwrap();
    // Gone already: still done.
    p.delete_webhook(&owned, &created.endpoint.id)
        .await
        .unwrap();
    assert!(p.list_webhooks(&org.id).await.unwrap().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn transient_failures_are_retried_within_bounds() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let metrics = ProviderMetrics::unregistered();
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Unlimited);
    cfg.max_attempts = 3;
    cfg.metrics = Some(metrics.clone());
    let p = LayersProvider::new(cfg).unwrap();

    // Every attempt fails: exactly max_attempts requests, then the error.
    set_faults(&sim, json!({ "error5xx": 1.0 })).await;
    let err = p
        .create_org(&new_org("Acme", "acme"), &key("k"))
        .await
        .unwrap_err();
    assert!(err.is_retryable() && !err.needs_human(), "{err}");
    let sent: u64 = count(&sim, "POST", "/v1/organizations")
        .await
        .values()
        .sum();
    assert_eq!(sent, 3);
    assert_eq!(metrics.responses_with_status("200"), 0);

    // A 429 is honoured: the retry waits Retry-After (1 s in the simulator).
    set_faults(&sim, json!({ "rateLimit429": 1.0 })).await;
    let start = Instant::now();
    let err = p.get_org("org_00000000-0000-4000-8000-000000000000").await;
    assert!(matches!(err, Err(ProviderError::RateLimited(_))));
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "two waits of 1 s"
    );

    // Lost responses on a keyed write: retried with the same key, one org results.
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Unlimited);
    cfg.max_attempts = 10;
    cfg.metrics = Some(metrics.clone());
    let p = LayersProvider::new(cfg).unwrap();
    set_faults(
        &sim,
        json!({ "loseResponse": 0.25, "loseResponseMode": "drop" }),
    )
    .await;
    for i in 0..20 {
        p.create_org(&new_org(&format!("o{i}"), "x"), &key(format!("lost-{i}")))
            .await
            .unwrap();
    }
    set_faults(&sim, json!({})).await;
    assert_eq!(state(&sim).await["orgs"].as_array().unwrap().len(), 20);
    assert!(
        metrics.responses_with_status("error") > 0,
        "faults happened"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_configuration_is_rejected_up_front() {
    let err = LayersProvider::new(LayersConfig::new("not a url", Secret::new("lp_x")));
    assert!(matches!(err, Err(ProviderError::Invalid(_))));
    let err = LayersProvider::new(LayersConfig::new("ftp://127.0.0.1", Secret::new("lp_x")));
    assert!(matches!(err, Err(ProviderError::Invalid(_))));
    let err = LayersProvider::new(LayersConfig::new("http://127.0.0.1:1", Secret::new("")));
    assert!(matches!(err, Err(ProviderError::Invalid(_))));
    // Nothing listens on port 1: a transport error, retryable, after bounded attempts.
    let mut cfg = LayersConfig::new("http://127.0.0.1:1", Secret::new("lp_x"));
    cfg.max_attempts = 2;
    cfg.retry_base_delay = Duration::from_millis(1);
    let p = LayersProvider::new(cfg).unwrap();
    let err = p.whoami().await.unwrap_err();
    assert!(matches!(err, ProviderError::Transport(_)), "{err}");
    assert!(err.is_retryable());
}
