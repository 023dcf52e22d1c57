//! The cached externalId index behind `find_orgs_by_external_id`, against the simulator:
//! lookups share one listing, own writes are visible at once, others' after the bound.

mod provider_support;

use std::sync::Arc;
use std::time::Duration;

use layers_sim::Tier;
use orgops::provider::layers::{LayersProvider, RateTier};
use orgops::provider::*;
use provider_support::*;

fn new_org(i: usize) -> NewOrg {
    NewOrg {
        name: format!("Customer {i}"),
        metadata: marked(&[("externalId", &format!("cust-{i}"))]),
        billing_email: None,
        extras: Default::default(),
    }
}

fn provider_with_age(sim: &layers_sim::RunningSim, max_age: Duration) -> LayersProvider {
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Unlimited);
    cfg.org_index_max_age = max_age;
    LayersProvider::new(cfg).expect("provider")
}

async fn list_gets(sim: &layers_sim::RunningSim) -> u64 {
    count(sim, "GET", "/v1/organizations").await.values().sum()
}

#[tokio::test]
async fn many_lookups_cost_one_listing() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    // Created by another client, so only a listing can reveal them (201: two pages).
    let other = provider(&sim, RateTier::Unlimited);
    for i in 0..201 {
        other
            .create_org(&new_org(i), &key(format!("create-{i}")))
            .await
            .unwrap();
    }
    let p = Arc::new(provider_with_age(&sim, Duration::from_secs(60)));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            p.find_orgs_by_external_id(&format!("cust-{}", i * 5)).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let found = t.await.unwrap().unwrap();
        assert_eq!(found.len(), 1, "cust-{}", i * 5);
        assert_eq!(found[0].metadata["externalId"], format!("cust-{}", i * 5));
    }
    assert!(
        p.find_orgs_by_external_id("nobody")
            .await
            .unwrap()
            .is_empty()
    );
    // One listing: two pages of active children plus one (empty) page of suspended ones.
    assert_eq!(list_gets(&sim).await, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn own_writes_are_visible_at_once() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider_with_age(&sim, Duration::from_secs(60));
    assert!(
        p.find_orgs_by_external_id("cust-1")
            .await
            .unwrap()
            .is_empty()
    );
    let listed = list_gets(&sim).await;

    let org = p.create_org(&new_org(1), &key("create-1")).await.unwrap();
    let found = p.find_orgs_by_external_id("cust-1").await.unwrap();
    assert_eq!(found.iter().map(|o| &o.id).collect::<Vec<_>>(), [&org.id]);

    // A metadata change moves the org to its new externalId.
    let patch = OrgPatch {
        metadata: Some(meta(&[("externalId", "cust-1b")])),
        ..Default::default()
    };
    p.update_org(&org.id, &patch).await.unwrap();
    assert!(
        p.find_orgs_by_external_id("cust-1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        p.find_orgs_by_external_id("cust-1b").await.unwrap().len(),
        1
    );

    let owned = proof(&p, &org.id).await;
    p.suspend_org(&owned).await.unwrap();
    assert_eq!(
        p.find_orgs_by_external_id("cust-1b").await.unwrap().len(),
        1
    );
    p.archive_org(&owned).await.unwrap();
    assert!(
        p.find_orgs_by_external_id("cust-1b")
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(list_gets(&sim).await, listed, "no listing after the first");
    sim.shutdown().await;
}

#[tokio::test]
async fn others_writes_appear_after_the_bound() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let bound = Duration::from_millis(400);
    let p = provider_with_age(&sim, bound);
    let other = provider(&sim, RateTier::Unlimited);
    assert!(
        p.find_orgs_by_external_id("cust-7")
            .await
            .unwrap()
            .is_empty()
    );

    let org = other
        .create_org(&new_org(7), &key("create-7"))
        .await
        .unwrap();
    // Within the bound the index may not know it yet.
    assert!(
        p.find_orgs_by_external_id("cust-7")
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(bound + Duration::from_millis(50)).await;
    let found = p.find_orgs_by_external_id("cust-7").await.unwrap();
    assert_eq!(found.iter().map(|o| &o.id).collect::<Vec<_>>(), [&org.id]);

    // Archived by someone else: gone after the next refresh too.
    other
        .archive_org(&proof(&other, &org.id).await)
        .await
        .unwrap();
    tokio::time::sleep(bound + Duration::from_millis(50)).await;
    assert!(
        p.find_orgs_by_external_id("cust-7")
            .await
            .unwrap()
            .is_empty()
    );
    sim.shutdown().await;
}

/// The fresh metadata lookup (the offboarding and recovery paths, not the index) walks
/// every page of active and suspended children and leaves archived ones out.
#[tokio::test]
async fn a_metadata_lookup_reads_every_page_and_skips_archived_children() {
    let sim = sim(Tier::Unlimited, 1_000).await;
    let p = provider(&sim, RateTier::Unlimited);
    let mut ids = Vec::new();
    for i in 0..203 {
        let mut new = new_org(i);
        if i >= 200 {
            new.metadata.insert("tenant".into(), "last".into());
        }
        ids.push(
            p.create_org(&new, &key(format!("create-{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    p.suspend_org(&proof(&p, &ids[201]).await).await.unwrap();
    p.archive_org(&proof(&p, &ids[202]).await).await.unwrap();
    let before = list_gets(&sim).await;
    let mut found: Vec<String> = p
        .find_orgs_by_metadata("tenant", "last")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    found.sort();
    let mut live = vec![ids[200].clone(), ids[201].clone()];
    live.sort();
    assert_eq!(
        found, live,
        "the active one on page two and the suspended one"
    );
    // Two pages of active children, one of suspended ones.
    assert_eq!(list_gets(&sim).await - before, 3);
    sim.shutdown().await;
}
