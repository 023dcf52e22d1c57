// Over 600 lines: the CustomerOrg controller's wiring, finalizer, status write, Events and requeue policy, plus the runtime caches' shortcuts (issue 29 makes them one decision per pass).
//! Controller for CustomerOrgs: finalizer, reconcile/offboard, status (server-side
//! apply, only when changed), Events and requeue policy.
use super::deferred_status::DeferredStatus;
use super::error::RuntimeError;
use super::events;
use super::finalizer;
use super::first_seen::{self, FirstSeen};
use super::funds::{self, Funds};
use super::metrics::{KubeWrite, Metrics, ReconcileResult};
use super::own_writes::{OwnWrites, Seen};
use super::owned_secrets::OwnedSecrets;
use super::priority::{Priority, PriorityGate};
use super::prune;
use super::registry::{Availability, Registry};
use super::requeue::{self, Backoff};
use crate::api::{
    CustomerOrg, CustomerOrgStatus, DeletionPolicy, FIELD_MANAGER, OrgProvider, PAUSED_ANNOTATION,
};
use crate::changelog;
use crate::reconcile::{self, OrgEvent, Retry};
use futures::{Stream, StreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use rand::Rng;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{Instrument, debug, info_span, warn};

/// Guarded so that one object the types cannot decode fails alone instead of breaking
/// the list/watch for every other object.
pub type Guarded = DeserializeGuard<CustomerOrg>;

/// Label on the Secrets the operator writes; keeps the owned-Secret cache small.
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=orgops";

pub struct OrgCtx {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub providers: Store<OrgProvider>,
    pub metrics: Metrics,
    pub resync: Duration,
    /// Wait after a verdict that needs an outside change (`--slow-retry`).
    pub slow_retry: Duration,
    pub backoff: Backoff<ObjectRef<Guarded>>,
    /// Our own status writes, so the reconcile each one triggers skips the provider.
    pub own_writes: Arc<OwnWrites<ObjKey>>,
    /// Global bound on concurrent reconciles across the per-namespace controllers, handed
    /// out edits first (`priority`).
    pub permits: Arc<PriorityGate>,
    /// First reconcile in this process of a converged object: deferred, spread.
    pub first_seen: Arc<FirstSeen<ObjKey>>,
    pub owned_secrets: OwnedSecrets,
    /// The leader fence, checked right before every write (provider and Kubernetes).
    pub fence: crate::fence::Fence,
    /// Where claims live (the leader Lease's namespace, `reconcile::claims`).
    pub claims_namespace: String,
    /// How often each object is verified in depth (`--verify-interval`).
    pub verify_interval: Duration,
    /// When each object was last verified in depth.
    pub verified: std::sync::Mutex<std::collections::HashMap<ObjKey, Instant>>,
    /// Statuses left unwritten by a pass that is verified at once (`deferred_status`).
    pub deferred: DeferredStatus<ObjKey>,
    /// Customers waiting on their parent's funds (re-triggered when its balance rises).
    pub funds: Arc<Funds>,
    /// The GitOps revision of each object, for the change log.
    pub revisions: Arc<crate::changelog::revision::Revisions>,
}

/// The key of the per-object maps (own writes, first looks, deep checks, deferred
/// statuses): "namespace/name" in one small allocation. An `ObjectRef` is 96 bytes and two
/// allocations, kept once per map for every object (docs/benchmarks.md, issue 18).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjKey(Box<str>);

impl ObjKey {
    pub fn of(oref: &ObjectRef<Guarded>) -> ObjKey {
        ObjKey::new(oref.namespace.as_deref().unwrap_or_default(), &oref.name)
    }

    pub fn new(namespace: &str, name: &str) -> ObjKey {
        ObjKey(format!("{namespace}/{name}").into())
    }

    fn of_obj(obj: &Guarded) -> ObjKey {
        ObjKey::new(&obj.namespace().unwrap_or_default(), &obj.name_any())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// "namespace/name", as logs and metrics name an object.
impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl OrgCtx {
    /// Whether this pass verifies in depth. A first sighting is placed at a random point
    /// of the interval, so deep checks of many objects (after a restart) spread out.
    fn deep_check_due(&self, key: &ObjKey) -> bool {
        if self.verify_interval.is_zero() {
            return true;
        }
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match verified.get(key) {
            Some(at) if now.duration_since(*at) >= self.verify_interval => {
                verified.insert(key.clone(), now);
                true
            }
            Some(_) => false,
            None => {
                let back = self
                    .verify_interval
                    .mul_f64(rand::rng().random_range(0.0..1.0));
                verified.insert(key.clone(), now.checked_sub(back).unwrap_or(now));
                false
            }
        }
    }
}

/// List page size of the watches: a small page bounds the start-up spike of a large list.
pub const PAGE: u32 = 100;

/// How long a first reconcile waits for the owned-Secret cache before giving up the
/// shortcut (and doing the full pass).
const SECRETS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One controller for `namespace` (None: all namespaces).
/// `owned`: the owner trigger fed by the scope's one Secret watch
/// (`owned_secrets::trigger`).
pub fn controller(
    client: Client,
    scope: super::shard::Scope<'_>,
    providers: Store<OrgProvider>,
    registry: &Arc<Registry>,
    own_writes: Arc<OwnWrites<ObjKey>>,
    first_seen: Arc<FirstSeen<ObjKey>>,
    owned: impl futures::Stream<Item = Result<super::owned_secrets::Meta, watcher::Error>>
    + Send
    + 'static,
) -> Controller<Guarded> {
    let orgs: Api<Guarded> = scope.api(client.clone());
    // Our own status writes trigger one extra, write-free reconcile; resync comes from
    // the requeue. The cache keeps CustomerOrgs without managedFields (`prune`); the
    // owned Secrets only trigger, from the scope's one metadata-only watch (the
    // owned-Secret index's): their data never reaches us.
    let (store, writer) = reflector::store();
    let objects = watcher(orgs, scope.config().page_size(PAGE))
        .modify(prune::prune)
        .reflect(writer)
        .applied_objects();
    let ctrl = Controller::for_stream(objects, store.clone()).owns_stream(owned);
    // A provider change is news our last status write did not know: no skipping.
    let writes = own_writes.clone();
    let users = store.clone();
    let seen = ProviderVersions::default();
    ctrl.watches(
        Api::<OrgProvider>::all(client),
        watcher::Config::default().any_semantic(),
        move |p: OrgProvider| {
            // A claim in the offboarding window concerns only the objects being deleted
            // (one may now have a slot); every other user would only re-verify for nothing.
            let users = if seen.changed_beyond_window(&p) {
                users_of(&users, Some(&p.name_any()))
            } else {
                deleting_users_of(&users, &p.name_any())
            };
            users
                .iter()
                .for_each(|u| writes.verify_next(&ObjKey::of(u)));
            users
        },
    )
    .reconcile_on(provider_changes(
        registry, providers, own_writes, first_seen, store,
    ))
}

/// `ctrl` also reconciles its customers whose parent's balance rose enough to fund their
/// waiting top-up (`funds`): a full pass each, not a skip of our own last status write.
pub fn with_funds(
    ctrl: Controller<Guarded>,
    funds: &Funds,
    own_writes: Arc<OwnWrites<ObjKey>>,
) -> Controller<Guarded> {
    let store = ctrl.store();
    ctrl.reconcile_on(funded(funds, own_writes, store))
}

fn funded(
    funds: &Funds,
    own_writes: Arc<OwnWrites<ObjKey>>,
    store: Store<Guarded>,
) -> impl Stream<Item = ObjectRef<Guarded>> + Send + 'static {
    futures::stream::unfold(funds.retriggers(), move |mut rx| {
        let own_writes = own_writes.clone();
        let store = store.clone();
        async move {
            let due = loop {
                match rx.recv().await {
                    Ok(due) => break due,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            };
            let refs: Vec<ObjectRef<Guarded>> = due
                .iter()
                .filter_map(|who| {
                    let (ns, name) = who.split_once('/')?;
                    let oref = ObjectRef::<Guarded>::new(name).within(ns);
                    store.get(&oref).map(|_| oref)
                })
                .collect();
            refs.iter()
                .for_each(|r| own_writes.verify_next(&ObjKey::of(r)));
            Some((futures::stream::iter(refs), rx))
        }
    })
    .flatten()
}

/// The CustomerOrgs of `provider` (None: of every provider).
fn users_of(store: &Store<Guarded>, provider: Option<&str>) -> Vec<ObjectRef<Guarded>> {
    store
        .state()
        .iter()
        .filter(|g| {
            g.0.as_ref()
                .is_ok_and(|c| provider.is_none_or(|p| c.spec.provider_ref.name == p))
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// The deleting CustomerOrgs of `provider`: the ones the offboarding window concerns.
fn deleting_users_of(store: &Store<Guarded>, provider: &str) -> Vec<ObjectRef<Guarded>> {
    store
        .state()
        .iter()
        .filter(|g| {
            g.0.as_ref().is_ok_and(|c| {
                c.spec.provider_ref.name == provider && c.metadata.deletion_timestamp.is_some()
            })
        })
        .map(|g| ObjectRef::from_obj(g.as_ref()))
        .collect()
}

/// Per OrgProvider, everything but `status.offboarding` and `status.creditWindow` (and the
/// resourceVersion and managed fields that change with them) as last seen by the watch.
#[derive(Default)]
struct ProviderVersions(std::sync::Mutex<std::collections::HashMap<String, String>>);

impl ProviderVersions {
    /// True unless the only change since the last event is the offboarding window.
    fn changed_beyond_window(&self, p: &OrgProvider) -> bool {
        let mut relevant = p.clone();
        relevant.metadata.resource_version = None;
        relevant.metadata.managed_fields = None;
        if let Some(status) = relevant.status.as_mut() {
            status.offboarding = Vec::new();
            // A claim in the credit window is news for nobody: a top-up the hourly bound
            // holds looks again when the window frees by time, not when it fills.
            status.credit_window = Vec::new();
        }
        // Unencodable cannot happen for a typed object; then treat it as a change.
        let key = serde_json::to_string(&relevant).unwrap_or_default();
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let same = !key.is_empty() && seen.get(&p.name_any()) == Some(&key);
        seen.insert(p.name_any(), key);
        !same
    }
}

/// What the provider-change stream needs to decide whether deferred first looks stay.
struct Watch {
    rx: tokio::sync::broadcast::Receiver<String>,
    registry: Arc<Registry>,
    providers: Store<OrgProvider>,
    own_writes: Arc<OwnWrites<ObjKey>>,
    first_seen: Arc<FirstSeen<ObjKey>>,
    /// The CustomerOrgs, to find the users of a provider.
    store: Store<Guarded>,
    /// Providers this process has heard about once already.
    known: HashSet<String>,
}

/// The CustomerOrgs of a provider whose availability changed in the registry (checked,
/// rebuilt, failed), so they retry now rather than after a slow requeue; only that
/// provider's users (a flapping provider must not re-trigger every object).
/// A provider's first check in this process coming out Ready is no news for a converged
/// object: its deferred first look stays deferred (else a restart would stampede).
fn provider_changes(
    registry: &Arc<Registry>,
    providers: Store<OrgProvider>,
    own_writes: Arc<OwnWrites<ObjKey>>,
    first_seen: Arc<FirstSeen<ObjKey>>,
    store: Store<Guarded>,
) -> impl Stream<Item = ObjectRef<Guarded>> + Send + 'static {
    let watch = Watch {
        rx: registry.subscribe(),
        registry: registry.clone(),
        providers,
        own_writes,
        first_seen,
        store,
        known: HashSet::new(),
    };
    futures::stream::unfold(watch, |mut w| async move {
        let provider = match w.rx.recv().await {
            Ok(name) => {
                let first = w.known.insert(name.clone());
                let current = w.providers.get(&ObjectRef::new(&name));
                let ready = matches!(
                    w.registry.availability(&name, current.as_deref()),
                    Availability::Ready(_)
                );
                if !(first && ready) {
                    w.first_seen.cancel(Some(&name));
                }
                Some(name)
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                w.first_seen.cancel(None);
                None
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        let users = users_of(&w.store, provider.as_deref());
        w.own_writes.new_epoch();
        users
            .iter()
            .for_each(|u| w.own_writes.verify_next(&ObjKey::of(u)));
        Some((futures::stream::iter(users), w))
    })
    .flatten()
}

/// The first-seen shortcut: Some(delay) when this trigger makes no provider call.
async fn first_look(key: &ObjKey, corg: &CustomerOrg, ctx: &OrgCtx) -> Option<Duration> {
    if corg.metadata.deletion_timestamp.is_some() {
        // Going away: full passes from now on, and no entry left behind.
        ctx.first_seen.forget(key);
        return None;
    }
    if !ctx.first_seen.is_new_or_deferred(key) {
        return None;
    }
    let secrets =
        if first_seen::converged(corg) && ctx.owned_secrets.ready(SECRETS_READY_TIMEOUT).await {
            ctx.owned_secrets
                .versions(corg, &first_seen::expected_secrets(corg))
        } else {
            None
        };
    let resync = ctx.resync;
    ctx.first_seen.check(key, corg, secrets, || {
        resync.mul_f64(rand::rng().random_range(0.0..1.0))
    })
}

pub async fn reconcile(obj: Arc<Guarded>, ctx: Arc<OrgCtx>) -> Result<Action, RuntimeError> {
    let _queued = ctx.metrics.queued();
    // Without the resourceVersion and uid (equality ignores them): this reference is kept
    // in the backoff map while the object fails.
    let mut oref = ObjectRef::from_obj(obj.as_ref());
    oref.extra = Default::default();
    let key = ObjKey::of_obj(obj.as_ref());
    let span = info_span!("reconcile", object = %key);
    async move {
        let cached = match &obj.0 {
            Ok(corg) => corg,
            Err(invalid) => {
                warn!(error = %invalid.error, "CustomerOrg cannot be decoded; skipped until it changes");
                return Ok(Action::await_change());
            }
        };
        let decision = decide(&key, cached, &ctx).await;
        debug!(?decision, version = ?cached.metadata.resource_version, "where this pass reads the object");
        match decision {
            Decision::DeferFirstLook(wait) => {
                debug!(first_look_in = ?wait, "converged at its generation; first look deferred");
                return Ok(Action::requeue(wait.max(requeue::SOON)));
            }
            Decision::OwnWrite(left) => return Ok(skip(left)),
            Decision::TrustCache | Decision::ReadFresh => {}
        }
        // Edits first: a slot of `--concurrency`, before any read or write (`priority`).
        let priority = ctx.permits.priority_of(key.as_str(), cached);
        let Ok(_slot) = ctx.permits.acquire(priority).await else {
            // Closed only at shutdown; then skip the work.
            return Ok(Action::await_change());
        };
        if priority == Priority::Edit {
            debug!("an edit: ahead of routine passes");
        }
        Box::pin(pass(cached, decision, key, oref, ctx)).await
    }
    .instrument(span)
    .await
}

/// One pass once it holds a slot (boxed by the caller: a pass waiting for its slot stays
/// small however many wait).
async fn pass(
    cached: &CustomerOrg,
    decision: Decision,
    key: ObjKey,
    oref: ObjectRef<Guarded>,
    ctx: Arc<OrgCtx>,
) -> Result<Action, RuntimeError> {
    {
        let fresh;
        let corg = match decision {
            // Decided before the slot (`reconcile`).
            Decision::DeferFirstLook(wait) => return Ok(Action::requeue(wait.max(requeue::SOON))),
            Decision::OwnWrite(left) => return Ok(skip(left)),
            Decision::TrustCache => cached,
            Decision::ReadFresh => {
                let api: Api<CustomerOrg> =
                    Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
                let Some(current) = api.get_opt(&cached.name_any()).await? else {
                    ctx.first_seen.forget(&key);
                    ctx.permits.forget(key.as_str());
                    ctx.funds.forget(key.as_str());
                    ctx.metrics.offboarding_gone(key.as_str());
                    return Ok(Action::await_change());
                };
                match ctx
                    .own_writes
                    .seen(&key, current.metadata.resource_version.as_deref(), false)
                {
                    Seen::Ours(left) => return Ok(skip(left)),
                    Seen::Other => ctx.own_writes.forget(&key),
                    Seen::Unknown | Seen::OursVerify => {}
                }
                fresh = current;
                &fresh
            }
        };
        let started = Instant::now();
        let epoch = ctx.own_writes.epoch();
        let deferred = ctx.deferred.take(&key, corg.metadata.uid.as_deref());
        let result = reconcile_org(corg, deferred, &key, &ctx).await;
        let (action, kind) = match &result {
            Ok((retry, paused, written)) => {
                let kind = match (retry, paused) {
                    (_, true) => ReconcileResult::Paused,
                    (Retry::After(_), _) => ReconcileResult::Error,
                    (Retry::Slow | Retry::Stalled(_), _) => ReconcileResult::Stalled,
                    (Retry::Backoff, _) => ReconcileResult::Error,
                    _ => ReconcileResult::Ok,
                };
                let delay = delay_for(*retry, &oref, &ctx);
                match written {
                    // A pass that wants to verify soon does the work on the next trigger.
                    Some(rv) => ctx.own_writes.record(
                        key.clone(),
                        rv.clone(),
                        (*retry != Retry::Soon).then_some(delay),
                        epoch,
                    ),
                    None => ctx.own_writes.forget(&key),
                }
                (Action::requeue(delay), kind)
            }
            Err(_) => {
                ctx.own_writes.forget(&key);
                (Action::await_change(), ReconcileResult::Error)
            }
        };
        ctx.metrics
            .reconciled(kind, started.elapsed().as_secs_f64());
        result.map(|_| action)
    }
}

/// What a trigger does with the cached copy of its object, decided once, where the pass
/// starts, from the runtime's shortcut caches (first looks after a restart, our own status
/// writes, the status a previous pass deferred). Every other read of the pass is made for
/// it (observe, proofs of ownership, claims), never taken from these caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// The first look in this process at an object converged at its generation: deferred
    /// by a random share of the resync (`first_seen`), no provider call now.
    DeferFirstLook(Duration),
    /// Triggered by our own status write: the pass that wrote it already observed the
    /// provider and chose when to look again (`own_writes`).
    OwnWrite(Duration),
    /// Trust the cache: plan from the cached copy (`plan_from_cache`).
    TrustCache,
    /// Read fresh: GET the object before the pass.
    ReadFresh,
}

async fn decide(key: &ObjKey, cached: &CustomerOrg, ctx: &OrgCtx) -> Decision {
    if let Some(wait) = first_look(key, cached, ctx).await {
        return Decision::DeferFirstLook(wait);
    }
    let meta = &cached.metadata;
    match ctx
        .own_writes
        .seen(key, meta.resource_version.as_deref(), true)
    {
        Seen::Ours(left) => Decision::OwnWrite(left),
        // A deleting object is read fresh: a cache that has not seen the finalizer go
        // would offboard (archive) a second time. So is one with no org recorded: a
        // cached copy from before its deletion would create an org after offboarding
        // found none and let the object go (the Gennia chaos run caught exactly that).
        // A copy at the very version whose pass deferred a status naming the org is as
        // good as one with the org recorded.
        Seen::Unknown | Seen::OursVerify => {
            let uid = meta.uid.as_deref();
            let acted_on = ctx
                .deferred
                .acted_on(key, uid, meta.resource_version.as_deref());
            if plan_from_cache(cached, acted_on) {
                Decision::TrustCache
            } else {
                Decision::ReadFresh
            }
        }
        Seen::Other => Decision::ReadFresh,
    }
}

/// Whether a pass may plan from the cached copy instead of reading the object first:
/// not while it is being deleted, and only when the copy names its org, by its status or
/// by the status its previous pass deferred at exactly this version (`acted_on`,
/// `DeferredStatus::acted_on`). Without an org, the copy might predate a deletion whose
/// offboarding found none, and a pass on it would create an org nobody offboards.
fn plan_from_cache(cached: &CustomerOrg, acted_on: bool) -> bool {
    cached.metadata.deletion_timestamp.is_none()
        && (acted_on || cached.status.as_ref().is_some_and(|s| s.org_id.is_some()))
}

pub fn error_policy(obj: Arc<Guarded>, err: &RuntimeError, ctx: Arc<OrgCtx>) -> Action {
    warn!(
        object = %ObjKey::of_obj(obj.as_ref()),
        error = %err,
        "reconcile failed"
    );
    Action::requeue(ctx.backoff.failed(ObjectRef::from_obj(obj.as_ref())))
}

fn skip(left: Duration) -> Action {
    debug!(requeue_in = ?left, "own status write; no provider call");
    Action::requeue(left.max(requeue::SOON))
}

fn delay_for(retry: Retry, oref: &ObjectRef<Guarded>, ctx: &OrgCtx) -> Duration {
    match retry {
        Retry::Backoff => return ctx.backoff.failed(oref.clone()),
        Retry::Resync | Retry::Soon | Retry::Slow | Retry::After(_) | Retry::Stalled(_) => {
            ctx.backoff.succeeded(oref)
        }
    }
    match retry {
        Retry::Soon => requeue::SOON,
        Retry::After(wait) | Retry::Stalled(wait) => wait.max(requeue::SOON),
        Retry::Slow => requeue::jitter(ctx.slow_retry.max(ctx.resync)),
        _ => requeue::jitter(ctx.resync),
    }
}

/// Returns when to come back, whether the object is paused and the resourceVersion our
/// status write produced (None: no status write). `deferred`: the status the previous
/// pass left unwritten (`deferred_status`); this pass plans from it and writes its own.
async fn reconcile_org(
    corg: &CustomerOrg,
    deferred: Option<CustomerOrgStatus>,
    key: &ObjKey,
    ctx: &OrgCtx,
) -> Result<(Retry, bool, Option<String>), RuntimeError> {
    let name = corg.name_any();
    let ns = corg.namespace().unwrap_or_default();
    let api: Api<CustomerOrg> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = corg.metadata.deletion_timestamp.is_some();
    let paused = corg
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true");
    if deleting && !finalizer::has(corg) {
        return Ok((Retry::Resync, paused, None));
    }
    let provider_name = corg.spec.provider_ref.name.clone();
    let current = ctx.providers.get(&ObjectRef::new(&provider_name));
    let provider = match ctx
        .registry
        .availability(&provider_name, current.as_deref())
    {
        Availability::Ready(p) => p,
        Availability::Unavailable {
            reason,
            message,
            transient,
        } => {
            if deleting && corg.spec.deletion_policy == DeletionPolicy::Orphan {
                // Orphan needs no API call: let the object go.
                remove_finalizer(&api, corg, ctx).await?;
                return Ok((Retry::Resync, paused, None));
            }
            debug!(%reason, "provider unavailable");
            // Not checked by this process yet (right after a restart): nothing new to say,
            // and the status may hold what matters (a paused offboarding, a rejection)
            // that a "pending" status would overwrite. Look again in a moment.
            if reason == super::registry::NOT_CHECKED && corg.status.is_some() {
                return Ok((Retry::Backoff, paused, None));
            }
            // A held offboarding keeps its status (and so its one Warning per episode).
            if reconcile::offboard::held_for_person(corg) {
                let retry = if transient {
                    Retry::Backoff
                } else {
                    Retry::Slow
                };
                return Ok((retry, paused, None));
            }
            // A provider not checked yet (e.g. right after a restart) or briefly
            // unreachable is no reason to wait minutes: back off from a second.
            let (status, retry) = if transient {
                (
                    reconcile::status::provider_pending(corg, &message),
                    Retry::Backoff,
                )
            } else {
                (
                    reconcile::status::unavailable(corg, &reason, &message),
                    Retry::Slow,
                )
            };
            let written = apply_status(&api, corg, &status, ctx).await?;
            return Ok((retry, paused, written));
        }
    };
    // Every provider write of this pass is recorded in the change log (`changelog`).
    let mut subject =
        changelog::Subject::customer(corg, &provider_name, ctx.revisions.of(&corg.metadata).await);
    if let Some(status) = &deferred {
        subject.recorded_allocated = status.credits.as_ref().map(|c| c.allocated);
    }
    let vendor = provider.vendor();
    let provider: Arc<dyn crate::provider::Provider> =
        Arc::new(changelog::Logged::new(provider, subject.clone()));
    let rctx = reconcile::Context {
        client: ctx.client.clone(),
        provider,
        claims: reconcile::claims::Claims::new(
            ctx.client.clone(),
            &ctx.claims_namespace,
            &provider_name,
        ),
        provider_name,
        owned: Arc::new(ctx.owned_secrets.clone()),
        fence: ctx.fence.clone(),
        deep: !deleting && ctx.deep_check_due(key),
    };
    if deleting {
        ctx.funds.forget(key.as_str());
        let off = reconcile::offboard(&rctx, corg).await?;
        // The paused status first: it is what tells the next pass (or a restarted
        // process) that this episode's Warning was already published. A crash between
        // the two loses that Event, never doubles it; the condition says the same.
        let written = match (off.paused.as_ref().or(off.waiting.as_ref()), off.done) {
            (Some(status), false) => apply_status(&api, corg, status, ctx).await?,
            _ => None,
        };
        ctx.metrics.offboarding_paused(
            &rctx.provider_name,
            &format!("{ns}/{name}"),
            off.paused.is_some(),
        );
        publish(ctx, corg, &off.events).await;
        if off.done {
            remove_finalizer(&api, corg, ctx).await?;
            return Ok((Retry::Resync, paused, None));
        }
        return Ok((off.retry, paused, written));
    }
    // The version this pass acts on: the copy's, or the one our finalizer write made
    // (pinned to the copy's version, it changed nothing else).
    let mut acted_on = corg.metadata.resource_version.clone();
    if !finalizer::has(corg) {
        // Before the first provider write, so a deletion always offboards. Usually already
        // there: the MutatingAdmissionPolicy in deploy/ adds it when the object is stored.
        ctx.fence.check()?;
        acted_on = finalizer::apply(&api, &name, &finalizer::add_patch(corg)).await?;
        ctx.metrics.kube_write(KubeWrite::Finalizer);
    }
    let verifying = deferred.is_some();
    let planned;
    let view = match deferred {
        Some(status) => {
            planned = CustomerOrg {
                status: Some(status),
                ..corg.clone()
            };
            &planned
        }
        None => corg,
    };
    let outcome = reconcile::reconcile(&rctx, view).await?;
    let previous = view.status.as_ref().and_then(|s| s.held_credits.as_ref());
    if let Some(record) = changelog::held(
        &subject,
        vendor,
        previous,
        outcome.status.held_credits.as_ref(),
    ) {
        changelog::emit(&record);
        ctx.metrics
            .credits_held(&rctx.provider_name, &record.guardrails);
    }
    ctx.funds.record(
        &rctx.provider_name,
        key.as_str(),
        funds::need(view, &outcome.status),
    );
    publish(ctx, view, &outcome.events).await;
    if outcome.retry == Retry::Soon
        && !verifying
        && let Some(uid) = corg.metadata.uid.as_deref()
    {
        // Verified at once by the next pass, which writes what it observes: this status
        // would be superseded a moment later.
        ctx.deferred
            .defer(key.clone(), uid, acted_on.as_deref(), outcome.status);
        return Ok((Retry::Soon, paused, None));
    }
    let written = apply_status(&api, corg, &outcome.status, ctx).await?;
    Ok((outcome.retry, paused, written))
}

/// The offboarding's last step: the object's claims are released, then the finalizer.
/// A release that fails is left to the takeover of claims whose owner is gone.
async fn remove_finalizer(
    api: &Api<CustomerOrg>,
    corg: &CustomerOrg,
    ctx: &OrgCtx,
) -> Result<(), RuntimeError> {
    if let Some(patch) = finalizer::remove_patch(corg) {
        ctx.fence.check()?;
        let claims = reconcile::claims::Claims::new(
            ctx.client.clone(),
            &ctx.claims_namespace,
            &corg.spec.provider_ref.name,
        );
        match claims.release_all(corg).await {
            Ok(0) => {}
            Ok(n) => debug!(claims = n, "claims released"),
            Err(e) => {
                warn!(error = %e, "releasing claims failed; a later claimant takes them over")
            }
        }
        finalizer::apply(api, &corg.name_any(), &patch).await?;
        ctx.metrics.kube_write(KubeWrite::Finalizer);
    }
    Ok(())
}

async fn publish(ctx: &OrgCtx, corg: &CustomerOrg, evs: &[OrgEvent]) {
    if evs.is_empty() {
        return;
    }
    if ctx.fence.check().is_err() {
        debug!(
            events = evs.len(),
            "leader fence closed: Events not published"
        );
        return;
    }
    let regarding = corg.object_ref(&());
    events::publish(&ctx.client, &ctx.metrics, &regarding, evs).await;
}

/// Server-side apply of the whole status, skipped when nothing changed (a converged
/// object costs zero writes). Returns the resourceVersion the write produced.
async fn apply_status(
    api: &Api<CustomerOrg>,
    corg: &CustomerOrg,
    status: &CustomerOrgStatus,
    ctx: &OrgCtx,
) -> Result<Option<String>, RuntimeError> {
    if !status_differs(corg.status.as_ref(), status) {
        return Ok(None);
    }
    ctx.fence.check()?;
    if status.org_id.is_none() && corg.status.as_ref().is_some_and(|s| s.org_id.is_some()) {
        // The org recorded is not this object's (AdoptionConflict): removed whoever wrote
        // it (a restore from a backup, `kubectl patch`), which an apply that only leaves
        // the field out would not do for a field another manager owns.
        let forget = serde_json::json!({"status": {"orgId": null, "state": null, "credits": null}});
        api.patch_status(
            &corg.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&forget),
        )
        .await?;
        ctx.metrics.kube_write(KubeWrite::Status);
    }
    let patch = serde_json::json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "CustomerOrg",
        "status": status,
    });
    let updated = api
        .patch_status(
            &corg.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.metrics.kube_write(KubeWrite::Status);
    ctx.metrics
        .status_written(corg, corg.status.as_ref(), status);
    Ok(updated.metadata.resource_version)
}

/// Compared as JSON, the way the API server would store it. Both sides are the same type,
/// so their encodings list fields in the same order: comparing the bytes is comparing the
/// documents, without building a `Value` tree per pass (docs/benchmarks.md).
pub fn status_differs(current: Option<&CustomerOrgStatus>, wanted: &CustomerOrgStatus) -> bool {
    let Some(current) = current else {
        return true;
    };
    match (serde_json::to_vec(current), serde_json::to_vec(wanted)) {
        (Ok(current), Ok(wanted)) => current != wanted,
        _ => true,
    }
}

/// Runs one CustomerOrg controller until `shutdown` resolves.
pub async fn run(
    ctrl: Controller<Guarded>,
    ctx: Arc<OrgCtx>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Every due item starts at once and waits for one of `concurrency` slots in
    // `OrgCtx::permits`, where edits go first (`priority`): the controller's own queue
    // would start them in the order they became due.
    ctrl.with_config(controller::Config::default().concurrency(0))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok(_) => {}
                Err(controller::Error::ObjectNotFound(_)) => {}
                Err(err) => warn!(error = %err, "CustomerOrg controller"),
            }
        })
        .await;
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
