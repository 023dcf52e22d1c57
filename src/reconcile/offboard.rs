//! Offboarding on deletion (finalizer `orgops.dev/offboard`): `Orphan` leaves the org,
//! `Archive` archives it (keys revoked, credits reclaimed). The org is the one in status,
//! or, when its id never reached status, the ones carrying this object's owner marker
//! (with its uid, so an earlier object of the same name is never confused with this one).

use crate::api::{CustomerOrg, DeletionPolicy, PAUSED_ANNOTATION};

use super::plan::{self, Gate, OWNER_KEY};
use super::{Context, Offboard, OrgEvent, ReconcileError, Retry, failure_retry};

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
    }
}

/// Offboards one CustomerOrg on deletion.
pub async fn offboard(ctx: &Context, corg: &CustomerOrg) -> Result<Offboard, ReconcileError> {
    let recorded = corg.status.as_ref().and_then(|s| s.org_id.clone());
    if corg.spec.deletion_policy == DeletionPolicy::Orphan {
        let note = match &recorded {
            Some(id) => format!("deletionPolicy Orphan: org {id} left untouched"),
            None => "deletionPolicy Orphan: nothing to offboard".to_string(),
        };
        return Ok(Offboard {
            done: true,
            events: vec![event(false, "Orphaned", note)],
            retry: Retry::Resync,
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
    let org_ids = match recorded {
        Some(id) => vec![id],
        None => match ctx
            .provider
            .find_orgs_by_metadata(OWNER_KEY, &plan::owner_of(corg))
            .await
        {
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
    let mut done = true;
    let mut retry = Retry::Resync;
    let mut events = Vec::new();
    for org_id in &org_ids {
        if !(ctx.may_write)() {
            return Ok(not_done(events, Retry::Backoff));
        }
        match ctx.provider.archive_org(org_id).await {
            Ok(result) => events.push(event(
                false,
                "Archived",
                format!(
                    "archived org {org_id}: reclaimed {} credits, revoked {} keys",
                    result.reclaimed_credits, result.revoked_api_keys
                ),
            )),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                done = false;
                retry = failure_retry(&e);
                events.push(event(
                    true,
                    "OffboardFailed",
                    format!(
                        "archiving org {org_id} failed: {} {}",
                        e.code(),
                        e.message()
                    ),
                ));
            }
        }
    }
    Ok(Offboard {
        done,
        events,
        retry,
    })
}
