//! The planner over the desired x observed matrix, plus property tests of its invariants.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use crate::api::conditions::{self, Cond, READY, STALLED};
use crate::api::*;
use crate::provider::*;

use super::plan::*;

pub(super) const CAPS: Capabilities = crate::provider::layers::CAPABILITIES;

fn corg(spec: CustomerOrgSpec) -> CustomerOrg {
    let mut c = CustomerOrg::new("acme", spec);
    c.metadata.namespace = Some("customers".into());
    c.metadata.uid = Some("uid-1".into());
    c.metadata.generation = Some(3);
    c
}

fn spec() -> CustomerOrgSpec {
    CustomerOrgSpec {
        provider_ref: ProviderRef::default(),
        display_name: "Acme".into(),
        external_id: Some("acme".into()),
        billing_email: None,
        metadata: BTreeMap::new(),
        state: DesiredState::Active,
        adopt_org_id: None,
        credits: None,
        api_keys: Vec::new(),
        webhooks: Vec::new(),
        deletion_policy: DeletionPolicy::Archive,
        management_policy: Default::default(),
        migrate_projects: Vec::new(),
        suspend_reason: None,
        gennia: None,
    }
}

/// The org exactly as `c` wants it.
fn org_for(c: &CustomerOrg) -> Org {
    Org {
        id: "org_1".into(),
        name: c.spec.display_name.clone(),
        status: match c.spec.state {
            DesiredState::Suspended => OrgStatus::Suspended,
            DesiredState::Archived => OrgStatus::Archived,
            DesiredState::Active => OrgStatus::Active,
        },
        metadata: desired_metadata(c),
        billing_email: c.spec.billing_email.clone(),
        summary: Some(OrgSummary {
            balance: 0,
            available: 0,
            credit_config: desired_credit_config(c),
        }),
        users: Vec::new(),
        billing_note: None,
        suspend_blocked: None,
    }
}

fn obs(found: Found) -> Observed {
    Observed {
        found,
        keys: None,
        webhooks: None,
        ledger: None,
        ledger_note: None,
        secrets: BTreeMap::new(),
        owned: Vec::new(),
        capabilities: CAPS,
    }
}

fn tracked(c: &CustomerOrg) -> Observed {
    obs(Found::Tracked(Some(org_for(c))))
}

fn writes(p: &Plan) -> Vec<&Action> {
    p.actions.iter().filter(|a| a.is_write()).collect()
}

fn key_spec(name: &str) -> ApiKeySpec {
    ApiKeySpec {
        name: name.into(),
        scopes: vec!["content:read".into()],
        env: KeyEnvSpec::Live,
        secret_name: None,
    }
}

fn api_key(id: &str, name: &str) -> ApiKey {
    ApiKey {
        id: id.into(),
        name: name.into(),
        prefix: "lp_live_ab".into(),
        env: KeyEnv::Live,
        scopes: vec!["content:read".into()],
        status: KeyStatus::Active,
        superseded_by: None,
    }
}

/// The status entry of key `name` (`id`, in its default Secret).
fn key_record(name: &str, id: &str) -> ApiKeyStatus {
    ApiKeyStatus {
        name: name.into(),
        id: id.into(),
        prefix: "p".into(),
        secret_name: format!("acme-{name}"),
        spec_hash: "h".into(),
    }
}

fn hook_spec(name: &str, url: &str) -> WebhookSpec {
    WebhookSpec {
        name: name.into(),
        url: url.into(),
        events: vec!["post.published".into()],
        secret_name: None,
    }
}

fn endpoint(id: &str, name: &str, url: &str) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        url: url.into(),
        events: vec!["post.published".into()],
        metadata: BTreeMap::from([(WEBHOOK_MARKER.to_string(), name.to_string())]),
    }
}

fn owned(id: &str) -> SecretSeen {
    SecretSeen::Owned {
        id: Some(id.into()),
        rotated_for: None,
    }
}

fn ready_status(c: &CustomerOrg) -> CustomerOrgStatus {
    CustomerOrgStatus {
        org_id: Some("org_1".into()),
        conditions: conditions::settle(
            &[],
            &[Cond::new(READY, true, "Reconciled", "ok").generation(c.metadata.generation)],
            &Time(jiff::Timestamp::UNIX_EPOCH),
        ),
        ..Default::default()
    }
}

#[test]
fn not_created_plans_exactly_one_create_with_a_stable_key() {
    let c = corg(spec());
    let p = plan(
        &c,
        &obs(Found::ByExternalId {
            orgs: vec![],
            claimed_by: None,
        }),
    );
    assert!(matches!(p.actions.as_slice(), [Action::CreateOrg { .. }]));
    let again = plan(&c, &obs(Found::Nothing));
    assert_eq!(
        p.actions, again.actions,
        "a retry must reuse the idempotency key"
    );
    let Action::CreateOrg { new, .. } = &p.actions[0] else {
        unreachable!()
    };
    assert_eq!(
        new.metadata.get(OWNER_KEY).map(String::as_str),
        Some("customers/acme/uid-1")
    );
    assert_eq!(
        new.metadata.get(EXTERNAL_ID_KEY).map(String::as_str),
        Some("acme")
    );
}

#[test]
fn converged_active_and_suspended_plan_nothing() {
    for state in [DesiredState::Active, DesiredState::Suspended] {
        let mut s = spec();
        s.state = state;
        let c = corg(s);
        let p = plan(&c, &tracked(&c));
        assert!(p.actions.is_empty(), "{state:?}: {:?}", p.actions);
        assert!(p.stalled.is_none());
    }
}

#[test]
fn suspend_and_resume_follow_spec_state() {
    let mut s = spec();
    s.state = DesiredState::Suspended;
    let c = corg(s);
    let mut o = org_for(&c);
    o.status = OrgStatus::Active;
    let p = plan(&c, &obs(Found::Tracked(Some(o.clone()))));
    assert_eq!(p.actions, vec![Action::Suspend]);
    let c = corg(spec());
    o.status = OrgStatus::Suspended;
    o.name = "Acme".into();
    let p = plan(&c, &obs(Found::Tracked(Some(o))));
    assert_eq!(p.actions, vec![Action::Resume]);
}

#[test]
fn spec_edits_while_suspended_are_applied_and_org_stays_suspended() {
    let mut s = spec();
    s.state = DesiredState::Suspended;
    let c = corg(s.clone());
    let mut o = org_for(&c);
    o.name = "Old name".into();
    let p = plan(&c, &obs(Found::Tracked(Some(o))));
    assert!(
        matches!(p.actions.as_slice(), [Action::UpdateOrg { patch, .. }] if patch.name.as_deref() == Some("Acme"))
    );
}

#[test]
fn archived_wanted_archives_once_and_archived_is_terminal() {
    let mut s = spec();
    s.state = DesiredState::Archived;
    let c = corg(s);
    let mut o = org_for(&c);
    o.status = OrgStatus::Active;
    assert_eq!(
        plan(&c, &obs(Found::Tracked(Some(o.clone())))).actions,
        vec![Action::Archive]
    );
    o.status = OrgStatus::Archived;
    assert!(
        plan(&c, &obs(Found::Tracked(Some(o.clone()))))
            .actions
            .is_empty()
    );
    // Archived at the provider but wanted active: a human must decide, nothing is created.
    let c = corg(spec());
    let p = plan(&c, &obs(Found::Tracked(Some(o))));
    assert!(p.actions.is_empty());
    assert_eq!(p.stalled.map(|s| s.0).as_deref(), Some("OrgArchived"));
}

#[test]
fn gone_org_stalls_instead_of_creating_a_second_one() {
    let c = corg(spec());
    let p = plan(&c, &obs(Found::Tracked(None)));
    assert!(p.actions.is_empty());
    assert_eq!(p.stalled.map(|s| s.0).as_deref(), Some("OrgNotFound"));
}

#[test]
fn adopt_by_id_and_by_external_id() {
    let mut s = spec();
    s.adopt_org_id = Some("org_1".into());
    let c = corg(s);
    let mut o = org_for(&c);
    o.metadata.remove(OWNER_KEY);
    let p = plan(
        &c,
        &obs(Found::ById {
            org: Some(o.clone()),
            claimed_by: None,
        }),
    );
    assert!(p.adopted.is_some());
    // Only the ownership marker is written; it is not reported as drift.
    assert!(
        matches!(p.actions.as_slice(), [Action::UpdateOrg { patch, .. }] if patch.metadata.as_ref().is_some_and(|m| m.contains_key(OWNER_KEY)))
    );
    assert!(p.drift.is_empty());
    let c = corg(spec());
    let p = plan(
        &c,
        &obs(Found::ByExternalId {
            orgs: vec![o],
            claimed_by: None,
        }),
    );
    assert!(p.adopted.is_some());
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::CreateOrg { .. }))
    );
}

