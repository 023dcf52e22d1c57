//! The org itself: which org this object manages, creating it, its lifecycle and fields.

use std::collections::BTreeMap;

use crate::api::{CustomerOrg, DesiredState};
use crate::provider::{NewOrg, Org, OrgPatch, OrgStatus};
use crate::reconcile::idempotency::derive;

use super::{Action, Found, OWNER_KEY, Observed, Plan, desired_metadata, uid, wants};

pub(super) enum Identity {
    Known(Box<Org>),
    Create,
    /// Nothing may be done (stalled, or nothing to do).
    Stop,
}

/// What found the org: spec.externalId, or (providers without metadata) its name.
fn identity_of(corg: &CustomerOrg) -> String {
    match &corg.spec.external_id {
        Some(e) => format!("externalId {e:?}"),
        None => format!("name {:?}", corg.spec.display_name),
    }
}

fn ext(corg: &CustomerOrg) -> &str {
    corg.spec.external_id.as_deref().unwrap_or_default()
}

pub(super) fn identify(corg: &CustomerOrg, obs: &Observed, plan: &mut Plan) -> Identity {
    match &obs.found {
        Found::Tracked(Some(org)) => {
            // Recorded in status without this object's claim on it: found under
            // managementPolicy Observe (which never writes), or written by orgops 0.1.
            // Taken over like an adoption: the claim first, then everything else.
            if obs.capabilities.org_metadata
                && !marked_ours(corg, org)
                && org.status != OrgStatus::Archived
            {
                plan.adopted = Some((
                    "Adopted".into(),
                    format!(
                        "took over org {} (status.orgId) which does not carry this object's owner marker yet",
                        org.id
                    ),
                ));
            }
            Identity::Known(Box::new(org.clone()))
        }
        Found::Tracked(None) => {
            if wants(corg) != DesiredState::Archived {
                plan.stall(
                    "OrgNotFound",
                    "the org in status.orgId no longer exists at the provider; to start over with a new org, remove status.orgId (kubectl edit --subresource=status) or set spec.adoptOrgId".into(),
                );
            }
            Identity::Stop
        }
        Found::ById { org: None, .. } => {
            plan.stall(
                "OrgNotFound",
                "spec.adoptOrgId names an org that does not exist or is not a child of the provider's parent org; fix spec.adoptOrgId".into(),
            );
            Identity::Stop
        }
        Found::ById {
            org: Some(org),
            claimed_by: Some(other),
        } => {
            plan.stall(
                "AdoptionConflict",
                format!(
                    "org {} is already managed by CustomerOrg {other}; remove spec.adoptOrgId or delete the other resource",
                    org.id
                ),
            );
            Identity::Stop
        }
        Found::ById {
            org: Some(org),
            claimed_by: None,
        } => {
            plan.adopted = Some((
                "Adopted".into(),
                format!("adopted org {} from spec.adoptOrgId", org.id),
            ));
            Identity::Known(Box::new(org.clone()))
        }
        Found::ByOwner(orgs) => match orgs.as_slice() {
            [org] => {
                plan.adopted = Some((
                    "Recovered".into(),
                    format!(
                        "found org {} created earlier by this CustomerOrg (owner marker); its id had not reached status",
                        org.id
                    ),
                ));
                Identity::Known(Box::new(org.clone()))
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|o| o.id.as_str()).collect();
                plan.stall(
                    "DuplicateOrgs",
                    format!(
                        "several live orgs carry this CustomerOrg's owner marker ({}); archive the extra ones at the provider, or set spec.adoptOrgId to the one to keep",
                        ids.join(", ")
                    ),
                );
                Identity::Stop
            }
        },
        Found::ByExternalId { orgs, claimed_by } => match orgs.as_slice() {
            [] => Identity::Create,
            [org] => {
                if let Some(other) = claimed_by {
                    plan.stall(
                        "AdoptionConflict",
                        format!(
                            "org {} with {} is already managed by CustomerOrg {other}; change it or delete the other resource",
                            org.id,
                            identity_of(corg)
                        ),
                    );
                    return Identity::Stop;
                }
                plan.adopted = Some((
                    "Adopted".into(),
                    format!("adopted org {} by {}", org.id, identity_of(corg)),
                ));
                Identity::Known(Box::new(org.clone()))
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|o| o.id.as_str()).collect();
                plan.stall(
                    "AdoptionConflict",
                    format!(
                        "several live orgs carry externalId {:?} ({}); set spec.adoptOrgId to the one to manage",
                        ext(corg),
                        ids.join(", ")
                    ),
                );
                Identity::Stop
            }
        },
        Found::Nothing => Identity::Create,
    }
}

