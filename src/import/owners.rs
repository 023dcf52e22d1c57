//! Which listed orgs already belong to a CustomerOrg, decided the way the operator decides
//! it (`reconcile::owners`), from one listing of the cluster's CustomerOrgs:
//!
//! 1. the org's owner marker (`orgops.dev/owner: ns/name/uid`) names a live object with that
//!    uid (not one being deleted with `deletionPolicy: Orphan`, which lets go);
//! 2. a CustomerOrg of this provider tracks it (`status.orgId`) or asks for it
//!    (`spec.adoptOrgId`): the only ownership a provider without metadata (Gennia) records;
//! 3. a CustomerOrg of this provider that has not found its org yet would adopt it by its
//!    identity: `spec.externalId` (Layers, YouHodler), the workspace name (Gennia).
//!
//! 4. a live CustomerOrg holds a claim (issue 27, `reconcile::claims`: a Lease in the
//!    operator's namespace naming provider + org id / externalId / workspace name, created
//!    before a create or an adoption) on the org: it is taking it.

use kube::Client;
use kube::api::{Api, ListParams};

use crate::api::{CustomerOrg, DeletionPolicy};
use crate::provider::{Capabilities, Org};
use crate::reconcile::owners::claims;
use crate::reconcile::plan::{EXTERNAL_ID_KEY, OWNER_KEY, OwnerMarker};

/// How an org was found to be owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum How {
    Marker,
    Tracked,
    AdoptOrgId,
    ExternalId,
    WorkspaceName,
    Claim,
}

impl How {
    pub fn describe(&self) -> &'static str {
        match self {
            How::Marker => "its owner marker names it",
            How::Tracked => "its status.orgId",
            How::AdoptOrgId => "its spec.adoptOrgId",
            How::ExternalId => "its spec.externalId (it adopts the org on its next pass)",
            How::WorkspaceName => {
                "its spec.displayName, the workspace name (it adopts the org on its next pass)"
            }
            How::Claim => "its claim on the org's id, externalId or name (it is taking the org)",
        }
    }
}

/// The CustomerOrg that owns an org, as `namespace/name`, and how that was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    pub by: String,
    pub how: How,
}

/// The cluster's CustomerOrgs, read once.
pub struct Owners {
    provider: String,
    caps: Capabilities,
    all: Vec<CustomerOrg>,
    /// The claims to read (`load`); none in tests built with `new`.
    claims: Option<crate::reconcile::claims::Claims>,
}

