//! The krew manifest has the shape `kubectl krew install --manifest=` requires.
use serde_yaml::Value;

#[test]
fn krew_manifest_has_the_required_shape() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/krew/orgops.yaml");
    let text = std::fs::read_to_string(path).expect("read deploy/krew/orgops.yaml");
    let m: Value = serde_yaml::from_str(&text).expect("manifest is YAML");
    assert_eq!(
        m["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(m["kind"], "Plugin");
    // The plugin name is what follows `kubectl-` in the binary's name.
    assert_eq!(m["metadata"]["name"], "orgops");
    let spec = &m["spec"];
    let version = spec["version"].as_str().expect("spec.version");
    assert!(
        version.starts_with('v') && version[1..].split('.').count() == 3,
        "{version}"
    );
    assert_eq!(
        version[1..],
        *env!("CARGO_PKG_VERSION"),
        "manifest version follows the crate"
    );
    for field in ["shortDescription", "description", "homepage"] {
        assert!(
            spec[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}"
        );
    }
    let platforms = spec["platforms"].as_sequence().expect("spec.platforms");
    assert!(!platforms.is_empty());
    for p in platforms {
        let labels = p["selector"]["matchLabels"].as_mapping().expect("selector");
        assert!(labels.contains_key("os") && labels.contains_key("arch"));
        assert!(p["uri"].as_str().is_some_and(|u| u.starts_with("https://")));
        let sha = p["sha256"].as_str().expect("sha256");
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        assert_eq!(p["bin"], "kubectl-orgops");
        let files = p["files"].as_sequence().expect("files");
        assert!(files.iter().any(|f| f["from"] == "kubectl-orgops"));
    }
}