#[test]
fn adoption_conflict_stalls_without_writes() {
    let c = corg(spec());
    let o = org_for(&c);
    for found in [
        Found::ByExternalId {
            orgs: vec![o.clone()],
            claimed_by: Some("other/corg".into()),
        },
        Found::ById {
            org: Some(o.clone()),
            claimed_by: Some("other/corg".into()),
        },
        Found::ByExternalId {
            orgs: vec![
                o.clone(),
                Org {
                    id: "org_2".into(),
                    ..o.clone()
                },
            ],
            claimed_by: None,
        },
    ] {
        let p = plan(&c, &obs(found));
        assert!(p.actions.is_empty());
        assert_eq!(p.stalled.map(|s| s.0).as_deref(), Some("AdoptionConflict"));
    }
}

#[test]
fn drift_is_corrected_and_named() {
    let c0 = corg(spec());
    let mut c = c0.clone();
    c.status = Some(ready_status(&c0));
    let mut o = org_for(&c);
    o.status = OrgStatus::Suspended;
    o.metadata.insert("plan".into(), "hacked".into());
    let p = plan(&c, &obs(Found::Tracked(Some(o))));
    assert_eq!(p.actions.first(), Some(&Action::Resume));
    assert!(p.drift.iter().any(|d| d.contains("state")));
    assert!(p.drift.iter().any(|d| d == "metadata"));
    let Some(Action::UpdateOrg { patch, .. }) = p.actions.get(1) else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(
        patch
            .metadata
            .as_ref()
            .and_then(|m| m.get("plan"))
            .map(String::as_str),
        Some("")
    );
}

/// The pass after a drift correction (the one that verifies it) still calls a new
/// out-of-band change drift: the correcting pass's status says it was correcting, not
/// applying the spec (e2e_fidelity, CI of c01670e: a second edit landing before the
/// verifying pass was corrected without a DriftCorrected Event).
#[test]
fn drift_seen_by_the_pass_verifying_a_correction_is_still_drift() {
    let c0 = corg(spec());
    let mut c = c0.clone();
    let mut st = ready_status(&c0);
    st.conditions = conditions::settle(
        &st.conditions,
        &[Cond::new(READY, false, "CorrectingDrift", "restoring")
            .generation(c0.metadata.generation)],
        &Time(jiff::Timestamp::UNIX_EPOCH),
    );
    c.status = Some(st);
    let mut o = org_for(&c);
    o.metadata.insert("plan".into(), "hacked".into());
    let p = plan(&c, &obs(Found::Tracked(Some(o.clone()))));
    assert!(p.drift.iter().any(|d| d == "metadata"), "{:?}", p.drift);
    // A pass that was only progressing (applying the spec) is not followed by drift.
    let mut st = ready_status(&c0);
    st.conditions = conditions::settle(
        &st.conditions,
        &[Cond::new(READY, false, "Progressing", "applying").generation(c0.metadata.generation)],
        &Time(jiff::Timestamp::UNIX_EPOCH),
    );
    c.status = Some(st);
    let p = plan(&c, &obs(Found::Tracked(Some(o))));
    assert!(p.drift.is_empty(), "{:?}", p.drift);
}

#[test]
fn credit_top_up_moves_only_the_difference_and_never_below_ledger() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 5000,
        ..Default::default()
    });
    let c = corg(s);
    let mut o = tracked(&c);
    o.ledger = Some(3000);
    let p = plan(&c, &o);
    assert!(matches!(
        p.actions.as_slice(),
        [Action::Allocate { credits: 2000, .. }]
    ));
    o.ledger = Some(6000);
    let p = plan(&c, &o);
    assert!(p.actions.is_empty());
    assert!(p.stalled.is_none());
    assert!(p.notes.iter().any(|n| n.contains("top-up only")));
}

#[test]
fn ledger_is_read_when_status_does_not_prove_the_allocation() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 5000,
        ..Default::default()
    });
    let mut c = corg(s);
    assert!(reads(&c, &BTreeMap::new(), &[], &CAPS, false).ledger);
    c.status = Some(CustomerOrgStatus {
        credits: Some(CreditsStatus {
            allocated: 5000,
            balance: 1,
            available: 1,
            refused: None,
        }),
        ..ready_status(&c)
    });
    assert_eq!(
        reads(&c, &BTreeMap::new(), &[], &CAPS, false),
        Reads::default(),
        "steady state reads nothing extra"
    );
}

#[test]
fn cap_and_refill_set_and_cleared() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 0,
        monthly_cap: Some(100),
        auto_refill: Some(AutoRefillSpec {
            threshold: Some(10),
            amount: Some(20),
        }),
    });
    let c = corg(s);
    let mut o = org_for(&c);
    o.summary = Some(OrgSummary {
        balance: 0,
        available: 0,
        credit_config: CreditConfig::default(),
    });
    let p = plan(&c, &obs(Found::Tracked(Some(o.clone()))));
    assert!(
        matches!(p.actions.as_slice(), [Action::SetCreditConfig { config, .. }]
        if config.monthly_cap == Some(100) && config.refill == Some(Refill { threshold: 10, amount: 20 }))
    );
    let cleared = corg(spec());
    o.summary = Some(OrgSummary {
        balance: 0,
        available: 0,
        credit_config: desired_credit_config(&c),
    });
    let p = plan(&cleared, &obs(Found::Tracked(Some(o))));
    assert!(
        matches!(p.actions.as_slice(), [Action::SetCreditConfig { config, .. }] if *config == CreditConfig::default())
    );
}

#[test]
fn keys_added_removed_and_secretless() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    let mut c = corg(s);
    let mut o = tracked(&c);
    o.keys = Some(vec![]);
    assert!(matches!(
        plan(&c, &o).actions.as_slice(),
        [Action::MintKey { .. }]
    ));
    // Key exists but its Secret is missing (the status still records it): recover by
    // rotating it (the old secret keeps working through the grace window), never revoke
    // it at once.
    c.status = Some(CustomerOrgStatus {
        api_keys: vec![key_record("a", "key_1")],
        ..Default::default()
    });
    o.keys = Some(vec![api_key("key_1", "a")]);
    let p = plan(&c, &o);
    assert!(
        matches!(p.actions.as_slice(), [Action::RotateKey { key_id, recover: true, rotation: None, .. }] if key_id == "key_1"),
        "{:?}",
        p.actions
    );
    // With its Secret: nothing.
    o.secrets.insert("acme-a".into(), owned("key_1"));
    assert!(plan(&c, &o).actions.is_empty());
    // Removed from spec: revoke and delete the Secret.
    c.status = Some(CustomerOrgStatus {
        api_keys: vec![key_record("a", "key_1")],
        ..Default::default()
    });
    c.spec.api_keys.clear();
    let p = plan(&c, &o);
    assert!(p.actions.contains(&Action::RevokeKey {
        name: "a".into(),
        key_id: "key_1".into()
    }));
    assert!(p.actions.contains(&Action::DeleteSecret {
        name: "acme-a".into()
    }));
}

/// Issue 27, item 5: keys carry no metadata at the provider, and a key the customer minted
/// (in Layers' dashboard) under a name the spec uses was revoked as an "extra". A key is
/// this object's only when its status or a Secret it controls names the key's id, or a
/// claim Secret of that name stands for a mint whose answer was lost.
#[test]
fn a_key_the_customer_minted_with_a_spec_name_is_never_revoked() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    let mut c = corg(s);
    c.status = Some(CustomerOrgStatus {
        api_keys: vec![ApiKeyStatus {
            spec_hash: key_hash(&c, &key_spec("a")),
            ..key_record("a", "key_1")
        }],
        ..ready_status(&c)
    });
    let mut o = tracked(&c);
    o.secrets.insert("acme-a".into(), owned("key_1"));
    o.owned.push(owned_key_marker("acme-a", "a", "key_1"));
    o.keys = Some(vec![api_key("key_1", "a"), api_key("key_customer", "a")]);
    let p = plan(&c, &o);
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::RevokeKey { key_id, .. } if key_id == "key_customer")),
        "the customer's key is revoked: {:?}",
        p.actions
    );
    assert!(writes(&p).is_empty(), "{:?}", p.actions);
    // The spec drops `a`: only orgops's key goes.
    c.spec.api_keys.clear();
    let p = plan(&c, &o);
    let revoked: Vec<&str> = p
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::RevokeKey { key_id, .. } => Some(key_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(revoked, vec!["key_1"], "{:?}", p.actions);
}

