//! A server-side idempotency store, generic over the stored response, serializable so it
//! lives inside the simulator's persisted state.
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdemEntry<R> {
    pub fingerprint: String,
    pub stored_us: i64,
    pub response: R,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "R: Serialize", deserialize = "R: Deserialize<'de>"))]
pub struct IdemStore<R> {
    entries: HashMap<String, IdemEntry<R>>,
}

impl<R> Default for IdemStore<R> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

/// The answer for a key seen before.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a, R> {
    /// Unknown or expired: execute.
    Miss,
    /// Same key, same request: serve the stored response.
    Replay(&'a R),
    /// Same key, different request.
    Conflict,
}

/// Entries beyond this count trigger a sweep of expired ones.
const SWEEP_AT: usize = 100_000;

impl<R> IdemStore<R> {
    pub fn lookup(
        &self,
        key: &str,
        fingerprint: &str,
        now_us: i64,
        window_us: i64,
    ) -> Lookup<'_, R> {
        match self.entries.get(key) {
            Some(e) if e.stored_us.saturating_add(window_us) > now_us => {
                if e.fingerprint == fingerprint {
                    Lookup::Replay(&e.response)
                } else {
                    Lookup::Conflict
                }
            }
            _ => Lookup::Miss,
        }
    }

    pub fn insert(
        &mut self,
        key: String,
        fingerprint: String,
        response: R,
        now_us: i64,
        window_us: i64,
    ) {
        if self.entries.len() >= SWEEP_AT {
            self.entries
                .retain(|_, e| e.stored_us.saturating_add(window_us) > now_us);
        }
        self.entries.insert(
            key,
            IdemEntry {
                fingerprint,
                stored_us: now_us,
                response,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// SHA-256 hex over the parts, each length-prefixed so boundaries cannot be shifted.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_conflict_expiry() {
        let mut s: IdemStore<u16> = IdemStore::default();
        let fp = fingerprint(&[b"POST", b"/x", b"{}"]);
        assert_eq!(s.lookup("k", &fp, 0, 10), Lookup::Miss);
        s.insert("k".into(), fp.clone(), 201, 0, 10);
        assert_eq!(s.lookup("k", &fp, 5, 10), Lookup::Replay(&201));
        assert_eq!(s.lookup("k", "other", 5, 10), Lookup::Conflict);
        assert_eq!(s.lookup("k", &fp, 10, 10), Lookup::Miss);
        assert_ne!(fingerprint(&[b"ab", b"c"]), fingerprint(&[b"a", b"bc"]));
        let json = serde_json::to_string(&s).unwrap();
        let back: IdemStore<u16> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.len(), 1);
    }
}
