//! Controller for ParentWebhooks: a webhook endpoint on the parent organization (the
//! firehose). Observe (endpoint by status id, else by the orgops marker in its metadata;
//! the Secret) -> [`plan`](super::parent_webhook_plan::plan) -> apply -> status.
//!
//! Decisions:
//! - The signing secret is written to its Secret right after create or rotate, before any
//!   other action; a missing Secret (or one holding another endpoint's secret) is repaired
//!   by `rotate-secret` (the old secret keeps working until `previousSecretExpiresAt`).
//! - Adoption: an endpoint whose metadata `orgops.dev/parent-webhook` is `<namespace>/<name>`
//!   is this object's, so a rebuilt cluster adopts it (and rotates its secret into the
//!   Secret, since a signing secret cannot be read back) instead of creating another.
//! - A refusal that needs a person (422, 403, 409, 401, kill switch) is `Stalled` with the
//!   API's message and is retried only after `--slow-retry` or a spec change.
//! - Deleting the object deletes the endpoint (finalizer `orgops.dev/delete-endpoint`).
use super::events;
use super::metrics::{KubeWrite, Metrics};
use super::parent_webhook_plan::{self as pplan, Action, Desired, Observed, Plan, RotateCause};
use super::registry::{Availability, Registry};
use super::requeue::{self, Backoff};
use crate::api::conditions::{self, Cond, READY, RECONCILING, STALLED};
use crate::api::{
    FIELD_MANAGER, OrgProvider, PARENT_WEBHOOK_FINALIZER, PAUSED_ANNOTATION, ParentWebhook,
    ParentWebhookStatus, ProviderType,
};
use crate::provider::error::ProviderError;
use crate::provider::layers::LayersProvider;
use crate::provider::layers::parent_webhooks::{ParentEndpoint, SigningSecret};
use crate::reconcile::{MayWrite, OrgEvent};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, debug, info_span, warn};

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

fn kube_err(step: &'static str) -> impl FnOnce(kube::Error) -> PwhError {
    move |source| PwhError::Kube { step, source }
}

fn api_err(step: &'static str) -> impl FnOnce(ProviderError) -> PwhError {
    move |source| PwhError::Provider { step, source }
}

pub struct PwhCtx {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub providers: Store<OrgProvider>,
    pub metrics: Metrics,
    pub resync: Duration,
    pub slow_retry: Duration,
    pub backoff: Backoff<ObjectRef<ParentWebhook>>,
    pub may_write: Arc<MayWrite>,
}

/// What makes a change worth a reconcile: spec (generation), annotations (rotate-secret,
/// paused), finalizers and deletion. Our own status writes change none of these, so they
/// trigger no extra pass (an API refusal is retried after `--slow-retry`, not at once).
fn trigger_hash(pwh: &ParentWebhook) -> Option<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    pwh.metadata.generation.hash(&mut h);
    pwh.annotations().hash(&mut h);
    pwh.finalizers().hash(&mut h);
    pwh.metadata.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// One controller for `namespace` (None: all namespaces). Owned Secrets trigger a
/// reconcile, so a deleted signing Secret is restored at once: `owned` is fed by the
/// scope's one metadata-only Secret watch (`owned_secrets::trigger`).
pub fn controller(
    client: Client,
    namespace: Option<&str>,
    owned: impl futures::Stream<Item = Result<super::owned_secrets::Meta, watcher::Error>>
    + Send
    + 'static,
) -> Controller<ParentWebhook> {
    let hooks: Api<ParentWebhook> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let (reader, writer) = reflector::store();
    let changes = watcher(hooks, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger_hash, PredicateConfig::default());
    Controller::for_stream(changes, reader).owns_stream(owned)
}

/// Runs one ParentWebhook controller until `shutdown` resolves.
pub async fn run(
    ctrl: Controller<ParentWebhook>,
    ctx: Arc<PwhCtx>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    ctrl.with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) | Err(controller::Error::ObjectNotFound(_)) => {}
                Err(err) => warn!(error = %err, "ParentWebhook controller"),
            }
        })
        .await;
}

