//! Webhook endpoints inside the child, identified by endpoint metadata
//! `orgops.dev/webhook: <name>` (durable at the provider): create, update, rotate a lost
//! signing secret, delete duplicates and endpoints whose spec entry is gone.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::CustomerOrg;
use crate::provider::{NewWebhook, WebhookEndpoint, WebhookPatch};
use crate::reconcile::idempotency::derive;

use super::keys::{delete_owned_secrets, kept, usable_secret};
use super::{
    Action, Observed, OwnedRole, Plan, SecretSeen, WEBHOOK_MARKER, sorted, uid, webhook_hash,
    webhook_secret_name,
};

pub(super) fn plan_webhooks(
    corg: &CustomerOrg,
    hooks: &[WebhookEndpoint],
    obs: &Observed,
    drift: bool,
    plan: &mut Plan,
) {
    let default_status = Default::default();
    let status = corg.status.as_ref().unwrap_or(&default_status);
    let uid = uid(corg);
    let generation = corg.metadata.generation.unwrap_or_default().to_string();
    let ours = |name: &str| -> Vec<&WebhookEndpoint> {
        hooks
            .iter()
            .filter(|h| h.metadata.get(WEBHOOK_MARKER).map(String::as_str) == Some(name))
            .collect()
    };
    let mut stale_secrets = Vec::new();
    for spec in &corg.spec.webhooks {
        let secret_name = webhook_secret_name(corg, spec);
        let field = format!("spec.webhooks[{}]", spec.name);
        let Some(seen) = usable_secret(&obs.secrets, &secret_name, &field, plan) else {
            continue;
        };
        let secret_id = match &seen {
            SecretSeen::Owned { id, .. } => id.clone(),
            _ => None,
        };
        let recorded = status.webhooks.iter().find(|s| s.name == spec.name);
        let found = ours(&spec.name);
        let keep = kept(&found, |h| &h.id, &secret_id, recorded.map(|r| &r.id));
        let spec_hash = webhook_hash(corg, spec);
        let events = sorted(&spec.events);
        for extra in found
            .iter()
            .filter(|h| Some(h.id.as_str()) != keep.map(|h| h.id.as_str()))
        {
            plan.actions.push(Action::DeleteWebhook {
                name: spec.name.clone(),
                id: extra.id.clone(),
            });
        }
        if let Some(old) = recorded
            && old.secret_name != secret_name
        {
            stale_secrets.push(old.secret_name.clone());
        }
        let Some(hook) = keep else {
            let metadata = BTreeMap::from([(WEBHOOK_MARKER.to_string(), spec.name.clone())]);
            // The endpoint the Secret still names is part of the key: after an endpoint
            // was deleted out of band, the re-create is a new request, not a replay of
            // the original create (which would return the deleted endpoint).
            plan.actions.push(Action::CreateWebhook {
                name: spec.name.clone(),
                new: NewWebhook {
                    url: spec.url.clone(),
                    events: events.clone(),
                    metadata,
                },
                secret_name,
                absent: seen == SecretSeen::Missing,
                spec_hash,
                key: derive(&[
                    uid,
                    "webhook",
                    &spec.name,
                    &spec.url,
                    &events.join(","),
                    &generation,
                    secret_id.as_deref().unwrap_or_default(),
                ]),
            });
            continue;
        };
        let mut patch = WebhookPatch::default();
        if hook.url != spec.url {
            patch.url = Some(spec.url.clone());
        }
        if sorted(&hook.events) != events {
            patch.events = Some(events.clone());
        }
        if patch != WebhookPatch::default() {
            if drift {
                plan.drift.push(format!("webhook {}", spec.name));
            }
            plan.actions.push(Action::UpdateWebhook {
                name: spec.name.clone(),
                id: hook.id.clone(),
                patch,
            });
        }
        if secret_id.as_deref() != Some(hook.id.as_str()) {
            plan.actions.push(Action::RotateWebhookSecret {
                name: spec.name.clone(),
                id: hook.id.clone(),
                secret_name: secret_name.clone(),
                spec_hash,
                key: derive(&[uid, "webhook-secret", &hook.id]),
            });
        }
    }
    plan_removed(corg, hooks, obs, stale_secrets, plan);
}

/// Endpoints carrying our marker for a name the spec no longer has are deleted (the
/// marker is durable at the provider); then the Secrets no spec entry uses.
fn plan_removed(
    corg: &CustomerOrg,
    hooks: &[WebhookEndpoint],
    obs: &Observed,
    mut stale_secrets: Vec<String>,
    plan: &mut Plan,
) {
    let spec_names: BTreeSet<&str> = corg.spec.webhooks.iter().map(|w| w.name.as_str()).collect();
    for h in hooks {
        let Some(name) = h.metadata.get(WEBHOOK_MARKER) else {
            continue;
        };
        if !spec_names.contains(name.as_str()) {
            plan.actions.push(Action::DeleteWebhook {
                name: name.clone(),
                id: h.id.clone(),
            });
        }
    }
    if let Some(status) = &corg.status {
        stale_secrets.extend(
            status
                .webhooks
                .iter()
                .filter(|s| !spec_names.contains(s.name.as_str()))
                .map(|s| s.secret_name.clone()),
        );
    }
    stale_secrets.extend(
        obs.owned
            .iter()
            .filter(|o| matches!(o.role, OwnedRole::Webhook { .. }))
            .map(|o| o.secret_name.clone()),
    );
    let spec_secrets = super::spec_secret_names(corg);
    stale_secrets.retain(|s| !spec_secrets.contains(s));
    delete_owned_secrets(obs, stale_secrets, plan);
}
