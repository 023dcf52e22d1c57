//! Unit tests of `spec`.

//! The contract of an import: with the spec it writes, the operator's own planner,
//! given what the operator would observe, plans nothing but the adoption claim (Full)
//! and reports no drift (Observe). Unknown keys and unmarked endpoints are left alone.
use super::*;
use crate::api::CustomerOrg;
use crate::provider::{
    ApiKey, CreditConfig, KeyEnv, KeyStatus, LedgerAllocation, Org, OrgSummary, OrgUser, Refill,
    WebhookEndpoint,
};
use crate::reconcile::plan::{
    self, ALLOCATION_MARKER, Action, Found, Observed as Seen, drifted_fields, plan_through_claim,
};

const LAYERS: Capabilities = crate::provider::layers::CAPABILITIES;
const GENNIA: Capabilities = crate::provider::gennia::CAPABILITIES;
const YOUHODLER: Capabilities = crate::provider::youhodler::CAPABILITIES;

fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn allocation(id: &str, credits: i64, meta: &[(&str, &str)]) -> LedgerAllocation {
    LedgerAllocation {
        event_id: id.into(),
        credits,
        metadata: Some(m(meta)),
        created: None,
    }
}

/// A Layers org made by a script: suspended, funded partly by an earlier orgops (marked)
/// and partly by hand, capped, with auto-refill, a key and an endpoint of its own, and
/// the owner marker of an object that is gone.
fn layers_org() -> Observed {
    Observed {
        org: Org {
            id: "org_1".into(),
            name: "Acme Coffee".into(),
            status: OrgStatus::Suspended,
            metadata: m(&[
                ("externalId", "acme"),
                ("plan", "growth"),
                (OWNER_KEY, "old/gone/uid-0"),
            ]),
            billing_email: Some("ops@acme.example".into()),
            summary: Some(OrgSummary {
                balance: 700,
                available: 650,
                credit_config: CreditConfig {
                    monthly_cap: Some(5000),
                    refill: Some(Refill {
                        threshold: 100,
                        amount: 200,
                    }),
                },
            }),
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        },
        allocations: Some(vec![
            allocation("e1", 500, &[(ALLOCATION_MARKER, "true")]),
            allocation("e2", 250, &[(ALLOCATION_MARKER, "true")]),
            allocation("e3", 1000, &[("by", "script")]),
            allocation("e4", 200, &[("by", "hand")]),
        ]),
        keys: Some(vec![
            ApiKey {
                id: "key_live".into(),
                name: "backend".into(),
                prefix: "lp_live_ab".into(),
                env: KeyEnv::Live,
                scopes: vec!["content:read".into()],
                status: KeyStatus::Active,
                superseded_by: None,
            },
            ApiKey {
                id: "key_old".into(),
                name: "old".into(),
                prefix: "lp_live_cd".into(),
                env: KeyEnv::Live,
                scopes: vec!["content:read".into()],
                status: KeyStatus::Revoked,
                superseded_by: None,
            },
        ]),
        webhooks: Some(vec![WebhookEndpoint {
            id: "we_1".into(),
            url: "https://crm.example.com/hooks".into(),
            events: vec!["post.published".into()],
            metadata: m(&[("team", "crm")]),
        }]),
    }
}

fn choices(caps: Capabilities, policy: ManagementPolicy) -> Choices {
    Choices {
        provider: "layers-prod".into(),
        caps,
        policy,
        deletion: DeletionPolicy::Orphan,
    }
}

/// The object as it is first seen by the operator after `kubectl apply`.
fn applied(spec: CustomerOrgSpec) -> CustomerOrg {
    let mut c = CustomerOrg::new("acme", spec);
    c.metadata.namespace = Some("customers".into());
    c.metadata.uid = Some("uid-new".into());
    c.metadata.generation = Some(1);
    c
}

/// What the operator's first pass observes for an object with spec.adoptOrgId: the org
/// by id, and (new to it) every list.
fn first_pass(o: &Observed, caps: Capabilities) -> Seen {
    Seen {
        found: Found::ById {
            org: Some(o.org.clone()),
            claimed_by: None,
        },
        keys: o.keys.clone(),
        webhooks: o.webhooks.clone(),
        ledger: o
            .allocations
            .as_deref()
            .map(|rows| attributed(rows, None).0),
        ledger_note: o
            .allocations
            .as_deref()
            .and_then(|rows| attributed(rows, None).1),
        secrets: BTreeMap::new(),
        owned: Vec::new(),
        capabilities: caps,
    }
}

fn only_the_claim(corg: &CustomerOrg, actions: &[Action]) {
    match actions {
        [Action::UpdateOrg { patch }] => {
            assert_eq!(
                patch.metadata,
                Some(m(&[(OWNER_KEY, &plan::owner_of(corg))])),
                "the claim writes the owner marker and nothing else"
            );
            assert_eq!((&patch.name, &patch.billing_email), (&None, &None));
        }
        other => panic!("expected only the claim, got {other:#?}"),
    }
}

