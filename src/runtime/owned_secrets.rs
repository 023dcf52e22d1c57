//! A metadata-only cache of the Secrets the operator writes (label selected), so the
//! first-seen shortcut can check that a converged object's Secrets are still there and
//! ours without reading each one from the API, and the planner finds the Secrets an object
//! controls (its durable markers). Kept as a small index (controller uid, resourceVersion,
//! `orgops.dev/` annotations) by key and by controller: not a reflector store of metadata.
use super::controller::MANAGED_BY_SELECTOR;
use super::first_seen::{ExpectedSecret, SecretVersion};
use crate::api::CustomerOrg;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tracing::warn;

/// `Api<PartialObjectMeta<_>>` makes metadata-only requests.
type Meta = PartialObjectMeta<Secret>;

/// What the cache keeps of one Secret: its controller's uid, its resourceVersion and its
/// `orgops.dev/` annotations (nothing else is read). Boxed strings and a slice instead of
/// a map: a map node per Secret was most of this cache's size (docs/benchmarks.md).
#[derive(Clone, Debug, PartialEq)]
struct Marker {
    controller: Option<Box<str>>,
    resource_version: Box<str>,
    annotations: Box<[(Box<str>, Box<str>)]>,
}

impl Marker {
    fn of(m: &Meta) -> Marker {
        Marker {
            controller: m
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.as_str().into()),
            resource_version: m.resource_version().unwrap_or_default().into(),
            annotations: m
                .annotations()
                .iter()
                .filter(|(k, _)| k.starts_with("orgops.dev/"))
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect(),
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|(k, _)| **k == *key)
            .map(|(_, v)| &**v)
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        self.annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// (namespace, name)
type Key = (Box<str>, Box<str>);

fn key(ns: &str, name: &str) -> Key {
    (ns.into(), name.into())
}

/// The Secrets by key, and by controller uid: a reconcile looks up its own Secrets
/// instead of scanning every one (which made each pass O(Secrets)).
#[derive(Default)]
struct Index {
    by_key: HashMap<Key, Marker>,
    /// Usually two or three Secrets per controller: a Vec.
    by_owner: HashMap<Box<str>, Vec<Key>>,
}

impl Index {
    fn insert(&mut self, key: Key, marker: Marker) {
        self.remove(&key);
        if let Some(uid) = &marker.controller {
            self.by_owner
                .entry(uid.clone())
                .or_default()
                .push(key.clone());
        }
        self.by_key.insert(key, marker);
    }

    fn remove(&mut self, key: &Key) {
        let Some(old) = self.by_key.remove(key) else {
            return;
        };
        if let Some(uid) = old.controller
            && let Some(keys) = self.by_owner.get_mut(&uid)
        {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_owner.remove(&uid);
            }
        }
    }
}

struct Shared {
    index: RwLock<Index>,
    /// Scopes that have listed at least once.
    listed: tokio::sync::watch::Sender<usize>,
    scopes: std::sync::atomic::AtomicUsize,
}

/// The label-selected Secrets of every watched scope (a namespace, or all).
#[derive(Clone)]
pub struct OwnedSecrets {
    shared: Arc<Shared>,
}

impl Default for OwnedSecrets {
    fn default() -> Self {
        OwnedSecrets {
            shared: Arc::new(Shared {
                index: RwLock::new(Index::default()),
                listed: tokio::sync::watch::Sender::new(0),
                scopes: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }
}

fn key_of(m: &Meta) -> Key {
    key(&m.namespace().unwrap_or_default(), &m.name_any())
}

impl OwnedSecrets {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.shared
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.shared
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

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
        self.shared
            .scopes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let cfg = watcher::Config::default()
            .labels(MANAGED_BY_SELECTOR)
            .page_size(super::controller::PAGE);
        let this = self.clone();
        let scope = namespace.map(str::to_string);
        let mut relist: Option<Vec<(Key, Marker)>> = None;
        let mut listed_once = false;
        watcher(api, cfg).default_backoff().for_each(move |ev| {
            match ev {
                Ok(watcher::Event::Init) => relist = Some(Vec::new()),
                Ok(watcher::Event::InitApply(m)) => {
                    if let Some(buf) = relist.as_mut() {
                        buf.push((key_of(&m), Marker::of(&m)));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    let fresh = relist.take().unwrap_or_default();
                    this.replace_scope(scope.as_deref(), fresh);
                    if !listed_once {
                        listed_once = true;
                        this.shared.listed.send_modify(|n| *n += 1);
                    }
                }
                Ok(watcher::Event::Apply(m)) => this.write().insert(key_of(&m), Marker::of(&m)),
                Ok(watcher::Event::Delete(m)) => this.write().remove(&key_of(&m)),
                Err(err) => warn!(error = %err, "owned Secret cache"),
            }
            std::future::ready(())
        })
    }

    /// After a (re)list of `scope`: exactly the listed Secrets remain in it.
    fn replace_scope(&self, scope: Option<&str>, fresh: Vec<(Key, Marker)>) {
        let mut index = self.write();
        let stale: Vec<Key> = index
            .by_key
            .keys()
            .filter(|(ns, _)| scope.is_none_or(|s| *s == **ns))
            .cloned()
            .collect();
        for key in stale {
            index.remove(&key);
        }
        for (key, marker) in fresh {
            index.insert(key, marker);
        }
    }

    /// Whether every cache has listed once, waiting at most `timeout`.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let scopes = self.shared.scopes.load(std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.shared.listed.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|n| *n >= scopes)).await,
            Ok(Ok(_))
        )
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
        let index = self.read();
        expected
            .iter()
            .map(|e| {
                let found = index.by_key.get(&key(&ns, e.name))?;
                let controlled = found.controller.as_deref() == Some(uid);
                let same_id = found.annotation(e.id_annotation) == Some(e.id);
                (controlled && same_id).then(|| SecretVersion {
                    name: e.name.to_string(),
                    resource_version: found.resource_version.to_string(),
                })
            })
            .collect()
    }
}

/// The durable markers the planner reads: every Secret in the cache that `corg` controls.
impl crate::reconcile::OwnedSecretIndex for OwnedSecrets {
    fn owned(&self, corg: &CustomerOrg) -> Vec<crate::reconcile::plan::OwnedSecret> {
        let Some(uid) = corg.meta().uid.as_deref() else {
            return Vec::new();
        };
        let index = self.read();
        index
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|key| {
                let m = index.by_key.get(key)?;
                crate::reconcile::secrets::marker(&key.1, &m.annotations())
            })
            .collect()
    }
}
