//! A metadata-only cache of the Secrets the operator writes (label selected), so the
//! first-seen shortcut can check that a converged object's Secrets are still there and
//! ours without reading each one from the API, and the planner finds the Secrets an object
//! controls (its durable markers). Kept as a small index (controller uid, resourceVersion,
//! `orgops.dev/` annotations) by key and by controller: not a reflector store of metadata.
use super::controller::MANAGED_BY_SELECTOR;
use super::first_seen::{ExpectedSecret, SecretVersion};
use crate::api::CustomerOrg;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tracing::warn;

/// `Api<PartialObjectMeta<_>>` makes metadata-only requests.
pub type Meta = PartialObjectMeta<Secret>;

/// The sending end of a controller's owner trigger (`trigger`).
pub type Trigger = mpsc::Sender<Meta>;

/// Room for a burst of Secret events while a controller is busy; beyond it the watch
/// waits for the controller (nothing is dropped).
const TRIGGER_BUFFER: usize = 1024;

/// A controller's owner trigger fed by the scope's one Secret watch (`OwnedSecrets::watch`):
/// the sender for `watch`, the stream for `Controller::owns_stream`.
pub fn trigger() -> (
    Trigger,
    impl futures::Stream<Item = Result<Meta, watcher::Error>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(TRIGGER_BUFFER);
    (tx, rx.map(Ok))
}

/// Hands `m` to every trigger; a stopped controller's is dropped from the list.
async fn forward(triggers: &mut Vec<Trigger>, m: Meta) {
    let mut open = Vec::with_capacity(triggers.len());
    for mut tx in triggers.drain(..) {
        if tx.send(m.clone()).await.is_ok() {
            open.push(tx);
        }
    }
    *triggers = open;
}

/// What the cache keeps of one Secret: its controller's uid, its resourceVersion and its
/// `orgops.dev/` annotations (nothing else is read). Boxed strings and a slice instead of
/// a map: a map node per Secret was most of this cache's size; the annotation keys are
/// shared (`Strings`), every Secret repeats the same few (docs/benchmarks.md).
#[derive(Clone, Debug, PartialEq)]
struct Marker {
    controller: Option<Box<str>>,
    resource_version: Box<str>,
    annotations: Box<[(Arc<str>, Box<str>)]>,
}

impl Marker {
    fn of(m: &Meta, strings: &mut Strings) -> Marker {
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
                .map(|(k, v)| (strings.get(k), v.as_str().into()))
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

/// One shared copy of each string that many entries repeat (namespaces, annotation keys):
/// a handful of distinct values held by every Secret. Pruned after each relist.
#[derive(Default)]
struct Strings(HashSet<Arc<str>>);

impl Strings {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(s) {
            return shared.clone();
        }
        let shared: Arc<str> = s.into();
        self.0.insert(shared.clone());
        shared
    }

    /// Drops the strings no entry holds any more.
    fn prune(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }
}

/// One watched scope's progress through its (re)lists.
struct ScopeState {
    scope: Option<String>,
    /// The Secrets of a relist in progress.
    relist: Option<Vec<(Key, Marker)>>,
    listed_once: bool,
}

/// (namespace, name); the namespace shared (`Strings`).
type Key = (Arc<str>, Box<str>);

/// A key to look an entry up with (not stored: its namespace is not shared).
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
    /// Taken after `index` when both are held.
    strings: Mutex<Strings>,
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
                strings: Mutex::new(Strings::default()),
                listed: tokio::sync::watch::Sender::new(0),
                scopes: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }
}

impl OwnedSecrets {
    fn strings(&self) -> std::sync::MutexGuard<'_, Strings> {
        self.shared
            .strings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry to store for `m`: its key and marker, sharing the repeated strings.
    fn entry(&self, m: &Meta) -> (Key, Marker) {
        let mut strings = self.strings();
        let ns = strings.get(&m.namespace().unwrap_or_default());
        ((ns, m.name_any().into()), Marker::of(m, &mut strings))
    }

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

    /// Adds a cache for `namespace` (None: all). The returned future keeps it filled from
    /// the one watch of the operator's Secrets in that scope (label selected, metadata
    /// only), and forwards every Secret it touched, after the index has it, to each of
    /// `triggers` (the CustomerOrg and ParentWebhook controllers' owner triggers): one
    /// watch per scope instead of one per consumer, and a trigger never sees an index older
    /// than its event.
    pub fn watch(
        &mut self,
        client: Client,
        namespace: Option<&str>,
        triggers: Vec<Trigger>,
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
        async move {
            let mut triggers = triggers;
            let mut state = ScopeState {
                scope,
                relist: None,
                listed_once: false,
            };
            let mut events = std::pin::pin!(watcher(api, cfg).default_backoff());
            while let Some(ev) = events.next().await {
                if let Some(m) = this.on_event(&mut state, ev) {
                    forward(&mut triggers, m).await;
                }
            }
        }
    }

