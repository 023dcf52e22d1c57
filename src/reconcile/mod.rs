//! Reconcile pipeline: observe -> plan (pure) -> apply -> status.

use std::sync::Arc;

use crate::api::{CustomerOrg, CustomerOrgStatus, DeletionPolicy};
use crate::provider::Provider;

pub mod apply;
pub mod idempotency;
pub mod pipeline;
pub mod plan;
pub mod secrets;
pub mod status;

/// What a reconcile needs: the cluster and the provider of the object's OrgProvider.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub provider: Arc<dyn Provider>,
    pub provider_name: String,
}

/// When to look at the object again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Normal: the resync interval with jitter.
    Resync,
    /// More work queued: about a second.
    Soon,
    /// Transient failure: per-object exponential backoff.
    Backoff,
    /// Needs a human or credentials: about five minutes.
    Slow,
}

/// A Kubernetes Event to publish about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
    pub action: String,
}

/// The result of one reconcile: the status to apply (when it differs), events and when to retry.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub status: CustomerOrgStatus,
    pub events: Vec<OrgEvent>,
    pub retry: Retry,
}

/// The result of offboarding on deletion.
#[derive(Clone, Debug)]
pub struct Offboard {
    /// The finalizer may be removed.
    pub done: bool,
    pub events: Vec<OrgEvent>,
    pub retry: Retry,
}

/// Only Kubernetes API failures; provider failures become conditions in the Outcome.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Converges one CustomerOrg.
pub async fn reconcile(ctx: &Context, corg: &CustomerOrg) -> Result<Outcome, ReconcileError> {
    pipeline::run(ctx, corg).await
}

/// Offboards one CustomerOrg on deletion.
pub async fn offboard(ctx: &Context, corg: &CustomerOrg) -> Result<Offboard, ReconcileError> {
    let warn = |reason: &str, note: String| OrgEvent {
        warning: true,
        reason: reason.to_string(),
        note,
        action: "Offboard".to_string(),
    };
    if corg.spec.deletion_policy == DeletionPolicy::Orphan {
        let note = match corg.status.as_ref().and_then(|s| s.org_id.as_deref()) {
            Some(id) => format!("deletionPolicy Orphan: org {id} left untouched"),
            None => "deletionPolicy Orphan: nothing to offboard".to_string(),
        };
        return Ok(Offboard {
            done: true,
            events: vec![OrgEvent {
                warning: false,
                reason: "Orphaned".to_string(),
                note,
                action: "Offboard".to_string(),
            }],
            retry: Retry::Resync,
        });
    }
    if plan::gate(corg) == Some(plan::Gate::Paused) {
        let org = corg
            .status
            .as_ref()
            .and_then(|s| s.org_id.as_deref())
            .unwrap_or("(not recorded)");
        return Ok(Offboard {
            done: false,
            events: vec![warn(
                "Paused",
                format!(
                    "{} is \"true\": org {org} is not archived until it is removed",
                    crate::api::PAUSED_ANNOTATION
                ),
            )],
            retry: Retry::Slow,
        });
    }
    // Without a recorded org id the org may still exist: created, then the status write
    // or the create's response was lost. Our owner marker in its metadata finds it.
    let org_ids = match corg.status.as_ref().and_then(|s| s.org_id.clone()) {
        Some(id) => vec![id],
        None => match ctx
            .provider
            .find_orgs_by_metadata(plan::OWNER_KEY, &plan::owner_of(corg))
            .await
        {
            Ok(orgs) => orgs.into_iter().map(|o| o.id).collect(),
            Err(e) => {
                return Ok(Offboard {
                    done: false,
                    events: vec![warn(
                        "OffboardFailed",
                        format!(
                            "looking up an unrecorded org failed: {} {}",
                            e.code(),
                            e.message()
                        ),
                    )],
                    retry: failure_retry(&e),
                });
            }
        },
    };
    let mut done = true;
    let mut retry = Retry::Resync;
    let mut events = Vec::new();
    for org_id in &org_ids {
        match ctx.provider.archive_org(org_id).await {
            Ok(result) => events.push(OrgEvent {
                warning: false,
                reason: "Archived".to_string(),
                note: format!(
                    "archived org {org_id}: reclaimed {} credits, revoked {} keys",
                    result.reclaimed_credits, result.revoked_api_keys
                ),
                action: "Offboard".to_string(),
            }),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                done = false;
                retry = failure_retry(&e);
                events.push(warn(
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

/// Credentials or a human are needed: slow; anything else is transient.
fn failure_retry(e: &crate::provider::error::ProviderError) -> Retry {
    if e.is_auth() || e.needs_human() {
        Retry::Slow
    } else {
        Retry::Backoff
    }
}

#[cfg(test)]
mod plan_tests;
