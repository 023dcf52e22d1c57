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
    let Some(org_id) = corg.status.as_ref().and_then(|s| s.org_id.clone()) else {
        return Ok(Offboard {
            done: true,
            events: Vec::new(),
            retry: Retry::Resync,
        });
    };
    if plan::gate(corg) == Some(plan::Gate::Paused) {
        return Ok(Offboard {
            done: false,
            events: vec![warn(
                "Paused",
                format!(
                    "{} is \"true\": org {org_id} is not archived until it is removed",
                    crate::api::PAUSED_ANNOTATION
                ),
            )],
            retry: Retry::Slow,
        });
    }
    match ctx.provider.archive_org(&org_id).await {
        Ok(result) => Ok(Offboard {
            done: true,
            events: vec![OrgEvent {
                warning: false,
                reason: "Archived".to_string(),
                note: format!(
                    "archived org {org_id}: reclaimed {} credits, revoked {} keys",
                    result.reclaimed_credits, result.revoked_api_keys
                ),
                action: "Offboard".to_string(),
            }],
            retry: Retry::Resync,
        }),
        Err(e) if e.is_not_found() => Ok(Offboard {
            done: true,
            events: Vec::new(),
            retry: Retry::Resync,
        }),
        Err(e) => {
            let retry = if e.is_auth() || e.needs_human() {
                Retry::Slow
            } else {
                Retry::Backoff
            };
            Ok(Offboard {
                done: false,
                events: vec![warn(
                    "OffboardFailed",
                    format!(
                        "archiving org {org_id} failed: {} {}",
                        e.code(),
                        e.message()
                    ),
                )],
                retry,
            })
        }
    }
}

#[cfg(test)]
mod plan_tests;
