//! Controller for ParentWebhooks: a webhook endpoint on the parent organization (the
//! firehose). The watch and its triggers, the gates before a pass (paused, the provider's
//! type and readiness, deletion, the finalizer), then one pass through the reconcile engine
//! ([`crate::reconcile::parent_webhook::converge`]: observe -> plan -> apply), and the
//! status and Events written from what it did.
//!
//! Decisions:
//! - A refusal that needs a person (422, 403, 409, 401, kill switch) is `Stalled` with the
//!   API's message and is retried only after `--slow-retry` or a spec change.
//! - Deleting the object deletes the endpoint (finalizer `orgops.dev/delete-endpoint`).
use super::events;
use super::metrics::{KubeWrite, Metrics};
use super::registry::{Availability, Registry};
use super::requeue::{self, Backoff};
use crate::api::{
    FIELD_MANAGER, OrgProvider, PARENT_WEBHOOK_FINALIZER, PAUSED_ANNOTATION, ParentWebhook,
    ParentWebhookStatus, ProviderType,
};
use crate::provider::layers::LayersProvider;
use crate::reconcile::OrgEvent;
use crate::reconcile::parent_webhook::status::{self, Next, reconciling, stalled, status_with};
use crate::reconcile::parent_webhook::{self as pass, Deleted, kube_err};
pub use crate::reconcile::parent_webhook::{
    ENDPOINT_ID_ANNOTATION, PARENT_WEBHOOK_ANNOTATION, PREVIOUS_EXPIRES_ANNOTATION, PwhError,
    ROTATED_FOR_ANNOTATION,
};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, debug, info_span, warn};

pub struct PwhCtx {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub providers: Store<OrgProvider>,
    pub metrics: Metrics,
    pub resync: Duration,
    pub slow_retry: Duration,
    pub backoff: Backoff<ObjectRef<ParentWebhook>>,
    /// The leader fence, checked right before every write.
    pub fence: crate::fence::Fence,
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
    scope: super::shard::Scope<'_>,
    owned: impl futures::Stream<Item = Result<super::owned_secrets::Meta, watcher::Error>>
    + Send
    + 'static,
) -> Controller<ParentWebhook> {
    let hooks: Api<ParentWebhook> = scope.api(client);
    let (reader, writer) = reflector::store();
    let changes = watcher(hooks, scope.config())
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
            Next::Soon => requeue::SOON,
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
    if !ctx.fence.is_open() {
        return Err(PwhError::NotLeader);
    }
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
        if !ctx.fence.is_open() {
            return Err(PwhError::NotLeader);
        }
        patch_finalizer(&api, pwh, true, ctx).await?;
        // The finalizer's own watch event starts the pass that calls the provider: going
        // on here made that event a second pass that asked again (two creates for one
        // refusal). The requeue is the fallback should the event be missed.
        return Ok(Next::Soon);
    }
    let outcome = pass::converge(pwh, &provider, &ctx.client, &ctx.fence).await;
    let events = match &outcome {
        Ok(done) => &done.events,
        Err(failed) => &failed.events,
    };
    publish(ctx, pwh, events).await;
    let Some((status, next)) = status::from_outcome(pwh, &outcome) else {
        return Err(PwhError::NotLeader);
    };
    write_status(&api, pwh, status, ctx).await?;
    Ok(next)
}

/// Deletes the endpoints proven this object's ([`pass::delete_owned`]), then the
/// finalizer. An endpoint the status names but that carries no marker of this object's is
/// left in place and an `OwnershipUnproven` Warning says so (a ParentWebhook has no
/// `deletionPolicy`, so the object still goes).
async fn delete_endpoint(
    api: &Api<ParentWebhook>,
    pwh: &ParentWebhook,
    provider: &LayersProvider,
    ctx: &PwhCtx,
) -> Result<Next, PwhError> {
    match pass::delete_owned(pwh, provider, &ctx.fence).await {
        Ok(Deleted { ids, unproven }) => {
            let mut evs = Vec::new();
            if !ids.is_empty() {
                evs.push(OrgEvent {
                    warning: false,
                    reason: "Deleted".into(),
                    note: format!("Deleted parent webhook endpoint {}", ids.join(", ")),
                    action: "Delete".into(),
                });
            }
            if let Some(id) = unproven {
                let marker = pwh.marker();
                evs.push(OrgEvent {
                    warning: true,
                    reason: "OwnershipUnproven".into(),
                    note: format!(
                        "endpoint {id} (in status) does not carry this object's marker {marker:?}: not deleted; delete it at the provider if it is not another's"
                    ),
                    action: "Delete".into(),
                });
            }
            publish(ctx, pwh, &evs).await;
            if !ctx.fence.is_open() {
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
    if !ctx.fence.is_open() {
        return Err(PwhError::NotLeader);
    }
    let patch = json!({
        "apiVersion": crate::api::API_VERSION,
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
    if evs.is_empty() || !ctx.fence.is_open() {
        return;
    }
    let regarding = pwh.object_ref(&());
    events::publish(&ctx.client, &ctx.metrics, &regarding, evs).await;
}

#[cfg(test)]
#[path = "parent_webhook_controller_tests.rs"]
mod tests;
