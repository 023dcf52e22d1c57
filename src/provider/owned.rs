//! Proof of ownership: a destructive provider call (archive, suspend, revoke a key, delete
//! a webhook endpoint, remove a user, delete a parent endpoint) takes one of these values,
//! and the only way to get one is a read made for the purpose: the org read fresh from the
//! provider carrying the owner marker with this object's uid, or, where orgs carry no
//! metadata (Gennia), this object's claim on the org's name read fresh from the cluster.
//! Their fields are private to this module, so the compiler refuses a destructive call
//! that did not prove ownership first. What a status, a cache or a plan says is never a
//! proof (docs/architecture.md, "Ownership").

use async_trait::async_trait;

use super::error::ProviderError;
use super::layers::parent_webhooks::ParentEndpoint;
use super::{Org, Provider};
use crate::reconcile::plan::{OWNER_KEY, OwnerMarker};

/// Who claims ownership: `namespace/name/uid` of the object (the owner marker's value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The owner marker value, `namespace/name/uid`.
    pub fn marker(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.name, self.uid)
    }
}

/// This object owns org `org_id` (proved by a fresh read during this pass).
#[derive(Debug, Clone)]
pub struct Owned {
    org_id: String,
    org_name: String,
    by: Proof,
}

/// How ownership was proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The org's owner marker names this object, uid included.
    Marker,
    /// This object holds the claim on the org's identity (providers without metadata).
    Claim,
}

impl Owned {
    pub fn org_id(&self) -> &str {
        &self.org_id
    }

    pub fn org_name(&self) -> &str {
        &self.org_name
    }

    pub fn by(&self) -> Proof {
        self.by
    }
}

/// Why ownership could not be proved.
#[derive(Debug, thiserror::Error)]
pub enum Unproven {
    /// The org does not exist (any more): nothing to do to it.
    #[error("org {0} does not exist")]
    Gone(String),
    #[error("org {org}: {why}")]
    NotOurs { org: String, why: String },
    /// The read itself failed: try again later.
    #[error("proving ownership of org {org}: {source}")]
    Provider { org: String, source: ProviderError },
    #[error("proving ownership of org {org}: reading the claim: {why}")]
    Claim { org: String, why: String },
}

/// Where claims are read (the cluster, `reconcile::claims`).
#[async_trait]
pub trait ClaimRecords: Send + Sync {
    /// The uid of the object that holds the claim on the org named `org_name`, read fresh;
    /// `None` when nobody holds it.
    async fn name_claimed_by(&self, org_name: &str) -> Result<Option<String>, String>;
}

fn marked_by(org: &Org, owner: &Owner) -> Result<(), String> {
    let Some(value) = org.metadata.get(OWNER_KEY) else {
        return Err("it carries no owner marker".into());
    };
    match OwnerMarker::parse(value) {
        Some(m)
            if m.namespace == owner.namespace
                && m.name == owner.name
                && m.uid.as_deref() == Some(owner.uid.as_str()) =>
        {
            Ok(())
        }
        Some(m) if m.uid.is_none() => Err(format!(
            "its owner marker {value:?} has no uid (written by orgops 0.1), which proves nothing"
        )),
        _ => Err(format!("its owner marker names {value:?}")),
    }
}

/// Reads the org fresh and proves `owner` owns it: by its owner marker where orgs carry
/// metadata, else by the claim `claims` holds on its name.
pub async fn prove(
    provider: &dyn Provider,
    claims: Option<&dyn ClaimRecords>,
    org_id: &str,
    owner: &Owner,
) -> Result<Owned, Unproven> {
    let org = provider
        .get_org(org_id)
        .await
        .map_err(|source| Unproven::Provider {
            org: org_id.to_string(),
            source,
        })?
        .ok_or_else(|| Unproven::Gone(org_id.to_string()))?;
    let not_ours = |why: String| Unproven::NotOurs {
        org: org_id.to_string(),
        why,
    };
    if provider.capabilities().org_metadata {
        marked_by(&org, owner).map_err(not_ours)?;
        return Ok(Owned {
            org_id: org.id,
            org_name: org.name,
            by: Proof::Marker,
        });
    }
    let Some(claims) = claims else {
        return Err(not_ours(
            "its provider keeps no metadata and no claim was read".into(),
        ));
    };
    let holder = claims
        .name_claimed_by(&org.name)
        .await
        .map_err(|why| Unproven::Claim {
            org: org_id.to_string(),
            why,
        })?;
    match holder {
        Some(uid) if uid == owner.uid => Ok(Owned {
            org_id: org.id,
            org_name: org.name,
            by: Proof::Claim,
        }),
        Some(uid) => Err(not_ours(format!(
            "the claim on its name {:?} is held by another object (uid {uid})",
            org.name
        ))),
        None => Err(not_ours(format!(
            "nobody holds the claim on its name {:?}",
            org.name
        ))),
    }
}

/// This object owns parent webhook endpoint `id`: a fresh listing of the parent's
/// endpoints showed it carrying this object's marker.
#[derive(Debug, Clone)]
pub struct OwnedEndpoint {
    id: String,
}

impl OwnedEndpoint {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The endpoints of a fresh listing (`LayersProvider::list_parent_endpoints`) that
    /// carry `marker` under `key`.
    pub fn from_listing(listing: &[ParentEndpoint], key: &str, marker: &str) -> Vec<OwnedEndpoint> {
        listing
            .iter()
            .filter(|e| e.metadata.get(key).is_some_and(|m| m == marker))
            .map(|e| OwnedEndpoint { id: e.id.clone() })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn org(marker: Option<&str>) -> Org {
        Org {
            id: "org_1".into(),
            name: "Acme".into(),
            status: super::super::OrgStatus::Active,
            metadata: marker
                .map(|m| BTreeMap::from([(OWNER_KEY.to_string(), m.to_string())]))
                .unwrap_or_default(),
            billing_email: None,
            summary: None,
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        }
    }

    #[test]
    fn only_this_objects_marker_with_its_uid_proves_ownership() {
        let me = Owner {
            namespace: "ns".into(),
            name: "a".into(),
            uid: "u1".into(),
        };
        assert!(marked_by(&org(Some("ns/a/u1")), &me).is_ok());
        for other in [Some("ns/a/u2"), Some("ns/b/u1"), Some("ns/a"), None] {
            assert!(marked_by(&org(other), &me).is_err(), "{other:?}");
        }
    }
}
