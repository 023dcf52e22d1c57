//! Who owns an org: the owner marker (`orgops.dev/owner: namespace/name/uid`) read against
//! the cluster. Another object is a claimant while it exists with that uid, unless it is
//! being deleted with `deletionPolicy: Orphan` (it lets go). One being deleted with
//! `Archive` still claims the org: it is about to archive it, so nobody may adopt it.

use kube::api::Api;

use crate::api::{CustomerOrg, DeletionPolicy};
use crate::provider::Org;

use super::plan::{OWNER_KEY, OwnerMarker};

/// Another CustomerOrg that claims `org`, as `namespace/name`, if any.
pub async fn claimed_by(
    client: &kube::Client,
    corg: &CustomerOrg,
    org: &Org,
) -> Result<Option<String>, kube::Error> {
    let Some(marker) = org
        .metadata
        .get(OWNER_KEY)
        .and_then(|v| OwnerMarker::parse(v))
    else {
        return Ok(None);
    };
    if marker.is(corg) {
        return Ok(None);
    }
    let api: Api<CustomerOrg> = Api::namespaced(client.clone(), &marker.namespace);
    let other = api.get_opt(&marker.name).await?;
    Ok(other
        .filter(|o| claims(&marker, o))
        .map(|_| marker.display()))
}

/// Whether `other` (the object named by `marker`) still claims the org.
pub fn claims(marker: &OwnerMarker, other: &CustomerOrg) -> bool {
    let same_object = marker
        .uid
        .as_deref()
        .is_none_or(|uid| other.metadata.uid.as_deref() == Some(uid));
    let letting_go = other.metadata.deletion_timestamp.is_some()
        && other.spec.deletion_policy == DeletionPolicy::Orphan;
    same_object && !letting_go
}