/// The create is keyed by the object's uid alone: every retry of this object's create,
/// whatever the spec says by then, reaches the same key, so the provider replays it (or
/// answers IDEMPOTENCY_CONFLICT for an edited body) instead of creating a second org.
/// Only after the provider definitively refused a create (which made no org) does the
/// next attempt get a new key (`status.createRefusals`).
pub(super) fn plan_create(corg: &CustomerOrg, plan: &mut Plan) {
    if wants(corg) == DesiredState::Archived {
        plan.notes
            .push("spec.state is archived and no org exists: nothing to create".into());
        return;
    }
    let refusals = corg.status.as_ref().and_then(|s| s.create_refusals);
    let keyed = |what: &str| match refusals {
        None | Some(0) => derive(&[uid(corg), what]),
        Some(n) => derive(&[uid(corg), what, &n.to_string()]),
    };
    if !corg.spec.migrate_projects.is_empty() {
        // Every project to one child. The body depends only on what cannot change (the
        // object's name, the immutable project list), so any retry under this key replays
        // the first migration instead of being refused as a different request.
        plan.actions.push(Action::MigrateProjects {
            projects: corg.spec.migrate_projects.clone(),
            name: super::migrate_name(corg),
            key: keyed("migrate"),
        });
        return;
    }
    let new = NewOrg {
        name: corg.spec.display_name.clone(),
        metadata: desired_metadata(corg),
        billing_email: corg.spec.billing_email.clone(),
        extras: create_extras(corg),
    };
    plan.actions.push(Action::CreateOrg {
        new,
        key: keyed("create"),
    });
}

/// Create-only choices (Gennia: users, plan, trial, invitations, credits).
fn create_extras(corg: &CustomerOrg) -> crate::provider::CreateExtras {
    let g = corg.spec.gennia.clone().unwrap_or_default();
    crate::provider::CreateExtras {
        users: super::users::desired_users(corg),
        plan_id: g.plan_id,
        trial: g.trial,
        send_invitations: g.send_invitations,
        initial_credits: g.initial_credits,
    }
}

/// Whether the org carries this object's owner marker.
pub(super) fn marked_ours(corg: &CustomerOrg, org: &Org) -> bool {
    org.metadata
        .get(OWNER_KEY)
        .and_then(|v| super::OwnerMarker::parse(v))
        .is_some_and(|m| m.is(corg) && m.uid.is_some())
}

/// Writes only this object's owner marker on an org it adopts.
pub(super) fn plan_claim(corg: &CustomerOrg, plan: &mut Plan) {
    plan.actions.push(Action::UpdateOrg {
        patch: OrgPatch {
            metadata: Some(BTreeMap::from([(
                OWNER_KEY.to_string(),
                super::owner_of(corg),
            )])),
            ..Default::default()
        },
    });
}

