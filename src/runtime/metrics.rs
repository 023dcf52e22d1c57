//! Prometheus metrics of the process (no per-object labels).
use crate::api::{CustomerOrg, CustomerOrgStatus, OrgProvider};
use crate::provider::metrics::ProviderMetrics;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardrailLabel {
    pub provider: String,
    pub guardrail: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

/// Deleting CustomerOrgs held by the offboarding guard, per OrgProvider (namespace/name).
type Held = std::collections::HashMap<String, std::collections::HashSet<String>>;

/// Outcome of one reconcile, as counted by `orgops_reconciles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileResult {
    Ok,
    Error,
    Stalled,
    Paused,
}

impl ReconcileResult {
    fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
            ReconcileResult::Stalled => "stalled",
            ReconcileResult::Paused => "paused",
        }
    }
}

/// Kind of Kubernetes write, as counted by `orgops_kube_writes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeWrite {
    Status,
    Finalizer,
    Event,
}

impl KubeWrite {
    fn as_str(self) -> &'static str {
        match self {
            KubeWrite::Status => "status",
            KubeWrite::Finalizer => "finalizer",
            KubeWrite::Event => "event",
        }
    }
}

/// Every metric family the operator exports, plus the registry that renders them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciles: Family<ResultLabel, Counter>,
    duration: Histogram,
    queue_depth: Gauge,
    leader: Gauge,
    kube_writes: Family<KindLabel, Counter>,
    offboarding_paused: Family<ProviderLabel, Gauge>,
    held: Arc<std::sync::Mutex<Held>>,
    credits_allocated: Family<ProviderLabel, Counter>,
    credit_holds: Family<GuardrailLabel, Counter>,
    parent_balance: Family<ProviderLabel, Gauge>,
    time_to_ready: Histogram,
    stores: Arc<std::sync::Mutex<Stores>>,
    pub provider: ProviderMetrics,
}