#[test]
fn foreign_secret_is_never_written() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    s.webhooks = vec![hook_spec("crm", "https://crm.example.com")];
    let c = corg(s);
    let mut o = tracked(&c);
    o.keys = Some(vec![]);
    o.webhooks = Some(vec![]);
    o.secrets.insert("acme-a".into(), SecretSeen::Foreign);
    o.secrets
        .insert("acme-crm-webhook".into(), SecretSeen::Foreign);
    let p = plan(&c, &o);
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    assert_eq!(p.stalled.map(|s| s.0).as_deref(), Some("SecretConflict"));
}

#[test]
fn rotation_annotation_rotates_each_key_once() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    let mut c = corg(s);
    c.metadata.annotations = Some(BTreeMap::from([(
        ROTATE_KEYS_ANNOTATION.to_string(),
        "1".to_string(),
    )]));
    let mut o = tracked(&c);
    o.keys = Some(vec![api_key("key_1", "a")]);
    o.secrets.insert("acme-a".into(), owned("key_1"));
    let p = plan(&c, &o);
    assert!(
        matches!(p.actions.as_slice(), [Action::RotateKey { key_id, .. }, Action::MarkRotated { value }] if key_id == "key_1" && value == "1")
    );
    c.status = Some(CustomerOrgStatus {
        keys_rotated_for: Some("1".into()),
        ..Default::default()
    });
    assert!(plan(&c, &o).actions.is_empty());
}

#[test]
fn half_done_rotation_pass_rotates_only_the_keys_left() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a"), key_spec("b")];
    let mut c = corg(s);
    c.metadata.annotations = Some(BTreeMap::from([(
        ROTATE_KEYS_ANNOTATION.to_string(),
        "1".to_string(),
    )]));
    // The failed pass rotated a (key_a1 -> key_a2, Secret written) and then failed on b.
    let mut a1 = api_key("key_a1", "a");
    a1.superseded_by = Some("key_a2".into());
    let mut o = tracked(&c);
    o.keys = Some(vec![a1, api_key("key_a2", "a"), api_key("key_b1", "b")]);
    o.secrets.insert(
        "acme-a".into(),
        SecretSeen::Owned {
            id: Some("key_a2".into()),
            rotated_for: Some("1".into()),
        },
    );
    o.secrets.insert("acme-b".into(), owned("key_b1"));
    let p = plan(&c, &o);
    assert!(
        matches!(p.actions.as_slice(), [Action::RotateKey { key_id, rotation, .. }, Action::MarkRotated { value }] if key_id == "key_b1" && rotation.as_deref() == Some("1") && value == "1"),
        "{:?}",
        p.actions
    );

    // A Secret recorded for an older value does not count for a new one.
    o.secrets.insert(
        "acme-a".into(),
        SecretSeen::Owned {
            id: Some("key_a2".into()),
            rotated_for: Some("0".into()),
        },
    );
    let rotated: Vec<String> = plan(&c, &o)
        .actions
        .into_iter()
        .filter_map(|a| match a {
            Action::RotateKey { key_id, .. } => Some(key_id),
            _ => None,
        })
        .collect();
    assert_eq!(rotated, ["key_a2", "key_b1"]);
}

#[test]
fn rotation_keys_differ_per_key_id_and_replay_the_lost_request() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    let mut c = corg(s);
    c.metadata.annotations = Some(BTreeMap::from([(
        ROTATE_KEYS_ANNOTATION.to_string(),
        "1".to_string(),
    )]));
    let mut o = tracked(&c);
    o.keys = Some(vec![api_key("key_1", "a")]);
    o.secrets.insert("acme-a".into(), owned("key_1"));
    let first = match plan(&c, &o).actions.first() {
        Some(Action::RotateKey { key, .. }) => key.clone(),
        other => panic!("expected a rotation, got {other:?}"),
    };
    // The response was lost: key_1 is superseded, the Secret still holds key_1.
    let mut k1 = api_key("key_1", "a");
    k1.superseded_by = Some("key_2".into());
    o.keys = Some(vec![k1, api_key("key_2", "a")]);
    let replay = plan(&c, &o);
    assert!(
        matches!(replay.actions.first(), Some(Action::RotateKey { key_id, key, .. }) if key_id == "key_1" && *key == first),
        "{:?}",
        replay.actions
    );
    // The same value applied again later to another key id is a different request.
    o.keys = Some(vec![api_key("key_9", "a")]);
    o.secrets.insert("acme-a".into(), owned("key_9"));
    assert!(
        matches!(plan(&c, &o).actions.first(), Some(Action::RotateKey { key, .. }) if *key != first)
    );
}

#[test]
fn key_minted_during_a_rotation_records_it_and_completes_it() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    let mut c = corg(s);
    c.metadata.annotations = Some(BTreeMap::from([(
        ROTATE_KEYS_ANNOTATION.to_string(),
        "7".to_string(),
    )]));
    let mut o = tracked(&c);
    o.keys = Some(Vec::new());
    let p = plan(&c, &o);
    assert!(
        matches!(p.actions.as_slice(), [Action::MintKey { rotation: Some(r), .. }, Action::MarkRotated { value }] if r == "7" && value == "7"),
        "{:?}",
        p.actions
    );
}

#[test]
fn key_scope_change_mints_then_revokes() {
    let mut s = spec();
    s.api_keys = vec![ApiKeySpec {
        scopes: vec!["content:write".into()],
        ..key_spec("a")
    }];
    let c = corg(s);
    let mut o = tracked(&c);
    o.keys = Some(vec![api_key("key_1", "a")]);
    o.secrets.insert("acme-a".into(), owned("key_1"));
    let p = plan(&c, &o);
    assert!(
        matches!(p.actions.as_slice(), [Action::MintKey { .. }, Action::RevokeKey { key_id, .. }] if key_id == "key_1")
    );
}

#[test]
fn webhooks_added_changed_removed() {
    let mut s = spec();
    s.webhooks = vec![hook_spec("crm", "https://crm.example.com/new")];
    let mut c = corg(s);
    let mut o = tracked(&c);
    o.webhooks = Some(vec![]);
    assert!(matches!(
        plan(&c, &o).actions.as_slice(),
        [Action::CreateWebhook { .. }]
    ));
    o.webhooks = Some(vec![endpoint("wh_1", "crm", "https://crm.example.com/old")]);
    o.secrets.insert("acme-crm-webhook".into(), owned("wh_1"));
    assert!(
        matches!(plan(&c, &o).actions.as_slice(), [Action::UpdateWebhook { patch, .. }] if patch.url.as_deref() == Some("https://crm.example.com/new"))
    );
    // Secret lost: rotate the signing secret into a new Secret.
    o.secrets.clear();
    o.webhooks = Some(vec![endpoint("wh_1", "crm", "https://crm.example.com/new")]);
    assert!(matches!(
        plan(&c, &o).actions.as_slice(),
        [Action::RotateWebhookSecret { .. }]
    ));
    c.status = Some(CustomerOrgStatus {
        webhooks: vec![WebhookStatus {
            name: "crm".into(),
            id: "wh_1".into(),
            secret_name: "acme-crm-webhook".into(),
            spec_hash: "h".into(),
        }],
        ..Default::default()
    });
    c.spec.webhooks.clear();
    o.secrets.insert("acme-crm-webhook".into(), owned("wh_1"));
    let p = plan(&c, &o);
    assert!(p.actions.contains(&Action::DeleteWebhook {
        name: "crm".into(),
        id: "wh_1".into()
    }));
    assert!(p.actions.contains(&Action::DeleteSecret {
        name: "acme-crm-webhook".into()
    }));
}

