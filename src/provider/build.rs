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
use crate::provider::youhodler::{YouhodlerClient, YouhodlerConfig, YouhodlerProvider};

/// What the credentials Secret holds, per provider type.
pub enum Credentials {
    /// Layers' parent key, Gennia's workspace key.
    ApiKey(Secret),
    /// YouHodler's OAuth client credentials.
    Client { id: String, secret: Secret },
}

/// Secret data keys of YouHodler's client credentials.
pub const CLIENT_ID_KEY: &str = "clientId";
pub const CLIENT_SECRET_KEY: &str = "clientSecret";

/// Reads the credential `spec` needs from its Secret; the error names what is missing
/// (never a value).
pub fn credentials(
    spec: &OrgProviderSpec,
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Result<Credentials, String> {
    let r = &spec.credentials_secret_ref;
    let value = |key: &str| {
        secret_value(secret, key).ok_or_else(|| {
            format!(
                "Secret {}/{} has no non-empty key {key:?}",
                r.namespace, r.name
            )
        })
    };
    Ok(match spec.provider_type {
        ProviderType::Layers | ProviderType::Gennia => {
            Credentials::ApiKey(Secret::new(value(&r.key)?))
        }
        ProviderType::Youhodler => Credentials::Client {
            id: value(CLIENT_ID_KEY)?.to_string(),
            secret: Secret::new(value(CLIENT_SECRET_KEY)?),
        },
    })
}

/// The non-empty, trimmed value of `key` in a Secret.
pub fn secret_value<'a>(
    secret: &'a k8s_openapi::api::core::v1::Secret,
    key: &str,
) -> Option<&'a str> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A built provider. Layers is kept typed: its rate-limit tier is set from whoami, and
/// the ParentWebhook kind uses Layers-only calls.
#[derive(Clone)]
pub enum Built {
    Layers(Arc<LayersProvider>),
    Gennia(Arc<GenniaProvider>),
    Youhodler(Arc<YouhodlerProvider>),
}

impl Built {
    pub fn provider(&self) -> Arc<dyn Provider> {
        match self {
            Built::Layers(p) => p.clone(),
            Built::Gennia(p) => p.clone(),
            Built::Youhodler(p) => p.clone(),
        }
    }

    pub fn layers(&self) -> Option<Arc<LayersProvider>> {
        match self {
            Built::Layers(p) => Some(p.clone()),
            Built::Gennia(_) | Built::Youhodler(_) => None,
        }
    }

    /// The same instance (a rebuild makes a new one).
    pub fn same(&self, other: &Built) -> bool {
        match (self, other) {
            (Built::Layers(a), Built::Layers(b)) => Arc::ptr_eq(a, b),
            (Built::Gennia(a), Built::Gennia(b)) => Arc::ptr_eq(a, b),
            (Built::Youhodler(a), Built::Youhodler(b)) => Arc::ptr_eq(a, b),
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

/// What the operator gives every client it builds.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// The replica's leader fence, checked before every write the client sends.
    pub fence: Option<crate::fence::Fence>,
    /// Each request's timeout (`--provider-request-timeout`); `None`: the client's default.
    pub request_timeout: Option<std::time::Duration>,
    /// Shards sharing each parent key's rate budget (`--rate-shares`): each uses 1/N.
    pub rate_shares: u32,
    /// Attempts per request and the time retries may take; `None`: the client's default
    /// (an interactive tool sets both low: fail fast rather than retry for a minute).
    pub max_attempts: Option<u32>,
    pub max_retry_time: Option<std::time::Duration>,
}

/// Builds the client for `spec` with its credentials.
pub fn build(
    spec: &OrgProviderSpec,
    creds: &Credentials,
    metrics: Option<ProviderMetrics>,
    opts: &ClientOptions,
) -> Result<Built, ProviderError> {
    let fence = opts.fence.clone();
    let mismatch = || {
        ProviderError::Invalid(format!(
            "the credentials do not fit an OrgProvider of type {:?}",
            spec.provider_type
        ))
    };
    Ok(match (spec.provider_type, creds) {
        (ProviderType::Layers, Credentials::ApiKey(key)) => {
            let mut cfg = LayersConfig::new(spec.base_url.clone(), key.clone());
            cfg.metrics = metrics;
            cfg.fence = fence;
            cfg.request_timeout = opts.request_timeout.unwrap_or(cfg.request_timeout);
            cfg.tier = fixed_tier(spec.rate_limit.tier);
            cfg.rate_shares = opts.rate_shares;
            cfg.max_attempts = opts.max_attempts.unwrap_or(cfg.max_attempts);
            cfg.max_retry_time = opts.max_retry_time.unwrap_or(cfg.max_retry_time);
            Built::Layers(Arc::new(LayersProvider::new(cfg)?))
        }
        (ProviderType::Gennia, Credentials::ApiKey(key)) => {
            let mut cfg = GenniaConfig::new(spec.base_url.clone(), key.clone());
            cfg.metrics = metrics;
            cfg.fence = fence;
            cfg.request_timeout = opts.request_timeout.unwrap_or(cfg.request_timeout);
            cfg.max_attempts = opts.max_attempts.unwrap_or(cfg.max_attempts);
            cfg.max_retry_time = opts.max_retry_time.unwrap_or(cfg.max_retry_time);
            Built::Gennia(Arc::new(GenniaProvider::new(GenniaClient::new(cfg)?)))
        }
        (ProviderType::Youhodler, Credentials::Client { id, secret }) => {
            let mut cfg = YouhodlerConfig::new(spec.base_url.clone(), id.clone(), secret.clone());
            cfg.enterprise_id = spec
                .youhodler
                .as_ref()
                .and_then(|y| y.enterprise_id.clone());
            cfg.metrics = metrics;
            cfg.fence = fence;
            cfg.request_timeout = opts.request_timeout.unwrap_or(cfg.request_timeout);
            cfg.max_attempts = opts.max_attempts.unwrap_or(cfg.max_attempts);
            cfg.max_retry_time = opts.max_retry_time.unwrap_or(cfg.max_retry_time);
            Built::Youhodler(Arc::new(YouhodlerProvider::new(YouhodlerClient::new(cfg)?)))
        }
        _ => return Err(mismatch()),
    })
}

/// Reads OrgProvider `name` and its credentials Secret from the cluster and builds its
/// client, as `orgops plan` and `orgops import` do (GETs only); the error says which read
/// failed or what is missing (never a value).
pub async fn from_cluster(
    client: &kube::Client,
    name: &str,
) -> Result<(crate::api::OrgProvider, Built), String> {
    let api: kube::Api<crate::api::OrgProvider> = kube::Api::all(client.clone());
    let op = api
        .get_opt(name)
        .await
        .map_err(|e| format!("reading OrgProvider {name}: {e}"))?
        .ok_or_else(|| format!("OrgProvider {name:?} does not exist"))?;
    let r = &op.spec.credentials_secret_ref;
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &r.namespace);
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| {
            format!(
                "reading OrgProvider {name}'s credentials Secret {}/{}: {e}",
                r.namespace, r.name
            )
        })?
        .ok_or_else(|| format!("Secret {}/{} does not exist", r.namespace, r.name))?;
    let creds = credentials(&op.spec, &secret)?;
    let built = build(&op.spec, &creds, None, &ClientOptions::default())
        .map_err(|e| format!("OrgProvider {name}: cannot build a client: {}", e.message()))?;
    Ok((op, built))
}
