//! Object names for imported orgs: derived from the org alone (its `externalId`, else its
//! name, else its id), so a second import of the same fleet writes the same names, and
//! collisions are resolved by a suffix from the org id, never by the order orgs were listed.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// DNS-1123 label length: CustomerOrg names also prefix default Secret names and appear in
/// owner markers, so they are kept to a label, not the 253 characters a name may have.
pub const MAX: usize = 63;
/// `-` and the shortest suffix.
const SUFFIX: usize = 7;

/// Lowercase ASCII letters and digits, every other run of characters one `-`, no `-` at
/// either end, at most `max` characters; empty when nothing usable is left.
pub fn slug(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(max);
    out.trim_end_matches('-').to_string()
}

/// The name an org gets before collisions: from the first of `sources` (externalId, name)
/// that leaves something, else from the org id.
pub fn base(sources: &[Option<&str>], org_id: &str) -> String {
    sources
        .iter()
        .flatten()
        .map(|s| slug(s, MAX))
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let id = slug(org_id, MAX);
            if id.is_empty() { "org".into() } else { id }
        })
}

fn suffixed(base: &str, org_id: &str, hex_len: usize) -> String {
    let digest = hex::encode(Sha256::digest(org_id.as_bytes()));
    let hex = &digest[..hex_len.min(digest.len())];
    let mut stem = base.to_string();
    stem.truncate(MAX.saturating_sub(hex.len() + 1));
    format!("{}-{hex}", stem.trim_end_matches('-'))
}

/// A name that had to change, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renamed {
    pub org_id: String,
    pub base: String,
    pub name: String,
    /// Why: the other orgs of this import with the same base, or the existing object.
    pub why: String,
}

/// Final names for `(org id, base)` pairs: a base used by one org only and by no object in
/// `taken` (the target namespace's CustomerOrgs) is kept; every org of a shared base gets
/// `<base>-<6 hex of sha256(org id)>` (longer should that collide too). Returns the names by
/// org id and what was renamed.
pub fn assign(
    orgs: &[(String, String)],
    taken: &BTreeSet<String>,
) -> (BTreeMap<String, String>, Vec<Renamed>) {
    let mut by_base: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (id, base) in orgs {
        by_base.entry(base.as_str()).or_default().push(id.as_str());
    }
    let mut used: BTreeSet<String> = taken.clone();
    let mut names = BTreeMap::new();
    let mut renamed = Vec::new();
    // Bases kept as they are first, so a suffixed name can never take one of them.
    for (base, ids) in &by_base {
        if let [id] = ids.as_slice()
            && !taken.contains(*base)
        {
            used.insert(base.to_string());
            names.insert(id.to_string(), base.to_string());
        }
    }
    for (base, ids) in &by_base {
        if ids.len() == 1 && names.contains_key(ids[0]) {
            continue;
        }
        let why = if taken.contains(*base) {
            format!("a CustomerOrg named {base} already exists in the namespace")
        } else {
            format!("{} orgs derive the name {base}", ids.len())
        };
        for id in ids {
            let mut hex_len = SUFFIX - 1;
            let mut name = suffixed(base, id, hex_len);
            while used.contains(&name) && hex_len < 64 {
                hex_len += 2;
                name = suffixed(base, id, hex_len);
            }
            used.insert(name.clone());
            names.insert(id.to_string(), name.clone());
            renamed.push(Renamed {
                org_id: id.to_string(),
                base: base.to_string(),
                name,
                why: why.clone(),
            });
        }
    }
    (names, renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_label(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= MAX
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    }

    #[test]
    fn slugs_are_dns_labels() {
        assert_eq!(slug("Acme Coffee, Inc.", MAX), "acme-coffee-inc");
        assert_eq!(slug("  --Ünïcode__name--  ", MAX), "n-code-name");
        assert_eq!(slug("日本", MAX), "");
        let long = "a".repeat(70) + "-b";
        assert_eq!(slug(&long, MAX).len(), MAX);
        assert_eq!(slug(&("x".repeat(62) + "-y"), MAX), "x".repeat(62));
        for s in ["Acme", "a--b", "---", "A.B.C", &long] {
            let got = slug(s, MAX);
            assert!(got.is_empty() || dns_label(&got), "{s:?} -> {got:?}");
        }
    }

    #[test]
    fn base_prefers_external_id_then_name_then_id() {
        assert_eq!(base(&[Some("cust-42"), Some("Acme")], "org_1"), "cust-42");
        assert_eq!(base(&[None, Some("Acme")], "org_1"), "acme");
        assert_eq!(base(&[Some("日本"), Some("Acme")], "org_1"), "acme");
        assert_eq!(base(&[None, Some("日本")], "org_1A"), "org-1a");
        assert_eq!(base(&[None, None], "___"), "org");
    }

    #[test]
    fn collisions_get_a_stable_suffix_from_the_org_id() {
        let orgs = vec![
            ("org_b".to_string(), "acme".to_string()),
            ("org_a".to_string(), "acme".to_string()),
            ("org_c".to_string(), "beta".to_string()),
            ("org_d".to_string(), "gamma".to_string()),
        ];
        let taken = BTreeSet::from(["gamma".to_string()]);
        let (names, renamed) = assign(&orgs, &taken);
        assert_eq!(names["org_c"], "beta");
        for (id, base) in [("org_a", "acme"), ("org_b", "acme"), ("org_d", "gamma")] {
            assert!(names[id].starts_with(&format!("{base}-")), "{}", names[id]);
            assert_eq!(names[id].len(), base.len() + SUFFIX, "{}", names[id]);
            assert!(dns_label(&names[id]), "{}", names[id]);
        }
        assert_ne!(names["org_a"], names["org_b"]);
        assert!(names["org_d"].starts_with("gamma-"));
        assert_eq!(renamed.len(), 3);
        // The same org gets the same name whatever else is listed, in whatever order.
        let mut reversed = orgs.clone();
        reversed.reverse();
        reversed.push(("org_e".into(), "acme".into()));
        let (again, _) = assign(&reversed, &taken);
        for id in ["org_a", "org_b", "org_c", "org_d"] {
            assert_eq!(again[id], names[id], "{id}");
        }
    }

    #[test]
    fn a_suffix_never_takes_a_kept_name_and_long_bases_stay_labels() {
        let long = "x".repeat(MAX);
        let orgs = vec![
            ("org_1".to_string(), long.clone()),
            ("org_2".to_string(), long.clone()),
        ];
        let (names, _) = assign(&orgs, &BTreeSet::new());
        for n in names.values() {
            assert!(dns_label(n), "{n}");
        }
        // A kept base equal to what a suffix would produce pushes the suffix longer.
        let clash = suffixed("acme", "org_1", SUFFIX - 1);
        let orgs = vec![
            ("org_1".to_string(), "acme".to_string()),
            ("org_2".to_string(), "acme".to_string()),
            ("org_3".to_string(), clash.clone()),
        ];
        let (names, _) = assign(&orgs, &BTreeSet::new());
        assert_eq!(names["org_3"], clash);
        assert_ne!(names["org_1"], clash);
        let all: BTreeSet<&String> = names.values().collect();
        assert_eq!(all.len(), 3);
    }
}