#[test]
fn paused_and_rejected_generation_plan_nothing() {
    let mut c = corg(spec());
    c.metadata.annotations = Some(BTreeMap::from([(
        PAUSED_ANNOTATION.to_string(),
        "true".to_string(),
    )]));
    assert_eq!(gate(&c), Some(Gate::Paused));
    assert!(plan(&c, &obs(Found::Nothing)).actions.is_empty());
    let mut c = corg(spec());
    c.status = Some(CustomerOrgStatus {
        conditions: conditions::settle(
            &[],
            &[Cond::new(STALLED, true, REASON_API_REJECTED, "422").generation(Some(3))],
            &Time(jiff::Timestamp::UNIX_EPOCH),
        ),
        ..Default::default()
    });
    assert_eq!(gate(&c), Some(Gate::Rejected));
    assert!(plan(&c, &obs(Found::Nothing)).actions.is_empty());
    c.metadata.generation = Some(4);
    assert_eq!(gate(&c), None, "a spec change retries");
}

fn arb_org_status() -> impl Strategy<Value = OrgStatus> {
    prop_oneof![
        Just(OrgStatus::Active),
        Just(OrgStatus::Suspended),
        Just(OrgStatus::Archived)
    ]
}

fn arb_state() -> impl Strategy<Value = DesiredState> {
    prop_oneof![
        Just(DesiredState::Active),
        Just(DesiredState::Suspended),
        Just(DesiredState::Archived)
    ]
}

/// A new CustomerOrg wanting everything a customer gets on day one.
fn full_new_corg() -> CustomerOrg {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 500,
        monthly_cap: Some(100),
        auto_refill: Some(AutoRefillSpec {
            threshold: Some(10),
            amount: Some(20),
        }),
    });
    s.api_keys = vec![key_spec("app")];
    s.webhooks = vec![hook_spec("events", "https://hooks.acme.example/layers")];
    let mut c = corg(s);
    c.metadata.generation = Some(1);
    c
}

#[test]
fn a_create_plans_all_follow_ups_in_the_same_plan() {
    let c = full_new_corg();
    let p = plan(&c, &obs(Found::Nothing));
    let kinds: Vec<&str> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::CreateOrg { .. } => "create",
            Action::SetCreditConfig { .. } => "credit-config",
            Action::Allocate {
                credits: 500,
                ledger: 0,
                ..
            } => "allocate-500",
            Action::MintKey { name, .. } if name == "app" => "mint",
            Action::CreateWebhook { name, .. } if name == "events" => "webhook",
            _ => "unexpected",
        })
        .collect();
    assert_eq!(
        kinds,
        ["create", "credit-config", "allocate-500", "mint", "webhook"]
    );
    assert!(p.stalled.is_none() && p.adopted.is_none());
    // Planned against the known-empty new org: its answers are the observation.
    assert!(p.fresh, "a first create with all follow-ups is fresh");
    // Every key is stable: a retry of the whole pass replays, never duplicates.
    assert_eq!(plan(&c, &obs(Found::Nothing)).actions, p.actions);
    // Two new objects never share a follow-up key (the org id is not known yet).
    let mut other = full_new_corg();
    other.metadata.uid = Some("uid-2".into());
    let theirs = plan(&other, &obs(Found::Nothing));
    let keys = |p: &Plan| -> Vec<IdempotencyKey> {
        p.actions
            .iter()
            .filter_map(|a| match a {
                Action::CreateOrg { key, .. }
                | Action::Allocate { key, .. }
                | Action::MintKey { key, .. }
                | Action::CreateWebhook { key, .. } => Some(key.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(keys(&p).len(), 4);
    for k in keys(&p) {
        assert!(!keys(&theirs).contains(&k), "{k:?} shared");
    }
}

#[test]
fn create_follow_ups_respect_capabilities_and_foreign_secrets() {
    let mut c = full_new_corg();
    c.spec.webhooks.clear();
    let mut first = obs(Found::Nothing);
    first.capabilities.webhooks = false;
    first.secrets.insert("acme-app".into(), SecretSeen::Foreign);
    let p = plan(&c, &first);
    assert!(matches!(p.actions.first(), Some(Action::CreateOrg { .. })));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::MintKey { .. } | Action::CreateWebhook { .. }))
    );
    assert_eq!(
        p.stalled.as_ref().map(|s| s.0.as_str()),
        Some("SecretConflict")
    );
    assert!(!p.fresh, "a stalled plan is never Ready on its answers");
}

#[test]
fn create_follow_ups_wait_for_a_read_when_a_replay_could_differ() {
    let only_create = |c: &CustomerOrg, o: &Observed| {
        let p = plan(c, o);
        matches!(p.actions.as_slice(), [Action::CreateOrg { .. }])
    };
    let c = full_new_corg();
    let first = obs(Found::Nothing);
    assert!(!only_create(&c, &first));
    let not_fresh = |c: &CustomerOrg, o: &Observed| !plan(c, o).fresh;

    // Spec edited since the first reconcile: an earlier create's follow-ups may have used
    // other keys (another webhook generation, another key spec).
    let mut edited = c.clone();
    edited.metadata.generation = Some(2);
    assert!(only_create(&edited, &first));
    // A create alone is verified by the next pass (it reads what the replay may have made).
    assert!(not_fresh(&edited, &first));

    let mut rotating = c.clone();
    rotating.metadata.annotations = Some(BTreeMap::from([(
        ROTATE_KEYS_ANNOTATION.to_string(),
        "2026-01".to_string(),
    )]));
    assert!(only_create(&rotating, &first));

    // Status already records work: not a first create.
    let mut recorded = c.clone();
    recorded.status = Some(CustomerOrgStatus {
        credits: Some(CreditsStatus {
            allocated: 500,
            balance: 500,
            available: 500,
            refused: None,
        }),
        ..Default::default()
    });
    assert!(only_create(&recorded, &first));

    // A Secret this object controls is a durable record of earlier work.
    let mut marked = first.clone();
    marked.owned.push(OwnedSecret {
        secret_name: "acme-app".into(),
        role: OwnedRole::Key {
            name: Some("app".into()),
            id: Some("key_1".into()),
            replaced: Vec::new(),
        },
    });
    assert!(only_create(&c, &marked));
}