/// The leader's caches, read at each scrape for the per-state gauges (a standby has none).
#[derive(Default)]
struct Stores {
    orgs: Vec<Store<DeserializeGuard<CustomerOrg>>>,
    providers: Option<Store<OrgProvider>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "orgops_reconciles",
            "CustomerOrg reconciles by result",
            reconciles.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "orgops_reconcile_duration_seconds",
            "Time spent in one CustomerOrg reconcile",
            duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "orgops_queue_depth",
            "CustomerOrg reconciles in flight or waiting for a worker slot",
            queue_depth.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "orgops_leader",
            "1 while this process holds the leader Lease and runs the controllers",
            leader.clone(),
        );
        let kube_writes = Family::<KindLabel, Counter>::default();
        registry.register(
            "orgops_kube_writes",
            "Writes to the Kubernetes API made by the controller, by kind",
            kube_writes.clone(),
        );
        let offboarding_paused = Family::<ProviderLabel, Gauge>::default();
        registry.register(
            "orgops_offboarding_paused",
            "Deleting CustomerOrgs waiting for the offboarding window of their OrgProvider",
            offboarding_paused.clone(),
        );
        let credits_allocated = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "orgops_credits_allocated",
            "Credits moved from the parent to customers (status.credits.allocated increases)",
            credits_allocated.clone(),
        );
        let credit_holds = Family::<GuardrailLabel, Counter>::default();
        registry.register(
            "orgops_credit_holds",
            "Top-ups held by a guardrail of spec.guardrails (counted once per hold, per guardrail crossed)",
            credit_holds.clone(),
        );
        let parent_balance = Family::<ProviderLabel, Gauge>::default();
        registry.register(
            "orgops_parent_balance_credits",
            "The parent's prepaid balance, as the OrgProvider's last health check read it",
            parent_balance.clone(),
        );
        // 1 s .. ~4.5 h.
        let time_to_ready = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register(
            "orgops_customer_org_time_to_ready_seconds",
            "From a CustomerOrg's creation, or its Ready condition turning False, to Ready",
            time_to_ready.clone(),
        );
        let stores: Arc<std::sync::Mutex<Stores>> = Arc::default();
        registry.register_collector(Box::new(StateCollector(stores.clone())));
        let provider = ProviderMetrics::register(&mut registry);
        Metrics {
            credits_allocated,
            credit_holds,
            parent_balance,
            time_to_ready,
            stores,
            offboarding_paused,
            held: Arc::default(),
            registry: Arc::new(registry),
            reconciles,
            duration,
            queue_depth,
            leader,
            kube_writes,
            provider,
        }
    }

    pub fn reconciled(&self, result: ReconcileResult, seconds: f64) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
        self.duration.observe(seconds);
    }

    pub fn kube_write(&self, kind: KubeWrite) {
        self.kube_writes
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Whether the offboarding guard holds `object` (namespace/name) of `provider` now.
    pub fn offboarding_paused(&self, provider: &str, object: &str, held: bool) {
        let mut all = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let set = all.entry(provider.to_string()).or_default();
        let changed = if held {
            set.insert(object.to_string())
        } else {
            set.remove(object)
        };
        if changed || held {
            self.offboarding_paused
                .get_or_create(&ProviderLabel {
                    provider: provider.to_string(),
                })
                .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
        }
    }

    /// A new hold of a top-up by `guardrails` of `provider`.
    pub fn credits_held(&self, provider: &str, guardrails: &[String]) {
        for g in guardrails {
            self.credit_holds
                .get_or_create(&GuardrailLabel {
                    provider: provider.to_string(),
                    guardrail: g.clone(),
                })
                .inc();
        }
    }

    /// The parent balance a health check of `provider` read.
    pub fn parent_balance(&self, provider: &str, balance: i64) {
        self.parent_balance
            .get_or_create(&ProviderLabel {
                provider: provider.to_string(),
            })
            .set(balance);
    }

    /// `object` (namespace/name) is gone: no longer held for any provider.
    pub fn offboarding_gone(&self, object: &str) {
        let providers: Vec<String> = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|(_, set)| set.contains(object))
            .map(|(p, _)| p.clone())
            .collect();
        for p in providers {
            self.offboarding_paused(&p, object, false);
        }
    }

    /// A status write: counts the credits it records as moved and, when it makes the
    /// CustomerOrg Ready, the time it took.
    pub fn status_written(
        &self,
        corg: &CustomerOrg,
        old: Option<&CustomerOrgStatus>,
        new: &CustomerOrgStatus,
    ) {
        let allocated = |s: Option<&CustomerOrgStatus>| {
            s.and_then(|s| s.credits.as_ref())
                .map_or(0, |c| c.allocated)
        };
        let moved = allocated(Some(new)) - allocated(old);
        if let Ok(moved) = u64::try_from(moved)
            && moved > 0
        {
            self.credits_allocated
                .get_or_create(&ProviderLabel {
                    provider: corg.spec.provider_ref.name.clone(),
                })
                .inc_by(moved);
        }
        let ready =
            |s: Option<&CustomerOrgStatus>| ready_condition(s).is_some_and(|c| c.status == "True");
        if ready(Some(new)) && !ready(old) {
            let since = ready_condition(old)
                .map(|c| c.last_transition_time.0)
                .or(corg.metadata.creation_timestamp.as_ref().map(|t| t.0));
            if let Some(since) = since {
                let took = jiff::Timestamp::now().duration_since(since).as_secs_f64();
                self.time_to_ready.observe(took.max(0.0));
            }
        }
    }

    /// The caches the per-state gauges read (the leader's controllers; replaced each term).
    pub fn watch_stores(
        &self,
        orgs: Vec<Store<DeserializeGuard<CustomerOrg>>>,
        providers: Store<OrgProvider>,
    ) {
        let mut stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        stores.orgs = orgs;
        stores.providers = Some(providers);
    }

    /// The controllers stopped: the per-state gauges are no longer exported.
    pub fn forget_stores(&self) {
        *self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Stores::default();
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts one queued/in-flight reconcile until the guard is dropped.
    pub fn queued(&self) -> QueueGuard {
        self.queue_depth.inc();
        QueueGuard(self.queue_depth.clone())
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn ready_condition(
    status: Option<&CustomerOrgStatus>,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status?.conditions.iter().find(|c| c.type_ == "Ready")
}

/// The state a CustomerOrg is counted in by `orgops_customer_orgs`.
pub fn customer_state(corg: &CustomerOrg) -> &'static str {
    let status = corg.status.as_ref();
    let is = |type_: &str| {
        status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        })
    };
    if corg.metadata.deletion_timestamp.is_some() {
        "deleting"
    } else if corg
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::PAUSED_ANNOTATION))
        .is_some_and(|v| v == "true")
    {
        "paused"
    } else if is("Stalled") {
        "stalled"
    } else if is("Ready") {
        "ready"
    } else {
        "not_ready"
    }
}

