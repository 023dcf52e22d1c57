//! Secrets the operator writes: minted keys and webhook signing secrets.
//! A Secret is only ever written when it is missing or controlled by this CustomerOrg.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::api::{CustomerOrg, FIELD_MANAGER};
use crate::provider::Secret;

use super::plan::{OwnedRole, OwnedSecret, SecretSeen};

pub const KEY_ID_ANNOTATION: &str = "orgops.dev/key-id";
pub const WEBHOOK_ID_ANNOTATION: &str = "orgops.dev/webhook-id";
pub const ORG_ID_ANNOTATION: &str = "orgops.dev/org-id";
/// The spec.apiKeys / spec.webhooks entry a Secret belongs to: with the owner reference,
/// the durable record of what orgops created (removal never depends on the status).
pub const KEY_NAME_ANNOTATION: &str = "orgops.dev/key-name";
pub const WEBHOOK_NAME_ANNOTATION: &str = "orgops.dev/webhook-name";
/// The `orgops.dev/rotate-keys` value the key in this Secret was minted or rotated for.
pub const ROTATED_FOR_ANNOTATION: &str = "orgops.dev/rotated-for";
/// Earlier keys of the entry that the key in this Secret replaced, comma-separated, kept
/// until the Secret is written again: keys carry no metadata at the provider, so this is
/// what makes a replaced key whose revoke failed still provably this object's.
pub const REPLACES_ANNOTATION: &str = "orgops.dev/replaces";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secret {0} exists and is not owned by this CustomerOrg")]
    Foreign(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

fn owned_by<K: Resource>(secret: &K, corg: &CustomerOrg) -> bool {
    let uid = corg.meta().uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// The durable marker a Secret controlled by `corg` carries, from its metadata; `None`
/// for a Secret another owner controls or one without an orgops id annotation.
pub fn owned_marker<K: Resource>(secret: &K, corg: &CustomerOrg) -> Option<OwnedSecret> {
    if !owned_by(secret, corg) {
        return None;
    }
    marker(&secret.name_any(), secret.annotations())
}

/// The marker in a controlled Secret's annotations; `None` without an orgops id annotation.
pub fn marker(
    secret_name: &str,
    a: &std::collections::BTreeMap<String, String>,
) -> Option<OwnedSecret> {
    let role = if let Some(id) = a.get(KEY_ID_ANNOTATION) {
        OwnedRole::Key {
            name: a.get(KEY_NAME_ANNOTATION).cloned(),
            // Empty on a claim written before its mint (see `claim`).
            id: Some(id.clone()).filter(|id| !id.is_empty()),
            replaced: a
                .get(REPLACES_ANNOTATION)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    } else if let Some(id) = a.get(WEBHOOK_ID_ANNOTATION) {
        OwnedRole::Webhook {
            name: a.get(WEBHOOK_NAME_ANNOTATION).cloned(),
            id: Some(id.clone()),
        }
    } else {
        return None;
    };
    Some(OwnedSecret {
        secret_name: secret_name.to_string(),
        role,
    })
}

pub fn api(corg: &CustomerOrg, client: &kube::Client) -> Api<KubeSecret> {
    Api::namespaced(client.clone(), &corg.namespace().unwrap_or_default())
}

/// How the Secret `name` looks from this CustomerOrg's point of view.
pub async fn seen(
    api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    name: &str,
) -> Result<SecretSeen, kube::Error> {
    let Some(secret) = api.get_opt(name).await? else {
        return Ok(SecretSeen::Missing);
    };
    if !owned_by(&secret, corg) {
        return Ok(SecretSeen::Foreign);
    }
    let annotations = secret.annotations();
    Ok(owned_seen(|k| annotations.get(k).map(String::as_str)))
}

/// A Secret this CustomerOrg controls, as a pass sees it, from its annotations (read
/// with `annotation`): its key or webhook id (an empty claim id is none) and rotated-for.
/// Shared by the read (`seen`) and the metadata cache.
pub fn owned_seen<'a>(annotation: impl Fn(&str) -> Option<&'a str>) -> SecretSeen {
    SecretSeen::Owned {
        id: annotation(KEY_ID_ANNOTATION)
            .or_else(|| annotation(WEBHOOK_ID_ANNOTATION))
            .filter(|id| !id.is_empty())
            .map(str::to_string),
        rotated_for: annotation(ROTATED_FOR_ANNOTATION).map(str::to_string),
    }
}

/// What to put in a Secret.
pub struct Payload<'a> {
    pub id_annotation: &'static str,
    pub id: &'a str,
    pub name_annotation: &'static str,
    /// The spec entry's name.
    pub entry: &'a str,
    pub org_id: &'a str,
    /// data key -> value (non-secret values such as ids).
    pub plain: BTreeMap<&'static str, String>,
    pub secret_key: &'static str,
    pub secret: &'a Secret,
    /// Recorded as `orgops.dev/rotated-for` (keys only).
    pub rotated_for: Option<&'a str>,
    /// Recorded as `orgops.dev/replaces` (keys only).
    pub replaces: &'a [String],
}

/// Secret `name` controlled by `owner` (owner reference with `controller: true`, the
/// managed-by label), as orgops writes it.
fn owned_secret<K: Resource<DynamicType = ()>>(
    owner: &K,
    name: &str,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, ByteString>,
) -> KubeSecret {
    let reference = OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: owner.meta().namespace.clone(),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "orgops".to_string(),
            )])),
            annotations: Some(annotations),
            owner_references: Some(vec![reference]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    }
}

