//! Shards on Kubernetes' own machinery: a replica started with `--shard-selector` lists,
//! watches, caches and reconciles only the CustomerOrgs and ParentWebhooks whose labels
//! match it, under its own leader Lease (`--lease-name`). The API server filters the
//! watch, so a shard's memory is its objects' share. Objects are assigned by a label the
//! user (or GitOps) sets, as Flux shards its controllers: with Helm `shards: N`, shard 0
//! takes every object without `orgops.dev/shard` (or with a value no other shard takes)
//! and shard i > 0 takes `orgops.dev/shard=i`. Claims (docs/architecture.md "Claims") are
//! Leases every shard reads, so two shards never own one org. Each parent key's rate
//! budget is split with `--rate-shares`.

use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use tracing::warn;

use super::error::RuntimeError;
use crate::api::CustomerOrg;

/// The label that assigns an object to a shard (Helm `shards: N`).
pub const SHARD_LABEL: &str = "orgops.dev/shard";

/// What one controller watches: a namespace (`None`: all) and a shard's selector.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    pub namespace: Option<&'a str>,
    pub selector: Option<&'a str>,
}

impl Scope<'_> {
    pub fn api<K>(&self, client: kube::Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }

    pub fn config(&self) -> watcher::Config {
        config(self.selector)
    }
}

/// The watch configuration of a shard's objects (`None`: every object).
pub fn config(selector: Option<&str>) -> watcher::Config {
    let cfg = watcher::Config::default().any_semantic();
    match selector {
        Some(s) => cfg.labels(s),
        None => cfg,
    }
}

/// Refuses a selector the API server refuses, at start-up (a watch would only retry it).
/// Other errors (e.g. RBAC not granted yet) are left to the watches to report.
pub async fn check(
    client: &kube::Client,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<(), RuntimeError> {
    let Some(selector) = selector else {
        return Ok(());
    };
    let api: Api<CustomerOrg> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api
        .list_metadata(&ListParams::default().labels(selector).limit(1))
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 400 => Err(RuntimeError::Config(format!(
            "--shard-selector {selector:?} is not a valid label selector: {}",
            e.message
        ))),
        Err(err) => {
            warn!(error = %err, "cannot check --shard-selector yet");
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_watches_only_its_selector() {
        assert_eq!(config(Some("a=b")).label_selector.as_deref(), Some("a=b"));
        assert_eq!(config(None).label_selector, None);
    }
}
