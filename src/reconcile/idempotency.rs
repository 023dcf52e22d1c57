//! Deterministic idempotency keys: the same intent always yields the same key, so a retry
//! after a crash or a lost response replays instead of acting twice.

use sha2::{Digest, Sha256};

use crate::provider::IdempotencyKey;

/// `orgops-<first 48 hex chars of sha256(parts joined by 0x1f)>`.
pub fn derive(parts: &[&str]) -> IdempotencyKey {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0x1f]);
        }
        hasher.update(part.as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    IdempotencyKey(format!("orgops-{}", &digest[..48]))
}

/// Short content hash recorded in status to notice spec changes without an API read.
pub fn content_hash(parts: &[&str]) -> String {
    let key = derive(parts);
    key.0["orgops-".len().."orgops-".len() + 16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_parts_same_key_and_boundaries_matter() {
        assert_eq!(derive(&["a", "b"]), derive(&["a", "b"]));
        assert_ne!(derive(&["ab", ""]), derive(&["a", "b"]));
        assert!(derive(&["x"]).as_str().starts_with("orgops-"));
        assert_eq!(derive(&["x"]).as_str().len(), "orgops-".len() + 48);
    }
}