proptest! {
    /// Invariants over random specs and observations.
    #[test]
    fn planner_invariants(
        state in arb_state(),
        org_status in arb_org_status(),
        found_kind in 0u8..4,
        allocated in 0i64..10_000,
        ledger in proptest::option::of(0i64..10_000),
        paused in any::<bool>(),
        name_drift in any::<bool>(),
        n_keys in 0usize..3,
        keys_exist in any::<bool>(),
    ) {
        let mut s = spec();
        s.state = state;
        s.credits = Some(CreditsSpec { allocated, ..Default::default() });
        s.api_keys = (0..n_keys).map(|i| key_spec(&format!("k{i}"))).collect();
        let mut c = corg(s);
        if paused {
            c.metadata.annotations = Some(BTreeMap::from([(PAUSED_ANNOTATION.to_string(), "true".to_string())]));
        }
        let mut o = org_for(&c);
        o.status = org_status;
        if name_drift { o.name = "drifted".into(); }
        let found = match found_kind {
            0 => Found::Tracked(Some(o.clone())),
            1 => Found::ById { org: Some(o.clone()), claimed_by: None },
            2 => Found::ByExternalId { orgs: vec![o.clone()], claimed_by: None },
            _ => Found::Nothing,
        };
        let org_exists = found_kind < 3;
        let mut observed = obs(found);
        observed.ledger = ledger;
        observed.keys = Some(if keys_exist {
            (0..n_keys).map(|i| api_key(&format!("key_{i}"), &format!("k{i}"))).collect()
        } else { vec![] });
        if keys_exist {
            for i in 0..n_keys {
                observed.secrets.insert(format!("acme-k{i}"), owned(&format!("key_{i}")));
            }
        }
        let p = plan(&c, &observed);
        if paused {
            prop_assert!(p.actions.is_empty());
        }
        if org_exists {
            let creates = p.actions.iter().filter(|a| matches!(a, Action::CreateOrg { .. })).count();
            prop_assert_eq!(creates, 0);
        }
        let moved: u64 = p.actions.iter().filter_map(|a| match a { Action::Allocate { credits, .. } => Some(*credits), _ => None }).sum();
        let room = ledger.map_or(0, |l| (allocated - l).max(0));
        prop_assert!(moved as i64 <= room);
        if org_status == OrgStatus::Archived && org_exists {
            prop_assert!(writes(&p).is_empty(), "an archived org gets no writes");
        }
        // Idempotent: after the effects, the observation matches and a re-plan writes nothing.
        if org_exists && !paused && org_status != OrgStatus::Archived && state != DesiredState::Archived {
            let mut after = observed.clone();
            let mut o2 = org_for(&c);
            o2.status = if state == DesiredState::Suspended { OrgStatus::Suspended } else { OrgStatus::Active };
            after.found = Found::Tracked(Some(o2));
            after.ledger = ledger.map(|l| l.max(allocated));
            after.keys = Some((0..n_keys).map(|i| api_key(&format!("key_{i}"), &format!("k{i}"))).collect());
            for i in 0..n_keys {
                after.secrets.insert(format!("acme-k{i}"), owned(&format!("key_{i}")));
            }
            let again = plan(&c, &after);
            prop_assert!(writes(&again).is_empty(), "re-plan after effects: {:?}", again.actions);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Issue 10: what orgops created is decided from durable markers, not the last status.
// ---------------------------------------------------------------------------------------

fn owned_key_marker(secret: &str, name: &str, id: &str) -> OwnedSecret {
    OwnedSecret {
        secret_name: secret.into(),
        role: OwnedRole::Key {
            name: Some(name.into()),
            id: Some(id.into()),
            replaced: Vec::new(),
        },
    }
}

#[test]
fn a_removed_key_is_revoked_from_its_secret_even_when_status_forgot_it() {
    // The pass that removed `a` from spec failed at the revoke and wrote a status rebuilt
    // from the spec: status no longer names `a`, its Secret still does.
    let c = corg(spec());
    let mut o = tracked(&c);
    o.owned.push(owned_key_marker("acme-a", "a", "key_1"));
    o.secrets.insert("acme-a".into(), owned("key_1"));
    assert!(
        reads(&c, &o.secrets, &o.owned, &CAPS, false).keys,
        "an unclaimed owned Secret makes the keys worth listing"
    );
    o.keys = Some(vec![api_key("key_1", "a")]);
    let p = plan(&c, &o);
    assert_eq!(
        p.actions,
        vec![
            Action::RevokeKey {
                name: "a".into(),
                key_id: "key_1".into()
            },
            Action::DeleteSecret {
                name: "acme-a".into()
            }
        ]
    );
    // Revoked already (the delete failed last time): only the Secret goes.
    let mut revoked = api_key("key_1", "a");
    revoked.status = KeyStatus::Revoked;
    o.keys = Some(vec![revoked]);
    assert_eq!(
        plan(&c, &o).actions,
        vec![Action::DeleteSecret {
            name: "acme-a".into()
        }]
    );
}

#[test]
fn a_key_moved_to_another_secret_keeps_its_key_and_drops_the_old_secret() {
    let mut s = spec();
    let mut k = key_spec("a");
    k.secret_name = Some("new-home".into());
    s.api_keys = vec![k];
    let c = corg(s);
    let mut o = tracked(&c);
    o.owned.push(owned_key_marker("acme-a", "a", "key_1"));
    o.secrets.insert("acme-a".into(), owned("key_1"));
    o.keys = Some(vec![api_key("key_1", "a")]);
    let p = plan(&c, &o);
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::RevokeKey { key_id, .. } if key_id == "key_1")),
        "{:?}",
        p.actions
    );
    assert!(p.actions.contains(&Action::DeleteSecret {
        name: "acme-a".into()
    }));
}

#[test]
fn a_removed_webhook_is_found_by_its_endpoint_marker() {
    let c = corg(spec());
    let mut o = tracked(&c);
    o.webhooks = Some(vec![endpoint("ep_1", "crm", "https://crm.example.com")]);
    let p = plan(&c, &o);
    assert_eq!(
        p.actions,
        vec![Action::DeleteWebhook {
            name: "crm".into(),
            id: "ep_1".into()
        }]
    );
}

#[test]
fn a_deep_check_reads_everything_and_a_lowered_target_reads_no_ledger() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 100,
        ..Default::default()
    });
    let mut c = corg(s);
    c.status = Some(CustomerOrgStatus {
        credits: Some(CreditsStatus {
            allocated: 500,
            balance: 1,
            available: 1,
            refused: None,
        }),
        ..ready_status(&c)
    });
    assert_eq!(
        reads(&c, &BTreeMap::new(), &[], &CAPS, false),
        Reads::default(),
        "allocated was lowered below what moved: nothing to read, every resync"
    );
    assert_eq!(
        reads(&c, &BTreeMap::new(), &[], &CAPS, true),
        Reads::all(&CAPS)
    );
}

#[test]
fn an_out_of_band_deleted_endpoint_is_recreated_with_a_new_key() {
    let mut s = spec();
    s.webhooks = vec![hook_spec("crm", "https://crm.example.com")];
    let c = corg(s);
    let mut o = tracked(&c);
    o.webhooks = Some(vec![]);
    let first = plan(&c, &o);
    // The Secret still names the endpoint that was deleted out of band.
    o.secrets
        .insert("acme-crm-webhook".into(), owned("ep_gone"));
    let again = plan(&c, &o);
    let key_of = |p: &Plan| match p.actions.first() {
        Some(Action::CreateWebhook { key, .. }) => key.clone(),
        other => panic!("{other:?}"),
    };
    assert_ne!(
        key_of(&first),
        key_of(&again),
        "a replay of the first create would answer with the deleted endpoint"
    );
}

#[test]
fn the_create_key_survives_a_spec_edit_and_the_owner_marker_finds_the_org() {
    let c = corg(spec());
    let key_of = |c: &CustomerOrg| match plan(c, &obs(Found::Nothing)).actions.first() {
        Some(Action::CreateOrg { key, .. }) => key.clone(),
        other => panic!("{other:?}"),
    };
    let mut edited = c.clone();
    edited.spec.display_name = "Acme Renamed".into();
    edited.spec.external_id = None;
    edited.metadata.generation = Some(4);
    assert_eq!(key_of(&c), key_of(&edited));
    // Found by its owner marker (its id never reached status): no second create.
    let mut o = org_for(&c);
    o.name = "Acme".into();
    let p = plan(&edited, &obs(Found::ByOwner(vec![o])));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::CreateOrg { .. }))
    );
    assert_eq!(p.adopted.as_ref().map(|a| a.0.as_str()), Some("Recovered"));
    assert!(
        matches!(p.actions.as_slice(), [Action::UpdateOrg { patch }] if patch.name.as_deref() == Some("Acme Renamed"))
    );
}

#[test]
fn two_writers_at_one_ledger_sum_share_the_allocation_key() {
    let with_target = |allocated: i64| {
        let mut s = spec();
        s.credits = Some(CreditsSpec {
            allocated,
            ..Default::default()
        });
        let c = corg(s);
        let mut o = tracked(&c);
        o.ledger = Some(1000);
        match plan(&c, &o).actions.as_slice() {
            [Action::Allocate { key, .. }] => key.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(with_target(2000), with_target(5000));
}

#[test]
fn a_refused_top_up_is_retried_under_a_new_key() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 2000,
        ..Default::default()
    });
    let mut c = corg(s);
    let mut o = tracked(&c);
    o.ledger = Some(1000);
    let key_of = |c: &CustomerOrg| match plan(c, &o).actions.as_slice() {
        [Action::Allocate { key, .. }] => key.clone(),
        other => panic!("{other:?}"),
    };
    let first = key_of(&c);
    c.status = Some(CustomerOrgStatus {
        credits: Some(CreditsStatus {
            allocated: 1000,
            balance: 1000,
            available: 1000,
            refused: Some(RefusedAllocation {
                ledger: 1000,
                attempts: 1,
            }),
        }),
        ..Default::default()
    });
    assert_ne!(key_of(&c), first);
    // A refusal at another ledger sum is over: back to the plain key for this sum.
    c.status.as_mut().unwrap().credits.as_mut().unwrap().refused = Some(RefusedAllocation {
        ledger: 500,
        attempts: 3,
    });
    assert_eq!(key_of(&c), first);
}

#[test]
fn colliding_secret_names_are_refused_before_any_call() {
    let mut s = spec();
    s.api_keys = vec![key_spec("crm-webhook")];
    s.webhooks = vec![hook_spec("crm", "https://crm.example.com")];
    let c = corg(s);
    let (reason, message) = refusal(&c, &CAPS).expect("both default to acme-crm-webhook");
    assert_eq!(reason, "SecretNameCollision");
    assert!(message.contains("acme-crm-webhook"), "{message}");
    let p = plan(&c, &tracked(&c));
    assert!(p.actions.is_empty());
    // Distinct explicit names fix it.
    let mut fixed = c.clone();
    fixed.spec.webhooks[0].secret_name = Some("crm-signing".into());
    assert!(refusal(&fixed, &CAPS).is_none());
}

