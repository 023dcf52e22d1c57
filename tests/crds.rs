//! The generated CRDs: `crds/` must match the Rust types (drift), and the real apiserver must
//! install them and reject bad objects at admission with a message naming the field.
//!
//! Regenerate `crds/` with `ORGOPS_UPDATE_CRDS=1 cargo test --test crds drift`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn crd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")
}

fn generated() -> Vec<(String, String)> {
    orgops::api::crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            // Each file is one `---` document, so `cat crds/*.yaml` equals `orgops crds`.
            let yaml = format!("---\n{}", serde_yaml::to_string(crd).unwrap());
            (
                format!("orgops.dev_{}.yaml", name.split('.').next().unwrap()),
                yaml,
            )
        })
        .collect()
}

#[test]
fn drift_crds_dir_matches_the_types() {
    let update = std::env::var("ORGOPS_UPDATE_CRDS").is_ok_and(|v| v == "1");
    let mut drifted = Vec::new();
    for (file, yaml) in generated() {
        let path = crd_dir().join(&file);
        if update {
            std::fs::write(&path, &yaml).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != yaml {
            drifted.push(file);
        }
    }
    assert!(
        drifted.is_empty(),
        "crds/ drifted from the Rust types: {drifted:?}; run ORGOPS_UPDATE_CRDS=1 cargo test --test crds drift"
    );
}

#[test]
fn drift_crds_subcommand_prints_the_files() {
    let out = Command::new(env!("CARGO_BIN_EXE_orgops"))
        .arg("crds")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let expected: String = generated().into_iter().map(|(_, yaml)| yaml).collect();
    assert_eq!(printed, expected);
    assert!(crd_dir().join("orgops.dev_customerorgs.yaml").exists());
    assert!(crd_dir().join("orgops.dev_orgproviders.yaml").exists());
}

mod support;

fn namespace() -> String {
    let ns = format!("crds-{}", support::random_suffix());
    support::kubectl_ok(&["create", "namespace", &ns]);
    ns
}

fn corg(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrg\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

/// Applies `yaml`, expecting a rejection, and returns kubectl's stderr.
fn rejection(yaml: &str) -> String {
    let out = support::apply_yaml(yaml);
    assert!(
        !out.status.success(),
        "the apiserver accepted an invalid object:\n{yaml}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_names(stderr: &str, field: &str, words: &str) {
    assert!(
        stderr.contains(field) && stderr.contains(words),
        "expected a rejection naming {field} with {words:?}, got:\n{stderr}"
    );
}

#[test]
fn admission_rejects_bad_spec_naming_the_field() {
    let ns = namespace();
    let cases: &[(&str, &str, &str)] = &[
        (
            "  displayName: A\n  state: deleted\n",
            "spec.state",
            "Unsupported value",
        ),
        ("  displayName: \"\"\n", "spec.displayName", "at least 1"),
        (
            "  displayName: A\n  credits: {allocated: -1}\n",
            "spec.credits.allocated",
            "greater than or equal to 0",
        ),
        (
            "  displayName: A\n  credits: {monthlyCap: -1}\n",
            "spec.credits.monthlyCap",
            "greater than or equal to 0",
        ),
        (
            "  displayName: A\n  credits: {autoRefill: {threshold: 10}}\n",
            "spec.credits.autoRefill",
            "both threshold and amount",
        ),
        (
            "  displayName: A\n  apiKeys: [{name: k, scopes: [org:admin]}]\n",
            "spec.apiKeys[0].scopes",
            "org:admin can never",
        ),
        (
            "  displayName: A\n  apiKeys: [{name: k, scopes: []}]\n",
            "spec.apiKeys[0].scopes",
            "at least 1",
        ),
        (
            "  displayName: A\n  apiKeys: [{name: k, scopes: [nocolon]}]\n",
            "spec.apiKeys[0].scopes[0]",
            "should match",
        ),
        (
            "  displayName: A\n  apiKeys: [{name: k, scopes: [a:b]}, {name: k, scopes: [a:c]}]\n",
            "spec.apiKeys[1]",
            "Duplicate value",
        ),
        (
            "  displayName: A\n  apiKeys: [{name: k, scopes: [a:b], secretName: Not_DNS}]\n",
            "spec.apiKeys[0].secretName",
            "should match",
        ),
        (
            "  displayName: A\n  webhooks: [{name: w, url: \"http://crm.example.com/h\", events: [a.b]}]\n",
            "spec.webhooks[0].url",
            "must use https",
        ),
        (
            "  displayName: A\n  webhooks: [{name: w, url: \"https://x\", events: []}]\n",
            "spec.webhooks[0].events",
            "at least 1",
        ),
        (
            "  displayName: A\n  webhooks: [{name: w, url: \"https://x\", events: [a]}, {name: w, url: \"https://y\", events: [a]}]\n",
            "spec.webhooks[1]",
            "Duplicate value",
        ),
        (
            "  displayName: A\n  metadata: {externalId: x}\n",
            "spec.metadata",
            "reserved",
        ),
        (
            "  displayName: A\n  metadata: {aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: x}\n",
            "spec.metadata",
            "1-40 characters",
        ),
        (
            "  displayName: A\n  deletionPolicy: Delete\n",
            "spec.deletionPolicy",
            "Unsupported value",
        ),
        // Secret names collide (defaults included): the key crm-webhook and the webhook
        // crm both default to <name>-crm-webhook (once 40 keys minted in 25 s).
        (
            "  displayName: A\n  apiKeys: [{name: crm-webhook, scopes: [\"a:b\"]}]\n  webhooks: [{name: crm, url: \"https://x\", events: [a]}]\n",
            "spec.apiKeys and spec.webhooks",
            "same Secret",
        ),
        (
            "  displayName: A\n  apiKeys: [{name: k1, scopes: [\"a:b\"], secretName: shared}, {name: k2, scopes: [\"a:b\"], secretName: shared}]\n",
            "spec.apiKeys and spec.webhooks",
            "same Secret",
        ),
        (
            "  displayName: A\n  webhooks: [{name: w1, url: \"https://x\", events: [a], secretName: s}, {name: w2, url: \"https://y\", events: [a], secretName: s}]\n",
            "spec.apiKeys and spec.webhooks",
            "same Secret",
        ),
    ];
    for (i, (spec, field, words)) in cases.iter().enumerate() {
        let stderr = rejection(&corg(&ns, &format!("bad-{i}"), spec));
        assert_names(&stderr, field, words);
    }
    let fine = corg(
        &ns,
        "fine",
        "  displayName: Acme\n  webhooks: [{name: w, url: \"http://localhost:8080/h\", events: [a.b]}]\n  apiKeys: [{name: k, scopes: [\"content:read\"]}]\n",
    );
    let out = support::apply_yaml(&fine);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn admission_applies_defaults() {
    let ns = namespace();
    support::apply_yaml_ok(&corg(
        &ns,
        "defaults",
        "  displayName: Acme\n  apiKeys: [{name: k, scopes: [\"content:read\"]}]\n",
    ));
    let got = support::kubectl_ok(&[
        "get",
        "corg",
        "defaults",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.state} {.spec.deletionPolicy} {.spec.providerRef.name} {.spec.apiKeys[0].env}",
    ]);
    assert_eq!(got, "active Archive default live");
    support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn admission_enforces_transitions() {
    let ns = namespace();
    support::apply_yaml_ok(&corg(
        &ns,
        "t",
        "  displayName: Acme\n  adoptOrgId: org_1\n  state: archived\n",
    ));
    let stderr = rejection(&corg(
        &ns,
        "t",
        "  displayName: Acme\n  adoptOrgId: org_1\n  state: active\n",
    ));
    assert_names(&stderr, "spec", "archived is terminal");
    let stderr = rejection(&corg(
        &ns,
        "t",
        "  displayName: Acme\n  adoptOrgId: org_2\n  state: archived\n",
    ));
    assert_names(&stderr, "spec", "adoptOrgId is immutable");
    let stderr = rejection(&corg(&ns, "t", "  displayName: Acme\n  state: archived\n"));
    assert_names(&stderr, "spec", "adoptOrgId is immutable");
    // Unrelated edits stay allowed on an archived resource.
    support::apply_yaml_ok(&corg(
        &ns,
        "t",
        "  displayName: Acme 2\n  adoptOrgId: org_1\n  state: archived\n",
    ));
    support::kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

#[test]
fn admission_rejects_bad_org_provider() {
    let yaml = "apiVersion: orgops.dev/v1alpha1\nkind: OrgProvider\nmetadata: {name: crds-bad}\nspec:\n  type: layers\n  baseUrl: http://api.example.com\n  credentialsSecretRef: {namespace: orgops-system, name: creds}\n";
    assert_names(&rejection(yaml), "spec.baseUrl", "must use https");
    let yaml = yaml
        .replace("http://api.example.com", "https://api.example.com")
        .replace("layers", "stripe");
    assert_names(&rejection(&yaml), "spec.type", "Unsupported value");
    // spec.youhodler belongs to type youhodler; its enterpriseId is a uuid.
    let layers = yaml.replace("stripe", "layers");
    let misplaced =
        format!("{layers}  youhodler: {{enterpriseId: 0b7c6f3e-2f4d-4c8e-9a51-6d0e3b9f1a27}}\n");
    assert_names(&rejection(&misplaced), "spec", "only to type: youhodler");
    let bad_id = format!(
        "{}  youhodler: {{enterpriseId: not-a-uuid}}\n",
        yaml.replace("stripe", "youhodler")
    );
    assert_names(
        &rejection(&bad_id),
        "spec.youhodler.enterpriseId",
        "should match",
    );
}

#[test]
fn explain_describes_fields() {
    support::ControlPlane::ensure();
    let out = support::kubectl_ok(&["explain", "corg.spec.credits"]);
    assert!(out.contains("top-up") || out.contains("Top-up"), "{out}");
    assert!(out.contains("autoRefill"), "{out}");
}

/// Upgrades are boring: an object written as the deprecated v1alpha1 reads back unchanged
/// as v1beta1 (the storage version, conversion None), kubectl warns about v1alpha1, and
/// both versions serve the same schema.
#[test]
fn v1alpha1_objects_read_back_as_v1beta1() {
    let ns = namespace();
    let yaml = corg(
        &ns,
        "old-style",
        "  providerRef: {name: default}\n  displayName: Old Style\n  credits: {allocated: 7}\n",
    );
    let out = support::apply_yaml(&yaml.replace("orgops.dev/v1beta1", "orgops.dev/v1alpha1"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("orgops.dev/v1alpha1 CustomerOrg is deprecated; use orgops.dev/v1beta1"),
        "applying v1alpha1 should warn about the deprecation, stderr: {warned}"
    );
    let read = |version: &str| -> serde_json::Value {
        let out = support::kubectl_ok(&[
            "get",
            &format!("customerorgs.{version}.orgops.dev"),
            "old-style",
            "-n",
            &ns,
            "-o",
            "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let (beta, alpha) = (read("v1beta1"), read("v1alpha1"));
    assert_eq!(beta["apiVersion"], "orgops.dev/v1beta1");
    assert_eq!(alpha["apiVersion"], "orgops.dev/v1alpha1");
    assert_eq!(beta["spec"], alpha["spec"]);
    assert_eq!(beta["spec"]["credits"]["allocated"], 7);
    for crd in ["customerorgs", "orgproviders", "parentwebhooks"] {
        let out = support::kubectl_ok(&["get", "crd", &format!("{crd}.orgops.dev"), "-o", "json"]);
        let crd: serde_json::Value = serde_json::from_str(&out).unwrap();
        let versions = crd["spec"]["versions"].as_array().unwrap();
        let by_name = |n: &str| versions.iter().find(|v| v["name"] == n).unwrap();
        assert_eq!(by_name("v1beta1")["storage"], true);
        assert_eq!(by_name("v1alpha1")["served"], true);
        assert_eq!(by_name("v1alpha1")["deprecated"], true);
        assert_eq!(by_name("v1alpha1")["schema"], by_name("v1beta1")["schema"]);
        assert_eq!(crd["spec"]["conversion"]["strategy"], "None");
    }
    support::kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
}
