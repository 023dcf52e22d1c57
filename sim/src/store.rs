//! Construction, indexing and persistence of the in-memory state.
use std::collections::HashMap;
use std::path::Path;

use uuid::Uuid;

use crate::error::SimError;
use crate::ids::{key_prefix, sha256_hex};
use crate::model::{ApiKeyRec, CreditConfig, CreditEvent, Org, OrgStatus, State};
use crate::time::wall_now_us;

/// Everything [`State::fresh`] needs to build the partner org and its key.
pub struct Seed<'a> {
    pub parent_key: &'a str,
    pub parent_id: Uuid,
    pub parent_key_id: Uuid,
    pub credits: i64,
    pub scopes: &'a [String],
    /// The simulator clock's offset, kept across `/_sim/reset` so time never runs backwards.
    pub clock_offset_us: i64,
}

impl State {
    /// A fresh world: one partner org holding `credits`, and its `org:admin` key.
    pub fn fresh(seed: Seed<'_>) -> State {
        let Seed {
            parent_key,
            parent_id,
            parent_key_id,
            credits,
            scopes,
            clock_offset_us,
        } = seed;
        let now = wall_now_us() + clock_offset_us;
        let mut parent = Org {
            id: parent_id,
            parent: None,
            name: "Simulated Partner".into(),
            status: OrgStatus::Active,
            metadata: Default::default(),
            billing_email: None,
            created_us: now,
            updated_us: now,
            archived_us: None,
            config: CreditConfig::default(),
            balance: credits,
            seq: 0,
            children: Vec::new(),
            keys: vec![parent_key_id],
            endpoints: Vec::new(),
            ledger: Vec::new(),
            period_start_us: 0,
            used_this_period: 0,
            projects: Vec::new(),
        };
        parent.ledger.push(CreditEvent {
            id: Uuid::new_v4(),
            credits,
            event_type: "grant".into(),
            description: Some("initial partner credits (simulator)".into()),
            metadata: Default::default(),
            balance_after: credits,
            created_us: now,
            seq: 1,
        });
        let key = ApiKeyRec {
            id: parent_key_id,
            org: parent_id,
            name: "partner admin key".into(),
            prefix: key_prefix(parent_key),
            env: "live".into(),
            scopes: scopes.to_vec(),
            hash: sha256_hex(parent_key.as_bytes()),
            created_us: now,
            last_used_us: None,
            rotated_us: None,
            revoked_us: None,
            grace_until_us: None,
            superseded_by: None,
            seq: 2,
        };
        let mut st = State {
            parent_id,
            parent_key: parent_key.to_string(),
            parent_key_id,
            orgs: HashMap::from([(parent_id, parent)]),
            keys: HashMap::from([(parent_key_id, key)]),
            endpoints: HashMap::new(),
            projects: HashMap::new(),
            idem: HashMap::new(),
            seq: 3,
            clock_offset_us,
            kill_switch: false,
            parent_key_revoked: false,
            key_by_hash: HashMap::new(),
            in_flight: Default::default(),
        };
        st.reindex();
        st
    }

    pub fn reindex(&mut self) {
        self.key_by_hash = self.keys.values().map(|k| (k.hash.clone(), k.id)).collect();
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn insert_key(&mut self, key: ApiKeyRec) {
        self.key_by_hash.insert(key.hash.clone(), key.id);
        if let Some(org) = self.orgs.get_mut(&key.org) {
            org.keys.push(key.id);
        }
        self.keys.insert(key.id, key);
    }

    /// Gives the parent key `scopes` (used when `--parent-scopes` differs from the stored ones).
    pub fn set_parent_scopes(&mut self, scopes: &[String]) {
        if let Some(rec) = self.keys.get_mut(&self.parent_key_id) {
            rec.scopes = scopes.to_vec();
        }
    }

    /// Makes `key` the parent key (used when `--parent-key` differs from the stored one).
    pub fn replace_parent_key(&mut self, key: &str) {
        let hash = sha256_hex(key.as_bytes());
        if let Some(rec) = self.keys.get_mut(&self.parent_key_id) {
            rec.hash = hash;
            rec.prefix = key_prefix(key);
        }
        self.parent_key = key.to_string();
        self.reindex();
    }
}

/// Loads the state file (`Ok(None)` when it does not exist yet) and rebuilds the indexes.
pub fn load(path: &Path) -> Result<Option<State>, SimError> {
    Ok(sim_kit::store::load::<State>(path)?.map(|mut st| {
        st.reindex();
        st
    }))
}