#[test]
fn owner_markers_carry_the_uid() {
    let c = corg(spec());
    assert_eq!(owner_of(&c), "customers/acme/uid-1");
    let m = OwnerMarker::parse("customers/acme/uid-1").unwrap();
    assert!(m.is(&c));
    let mut later = c.clone();
    later.metadata.uid = Some("uid-2".into());
    assert!(
        !m.is(&later),
        "a later object of the same name is another owner"
    );
    // 0.1 markers had no uid: they match by name.
    assert!(OwnerMarker::parse("customers/acme").unwrap().is(&later));
    assert!(OwnerMarker::parse("a/b/c/d").is_none());
}

#[test]
fn a_deleting_owner_claims_its_org_unless_it_orphans_it() {
    use crate::reconcile::owners::claims;
    let mut other = corg(spec());
    other.metadata.name = Some("first".into());
    other.metadata.uid = Some("uid-first".into());
    let marker = OwnerMarker::parse("customers/first/uid-first").unwrap();
    assert!(claims(&marker, &other));
    other.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    assert!(
        claims(&marker, &other),
        "being deleted with Archive: it is about to archive the org"
    );
    other.spec.deletion_policy = DeletionPolicy::Orphan;
    assert!(!claims(&marker, &other), "Orphan lets the org go");
    let stale = OwnerMarker::parse("customers/first/uid-gone").unwrap();
    other.metadata.deletion_timestamp = None;
    assert!(!claims(&stale, &other), "another object of that name");
}

#[test]
fn a_field_the_provider_cannot_honour_stalls_before_any_call() {
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    s.credits = Some(CreditsSpec {
        allocated: 10,
        monthly_cap: Some(5),
        ..Default::default()
    });
    let c = corg(s);
    let caps = Capabilities {
        child_api_keys: false,
        credit_config: false,
        allocation_ledger: false,
        webhooks: false,
        ..CAPS
    };
    let (reason, message) = refusal(&c, &caps).expect("unsupported fields");
    assert_eq!(reason, "UnsupportedByProvider");
    for field in [
        "spec.apiKeys",
        "spec.credits.allocated",
        "spec.credits.monthlyCap",
    ] {
        assert!(message.contains(field), "{message}");
    }
    let mut o = tracked(&c);
    o.capabilities = caps;
    let p = plan(&c, &o);
    assert!(
        p.actions.is_empty(),
        "nothing half-applied: {:?}",
        p.actions
    );
    assert_eq!(
        p.stalled.map(|s| s.0).as_deref(),
        Some("UnsupportedByProvider")
    );
    assert!(refusal(&c, &CAPS).is_none(), "Layers supports all of it");
}

#[test]
fn an_adoption_claims_the_org_first_and_acts_after_reading_the_claim_back() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 100,
        ..Default::default()
    });
    s.api_keys = vec![key_spec("a")];
    let c = corg(s);
    let mut o = org_for(&c);
    o.metadata.remove(OWNER_KEY);
    let mut found = obs(Found::ByExternalId {
        orgs: vec![o.clone()],
        claimed_by: None,
    });
    found.ledger = Some(0);
    found.keys = Some(vec![]);
    let p = plan(&c, &found);
    assert_eq!(
        p.actions,
        vec![Action::UpdateOrg {
            patch: OrgPatch {
                metadata: Some(BTreeMap::from([(OWNER_KEY.to_string(), owner_of(&c))])),
                ..Default::default()
            }
        }],
        "no mint or transfer before the claim is read back"
    );
    // Read back with our marker: now it acts.
    o.metadata.insert(OWNER_KEY.into(), owner_of(&c));
    let mut tracked = obs(Found::Tracked(Some(o)));
    tracked.ledger = Some(0);
    tracked.keys = Some(vec![]);
    let p = plan(&c, &tracked);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Allocate { .. }))
    );
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::MintKey { .. }))
    );
}

/// An adopted org that differs from the spec, with its keys and ledger read.
fn adoptable(c: &CustomerOrg) -> Observed {
    let mut o = org_for(c);
    o.metadata.remove(OWNER_KEY);
    o.name = "Old name".into();
    let mut seen = obs(Found::ByExternalId {
        orgs: vec![o],
        claimed_by: None,
    });
    seen.keys = Some(Vec::new());
    seen.webhooks = Some(Vec::new());
    seen.ledger = Some(100);
    seen
}

#[test]
fn through_the_claim_an_adoption_shows_everything_it_leads_to() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 500,
        ..Default::default()
    });
    s.api_keys = vec![key_spec("crm")];
    let c = corg(s);
    let seen = adoptable(&c);
    // The operator claims first and acts on a later pass ...
    let first = plan(&c, &seen);
    assert_eq!(first.actions.len(), 1);
    // ... while a reader that never writes sees the claim and what follows it.
    let all = plan_through_claim(&c, &seen);
    assert!(all.adopted.is_some());
    assert_eq!(all.actions.first(), first.actions.first());
    assert!(all.actions.iter().any(|a| matches!(
        a,
        Action::Allocate {
            credits: 400,
            ledger: 100,
            target: 500,
            ..
        }
    )));
    assert!(
        all.actions
            .iter()
            .any(|a| matches!(a, Action::MintKey { name, .. } if name == "crm"))
    );
    // The claim is bookkeeping, not a difference from the spec.
    assert_eq!(
        drifted_fields(&all),
        vec![
            "spec.displayName".to_string(),
            "spec.credits.allocated (400 credits not yet moved)".into(),
            "spec.apiKeys[crm] (no key)".into(),
        ]
    );
    // Without a claim to make, it is the plan itself.
    assert_eq!(plan_through_claim(&c, &tracked(&c)), plan(&c, &tracked(&c)));
}

#[test]
fn a_tracked_org_without_this_objects_marker_is_claimed_before_anything_else() {
    // Observe records status.orgId and never writes the claim: on the switch to Full the
    // org is taken over as an adoption, claim first.
    let c = corg(spec());
    let mut o = org_for(&c);
    o.metadata.remove(OWNER_KEY);
    o.name = "Old name".into();
    let p = plan(&c, &obs(Found::Tracked(Some(o))));
    assert!(p.adopted.is_some());
    assert!(matches!(
        p.actions.as_slice(),
        [Action::UpdateOrg { patch }] if patch.name.is_none()
            && patch.metadata.as_ref().is_some_and(|m| m.len() == 1 && m.contains_key(OWNER_KEY))
    ));
    // With the marker on it, the same org is simply tracked.
    let p = plan(&c, &tracked(&c));
    assert!(p.adopted.is_none() && writes(&p).is_empty());
}

#[test]
fn migrate_creates_by_moving_projects_then_renames_and_tags_in_the_same_plan() {
    let mut s = spec();
    s.migrate_projects = vec!["prj_1".into(), "prj_2".into()];
    s.credits = Some(CreditsSpec {
        allocated: 300,
        ..Default::default()
    });
    let mut c = corg(s);
    c.metadata.generation = Some(1);
    let p = plan(
        &c,
        &obs(Found::ByExternalId {
            orgs: vec![],
            claimed_by: None,
        }),
    );
    let Some(Action::MigrateProjects {
        projects,
        name,
        key,
    }) = p.actions.first()
    else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(projects, &["prj_1".to_string(), "prj_2".into()]);
    assert_eq!(name, "acme", "the stable object name, not spec.displayName");
    // The migrated child is plain: renamed and tagged (externalId, owner) right after.
    assert!(p.actions.iter().any(|a| matches!(a, Action::UpdateOrg { patch }
        if patch.name.as_deref() == Some("Acme")
            && patch.metadata.as_ref().is_some_and(|m| m.contains_key(OWNER_KEY) && m.contains_key(EXTERNAL_ID_KEY)))));
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Allocate { credits: 300, .. }))
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::CreateOrg { .. }))
    );
    // A displayName edit does not change the request: a retry replays the first migration.
    let mut edited = c.clone();
    edited.spec.display_name = "Acme Renamed".into();
    let again = plan(&edited, &obs(Found::Nothing));
    assert!(
        matches!(again.actions.first(), Some(Action::MigrateProjects { key: k2, name: n2, .. }) if k2 == key && n2 == name)
    );
    // After a refusal (nothing moved) the next attempt uses a new key.
    let mut refused = c.clone();
    refused.status = Some(CustomerOrgStatus {
        create_refusals: Some(1),
        ..Default::default()
    });
    let retry = plan(&refused, &obs(Found::Nothing));
    assert!(
        matches!(retry.actions.first(), Some(Action::MigrateProjects { key: k3, .. }) if k3 != key)
    );
}

