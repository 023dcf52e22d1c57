//! The ParentWebhook as a resource of the reconcile engine (`super::engine`): a webhook
//! endpoint on the parent organization (the firehose). Observe (endpoint by status id, else
//! by the orgops marker in its metadata; the Secret) -> [`plan::plan`] -> apply, one
//! action at a time -> [`Done`] or [`Failed`], from which [`status::from_outcome`] builds
//! the status the controller (`runtime::parent_webhook_controller`) writes. Deleting the object deletes
//! the endpoints proven its own ([`delete_owned`]).
//!
//! Decisions:
//! - The signing secret is written to its Secret right after create or rotate, before any
//!   other action; a missing Secret (or one holding another endpoint's secret) is repaired
//!   by `rotate-secret` (the old secret keeps working until `previousSecretExpiresAt`).
//! - Adoption: an endpoint whose metadata `orgops.dev/parent-webhook` is `<namespace>/<name>`
//!   is this object's, so a rebuilt cluster adopts it (and rotates its secret into the
//!   Secret, since a signing secret cannot be read back) instead of creating another.

pub mod plan;
pub mod status;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, Resource as _, ResourceExt};

use self::plan::{Action, Desired, Observed, Plan, RotateCause, SecretSeen};
use super::OrgEvent;
use super::engine::{self, Flow, Ran};
use crate::api::ParentWebhook;
use crate::fence::Fence;
use crate::provider::error::ProviderError;
use crate::provider::layers::LayersProvider;
use crate::provider::layers::parent_webhooks::{NewParentEndpoint, ParentEndpoint, SigningSecret};
use crate::provider::owned::OwnedEndpoint;

/// Annotation on the Secret: the endpoint whose signing secret it holds.
pub const ENDPOINT_ID_ANNOTATION: &str = "orgops.dev/endpoint-id";
/// Annotation on the Secret: the `orgops.dev/rotate-secret` value it was written for.
pub const ROTATED_FOR_ANNOTATION: &str = "orgops.dev/rotated-for";
/// Annotation on the Secret: after the rotation that wrote it, until when the previous
/// signing secret keeps working.
pub const PREVIOUS_EXPIRES_ANNOTATION: &str = "orgops.dev/previous-secret-expires-at";
/// Annotation on the Secret: the ParentWebhook it belongs to (`<namespace>/<name>`).
pub const PARENT_WEBHOOK_ANNOTATION: &str = "orgops.dev/parent-webhook";

#[derive(Debug, thiserror::Error)]
pub enum PwhError {
    #[error("{step}: {source}")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("{step}: {source}")]
    Provider {
        step: &'static str,
        #[source]
        source: ProviderError,
    },
    #[error("not the leader any more; no write")]
    NotLeader,
    /// Needs a person; no API call until the spec or the cluster changes.
    #[error("{reason}: {message}")]
    Stall {
        reason: &'static str,
        message: String,
    },
}

pub fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> PwhError {
    move |source| PwhError::Kube { step, source }
}

pub fn api_err(step: &'static str) -> impl FnOnce(ProviderError) -> PwhError {
    move |source| PwhError::Provider { step, source }
}

/// What a successful pass leaves behind.
pub struct Done {
    pub endpoint: ParentEndpoint,
    pub rotated_for: Option<String>,
    pub previous_expires_at: Option<String>,
    pub events: Vec<OrgEvent>,
}

pub struct Failed {
    pub events: Vec<OrgEvent>,
    /// An endpoint found or created before the failure.
    pub endpoint_id: Option<String>,
    pub error: PwhError,
}

/// Reads what is there, plans, applies the plan in order: one pass through the engine.
pub async fn converge(
    pwh: &ParentWebhook,
    provider: &LayersProvider,
    client: &Client,
    fence: &Fence,
) -> Result<Done, Failed> {
    let want = Desired::of(pwh);
    let secrets: Api<Secret> =
        Api::namespaced(client.clone(), &pwh.namespace().unwrap_or_default());
    engine::run(PwhPass {
        pwh,
        provider,
        fence,
        secrets,
        want,
        events: Vec::new(),
        current: None,
        old_observed: None,
        rotated_for: None,
        previous_expires_at: None,
    })
    .await
}

/// One ParentWebhook's pass: what it found and did so far.
struct PwhPass<'a> {
    pwh: &'a ParentWebhook,
    provider: &'a LayersProvider,
    fence: &'a Fence,
    secrets: Api<Secret>,
    want: Desired,
    events: Vec<OrgEvent>,
    /// The endpoint as last seen or written.
    current: Option<ParentEndpoint>,
    /// The Secret of an earlier `secretName`, as read.
    old_observed: Option<Secret>,
    rotated_for: Option<String>,
    previous_expires_at: Option<String>,
}