const STATES: [&str; 5] = ["ready", "not_ready", "stalled", "paused", "deleting"];

/// Reads the leader's caches at scrape time: CustomerOrgs per state, the longest time one
/// has been not Ready, and each OrgProvider's Ready condition.
struct StateCollector(Arc<std::sync::Mutex<Stores>>);

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (orgs, providers) = {
            let stores = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let orgs: Vec<_> = stores.orgs.iter().flat_map(|s| s.state()).collect();
            let providers = stores.providers.as_ref().map(|p| p.state());
            (orgs, providers)
        };
        let Some(providers) = providers else {
            return Ok(()); // not leading: nothing cached, nothing to say
        };
        let by_state = Family::<StateLabel, Gauge>::default();
        for state in STATES {
            by_state.get_or_create(&StateLabel { state }).set(0);
        }
        let now = jiff::Timestamp::now();
        let mut not_ready_max = 0.0_f64;
        let held = Family::<GuardrailLabel, Gauge>::default();
        for guarded in &orgs {
            let Ok(corg) = &guarded.0 else { continue };
            for g in corg
                .status
                .iter()
                .flat_map(|s| s.held_credits.iter())
                .flat_map(|h| h.guardrails.iter())
            {
                held.get_or_create(&GuardrailLabel {
                    provider: corg.spec.provider_ref.name.clone(),
                    guardrail: g.clone(),
                })
                .inc();
            }
            let state = customer_state(corg);
            by_state.get_or_create(&StateLabel { state }).inc();
            if state == "not_ready" || state == "stalled" {
                let since = ready_condition(corg.status.as_ref())
                    .filter(|c| c.status != "True")
                    .map(|c| c.last_transition_time.0)
                    .or(corg.metadata.creation_timestamp.as_ref().map(|t| t.0));
                if let Some(since) = since {
                    not_ready_max = not_ready_max.max(now.duration_since(since).as_secs_f64());
                }
            }
        }
        by_state.encode(encoder.encode_descriptor(
            "orgops_customer_orgs",
            "CustomerOrgs in the leader's cache, by state",
            None,
            by_state.metric_type(),
        )?)?;
        held.encode(encoder.encode_descriptor(
            "orgops_credits_held",
            "CustomerOrgs whose top-up a guardrail holds now (status.heldCredits), per guardrail crossed",
            None,
            held.metric_type(),
        )?)?;
        let longest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        longest.set(not_ready_max);
        longest.encode(encoder.encode_descriptor(
            "orgops_customer_org_not_ready_max_seconds",
            "The longest time any CustomerOrg has been not Ready (0 when all are Ready)",
            None,
            longest.metric_type(),
        )?)?;
        let ready = Family::<ProviderLabel, Gauge>::default();
        for p in &providers {
            let up = p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            ready
                .get_or_create(&ProviderLabel {
                    provider: kube::ResourceExt::name_any(p.as_ref()),
                })
                .set(i64::from(up));
        }
        ready.encode(encoder.encode_descriptor(
            "orgops_provider_ready",
            "1 when the OrgProvider's Ready condition is True",
            None,
            ready.metric_type(),
        )?)?;
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub struct QueueGuard(Gauge);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
