//! Cached `(metadata key, value) -> live orgs` index for the lookups by `externalId` and by
//! the owner marker (`find_orgs_by_external_id`, `find_orgs_by_owner`).
//!
//! Layers cannot filter children on metadata, and YouHodler filters on `external_id` but
//! not on metadata, so a lookup means listing every live child.
//! The index is built from one full listing, reused until it is older than `max_age`, and
//! patched in place by this client's own writes (create, update, suspend, resume, archive).
//! Callers that find it stale share one refresh (single-flight).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::provider::ProviderResult;
use crate::provider::types::{Org, OrgStatus};

/// Org metadata keys the index is keyed by.
pub const EXTERNAL_ID: &str = "externalId";
pub const OWNER: &str = "orgops.dev/owner";
const INDEXED: [&str; 2] = [EXTERNAL_ID, OWNER];

/// An own write to apply to the index.
#[derive(Clone, Debug)]
enum Change {
    Upsert(Box<Org>),
    Remove(String),
}

/// What a lookup needs of one live org (docs/benchmarks.md, issue 18): its name, state
/// and the indexed markers. The caller reads one org in full before acting on it, so
/// summaries, users and other metadata would only hold memory for every child. Boxed
/// strings and no per-row map: a two-entry `BTreeMap` alone costs a half-kilobyte node.
struct Row {
    name: Box<str>,
    status: OrgStatus,
    markers: [Option<Box<str>>; INDEXED.len()],
}

impl Row {
    fn of(org: &Org) -> Row {
        Row {
            name: org.name.as_str().into(),
            status: org.status,
            markers: INDEXED.map(|key| org.metadata.get(key).map(|v| v.as_str().into())),
        }
    }

    fn org(&self, id: &str) -> Org {
        Org {
            id: id.to_string(),
            name: self.name.to_string(),
            status: self.status,
            metadata: INDEXED
                .iter()
                .zip(&self.markers)
                .filter_map(|(k, v)| Some((k.to_string(), v.as_deref()?.to_string())))
                .collect(),
            billing_email: None,
            summary: None,
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        }
    }
}

#[derive(Default)]
struct Entries {
    by_id: HashMap<Box<str>, Row>,
    /// Per indexed key, marker value -> ids: usually one id, so a Vec.
    by_marker: [HashMap<Box<str>, Vec<Box<str>>>; INDEXED.len()],
}

impl Entries {
    fn apply(&mut self, change: &Change) {
        match change {
            Change::Upsert(org) => {
                self.remove(&org.id);
                if org.status != OrgStatus::Archived {
                    self.insert(org.id.as_str().into(), Row::of(org));
                }
            }
            Change::Remove(id) => self.remove(id),
        }
    }

    /// Adds a live org's row (its id not yet present).
    fn insert(&mut self, id: Box<str>, row: Row) {
        for (slot, value) in self.by_marker.iter_mut().zip(&row.markers) {
            if let Some(value) = value {
                let ids = slot.entry(value.clone()).or_default();
                if !ids.contains(&id) {
                    ids.push(id.clone());
                }
            }
        }
        self.by_id.insert(id, row);
    }

    fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        for (slot, value) in self.by_marker.iter_mut().zip(&old.markers) {
            let Some(value) = value else {
                continue;
            };
            if let Some(ids) = slot.get_mut(value) {
                ids.retain(|i| **i != *id);
                if ids.is_empty() {
                    slot.remove(value);
                }
            }
        }
    }

    fn find(&self, key: &'static str, value: &str) -> Vec<Org> {
        let Some(slot) = INDEXED.iter().position(|k| *k == key) else {
            return Vec::new();
        };
        self.by_marker[slot]
            .get(value)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id).map(|row| row.org(id)))
            .collect()
    }
}

/// One full listing of the live children, kept as index rows while it is read page by
/// page: a refresh holds one page of full orgs at a time, never the whole listing (at
/// 30,000 children the full orgs were ~30 MB on top of the index, docs/benchmarks.md).
#[derive(Default)]
pub struct Listing(Vec<(Box<str>, Row)>);

impl Listing {
    /// Keeps what the index needs of `org`; archived orgs are not live and are skipped.
    pub fn push(&mut self, org: &Org) {
        if org.status != OrgStatus::Archived {
            self.0.push((org.id.as_str().into(), Row::of(org)));
        }
    }
}

#[derive(Default)]
struct State {
    entries: Entries,
    built_at: Option<Instant>,
    /// Own writes seen while a listing is in flight, replayed onto its result.
    pending: Option<Vec<Change>>,
}

pub struct OrgIndex {
    max_age: Duration,
    state: Mutex<State>,
    /// Held while listing, so concurrent stale lookups share one refresh.
    refresh: tokio::sync::Mutex<()>,
}

