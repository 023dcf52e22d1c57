//! Reconcile pipeline: gate -> observe -> plan (pure) -> apply -> status, one plan per
//! pass (`pipeline.rs`); offboarding on deletion (`offboard.rs`).

use std::sync::Arc;

use crate::api::{CustomerOrg, CustomerOrgStatus};
use crate::provider::Provider;

pub mod apply;
pub mod claims;
pub mod credit_guard;
pub mod engine;
pub mod guardrails;
pub mod idempotency;
pub mod offboard;
pub mod offboard_guard;
pub mod offboard_window;
pub mod owners;
pub mod parent_webhook;
pub mod pipeline;
pub mod plan;
pub mod secrets;
pub mod status;

pub use offboard::offboard;

/// The Secrets each CustomerOrg controls, as durable markers (a cache in the operator).
pub trait OwnedSecretIndex: Send + Sync {
    fn owned(&self, corg: &CustomerOrg) -> Vec<plan::OwnedSecret>;

    /// Secret `name` as the cache has it, when `corg` controls it (`SecretSeen::Owned`);
    /// None when the cache does not have it so (missing, another's, or no cache). The
    /// observe step trusts it only where it agrees with the status (`pipeline`).
    fn seen(&self, _corg: &CustomerOrg, _name: &str) -> Option<plan::SecretSeen> {
        None
    }
}

/// No cache: nothing is known beyond what the status and the spec name.
pub struct NoOwnedSecrets;

impl OwnedSecretIndex for NoOwnedSecrets {
    fn owned(&self, _: &CustomerOrg) -> Vec<plan::OwnedSecret> {
        Vec::new()
    }
}

/// What a reconcile needs: the cluster and the provider of the object's OrgProvider.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub provider: Arc<dyn Provider>,
    pub provider_name: String,
    /// Durable markers in the cluster: the Secrets each object controls.
    pub owned: Arc<dyn OwnedSecretIndex>,
    /// The leader fence, checked right before every write (provider and Kubernetes).
    pub fence: crate::fence::Fence,
    /// The claims of this object's OrgProvider (`claims.rs`).
    pub claims: claims::Claims,
    /// Read everything this pass (keys, webhooks, ledger), not only what status suggests.
    pub deep: bool,
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
    /// Not before this long (a rate limit window the provider named).
    After(std::time::Duration),
    /// Stalled until a known moment (the offboarding window frees); looked at again then.
    Stalled(std::time::Duration),
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
    /// Held by the offboarding guard: the status to write (Stalled, OffboardingPaused).
    pub paused: Option<CustomerOrgStatus>,
    /// Waiting for the provider's state (an org it cannot suspend yet): the status to write.
    pub waiting: Option<CustomerOrgStatus>,
}

/// Only Kubernetes API failures; provider failures become conditions in the Outcome.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Guard(#[from] offboard_guard::GuardError),
    #[error(transparent)]
    Claim(#[from] claims::ClaimError),
    #[error(transparent)]
    Credits(#[from] credit_guard::CreditGuardError),
}

/// Converges one CustomerOrg.
pub async fn reconcile(ctx: &Context, corg: &CustomerOrg) -> Result<Outcome, ReconcileError> {
    pipeline::run(ctx, corg).await
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
mod plan_model_tests;
#[cfg(test)]
mod plan_tests;
