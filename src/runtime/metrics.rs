//! Prometheus metrics of the process (no per-object labels).
use crate::provider::metrics::ProviderMetrics;
use prometheus_client::encoding::EncodeLabelSet;
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
    pub provider: ProviderMetrics,
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
        let provider = ProviderMetrics::register(&mut registry);
        Metrics {
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
mod tests {
    use super::*;

    #[test]
    fn families_render_without_object_labels() {
        let m = Metrics::new();
        m.reconciled(ReconcileResult::Ok, 0.2);
        m.reconciled(ReconcileResult::Stalled, 0.1);
        m.kube_write(KubeWrite::Status);
        m.set_leader(true);
        let guard = m.queued();
        let text = m.render().expect("render");
        assert!(
            text.contains("orgops_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("orgops_reconciles_total{result=\"stalled\"} 1"));
        assert!(text.contains("orgops_reconcile_duration_seconds_count 2"));
        assert!(text.contains("orgops_kube_writes_total{kind=\"status\"} 1"));
        assert!(text.contains("orgops_leader 1"));
        assert!(text.contains("orgops_queue_depth 1"));
        drop(guard);
        assert!(m.render().expect("render").contains("orgops_queue_depth 0"));
    }

    #[test]
    fn held_offboardings_are_counted_once_per_object() {
        let m = Metrics::new();
        m.offboarding_paused("p", "ns/a", true);
        m.offboarding_paused("p", "ns/a", true);
        m.offboarding_paused("p", "ns/b", true);
        m.offboarding_paused("q", "ns/c", false);
        let text = m.render().expect("render");
        assert!(
            text.contains("orgops_offboarding_paused{provider=\"p\"} 2"),
            "{text}"
        );
        m.offboarding_paused("p", "ns/a", false);
        m.offboarding_gone("ns/b");
        let text = m.render().expect("render");
        assert!(
            text.contains("orgops_offboarding_paused{provider=\"p\"} 0"),
            "{text}"
        );
    }
}