fn error_policy(obj: Arc<ParentWebhook>, err: &PwhError, ctx: Arc<PwhCtx>) -> Requeue {
    warn!(
        object = %format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
        error = %err,
        "ParentWebhook reconcile failed"
    );
    Requeue::requeue(ctx.backoff.failed(ObjectRef::from_obj(obj.as_ref())))
}

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Resync,
    Backoff,
    Slow,
}

/// How long a reconcile waits for the OrgProvider cache's first list.
const PROVIDERS_LISTED: std::time::Duration = std::time::Duration::from_secs(10);

async fn reconcile(pwh: Arc<ParentWebhook>, ctx: Arc<PwhCtx>) -> Result<Requeue, PwhError> {
    let oref = ObjectRef::from_obj(pwh.as_ref());
    let object = format!("{}/{}", pwh.namespace().unwrap_or_default(), pwh.name_any());
    let span = info_span!("reconcile_parent_webhook", object = %object);
    async move {
        // A provider missing from a cache that has not listed yet (right after a start or a
        // leader change) is not missing: "ProviderNotFound" then stalled the object until the
        // slow retry (the Layers chaos suite found it). Wait for the first list, a while at
        // most (a cache that cannot list, e.g. without the RBAC, must not hold the worker).
        // Past that, the pass reports what the cache says, as before.
        let _listed =
            tokio::time::timeout(PROVIDERS_LISTED, ctx.providers.wait_until_ready()).await;
        // orgops_reconciles_total counts CustomerOrgs only (docs/metrics.md).
        let next = reconcile_one(&pwh, &ctx).await?;
        let delay = match next {
            Next::Backoff => ctx.backoff.failed(oref),
            Next::Resync => {
                ctx.backoff.succeeded(&oref);
                requeue::jitter(ctx.resync)
            }
            Next::Slow => {
                ctx.backoff.succeeded(&oref);
                requeue::jitter(ctx.slow_retry.max(ctx.resync))
            }
        };
        Ok(Requeue::requeue(delay))
    }
    .instrument(span)
    .await
}

fn has_finalizer(pwh: &ParentWebhook) -> bool {
    pwh.finalizers()
        .iter()
        .any(|f| f == PARENT_WEBHOOK_FINALIZER)
}

/// Merge patch of the finalizer list pinned to the resourceVersion: a concurrent edit fails
/// with 409 (and is retried) instead of being overwritten.
fn finalizer_patch(pwh: &ParentWebhook, add: bool) -> serde_json::Value {
    let mut list: Vec<String> = pwh
        .finalizers()
        .iter()
        .filter(|f| *f != PARENT_WEBHOOK_FINALIZER)
        .cloned()
        .collect();
    if add {
        list.push(PARENT_WEBHOOK_FINALIZER.to_string());
    }
    json!({"metadata": {"finalizers": list, "resourceVersion": pwh.resource_version()}})
}

async fn patch_finalizer(
    api: &Api<ParentWebhook>,
    pwh: &ParentWebhook,
    add: bool,
    ctx: &PwhCtx,
) -> Result<(), PwhError> {
    api.patch(
        &pwh.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&finalizer_patch(pwh, add)),
    )
    .await
    .map_err(kube_err("update the finalizer"))?;
    ctx.metrics.kube_write(KubeWrite::Finalizer);
    Ok(())
}