impl OrgIndex {
    pub fn new(max_age: Duration) -> OrgIndex {
        OrgIndex {
            max_age,
            state: Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fresh(&self) -> Option<std::sync::MutexGuard<'_, State>> {
        let state = self.lock();
        let fresh = state.built_at.is_some_and(|at| at.elapsed() < self.max_age);
        fresh.then_some(state)
    }

    /// Live orgs whose metadata `key` (one of the indexed keys) is `value`; `list_all`
    /// lists every live child when the index is missing or older than `max_age`.
    pub async fn find<F, Fut>(
        &self,
        key: &'static str,
        value: &str,
        list_all: F,
    ) -> ProviderResult<Vec<Org>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ProviderResult<Listing>>,
    {
        if let Some(state) = self.fresh() {
            return Ok(state.entries.find(key, value));
        }
        let _refreshing = self.refresh.lock().await;
        // Another caller may have refreshed while this one waited.
        if let Some(state) = self.fresh() {
            return Ok(state.entries.find(key, value));
        }
        let started = Instant::now();
        self.lock().pending = Some(Vec::new());
        let listed = list_all().await;
        let mut state = self.lock();
        let pending = state.pending.take().unwrap_or_default();
        let listing = listed?;
        // Rebuilt in place under the lock: the old rows go first, so a refresh never holds
        // two indexes at once.
        state.entries = Entries::default();
        for (id, row) in listing.0 {
            state.entries.remove(&id);
            state.entries.insert(id, row);
        }
        // Own writes that finished during the listing may be missing from it.
        for change in &pending {
            state.entries.apply(change);
        }
        // Aged from the start of the listing: nothing older than max_age is trusted.
        state.built_at = Some(started);
        Ok(state.entries.find(key, value))
    }

    /// Records an org this client just created, updated or moved between live states.
    pub fn upsert(&self, org: &Org) {
        self.record(Change::Upsert(Box::new(org.clone())));
    }

    /// Records an org this client just archived.
    pub fn remove(&self, org_id: &str) {
        self.record(Change::Remove(org_id.to_string()));
    }

    fn record(&self, change: Change) {
        let mut state = self.lock();
        state.entries.apply(&change);
        if let Some(pending) = state.pending.as_mut() {
            pending.push(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn org(id: &str, ext: &str, status: OrgStatus) -> Org {
        Org {
            id: id.into(),
            name: id.into(),
            status,
            metadata: BTreeMap::from([(EXTERNAL_ID.to_string(), ext.to_string())]),
            billing_email: None,
            summary: None,
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        }
    }

    fn listed(orgs: &[Org]) -> Listing {
        let mut listing = Listing::default();
        orgs.iter().for_each(|o| listing.push(o));
        listing
    }

    fn ids(orgs: &[Org]) -> Vec<&str> {
        orgs.iter().map(|o| o.id.as_str()).collect()
    }

    #[tokio::test]
    async fn concurrent_stale_lookups_share_one_listing() {
        let index = Arc::new(OrgIndex::new(Duration::from_secs(30)));
        let listings = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let index = index.clone();
            let listings = listings.clone();
            tasks.push(tokio::spawn(async move {
                index
                    .find(EXTERNAL_ID, &format!("ext-{}", i % 2), || async move {
                        listings.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(listed(&[org("org_a", "ext-0", OrgStatus::Active)]))
                    })
                    .await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let found = t.await.unwrap().unwrap();
            assert_eq!(found.len(), usize::from(i % 2 == 0));
        }
        assert_eq!(listings.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn own_writes_during_a_listing_survive_it() {
        let index = OrgIndex::new(Duration::from_secs(30));
        let found = index
            .find(EXTERNAL_ID, "acme", || async {
                // Created while the (older) listing was in flight: not in its result.
                index.upsert(&org("org_new", "acme", OrgStatus::Active));
                index.remove("org_old");
                Ok(listed(&[org("org_old", "acme", OrgStatus::Active)]))
            })
            .await
            .unwrap();
        assert_eq!(ids(&found), ["org_new"]);
    }

    #[tokio::test]
    async fn archive_and_metadata_change_move_entries() {
        let index = OrgIndex::new(Duration::from_secs(30));
        let list = || async { Ok(listed(&[org("org_a", "acme", OrgStatus::Suspended)])) };
        assert_eq!(
            ids(&index.find(EXTERNAL_ID, "acme", list).await.unwrap()),
            ["org_a"]
        );
        index.upsert(&org("org_a", "beta", OrgStatus::Active));
        let unused = || async { Err(crate::provider::error::ProviderError::Timeout) };
        assert!(
            index
                .find(EXTERNAL_ID, "acme", unused)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            ids(&index.find(EXTERNAL_ID, "beta", unused).await.unwrap()),
            ["org_a"]
        );
        index.remove("org_a");
        assert!(
            index
                .find(EXTERNAL_ID, "beta", unused)
                .await
                .unwrap()
                .is_empty()
        );
        index.upsert(&org("org_b", "beta", OrgStatus::Archived));
        assert!(
            index
                .find(EXTERNAL_ID, "beta", unused)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_failed_listing_is_not_cached() {
        let index = OrgIndex::new(Duration::from_secs(30));
        let failing = || async { Err(crate::provider::error::ProviderError::Timeout) };
        assert!(index.find(EXTERNAL_ID, "acme", failing).await.is_err());
        let ok = || async { Ok(listed(&[org("org_a", "acme", OrgStatus::Active)])) };
        assert_eq!(
            ids(&index.find(EXTERNAL_ID, "acme", ok).await.unwrap()),
            ["org_a"]
        );
    }

    #[tokio::test]
    async fn an_old_index_is_listed_again() {
        let index = OrgIndex::new(Duration::ZERO);
        let first = || async { Ok(listed(&[org("org_a", "acme", OrgStatus::Active)])) };
        assert_eq!(
            index.find(EXTERNAL_ID, "acme", first).await.unwrap().len(),
            1
        );
        let second = || async { Ok(Listing::default()) };
        assert!(
            index
                .find(EXTERNAL_ID, "acme", second)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
