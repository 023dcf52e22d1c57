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
struct State<K> {
    written: HashMap<K, Written>,
    /// Bumped by `verify_all`; a pass that started before it records no skip.
    epoch: u64,
}

#[derive(Debug)]
pub struct OwnWrites<K> {
    state: Mutex<State<K>>,
}

impl<K: Eq + Hash> Default for OwnWrites<K> {
    fn default() -> Self {
        OwnWrites {
            state: Mutex::new(State {
                written: HashMap::new(),
                epoch: 0,
            }),
        }
    }
}

impl<K: Eq + Hash> OwnWrites<K> {
    /// Taken when a pass starts, handed back to `record`.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Our status write produced `resource_version`; `delay`: when the pass wants another
    /// look (None: soon, doing the work). No skip when `verify_all` ran since `epoch`:
    /// the pass decided on news that is already old.
    pub fn record(&self, key: K, resource_version: String, delay: Option<Duration>, epoch: u64) {
        let mut state = self.lock();
        let due = delay
            .filter(|_| state.epoch == epoch)
            .map(|d| Instant::now() + d);
        state.written.insert(
            key,
            Written {
                resource_version,
                due,
            },
        );
    }

    /// Forgets `key` (a pass that wrote no status, or a version seen once already).
    pub fn forget(&self, key: &K) {
        self.lock().written.remove(key);
    }

    /// The next reconcile of `key` does the work (its provider changed). The version
    /// stays known, so a stale cache is still re-read.
    pub fn verify_next(&self, key: &K) {
        if let Some(w) = self.lock().written.get_mut(key) {
            w.due = None;
        }
    }

    /// Passes started before now record no skip (they decided on news that is now old).
    pub fn new_epoch(&self) {
        let mut state = self.lock();
        state.epoch = state.epoch.wrapping_add(1);
    }

    /// `verify_next` for every object (some provider's availability changed).
    pub fn verify_all(&self) {
        let mut state = self.lock();
        state.written.values_mut().for_each(|w| w.due = None);
        state.epoch = state.epoch.wrapping_add(1);
    }

    /// Classifies a reconcile of `resource_version`. `consume`: the version came from a
    /// watch event (not a re-read), so seeing our own version uses the record up and any
    /// later trigger of the same version does the full work.
    pub fn seen(&self, key: &K, resource_version: Option<&str>, consume: bool) -> Seen {
        let mut state = self.lock();
        let Some(written) = state.written.get(key).cloned() else {
            return Seen::Unknown;
        };
        if Some(written.resource_version.as_str()) != resource_version {
            return Seen::Other;
        }
        if consume {
            state.written.remove(key);
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

    const MIN: Option<Duration> = Some(Duration::from_secs(60));

    fn record(w: &OwnWrites<&'static str>, key: &'static str, rv: &str, delay: Option<Duration>) {
        w.record(key, rv.to_string(), delay, w.epoch());
    }

    #[test]
    fn only_the_first_event_of_our_own_version_is_skipped() {
        let w = OwnWrites::default();
        record(&w, "a", "10", MIN);
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
        record(&w, "a", "10", MIN);
        assert_eq!(w.seen(&"b", Some("10"), true), Seen::Unknown);
        assert_eq!(w.seen(&"a", Some("9"), true), Seen::Other, "stale cache");
        assert_eq!(w.seen(&"a", None, true), Seen::Other);
        record(&w, "a", "12", None);
        assert_eq!(w.seen(&"a", Some("12"), true), Seen::OursVerify);
        record(&w, "a", "13", MIN);
        w.forget(&"a");
        assert_eq!(w.seen(&"a", Some("13"), true), Seen::Unknown);
    }

    #[test]
    fn a_provider_change_turns_skips_into_work_but_keeps_stale_detection() {
        let w = OwnWrites::default();
        record(&w, "a", "14", MIN);
        record(&w, "b", "15", MIN);
        w.verify_all();
        assert_eq!(w.seen(&"a", Some("14"), true), Seen::OursVerify);
        assert_eq!(w.seen(&"b", Some("1"), true), Seen::Other, "still re-read");
        // A pass that started before the provider changed records no skip.
        let started = w.epoch();
        w.verify_all();
        w.record("a", "16".to_string(), MIN, started);
        assert_eq!(w.seen(&"a", Some("16"), true), Seen::OursVerify);
        record(&w, "c", "17", MIN);
        w.verify_next(&"c");
        assert_eq!(w.seen(&"c", Some("17"), true), Seen::OursVerify);
    }
}