/// A step that did not happen, with the endpoint known when it failed.
struct Stop {
    endpoint_id: Option<String>,
    error: PwhError,
}

impl PwhPass<'_> {
    fn failed(&mut self, endpoint_id: Option<String>, error: PwhError) -> Failed {
        Failed {
            events: std::mem::take(&mut self.events),
            endpoint_id,
            error,
        }
    }

    fn current_id(&self) -> Option<String> {
        self.current.as_ref().map(|e| e.id.clone())
    }

    fn stop(&self, error: PwhError) -> Stop {
        Stop {
            endpoint_id: self.current_id(),
            error,
        }
    }

    fn event(&mut self, reason: &str, action: &str, note: String) {
        self.events.push(OrgEvent {
            warning: false,
            reason: reason.into(),
            note,
            action: action.into(),
        });
    }

    async fn read_secrets(&mut self) -> Result<SecretSeen, PwhError> {
        let (pwh, want) = (self.pwh, &self.want);
        // Status is derived from fresh reads (the API, the Secret), never from a cached
        // status that may predate this object's last write.
        let s = self
            .secrets
            .get_opt(&want.secret_name)
            .await
            .map_err(kube_err("read the signing Secret"))?;
        let secret = seen_secret(s.as_ref(), pwh);
        self.previous_expires_at = s
            .as_ref()
            .filter(|s| owned_by(s, pwh))
            .and_then(|s| s.annotations().get(PREVIOUS_EXPIRES_ANNOTATION).cloned());
        // The old Secret as read: deleted with its uid and resourceVersion as
        // preconditions, so one replaced or changed since is left alone.
        self.old_observed = match pwh.status.as_ref().and_then(|s| s.secret_name.clone()) {
            Some(old) if old != want.secret_name => self
                .secrets
                .get_opt(&old)
                .await
                .map_err(kube_err("read the old Secret"))?
                .filter(|s| owned_by(s, pwh)),
            _ => None,
        };
        Ok(secret)
    }

    async fn create(
        &mut self,
        new: &NewParentEndpoint,
        key: &crate::provider::IdempotencyKey,
    ) -> Result<(), Stop> {
        let (ep, signing) = self
            .provider
            .create_parent_endpoint(new, key)
            .await
            .map_err(|e| self.stop(api_err("create the endpoint")(e)))?;
        // The secret is shown once: into the Secret before anything else.
        let written = write_secret(&self.secrets, self.pwh, &self.want, &ep.id, &signing).await;
        if let Err(error) = written {
            let endpoint_id = Some(ep.id);
            return Err(Stop { endpoint_id, error });
        }
        self.rotated_for = self.want.rotate_for.clone();
        self.previous_expires_at = None;
        let note = format!(
            "Created parent webhook endpoint {} (scope {}); signing secret in Secret {}",
            ep.id, self.want.scope, self.want.secret_name
        );
        self.event("Created", "Create", note);
        self.current = Some(ep);
        Ok(())
    }

    async fn rotate(
        &mut self,
        ep_id: &str,
        cause: &RotateCause,
        key: &crate::provider::IdempotencyKey,
    ) -> Result<(), Stop> {
        let signing = self
            .provider
            .rotate_parent_endpoint_secret(ep_id, key)
            .await
            .map_err(|e| self.stop(api_err("rotate the signing secret")(e)))?;
        write_secret(&self.secrets, self.pwh, &self.want, ep_id, &signing)
            .await
            .map_err(|e| self.stop(e))?;
        self.rotated_for = self.want.rotate_for.clone();
        self.previous_expires_at = signing.previous_expires_at.clone();
        let why = match cause {
            RotateCause::SecretLost => format!(
                "Secret {} was missing or held another endpoint's secret",
                self.want.secret_name
            ),
            RotateCause::Annotation(v) => format!("orgops.dev/rotate-secret={v}"),
        };
        let note = format!(
            "Rotated the signing secret of endpoint {ep_id} ({why}); the previous secret stays valid until {}",
            signing
                .previous_expires_at
                .as_deref()
                .unwrap_or("the API's grace period ends")
        );
        self.event("SecretRotated", "Rotate", note);
        // The rotation changed the endpoint (updatedAt); read it back for the status.
        if let Some(ep) = self
            .provider
            .get_parent_endpoint(ep_id)
            .await
            .map_err(|e| self.stop(api_err("read the endpoint")(e)))?
        {
            self.current = Some(ep);
        }
        Ok(())
    }
}