async fn reconcile_one(pwh: &ParentWebhook, ctx: &PwhCtx) -> Result<Next, PwhError> {
    let ns = pwh.namespace().unwrap_or_default();
    let api: Api<ParentWebhook> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = pwh.metadata.deletion_timestamp.is_some();
    if deleting && !has_finalizer(pwh) {
        return Ok(Next::Resync);
    }
    if pwh
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        debug!("paused; no API call");
        return Ok(Next::Resync);
    }
    let provider_name = &pwh.spec.provider_ref.name;
    let current = ctx.providers.get(&ObjectRef::new(provider_name));
    // Only Layers has parent endpoints: any other provider type stalls with no call (and a
    // deleting object, which can have made nothing there, just goes).
    if let Some(op) = current.as_deref()
        && op.spec.provider_type != ProviderType::Layers
    {
        if deleting {
            patch_finalizer(&api, pwh, false, ctx).await?;
            return Ok(Next::Resync);
        }
        let kind = serde_json::to_value(op.spec.provider_type)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default();
        let message = format!(
            "OrgProvider {provider_name:?} is of type {kind}; parent webhook endpoints exist only on layers"
        );
        let conds = stalled(pwh, "UnsupportedByProvider", &message);
        write_status(&api, pwh, status_with(pwh, conds), ctx).await?;
        return Ok(Next::Slow);
    }
    let provider = match ctx.registry.layers(provider_name, current.as_deref()) {
        Ok(p) => p,
        Err(Availability::Unavailable {
            reason,
            message,
            transient,
        }) => {
            let (conds, next) = if transient {
                (
                    reconciling(pwh, "ProviderNotReady", &message),
                    Next::Backoff,
                )
            } else {
                (stalled(pwh, &reason, &message), Next::Slow)
            };
            write_status(&api, pwh, status_with(pwh, conds), ctx).await?;
            return Ok(next);
        }
        Err(Availability::Ready(_)) => return Ok(Next::Backoff),
    };
    if deleting {
        return delete_endpoint(&api, pwh, &provider, ctx).await;
    }
    if !has_finalizer(pwh) {
        // Before the first provider write, so a deletion always deletes the endpoint.
        if !(ctx.may_write)() {
            return Err(PwhError::NotLeader);
        }
        patch_finalizer(&api, pwh, true, ctx).await?;
    }
    match converge(pwh, &provider, ctx).await {
        Ok(done) => {
            let mut status = status_with(pwh, ready(pwh, &done.endpoint));
            status.endpoint_id = Some(done.endpoint.id.clone());
            status.secret_name = Some(pwh.secret_name());
            status.secret_rotated_for = done.rotated_for.clone();
            status.previous_secret_expires_at = done.previous_expires_at.clone();
            publish(ctx, pwh, &done.events).await;
            write_status(&api, pwh, status, ctx).await?;
            Ok(Next::Resync)
        }
        Err(Failed {
            events,
            endpoint_id,
            error,
        }) => {
            publish(ctx, pwh, &events).await;
            let (conds, next) = match &error {
                PwhError::Provider { step, source } if source.needs_human() => {
                    let reason = if source.is_auth() {
                        "CredentialsRefused"
                    } else {
                        "ApiRejected"
                    };
                    (
                        stalled(pwh, reason, &format!("{step}: {source}")),
                        Next::Slow,
                    )
                }
                PwhError::Stall { reason, message } => (stalled(pwh, reason, message), Next::Slow),
                PwhError::Provider { .. } | PwhError::Kube { .. } => (
                    reconciling(pwh, "Retrying", &error.to_string()),
                    Next::Backoff,
                ),
                PwhError::NotLeader => return Err(error),
            };
            let mut status = status_with(pwh, conds);
            if endpoint_id.is_some() {
                status.endpoint_id = endpoint_id;
            }
            write_status(&api, pwh, status, ctx).await?;
            Ok(next)
        }
    }
}

/// What a successful pass leaves behind.
struct Done {
    endpoint: ParentEndpoint,
    rotated_for: Option<String>,
    previous_expires_at: Option<String>,
    events: Vec<OrgEvent>,
}

struct Failed {
    events: Vec<OrgEvent>,
    /// An endpoint found or created before the failure.
    endpoint_id: Option<String>,
    error: PwhError,
}

