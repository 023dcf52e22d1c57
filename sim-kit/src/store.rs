//! State-file persistence: load on start, atomic writes (temporary file + rename, mode 0600).
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::KitError;

/// Loads a state file; `Ok(None)` when it does not exist yet.
pub fn load<S: DeserializeOwned>(path: &Path) -> Result<Option<S>, KitError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KitError::StateIo {
                path: path.into(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| KitError::StateParse {
            path: path.into(),
            source,
        })
}

/// Writes atomically: a temporary file in the same directory, fsync, then rename.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), KitError> {
    let io = |source| KitError::StateIo {
        path: path.into(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert!(load::<serde_json::Value>(&p).unwrap().is_none());
        save(&p, br#"{"a":1}"#).unwrap();
        let v: serde_json::Value = load(&p).unwrap().unwrap();
        assert_eq!(v["a"], 1);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(matches!(
            load::<serde_json::Value>(&p),
            Err(KitError::StateParse { .. })
        ));
    }
}