impl engine::Resource for PwhPass<'_> {
    type Observed = Observed;
    type Plan = Vec<Action>;
    type Applied = Ran<Stop>;
    type Outcome = Done;
    type Error = Failed;

    /// The controller gates (paused, the provider's type and readiness, deletion) before
    /// it starts a pass.
    async fn gate(&mut self) -> Result<Option<Done>, Failed> {
        Ok(None)
    }

    async fn observe(&mut self) -> Result<Flow<Observed, Done>, Failed> {
        let marker = self.want.marker.clone();
        let (endpoint, adopted) = match find_endpoint(self.pwh, self.provider, &marker).await {
            Ok(found) => found,
            Err(e) => return Err(self.failed(None, e)),
        };
        let secret = match self.read_secrets().await {
            Ok(secret) => secret,
            Err(e) => return Err(self.failed(None, e)),
        };
        self.rotated_for = match &secret {
            SecretSeen::Owned { rotated_for, .. } => rotated_for.clone(),
            _ => None,
        };
        let ours_already = matches!(&secret, SecretSeen::Owned { endpoint_id: Some(id), .. }
            if endpoint.as_ref().is_some_and(|e| e.id == *id));
        if let Some(ep) = &endpoint
            && adopted
            && !ours_already
        {
            let note = format!(
                "Adopted parent webhook endpoint {} (metadata orgops.dev/parent-webhook={marker})",
                ep.id
            );
            self.event("Adopted", "Adopt", note);
        }
        self.current = endpoint.clone();
        Ok(Flow::Go(Observed {
            endpoint,
            secret,
            old_secret: self.old_observed.as_ref().map(|s| s.name_any()),
            status_rotated_for: self
                .pwh
                .status
                .as_ref()
                .and_then(|s| s.secret_rotated_for.clone()),
        }))
    }

    async fn plan(&mut self, observed: Observed) -> Result<Flow<Vec<Action>, Done>, Failed> {
        match plan::plan(&self.want, &observed) {
            Plan::Stall { reason, message } => {
                let id = self.current_id();
                Err(self.failed(id, PwhError::Stall { reason, message }))
            }
            Plan::Act(actions) => Ok(Flow::Go(actions)),
        }
    }

    async fn apply(&mut self, actions: &Vec<Action>) -> Ran<Stop> {
        let fence = self.fence;
        engine::apply_all(self, actions, fence).await
    }

    async fn finish(mut self, _: Vec<Action>, applied: Ran<Stop>) -> Result<Done, Failed> {
        if let Some((_, stop)) = applied.stopped {
            return Err(self.failed(stop.endpoint_id, stop.error));
        }
        match self.current.take() {
            Some(endpoint) => Ok(Done {
                endpoint,
                rotated_for: self.rotated_for,
                previous_expires_at: self.previous_expires_at,
                events: self.events,
            }),
            None => {
                let error = api_err("create the endpoint")(ProviderError::Invalid(
                    "no endpoint after the plan ran".into(),
                ));
                Err(self.failed(None, error))
            }
        }
    }
}

impl engine::Steps for PwhPass<'_> {
    type Action = Action;
    type Failure = Stop;

    /// Every action writes (the provider, or a Secret).
    fn is_write(_: &Action) -> bool {
        true
    }

    /// None: the endpoint's delete, which takes the proof (`OwnedEndpoint`), is not a step
    /// of a plan but of the deletion ([`delete_owned`]); the old Secret goes with its uid
    /// and resourceVersion as preconditions.
    fn is_destructive(_: &Action) -> bool {
        false
    }

    fn not_leader(&self) -> Stop {
        self.stop(PwhError::NotLeader)
    }

    async fn prove(&mut self, _: &Action) -> Result<(), Stop> {
        Ok(())
    }

    async fn step(&mut self, action: &Action) -> Result<(), Stop> {
        let id = self.current_id();
        match action {
            Action::Create { new, key } => self.create(new, key).await,
            Action::Rotate { cause, key } => match id {
                Some(ep_id) => self.rotate(&ep_id, cause, key).await,
                None => Ok(()),
            },
            Action::Patch(patch) => {
                let Some(ep_id) = id else { return Ok(()) };
                let ep = self
                    .provider
                    .update_parent_endpoint(&ep_id, patch)
                    .await
                    .map_err(|e| self.stop(api_err("update the endpoint")(e)))?;
                self.current = Some(ep);
                let note = format!(
                    "Set {} of endpoint {ep_id} back to the spec",
                    patch.fields().join(", ")
                );
                self.event("DriftCorrected", "Update", note);
                Ok(())
            }
            Action::DeleteOldSecret(name) => {
                let Some(old) = self.old_observed.as_ref().filter(|o| o.name_any() == *name) else {
                    return Ok(());
                };
                super::secrets::delete_observed(&self.secrets, old)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.stop(kube_err("delete the old Secret")(e)))
            }
        }
    }
}