/// Reads what is there, plans, applies the plan in order.
async fn converge(
    pwh: &ParentWebhook,
    provider: &LayersProvider,
    ctx: &PwhCtx,
) -> Result<Done, Failed> {
    let mut events = Vec::new();
    let fail = |events: Vec<OrgEvent>, endpoint_id: Option<String>, error: PwhError| Failed {
        events,
        endpoint_id,
        error,
    };
    let want = Desired::of(pwh);
    let secrets: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &pwh.namespace().unwrap_or_default());
    let (endpoint, adopted) = match find_endpoint(pwh, provider, &want.marker).await {
        Ok(found) => found,
        Err(e) => return Err(fail(events, None, e)),
    };
    // Status is derived from fresh reads (the API, the Secret), never from a cached status
    // that may predate this object's last write.
    let (secret, mut previous_expires_at) = match secrets.get_opt(&want.secret_name).await {
        Ok(s) => (
            seen_secret(s.as_ref(), pwh),
            s.as_ref()
                .filter(|s| owned_by(s, pwh))
                .and_then(|s| s.annotations().get(PREVIOUS_EXPIRES_ANNOTATION).cloned()),
        ),
        Err(e) => return Err(fail(events, None, kube_err("read the signing Secret")(e))),
    };
    let old_secret = match pwh.status.as_ref().and_then(|s| s.secret_name.clone()) {
        Some(old) if old != want.secret_name => match secrets.get_opt(&old).await {
            Ok(Some(s)) if owned_by(&s, pwh) => Some(old),
            Ok(_) => None,
            Err(e) => return Err(fail(events, None, kube_err("read the old Secret")(e))),
        },
        _ => None,
    };
    let mut rotated_for = match &secret {
        pplan::SecretSeen::Owned { rotated_for, .. } => rotated_for.clone(),
        _ => None,
    };
    let ours_already = matches!(&secret, pplan::SecretSeen::Owned { endpoint_id: Some(id), .. }
        if endpoint.as_ref().is_some_and(|e| e.id == *id));
    if let Some(ep) = &endpoint
        && adopted
        && !ours_already
    {
        events.push(OrgEvent {
            warning: false,
            reason: "Adopted".into(),
            note: format!(
                "Adopted parent webhook endpoint {} (metadata orgops.dev/parent-webhook={})",
                ep.id, want.marker
            ),
            action: "Adopt".into(),
        });
    }
    let observed = Observed {
        endpoint: endpoint.clone(),
        secret,
        old_secret,
        status_rotated_for: pwh
            .status
            .as_ref()
            .and_then(|s| s.secret_rotated_for.clone()),
    };
    let actions = match pplan::plan(&want, &observed) {
        Plan::Stall { reason, message } => {
            let error = PwhError::Stall { reason, message };
            return Err(fail(events, endpoint.map(|e| e.id), error));
        }
        Plan::Act(actions) => actions,
    };
    let mut current = endpoint;
    for action in actions {
        let id = current.as_ref().map(|e| e.id.clone());
        if !(ctx.may_write)() {
            return Err(fail(events, id, PwhError::NotLeader));
        }
        match action {
            Action::Create { new, key } => {
                let (ep, signing) = match provider.create_parent_endpoint(&new, &key).await {
                    Ok(c) => c,
                    Err(e) => return Err(fail(events, id, api_err("create the endpoint")(e))),
                };
                // The secret is shown once: into the Secret before anything else.
                let written = write_secret(&secrets, pwh, &want, &ep.id, &signing).await;
                if let Err(e) = written {
                    return Err(fail(events, Some(ep.id), e));
                }
                rotated_for = want.rotate_for.clone();
                previous_expires_at = None;
                events.push(OrgEvent {
                    warning: false,
                    reason: "Created".into(),
                    note: format!(
                        "Created parent webhook endpoint {} (scope {}); signing secret in Secret {}",
                        ep.id, want.scope, want.secret_name
                    ),
                    action: "Create".into(),
                });
                current = Some(ep);
            }
            Action::Rotate { cause, key } => {
                let Some(ep_id) = id.clone() else { continue };
                let signing = match provider.rotate_parent_endpoint_secret(&ep_id, &key).await {
                    Ok(s) => s,
                    Err(e) => {
                        return Err(fail(events, id, api_err("rotate the signing secret")(e)));
                    }
                };
                if let Err(e) = write_secret(&secrets, pwh, &want, &ep_id, &signing).await {
                    return Err(fail(events, id, e));
                }
                rotated_for = want.rotate_for.clone();
                previous_expires_at = signing.previous_expires_at.clone();
                let why = match cause {
                    RotateCause::SecretLost => format!(
                        "Secret {} was missing or held another endpoint's secret",
                        want.secret_name
                    ),
                    RotateCause::Annotation(v) => format!("orgops.dev/rotate-secret={v}"),
                };
                events.push(OrgEvent {
                    warning: false,
                    reason: "SecretRotated".into(),
                    note: format!(
                        "Rotated the signing secret of endpoint {ep_id} ({why}); the previous secret stays valid until {}",
                        signing.previous_expires_at.as_deref().unwrap_or("the API's grace period ends")
                    ),
                    action: "Rotate".into(),
                });
                // The rotation changed the endpoint (updatedAt); read it back for the status.
                match provider.get_parent_endpoint(&ep_id).await {
                    Ok(Some(ep)) => current = Some(ep),
                    Ok(None) => {}
                    Err(e) => return Err(fail(events, id, api_err("read the endpoint")(e))),
                }
            }
            Action::Patch(patch) => {
                let Some(ep_id) = id.clone() else { continue };
                match provider.update_parent_endpoint(&ep_id, &patch).await {
                    Ok(ep) => current = Some(ep),
                    Err(e) => return Err(fail(events, id, api_err("update the endpoint")(e))),
                }
                events.push(OrgEvent {
                    warning: false,
                    reason: "DriftCorrected".into(),
                    note: format!(
                        "Set {} of endpoint {ep_id} back to the spec",
                        patch.fields().join(", ")
                    ),
                    action: "Update".into(),
                });
            }
            Action::DeleteOldSecret(name) => {
                match secrets.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(fail(events, id, kube_err("delete the old Secret")(e))),
                }
            }
        }
    }
    match current {
        Some(endpoint) => Ok(Done {
            endpoint,
            rotated_for,
            previous_expires_at,
            events,
        }),
        None => Err(fail(
            events,
            None,
            api_err("create the endpoint")(ProviderError::Invalid(
                "no endpoint after the plan ran".into(),
            )),
        )),
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
        pplan::marked(&all, marker).first().map(|e| (*e).clone()),
        true,
    ))
}

