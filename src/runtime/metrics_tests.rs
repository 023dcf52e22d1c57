//! Unit tests of `metrics`.

use super::*;

#[test]
fn families_render_without_object_labels() {
    let m = Metrics::new();
    m.reconciled(ReconcileResult::Ok, 0.2);
    m.reconciled(ReconcileResult::Stalled, 0.1);
    m.kube_write(KubeWrite::Status);
    m.set_leader(true);
    let guard = m.queued();
    let text = m.render().expect("render");
    assert!(
        text.contains("orgops_reconciles_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(text.contains("orgops_reconciles_total{result=\"stalled\"} 1"));
    assert!(text.contains("orgops_reconcile_duration_seconds_count 2"));
    assert!(text.contains("orgops_kube_writes_total{kind=\"status\"} 1"));
    assert!(text.contains("orgops_leader 1"));
    assert!(text.contains("orgops_queue_depth 1"));
    drop(guard);
    assert!(m.render().expect("render").contains("orgops_queue_depth 0"));
}

#[test]
fn held_offboardings_are_counted_once_per_object() {
    let m = Metrics::new();
    m.offboarding_paused("p", "ns/a", true);
    m.offboarding_paused("p", "ns/a", true);
    m.offboarding_paused("p", "ns/b", true);
    m.offboarding_paused("q", "ns/c", false);
    let text = m.render().expect("render");
    assert!(
        text.contains("orgops_offboarding_paused{provider=\"p\"} 2"),
        "{text}"
    );
    m.offboarding_paused("p", "ns/a", false);
    m.offboarding_gone("ns/b");
    let text = m.render().expect("render");
    assert!(
        text.contains("orgops_offboarding_paused{provider=\"p\"} 0"),
        "{text}"
    );
}

fn corg(json: serde_json::Value) -> CustomerOrg {
    serde_json::from_value(json).expect("a valid CustomerOrg")
}

fn with_ready(status: &str, since: &str, allocated: i64) -> serde_json::Value {
    serde_json::json!({
        "conditions": [{"type": "Ready", "status": status, "reason": "R", "message": "",
                        "lastTransitionTime": since}],
        "credits": {"allocated": allocated, "balance": allocated, "available": allocated},
    })
}

#[test]
fn a_status_write_counts_credits_moved_and_time_to_ready() {
    let m = Metrics::new();
    let c = corg(serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
        "metadata": {"name": "a", "namespace": "ns", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"displayName": "A", "providerRef": {"name": "layers"}},
    }));
    let old: CustomerOrgStatus =
        serde_json::from_value(with_ready("False", "2020-01-01T00:00:00Z", 100)).unwrap();
    let new: CustomerOrgStatus =
        serde_json::from_value(with_ready("True", "2020-01-01T00:10:00Z", 600)).unwrap();
    m.status_written(&c, Some(&old), &new);
    // Written again unchanged: neither counts twice.
    m.status_written(&c, Some(&new), &new);
    let text = m.render().expect("render");
    assert!(
        text.contains("orgops_credits_allocated_total{provider=\"layers\"} 500"),
        "{text}"
    );
    assert!(
        text.contains("orgops_customer_org_time_to_ready_seconds_count 1"),
        "{text}"
    );
}

#[test]
fn the_leaders_caches_give_customers_by_state_and_provider_readiness() {
    use kube::runtime::watcher::Event;
    let m = Metrics::new();
    // A standby (no caches) exports no per-state gauges at all.
    assert!(!m.render().unwrap().contains("orgops_customer_orgs"));
    let (orgs, mut w) = kube::runtime::reflector::store::<DeserializeGuard<CustomerOrg>>();
    let meta = |name: &str| {
        serde_json::json!({"name": name, "namespace": "ns",
        "creationTimestamp": "2020-01-01T00:00:00Z"})
    };
    let spec = serde_json::json!({"displayName": "A", "providerRef": {"name": "p"}});
    let ready = corg(serde_json::json!({"metadata": meta("r"), "spec": spec,
        "status": with_ready("True", "2020-01-01T00:00:00Z", 0)}));
    let waiting = corg(serde_json::json!({"metadata": meta("w"), "spec": spec,
        "status": with_ready("False", "2020-01-01T00:00:00Z", 0)}));
    for c in [ready, waiting] {
        w.apply_watcher_event(&Event::Apply(DeserializeGuard(Ok(c))));
    }
    let (providers, mut pw) = kube::runtime::reflector::store::<OrgProvider>();
    let p: OrgProvider = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p"},
        "spec": {"type": "layers", "baseUrl": "https://x",
                 "credentialsSecretRef": {"namespace": "ns", "name": "s"}},
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Unauthorized",
                   "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}]},
    }))
    .unwrap();
    pw.apply_watcher_event(&Event::Apply(p));
    m.watch_stores(vec![orgs], providers.clone());
    let text = m.render().expect("render");
    for line in [
        "orgops_customer_orgs{state=\"ready\"} 1",
        "orgops_customer_orgs{state=\"not_ready\"} 1",
        "orgops_customer_orgs{state=\"stalled\"} 0",
        "orgops_provider_ready{provider=\"p\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let longest = text
        .lines()
        .find_map(|l| l.strip_prefix("orgops_customer_org_not_ready_max_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the longest not-Ready time");
    assert!(longest > 3600.0 * 24.0, "{longest}");
    // Leadership lost: the caches are gone, and so are their gauges.
    m.forget_stores();
    assert!(!m.render().unwrap().contains("orgops_customer_orgs"));
}
