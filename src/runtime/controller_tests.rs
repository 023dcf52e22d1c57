//! Unit tests of `controller`.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

#[test]
fn a_provider_change_concerns_only_its_own_customer_orgs() {
    let (store, mut writer) = kube::runtime::reflector::store::<Guarded>();
    for (name, provider) in [("a", "p1"), ("b", "p1"), ("c", "p2")] {
        let spec: crate::api::CustomerOrgSpec = serde_json::from_value(
            serde_json::json!({"displayName": name, "providerRef": {"name": provider}}),
        )
        .unwrap();
        let mut corg = CustomerOrg::new(name, spec);
        corg.metadata.namespace = Some("ns".into());
        writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(corg))));
    }
    let mut names: Vec<String> = users_of(&store, Some("p1"))
        .into_iter()
        .map(|r| r.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(users_of(&store, Some("p3")).len(), 0);
    assert_eq!(
        users_of(&store, None).len(),
        3,
        "a lagged stream re-triggers all"
    );
}

#[test]
fn a_claim_in_the_offboarding_window_is_not_news_for_every_user() {
    let mut p: OrgProvider = serde_json::from_value(serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "OrgProvider",
        "metadata": {"name": "p", "resourceVersion": "1"},
        "spec": {"type": "layers", "baseUrl": "https://x",
                 "credentialsSecretRef": {"namespace": "ns", "name": "s"}},
        "status": {"organizationId": "org_1"}
    }))
    .unwrap();
    let seen = ProviderVersions::default();
    assert!(seen.changed_beyond_window(&p), "first sighting");
    assert!(!seen.changed_beyond_window(&p));
    let status = p.status.as_mut().unwrap();
    status.offboarding.push(crate::api::OffboardingEntry {
        namespace: "ns".into(),
        name: "a".into(),
        uid: "u".into(),
        time: crate::api::conditions::now(),
        confirmed: false,
    });
    p.metadata.resource_version = Some("2".into());
    assert!(!seen.changed_beyond_window(&p), "only the window changed");
    p.status
        .as_mut()
        .unwrap()
        .credit_window
        .push(crate::api::CreditWindowEntry {
            minute: crate::api::conditions::now(),
            credits: 10,
            transfers: 1,
        });
    p.metadata.resource_version = Some("3".into());
    assert!(
        !seen.changed_beyond_window(&p),
        "a claim in the credit window is no news either"
    );
    p.spec.base_url = "https://y".into();
    assert!(seen.changed_beyond_window(&p), "a spec change is news");
}

#[test]
fn identical_status_is_not_written_again() {
    let status = CustomerOrgStatus {
        org_id: Some("org_1".into()),
        observed_generation: Some(3),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Reconciled".into(),
            message: "ok".into(),
            observed_generation: Some(3),
            last_transition_time: crate::api::conditions::now(),
        }],
        ..Default::default()
    };
    assert!(!status_differs(Some(&status), &status.clone()));
    assert!(status_differs(None, &status));
    let mut newer = status.clone();
    newer.observed_generation = Some(4);
    assert!(status_differs(Some(&status), &newer));
}

#[test]
fn only_a_copy_naming_its_org_is_planned_from_without_a_read() {
    let spec: crate::api::CustomerOrgSpec =
        serde_json::from_value(serde_json::json!({"displayName": "a"})).unwrap();
    let new = CustomerOrg::new("a", spec);
    assert!(!plan_from_cache(&new, false), "no org yet: read it first");
    assert!(
        plan_from_cache(&new, true),
        "the version the deferring pass acted on"
    );
    let mut recorded = new.clone();
    recorded.status = Some(CustomerOrgStatus {
        org_id: Some("org_1".into()),
        ..Default::default()
    });
    assert!(plan_from_cache(&recorded, false));
    let mut deleting = recorded.clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    assert!(
        !plan_from_cache(&deleting, false),
        "a deletion is read fresh"
    );
    assert!(
        !plan_from_cache(&deleting, true),
        "a deletion is read fresh"
    );
}
