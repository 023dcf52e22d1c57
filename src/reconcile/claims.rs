//! Claims: before a CustomerOrg creates or adopts an org it claims, in the cluster, the
//! identity it is about to take: provider + org id, provider + `externalId`, provider +
//! Gennia workspace name. A claim is a coordination.k8s.io `Lease` in the operator's own
//! namespace (where the leader Lease lives), named after a hash of the identity, whose
//! `holderIdentity` is the owner `namespace/name/uid`. The API server decides a race: two
//! creates of one name, one gets 409. A claim never expires by time: its owner's deletion
//! releases it (the finalizer's last step), and a claim whose owner no longer exists (or
//! lets go: deleted with `deletionPolicy: Orphan`) is taken over with a compare-and-swap
//! on its resourceVersion. Identities are per OrgProvider, which is cluster-scoped, so
//! claims are too: one namespace holds them all, whatever namespace the owner is in.
//! Why a Lease and not an `orgops.dev` kind: docs/architecture.md, "Claims".

use std::collections::BTreeMap;

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use sha2::{Digest, Sha256};

use crate::api::CustomerOrg;
use crate::provider::owned::{ClaimRecords, Owner};

use super::owners;
use super::plan::OwnerMarker;

/// Label on every claim.
pub const CLAIM_LABEL: &str = "orgops.dev/claim";
/// Label naming the owner's uid, so its claims are found (and released) by one list.
pub const OWNER_UID_LABEL: &str = "orgops.dev/claim-owner-uid";
/// Annotations saying what is claimed, for humans and for [`held`].
pub const PROVIDER_ANNOTATION: &str = "orgops.dev/provider";
pub const KIND_ANNOTATION: &str = "orgops.dev/claim-kind";
pub const VALUE_ANNOTATION: &str = "orgops.dev/claim-value";

/// What is claimed, within one OrgProvider.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Identity {
    OrgId(String),
    ExternalId(String),
    /// A Gennia workspace name (unique per hub, and what identifies the workspace).
    Name(String),
}

impl Identity {
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::OrgId(_) => "orgId",
            Identity::ExternalId(_) => "externalId",
            Identity::Name(_) => "name",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Identity::OrgId(v) | Identity::ExternalId(v) | Identity::Name(v) => v,
        }
    }

    fn parse(kind: &str, value: &str) -> Option<Identity> {
        let v = value.to_string();
        match kind {
            "orgId" => Some(Identity::OrgId(v)),
            "externalId" => Some(Identity::ExternalId(v)),
            "name" => Some(Identity::Name(v)),
            _ => None,
        }
    }

    /// `externalId "acme"`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Identity::OrgId(v) => format!("org {v}"),
            Identity::ExternalId(v) => format!("externalId {v:?}"),
            Identity::Name(v) => format!("workspace name {v:?}"),
        }
    }
}

/// The claim's Lease name: the identity hashed (values may hold any character; names are
/// DNS labels), prefixed so `kubectl get leases` tells claims apart.
pub fn lease_name(provider: &str, identity: &Identity) -> String {
    let mut h = Sha256::new();
    for part in [provider, identity.kind(), identity.value()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("orgops-claim-{}", &hex::encode(h.finalize())[..40])
}

/// The owner of `corg`, as claims and proofs name it.
pub fn owner(corg: &CustomerOrg) -> Owner {
    Owner {
        namespace: corg.namespace().unwrap_or_default(),
        name: corg.name_any(),
        uid: corg.uid().unwrap_or_default(),
    }
}

/// The outcome of claiming an identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// Held by this object (created now, held already, or taken over from an owner gone).
    Ours,
    /// Held by another live object (`namespace/name`), or by one this replica cannot read.
    Taken(String),
}

