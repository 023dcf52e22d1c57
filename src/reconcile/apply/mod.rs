//! Executes a plan's actions in order, stopping at the first failure. Each success updates
//! the working status so bookkeeping survives a later failure in the same pass.
//!
//! `step` dispatches each action to one short function per provider verb, grouped by the
//! external resource it acts on: `org` (create, migrate, update, resume, suspend, archive),
//! `credits` (credit config, allocation), `keys`, `webhooks`, `users`. A destructive verb
//! takes the pass's proof of ownership (`Step::owned`), proved once before the first one.
//! The loop (fence, proof, stop at the first failure) is the engine's (`engine::apply_all`),
//! the same for both kinds.

mod credits;
mod keys;
mod org;
mod users;
mod webhooks;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::Api;

use crate::api::{CustomerOrg, CustomerOrgStatus};
use crate::provider::error::ProviderError;
use crate::provider::owned::{self, ClaimRecords, Owned, Owner, Unproven};
use crate::provider::{Org, Provider};

use super::OrgEvent;
use super::engine;
use super::plan::{Action, Plan};
use super::secrets::{self, SecretError};

/// Why applying stopped early; each says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("{step}: {error}")]
    Provider {
        step: String,
        error: Box<ProviderError>,
    },
    /// A write whose response shows that what it asked for did not happen (a replayed
    /// response of an earlier request, or a provider that ignored a field).
    #[error("{step}: the provider answered but nothing changed: {detail}")]
    NoEffect { step: String, detail: String },
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0} exists and is not owned by this CustomerOrg")]
    SecretConflict(String),
    /// The pass could not prove the org is this object's: nothing destructive is sent.
    #[error("{step}: not done: {source}")]
    Unproven { step: String, source: Box<Unproven> },
    /// This replica's leader fence is closed: no write may start.
    #[error("not the leader any more (leader fence closed); writes stopped")]
    NotLeader,
}

impl From<ProviderError> for StepError {
    fn from(error: ProviderError) -> Self {
        StepError::Provider {
            step: String::new(),
            error: Box::new(error),
        }
    }
}

impl From<SecretError> for StepError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::Foreign(name) => StepError::SecretConflict(name),
            SecretError::Kube(e) => StepError::Kube(e),
        }
    }
}

pub struct Applied {
    pub writes: usize,
    pub events: Vec<OrgEvent>,
    pub failure: Option<StepError>,
    /// The action that failed.
    pub failed: Option<Action>,
    /// The org a `CreateOrg` action returned.
    pub created: Option<Org>,
}

fn event(reason: &str, action: &str, note: String) -> OrgEvent {
    OrgEvent {
        warning: false,
        reason: reason.to_string(),
        note,
        action: action.to_string(),
    }
}

/// How a pass proves that the org is this object's before a destructive step: a fresh
/// read of the org (its owner marker), or of the claim on its name (`owned::prove`).
pub struct Prover<'a> {
    pub provider: &'a dyn Provider,
    pub claims: &'a dyn ClaimRecords,
    pub owner: Owner,
}

impl Prover<'_> {
    pub async fn prove(&self, org_id: &str) -> Result<Owned, Unproven> {
        owned::prove(self.provider, Some(self.claims), org_id, &self.owner).await
    }
}

pub async fn apply(
    prover: &Prover<'_>,
    secret_api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    plan: &Plan,
    status: &mut CustomerOrgStatus,
    fence: &crate::fence::Fence,
) -> Applied {
    let mut applier = Applier {
        prover,
        secret_api,
        corg,
        status,
        events: Vec::new(),
        created: None,
        proof: None,
    };
    let ran = engine::apply_all(&mut applier, &plan.actions, fence).await;
    let mut out = Applied {
        writes: ran.writes,
        events: applier.events,
        failure: None,
        failed: None,
        created: applier.created,
    };
    if let Some((i, failure)) = ran.stopped {
        out.failure = Some(failure);
        out.failed = plan.actions.get(i).cloned();
        return out;
    }
    if !plan.drift.is_empty() && out.writes > 0 {
        out.events.push(event(
            "DriftCorrected",
            "Correct",
            format!("restored out-of-band changes to: {}", plan.drift.join(", ")),
        ));
    }
    out
}