/// The endpoint by status id, else by marker (adopted = found by marker only).
async fn find_endpoint(
    pwh: &ParentWebhook,
    provider: &LayersProvider,
    marker: &str,
) -> Result<(Option<ParentEndpoint>, bool), PwhError> {
    if let Some(id) = pwh.status.as_ref().and_then(|s| s.endpoint_id.as_deref())
        && let Some(ep) = provider
            .get_parent_endpoint(id)
            .await
            .map_err(api_err("read the endpoint"))?
        && ep
            .metadata
            .get(crate::api::PARENT_WEBHOOK_MARKER)
            .is_none_or(|m| m == marker)
    {
        return Ok((Some(ep), false));
    }
    let all = provider
        .list_parent_endpoints()
        .await
        .map_err(api_err("list the parent's endpoints"))?;
    Ok((
        plan::marked(&all, marker).first().map(|e| (*e).clone()),
        true,
    ))
}

/// What a deletion did: the endpoints deleted, and the one the status names that carries
/// no marker of this object's (left in place).
pub struct Deleted {
    pub ids: Vec<String>,
    pub unproven: Option<String>,
}

/// Deletes every endpoint a fresh listing shows carrying this object's marker (the proof
/// `delete_parent_endpoint` takes). An endpoint the status names but that carries no such
/// marker is not this object's to delete: it is left in place and reported.
pub async fn delete_owned(
    pwh: &ParentWebhook,
    provider: &LayersProvider,
    fence: &Fence,
) -> Result<Deleted, PwhError> {
    let marker = pwh.marker();
    let all = provider
        .list_parent_endpoints()
        .await
        .map_err(api_err("list the parent's endpoints"))?;
    let owned = OwnedEndpoint::from_listing(&all, crate::api::PARENT_WEBHOOK_MARKER, &marker);
    let unproven = pwh
        .status
        .as_ref()
        .and_then(|s| s.endpoint_id.clone())
        .filter(|id| all.iter().any(|e| &e.id == id) && !owned.iter().any(|o| o.id() == id));
    for endpoint in &owned {
        if !fence.is_open() {
            return Err(PwhError::NotLeader);
        }
        provider
            .delete_parent_endpoint(endpoint)
            .await
            .map_err(api_err("delete the endpoint"))?;
    }
    let ids = owned.iter().map(|o| o.id().to_string()).collect();
    Ok(Deleted { ids, unproven })
}

pub fn owned_by(secret: &Secret, pwh: &ParentWebhook) -> bool {
    let uid = pwh.meta().uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

pub fn seen_secret(secret: Option<&Secret>, pwh: &ParentWebhook) -> SecretSeen {
    match secret {
        None => SecretSeen::Missing,
        Some(s) if !owned_by(s, pwh) => SecretSeen::Foreign,
        Some(s) => {
            let has_value = s
                .data
                .as_ref()
                .and_then(|d| d.get("signingSecret"))
                .is_some_and(|v| !v.0.is_empty());
            let a = s.annotations();
            SecretSeen::Owned {
                // An emptied Secret counts as lost.
                endpoint_id: a.get(ENDPOINT_ID_ANNOTATION).filter(|_| has_value).cloned(),
                rotated_for: a.get(ROTATED_FOR_ANNOTATION).cloned(),
            }
        }
    }
}

/// Creates or replaces the Secret (server-side apply); never one another owner controls.
async fn write_secret(
    api: &Api<Secret>,
    pwh: &ParentWebhook,
    want: &Desired,
    endpoint_id: &str,
    signing: &SigningSecret,
) -> Result<(), PwhError> {
    let name = &want.secret_name;
    if let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(kube_err("read the signing Secret"))?
        && !owned_by(&existing, pwh)
    {
        return Err(PwhError::Stall {
            reason: "SecretConflict",
            message: format!(
                "Secret {name:?} exists and is not owned by this ParentWebhook; delete it or set spec.secretName"
            ),
        });
    }
    let mut annotations = BTreeMap::from([
        (ENDPOINT_ID_ANNOTATION.to_string(), endpoint_id.to_string()),
        (PARENT_WEBHOOK_ANNOTATION.to_string(), want.marker.clone()),
    ]);
    if let Some(v) = &want.rotate_for {
        annotations.insert(ROTATED_FOR_ANNOTATION.to_string(), v.clone());
    }
    if let Some(at) = &signing.previous_expires_at {
        annotations.insert(PREVIOUS_EXPIRES_ANNOTATION.to_string(), at.clone());
    }
    let data = BTreeMap::from([
        (
            "signingSecret".to_string(),
            ByteString(signing.secret.expose().as_bytes().to_vec()),
        ),
        (
            "endpointId".to_string(),
            ByteString(endpoint_id.as_bytes().to_vec()),
        ),
    ]);
    super::secrets::apply_owned(api, pwh, name, annotations, data)
        .await
        .map_err(kube_err("write the signing Secret"))?;
    Ok(())
}