#[derive(Debug, thiserror::Error)]
#[error("claims: {0}")]
pub struct ClaimError(#[from] kube::Error);

/// The claims of one OrgProvider, in the namespace that holds them.
#[derive(Clone)]
pub struct Claims {
    client: Client,
    api: Api<Lease>,
    provider: String,
}

impl Claims {
    pub fn new(client: Client, namespace: &str, provider: &str) -> Claims {
        Claims {
            api: Api::namespaced(client.clone(), namespace),
            client,
            provider: provider.to_string(),
        }
    }

    fn lease_for(&self, identity: &Identity, who: &Owner) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(&self.provider, identity)),
                labels: Some(BTreeMap::from([
                    (CLAIM_LABEL.to_string(), "true".to_string()),
                    (OWNER_UID_LABEL.to_string(), who.uid.clone()),
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "orgops".to_string(),
                    ),
                ])),
                annotations: Some(BTreeMap::from([
                    (PROVIDER_ANNOTATION.to_string(), self.provider.clone()),
                    (KIND_ANNOTATION.to_string(), identity.kind().to_string()),
                    (VALUE_ANNOTATION.to_string(), identity.value().to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(who.marker()),
                ..Default::default()
            }),
        }
    }

    /// The claim on `identity` as stored, read fresh.
    async fn read(&self, identity: &Identity) -> Result<Option<Lease>, kube::Error> {
        self.api
            .get_opt(&lease_name(&self.provider, identity))
            .await
    }

    /// Claims `identity` for `corg`: created when nobody holds it, kept when it is ours,
    /// taken over (compare-and-swap) when its owner is gone; else [`Claimed::Taken`].
    /// `likely_new`: try the create first (one request for a new claim, the usual case
    /// before a create or an adoption); else read first (one request to keep a claim).
    pub async fn claim(
        &self,
        corg: &CustomerOrg,
        identity: &Identity,
        likely_new: bool,
    ) -> Result<Claimed, ClaimError> {
        let me = owner(corg);
        for round in 0..3 {
            let read = if likely_new && round == 0 {
                None
            } else {
                self.read(identity).await?
            };
            let existing = match read {
                Some(lease) => lease,
                None => {
                    match self
                        .api
                        .create(&PostParams::default(), &self.lease_for(identity, &me))
                        .await
                    {
                        Ok(_) => return Ok(Claimed::Ours),
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let holder = holder_of(&existing);
            if holder.as_deref() == Some(me.marker().as_str()) {
                return Ok(Claimed::Ours);
            }
            if let Some(other) = self.live_holder(holder.as_deref()).await? {
                return Ok(Claimed::Taken(other));
            }
            // The owner is gone: take it over, on the version read (a merge patch pinned
            // to it: 409 when anyone changed the claim since).
            let taken = serde_json::json!({
                "metadata": {
                    "resourceVersion": existing.metadata.resource_version,
                    "labels": {OWNER_UID_LABEL: me.uid},
                },
                "spec": {"holderIdentity": me.marker()},
            });
            match self
                .api
                .patch(
                    &existing.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&taken),
                )
                .await
            {
                Ok(_) => return Ok(Claimed::Ours),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Three changes under us in a row: another claimant is active; not ours for now.
        Ok(Claimed::Taken(
            "another CustomerOrg (the claim keeps changing)".into(),
        ))
    }

    /// `namespace/name` of the live object named by a claim's holder, if it still claims.
    /// A holder this replica may not read (another namespace, namespaced mode) counts as
    /// live: it cannot be shown gone.
    async fn live_holder(&self, holder: Option<&str>) -> Result<Option<String>, kube::Error> {
        let Some(marker) = holder.and_then(OwnerMarker::parse) else {
            return Ok(None);
        };
        let api: Api<CustomerOrg> = Api::namespaced(self.client.clone(), &marker.namespace);
        match api.get_opt(&marker.name).await {
            Ok(Some(other)) => Ok(owners::claims(&marker, &other).then(|| marker.display())),
            Ok(None) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 403 => Ok(Some(format!(
                "{} (this operator may not read it)",
                marker.display()
            ))),
            Err(e) => Err(e),
        }
    }

    /// Another live object (`namespace/name`) holding the claim on `identity`; `None` when
    /// nobody does, `corg` does, or its holder is gone.
    pub async fn taken_by(
        &self,
        corg: &CustomerOrg,
        identity: &Identity,
    ) -> Result<Option<String>, kube::Error> {
        let holder = self.read(identity).await?.and_then(|l| holder_of(&l));
        if holder.as_deref() == Some(owner(corg).marker().as_str()) {
            return Ok(None);
        }
        self.live_holder(holder.as_deref()).await
    }

    /// Who holds the claim on `identity`: the holder's uid, read fresh.
    pub async fn holder_uid(&self, identity: &Identity) -> Result<Option<String>, kube::Error> {
        Ok(self
            .read(identity)
            .await?
            .and_then(|l| holder_of(&l))
            .and_then(|h| OwnerMarker::parse(&h).and_then(|m| m.uid)))
    }

    /// The identities `corg` holds claims on, with this provider (one list by label).
    pub async fn held(&self, corg: &CustomerOrg) -> Result<Vec<Identity>, kube::Error> {
        let me = owner(corg).marker();
        Ok(self
            .mine(corg)
            .await?
            .iter()
            .filter(|l| holder_of(l).as_deref() == Some(me.as_str()))
            .filter(|l| l.annotations().get(PROVIDER_ANNOTATION) == Some(&self.provider))
            .filter_map(|l| {
                let a = l.annotations();
                Identity::parse(a.get(KIND_ANNOTATION)?, a.get(VALUE_ANNOTATION)?)
            })
            .collect())
    }

    async fn mine(&self, corg: &CustomerOrg) -> Result<Vec<Lease>, kube::Error> {
        let uid = corg.uid().unwrap_or_default();
        if uid.is_empty() {
            return Ok(Vec::new());
        }
        let labels = format!("{CLAIM_LABEL}=true,{OWNER_UID_LABEL}={uid}");
        Ok(self
            .api
            .list(&ListParams::default().labels(&labels))
            .await?
            .items)
    }

    /// Deletes every claim `corg` holds (the finalizer's last step). Each delete carries
    /// the claim's uid and resourceVersion as preconditions: a claim taken over since the
    /// list is never deleted.
    pub async fn release_all(&self, corg: &CustomerOrg) -> Result<usize, kube::Error> {
        let me = owner(corg).marker();
        let mut released = 0;
        for lease in self.mine(corg).await? {
            if holder_of(&lease).as_deref() != Some(me.as_str()) {
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: lease.metadata.uid.clone(),
                    resource_version: lease.metadata.resource_version.clone(),
                }),
                ..Default::default()
            };
            match self.api.delete(&lease.name_any(), &params).await {
                Ok(_) => released += 1,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }
}

/// The identities a pass holds before it acts on what its plan found or makes: the
/// `externalId` (and a Gennia workspace name) it is about to create under; the org id (and
/// `externalId`) of an org it adopts; and, where orgs carry no metadata, the name of the
/// org it manages on every pass (the claim is then its only proof of ownership, so an
/// object from before claims gets one on its next pass).
pub fn needed(
    corg: &CustomerOrg,
    plan: &super::plan::Plan,
    caps: &crate::provider::Capabilities,
) -> Vec<Identity> {
    let mut out = Vec::new();
    let ext = corg
        .spec
        .external_id
        .as_ref()
        .filter(|_| caps.find_by_external_id);
    if super::plan::creates_org(plan) {
        out.extend(ext.map(|e| Identity::ExternalId(e.clone())));
        if caps.find_by_name {
            out.push(Identity::Name(corg.spec.display_name.clone()));
        }
        return out;
    }
    let Some(org) = &plan.org else {
        return out;
    };
    if !caps.org_metadata {
        out.push(Identity::Name(org.name.clone()));
    } else if plan
        .adopted
        .as_ref()
        .is_some_and(|(reason, _)| reason == "Adopted")
    {
        out.push(Identity::OrgId(org.id.clone()));
        out.extend(ext.map(|e| Identity::ExternalId(e.clone())));
    }
    out
}

fn holder_of(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// Proofs by claim (`provider::owned::prove`) read the claim on the org's name here.
#[async_trait]
impl ClaimRecords for Claims {
    async fn name_claimed_by(&self, org_name: &str) -> Result<Option<String>, String> {
        self.holder_uid(&Identity::Name(org_name.to_string()))
            .await
            .map_err(|e| e.to_string())
    }
}

/// Where `orgops run` keeps claims unless told otherwise: its Lease namespace
/// (`$POD_NAMESPACE`, else `orgops-system`), for the one-shot commands that read them.
pub fn default_namespace() -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "orgops-system".to_string())
}

/// Read-only, for `orgops import` (#33) and anyone else asking: whether org `org` of
/// OrgProvider `provider` is owned by a live CustomerOrg, by its owner marker
/// (`orgops.dev/owner`) or by a claim. Returns the owner as `namespace/name`, or `None`.
/// An owner that no longer exists, or is being deleted with `deletionPolicy: Orphan`,
/// owns nothing; one this client may not read counts as owning. `claims_namespace` is the
/// operator's Lease namespace ([`default_namespace`]).
pub async fn owned_by(
    client: &Client,
    claims_namespace: &str,
    provider: &str,
    org: &crate::provider::Org,
) -> Result<Option<String>, kube::Error> {
    let claims = Claims::new(client.clone(), claims_namespace, provider);
    let marker = org.metadata.get(super::plan::OWNER_KEY).map(String::as_str);
    if let Some(owner) = claims.live_holder(marker).await? {
        return Ok(Some(owner));
    }
    claims.claimed(org).await
}

impl Claims {
    /// The live object (`namespace/name`) holding a claim on `org`'s id, `externalId` or
    /// name, read fresh; `None` when nobody (alive) does.
    pub async fn claimed(&self, org: &crate::provider::Org) -> Result<Option<String>, kube::Error> {
        let mut identities = vec![
            Identity::OrgId(org.id.clone()),
            Identity::Name(org.name.clone()),
        ];
        if let Some(ext) = org.metadata.get(super::plan::EXTERNAL_ID_KEY) {
            identities.push(Identity::ExternalId(ext.clone()));
        }
        for identity in &identities {
            let holder = self.read(identity).await?.and_then(|l| holder_of(&l));
            if let Some(owner) = self.live_holder(holder.as_deref()).await? {
                return Ok(Some(owner));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_names_are_dns_labels_and_differ_per_provider_and_kind() {
        let a = lease_name("p1", &Identity::ExternalId("acme/é €".into()));
        assert!(a.starts_with("orgops-claim-") && a.len() == 53, "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(
            a,
            lease_name("p1", &Identity::ExternalId("acme/é €".into()))
        );
        assert_ne!(
            a,
            lease_name("p2", &Identity::ExternalId("acme/é €".into()))
        );
        assert_ne!(a, lease_name("p1", &Identity::Name("acme/é €".into())));
        assert_ne!(
            lease_name("p", &Identity::OrgId("ab".into())),
            lease_name("pa", &Identity::OrgId("b".into())),
            "parts are separated"
        );
    }

    fn corg(external_id: Option<&str>) -> CustomerOrg {
        let mut spec = serde_json::json!({"displayName": "Acme", "providerRef": {"name": "p"}});
        if let Some(e) = external_id {
            spec["externalId"] = e.into();
        }
        let mut c = CustomerOrg::new("a", serde_json::from_value(spec).expect("spec"));
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("u1".into());
        c
    }

    fn org(id: &str, name: &str) -> crate::provider::Org {
        crate::provider::Org {
            id: id.into(),
            name: name.into(),
            status: crate::provider::OrgStatus::Active,
            metadata: Default::default(),
            billing_email: None,
            summary: None,
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        }
    }

    #[test]
    fn a_pass_claims_what_it_creates_under_or_adopts_and_gennia_what_it_manages() {
        use super::super::plan::{Action, Plan};
        let layers = crate::provider::layers::CAPABILITIES;
        let gennia = crate::provider::gennia::CAPABILITIES;
        let create = Plan {
            actions: vec![Action::CreateOrg {
                new: crate::provider::NewOrg {
                    name: "Acme".into(),
                    metadata: Default::default(),
                    billing_email: None,
                    extras: Default::default(),
                },
                key: crate::reconcile::idempotency::derive(&["k"]),
            }],
            ..Default::default()
        };
        assert_eq!(
            needed(&corg(Some("x")), &create, &layers),
            vec![Identity::ExternalId("x".into())]
        );
        assert!(
            needed(&corg(None), &create, &layers).is_empty(),
            "the uid keys it"
        );
        assert_eq!(
            needed(&corg(None), &create, &gennia),
            vec![Identity::Name("Acme".into())]
        );
        let adopt = Plan {
            org: Some(org("org_1", "Acme")),
            adopted: Some(("Adopted".into(), "by externalId".into())),
            ..Default::default()
        };
        assert_eq!(
            needed(&corg(Some("x")), &adopt, &layers),
            vec![
                Identity::OrgId("org_1".into()),
                Identity::ExternalId("x".into())
            ]
        );
        let tracked = Plan {
            org: Some(org("org_1", "Acme Old")),
            ..Default::default()
        };
        assert!(
            needed(&corg(Some("x")), &tracked, &layers).is_empty(),
            "its marker proves it"
        );
        assert_eq!(
            needed(&corg(None), &tracked, &gennia),
            vec![Identity::Name("Acme Old".into())],
            "the name the workspace has, whatever the spec says now"
        );
    }

    #[test]
    fn identities_round_trip_through_their_annotations() {
        for id in [
            Identity::OrgId("org_1".into()),
            Identity::ExternalId("x".into()),
            Identity::Name("Acme".into()),
        ] {
            assert_eq!(Identity::parse(id.kind(), id.value()), Some(id.clone()));
        }
        assert_eq!(Identity::parse("other", "x"), None);
    }
}