#[test]
fn a_layers_org_is_imported_as_observed_with_only_marked_credits() {
    let o = layers_org();
    let b = build(&o, &choices(LAYERS, ManagementPolicy::Full)).unwrap();
    assert!(b.held.is_empty(), "{:?}", b.held);
    let s = &b.spec;
    assert_eq!(s.adopt_org_id.as_deref(), Some("org_1"));
    assert_eq!(s.provider_ref.name, "layers-prod");
    assert_eq!(s.display_name, "Acme Coffee");
    assert_eq!(s.external_id.as_deref(), Some("acme"));
    assert_eq!(s.billing_email.as_deref(), Some("ops@acme.example"));
    assert_eq!(s.metadata, m(&[("plan", "growth")]));
    assert_eq!(s.state, DesiredState::Suspended);
    assert_eq!(s.management_policy, ManagementPolicy::Full);
    assert_eq!(s.deletion_policy, DeletionPolicy::Orphan);
    assert!(s.api_keys.is_empty() && s.webhooks.is_empty());
    let c = s.credits.as_ref().unwrap();
    assert_eq!(c.allocated, 750, "the marked allocations only");
    assert_eq!(c.monthly_cap, Some(5000));
    let refill = c.auto_refill.as_ref().unwrap();
    assert_eq!((refill.threshold, refill.amount), (Some(100), Some(200)));
    assert_eq!(b.unmarked, 1200);
    let notes = b.notes.join("\n");
    assert!(notes.contains("old/gone/uid-0"), "{notes}");
    assert!(notes.contains("1200 credits"), "{notes}");
}

#[test]
fn full_on_an_imported_org_plans_only_the_claim_and_no_transfer_revoke_or_delete() {
    let o = layers_org();
    let b = build(&o, &choices(LAYERS, ManagementPolicy::Full)).unwrap();
    let corg = applied(b.spec);
    // The first pass claims; its unknown key and unmarked endpoint stay untouched.
    let first = plan::plan(&corg, &first_pass(&o, LAYERS));
    only_the_claim(&corg, &first.actions);
    let through = plan_through_claim(&corg, &first_pass(&o, LAYERS));
    only_the_claim(&corg, &through.actions);
    assert!(through.stalled.is_none(), "{:?}", through.stalled);
    // Once the claim reads back: nothing at all, even with every list read (a deep check).
    let mut claimed = o.org.clone();
    claimed
        .metadata
        .insert(OWNER_KEY.into(), plan::owner_of(&corg));
    let mut seen = first_pass(&o, LAYERS);
    seen.found = Found::Tracked(Some(claimed));
    let after = plan::plan(&corg, &seen);
    assert!(after.actions.is_empty(), "{:#?}", after.actions);
    assert!(after.stalled.is_none());
    // Observe: the same object shows no drift, so it is Ready.
    let mut observing = corg.clone();
    observing.spec.management_policy = ManagementPolicy::Observe;
    let watched = plan_through_claim(&observing, &first_pass(&o, LAYERS));
    assert!(
        drifted_fields(&watched).is_empty(),
        "{:?}",
        drifted_fields(&watched)
    );
}

#[test]
fn counting_unmarked_allocations_would_have_moved_them_again() {
    let o = layers_org();
    let mut spec = build(&o, &choices(LAYERS, ManagementPolicy::Full))
        .unwrap()
        .spec;
    if let Some(c) = spec.credits.as_mut() {
        c.allocated = 750 + 1200;
    }
    let corg = applied(spec);
    let p = plan_through_claim(&corg, &first_pass(&o, LAYERS));
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::Allocate { credits: 1200, .. })),
        "the ledger the operator reads counts marked allocations only: {:#?}",
        p.actions
    );
}

#[test]
fn what_a_full_pass_would_change_holds_the_org_in_observe() {
    let mut o = layers_org();
    o.org.metadata.insert("orgops.dev/note".into(), "x".into());
    o.org.metadata.insert("empty".into(), String::new());
    o.webhooks
        .get_or_insert_with(Vec::new)
        .push(WebhookEndpoint {
            id: "we_2".into(),
            url: "https://old.example.com".into(),
            events: vec!["post.published".into()],
            metadata: m(&[(WEBHOOK_MARKER, "crm")]),
        });
    let b = build(&o, &choices(LAYERS, ManagementPolicy::Full)).unwrap();
    assert_eq!(b.spec.management_policy, ManagementPolicy::Observe);
    assert_eq!(b.held.len(), 3, "{:#?}", b.held);
    // The reasons are real: the operator's plan would remove the keys and delete the
    // marked endpoint, and Observe reports that as drift.
    let mut full = applied(b.spec.clone());
    full.spec.management_policy = ManagementPolicy::Full;
    let p = plan_through_claim(&full, &first_pass(&o, LAYERS));
    assert!(
        p.actions
            .iter()
            .any(|a| matches!(a, Action::DeleteWebhook { id, .. } if id == "we_2"))
    );
    assert!(p.actions.iter().any(|a| matches!(a, Action::UpdateOrg { patch } if patch.metadata.as_ref().is_some_and(|md| md.get("orgops.dev/note") == Some(&String::new())))));
    assert!(
        !p.actions
            .iter()
            .any(|a| matches!(a, Action::DeleteWebhook { id, .. } if id == "we_1"))
    );
    let observing = applied(b.spec);
    assert!(!drifted_fields(&plan_through_claim(&observing, &first_pass(&o, LAYERS))).is_empty());
}

