//! Offboarding on deletion (finalizer `orgops.dev/offboard`): `Orphan` leaves the org,
//! `Archive` archives it (keys revoked, credits reclaimed). The org is the one in status,
//! or, when its id never reached status, the ones carrying this object's owner marker
//! (with its uid, so an earlier object of the same name is never confused with this one).

use crate::api::{CustomerOrg, DeletionPolicy, ManagementPolicy, PAUSED_ANNOTATION};

use super::offboard_guard::{self, Admission};
use super::offboard_window::{self, Pause};
use super::plan::{self, Gate, OWNER_KEY};
use super::{Context, Offboard, OrgEvent, ReconcileError, Retry, failure_retry, status};
use crate::api::CONFIRM_OFFBOARD_ANNOTATION;
use crate::api::conditions::STALLED;

/// Reason of the Stalled condition and of the Event while the offboarding guard holds an
/// object.
pub const OFFBOARDING_PAUSED: &str = "OffboardingPaused";

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
    }
}

/// Held by the offboarding guard: Stalled OffboardingPaused, one Warning Event per episode
/// (when the status does not say so yet), and a look again when the next slot frees.
fn guard_paused(ctx: &Context, corg: &CustomerOrg, pause: &Pause) -> Offboard {
    let message = offboard_window::message(pause, &ctx.provider_name, CONFIRM_OFFBOARD_ANNOTATION);
    let already = corg
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == STALLED))
        .is_some_and(|c| c.status == "True" && c.reason == OFFBOARDING_PAUSED);
    let events = if already {
        Vec::new()
    } else {
        vec![event(true, OFFBOARDING_PAUSED, message.clone())]
    };
    let retry = match offboard_window::wait(pause, crate::api::conditions::now().0) {
        Some(wait) => Retry::Stalled(wait),
        None => Retry::Slow,
    };
    Offboard {
        done: false,
        events,
        retry,
        paused: Some(status::unavailable(corg, OFFBOARDING_PAUSED, &message)),
    }
}

/// The orgs an object may have made whose id never reached status: by its owner marker,
/// or where orgs carry no metadata, by the name that identifies them.
async fn unrecorded(
    ctx: &Context,
    corg: &CustomerOrg,
    caps: &crate::provider::Capabilities,
) -> Result<Vec<crate::provider::Org>, crate::provider::error::ProviderError> {
    if caps.org_metadata {
        ctx.provider
            .find_orgs_by_metadata(OWNER_KEY, &plan::owner_of(corg))
            .await
    } else if caps.find_by_name {
        ctx.provider
            .find_orgs_by_name(&corg.spec.display_name)
            .await
    } else {
        Ok(Vec::new())
    }
}

/// Offboards one CustomerOrg on deletion.
pub async fn offboard(ctx: &Context, corg: &CustomerOrg) -> Result<Offboard, ReconcileError> {
    let recorded = corg.status.as_ref().and_then(|s| s.org_id.clone());
    if corg.spec.management_policy == ManagementPolicy::Observe {
        let note = "managementPolicy Observe: nothing is written to the provider; the org is left untouched";
        return Ok(Offboard {
            done: true,
            events: vec![event(false, "Orphaned", note.to_string())],
            retry: Retry::Resync,
            paused: None,
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
    // or the create's response was lost. Our owner marker in its metadata finds it.
    let caps = ctx.provider.capabilities();
    let org_ids = match recorded {
        Some(id) => vec![id],
        None => match unrecorded(ctx, corg, &caps).await {
            Ok(orgs) => orgs.into_iter().map(|o| o.id).collect(),
            Err(e) => {
                return Ok(not_done(
                    vec![event(
                        true,
                        "OffboardFailed",
                        format!(
                            "looking up an unrecorded org failed: {} {}",
                            e.code(),
                            e.message()
                        ),
                    )],
                    failure_retry(&e),
                ));
            }
        },
    };
    let mut events = Vec::new();
    // Nothing to archive takes no slot of the offboarding guard.
    if !org_ids.is_empty() {
        if !(ctx.may_write)() {
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
    for org_id in &org_ids {
        if !(ctx.may_write)() {
            return Ok(not_done(events, Retry::Backoff));
        }
        // No archive at this provider: suspend, and say so.
        let outcome = if caps.archive {
            ctx.provider.archive_org(org_id).await.map(|result| {
                format!(
                    "archived org {org_id}: reclaimed {} credits, revoked {} keys",
                    result.reclaimed_credits, result.revoked_api_keys
                )
            })
        } else {
            ctx.provider
                .suspend_org_with(org_id, &plan::suspend_reason(corg, true))
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
    })
}
