//! The webhook's verbs: create, update, delete, rotate its signing secret. A signing
//! secret goes to its Secret before anything else happens (it is shown once).

use std::collections::BTreeMap;

use crate::api::{CustomerOrgStatus, WebhookStatus};
use crate::provider::{IdempotencyKey, NewWebhook, Secret, WebhookPatch};
use crate::reconcile::secrets::{
    self, Known, Payload, WEBHOOK_ID_ANNOTATION, WEBHOOK_NAME_ANNOTATION,
};

use super::{Entry, Step, StepError, already_gone_is_done, no_effect};

/// `absent`: the pass observed no Secret of that name, so the write creates it without
/// reading it first.
pub(super) async fn create(
    s: &mut Step<'_>,
    entry: Entry<'_>,
    new: &NewWebhook,
    absent: bool,
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let id = s.org_id()?.to_string();
    let created = s.provider.create_webhook(&id, new, key).await?;
    let hook_id = &created.endpoint.id;
    let known = if absent {
        Known::Missing
    } else {
        Known::Unknown
    };
    write_hook_secret(s, &entry, (&id, hook_id), known, &created.signing_secret).await?;
    record_hook(s.status, &entry, hook_id);
    let note = format!("created webhook {} ({hook_id})", entry.name);
    s.event("WebhookCreated", "Create", note);
    Ok(())
}

pub(super) async fn update(
    s: &mut Step<'_>,
    name: &str,
    id: &str,
    patch: &WebhookPatch,
) -> Result<(), StepError> {
    let hook = s.provider.update_webhook(s.org_id()?, id, patch).await?;
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
    s.event(
        "WebhookUpdated",
        "Update",
        format!("updated webhook {name} ({id})"),
    );
    Ok(())
}

pub(super) async fn delete(s: &mut Step<'_>, name: &str, id: &str) -> Result<(), StepError> {
    already_gone_is_done(s.provider.delete_webhook(s.owned()?, id).await)?;
    if !s.corg.spec.webhooks.iter().any(|w| w.name == name) {
        s.status.webhooks.retain(|w| w.name != name);
    }
    s.event(
        "WebhookDeleted",
        "Delete",
        format!("deleted webhook {name} ({id})"),
    );
    Ok(())
}

pub(super) async fn rotate_secret(
    s: &mut Step<'_>,
    entry: Entry<'_>,
    id: &str,
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let org = s.org_id()?.to_string();
    let secret = s.provider.rotate_webhook_secret(&org, id, key).await?;
    write_hook_secret(s, &entry, (&org, id), Known::Unknown, &secret).await?;
    record_hook(s.status, &entry, id);
    Ok(())
}

fn record_hook(status: &mut CustomerOrgStatus, entry: &Entry<'_>, id: &str) {
    status.webhooks.retain(|w| w.name != entry.name);
    status.webhooks.push(WebhookStatus {
        name: entry.name.to_string(),
        id: id.to_string(),
        secret_name: entry.secret_name.to_string(),
        spec_hash: entry.spec_hash.to_string(),
    });
    status.webhooks.sort_by(|a, b| a.name.cmp(&b.name));
}

async fn write_hook_secret(
    s: &Step<'_>,
    entry: &Entry<'_>,
    (org_id, hook_id): (&str, &str),
    known: Known<'_>,
    secret: &Secret,
) -> Result<(), StepError> {
    let payload = Payload {
        id_annotation: WEBHOOK_ID_ANNOTATION,
        id: hook_id,
        name_annotation: WEBHOOK_NAME_ANNOTATION,
        entry: entry.name,
        org_id,
        plain: BTreeMap::from([("endpointId", hook_id.to_string())]),
        secret_key: "signingSecret",
        secret,
        rotated_for: None,
        replaces: &[],
    };
    Ok(secrets::write(s.secret_api, s.corg, entry.secret_name, payload, known).await?)
}
