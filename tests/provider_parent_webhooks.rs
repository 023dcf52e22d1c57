//! The Layers client's parent-endpoint calls (what a ParentWebhook uses) against the
//! in-process simulator: create/rotate replay under lost responses, patch of every field
//! including scope, delete is idempotent.

mod provider_support;

use layers_sim::Tier;
use orgops::provider::layers::RateTier;
use orgops::provider::layers::parent_webhooks::{NewParentEndpoint, ParentEndpointPatch};
use provider_support::*;
use serde_json::json;

fn firehose(marker: &str) -> NewParentEndpoint {
    NewParentEndpoint {
        url: "https://hooks.example.com/firehose".into(),
        events: vec!["post.published".into()],
        description: Some("all customers".into()),
        scope: "all_children".into(),
        metadata: meta(&[("orgops.dev/parent-webhook", marker)]),
    }
}

#[tokio::test]
async fn parent_endpoint_lifecycle() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider(&sim, RateTier::Unlimited);

    let (ep, secret) = p
        .create_parent_endpoint(&firehose("ns/a"), &key("c1"))
        .await
        .unwrap();
    assert!(secret.secret.expose().starts_with("whsec_"));
    assert_eq!(ep.scope.as_deref(), Some("all_children"));
    assert_eq!(ep.metadata["orgops.dev/parent-webhook"], "ns/a");
    let (again, replayed) = p
        .create_parent_endpoint(&firehose("ns/a"), &key("c1"))
        .await
        .unwrap();
    assert_eq!(again.id, ep.id, "a replay, not a second endpoint");
    assert_eq!(replayed.secret, secret.secret);
    let listed = p.list_parent_endpoints().await.unwrap();
    assert_eq!(listed.len(), 1);
    // On the parent: it is not inside any child.
    let state = state(&sim).await;
    assert_eq!(
        state["webhookEndpoints"][0]["organizationId"],
        sim.parent_org_id.as_str()
    );

    let patched = p
        .update_parent_endpoint(
            &ep.id,
            &ParentEndpointPatch {
                url: Some("https://hooks.example.com/v2".into()),
                events: Some(vec!["post.failed".into(), "job.failed".into()]),
                description: Some(None),
                status: Some("paused".into()),
                scope: Some("own".into()),
                metadata: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.url, "https://hooks.example.com/v2");
    assert_eq!(patched.events.len(), 2);
    assert_eq!(patched.description, None);
    assert_eq!(patched.status, "paused");
    assert_eq!(patched.scope.as_deref(), Some("own"));
    assert_eq!(patched.metadata["orgops.dev/parent-webhook"], "ns/a");

    let r1 = p
        .rotate_parent_endpoint_secret(&ep.id, &key("r1"))
        .await
        .unwrap();
    assert_ne!(r1.secret, secret.secret);
    assert!(r1.previous_expires_at.is_some());
    let r1_again = p
        .rotate_parent_endpoint_secret(&ep.id, &key("r1"))
        .await
        .unwrap();
    assert_eq!(r1_again.secret, r1.secret, "a replayed rotation");

    let err = p
        .update_parent_endpoint(
            &ep.id,
            &ParentEndpointPatch {
                events: Some(vec!["post.exploded".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        err.needs_human() && err.message().contains("post.exploded"),
        "{err}"
    );

    // Deleting takes a proof: a fresh listing showing the endpoint with the marker.
    use orgops::provider::owned::OwnedEndpoint;
    let listing = p.list_parent_endpoints().await.unwrap();
    assert!(
        OwnedEndpoint::from_listing(&listing, "orgops.dev/parent-webhook", "ns/b").is_empty(),
        "another object's marker proves nothing"
    );
    let owned = OwnedEndpoint::from_listing(&listing, "orgops.dev/parent-webhook", "ns/a");
    assert_eq!(owned.len(), 1);
    p.delete_parent_endpoint(&owned[0]).await.unwrap();
    assert!(p.get_parent_endpoint(&ep.id).await.unwrap().is_none());
    p.delete_parent_endpoint(&owned[0]).await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn lost_responses_replay_instead_of_duplicating() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider(&sim, RateTier::Unlimited);
    set_faults(&sim, json!({ "loseResponse": 0.5, "error5xx": 0.1 })).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let marker = format!("ns/h{i}");
        // The client's own retries can all be unlucky at these rates; the operator then
        // sends the same request with the same key on its next pass, as this loop does.
        let mut attempt = 0;
        let (ep, _) = loop {
            attempt += 1;
            match p
                .create_parent_endpoint(&firehose(&marker), &key(format!("c-{i}")))
                .await
            {
                Ok(created) => break created,
                Err(e) if e.is_retryable() && attempt < 20 => continue,
                Err(e) => panic!("create {i} failed after {attempt} passes: {e}"),
            }
        };
        ids.push(ep.id);
    }
    set_faults(&sim, json!({})).await;
    let sent: u64 = count(&sim, "POST", "/v1/webhook-endpoints")
        .await
        .values()
        .sum();
    assert!(
        sent > 10,
        "no create was retried ({sent} sent): the faults did not fire"
    );
    let listed = p.list_parent_endpoints().await.unwrap();
    assert_eq!(
        listed.len(),
        10,
        "one endpoint per create, whatever was lost"
    );
    let mut seen: Vec<String> = listed.into_iter().map(|e| e.id).collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    sim.shutdown().await;
}