fn gennia_org(users: Vec<OrgUser>) -> Observed {
    Observed {
        org: Org {
            id: "6f1c7a52-6a59-4f0e-9d0b-1e2f3a4b5c6d".into(),
            name: "Acme Coffee".into(),
            status: OrgStatus::Active,
            metadata: BTreeMap::new(),
            billing_email: None,
            summary: Some(OrgSummary {
                balance: 42,
                available: 42,
                credit_config: CreditConfig::default(),
            }),
            users,
            billing_note: Some("past_due: the last payment failed".into()),
            suspend_blocked: None,
        },
        allocations: None,
        keys: None,
        webhooks: None,
    }
}

fn user(id: Option<&str>, email: &str, name: Option<&str>, role: &str) -> OrgUser {
    OrgUser {
        id: id.map(str::to_string),
        email: email.into(),
        name: name.map(str::to_string),
        role: role.into(),
    }
}

#[test]
fn a_gennia_workspace_keeps_its_users_and_plans_nothing() {
    let o = gennia_org(vec![
        user(Some("u1"), "ana@acme.example", Some("Ana"), "admin"),
        user(Some("u2"), "bo@acme.example", None, "editor"),
        user(None, "cy@acme.example", Some(""), "viewer"),
    ]);
    let b = build(&o, &choices(GENNIA, ManagementPolicy::Full)).unwrap();
    assert!(b.held.is_empty(), "{:?}", b.held);
    assert_eq!(b.spec.credits, None, "Gennia's balance is read-only");
    assert_eq!(b.spec.external_id, None);
    let users = &b.spec.gennia.as_ref().unwrap().users;
    assert_eq!(users.len(), 3);
    assert_eq!(users[2].name, None);
    assert!(b.notes.iter().any(|n| n.contains("past_due")));
    let corg = applied(b.spec);
    let p = plan_through_claim(&corg, &first_pass(&o, GENNIA));
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
    assert!(p.stalled.is_none());
}

#[test]
fn a_member_with_a_pending_invitation_is_listed_once() {
    let o = gennia_org(vec![
        user(Some("u1"), "cy@beta.example", Some("Cy"), "admin"),
        user(None, "cy@beta.example", Some("Cy"), "admin"),
        user(None, "Dee@beta.example", None, "viewer"),
        user(None, "dee@beta.example", None, "viewer"),
    ]);
    let b = build(&o, &choices(GENNIA, ManagementPolicy::Observe)).unwrap();
    let users = &b.spec.gennia.as_ref().unwrap().users;
    let emails: Vec<&str> = users.iter().map(|u| u.email.as_str()).collect();
    assert_eq!(emails, ["cy@beta.example", "Dee@beta.example"]);
    let p = plan_through_claim(&applied(b.spec.clone()), &first_pass(&o, GENNIA));
    assert!(p.actions.is_empty(), "{:#?}", p.actions);
}

#[test]
fn a_workspace_the_spec_cannot_list_is_held() {
    let o = gennia_org(vec![
        user(Some("u1"), "ana@acme.example", None, "member"),
        user(Some("u2"), "bo@acme.example", None, "owner"),
    ]);
    let b = build(&o, &choices(GENNIA, ManagementPolicy::Full)).unwrap();
    assert_eq!(b.spec.management_policy, ManagementPolicy::Observe);
    assert_eq!(
        b.spec.gennia, None,
        "a list without an admin is refused at admission"
    );
    assert_eq!(b.held.len(), 2, "{:#?}", b.held);
}

#[test]
fn a_youhodler_client_plans_only_the_claim() {
    let o = Observed {
        org: Org {
            id: "0b7c6c39-2a44-4d5e-9a8f-7a1d2c3b4e5f".into(),
            name: "Acme Coffee".into(),
            status: OrgStatus::Suspended,
            metadata: m(&[("externalId", "acme"), ("tier", "gold")]),
            billing_email: None,
            summary: None,
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        },
        allocations: None,
        keys: None,
        webhooks: None,
    };
    let b = build(&o, &choices(YOUHODLER, ManagementPolicy::Full)).unwrap();
    assert!(b.held.is_empty());
    assert_eq!(b.spec.credits, None);
    assert_eq!(b.spec.external_id.as_deref(), Some("acme"));
    let corg = applied(b.spec);
    only_the_claim(
        &corg,
        &plan_through_claim(&corg, &first_pass(&o, YOUHODLER)).actions,
    );
}

#[test]
fn ids_and_key_names_outside_the_spec_are_refused() {
    let mut o = layers_org();
    o.org.id = "org/../x".into();
    assert!(build(&o, &choices(LAYERS, ManagementPolicy::Observe)).is_err());
    assert!(key_name_fits("backend-1.v2"));
    for bad in ["", "Backend", "-a", "a-", "a b", &"a".repeat(121)] {
        assert!(!key_name_fits(bad), "{bad:?}");
    }
}
