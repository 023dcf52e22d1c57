//! `impl Provider for YouhodlerProvider`: an enterprise's clients as orgs. A client's
//! `external_id` is the org's `externalId`, its metadata holds the owner marker; what
//! YouHodler lacks (keys, webhooks, credits, archive, billing email) is declared in
//! [`Capabilities`], so the controller never asks for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{ClientPatch, NewClient, YhClient, YhStatus, YouhodlerClient};
use crate::provider::error::ProviderError;
use crate::provider::org_index::{self, Listing, OrgIndex};
use crate::provider::types::*;
use crate::provider::{Owned, Provider, ProviderResult};

/// What YouHodler can do: metadata (the owner marker), an `external_id` it filters on,
/// renames and metadata edits, suspend and reactivate with a reason. No archive (offboarding
/// suspends), no child keys, webhooks, credits, users or billing email.
pub const CAPABILITIES: Capabilities = Capabilities {
    migrate_projects: false,
    org_metadata: true,
    org_update: true,
    billing_email: false,
    archive: false,
    find_by_name: false,
    users: false,
    find_by_external_id: true,
    credit_config: false,
    allocation_ledger: false,
    child_api_keys: false,
    key_rotation: false,
    webhooks: false,
    suspend: true,
};

/// How long the owner-marker index (one listing of every client) is trusted.
const INDEX_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30);

/// One enterprise behind a service account's client credentials.
pub struct YouhodlerProvider {
    client: Arc<YouhodlerClient>,
    /// Owner marker -> clients: YouHodler filters on `external_id` but not on metadata.
    orgs: OrgIndex,
}

impl YouhodlerProvider {
    pub fn new(client: YouhodlerClient) -> YouhodlerProvider {
        YouhodlerProvider {
            client: Arc::new(client),
            orgs: OrgIndex::new(INDEX_MAX_AGE),
        }
    }

    /// Records a client this provider just wrote, so the index stays current.
    fn seen(&self, client: YhClient) -> Org {
        let org = org_of(client);
        self.orgs.upsert(&org);
        org
    }

    /// Live clients carrying `external_id` (filtered by the API).
    async fn live(&self, external_id: &str) -> ProviderResult<Vec<Org>> {
        Ok(self
            .client
            .list_clients(Some(external_id))
            .await?
            .into_iter()
            .map(org_of)
            .filter(|o| o.status != OrgStatus::Archived)
            .collect())
    }

    /// Every idempotency key of a lifecycle call is fresh: suspend and reactivate are
    /// idempotent by state (the client re-reads before and after), and the key only has to
    /// make a re-send of the same call safe.
    fn lifecycle_key(what: &str, org_id: &str) -> IdempotencyKey {
        IdempotencyKey(format!("{what}-{org_id}-{}", uuid::Uuid::new_v4().simple()))
    }
}

fn not_here(what: &str) -> ProviderError {
    ProviderError::Invalid(format!(
        "YouHodler has no {what}; the capabilities should have prevented this call"
    ))
}

/// A client as an org: `display_name` is its name, `external_id` its `externalId`. A
/// status the docs do not name reads as active, with a note in Ready's message; a closed
/// client is archived (terminal).
pub fn org_of(c: YhClient) -> Org {
    let (status, billing_note) = match c.state() {
        YhStatus::Active => (OrgStatus::Active, None),
        YhStatus::Suspended => (OrgStatus::Suspended, None),
        YhStatus::Closed => (OrgStatus::Archived, Some(format!("client {}", c.status))),
        YhStatus::Unknown(s) => (
            OrgStatus::Active,
            Some(format!("client status {s:?} is not documented")),
        ),
    };
    let mut metadata = c.metadata;
    if let Some(ext) = c.external_id {
        metadata.insert(org_index::EXTERNAL_ID.to_string(), ext);
    }
    Org {
        id: c.id,
        name: c.display_name,
        status,
        metadata,
        billing_email: None,
        summary: None,
        users: Vec::new(),
        billing_note,
        suspend_blocked: None,
    }
}