/// Deletes every endpoint of this object (status id and marked ones), then the finalizer.
async fn delete_endpoint(
    api: &Api<ParentWebhook>,
    pwh: &ParentWebhook,
    provider: &LayersProvider,
    ctx: &PwhCtx,
) -> Result<Next, PwhError> {
    let marker = pwh.marker();
    let step = async {
        let all = provider
            .list_parent_endpoints()
            .await
            .map_err(api_err("list the parent's endpoints"))?;
        let mut ids: Vec<String> = pplan::marked(&all, &marker)
            .iter()
            .map(|e| e.id.clone())
            .collect();
        if let Some(id) = pwh.status.as_ref().and_then(|s| s.endpoint_id.clone())
            && !ids.contains(&id)
            && all.iter().any(|e| e.id == id)
        {
            ids.push(id);
        }
        for id in &ids {
            if !(ctx.may_write)() {
                return Err(PwhError::NotLeader);
            }
            provider
                .delete_parent_endpoint(id)
                .await
                .map_err(api_err("delete the endpoint"))?;
        }
        Ok(ids)
    };
    match step.await {
        Ok(ids) => {
            if !ids.is_empty() {
                let evs = [OrgEvent {
                    warning: false,
                    reason: "Deleted".into(),
                    note: format!("Deleted parent webhook endpoint {}", ids.join(", ")),
                    action: "Delete".into(),
                }];
                publish(ctx, pwh, &evs).await;
            }
            if !(ctx.may_write)() {
                return Err(PwhError::NotLeader);
            }
            patch_finalizer(api, pwh, false, ctx).await?;
            Ok(Next::Resync)
        }
        Err(PwhError::Provider { step, source }) if source.needs_human() => {
            let conds = stalled(pwh, "ApiRejected", &format!("{step}: {source}"));
            write_status(api, pwh, status_with(pwh, conds), ctx).await?;
            Ok(Next::Slow)
        }
        Err(e) => Err(e),
    }
}

