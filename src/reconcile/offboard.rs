//! Offboarding on deletion (finalizer `orgops.dev/offboard`): `Orphan` leaves the org,
//! `Archive` archives it (keys revoked, credits reclaimed). The org is the one in status,
//! or, when its id never reached status, the ones carrying this object's owner marker
//! (with its uid, so an earlier object of the same name is never confused with this one)
//! or named by its claims. Whatever found it, the org is archived only once a fresh read
//! proves it this object's (`provider::owned`).

use crate::api::{CustomerOrg, DeletionPolicy, ManagementPolicy, PAUSED_ANNOTATION};

use super::apply::Prover;
use super::claims::{self, Identity};
use super::offboard_guard::{self, Admission};
use super::offboard_window::{self, Pause};
use super::plan::{self, Gate, OWNER_KEY};
use super::{Context, Offboard, OrgEvent, ReconcileError, Retry, failure_retry, status};
use crate::api::CONFIRM_OFFBOARD_ANNOTATION;
use crate::api::conditions::STALLED;
use crate::provider::error::ProviderError;
use crate::provider::owned::Unproven;

/// Reason of the Stalled condition and of the Event while the offboarding guard holds an
/// object.
pub const OFFBOARDING_PAUSED: &str = "OffboardingPaused";
/// Reason (Ready, Stalled, Event) while a deletion waits because this object cannot prove
/// the org is its own.
pub const OWNERSHIP_UNPROVEN: &str = "OwnershipUnproven";

fn event(warning: bool, reason: &str, note: String) -> OrgEvent {
    OrgEvent {
        warning,
        reason: reason.to_string(),
        note,
        action: "Offboard".to_string(),
    }
}

fn not_done(events: Vec<OrgEvent>, retry: Retry) -> Offboard {
    Offboard {
        done: false,
        events,
        retry,
        paused: None,
        waiting: None,
    }
}

/// What the offboarding guard's pause says, and when to look again (the next slot).
pub(super) fn pause_message(ctx: &Context, pause: &Pause) -> (String, Retry) {
    let message = offboard_window::message(pause, &ctx.provider_name, CONFIRM_OFFBOARD_ANNOTATION);
    let retry = match offboard_window::wait(pause, crate::api::conditions::now().0) {
        Some(wait) => Retry::Stalled(wait),
        None => Retry::Slow,
    };
    (message, retry)
}

/// Whether a deleting object shows an offboarding held for a person (the guard's window,
/// an unproven org): a pass that cannot reach the provider (a restart, a provider briefly
/// unready) must leave that status alone, or the next pass would take it for a new episode
/// and publish its Warning again.
pub fn held_for_person(corg: &CustomerOrg) -> bool {
    corg.metadata.deletion_timestamp.is_some()
        && (stalled_with(corg, OFFBOARDING_PAUSED) || stalled_with(corg, OWNERSHIP_UNPROVEN))
}

/// Whether the object already shows Stalled with `reason` (its Warning was published).
fn stalled_with(corg: &CustomerOrg, reason: &str) -> bool {
    corg.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == STALLED))
        .is_some_and(|c| c.status == "True" && c.reason == reason)
}

/// Not done, Stalled `reason`: one Warning Event per episode (when the status does not say
/// so yet), the status to write, and when to look again.
fn held(corg: &CustomerOrg, reason: &str, message: String, retry: Retry) -> Offboard {
    let events = if stalled_with(corg, reason) {
        Vec::new()
    } else {
        vec![event(true, reason, message.clone())]
    };
    Offboard {
        done: false,
        events,
        retry,
        paused: Some(status::unavailable(corg, reason, &message)),
        waiting: None,
    }
}

/// Held by the offboarding guard: Stalled OffboardingPaused until the next slot frees.
fn guard_paused(ctx: &Context, corg: &CustomerOrg, pause: &Pause) -> Offboard {
    let (message, retry) = pause_message(ctx, pause);
    held(corg, OFFBOARDING_PAUSED, message, retry)
}

/// The orgs an object may have made whose id never reached status: by its owner marker,
/// or where orgs carry no metadata, by the names this object holds claims on.
async fn unrecorded(
    ctx: &Context,
    corg: &CustomerOrg,
    caps: &crate::provider::Capabilities,
) -> Result<Result<Vec<crate::provider::Org>, ProviderError>, ReconcileError> {
    if caps.org_metadata {
        return Ok(ctx
            .provider
            .find_orgs_by_metadata(OWNER_KEY, &plan::owner_of(corg))
            .await);
    }
    let mut found = Vec::new();
    if caps.find_by_name {
        for identity in ctx.claims.held(corg).await? {
            let Identity::Name(name) = identity else {
                continue;
            };
            match ctx.provider.find_orgs_by_name(&name).await {
                Ok(orgs) => found.extend(orgs),
                Err(e) => return Ok(Err(e)),
            }
        }
    }
    Ok(Ok(found))
}

