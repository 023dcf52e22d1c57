//! Remembers the resourceVersion each of our own status writes produced, for two reasons:
//! - the reconcile that write triggers (the watch sees our own change) costs no provider
//!   call: it only re-schedules the requeue the writing pass asked for;
//! - a reconcile started from a cache that has not seen our write yet (a trigger queued
//!   while the pass ran) re-reads the object first instead of acting on stale status
//!   (which would, e.g., publish a second Warning or skip the ApiRejected gate).
//!
//! Trade-off: a change to an owned Secret that lands before our own watch event arrives
//! is folded into that skip; the scheduled requeue picks it up.
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct Written {
    resource_version: String,
    /// When the writing pass wants another look; None: it asked to verify soon, so the
    /// next trigger does the work.
    due: Option<Instant>,
}

/// What to do with a reconcile, given our last status write of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// No status write on record: reconcile what the cache gave.
    Unknown,
    /// The object is exactly what our write left and the pass scheduled its own requeue:
    /// only re-schedule it, in this long.
    Ours(Duration),
    /// The object is exactly what our write left, but the pass wants to verify: reconcile.
    OursVerify,
    /// Another version than ours (stale cache or someone else's change): re-read it.
    Other,
}

#[derive(Debug)]
pub struct OwnWrites<K> {
    written: Mutex<HashMap<K, Written>>,
}

impl<K: Eq + Hash> Default for OwnWrites<K> {
    fn default() -> Self {
        OwnWrites {
            written: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> OwnWrites<K> {
    /// Our status write produced `resource_version`; `delay`: when the pass wants another
    /// look (None: soon, doing the work).
    pub fn record(&self, key: K, resource_version: String, delay: Option<Duration>) {
        let mut map = self.written.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            key,
            Written {
                resource_version,
                due: delay.map(|d| Instant::now() + d),
            },
        );
    }

    /// Forgets `key` (a pass that wrote no status, or a version seen once already).
    pub fn forget(&self, key: &K) {
        let mut map = self.written.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(key);
    }

    /// Classifies a reconcile of `resource_version`. `consume`: the version came from a
    /// watch event (not a re-read), so seeing our own version uses the record up and any
    /// later trigger of the same version does the full work.
    pub fn seen(&self, key: &K, resource_version: Option<&str>, consume: bool) -> Seen {
        let mut map = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let Some(written) = map.get(key).cloned() else {
            return Seen::Unknown;
        };
        if Some(written.resource_version.as_str()) != resource_version {
            return Seen::Other;
        }
        if consume {
            map.remove(key);
        }
        match written.due {
            Some(due) => Seen::Ours(due.saturating_duration_since(Instant::now())),
            None => Seen::OursVerify,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_event_of_our_own_version_is_skipped() {
        let w = OwnWrites::default();
        w.record("a", "10".to_string(), Some(Duration::from_secs(60)));
        // A stale trigger re-read to our version: skipped, record kept for the real event.
        assert!(matches!(w.seen(&"a", Some("10"), false), Seen::Ours(_)));
        match w.seen(&"a", Some("10"), true) {
            Seen::Ours(left) => {
                assert!(left > Duration::from_secs(55) && left <= Duration::from_secs(60))
            }
            other => panic!("expected a skip, got {other:?}"),
        }
        assert_eq!(
            w.seen(&"a", Some("10"), true),
            Seen::Unknown,
            "then full work"
        );
    }

    #[test]
    fn other_versions_are_re_read_and_verify_passes_do_the_work() {
        let w = OwnWrites::default();
        assert_eq!(w.seen(&"a", Some("9"), true), Seen::Unknown);
        w.record("a", "10".to_string(), Some(Duration::from_secs(60)));
        assert_eq!(w.seen(&"b", Some("10"), true), Seen::Unknown);
        assert_eq!(w.seen(&"a", Some("9"), true), Seen::Other, "stale cache");
        assert_eq!(w.seen(&"a", None, true), Seen::Other);
        w.record("a", "12".to_string(), None);
        assert_eq!(w.seen(&"a", Some("12"), true), Seen::OursVerify);
        w.record("a", "13".to_string(), Some(Duration::from_secs(1)));
        w.forget(&"a");
        assert_eq!(w.seen(&"a", Some("13"), true), Seen::Unknown);
    }
}
