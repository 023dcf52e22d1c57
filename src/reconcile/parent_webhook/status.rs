//! A ParentWebhook's status and conditions (kstatus: Ready, Reconciling, Stalled), built
//! from what a pass did ([`Done`] or [`Failed`]), and when to look again.

use super::{Done, Failed, PwhError};
use crate::api::conditions::{self, Cond, READY, RECONCILING, STALLED};
use crate::api::{ParentWebhook, ParentWebhookStatus};
use crate::provider::layers::parent_webhooks::ParentEndpoint;

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Resync,
    /// Look again in a moment (the pass only added the finalizer).
    Soon,
    Backoff,
    Slow,
}

/// The status to write and when to look again; None when the leader fence closed
/// (nothing is written).
pub fn from_outcome(
    pwh: &ParentWebhook,
    outcome: &Result<Done, Failed>,
) -> Option<(ParentWebhookStatus, Next)> {
    match outcome {
        Ok(done) => {
            let mut status = status_with(pwh, ready(pwh, &done.endpoint));
            status.endpoint_id = Some(done.endpoint.id.clone());
            status.secret_name = Some(pwh.secret_name());
            status.secret_rotated_for = done.rotated_for.clone();
            status.previous_secret_expires_at = done.previous_expires_at.clone();
            Some((status, Next::Resync))
        }
        Err(Failed {
            endpoint_id, error, ..
        }) => {
            let (conds, next) = match error {
                PwhError::Provider { step, source } if source.needs_human() => {
                    let reason = if source.is_auth() {
                        "CredentialsRefused"
                    } else {
                        "ApiRejected"
                    };
                    (
                        stalled(pwh, reason, &format!("{step}: {source}")),
                        Next::Slow,
                    )
                }
                PwhError::Stall { reason, message } => (stalled(pwh, reason, message), Next::Slow),
                PwhError::Provider { .. } | PwhError::Kube { .. } => (
                    reconciling(pwh, "Retrying", &error.to_string()),
                    Next::Backoff,
                ),
                PwhError::NotLeader => return None,
            };
            let mut status = status_with(pwh, conds);
            if endpoint_id.is_some() {
                status.endpoint_id = endpoint_id.clone();
            }
            Some((status, next))
        }
    }
}

fn generation(pwh: &ParentWebhook) -> Option<i64> {
    pwh.metadata.generation
}

fn ready(pwh: &ParentWebhook, ep: &ParentEndpoint) -> Vec<Cond> {
    let g = generation(pwh);
    vec![
        Cond::new(
            READY,
            true,
            "Reconciled",
            format!(
                "endpoint {} matches the spec ({}, {})",
                ep.id,
                ep.scope.as_deref().unwrap_or(pwh.spec.scope.api_value()),
                ep.status
            ),
        )
        .generation(g),
        Cond::new(RECONCILING, false, "Reconciled", "").generation(g),
        Cond::new(STALLED, false, "Reconciled", "").generation(g),
    ]
}

pub fn reconciling(pwh: &ParentWebhook, reason: &str, message: &str) -> Vec<Cond> {
    let g = generation(pwh);
    vec![
        Cond::new(READY, false, reason, message).generation(g),
        Cond::new(RECONCILING, true, reason, message).generation(g),
        Cond::new(STALLED, false, reason, "").generation(g),
    ]
}

pub fn stalled(pwh: &ParentWebhook, reason: &str, message: &str) -> Vec<Cond> {
    let g = generation(pwh);
    vec![
        Cond::new(READY, false, reason, message).generation(g),
        Cond::new(RECONCILING, false, reason, "").generation(g),
        Cond::new(STALLED, true, reason, message).generation(g),
    ]
}

/// The current status with these conditions (each lastTransitionTime kept unless its
/// status flipped).
pub fn status_with(pwh: &ParentWebhook, wanted: Vec<Cond>) -> ParentWebhookStatus {
    let mut status = pwh.status.clone().unwrap_or_default();
    status.conditions = conditions::settle(&status.conditions, &wanted, &conditions::now());
    status.observed_generation = generation(pwh);
    status
}