fn failed(what: &str, e: &ProviderError) -> Offboard {
    not_done(
        vec![event(
            true,
            "OffboardFailed",
            format!("{what} failed: {} {}", e.code(), e.message()),
        )],
        failure_retry(e),
    )
}

/// Offboards one CustomerOrg on deletion. Nothing is archived or suspended that a fresh
/// read does not show to be this object's (`provider::owned`): without that proof the
/// finalizer waits, `OwnershipUnproven`, and the way out is `deletionPolicy: Orphan`.
pub async fn offboard(ctx: &Context, corg: &CustomerOrg) -> Result<Offboard, ReconcileError> {
    let recorded = corg.status.as_ref().and_then(|s| s.org_id.clone());
    if corg.spec.management_policy == ManagementPolicy::Observe {
        let note = "managementPolicy Observe: nothing is written to the provider; the org is left untouched";
        return Ok(Offboard {
            done: true,
            events: vec![event(false, "Orphaned", note.to_string())],
            retry: Retry::Resync,
            paused: None,
            waiting: None,
        });
    }
    if corg.spec.deletion_policy == DeletionPolicy::Orphan {
        let note = match &recorded {
            Some(id) => format!("deletionPolicy Orphan: org {id} left untouched"),
            None => "deletionPolicy Orphan: nothing to offboard".to_string(),
        };
        return Ok(Offboard {
            done: true,
            events: vec![event(false, "Orphaned", note)],
            retry: Retry::Resync,
            paused: None,
            waiting: None,
        });
    }
    if plan::gate(corg) == Some(Gate::Paused) {
        let org = recorded.as_deref().unwrap_or("(not recorded)");
        return Ok(not_done(
            vec![event(
                true,
                "Paused",
                format!(
                    "{PAUSED_ANNOTATION} is \"true\": org {org} is not archived until it is removed"
                ),
            )],
            Retry::Slow,
        ));
    }
    // Without a recorded org id the org may still exist: created, then the status write
    // or the create's response was lost. Our owner marker (or claim) finds it.
    let caps = ctx.provider.capabilities();
    let org_ids: Vec<String> = match recorded {
        Some(id) => vec![id],
        None => match unrecorded(ctx, corg, &caps).await? {
            Ok(orgs) => orgs.into_iter().map(|o| o.id).collect(),
            Err(e) => return Ok(failed("looking up an unrecorded org", &e)),
        },
    };
    // Proved before anything is taken or done: a fresh read of each org.
    let prover = Prover {
        provider: ctx.provider.as_ref(),
        claims: &ctx.claims,
        owner: claims::owner(corg),
    };
    let mut owned = Vec::new();
    let mut unproven = Vec::new();
    for id in &org_ids {
        match prover.prove(id).await {
            Ok(proof) => owned.push(proof),
            Err(Unproven::Gone(_)) => {}
            Err(e @ Unproven::NotOurs { .. }) => unproven.push(e.to_string()),
            Err(Unproven::Provider { source, .. }) => {
                return Ok(failed(&format!("reading org {id}"), &source));
            }
            Err(e @ Unproven::Claim { .. }) => {
                return Ok(not_done(
                    vec![event(true, "OffboardFailed", e.to_string())],
                    Retry::Backoff,
                ));
            }
        }
    }
    if !unproven.is_empty() {
        let message = format!(
            "not archived or suspended: this object cannot prove the org is its own ({}); if it is not, set deletionPolicy: Orphan to let this object go without touching it",
            unproven.join("; ")
        );
        return Ok(held(corg, OWNERSHIP_UNPROVEN, message, Retry::Slow));
    }
    let mut events = Vec::new();
    // Nothing to archive takes no slot of the offboarding guard.
    if !owned.is_empty() {
        if !ctx.fence.is_open() {
            return Ok(not_done(events, Retry::Backoff));
        }
        match offboard_guard::admit(&ctx.client, &ctx.provider_name, corg).await? {
            Admission::Granted { confirmed } => {
                if confirmed {
                    events.push(event(
                        false,
                        "OffboardingConfirmed",
                        format!(
                            "{CONFIRM_OFFBOARD_ANNOTATION} is \"true\": offboarding past the full window of OrgProvider {}",
                            ctx.provider_name
                        ),
                    ));
                }
            }
            Admission::Paused(pause) => return Ok(guard_paused(ctx, corg, &pause)),
        }
    }
    let mut done = true;
    let mut retry = Retry::Resync;
    let mut waiting = None;
    for proof in &owned {
        let org_id = proof.org_id();
        if !ctx.fence.is_open() {
            return Ok(not_done(events, Retry::Backoff));
        }
        // No archive at this provider: suspend, and say so; unless the provider cannot
        // suspend the org in its present state (Gennia: only an active workspace), which a
        // fresh read tells: then wait, saying why, with nothing sent.
        if !caps.archive
            && let Ok(Some(org)) = ctx.provider.get_org(org_id).await
            && org.status == crate::provider::OrgStatus::Active
            && let Some(why) = &org.suspend_blocked
        {
            let message = format!(
                "deleting: deletionPolicy Archive suspends org {org_id} (no archive at {}), but {why}",
                ctx.provider.vendor()
            );
            let shown = corg
                .status
                .as_ref()
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == crate::api::conditions::READY)
                })
                .is_some_and(|c| c.reason == plan::REASON_NOT_SUSPENDABLE);
            if !shown {
                events.push(event(true, plan::REASON_NOT_SUSPENDABLE, message.clone()));
            }
            let waiting = status::finish(
                corg,
                corg.status.clone().unwrap_or_default(),
                &status::Verdict::Waiting {
                    reason: plan::REASON_NOT_SUSPENDABLE.to_string(),
                    message,
                },
            );
            return Ok(Offboard {
                done: false,
                events,
                retry: Retry::Resync,
                paused: None,
                waiting: Some(waiting),
            });
        }
        let outcome = if caps.archive {
            ctx.provider.archive_org(proof).await.map(|result| {
                format!(
                    "archived org {org_id}: reclaimed {} credits, revoked {} keys",
                    result.reclaimed_credits, result.revoked_api_keys
                )
            })
        } else {
            ctx.provider
                .suspend_org_with(proof, &plan::suspend_reason(corg, true))
                .await
                .map(|_| {
                    format!(
                        "{} has no archive: org {org_id} suspended instead (deletionPolicy Archive)",
                        ctx.provider.vendor()
                    )
                })
        };
        let (reason, verb) = if caps.archive {
            ("Archived", "archiving")
        } else {
            ("Suspended", "suspending")
        };
        match outcome {
            Ok(note) => events.push(event(false, reason, note)),
            Err(e) if e.is_not_found() => {}
            // Accepted, applied later: looked at again, not asked for again.
            Err(crate::provider::error::ProviderError::Pending(why)) => {
                done = false;
                retry = Retry::Backoff;
                waiting = Some(status::finish(
                    corg,
                    corg.status.clone().unwrap_or_default(),
                    &status::Verdict::Waiting {
                        reason: super::pipeline::REASON_TRANSITION_PENDING.to_string(),
                        message: format!("deleting: {why}"),
                    },
                ));
            }
            Err(e) => {
                done = false;
                retry = failure_retry(&e);
                events.push(event(
                    true,
                    "OffboardFailed",
                    format!("{verb} org {org_id} failed: {} {}", e.code(), e.message()),
                ));
            }
        }
    }
    Ok(Offboard {
        done,
        events,
        retry,
        paused: None,
        waiting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deleting(with: Option<&str>) -> CustomerOrg {
        let spec = serde_json::json!({"displayName": "Acme", "providerRef": {"name": "p"}});
        let mut c = CustomerOrg::new("a", serde_json::from_value(spec).expect("spec"));
        c.metadata.namespace = Some("ns".into());
        if let Some(reason) = with {
            c.status = Some(status::unavailable(&c, reason, "held"));
        }
        c.metadata.deletion_timestamp = Some(crate::api::conditions::now());
        c
    }

    #[test]
    fn a_held_offboarding_is_kept_by_a_pass_that_cannot_reach_the_provider() {
        assert!(held_for_person(&deleting(Some(OFFBOARDING_PAUSED))));
        assert!(held_for_person(&deleting(Some(OWNERSHIP_UNPROVEN))));
        assert!(!held_for_person(&deleting(Some("ProviderNotFound"))));
        assert!(!held_for_person(&deleting(None)));
        let mut live = deleting(Some(OFFBOARDING_PAUSED));
        live.metadata.deletion_timestamp = None;
        assert!(!held_for_person(&live), "only while deleting");
    }
}
