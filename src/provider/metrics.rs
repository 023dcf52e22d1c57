//! Provider metrics. Labels are bounded: route templates, HTTP methods and status codes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteMethodLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

#[derive(Clone)]
pub struct ProviderMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: HistogramFamily<RouteMethodLabels>,
    pub rate_limit_wait: Histogram,
    pub retries: Family<RouteLabels, Counter>,
}

impl ProviderMetrics {
    /// Metrics that are not exported anywhere (tests, or no registry configured).
    pub fn unregistered() -> ProviderMetrics {
        ProviderMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            rate_limit_wait: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            retries: Family::default(),
        }
    }

    pub fn register(registry: &mut Registry) -> ProviderMetrics {
        let m = ProviderMetrics::unregistered();
        registry.register(
            "orgops_provider_requests",
            "Provider API requests by route template, method and status",
            m.requests.clone(),
        );
        registry.register(
            "orgops_provider_request_duration_seconds",
            "Provider API request latency",
            m.duration.clone(),
        );
        registry.register(
            "orgops_provider_rate_limit_wait_seconds",
            "Time requests waited for a client-side rate-limit token",
            m.rate_limit_wait.clone(),
        );
        registry.register(
            "orgops_provider_retries",
            "Provider API requests re-sent after a transient failure",
            m.retries.clone(),
        );
        m
    }

    pub(crate) fn observe(&self, route: &str, method: &str, status: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                method: method.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&RouteMethodLabels {
                route: route.to_string(),
                method: method.to_string(),
            })
            .observe(seconds);
    }

    pub(crate) fn retried(&self, route: &str) {
        self.retries
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .inc();
    }

    /// Count of responses with `status` (e.g. "429") across all routes.
    pub fn responses_with_status(&self, status: &str) -> u64 {
        // A Family cannot be iterated, so count through the text encoding (tests, benchmarks).
        let mut total = 0;
        let mut registry = Registry::default();
        registry.register("r", "", self.requests.clone());
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_ok() {
            let needle = format!("status=\"{status}\"");
            for line in out.lines().filter(|l| l.contains(&needle)) {
                if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                    total += v as u64;
                }
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_are_exported_with_bounded_labels() {
        let mut registry = Registry::default();
        let m = ProviderMetrics::register(&mut registry);
        m.observe("/v1/organizations/:orgId", "GET", "200", 0.01);
        m.observe("/v1/organizations/:orgId", "GET", "429", 0.01);
        m.observe("/v1/organizations", "POST", "429", 0.01);
        m.retried("/v1/organizations");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("orgops_provider_requests_total{route=\"/v1/organizations/:orgId\",method=\"GET\",status=\"200\"} 1"));
        assert!(out.contains("orgops_provider_request_duration_seconds_count"));
        assert!(out.contains("orgops_provider_rate_limit_wait_seconds"));
        assert!(out.contains("orgops_provider_retries_total{route=\"/v1/organizations\"} 1"));
        assert_eq!(m.responses_with_status("429"), 2);
        assert_eq!(m.responses_with_status("200"), 1);
    }
}
