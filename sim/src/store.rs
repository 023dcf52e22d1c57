//! Construction, indexing and persistence of the in-memory state.
use std::collections::HashMap;
use std::path::Path;

use uuid::Uuid;

use crate::error::SimError;
use crate::ids::{key_prefix, sha256_hex};
use crate::model::{ApiKeyRec, CreditConfig, CreditEvent, Org, OrgStatus, State};
use crate::time::now_us;

pub const PARENT_SCOPES: [&str; 2] = ["org:admin", "*"];

impl State {
    /// A fresh world: one partner org holding `credits`, and its `org:admin` key.
    pub fn fresh(parent_key: &str, parent_id: Uuid, parent_key_id: Uuid, credits: i64) -> State {
        let now = now_us();
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
            scopes: PARENT_SCOPES.iter().map(|s| s.to_string()).collect(),
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
            idem: HashMap::new(),
            seq: 3,
            key_by_hash: HashMap::new(),
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

pub fn load(path: &Path) -> Result<Option<State>, SimError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SimError::StateIo {
                path: path.into(),
                source,
            });
        }
    };
    let mut st: State = serde_json::from_slice(&bytes).map_err(|source| SimError::StateParse {
        path: path.into(),
        source,
    })?;
    st.reindex();
    Ok(Some(st))
}

/// Writes atomically: a temporary file in the same directory, then rename.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), SimError> {
    let io = |source| SimError::StateIo {
        path: path.into(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}
