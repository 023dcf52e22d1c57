//! The closed scope catalogue (§3.1 of the API reference: the scopes the docs show) and the
//! coverage rule used for minting and for scope-gated routes.

/// The control-plane scope; never delegable, never covered by `*`.
pub const ADMIN: &str = "org:admin";

/// Every scope the docs name. Anything else is unknown (`422 VALIDATION` on mint).
pub const CATALOG: [&str; 6] = [
    "org:admin",
    "projects:read",
    "projects:write",
    "content:read",
    "content:write",
    "*",
];

/// The parent key's scopes unless `--parent-scopes` says otherwise.
pub const DEFAULT_PARENT: [&str; 5] = [
    "org:admin",
    "projects:read",
    "projects:write",
    "content:read",
    "content:write",
];

pub fn known(s: &str) -> bool {
    CATALOG.contains(&s)
}

/// `*` covers every data scope but never `org:admin`.
pub fn covered(held: &[String], s: &str) -> bool {
    held.iter().any(|c| c == s) || (s != ADMIN && held.iter().any(|c| c == "*"))
}

/// Parses a comma-separated scope list (the `--parent-scopes` flag): each one must be in the
/// catalogue, duplicates are dropped, and the list must not be empty.
pub fn parse_list(raw: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for s in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !known(s) {
            return Err(format!(
                "unknown scope {s:?}; the catalogue is {}",
                CATALOG.join(", ")
            ));
        }
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    if out.is_empty() {
        return Err("at least one scope is required".into());
    }
    Ok(out)
}

pub fn default_parent() -> Vec<String> {
    DEFAULT_PARENT.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_and_parsing() {
        let parent = default_parent();
        assert!(covered(&parent, "content:read"));
        assert!(!covered(&parent, "*"));
        assert!(covered(&["*".to_string()], "projects:write"));
        assert!(!covered(&["*".to_string()], ADMIN));
        assert_eq!(
            parse_list("org:admin, content:read,org:admin").unwrap(),
            vec!["org:admin", "content:read"]
        );
        assert!(parse_list("ads:write").is_err());
        assert!(parse_list(" , ").is_err());
    }
}
