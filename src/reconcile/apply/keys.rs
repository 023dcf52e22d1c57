//! The key's verbs: mint, rotate, revoke. A minted or rotated secret goes to its Secret
//! before anything else happens (it is shown once).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::Api;

use crate::api::{ApiKeyStatus, CustomerOrg, CustomerOrgStatus};
use crate::provider::{IdempotencyKey, MintedKey, NewApiKey};
use crate::reconcile::secrets::{
    self, KEY_ID_ANNOTATION, KEY_NAME_ANNOTATION, Known, Payload, SecretError,
};

use super::{Entry, Step, StepError, already_gone_is_done};

/// Mints a key for `entry`; `rotation` is the pending rotate-keys value, `claim` writes the
/// Secret empty, naming the key, first; `replaces` are the entry's earlier keys.
pub(super) async fn mint(
    s: &mut Step<'_>,
    entry: Entry<'_>,
    new: &NewApiKey,
    (rotation, claim, replaces): (Option<&str>, bool, &[String]),
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let (name, secret_name) = (entry.name, entry.secret_name);
    let id = s.org_id()?.to_string();
    let claimed = if claim {
        secrets::claim(s.secret_api, s.corg, secret_name, name, &id).await?
    } else {
        None
    };
    let minted = s.provider.mint_key(&id, new, key).await?;
    // The secret goes to its Secret before anything else happens.
    let secret_marks = KeyMarks {
        rotated_for: rotation,
        claimed: claimed.as_deref(),
        replaces,
    };
    keep(s, &entry, &id, &minted, secret_marks).await?;
    let note = format!(
        "minted key {name} ({}) into Secret {secret_name}",
        minted.key.id
    );
    s.event("KeyMinted", "Mint", note);
    Ok(())
}

/// Rotates `key_id`: for a rotate-keys value (`rotation`), or to replace a key whose
/// Secret was lost (`recover`).
pub(super) async fn rotate(
    s: &mut Step<'_>,
    entry: Entry<'_>,
    key_id: &str,
    (rotation, recover): (Option<&str>, bool),
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let (name, secret_name) = (entry.name, entry.secret_name);
    let id = s.org_id()?.to_string();
    let minted = s.provider.rotate_key(&id, key_id, key).await?;
    let marks = KeyMarks {
        rotated_for: rotation,
        claimed: None,
        replaces: &[],
    };
    keep(s, &entry, &id, &minted, marks).await?;
    let note = if recover {
        format!(
            "Secret {secret_name} was lost: rotated key {name} {key_id} -> {} into it; the old secret keeps working for the provider's grace period",
            minted.key.id
        )
    } else {
        format!("rotated key {name}: {key_id} -> {}", minted.key.id)
    };
    s.event("KeyRotated", "Rotate", note);
    Ok(())
}

pub(super) async fn revoke(s: &mut Step<'_>, name: &str, key_id: &str) -> Result<(), StepError> {
    already_gone_is_done(s.provider.revoke_key(s.owned()?, key_id).await)?;
    if !s.corg.spec.api_keys.iter().any(|k| k.name == name) {
        s.status.api_keys.retain(|k| k.name != name);
    }
    s.event(
        "KeyRevoked",
        "Revoke",
        format!("revoked key {name} ({key_id})"),
    );
    Ok(())
}

/// The minted secret to its Secret, then the key to the status.
async fn keep(
    s: &mut Step<'_>,
    entry: &Entry<'_>,
    org_id: &str,
    minted: &MintedKey,
    marks: KeyMarks<'_>,
) -> Result<(), StepError> {
    let at = (org_id, entry.name, entry.secret_name);
    write_key_secret(s.secret_api, s.corg, at, minted, marks).await?;
    record_key(s.status, entry, minted);
    Ok(())
}

fn record_key(status: &mut CustomerOrgStatus, entry: &Entry<'_>, minted: &MintedKey) {
    status.api_keys.retain(|k| k.name != entry.name);
    status.api_keys.push(ApiKeyStatus {
        name: entry.name.to_string(),
        id: minted.key.id.clone(),
        prefix: minted.key.prefix.clone(),
        secret_name: entry.secret_name.to_string(),
        spec_hash: entry.spec_hash.to_string(),
    });
    status.api_keys.sort_by(|a, b| a.name.cmp(&b.name));
}

/// What a key Secret records besides the key: the rotation it answers, the claim it
/// replaces (its resourceVersion), the earlier keys it replaced.
struct KeyMarks<'a> {
    rotated_for: Option<&'a str>,
    claimed: Option<&'a str>,
    replaces: &'a [String],
}

async fn write_key_secret(
    secret_api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    (org_id, entry, secret_name): (&str, &str, &str),
    minted: &MintedKey,
    marks: KeyMarks<'_>,
) -> Result<(), StepError> {
    let KeyMarks {
        rotated_for,
        claimed,
        replaces,
    } = marks;
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
        replaces,
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