/// A CustomerOrg's actions for the engine's loop: the pass's provider and Secrets, the
/// working status each success updates, what it reports, and the pass's proof of ownership
/// (proved once, before the first destructive step, by a read made for it).
struct Applier<'a, 'p> {
    prover: &'a Prover<'p>,
    secret_api: &'a Api<KubeSecret>,
    corg: &'a CustomerOrg,
    status: &'a mut CustomerOrgStatus,
    events: Vec<OrgEvent>,
    created: Option<Org>,
    proof: Option<Owned>,
}

impl engine::Steps for Applier<'_, '_> {
    type Action = Action;
    type Failure = StepError;

    fn is_write(action: &Action) -> bool {
        action.is_write()
    }

    fn is_destructive(action: &Action) -> bool {
        action.is_destructive()
    }

    /// Each step's provider requests are checked again in the client, attempt by attempt;
    /// this keeps a closed fence from starting the step's Secret writes.
    fn not_leader(&self) -> StepError {
        StepError::NotLeader
    }

    async fn prove(&mut self, action: &Action) -> Result<(), StepError> {
        let proved = self.prover.prove(org_id(self.status)?).await;
        self.proof = Some(proved.map_err(|source| StepError::Unproven {
            step: describe(action),
            source: Box::new(source),
        })?);
        Ok(())
    }

    async fn step(&mut self, action: &Action) -> Result<(), StepError> {
        let mut s = Step {
            provider: self.prover.provider,
            secret_api: self.secret_api,
            corg: self.corg,
            status: &mut *self.status,
            events: &mut self.events,
            created: &mut self.created,
            proof: self.proof.as_ref(),
        };
        step(&mut s, action).await.map_err(|e| named(e, action))
    }
}

/// A provider error, named by the step that met it.
fn named(e: StepError, action: &Action) -> StepError {
    match e {
        StepError::Provider { error, .. } => StepError::Provider {
            step: describe(action),
            error,
        },
        other => other,
    }
}

/// The step, for error messages: what was being done, never a secret.
pub fn describe(action: &Action) -> String {
    match action {
        Action::CreateOrg { .. } => "create org".into(),
        Action::MigrateProjects { projects, .. } => {
            format!("migrate {} project(s) into a new org", projects.len())
        }
        Action::UpdateOrg { .. } => "update org".into(),
        Action::Resume => "resume org".into(),
        Action::Suspend => "suspend org".into(),
        Action::Archive => "archive org".into(),
        Action::SetCreditConfig { .. } => "set credit config".into(),
        Action::Allocate { credits, .. } => format!("allocate {credits} credits"),
        Action::MintKey { name, new, .. } => {
            format!("mint key {name} (scopes {})", new.scopes.join(", "))
        }
        Action::RotateKey { name, .. } => format!("rotate key {name}"),
        Action::RevokeKey { name, key_id } => format!("revoke key {name} ({key_id})"),
        Action::CreateWebhook { name, .. } => format!("create webhook {name}"),
        Action::UpdateWebhook { name, .. } => format!("update webhook {name}"),
        Action::DeleteWebhook { name, .. } => format!("delete webhook {name}"),
        Action::RotateWebhookSecret { name, .. } => format!("rotate webhook {name} secret"),
        Action::DeleteSecret { name } => format!("delete Secret {name}"),
        Action::UpdateUser { email, role, .. } => format!("set user {email}'s role {role}"),
        Action::RemoveUser { email, .. } => format!("remove user {email}"),
        Action::MarkRotated { .. } => "record rotation".into(),
    }
}

fn no_effect(what: &str, detail: String) -> StepError {
    StepError::NoEffect {
        step: what.to_string(),
        detail,
    }
}

/// Revoking or deleting what is already gone is what was asked (and what a retry after a
/// lost response sees).
fn already_gone_is_done(result: Result<(), ProviderError>) -> Result<(), ProviderError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

fn org_id(status: &CustomerOrgStatus) -> Result<&str, StepError> {
    status
        .org_id
        .as_deref()
        .ok_or_else(|| StepError::from(ProviderError::Invalid("no org id yet".into())))
}

/// A spec entry's key or webhook: its name, its Secret, the hash of the spec it was made
/// for (what the status records).
struct Entry<'a> {
    name: &'a str,
    secret_name: &'a str,
    spec_hash: &'a str,
}

impl<'a> Entry<'a> {
    fn of(name: &'a str, secret_name: &'a str, spec_hash: &'a str) -> Self {
        Entry {
            name,
            secret_name,
            spec_hash,
        }
    }
}

