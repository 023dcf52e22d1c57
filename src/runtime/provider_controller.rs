//! Controller for OrgProviders: reads the parent key, checks it with whoami, sizes the
//! rate limiter, reports Ready/Stalled and publishes the provider to the registry.
use super::error::RuntimeError;
use super::funds::Funds;
use super::metrics::{KubeWrite, Metrics};
use super::registry::{Fingerprint, Registry, Slot};
use super::requeue::{self, Backoff};
use crate::api::conditions::{self, Cond, READY, STALLED};
use crate::api::{FIELD_MANAGER, OrgProvider, OrgProviderStatus};
use crate::provider::build::{build, credentials, fixed_tier};
use crate::provider::error::ProviderError;
use crate::provider::layers::RateTier;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, debug, info, info_span, warn};

pub struct ProviderCtx {
    pub client: Client,
    pub registry: Arc<Registry>,
    pub metrics: Metrics,
    pub resync: Duration,
    pub backoff: Backoff<String>,
    /// Namespaced mode: the namespaces whose Secrets this installation may read (watched +
    /// its own). An OrgProvider with credentials elsewhere belongs to another installation.
    pub credential_namespaces: Option<Vec<String>>,
    /// The leader fence (checked before the status write) and the request timeout: given to
    /// every client built.
    pub client_options: crate::provider::build::ClientOptions,
    /// Customers waiting on the parent's funds; the balance each check reads.
    pub funds: Arc<Funds>,
    /// How often the check runs while customers wait on funds (`--funds-check-interval`).
    pub funds_interval: Duration,
}

/// The result of checking one OrgProvider.
struct Check {
    slot: Slot,
    stalled: bool,
    organization_id: Option<String>,
    tier: Option<RateTier>,
    /// Transient failure: retry with backoff rather than slowly.
    transient: bool,
    /// The parent's prepaid balance (providers whose credits move from it), when read.
    balance: Option<i64>,
}

/// Builds the OrgProvider controller. `store()` of the returned controller lets the
/// CustomerOrg controller look providers up. Credential Secrets are watched for rotation
/// in `secret_namespaces` (None: all namespaces); a Secret elsewhere is still read, and a
/// rotation of it is noticed at the next resync.
pub fn controller(client: Client, secret_namespaces: Option<&[String]>) -> Controller<OrgProvider> {
    let providers: Api<OrgProvider> = Api::all(client.clone());
    let mut ctrl = Controller::new(providers, watcher::Config::default().any_semantic());
    // Metadata only: a rotated parent key shows up as a new resourceVersion without
    // caching every Secret's data.
    let apis: Vec<Api<PartialObjectMeta<Secret>>> = match secret_namespaces {
        None => vec![Api::all(client)],
        Some(namespaces) => namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect(),
    };
    for secrets in apis {
        let store = ctrl.store();
        ctrl = ctrl.watches(
            secrets,
            watcher::Config::default().any_semantic(),
            move |secret: PartialObjectMeta<Secret>| {
                referencing(
                    &store,
                    &secret.namespace().unwrap_or_default(),
                    &secret.name_any(),
                )
            },
        );
    }
    ctrl
}

