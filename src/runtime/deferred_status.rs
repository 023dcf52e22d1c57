//! The status of a pass that changed things and asked to be verified at once is not
//! written: the verifying pass, a moment later, writes the status it observed. A new
//! org costs one status write instead of two (docs/benchmarks.md, issue 18).
//!
//! The verifying pass plans from the deferred status exactly as it would from a written
//! one: it knows what the provider answered (the org id, the keys and endpoints made),
//! so it reads no more than after a written status. The status is only ever what the
//! pass would have written; it is kept in memory, per object and its uid (a namesake
//! recreated in between never inherits it), and taken by the next pass whatever that
//! pass does. It also records the object's resourceVersion the pass acted on: while the
//! cache still holds that very version, the verifying pass plans from the cached copy
//! instead of reading the object again (the deferred status says which org is the
//! object's, as a written status in the cache would). Lost on a restart or a leader change, the next pass plans from the stored
//! status, as after a failed status write: what orgops owns never depends on the status
//! (durable markers, docs/architecture.md).
use crate::api::CustomerOrgStatus;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

#[derive(Debug)]
struct Deferred {
    uid: String,
    /// The object's resourceVersion the deferring pass read and acted on.
    resource_version: Option<String>,
    status: CustomerOrgStatus,
}

#[derive(Debug)]
pub struct DeferredStatus<K> {
    entries: Mutex<HashMap<K, Deferred>>,
}

impl<K: Eq + Hash> Default for DeferredStatus<K> {
    fn default() -> Self {
        DeferredStatus {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> DeferredStatus<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Deferred>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pass on object `key` (uid `uid`, at `resource_version`) left `status` unwritten.
    pub fn defer(
        &self,
        key: K,
        uid: &str,
        resource_version: Option<&str>,
        status: CustomerOrgStatus,
    ) {
        self.lock().insert(
            key,
            Deferred {
                uid: uid.to_string(),
                resource_version: resource_version.map(str::to_string),
                status,
            },
        );
    }

    /// Whether a status is deferred for the object with `uid` at exactly
    /// `resource_version`, naming its org: the copy at that version is what the deferring
    /// pass acted on, so a pass may plan from it without reading the object again. Not
    /// taken.
    pub fn acted_on(&self, key: &K, uid: Option<&str>, resource_version: Option<&str>) -> bool {
        self.lock().get(key).is_some_and(|d| {
            Some(d.uid.as_str()) == uid
                && resource_version.is_some()
                && d.resource_version.as_deref() == resource_version
                && d.status.org_id.is_some()
        })
    }

    /// The deferred status of `key`, if it was deferred for the object with `uid`;
    /// removed either way.
    pub fn take(&self, key: &K, uid: Option<&str>) -> Option<CustomerOrgStatus> {
        let deferred = self.lock().remove(key)?;
        (Some(deferred.uid.as_str()) == uid).then_some(deferred.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(org: &str) -> CustomerOrgStatus {
        CustomerOrgStatus {
            org_id: Some(org.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_next_pass_takes_it_once() {
        let d = DeferredStatus::default();
        d.defer("a", "uid-1", Some("7"), status("org_1"));
        assert_eq!(
            d.take(&"a", Some("uid-1")).and_then(|s| s.org_id),
            Some("org_1".into())
        );
        assert!(d.take(&"a", Some("uid-1")).is_none());
    }

    #[test]
    fn a_namesake_recreated_in_between_never_inherits_it() {
        let d = DeferredStatus::default();
        d.defer("a", "uid-1", Some("7"), status("org_1"));
        assert!(!d.acted_on(&"a", Some("uid-2"), Some("7")));
        assert!(d.take(&"a", Some("uid-2")).is_none());
        // Taken anyway: the old object's status is gone for good.
        assert!(d.take(&"a", Some("uid-1")).is_none());
    }

    #[test]
    fn only_the_version_acted_on_may_be_planned_from_the_cache() {
        let d = DeferredStatus::default();
        d.defer("a", "uid-1", Some("7"), status("org_1"));
        assert!(d.acted_on(&"a", Some("uid-1"), Some("7")));
        // An older copy (the cache behind the pass's read) or a newer one (changed since)
        // is read again.
        assert!(!d.acted_on(&"a", Some("uid-1"), Some("6")));
        assert!(!d.acted_on(&"a", Some("uid-1"), Some("8")));
        assert!(!d.acted_on(&"a", Some("uid-1"), None));
        assert!(!d.acted_on(&"b", Some("uid-1"), Some("7")));
        // Asking does not take it.
        assert!(d.take(&"a", Some("uid-1")).is_some());
        assert!(!d.acted_on(&"a", Some("uid-1"), Some("7")));
    }

    #[test]
    fn a_deferred_status_without_an_org_is_no_reason_to_trust_the_cache() {
        let d = DeferredStatus::default();
        d.defer("a", "uid-1", Some("7"), CustomerOrgStatus::default());
        assert!(!d.acted_on(&"a", Some("uid-1"), Some("7")));
    }
}