/// Gennia's capabilities: no metadata, no renames, no archive; users; found by name.
const GENNIA: Capabilities = crate::provider::gennia::CAPABILITIES;

fn gennia_corg(users: &[(&str, GenniaRole)]) -> CustomerOrg {
    let mut s = spec();
    s.external_id = None;
    s.gennia = Some(GenniaSpec {
        users: users
            .iter()
            .map(|(e, r)| GenniaUser {
                email: e.to_string(),
                name: None,
                role: *r,
            })
            .collect(),
        ..Default::default()
    });
    corg(s)
}

fn gennia_org(c: &CustomerOrg, users: &[(&str, &str, &str)]) -> Org {
    let mut o = org_for(c);
    o.metadata.clear();
    o.users = users
        .iter()
        .map(|(id, email, role)| OrgUser {
            id: Some(id.to_string()),
            email: email.to_string(),
            name: None,
            role: role.to_string(),
        })
        .collect();
    o
}

fn gennia_obs(found: Found) -> Observed {
    let mut o = obs(found);
    o.capabilities = GENNIA;
    o
}

#[test]
fn gennia_creates_with_its_users_and_never_claims_or_renames() {
    let c = gennia_corg(&[("a@x.test", GenniaRole::Admin)]);
    let p = plan(
        &c,
        &gennia_obs(Found::ByExternalId {
            orgs: vec![],
            claimed_by: None,
        }),
    );
    let Some(Action::CreateOrg { new, .. }) = p.actions.first() else {
        panic!("{:?}", p.actions)
    };
    assert_eq!(new.extras.users.len(), 1);
    assert_eq!(new.extras.users[0].role, "admin");
    // Found by name (no marker to write): adopted without a claim, nothing to do.
    let o = gennia_org(&c, &[("u1", "a@x.test", "admin")]);
    let p = plan(
        &c,
        &gennia_obs(Found::ByExternalId {
            orgs: vec![o.clone()],
            claimed_by: None,
        }),
    );
    assert!(p.adopted.is_some());
    assert!(writes(&p).is_empty(), "{:?}", p.actions);
    // Tracked without a marker is normal here, not a takeover.
    let p = plan(&c, &gennia_obs(Found::Tracked(Some(o.clone()))));
    assert!(p.adopted.is_none() && writes(&p).is_empty());
    // The name is the identity: a displayName edit stalls instead of renaming.
    let mut renamed = c.clone();
    renamed.spec.display_name = "Other".into();
    let p = plan(&renamed, &gennia_obs(Found::Tracked(Some(o))));
    assert_eq!(
        p.stalled.as_ref().map(|s| s.0.as_str()),
        Some("UnsupportedByProvider")
    );
    assert!(writes(&p).is_empty());
}

#[test]
fn gennia_users_roles_changed_removed_never_the_last_admin_additions_said() {
    let c = gennia_corg(&[
        ("a@x.test", GenniaRole::Admin),
        ("b@x.test", GenniaRole::Viewer),
    ]);
    let o = gennia_org(
        &c,
        &[
            ("u1", "a@x.test", "admin"),
            ("u2", "b@x.test", "member"),
            ("u3", "gone@x.test", "editor"),
        ],
    );
    let p = plan(&c, &gennia_obs(Found::Tracked(Some(o))));
    assert!(p.actions.iter().any(|a| matches!(a, Action::UpdateUser { user_id, role, .. } if user_id == "u2" && role == "viewer")));
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::RemoveUser { user_id, .. } if user_id == "u3"))
    );
    assert_eq!(writes(&p).len(), 2);
    // The spec names a new admin the workspace lacks, and drops the only admin it has:
    // the addition cannot be made, so the last admin stays.
    let c = gennia_corg(&[("new@x.test", GenniaRole::Admin)]);
    let o = gennia_org(&c, &[("u1", "a@x.test", "admin")]);
    let p = plan(&c, &gennia_obs(Found::Tracked(Some(o))));
    assert!(writes(&p).is_empty(), "{:?}", p.actions);
    assert!(p.notes.iter().any(|n| n.contains("last admin")));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("new@x.test") && n.contains("cannot be added"))
    );
}

#[test]
fn gennia_refuses_what_it_cannot_honour_before_any_call() {
    let mut c = gennia_corg(&[("a@x.test", GenniaRole::Admin)]);
    c.spec.api_keys = vec![key_spec("crm")];
    c.spec.external_id = Some("x".into());
    c.spec.credits = Some(CreditsSpec {
        allocated: 5,
        ..Default::default()
    });
    let (reason, message) = refusal(&c, &GENNIA).expect("refused");
    assert_eq!(reason, "UnsupportedByProvider");
    for f in ["spec.apiKeys", "spec.externalId", "spec.credits.allocated"] {
        assert!(message.contains(f), "{f} in {message}");
    }
    // And spec.gennia on Layers.
    let c = gennia_corg(&[("a@x.test", GenniaRole::Admin)]);
    let (_, message) = refusal(&c, &CAPS).expect("refused on layers");
    assert!(message.contains("spec.gennia"));
}

#[test]
fn a_key_whose_mint_answer_was_lost_is_revoked_when_the_spec_drops_it() {
    // Pass 1 mints `a` into a missing Secret: the mint claims the Secret first.
    let mut s = spec();
    s.api_keys = vec![key_spec("a")];
    let mut c = corg(s);
    let mut o = tracked(&c);
    o.keys = Some(vec![]);
    assert!(matches!(
        plan(&c, &o).actions.as_slice(),
        [Action::MintKey { claim: true, .. }]
    ));
    // The provider made the key, the answer was lost and so was the status (a crash):
    // what is left is the claimed Secret (empty key id) and the live key.
    let claimed = super::secrets::marker(
        "acme-a",
        &BTreeMap::from([
            (super::secrets::KEY_ID_ANNOTATION.to_string(), String::new()),
            (super::secrets::KEY_NAME_ANNOTATION.to_string(), "a".into()),
        ]),
    )
    .expect("a claimed Secret is a marker");
    assert_eq!(
        claimed.role,
        OwnedRole::Key {
            name: Some("a".into()),
            id: None,
            replaced: Vec::new(),
        }
    );
    o.owned.push(claimed);
    o.secrets.insert(
        "acme-a".into(),
        SecretSeen::Owned {
            id: None,
            rotated_for: None,
        },
    );

    // The spec still wants `a`: the live key is rotated into the Secret (no second mint,
    // and the claim is not written again).
    o.keys = Some(vec![api_key("key_1", "a")]);
    assert!(matches!(
        writes(&plan(&c, &o)).as_slice(),
        [Action::RotateKey { key_id, recover: true, .. }] if key_id == "key_1"
    ));

    // The spec drops `a` instead: the claim makes the keys worth listing, and the live key
    // is revoked before the Secret goes.
    c.spec.api_keys.clear();
    assert!(reads(&c, &o.secrets, &o.owned, &CAPS, false).keys);
    assert_eq!(
        writes(&plan(&c, &o)),
        [
            &Action::RevokeKey {
                name: "a".into(),
                key_id: "key_1".into()
            },
            &Action::DeleteSecret {
                name: "acme-a".into()
            }
        ]
    );
    // The mint never happened: only the claim goes.
    o.keys = Some(vec![]);
    assert_eq!(
        writes(&plan(&c, &o)),
        [&Action::DeleteSecret {
            name: "acme-a".into()
        }]
    );
}

#[test]
fn endpoints_are_listed_until_ready_at_the_generation() {
    // Ready at generation 3 with webhook `crm`; a create of `crm` whose answer was lost
    // left an endpoint nobody recorded (no Secret, no status entry). The spec drops `crm`.
    let mut c = corg(spec());
    c.status = Some(ready_status(&c));
    assert!(!reads(&c, &BTreeMap::new(), &[], &CAPS, false).webhooks);
    c.metadata.generation = Some(4);
    assert!(
        reads(&c, &BTreeMap::new(), &[], &CAPS, false).webhooks,
        "a new generation lists endpoints"
    );
    let mut o = tracked(&c);
    o.webhooks = Some(vec![endpoint("ep_1", "crm", "https://crm.example.com")]);
    assert_eq!(
        writes(&plan(&c, &o)),
        [&Action::DeleteWebhook {
            name: "crm".into(),
            id: "ep_1".into()
        }]
    );
    // Ready at the new generation: steady state again, no list.
    c.status = Some(ready_status(&c));
    assert!(!reads(&c, &BTreeMap::new(), &[], &CAPS, false).webhooks);
}