fn display(corg: &CustomerOrg) -> String {
    format!(
        "{}/{}",
        corg.metadata.namespace.as_deref().unwrap_or_default(),
        corg.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Being deleted with `Orphan`: it lets its org go.
fn letting_go(corg: &CustomerOrg) -> bool {
    corg.metadata.deletion_timestamp.is_some()
        && corg.spec.deletion_policy == DeletionPolicy::Orphan
}

impl Owners {
    /// Lists every CustomerOrg of the cluster (all namespaces, 500 a page).
    pub async fn load(
        client: &Client,
        provider: &str,
        caps: Capabilities,
    ) -> Result<Owners, kube::Error> {
        let api: Api<CustomerOrg> = Api::all(client.clone());
        let mut all = Vec::new();
        let mut params = ListParams::default().limit(500);
        loop {
            let page = api.list(&params).await?;
            all.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        let mut owners = Owners::new(provider, caps, all);
        owners.claims = Some(crate::reconcile::claims::Claims::new(
            client.clone(),
            &crate::reconcile::claims::default_namespace(),
            provider,
        ));
        Ok(owners)
    }

    pub fn new(provider: &str, caps: Capabilities, all: Vec<CustomerOrg>) -> Owners {
        Owners {
            provider: provider.to_string(),
            caps,
            all,
            claims: None,
        }
    }

    /// Names of the CustomerOrgs in `namespace` (an imported object must not take one).
    pub fn names_in(&self, namespace: &str) -> std::collections::BTreeSet<String> {
        self.all
            .iter()
            .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|c| c.metadata.name.clone())
            .collect()
    }

    /// Who owns `org` already, if anyone.
    pub async fn owner(&self, org: &Org) -> Result<Option<Owned>, kube::Error> {
        let found = self
            .by_marker(org)
            .or_else(|| self.by_reference(org))
            .or_else(|| self.by_identity(org));
        Ok(match found {
            None => self.by_claim(org).await?,
            f => f,
        })
    }

    /// A live object holds a claim on the org (read fresh).
    async fn by_claim(&self, org: &Org) -> Result<Option<Owned>, kube::Error> {
        let Some(claims) = &self.claims else {
            return Ok(None);
        };
        Ok(claims.claimed(org).await?.map(|by| Owned {
            by,
            how: How::Claim,
        }))
    }

    /// The owner marker names a live object with its uid.
    fn by_marker(&self, org: &Org) -> Option<Owned> {
        let marker = OwnerMarker::parse(org.metadata.get(OWNER_KEY)?)?;
        self.all
            .iter()
            .filter(|c| c.metadata.namespace.as_deref() == Some(marker.namespace.as_str()))
            .filter(|c| c.metadata.name.as_deref() == Some(marker.name.as_str()))
            .find(|c| claims(&marker, c))
            .map(|c| Owned {
                by: display(c),
                how: How::Marker,
            })
    }

    /// The CustomerOrgs of this provider that still hold on to their org.
    fn of_provider(&self) -> impl Iterator<Item = &CustomerOrg> {
        self.all
            .iter()
            .filter(|c| c.spec.provider_ref.name == self.provider)
            .filter(|c| !letting_go(c))
    }

    fn by_reference(&self, org: &Org) -> Option<Owned> {
        self.of_provider().find_map(|c| {
            let tracked = c.status.as_ref().and_then(|s| s.org_id.as_deref());
            let how = if tracked == Some(org.id.as_str()) {
                How::Tracked
            } else if c.spec.adopt_org_id.as_deref() == Some(org.id.as_str()) {
                How::AdoptOrgId
            } else {
                return None;
            };
            Some(Owned {
                by: display(c),
                how,
            })
        })
    }

    /// An object that has found no org yet looks its org up by identity.
    fn by_identity(&self, org: &Org) -> Option<Owned> {
        let unbound = |c: &&CustomerOrg| {
            c.status.as_ref().and_then(|s| s.org_id.as_ref()).is_none()
                && c.spec.adopt_org_id.is_none()
        };
        if self.caps.find_by_name {
            let name = org.name.trim().to_lowercase();
            return self
                .of_provider()
                .filter(unbound)
                .find(|c| c.spec.display_name.trim().to_lowercase() == name)
                .map(|c| Owned {
                    by: display(c),
                    how: How::WorkspaceName,
                });
        }
        let ext = org.metadata.get(EXTERNAL_ID_KEY)?;
        if !self.caps.find_by_external_id {
            return None;
        }
        self.of_provider()
            .filter(unbound)
            .find(|c| c.spec.external_id.as_ref() == Some(ext))
            .map(|c| Owned {
                by: display(c),
                how: How::ExternalId,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CustomerOrgSpec, CustomerOrgStatus, ProviderRef};
    use crate::provider::OrgStatus;
    use std::collections::BTreeMap;

    fn corg(ns: &str, name: &str, uid: &str, provider: &str) -> CustomerOrg {
        let spec: CustomerOrgSpec = serde_json::from_value(serde_json::json!({
            "displayName": "Acme",
        }))
        .unwrap();
        let mut c = CustomerOrg::new(name, spec);
        c.metadata.namespace = Some(ns.into());
        c.metadata.uid = Some(uid.into());
        c.spec.provider_ref = ProviderRef {
            name: provider.into(),
        };
        c
    }

    fn org(id: &str, meta: &[(&str, &str)]) -> Org {
        Org {
            id: id.into(),
            name: "Acme".into(),
            status: OrgStatus::Active,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            billing_email: None,
            summary: None,
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        }
    }

    const LAYERS: Capabilities = crate::provider::layers::CAPABILITIES;

    async fn owner(owners: &Owners, org: &Org) -> Option<Owned> {
        owners.owner(org).await.unwrap()
    }

    #[tokio::test]
    async fn a_marker_owns_only_while_its_object_lives_with_that_uid() {
        let live = corg("ns", "acme", "uid-1", "p");
        let owners = Owners::new("p", LAYERS, vec![live.clone()]);
        let mine = org("org_1", &[(OWNER_KEY, "ns/acme/uid-1")]);
        assert_eq!(
            owner(&owners, &mine).await,
            Some(Owned {
                by: "ns/acme".into(),
                how: How::Marker
            })
        );
        // Same name, another uid: a later object, not the owner (its marker is stale).
        let stale = org("org_2", &[(OWNER_KEY, "ns/acme/uid-0")]);
        assert_eq!(owner(&owners, &stale).await, None);
        // The owner is gone altogether.
        let gone = org("org_3", &[(OWNER_KEY, "ns/gone/uid-9")]);
        assert_eq!(owner(&owners, &gone).await, None);
        // Being deleted with Orphan lets go; with Archive it still owns.
        let mut deleting = live.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        deleting.spec.deletion_policy = DeletionPolicy::Orphan;
        let owners = Owners::new("p", LAYERS, vec![deleting.clone()]);
        assert_eq!(owner(&owners, &mine).await, None);
        deleting.spec.deletion_policy = DeletionPolicy::Archive;
        let owners = Owners::new("p", LAYERS, vec![deleting]);
        assert!(owner(&owners, &mine).await.is_some());
    }

    #[tokio::test]
    async fn tracking_adopting_and_identity_own_for_the_same_provider_only() {
        let mut tracked = corg("ns", "t", "u1", "p");
        tracked.status = Some(CustomerOrgStatus {
            org_id: Some("org_1".into()),
            ..Default::default()
        });
        let mut adopting = corg("ns", "a", "u2", "p");
        adopting.spec.adopt_org_id = Some("org_2".into());
        let mut by_ext = corg("ns", "e", "u3", "p");
        by_ext.spec.external_id = Some("cust-3".into());
        let mut other_provider = corg("ns", "o", "u4", "q");
        other_provider.spec.external_id = Some("cust-4".into());
        let owners = Owners::new("p", LAYERS, vec![tracked, adopting, by_ext, other_provider]);
        let how = |o: Option<Owned>| o.map(|o| o.how);
        assert_eq!(
            how(owner(&owners, &org("org_1", &[])).await),
            Some(How::Tracked)
        );
        assert_eq!(
            how(owner(&owners, &org("org_2", &[])).await),
            Some(How::AdoptOrgId)
        );
        assert_eq!(
            how(owner(&owners, &org("org_3", &[(EXTERNAL_ID_KEY, "cust-3")])).await),
            Some(How::ExternalId)
        );
        assert_eq!(
            owner(&owners, &org("org_4", &[(EXTERNAL_ID_KEY, "cust-4")])).await,
            None,
            "a CustomerOrg of another provider never adopts this provider's org"
        );
        assert_eq!(owner(&owners, &org("org_5", &[])).await, None);
    }

    #[tokio::test]
    async fn gennia_workspaces_are_owned_by_name_or_by_id() {
        let caps = crate::provider::gennia::CAPABILITIES;
        let mut named = corg("ns", "n", "u1", "g");
        named.spec.display_name = "  ACME Coffee ".into();
        let mut tracked = corg("ns", "t", "u2", "g");
        tracked.spec.display_name = "Renamed".into();
        tracked.status = Some(CustomerOrgStatus {
            org_id: Some("ws-2".into()),
            ..Default::default()
        });
        let owners = Owners::new("g", caps, vec![named, tracked]);
        let mut ws = org("ws-1", &[]);
        ws.name = "Acme Coffee".into();
        assert_eq!(
            owner(&owners, &ws).await.map(|o| o.how),
            Some(How::WorkspaceName)
        );
        let mut ws2 = org("ws-2", &[]);
        ws2.name = "Other".into();
        assert_eq!(
            owner(&owners, &ws2).await.map(|o| o.how),
            Some(How::Tracked)
        );
        let mut ws3 = org("ws-3", &[]);
        ws3.name = "Renamed".into();
        assert_eq!(
            owner(&owners, &ws3).await,
            None,
            "an object bound to another workspace does not adopt by name"
        );
    }
}