/// OrgProviders whose first customer just began waiting on funds: checked now (their
/// balance read), then polled while anyone waits.
pub fn woken(
    funds: &Funds,
) -> impl futures::Stream<Item = ObjectRef<OrgProvider>> + Send + 'static {
    futures::stream::unfold(funds.wakes(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(name) => return Some((ObjectRef::new(&name), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn referencing(store: &Store<OrgProvider>, ns: &str, name: &str) -> Vec<ObjectRef<OrgProvider>> {
    store
        .state()
        .iter()
        .filter(|p| {
            let r = &p.spec.credentials_secret_ref;
            r.namespace == ns && r.name == name
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

pub async fn reconcile(
    op: Arc<OrgProvider>,
    ctx: Arc<ProviderCtx>,
) -> Result<Action, RuntimeError> {
    let name = op.name_any();
    let span = info_span!("reconcile_provider", provider = %name);
    let creds_ns = &op.spec.credentials_secret_ref.namespace;
    if let Some(allowed) = &ctx.credential_namespaces
        && !allowed.contains(creds_ns)
    {
        // Not checked, no status written: the installation that can read it does that.
        debug!(provider = %name, namespace = %creds_ns,
            "OrgProvider credentials outside this operator's namespaces; not checked here");
        return Ok(Action::await_change());
    }
    async move {
        let check = check(&op, &ctx).await?;
        let status = status_for(&op, &check);
        ctx.registry.store(&name, check.slot.clone());
        if let Some(balance) = check.balance {
            ctx.metrics.parent_balance(&name, balance);
            let floor = op
                .spec
                .guardrails
                .as_ref()
                .and_then(|g| g.min_parent_balance);
            let due = ctx.funds.observed(&name, balance, floor);
            if !due.is_empty() {
                info!(
                    balance,
                    customers = due.len(),
                    "the parent's balance rose; re-triggering the customers waiting on funds"
                );
            }
        }
        if !same_status(op.status.as_ref(), &status) {
            if let Some(fence) = &ctx.client_options.fence {
                fence.check()?;
            }
            let api: Api<OrgProvider> = Api::all(ctx.client.clone());
            let patch = serde_json::json!({
                "apiVersion": crate::api::API_VERSION,
                "kind": "OrgProvider",
                "status": status,
            });
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
            ctx.metrics.kube_write(KubeWrite::Status);
            match &check.slot.health {
                Ok(()) => info!(tier = ?check.tier.map(RateTier::as_str), "provider Ready"),
                Err((reason, message)) => warn!(%reason, %message, "provider not Ready"),
            }
        }
        let action = match (&check.slot.health, check.transient) {
            (Ok(()), _) => {
                ctx.backoff.succeeded(&name);
                // While customers wait on the parent's funds, look at the balance often.
                let every = if ctx.funds.anyone_waiting(&name) {
                    ctx.funds_interval.min(ctx.resync)
                } else {
                    ctx.resync
                };
                Action::requeue(requeue::jitter(every))
            }
            (Err(_), true) => Action::requeue(ctx.backoff.failed(name.clone())),
            (Err(_), false) => Action::requeue(requeue::jitter(requeue::SLOW)),
        };
        Ok(action)
    }
    .instrument(span)
    .await
}

pub fn error_policy(op: Arc<OrgProvider>, err: &RuntimeError, ctx: Arc<ProviderCtx>) -> Action {
    warn!(provider = %op.name_any(), error = %err, "OrgProvider reconcile failed");
    Action::requeue(ctx.backoff.failed(op.name_any()))
}

async fn check(op: &OrgProvider, ctx: &ProviderCtx) -> Result<Check, RuntimeError> {
    let mut fingerprint = Fingerprint {
        uid: op.uid().unwrap_or_default(),
        generation: op.metadata.generation,
        secret_version: String::new(),
    };
    let failed = |fingerprint: Fingerprint, reason: &str, message: String, stalled: bool| Check {
        slot: Slot {
            fingerprint,
            provider: None,
            health: Err((reason.to_string(), message)),
        },
        stalled,
        organization_id: None,
        tier: None,
        transient: false,
        balance: None,
    };
    let r = &op.spec.credentials_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &r.namespace);
    let Some(secret) = secrets.get_opt(&r.name).await? else {
        let msg = format!("Secret {}/{} does not exist", r.namespace, r.name);
        return Ok(failed(fingerprint, "CredentialsMissing", msg, true));
    };
    fingerprint.secret_version = secret.resource_version().unwrap_or_default();
    let creds = match credentials(&op.spec, &secret) {
        Ok(c) => c,
        Err(msg) => return Ok(failed(fingerprint, "CredentialsMissing", msg, true)),
    };
    let built = match ctx.registry.reusable(&op.name_any(), &fingerprint) {
        Some(p) => p,
        None => match build(
            &op.spec,
            &creds,
            Some(ctx.metrics.provider.clone()),
            &ctx.client_options,
        ) {
            Ok(b) => b,
            Err(err) => {
                let msg = format!("cannot build a client: {}", err.message());
                return Ok(failed(fingerprint, "InvalidConfiguration", msg, true));
            }
        },
    };
    let provider = built.provider();
    match provider.whoami().await {
        Ok(identity) => {
            let admin = identity.scopes.is_empty()
                || identity.scopes.iter().any(|s| s == "org:admin" || s == "*");
            if !admin {
                let msg = "the parent key lacks scope org:admin".to_string();
                return Ok(failed(fingerprint, "Forbidden", msg, true));
            }
            // A rate-limit tier is Layers' notion; Gennia documents none.
            let tier = built.layers().map(|layers| {
                let tier = fixed_tier(op.spec.rate_limit.tier)
                    .unwrap_or_else(|| RateTier::from_whoami(&identity.rate_limit_tier));
                layers.set_tier(tier);
                tier
            });
            let balance = if provider.capabilities().allocation_ledger {
                match provider.parent_balance().await {
                    Ok(b) => Some(b),
                    Err(err) => {
                        // The key works; the balance is news for waiting customers only.
                        warn!(code = err.code(), message = %err.message(), "reading the parent's balance failed");
                        None
                    }
                }
            } else {
                None
            };
            Ok(Check {
                slot: Slot {
                    fingerprint,
                    provider: Some(built),
                    health: Ok(()),
                },
                stalled: false,
                organization_id: Some(identity.organization_id),
                tier,
                transient: false,
                balance,
            })
        }
        Err(err) => {
            let (reason, transient) = classify(&err);
            let msg = format!("whoami failed: {} {}", err.code(), err.message());
            let mut check = failed(fingerprint, reason, msg, !transient);
            check.transient = transient;
            Ok(check)
        }
    }
}

/// Condition reason for a failed whoami, and whether it is worth retrying soon.
fn classify(err: &ProviderError) -> (&'static str, bool) {
    match err {
        ProviderError::Unauthenticated(_) => ("Unauthorized", false),
        ProviderError::ForbiddenScope(_) => ("Forbidden", false),
        ProviderError::KillSwitch(_) => ("KillSwitch", false),
        e if e.is_retryable() => (super::registry::UNREACHABLE, true),
        _ => ("ApiRejected", false),
    }
}

fn status_for(op: &OrgProvider, check: &Check) -> OrgProviderStatus {
    let previous = op.status.clone().unwrap_or_default();
    let generation = op.metadata.generation;
    let (ready, stalled) = match &check.slot.health {
        Ok(()) => (
            Cond::new(READY, true, "Authenticated", "the parent key works"),
            Cond::new(STALLED, false, "Authenticated", "the parent key works"),
        ),
        Err((reason, message)) => (
            Cond::new(READY, false, reason, message.clone()),
            Cond::new(STALLED, check.stalled, reason, message.clone()),
        ),
    };
    let wanted = [ready.generation(generation), stalled.generation(generation)];
    OrgProviderStatus {
        // Keep what was last learnt when whoami fails: still true, and avoids flapping writes.
        organization_id: check
            .organization_id
            .clone()
            .or(previous.organization_id.clone()),
        rate_limit_tier: check
            .tier
            .map(|t| t.as_str().to_string())
            .or(previous.rate_limit_tier.clone()),
        observed_generation: generation,
        capabilities: match &check.slot.provider {
            Some(p) => p.provider().capabilities().names(),
            None => previous.capabilities.clone(),
        },
        conditions: conditions::settle(&previous.conditions, &wanted, &conditions::now()),
        // Never applied by this field manager: the offboarding guard owns it (written by
        // the CustomerOrg controller as orgops-offboarding), and the credit guard owns the
        // credit window (orgops-credits). Left out of the apply, server-side apply leaves
        // them alone; were they in, a stale copy here would undo a claim.
        offboarding: Vec::new(),
        credit_window: Vec::new(),
    }
}

/// Whether the status already says what this controller would apply (the offboarding
/// and credit windows, written by other field managers, are not ours to compare).
fn same_status(current: Option<&OrgProviderStatus>, wanted: &OrgProviderStatus) -> bool {
    current.is_some_and(|c| {
        let mut c = c.clone();
        c.offboarding = Vec::new();
        c.credit_window = Vec::new();
        &c == wanted
    })
}

/// Runs the OrgProvider controller until `shutdown` resolves.
pub async fn run(
    ctrl: Controller<OrgProvider>,
    ctx: Arc<ProviderCtx>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    ctrl.with_config(controller::Config::default().concurrency(4))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                warn!(error = %err, "OrgProvider controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OffboardingEntry;

    #[test]
    fn the_offboarding_and_credit_windows_are_neither_compared_nor_applied() {
        let wanted = OrgProviderStatus {
            organization_id: Some("org_1".into()),
            ..Default::default()
        };
        let mut current = wanted.clone();
        current.offboarding.push(OffboardingEntry {
            namespace: "ns".into(),
            name: "a".into(),
            uid: "u".into(),
            time: conditions::now(),
            confirmed: false,
        });
        current.credit_window.push(crate::api::CreditWindowEntry {
            minute: conditions::now(),
            credits: 5,
            transfers: 1,
        });
        assert!(
            same_status(Some(&current), &wanted),
            "no write for the windows alone"
        );
        assert!(!same_status(None, &wanted));
        let applied = serde_json::to_value(&wanted).expect("json");
        assert!(
            applied.get("offboarding").is_none() && applied.get("creditWindow").is_none(),
            "the apply must not own status.offboarding or status.creditWindow: {applied}"
        );
    }
}