/// An endpoint changed out of band at a generation that was Ready is drift, named like
/// the other steps' (e2e_fidelity, CI of 92f452a: a pass that restored only a webhook URL
/// reported `Progressing`, so the next out-of-band edit was corrected without a
/// `DriftCorrected` Event).
#[test]
fn an_endpoint_changed_out_of_band_is_drift() {
    let mut s = spec();
    s.webhooks = vec![hook_spec("crm", "https://crm.example.com/new")];
    let c0 = corg(s);
    let mut c = c0.clone();
    c.status = Some(ready_status(&c0));
    let mut o = tracked(&c);
    o.webhooks = Some(vec![endpoint(
        "wh_1",
        "crm",
        "https://elsewhere.example.com/",
    )]);
    o.secrets.insert("acme-crm-webhook".into(), owned("wh_1"));
    let p = plan(&c, &o);
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::UpdateWebhook { .. })),
        "{:?}",
        p.actions
    );
    assert!(p.drift.iter().any(|d| d == "webhook crm"), "{:?}", p.drift);
}

fn ledger_row(credits: i64, metadata: Option<&[(&str, &str)]>) -> LedgerAllocation {
    LedgerAllocation {
        event_id: "e".into(),
        credits,
        metadata: metadata.map(|m| {
            m.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        created: None,
    }
}

/// Issue 28, row 1: a provider whose ledger events carry no metadata. Counting only marked
/// events read 0 and moved the full target again (1200 credits for a spec of 700 in the
/// assumption matrix); the operator's own record (status) decides instead, and without one
/// every allocation on the ledger counts as its own, so a top-up never exceeds the spec.
#[test]
fn a_ledger_without_metadata_is_attributed_by_the_record_or_in_full() {
    let marked = ledger_row(500, Some(&[(ALLOCATION_MARKER, "true")]));
    let refill = ledger_row(200, Some(&[("reason", "auto_refill")]));
    let sweep = ledger_row(-100, None);
    // Every event carries metadata: the marked sum, whatever the record says.
    assert_eq!(
        attributed(&[marked.clone(), refill.clone()], Some(0)),
        (500, None)
    );
    let bare = [ledger_row(500, None), ledger_row(200, None), sweep];
    let (sum, note) = attributed(&bare, Some(500));
    assert_eq!(sum, 500, "the record, not the ledger's 700");
    assert!(note.is_some_and(|n| n.contains("status.credits.allocated")));
    let (sum, note) = attributed(&bare, None);
    assert_eq!(sum, 700, "no record: all of it, never less");
    assert!(note.is_some_and(|n| n.contains("no record")));
    // A record below the events that are marked is not believed.
    assert_eq!(attributed(&[marked, ledger_row(9, None)], Some(100)).0, 500);
}

#[test]
fn with_a_recorded_top_up_nothing_moves_again_and_ready_says_why() {
    let mut s = spec();
    s.credits = Some(CreditsSpec {
        allocated: 700,
        ..Default::default()
    });
    let c = corg(s);
    let rows = [ledger_row(500, None), ledger_row(200, None)];
    let mut o = tracked(&c);
    let (sum, note) = attributed(&rows, Some(700));
    o.ledger = Some(sum);
    o.ledger_note = note;
    let p = plan(&c, &o);
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::Allocate { .. })),
        "{:?}",
        p.actions
    );
    assert!(
        p.notes.iter().any(|n| n.contains("without metadata")),
        "{:?}",
        p.notes
    );
    // Recorded 500 of 700: the top-up is keyed by the recorded sum, as before.
    let (sum, note) = attributed(&rows, Some(500));
    o.ledger = Some(sum);
    o.ledger_note = note;
    match plan(&c, &o).actions.as_slice() {
        [
            Action::Allocate {
                credits: 200,
                ledger: 500,
                ..
            },
        ] => {}
        other => panic!("{other:?}"),
    }
}

/// Issue 28, row 2: a provider may refuse every change to a suspended org but resume and
/// archive. A keyed write must not be the first to meet that refusal (a stored 409 would be
/// replayed after the resume): the plan sends the org's name first, unkeyed.
#[test]
fn a_keyed_write_to_a_suspended_org_comes_after_an_unkeyed_one() {
    let mut s = spec();
    s.state = DesiredState::Suspended;
    s.api_keys = vec![key_spec("app")];
    let c = corg(s);
    let mut o = tracked(&c);
    o.keys = Some(Vec::new());
    let p = plan(&c, &o);
    match p.actions.as_slice() {
        [Action::UpdateOrg { patch }, Action::MintKey { .. }, ..] => {
            assert_eq!(patch.name.as_deref(), Some("Acme"));
            assert!(patch.metadata.is_none() && patch.billing_email.is_none());
        }
        other => panic!("{other:?}"),
    }
    // An unkeyed write first anyway (a rename): nothing added.
    let mut renamed = c.clone();
    renamed.spec.display_name = "Acme Two".into();
    let p = plan(&renamed, &o);
    assert_eq!(
        p.actions
            .iter()
            .filter(|a| matches!(a, Action::UpdateOrg { .. }))
            .count(),
        1
    );
    // Active, or being resumed: nothing added.
    let mut active = c.clone();
    active.spec.state = DesiredState::Active;
    let p = plan(&active, &o);
    assert!(
        matches!(p.actions.first(), Some(Action::Resume)),
        "{:?}",
        p.actions
    );
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::UpdateOrg { .. }))
    );
}

/// Issue 28, row 7: Gennia suspends only an active workspace. One still pending onboarding
/// is not sent a suspend (refused, then retried) but waited for, saying why.
#[test]
fn a_suspend_the_provider_cannot_do_yet_waits_unsent() {
    let mut s = spec();
    s.state = DesiredState::Suspended;
    let c = corg(s);
    let mut org = org_for(&c);
    org.status = OrgStatus::Active;
    org.suspend_blocked = Some("pending_onboarding".into());
    let p = plan(&c, &obs(Found::Tracked(Some(org.clone()))));
    assert!(
        !p.actions.iter().any(|a| matches!(a, Action::Suspend)),
        "{:?}",
        p.actions
    );
    let (reason, message) = p.waiting.expect("waiting");
    assert_eq!(reason, REASON_NOT_SUSPENDABLE);
    assert!(message.contains("pending_onboarding") && message.contains(&org.id));
    assert!(p.stalled.is_none());
    org.suspend_blocked = None;
    let p = plan(&c, &obs(Found::Tracked(Some(org))));
    assert!(
        matches!(p.actions.as_slice(), [Action::Suspend]),
        "{:?}",
        p.actions
    );
}

/// Issue 30: a transfer's metadata names its key and the sums it topped up from and to,
/// and an approval past guardrails, so the ledger alone says which top-up each row was.
#[test]
fn a_transfer_says_on_the_ledger_which_top_up_it_was() {
    let key = IdempotencyKey("orgops-k".into());
    let m = allocation_metadata(&key, 500, 800, None);
    assert_eq!(m[ALLOCATION_MARKER], "true");
    assert_eq!(m[TRANSFER_KEY], "orgops-k");
    assert_eq!(
        (m[ALLOCATED_FROM].as_str(), m[ALLOCATED_TO].as_str()),
        ("500", "800")
    );
    assert!(!m.contains_key(APPROVED_GENERATION));
    let crossed = vec![
        "maxCreditsPerOrg".to_string(),
        "minParentBalance".to_string(),
    ];
    let m = allocation_metadata(&key, 500, 800, Some((3, &crossed)));
    assert_eq!(m[APPROVED_GENERATION], "3");
    assert_eq!(m[GUARDRAILS_CROSSED], "maxCreditsPerOrg,minParentBalance");
    // An approval that let nothing past is not written.
    let m = allocation_metadata(&key, 500, 800, Some((3, &[])));
    assert!(!m.contains_key(APPROVED_GENERATION));
    // Still counted as orgops' own (rule 3).
    let row = ledger_row(
        300,
        Some(&[(ALLOCATION_MARKER, "true"), (TRANSFER_KEY, "k")]),
    );
    assert_eq!(marked_sum(&[row]), 300);
}
