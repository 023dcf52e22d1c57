//! The status of a pass that changed things and asked to be verified at once is not
//! written: the verifying pass, a moment later, writes the status it observed. A new
//! org costs one status write instead of two (docs/benchmarks.md, issue 18).
//!
//! The verifying pass plans from the deferred status exactly as it would from a written
//! one: it knows what the provider answered (the org id, the keys and endpoints made),
//! so it reads no more than after a written status. The status is only ever what the
//! pass would have written; it is kept in memory, per object and its uid (a namesake
//! recreated in between never inherits it), and taken by the next pass whatever that
//! pass does. Lost on a restart or a leader change, the next pass plans from the stored
//! status, as after a failed status write: what orgops owns never depends on the status
//! (durable markers, docs/architecture.md).
use crate::api::CustomerOrgStatus;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

#[derive(Debug)]
struct Deferred {
    uid: String,
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

    /// The pass on object `key` (uid `uid`) left `status` unwritten.
    pub fn defer(&self, key: K, uid: &str, status: CustomerOrgStatus) {
        self.lock().insert(
            key,
            Deferred {
                uid: uid.to_string(),
                status,
            },
        );
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
        d.defer("a", "uid-1", status("org_1"));
        assert_eq!(
            d.take(&"a", Some("uid-1")).and_then(|s| s.org_id),
            Some("org_1".into())
        );
        assert!(d.take(&"a", Some("uid-1")).is_none());
    }

    #[test]
    fn a_namesake_recreated_in_between_never_inherits_it() {
        let d = DeferredStatus::default();
        d.defer("a", "uid-1", status("org_1"));
        assert!(d.take(&"a", Some("uid-2")).is_none());
        // Taken anyway: the old object's status is gone for good.
        assert!(d.take(&"a", Some("uid-1")).is_none());
    }
}
