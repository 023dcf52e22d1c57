//! One fresh namespace per test.
use super::{ControlPlane, kubectl, kubectl_ok, random_suffix};
use std::process::Output;

/// A unique namespace `t-<name>-<rand>`; deleted by `cleanup().await` or, best effort,
/// on drop. Set `ORGOPS_E2E_KEEP=1` to keep namespaces for debugging.
#[derive(Debug)]
pub struct TestEnv {
    pub ns: String,
    cleaned: bool,
}

impl TestEnv {
    pub async fn new(name: &str) -> TestEnv {
        ControlPlane::ensure();
        let ns = namespace_name(name);
        kubectl_ok(&["create", "namespace", &ns]);
        TestEnv { ns, cleaned: false }
    }

    /// Like `new`, in a namespace the finalizer policy leaves out
    /// (`orgops.dev/finalizer-policy=off`): the operator adds its finalizer itself there.
    pub async fn without_finalizer_policy(name: &str) -> TestEnv {
        ControlPlane::ensure();
        let ns = namespace_name(name);
        create_namespace_without_finalizer_policy(&ns);
        TestEnv { ns, cleaned: false }
    }

    /// A kube client with admin credentials.
    pub async fn client(&self) -> kube::Client {
        ControlPlane::ensure().client().await
    }

    /// `kubectl -n <ns> ...`
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        kubectl(&all)
    }

    /// `kubectl -n <ns> ...` returning stdout; panics with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.ns.as_str()];
        all.extend_from_slice(args);
        kubectl_ok(&all)
    }

    /// Drops every finalizer of `kind/name` (a merge patch); for an object being deleted,
    /// what the operator's removal does.
    pub fn drop_finalizers(&self, kind: &str, name: &str) {
        self.kubectl_ok(&[
            "patch",
            kind,
            name,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }

    /// Deletes the namespace (without waiting) and the ServiceAccount's bindings.
    /// CustomerOrgs and ParentWebhooks are deleted and their finalizers dropped first: with the operator gone
    /// they would pin the namespace in Terminating.
    pub async fn cleanup(mut self) {
        self.delete_namespace();
    }

    fn delete_namespace(&mut self) {
        if self.cleaned || std::env::var("ORGOPS_E2E_KEEP").is_ok_and(|v| v == "1") {
            self.cleaned = true;
            return;
        }
        self.cleaned = true;
        // Mark CustomerOrgs (and ParentWebhooks) deleted first: once deleting, no finalizer can
        // be added back, so a still-running operator cannot re-add the one stripped below.
        for kind in ["customerorgs.orgops.dev", "parentwebhooks.orgops.dev"] {
            let _ = self.kubectl(&["delete", kind, "--all", "--wait=false"]);
            let names = self.kubectl(&["get", kind, "-o", "name"]);
            if names.status.success() {
                for name in String::from_utf8_lossy(&names.stdout).lines() {
                    let _ = self.kubectl(&[
                        "patch",
                        name,
                        "--type=merge",
                        "-p",
                        r#"{"metadata":{"finalizers":null}}"#,
                    ]);
                }
            }
        }
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.ns,
            "--wait=false",
            "--ignore-not-found",
        ]);
        // Bindings made by bind_service_account live outside the namespace.
        let binding = format!("orgops-e2e-{}", self.ns);
        let _ = kubectl(&[
            "delete",
            "clusterrolebinding",
            &binding,
            "--ignore-not-found",
        ]);
        let _ = kubectl(&[
            "delete",
            "rolebinding",
            &binding,
            "-n",
            "orgops-system",
            "--ignore-not-found",
        ]);
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.delete_namespace();
    }
}

/// `t-<name>-<rand>` made DNS-1123 safe and at most 63 characters.
fn namespace_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let clean = clean.trim_matches('-');
    let clean = &clean[..clean.len().min(48)];
    format!("t-{}-{}", clean.trim_end_matches('-'), random_suffix())
}

/// Creates namespace `ns` labelled `orgops.dev/finalizer-policy=off` (one write, so the
/// label is there before anything is created in it).
pub fn create_namespace_without_finalizer_policy(ns: &str) {
    super::apply_yaml_ok(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    orgops.dev/finalizer-policy: \"off\"\n"
    ));
}
