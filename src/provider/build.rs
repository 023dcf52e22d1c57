//! One client per `OrgProvider`, of the type its spec names: where a fourth provider is
//! added (with its `Provider` impl and `Capabilities`).

use std::sync::Arc;

use crate::api::{OrgProviderSpec, ProviderType, RateTierSpec};
use crate::provider::Provider;
use crate::provider::error::ProviderError;
use crate::provider::gennia::{GenniaClient, GenniaConfig, GenniaProvider};
use crate::provider::layers::{LayersConfig, LayersProvider, RateTier};
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::Secret;

/// A built provider. Layers is kept typed: its rate-limit tier is set from whoami, and
/// the ParentWebhook kind uses Layers-only calls.
#[derive(Clone)]
pub enum Built {
    Layers(Arc<LayersProvider>),
    Gennia(Arc<GenniaProvider>),
}

impl Built {
    pub fn provider(&self) -> Arc<dyn Provider> {
        match self {
            Built::Layers(p) => p.clone(),
            Built::Gennia(p) => p.clone(),
        }
    }

    pub fn layers(&self) -> Option<Arc<LayersProvider>> {
        match self {
            Built::Layers(p) => Some(p.clone()),
            Built::Gennia(_) => None,
        }
    }

    /// The same instance (a rebuild makes a new one).
    pub fn same(&self, other: &Built) -> bool {
        match (self, other) {
            (Built::Layers(a), Built::Layers(b)) => Arc::ptr_eq(a, b),
            (Built::Gennia(a), Built::Gennia(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The tier a spec fixes (`auto` fixes none: whoami says).
pub fn fixed_tier(spec: RateTierSpec) -> Option<RateTier> {
    match spec {
        RateTierSpec::Auto => None,
        RateTierSpec::Standard => Some(RateTier::Standard),
        RateTierSpec::Pilot => Some(RateTier::Pilot),
        RateTierSpec::Partner => Some(RateTier::Partner),
        RateTierSpec::Unlimited => Some(RateTier::Unlimited),
    }
}

/// Builds the client for `spec` with the credential `key`.
pub fn build(
    spec: &OrgProviderSpec,
    key: &str,
    metrics: Option<ProviderMetrics>,
) -> Result<Built, ProviderError> {
    Ok(match spec.provider_type {
        ProviderType::Layers => {
            let mut cfg = LayersConfig::new(spec.base_url.clone(), Secret::new(key));
            cfg.metrics = metrics;
            cfg.tier = fixed_tier(spec.rate_limit.tier);
            Built::Layers(Arc::new(LayersProvider::new(cfg)?))
        }
        ProviderType::Gennia => {
            let mut cfg = GenniaConfig::new(spec.base_url.clone(), Secret::new(key));
            cfg.metrics = metrics;
            Built::Gennia(Arc::new(GenniaProvider::new(GenniaClient::new(cfg)?)))
        }
    })
}