fn owned_by(secret: &Secret, pwh: &ParentWebhook) -> bool {
    let uid = pwh.meta().uid.as_deref();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

fn seen_secret(secret: Option<&Secret>, pwh: &ParentWebhook) -> pplan::SecretSeen {
    match secret {
        None => pplan::SecretSeen::Missing,
        Some(s) if !owned_by(s, pwh) => pplan::SecretSeen::Foreign,
        Some(s) => {
            let has_value = s
                .data
                .as_ref()
                .and_then(|d| d.get("signingSecret"))
                .is_some_and(|v| !v.0.is_empty());
            let a = s.annotations();
            pplan::SecretSeen::Owned {
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
    crate::reconcile::secrets::apply_owned(api, pwh, name, annotations, data)
        .await
        .map_err(kube_err("write the signing Secret"))?;
    Ok(())
}

fn generation(pwh: &ParentWebhook) -> Option<i64> {
    pwh.metadata.generation
}

fn ready(pwh: &ParentWebhook, ep: &ParentEndpoint) -> Vec<Cond> {
    let g = generation(pwh);
    vec![
        Cond::new(
            READY,
            true,
            "Reconciled",
            format!(
                "endpoint {} matches the spec ({}, {})",
                ep.id,
                ep.scope.as_deref().unwrap_or(pwh.spec.scope.api_value()),
                ep.status
            ),
        )
        .generation(g),
        Cond::new(RECONCILING, false, "Reconciled", "").generation(g),
        Cond::new(STALLED, false, "Reconciled", "").generation(g),
    ]
}

fn reconciling(pwh: &ParentWebhook, reason: &str, message: &str) -> Vec<Cond> {
    let g = generation(pwh);
    vec![
        Cond::new(READY, false, reason, message).generation(g),
        Cond::new(RECONCILING, true, reason, message).generation(g),
        Cond::new(STALLED, false, reason, "").generation(g),
    ]
}

fn stalled(pwh: &ParentWebhook, reason: &str, message: &str) -> Vec<Cond> {
    let g = generation(pwh);
    vec![
        Cond::new(READY, false, reason, message).generation(g),
        Cond::new(RECONCILING, false, reason, "").generation(g),
        Cond::new(STALLED, true, reason, message).generation(g),
    ]
}

/// The current status with these conditions (each lastTransitionTime kept unless its
/// status flipped).
fn status_with(pwh: &ParentWebhook, wanted: Vec<Cond>) -> ParentWebhookStatus {
    let mut status = pwh.status.clone().unwrap_or_default();
    status.conditions = conditions::settle(&status.conditions, &wanted, &conditions::now());
    status.observed_generation = generation(pwh);
    status
}

/// Server-side apply of the status, skipped when nothing but timestamps would change.
async fn write_status(
    api: &Api<ParentWebhook>,
    pwh: &ParentWebhook,
    status: ParentWebhookStatus,
    ctx: &PwhCtx,
) -> Result<(), PwhError> {
    let current = serde_json::to_value(pwh.status.clone().unwrap_or_default()).ok();
    if current == serde_json::to_value(&status).ok() {
        return Ok(());
    }
    if !(ctx.may_write)() {
        return Err(PwhError::NotLeader);
    }
    let patch = json!({
        "apiVersion": "orgops.dev/v1alpha1",
        "kind": "ParentWebhook",
        "status": status,
    });
    api.patch_status(
        &pwh.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err("write the status"))?;
    ctx.metrics.kube_write(KubeWrite::Status);
    Ok(())
}

async fn publish(ctx: &PwhCtx, pwh: &ParentWebhook, evs: &[OrgEvent]) {
    if evs.is_empty() {
        return;
    }
    let regarding = pwh.object_ref(&());
    events::publish(&ctx.client, &ctx.metrics, &regarding, evs).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pwh() -> ParentWebhook {
        let mut p = ParentWebhook::new(
            "firehose",
            serde_json::from_value(json!({"url": "https://x", "events": ["test.ping"]})).unwrap(),
        );
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some("uid-1".into());
        p.metadata.resource_version = Some("7".into());
        p
    }

    fn secret(owner_uid: &str, annotations: &[(&str, &str)], value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                owner_references: Some(vec![OwnerReference {
                    uid: owner_uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "signingSecret".to_string(),
                ByteString(value.as_bytes().to_vec()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_seen_as_the_planner_needs() {
        let p = pwh();
        assert_eq!(seen_secret(None, &p), pplan::SecretSeen::Missing);
        let foreign = secret(
            "someone-else",
            &[(ENDPOINT_ID_ANNOTATION, "ep-1")],
            "whsec_x",
        );
        assert_eq!(seen_secret(Some(&foreign), &p), pplan::SecretSeen::Foreign);
        let ours = secret(
            "uid-1",
            &[
                (ENDPOINT_ID_ANNOTATION, "ep-1"),
                (ROTATED_FOR_ANNOTATION, "v1"),
            ],
            "whsec_x",
        );
        assert_eq!(
            seen_secret(Some(&ours), &p),
            pplan::SecretSeen::Owned {
                endpoint_id: Some("ep-1".into()),
                rotated_for: Some("v1".into())
            }
        );
        let emptied = secret("uid-1", &[(ENDPOINT_ID_ANNOTATION, "ep-1")], "");
        assert_eq!(
            seen_secret(Some(&emptied), &p),
            pplan::SecretSeen::Owned {
                endpoint_id: None,
                rotated_for: None
            },
            "an emptied Secret is repaired"
        );
    }

    #[test]
    fn finalizer_patches_keep_others_and_pin_the_version() {
        let mut p = pwh();
        p.metadata.finalizers = Some(vec!["example.com/keep".into()]);
        assert_eq!(
            finalizer_patch(&p, true),
            json!({"metadata": {"finalizers": ["example.com/keep", PARENT_WEBHOOK_FINALIZER], "resourceVersion": "7"}})
        );
        p.metadata.finalizers = Some(vec![
            PARENT_WEBHOOK_FINALIZER.into(),
            "example.com/keep".into(),
        ]);
        assert!(has_finalizer(&p));
        assert_eq!(
            finalizer_patch(&p, false)["metadata"]["finalizers"],
            json!(["example.com/keep"])
        );
    }

    #[test]
    fn conditions_follow_kstatus() {
        let mut p = pwh();
        p.metadata.generation = Some(3);
        let s = stalled(
            &p,
            "ApiRejected",
            "create the endpoint: 403 FORBIDDEN_SCOPE",
        );
        assert!(s.iter().any(|c| c.type_ == STALLED && c.status));
        assert!(s.iter().all(|c| c.observed_generation == Some(3)));
        let r = reconciling(&p, "Retrying", "x");
        assert!(r.iter().any(|c| c.type_ == RECONCILING && c.status));
        assert!(r.iter().any(|c| c.type_ == READY && !c.status));
    }
}