/// The metadata map a client should have after `patch` (merge semantics, `""` removes)
/// is applied to `current`, without `externalId` (a field of its own at YouHodler).
fn merged_metadata(
    current: &BTreeMap<String, String>,
    patch: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = current
        .iter()
        .filter(|(k, _)| k.as_str() != org_index::EXTERNAL_ID)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in patch {
        if k == org_index::EXTERNAL_ID {
            continue;
        }
        if v.is_empty() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

#[async_trait]
impl Provider for YouhodlerProvider {
    fn vendor(&self) -> &'static str {
        "YouHodler"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    /// A fresh token and the enterprise: the client credentials work and name one.
    async fn whoami(&self) -> ProviderResult<Identity> {
        let (client_id, enterprise_id) = self.client.whoami().await?;
        Ok(Identity {
            organization_id: enterprise_id,
            organization_name: String::new(),
            parent_organization_id: None,
            scopes: Vec::new(),
            rate_limit_tier: "undocumented".into(),
            api_key_id: client_id,
        })
    }

    async fn get_org(&self, org_id: &str) -> ProviderResult<Option<Org>> {
        let org = self.client.get_client(org_id).await?.map(org_of);
        if let Some(org) = &org {
            self.orgs.upsert(org);
        }
        Ok(org)
    }

    /// `GET /clients?external_id=` (unique per enterprise), read fresh.
    async fn find_orgs_by_external_id(&self, external_id: &str) -> ProviderResult<Vec<Org>> {
        self.live(external_id).await
    }

    async fn find_orgs_by_owner(&self, owner: &str) -> ProviderResult<Vec<Org>> {
        self.orgs
            .find(org_index::OWNER, owner, || async {
                let mut listing = Listing::default();
                self.client
                    .each_client(|c| listing.push(&org_of(c)))
                    .await?;
                Ok(listing)
            })
            .await
    }

    async fn find_orgs_by_metadata(&self, key: &str, value: &str) -> ProviderResult<Vec<Org>> {
        let mut found = Vec::new();
        self.client
            .each_client(|c| {
                let org = org_of(c);
                if org.status != OrgStatus::Archived
                    && org.metadata.get(key).is_some_and(|v| v == value)
                {
                    found.push(org);
                }
            })
            .await?;
        Ok(found)
    }

    /// `GET /clients`, every page: the rows are whole clients; closed ones are not live.
    async fn list_orgs(&self) -> ProviderResult<Vec<Org>> {
        let mut orgs = Vec::new();
        self.client
            .each_client(|c| {
                let org = org_of(c);
                if org.status != OrgStatus::Archived {
                    orgs.push(org);
                }
            })
            .await?;
        Ok(orgs)
    }

    /// `Idempotency-Key` makes a re-sent create replay; `external_id` (unique per
    /// enterprise) is a second guard: "taken" is a conflict the controller resolves by
    /// looking the client up, never a second client.
    async fn create_org(&self, new: &NewOrg, key: &IdempotencyKey) -> ProviderResult<Org> {
        let body = NewClient {
            display_name: new.name.clone(),
            external_id: new.metadata.get(org_index::EXTERNAL_ID).cloned(),
            metadata: merged_metadata(&BTreeMap::new(), &new.metadata),
        };
        Ok(self.seen(self.client.create_client(&body, key).await?))
    }

    /// PATCH with `If-Match` (the client re-reads and retries on 412). Metadata is
    /// replaced as a whole at YouHodler, so the merge is computed from each read the PATCH
    /// is sent against (a retry after 412 merges again, from the fresh read);
    /// `external_id` cannot change after creation.
    async fn update_org(&self, org_id: &str, patch: &OrgPatch) -> ProviderResult<Org> {
        if patch.billing_email.is_some() {
            return Err(not_here("billing email"));
        }
        let build = |current: &YhClient| {
            let metadata = match &patch.metadata {
                None => None,
                Some(m) => {
                    if let Some(ext) = m.get(org_index::EXTERNAL_ID)
                        && current.external_id.as_deref() != Some(ext.as_str())
                    {
                        return Err(ProviderError::Invalid(format!(
                            "client {org_id}'s external_id {:?} cannot be changed to {ext:?}: YouHodler fixes it at creation; restore spec.externalId",
                            current.external_id.as_deref().unwrap_or("")
                        )));
                    }
                    Some(merged_metadata(&current.metadata, m))
                }
            };
            Ok(ClientPatch {
                display_name: patch.name.clone(),
                metadata,
            })
        };
        Ok(self.seen(self.client.patch_client_from(org_id, build).await?))
    }

    async fn suspend_org(&self, org: &Owned) -> ProviderResult<Org> {
        self.suspend_org_with(org, &SuspendReason::default()).await
    }

    /// `POST …/suspend` answers 201; "already suspended" is success after a re-read.
    async fn suspend_org_with(&self, org: &Owned, why: &SuspendReason) -> ProviderResult<Org> {
        let org_id = org.org_id();
        let key = Self::lifecycle_key("suspend", org_id);
        let client = self
            .client
            .suspend_client(org_id, why.reason.as_deref(), &key)
            .await?;
        Ok(self.seen(client))
    }

    async fn resume_org(&self, org_id: &str) -> ProviderResult<Org> {
        let key = Self::lifecycle_key("reactivate", org_id);
        let client = self.client.reactivate_client(org_id, None, &key).await?;
        Ok(self.seen(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_merge_removes_empty_values_and_keeps_external_id_out() {
        let current = m(&[("a", "1"), ("b", "2"), ("externalId", "x")]);
        let patch = m(&[("a", ""), ("c", "3"), ("externalId", "x")]);
        assert_eq!(
            merged_metadata(&current, &patch),
            m(&[("b", "2"), ("c", "3")])
        );
    }
}
