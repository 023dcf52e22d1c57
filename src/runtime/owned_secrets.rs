//! A metadata-only cache of the Secrets the operator writes (label selected), so the
//! first-seen shortcut can check that a converged object's Secrets are still there and
//! ours without reading each one from the API.
use super::controller::MANAGED_BY_SELECTOR;
use super::first_seen::{ExpectedSecret, SecretVersion};
use crate::api::CustomerOrg;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::future::Future;
use std::time::Duration;
use tracing::warn;

/// `Api<PartialObjectMeta<_>>` makes metadata-only requests.
type Meta = PartialObjectMeta<Secret>;

/// One store per watched scope (a namespace, or all).
#[derive(Clone, Default)]
pub struct OwnedSecrets {
    stores: Vec<Store<Meta>>,
}

impl OwnedSecrets {
    /// Adds a cache for `namespace` (None: all); the returned future keeps it filled.
    pub fn watch(
        &mut self,
        client: Client,
        namespace: Option<&str>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let api: Api<Meta> = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let (reader, writer) = reflector::store();
        self.stores.push(reader);
        let cfg = watcher::Config::default()
            .labels(MANAGED_BY_SELECTOR)
            .page_size(super::controller::PAGE);
        let stream = reflector::reflector(
            writer,
            watcher(api, cfg)
                .default_backoff()
                .modify(super::prune::prune),
        );
        stream.for_each(|ev| async move {
            if let Err(err) = ev {
                warn!(error = %err, "owned Secret cache");
            }
        })
    }

    /// Whether every cache has listed once, waiting at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let all = futures::future::join_all(self.stores.iter().map(Store::wait_until_ready));
        matches!(tokio::time::timeout(timeout, all).await, Ok(r) if r.iter().all(Result::is_ok))
    }

    /// Versions of the Secrets `corg`'s status names; None when one is missing, not
    /// controlled by `corg`, or points at another id.
    pub fn versions(
        &self,
        corg: &CustomerOrg,
        expected: &[ExpectedSecret<'_>],
    ) -> Option<Vec<SecretVersion>> {
        let ns = corg.namespace().unwrap_or_default();
        let uid = corg.meta().uid.as_deref()?;
        expected
            .iter()
            .map(|e| {
                let key = ObjectRef::<Meta>::new(e.name).within(&ns);
                let found = self.stores.iter().find_map(|s| s.get(&key))?;
                let controlled = found
                    .owner_references()
                    .iter()
                    .any(|o| o.controller == Some(true) && o.uid == uid);
                let same_id =
                    found.annotations().get(e.id_annotation).map(String::as_str) == Some(e.id);
                (controlled && same_id).then(|| SecretVersion {
                    name: e.name.to_string(),
                    resource_version: found.resource_version().unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// The durable markers the planner reads: every Secret in the cache that `corg` controls.
impl crate::reconcile::OwnedSecretIndex for OwnedSecrets {
    fn owned(&self, corg: &CustomerOrg) -> Vec<crate::reconcile::plan::OwnedSecret> {
        let ns = corg.namespace();
        self.stores
            .iter()
            .flat_map(|s| s.state())
            .filter(|m| m.namespace() == ns)
            .filter_map(|m| crate::reconcile::secrets::owned_marker(m.as_ref(), corg))
            .collect()
    }
}