/// Archived handling and resume. False when nothing else may be planned.
pub(super) fn lifecycle_first(corg: &CustomerOrg, org: &Org, drift: bool, plan: &mut Plan) -> bool {
    match (org.status, wants(corg)) {
        (OrgStatus::Archived, DesiredState::Archived) => return false,
        (OrgStatus::Archived, _) => {
            plan.stall(
                "OrgArchived",
                format!(
                    "org {} is archived at the provider and cannot be reactivated; set spec.state: archived, or delete this resource and create a new one",
                    org.id
                ),
            );
            return false;
        }
        (_, DesiredState::Archived) => {
            plan.actions.push(Action::Archive);
            return false;
        }
        (OrgStatus::Suspended, DesiredState::Active) => {
            plan.actions.push(Action::Resume);
            if drift {
                plan.drift.push("state (suspended -> active)".into());
            }
        }
        _ => {}
    }
    true
}

/// A provider may refuse every change to a suspended org but resume and archive (seed 000:
/// the parent can manage a suspended child, "that's how you resume or archive it";
/// issue 28). Such a refusal must not burn an idempotency key: a provider that stores 4xx
/// outcomes would replay it after the resume. So the first write to an org that is and
/// stays suspended is an unkeyed one: the name PATCH the plan has anyway, or else the org's
/// own name sent again (a no-op where such writes are allowed). A refusal of it stops the
/// pass before any keyed write (`SuspendedOrgReadOnly`).
pub(super) fn unkeyed_first_while_suspended(corg: &CustomerOrg, org: &Org, plan: &mut Plan) {
    if org.status != OrgStatus::Suspended || wants(corg) != DesiredState::Suspended {
        return;
    }
    let first = plan.actions.iter().find(|a| a.changes_the_org());
    if first.is_some_and(Action::is_keyed) {
        plan.actions.insert(
            0,
            Action::UpdateOrg {
                patch: OrgPatch {
                    name: Some(org.name.clone()),
                    ..Default::default()
                },
            },
        );
    }
}

/// Suspend goes last, so a suspended org still gets its spec applied first.
pub(super) fn lifecycle_last(corg: &CustomerOrg, org: &Org, drift: bool, plan: &mut Plan) {
    if org.status == OrgStatus::Active && wants(corg) == DesiredState::Suspended {
        if let Some(why) = &org.suspend_blocked {
            plan.waiting.get_or_insert((
                super::REASON_NOT_SUSPENDABLE.to_string(),
                format!("org {}: {why}", org.id),
            ));
            return;
        }
        plan.actions.push(Action::Suspend);
        if drift {
            plan.drift.push("state (active -> suspended)".into());
        }
    }
}

/// Name, metadata (exactly the desired keys; others removed with `""`) and billing email.
/// Sent without an idempotency key: a second identical out-of-band change must be
/// corrected again, not answered with the stored response of the first correction.
pub(super) fn plan_fields(corg: &CustomerOrg, org: &Org, drift: bool, plan: &mut Plan) {
    let mut patch = OrgPatch::default();
    let mut changed = Vec::new();
    if org.name != corg.spec.display_name {
        patch.name = Some(corg.spec.display_name.clone());
        changed.push("name");
    }
    let wanted = desired_metadata(corg);
    let mut meta = BTreeMap::new();
    for (k, v) in &wanted {
        if org.metadata.get(k) != Some(v) {
            meta.insert(k.clone(), v.clone());
        }
    }
    for k in org.metadata.keys() {
        if !wanted.contains_key(k) {
            meta.insert(k.clone(), String::new());
        }
    }
    // The ownership marker alone changing is adoption bookkeeping, not drift.
    let only_owner = meta.keys().all(|k| k == OWNER_KEY);
    if !meta.is_empty() {
        patch.metadata = Some(meta);
        if !only_owner {
            changed.push("metadata");
        }
    }
    if org.billing_email != corg.spec.billing_email {
        patch.billing_email = Some(corg.spec.billing_email.clone());
        changed.push("billingEmail");
    }
    if patch == OrgPatch::default() {
        return;
    }
    if drift {
        plan.drift.extend(changed.iter().map(|c| c.to_string()));
    }
    plan.actions.push(Action::UpdateOrg { patch });
}
