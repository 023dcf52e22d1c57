//! Executes a plan's actions in order, stopping at the first failure. Each success updates
//! the working status so bookkeeping survives a later failure in the same pass.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::Api;

use crate::api::{ApiKeyStatus, CreditsStatus, CustomerOrg, CustomerOrgStatus, WebhookStatus};
use crate::provider::error::ProviderError;
use crate::provider::{MintedKey, Org, OrgPatch, Provider, Secret};

use super::OrgEvent;
use super::plan::{ALLOCATION_MARKER, Action, Plan};
use super::secrets::{
    self, KEY_ID_ANNOTATION, KEY_NAME_ANNOTATION, Known, Payload, SecretError,
    WEBHOOK_ID_ANNOTATION, WEBHOOK_NAME_ANNOTATION,
};
use super::status::org_state;

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
    /// This replica no longer holds the leader Lease: no write may start.
    #[error("not the leader any more; writes stopped")]
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

/// Whether this replica may start a write now (it holds the leader Lease).
pub type MayWrite = dyn Fn() -> bool + Send + Sync;

pub async fn apply(
    provider: &dyn Provider,
    secret_api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    plan: &Plan,
    status: &mut CustomerOrgStatus,
    may_write: &MayWrite,
) -> Applied {
    let mut out = Applied {
        writes: 0,
        events: Vec::new(),
        failure: None,
        failed: None,
        created: None,
    };
    for action in &plan.actions {
        if action.is_write() && !may_write() {
            out.failure = Some(StepError::NotLeader);
            out.failed = Some(action.clone());
            return out;
        }
        let mut done = Done {
            events: &mut out.events,
            created: &mut out.created,
        };
        match step(provider, secret_api, corg, action, status, &mut done).await {
            Ok(()) => {
                if action.is_write() {
                    out.writes += 1;
                }
            }
            Err(e) => {
                out.failure = Some(match e {
                    StepError::Provider { error, .. } => StepError::Provider {
                        step: describe(action),
                        error,
                    },
                    other => other,
                });
                out.failed = Some(action.clone());
                return out;
            }
        }
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

/// What an org PATCH asked for that the returned org does not show.
fn unapplied_org_patch(patch: &OrgPatch, org: &Org) -> Vec<String> {
    let mut missing = Vec::new();
    if let Some(name) = &patch.name
        && &org.name != name
    {
        missing.push("name".to_string());
    }
    for (k, v) in patch.metadata.iter().flatten() {
        let now = org.metadata.get(k);
        let applied = if v.is_empty() {
            now.is_none()
        } else {
            now == Some(v)
        };
        if !applied {
            missing.push(format!("metadata.{k}"));
        }
    }
    if let Some(email) = &patch.billing_email
        && &org.billing_email != email
    {
        missing.push("billingEmail".to_string());
    }
    missing
}

fn org_id(status: &CustomerOrgStatus) -> Result<&str, StepError> {
    status
        .org_id
        .as_deref()
        .ok_or_else(|| StepError::from(ProviderError::Invalid("no org id yet".into())))
}

fn upsert_key(status: &mut CustomerOrgStatus, entry: ApiKeyStatus) {
    status.api_keys.retain(|k| k.name != entry.name);
    status.api_keys.push(entry);
    status.api_keys.sort_by(|a, b| a.name.cmp(&b.name));
}

fn upsert_hook(status: &mut CustomerOrgStatus, entry: WebhookStatus) {
    status.webhooks.retain(|w| w.name != entry.name);
    status.webhooks.push(entry);
    status.webhooks.sort_by(|a, b| a.name.cmp(&b.name));
}

fn record_key(
    status: &mut CustomerOrgStatus,
    name: &str,
    secret_name: &str,
    spec_hash: &str,
    minted: &MintedKey,
) {
    upsert_key(
        status,
        ApiKeyStatus {
            name: name.to_string(),
            id: minted.key.id.clone(),
            prefix: minted.key.prefix.clone(),
            secret_name: secret_name.to_string(),
            spec_hash: spec_hash.to_string(),
        },
    );
}

fn record_hook(
    status: &mut CustomerOrgStatus,
    name: &str,
    id: &str,
    secret_name: &str,
    spec_hash: &str,
) {
    upsert_hook(
        status,
        WebhookStatus {
            name: name.to_string(),
            id: id.to_string(),
            secret_name: secret_name.to_string(),
            spec_hash: spec_hash.to_string(),
        },
    );
}

/// Revoking or deleting what is already gone is what was asked (and what a retry after a
/// lost response sees).
fn already_gone_is_done(result: Result<(), ProviderError>) -> Result<(), ProviderError> {
    match result {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

async fn write_hook_secret(
    secret_api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    (secret_name, known): (&str, Known<'_>),
    org_id: &str,
    (entry, hook_id): (&str, &str),
    secret: &Secret,
) -> Result<(), StepError> {
    let payload = Payload {
        id_annotation: WEBHOOK_ID_ANNOTATION,
        id: hook_id,
        name_annotation: WEBHOOK_NAME_ANNOTATION,
        entry,
        org_id,
        plain: BTreeMap::from([("endpointId", hook_id.to_string())]),
        secret_key: "signingSecret",
        secret,
        rotated_for: None,
    };
    Ok(secrets::write(secret_api, corg, secret_name, payload, known).await?)
}

async fn write_key_secret(
    secret_api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    secret_name: &str,
    (org_id, entry): (&str, &str),
    minted: &MintedKey,
    rotated_for: Option<&str>,
    claimed: Option<&str>,
) -> Result<(), StepError> {
    let payload = || Payload {
        id_annotation: KEY_ID_ANNOTATION,
        id: &minted.key.id,
        name_annotation: KEY_NAME_ANNOTATION,
        entry,
        org_id,
        plain: BTreeMap::from([
            ("keyId", minted.key.id.clone()),
            ("orgId", org_id.to_string()),
        ]),
        secret_key: "apiKey",
        secret: &minted.secret,
        rotated_for,
    };
    // One immediate retry: the secret is shown once, so losing it costs a replay.
    // The retry reads the Secret first: a claim changed since (409) is checked again.
    let known = claimed.map_or(Known::Unknown, Known::Claimed);
    match secrets::write(secret_api, corg, secret_name, payload(), known).await {
        Ok(()) => Ok(()),
        Err(SecretError::Kube(first)) => {
            tracing::warn!(secret = secret_name, error = %first, "writing key Secret failed; retrying once");
            Ok(secrets::write(secret_api, corg, secret_name, payload(), Known::Unknown).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Where a step reports what it did besides the status.
struct Done<'a> {
    events: &'a mut Vec<OrgEvent>,
    created: &'a mut Option<Org>,
}

async fn step(
    provider: &dyn Provider,
    secret_api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    action: &Action,
    status: &mut CustomerOrgStatus,
    done: &mut Done<'_>,
) -> Result<(), StepError> {
    let events = &mut *done.events;
    match action {
        Action::CreateOrg { new, key } => {
            let org = provider.create_org(new, key).await?;
            // What the answer says (Gennia's starting balance, for one): a pass that is
            // Ready on its answers shows it without a second read.
            super::status::record_org(status, &org, None);
            events.push(event(
                "Created",
                "Create",
                format!("created org {}", org.id),
            ));
            *done.created = Some(org);
        }
        Action::MigrateProjects {
            projects,
            name,
            key,
        } => {
            let migrated = provider.migrate_projects(projects, name, key).await?;
            let missing: Vec<&String> = projects
                .iter()
                .filter(|p| !migrated.project_ids.contains(p))
                .collect();
            if !missing.is_empty() {
                return Err(no_effect(
                    "migrate projects",
                    format!(
                        "the new org {} does not hold {} of the projects",
                        migrated.org.id,
                        missing.len()
                    ),
                ));
            }
            let org = migrated.org;
            status.org_id = Some(org.id.clone());
            status.state = Some(org_state(org.status).to_string());
            status.projects = migrated.project_ids;
            events.push(event(
                "Created",
                "Create",
                format!(
                    "created org {} by migrating {} project(s)",
                    org.id,
                    status.projects.len()
                ),
            ));
            *done.created = Some(org);
        }
        Action::UpdateOrg { patch } => {
            let org = provider.update_org(org_id(status)?, patch).await?;
            let missing = unapplied_org_patch(patch, &org);
            if !missing.is_empty() {
                return Err(no_effect(
                    "update org",
                    format!("the response still differs in {}", missing.join(", ")),
                ));
            }
        }
        Action::Resume => {
            let org = provider.resume_org(org_id(status)?).await?;
            status.state = Some(org_state(org.status).to_string());
            events.push(event(
                "Resumed",
                "Resume",
                format!("resumed org {}", org.id),
            ));
        }
        Action::UpdateUser {
            email,
            user_id,
            name,
            role,
        } => {
            let org = provider
                .update_user(org_id(status)?, user_id, name.as_deref(), role)
                .await?;
            let applied = org
                .users
                .iter()
                .any(|u| u.id.as_deref() == Some(user_id) && &u.role == role);
            if !applied {
                return Err(no_effect(
                    "update user",
                    format!("user {email} does not show role {role} afterwards"),
                ));
            }
            events.push(event(
                "UserUpdated",
                "Update",
                format!("user {email}: role {role}"),
            ));
        }
        Action::RemoveUser { email, user_id } => {
            let org = provider.remove_user(org_id(status)?, user_id).await?;
            if org.users.iter().any(|u| u.id.as_deref() == Some(user_id)) {
                return Err(no_effect(
                    "remove user",
                    format!("user {email} is still listed afterwards"),
                ));
            }
            events.push(event(
                "UserRemoved",
                "Update",
                format!("removed user {email} (not in spec.gennia.users)"),
            ));
        }
        Action::Suspend => {
            let org = provider
                .suspend_org_with(
                    org_id(status)?,
                    &crate::reconcile::plan::suspend_reason(corg, false),
                )
                .await?;
            status.state = Some(org_state(org.status).to_string());
            events.push(event(
                "Suspended",
                "Suspend",
                format!("suspended org {}", org.id),
            ));
        }
        Action::Archive => {
            let id = org_id(status)?.to_string();
            let result = provider.archive_org(&id).await?;
            status.state = Some("archived".to_string());
            events.push(event(
                "Archived",
                "Archive",
                format!(
                    "archived org {id}: reclaimed {} credits, revoked {} keys",
                    result.reclaimed_credits, result.revoked_api_keys
                ),
            ));
        }
        Action::SetCreditConfig { config } => {
            let got = provider.set_credit_config(org_id(status)?, config).await?;
            if &got != config {
                return Err(no_effect(
                    "set credit config",
                    format!("asked for {config:?}, the response says {got:?}"),
                ));
            }
        }
        Action::Allocate {
            credits,
            target,
            key,
            ..
        } => {
            let metadata = BTreeMap::from([(ALLOCATION_MARKER.to_string(), "true".to_string())]);
            let transfer = provider
                .allocate_credits(org_id(status)?, *credits, &metadata, key)
                .await?;
            status.credits = Some(CreditsStatus {
                allocated: *target,
                balance: transfer.balance,
                available: transfer.available,
                refused: None,
            });
            events.push(event(
                "CreditsAllocated",
                "Allocate",
                format!(
                    "moved {} credits ({}), {target} allocated in total",
                    transfer.credits, transfer.id
                ),
            ));
        }
        Action::MintKey {
            name,
            new,
            secret_name,
            spec_hash,
            rotation,
            claim,
            key,
        } => {
            let id = org_id(status)?.to_string();
            let claimed = if *claim {
                secrets::claim(secret_api, corg, secret_name, name, &id).await?
            } else {
                None
            };
            let minted = provider.mint_key(&id, new, key).await?;
            // The secret goes to its Secret before anything else happens.
            write_key_secret(
                secret_api,
                corg,
                secret_name,
                (&id, name),
                &minted,
                rotation.as_deref(),
                claimed.as_deref(),
            )
            .await?;
            record_key(status, name, secret_name, spec_hash, &minted);
            events.push(event(
                "KeyMinted",
                "Mint",
                format!(
                    "minted key {name} ({}) into Secret {secret_name}",
                    minted.key.id
                ),
            ));
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
            let id = org_id(status)?.to_string();
            let minted = provider.rotate_key(&id, key_id, key).await?;
            write_key_secret(
                secret_api,
                corg,
                secret_name,
                (&id, name),
                &minted,
                rotation.as_deref(),
                None,
            )
            .await?;
            record_key(status, name, secret_name, spec_hash, &minted);
            let note = if *recover {
                format!(
                    "Secret {secret_name} was lost: rotated key {name} {key_id} -> {} into it; the old secret keeps working for the provider's grace period",
                    minted.key.id
                )
            } else {
                format!("rotated key {name}: {key_id} -> {}", minted.key.id)
            };
            events.push(event("KeyRotated", "Rotate", note));
        }
        Action::RevokeKey { name, key_id } => {
            already_gone_is_done(provider.revoke_key(org_id(status)?, key_id).await)?;
            if !corg.spec.api_keys.iter().any(|k| &k.name == name) {
                status.api_keys.retain(|k| &k.name != name);
            }
            events.push(event(
                "KeyRevoked",
                "Revoke",
                format!("revoked key {name} ({key_id})"),
            ));
        }
        Action::CreateWebhook {
            name,
            new,
            secret_name,
            absent,
            spec_hash,
            key,
        } => {
            let id = org_id(status)?.to_string();
            let created = provider.create_webhook(&id, new, key).await?;
            let hook_id = &created.endpoint.id;
            let secret = &created.signing_secret;
            let known = if *absent {
                Known::Missing
            } else {
                Known::Unknown
            };
            write_hook_secret(
                secret_api,
                corg,
                (secret_name, known),
                &id,
                (name, hook_id),
                secret,
            )
            .await?;
            record_hook(status, name, hook_id, secret_name, spec_hash);
            events.push(event(
                "WebhookCreated",
                "Create",
                format!("created webhook {name} ({})", created.endpoint.id),
            ));
        }
        Action::UpdateWebhook { name, id, patch } => {
            let hook = provider.update_webhook(org_id(status)?, id, patch).await?;
            let url_ok = patch.url.as_ref().is_none_or(|u| *u == hook.url);
            let events_ok = patch.events.as_ref().is_none_or(|e| {
                let mut got = hook.events.clone();
                got.sort();
                got.dedup();
                *e == got
            });
            if !(url_ok && events_ok) {
                return Err(no_effect(
                    "update webhook",
                    format!("webhook {name} ({id}) still differs in url or events"),
                ));
            }
            events.push(event(
                "WebhookUpdated",
                "Update",
                format!("updated webhook {name} ({id})"),
            ));
        }
        Action::DeleteWebhook { name, id } => {
            already_gone_is_done(provider.delete_webhook(org_id(status)?, id).await)?;
            if !corg.spec.webhooks.iter().any(|w| &w.name == name) {
                status.webhooks.retain(|w| &w.name != name);
            }
            events.push(event(
                "WebhookDeleted",
                "Delete",
                format!("deleted webhook {name} ({id})"),
            ));
        }
        Action::RotateWebhookSecret {
            name,
            id,
            secret_name,
            spec_hash,
            key,
        } => {
            let org = org_id(status)?.to_string();
            let secret = provider.rotate_webhook_secret(&org, id, key).await?;
            write_hook_secret(
                secret_api,
                corg,
                (secret_name, Known::Unknown),
                &org,
                (name, id),
                &secret,
            )
            .await?;
            record_hook(status, name, id, secret_name, spec_hash);
        }
        Action::DeleteSecret { name } => {
            secrets::delete_owned(secret_api, corg, name).await?;
        }
        Action::MarkRotated { value } => {
            status.keys_rotated_for = Some(value.clone());
        }
    }
    Ok(())
}