/// One action's surroundings: the pass's provider and Secrets, the object, the working
/// status it updates, where it reports what it did, and the pass's proof of ownership
/// (present before every destructive step).
struct Step<'a> {
    provider: &'a dyn Provider,
    secret_api: &'a Api<KubeSecret>,
    corg: &'a CustomerOrg,
    status: &'a mut CustomerOrgStatus,
    events: &'a mut Vec<OrgEvent>,
    created: &'a mut Option<Org>,
    proof: Option<&'a Owned>,
}

impl<'a> Step<'a> {
    /// The org every step after the first acts on.
    fn org_id(&self) -> Result<&str, StepError> {
        org_id(self.status)
    }

    /// The proof a destructive verb takes.
    fn owned(&self) -> Result<&'a Owned, StepError> {
        self.proof.ok_or_else(|| {
            StepError::from(ProviderError::Invalid(
                "a destructive step without a proof of ownership".into(),
            ))
        })
    }

    fn event(&mut self, reason: &str, action: &str, note: String) {
        self.events.push(event(reason, action, note));
    }
}

/// One action to the verb that carries it out.
async fn step(s: &mut Step<'_>, action: &Action) -> Result<(), StepError> {
    match action {
        Action::CreateOrg { new, key } => org::create(s, new, key).await,
        Action::MigrateProjects {
            projects,
            name,
            key,
        } => org::migrate(s, projects, name, key).await,
        Action::UpdateOrg { patch } => org::update(s, patch).await,
        Action::Resume => org::resume(s).await,
        Action::Suspend => org::suspend(s).await,
        Action::Archive => org::archive(s).await,
        Action::SetCreditConfig { config } => credits::set_config(s, config).await,
        Action::Allocate {
            credits,
            ledger,
            target,
            key,
        } => credits::allocate(s, *credits, (*ledger, *target), key).await,
        Action::MintKey { .. }
        | Action::RotateKey { .. }
        | Action::CreateWebhook { .. }
        | Action::RotateWebhookSecret { .. } => one_time_secret_step(s, action).await,
        Action::RevokeKey { name, key_id } => keys::revoke(s, name, key_id).await,
        Action::UpdateWebhook { name, id, patch } => webhooks::update(s, name, id, patch).await,
        Action::DeleteWebhook { name, id } => webhooks::delete(s, name, id).await,
        Action::UpdateUser {
            email,
            user_id,
            name,
            role,
        } => users::update(s, email, user_id, name.as_deref(), role).await,
        Action::RemoveUser { email, user_id } => users::remove(s, email, user_id).await,
        Action::DeleteSecret { name } => {
            Ok(secrets::delete_owned(s.secret_api, s.corg, name).await?)
        }
        Action::MarkRotated { value } => {
            s.status.keys_rotated_for = Some(value.clone());
            Ok(())
        }
    }
}

/// The verbs whose answer is a one-time secret (a key, a webhook's signing secret), which
/// goes to its Secret before anything else happens.
async fn one_time_secret_step(s: &mut Step<'_>, action: &Action) -> Result<(), StepError> {
    match action {
        Action::MintKey {
            name,
            new,
            secret_name,
            spec_hash,
            rotation,
            claim,
            replaces,
            key,
        } => {
            let entry = Entry::of(name, secret_name, spec_hash);
            keys::mint(s, entry, new, (rotation.as_deref(), *claim, replaces), key).await
        }
        Action::RotateKey {
            name,
            key_id,
            secret_name,
            spec_hash,
            rotation,
            recover,
            key,
        } => {
            keys::rotate(
                s,
                Entry::of(name, secret_name, spec_hash),
                key_id,
                (rotation.as_deref(), *recover),
                key,
            )
            .await
        }
        Action::CreateWebhook {
            name,
            new,
            secret_name,
            absent,
            spec_hash,
            key,
        } => {
            webhooks::create(
                s,
                Entry::of(name, secret_name, spec_hash),
                new,
                *absent,
                key,
            )
            .await
        }
        Action::RotateWebhookSecret {
            name,
            id,
            secret_name,
            spec_hash,
            key,
        } => webhooks::rotate_secret(s, Entry::of(name, secret_name, spec_hash), id, key).await,
        other => Err(StepError::from(ProviderError::Invalid(format!(
            "{}: not a step that mints a secret",
            describe(other)
        )))),
    }
}