    /// Applies one watch event to the index; returns the Secret it touched, to trigger its
    /// owner (after the index has it).
    fn on_event(
        &self,
        state: &mut ScopeState,
        ev: Result<watcher::Event<Meta>, watcher::Error>,
    ) -> Option<Meta> {
        match ev {
            Ok(watcher::Event::Init) => {
                state.relist = Some(Vec::new());
                None
            }
            Ok(watcher::Event::InitApply(m)) => {
                if let Some(buf) = state.relist.as_mut() {
                    buf.push(self.entry(&m));
                }
                Some(m)
            }
            Ok(watcher::Event::InitDone) => {
                let fresh = state.relist.take().unwrap_or_default();
                self.replace_scope(state.scope.as_deref(), fresh);
                if !state.listed_once {
                    state.listed_once = true;
                    self.shared.listed.send_modify(|n| *n += 1);
                }
                None
            }
            Ok(watcher::Event::Apply(m)) => {
                let (key, marker) = self.entry(&m);
                self.write().insert(key, marker);
                Some(m)
            }
            Ok(watcher::Event::Delete(m)) => {
                self.write()
                    .remove(&key(&m.namespace().unwrap_or_default(), &m.name_any()));
                Some(m)
            }
            Err(err) => {
                warn!(error = %err, "owned Secret cache");
                None
            }
        }
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
        self.strings().prune();
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
    fn seen(&self, corg: &CustomerOrg, name: &str) -> Option<crate::reconcile::plan::SecretSeen> {
        let uid = corg.meta().uid.as_deref()?;
        let index = self.read();
        let m = index
            .by_key
            .get(&key(&corg.namespace().unwrap_or_default(), name))?;
        (m.controller.as_deref() == Some(uid))
            .then(|| crate::reconcile::secrets::owned_seen(|k| m.annotation(k)))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn secret(name: &str, owner: &str, key_id: &str) -> Meta {
        let mut m: Meta = PartialObjectMeta {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some("1".into()),
                owner_references: Some(vec![OwnerReference {
                    controller: Some(true),
                    uid: owner.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        };
        m.annotations_mut()
            .insert("orgops.dev/key-id".into(), key_id.into());
        m.annotations_mut()
            .insert("kubectl.kubernetes.io/last-applied".into(), "big".into());
        m
    }

    fn has(cache: &OwnedSecrets, name: &str) -> Option<Marker> {
        cache.read().by_key.get(&key("ns", name)).cloned()
    }

    #[test]
    fn each_event_is_in_the_index_before_it_triggers_its_owner() {
        let cache = OwnedSecrets::default();
        let mut st = ScopeState {
            scope: Some("ns".into()),
            relist: None,
            listed_once: false,
        };
        assert!(cache.on_event(&mut st, Ok(watcher::Event::Init)).is_none());
        let a = secret("a", "uid-1", "key_1");
        let touched = cache.on_event(&mut st, Ok(watcher::Event::InitApply(a)));
        assert_eq!(touched.map(|m| m.name_any()).as_deref(), Some("a"));
        assert!(
            cache
                .on_event(&mut st, Ok(watcher::Event::InitDone))
                .is_none()
        );
        let marker = has(&cache, "a").expect("listed Secret indexed");
        assert_eq!(marker.controller.as_deref(), Some("uid-1"));
        assert_eq!(marker.annotation("orgops.dev/key-id"), Some("key_1"));
        assert_eq!(
            marker.annotations.len(),
            1,
            "only orgops.dev/ annotations kept"
        );
        assert_eq!(*cache.shared.listed.borrow(), 1);

        let b = secret("b", "uid-1", "key_2");
        let touched = cache.on_event(&mut st, Ok(watcher::Event::Apply(b)));
        assert!(touched.is_some() && has(&cache, "b").is_some());
        let gone = secret("a", "uid-1", "key_1");
        let touched = cache.on_event(&mut st, Ok(watcher::Event::Delete(gone)));
        assert!(touched.is_some() && has(&cache, "a").is_none());
        assert_eq!(cache.read().by_owner.get("uid-1").map(Vec::len), Some(1));

        drop(marker);
        // A relist replaces the scope: what it did not list is gone.
        cache.on_event(&mut st, Ok(watcher::Event::Init));
        cache.on_event(&mut st, Ok(watcher::Event::InitDone));
        assert!(has(&cache, "b").is_none());
        assert_eq!(*cache.shared.listed.borrow(), 1, "counted once per scope");
        assert!(
            cache.strings().0.is_empty(),
            "a relist drops the shared strings nothing holds"
        );
    }

    #[test]
    fn secrets_share_their_namespace_and_annotation_keys() {
        let cache = OwnedSecrets::default();
        let mut st = ScopeState {
            scope: None,
            relist: None,
            listed_once: false,
        };
        for (name, id) in [("a", "key_1"), ("b", "key_2")] {
            cache.on_event(
                &mut st,
                Ok(watcher::Event::Apply(secret(name, "uid-1", id))),
            );
        }
        let index = cache.read();
        let entries: Vec<_> = index.by_key.iter().collect();
        assert_eq!(entries.len(), 2);
        let ((ns_a, _), a) = entries[0];
        let ((ns_b, _), b) = entries[1];
        assert!(Arc::ptr_eq(ns_a, ns_b), "one namespace string");
        assert!(Arc::ptr_eq(&a.annotations[0].0, &b.annotations[0].0));
        assert_ne!(
            a.annotations[0].1, b.annotations[0].1,
            "values are their own"
        );
        assert_eq!(
            cache.strings().0.len(),
            2,
            "the namespace and the key-id key"
        );
    }

    #[tokio::test]
    async fn every_open_trigger_gets_the_secret_and_a_closed_one_is_dropped() {
        let (tx1, rx1) = trigger();
        let (tx2, rx2) = trigger();
        let mut triggers = vec![tx1, tx2];
        drop(rx2);
        forward(&mut triggers, secret("a", "uid-1", "key_1")).await;
        assert_eq!(triggers.len(), 1);
        let mut rx1 = std::pin::pin!(rx1);
        let got = rx1.next().await.and_then(Result::ok);
        assert_eq!(got.map(|m| m.name_any()).as_deref(), Some("a"));
    }
}
