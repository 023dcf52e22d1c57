//! The offboarding guard's I/O: claim a slot in the OrgProvider's window before an
//! offboarding. The window is `OrgProvider.status.offboarding` (durable, so it survives a
//! restart and is shared by replicas); a claim is a merge patch of that list carrying the
//! resourceVersion it was computed from, so two writers never both take the last slot: the
//! loser gets 409, reads again and decides again. Field manager `orgops-offboarding`, so
//! the OrgProvider controller's server-side apply of the rest of the status never owns
//! (and never removes) the list.
//!
//! The OrgProvider is read with a list filtered by name: the operator's role may list and
//! watch OrgProviders but not get them, and a list without a resourceVersion is a
//! consistent read (never the cache of a lagging watch).

use super::offboard_window::{self, Candidate, Decision, Pause};
use crate::api::{CONFIRM_OFFBOARD_ANNOTATION, CustomerOrg, OrgProvider};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Field manager of `OrgProvider.status.offboarding`.
pub const FIELD_MANAGER: &str = "orgops-offboarding";

/// Claims lost to concurrent writers before giving up this pass (each loss means another
/// claim succeeded, so a full window is reached long before this).
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("offboarding guard: reading OrgProvider {provider}: {source}")]
    Read {
        provider: String,
        source: kube::Error,
    },
    #[error("offboarding guard: OrgProvider {provider} does not exist")]
    Missing { provider: String },
    #[error("offboarding guard: CustomerOrg {object} has no uid")]
    NoUid { object: String },
    #[error("offboarding guard: claiming a slot on OrgProvider {provider}: {source}")]
    Claim {
        provider: String,
        source: kube::Error,
    },
    #[error(
        "offboarding guard: OrgProvider {provider} changed under {ATTEMPTS} claims in a row; retrying later"
    )]
    Contended { provider: String },
}

/// The guard's answer for one deleting CustomerOrg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A slot is held (claimed now, or by an earlier pass): offboard.
    Granted {
        /// Let through by the annotation past a full window.
        confirmed: bool,
    },
    /// Wait.
    Paused(Pause),
}

/// Whether `corg` carries the confirmation annotation.
pub fn confirmed(corg: &CustomerOrg) -> bool {
    corg.annotations()
        .get(CONFIRM_OFFBOARD_ANNOTATION)
        .is_some_and(|v| v == "true")
}

/// Reads the window of `provider` and claims a slot for `corg` when the guard allows it.
pub async fn admit(
    client: &Client,
    provider: &str,
    corg: &CustomerOrg,
) -> Result<Admission, GuardError> {
    let object = format!(
        "{}/{}",
        corg.namespace().unwrap_or_default(),
        corg.name_any()
    );
    let candidate = Candidate {
        namespace: corg.namespace().unwrap_or_default(),
        name: corg.name_any(),
        uid: corg.uid().ok_or(GuardError::NoUid { object })?,
        confirmed: confirmed(corg),
    };
    let api: Api<OrgProvider> = Api::all(client.clone());
    for _ in 0..ATTEMPTS {
        let current = read(&api, provider).await?;
        let entries = current
            .status
            .as_ref()
            .map(|s| s.offboarding.as_slice())
            .unwrap_or_default();
        let max = current.spec.offboarding.max_per_hour;
        let now = crate::api::conditions::now().0;
        let entries = match offboard_window::decide(entries, &candidate, max, now) {
            Decision::AlreadyClaimed => return Ok(Admission::Granted { confirmed: false }),
            Decision::Paused(pause) => return Ok(Admission::Paused(pause)),
            Decision::Claim { entries } => entries,
        };
        let confirmed = entries.last().is_some_and(|e| e.confirmed);
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "status": {"offboarding": entries},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        match api
            .patch_status(provider, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(Admission::Granted { confirmed }),
            Err(kube::Error::Api(status)) if status.is_conflict() => continue,
            Err(source) => {
                return Err(GuardError::Claim {
                    provider: provider.to_string(),
                    source,
                });
            }
        }
    }
    Err(GuardError::Contended {
        provider: provider.to_string(),
    })
}

/// The OrgProvider `provider`, read consistently (a list filtered by name; see above).
pub(crate) async fn read(
    api: &Api<OrgProvider>,
    provider: &str,
) -> Result<OrgProvider, GuardError> {
    let list = api
        .list(&ListParams::default().fields(&format!("metadata.name={provider}")))
        .await
        .map_err(|source| GuardError::Read {
            provider: provider.to_string(),
            source,
        })?;
    list.items
        .into_iter()
        .find(|p| p.name_any() == provider)
        .ok_or_else(|| GuardError::Missing {
            provider: provider.to_string(),
        })
}