/// Server-side applies Secret `name` controlled by `owner`: the one way orgops updates a
/// Secret, for CustomerOrgs and ParentWebhooks alike. Checking that `owner` may write it
/// is the caller's.
pub async fn apply_owned<K: Resource<DynamicType = ()>>(
    api: &Api<KubeSecret>,
    owner: &K,
    name: &str,
    annotations: BTreeMap<String, String>,
    data: BTreeMap<String, ByteString>,
) -> Result<(), kube::Error> {
    let secret = owned_secret(owner, name, annotations, data);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&secret)).await?;
    Ok(())
}

/// What the writing pass knows of the Secret before it writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<'a> {
    /// Nothing: it is read first, to refuse another owner's Secret.
    Unknown,
    /// This pass observed it missing: it is created, which needs no read (a Secret that
    /// appeared since makes the create fail with 409; only then is it read).
    Missing,
    /// The claim this pass just wrote, at this resourceVersion (`claim`): applied with
    /// that version as a precondition, which the API server refuses (409) if anything
    /// changed the Secret since.
    Claimed(&'a str),
}

/// Creates or updates the Secret; refuses when another owner controls it. `known`: what
/// the pass knows of it, which spares the read before the write where it can.
pub async fn write(
    api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    name: &str,
    payload: Payload<'_>,
    known: Known<'_>,
) -> Result<(), SecretError> {
    if known == Known::Unknown
        && let Some(existing) = api.get_opt(name).await?
        && !owned_by(&existing, corg)
    {
        return Err(SecretError::Foreign(name.to_string()));
    }
    let mut data: BTreeMap<String, ByteString> = payload
        .plain
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
        .collect();
    data.insert(
        payload.secret_key.to_string(),
        ByteString(payload.secret.expose().as_bytes().to_vec()),
    );
    let mut annotations = BTreeMap::from([
        (payload.id_annotation.to_string(), payload.id.to_string()),
        (
            payload.name_annotation.to_string(),
            payload.entry.to_string(),
        ),
        (ORG_ID_ANNOTATION.to_string(), payload.org_id.to_string()),
    ]);
    if let Some(value) = payload.rotated_for {
        annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), value.to_string());
    }
    if !payload.replaces.is_empty() {
        annotations.insert(REPLACES_ANNOTATION.to_string(), payload.replaces.join(","));
    }
    let mut secret = owned_secret(corg, name, annotations, data);
    match known {
        Known::Missing => {
            // Appeared since the pass looked and ours (a write this pass cannot know
            // of): applied below, as without knowledge.
            if let Created::New(_) = create_unless_taken(api, corg, name, &secret).await? {
                return Ok(());
            }
        }
        Known::Claimed(version) => secret.metadata.resource_version = Some(version.to_string()),
        Known::Unknown => {}
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&secret)).await?;
    Ok(())
}

/// Claims a missing key Secret before its key is minted: written empty, with the spec
/// entry's name and an empty key id. Keys carry no metadata at the provider, so this is
/// the durable record that a key of that name is this object's, should the mint's answer
/// be lost and the spec drop the entry before the next pass. The mint's answer replaces it.
///
/// A create, so it needs no read first: it fails (409) if the name exists, and only then
/// is the Secret read to tell ours from another's. Every field it sets, the key's write
/// sets again (so server-side apply ownership removes nothing it should keep). Returns the
/// claim's resourceVersion, the precondition of that write (`write`).
pub async fn claim(
    api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    name: &str,
    entry: &str,
    org_id: &str,
) -> Result<Option<String>, SecretError> {
    let annotations = BTreeMap::from([
        (KEY_ID_ANNOTATION.to_string(), String::new()),
        (KEY_NAME_ANNOTATION.to_string(), entry.to_string()),
        (ORG_ID_ANNOTATION.to_string(), org_id.to_string()),
    ]);
    let secret = owned_secret(corg, name, annotations, BTreeMap::new());
    let (Created::New(s) | Created::Ours(s)) =
        create_unless_taken(api, corg, name, &secret).await?;
    Ok(s.metadata.resource_version)
}

/// What `create_unless_taken` found.
enum Created {
    New(KubeSecret),
    /// The name existed, controlled by this CustomerOrg (as read).
    Ours(KubeSecret),
}

/// Creates `secret`, which needs no read first: only when the name exists (409) is it
/// read, to tell ours from another's, which is refused.
async fn create_unless_taken(
    api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    name: &str,
    secret: &KubeSecret,
) -> Result<Created, SecretError> {
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    match api.create(&params, secret).await {
        Ok(created) => Ok(Created::New(created)),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(name).await?;
            if owned_by(&existing, corg) {
                Ok(Created::Ours(existing))
            } else {
                Err(SecretError::Foreign(name.to_string()))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes the Secret when this CustomerOrg controls it; a missing Secret is fine.
pub async fn delete_owned(
    api: &Api<KubeSecret>,
    corg: &CustomerOrg,
    name: &str,
) -> Result<(), kube::Error> {
    if let Some(existing) = api.get_opt(name).await?
        && owned_by(&existing, corg)
    {
        delete_observed(api, &existing).await?;
    }
    Ok(())
}

/// Deletes exactly the Secret `observed` was read as: its uid and resourceVersion are
/// preconditions, so a Secret replaced or changed since the read (by anyone) is left alone
/// (409 or 404: `Ok(false)`).
pub async fn delete_observed(
    api: &Api<KubeSecret>,
    observed: &KubeSecret,
) -> Result<bool, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: observed.metadata.uid.clone(),
            resource_version: observed.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match api.delete(&observed.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
