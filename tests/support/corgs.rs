//! Reading and waiting on CustomerOrgs, for any world that has a test namespace (the
//! Gennia and YouHodler worlds implement it).
use super::world::CONVERGE;
use super::{TestEnv, wait_for, wait_for_some};
use serde_json::Value;

/// CustomerOrg helpers over a test namespace.
#[allow(async_fn_in_trait)]
pub trait CorgWaits {
    fn env(&self) -> &TestEnv;

    fn corg(&self, name: &str) -> Value {
        let out = self
            .env()
            .kubectl_ok(&["get", "customerorg", name, "-o", "json"]);
        serde_json::from_str(&out).expect("CustomerOrg JSON")
    }

    /// Waits until `pred` holds for the object; returns it.
    async fn wait_corg(&self, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_for_some(&format!("CustomerOrg {name}: {what}"), CONVERGE, || async {
            let out = self
                .env()
                .kubectl(&["get", "customerorg", name, "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            pred(&v).then_some(v)
        })
        .await
    }

    /// Waits until condition `type_` is `status` at the object's current generation.
    async fn wait_condition(&self, name: &str, type_: &str, status: &str) -> Value {
        self.wait_corg(name, &format!("{type_}={status}"), |v| {
            current(v, type_).is_some_and(|c| c["status"] == status)
        })
        .await
    }

    async fn wait_ready(&self, name: &str) -> Value {
        self.wait_condition(name, "Ready", "True").await
    }

    /// Waits until Stalled=True with `reason` at the current generation.
    async fn wait_stalled(&self, name: &str, reason: &str) -> Value {
        self.wait_corg(name, &format!("Stalled {reason}"), |v| {
            current(v, "Stalled").is_some_and(|c| c["status"] == "True" && c["reason"] == reason)
        })
        .await
    }

    /// Waits until the object is gone (its finalizer released).
    async fn wait_gone(&self, name: &str) {
        wait_for(&format!("CustomerOrg {name} deleted"), CONVERGE, || async {
            let out = self.env().kubectl(&[
                "get",
                "customerorg",
                name,
                "--ignore-not-found",
                "-o",
                "name",
            ]);
            out.status.success() && out.stdout.is_empty()
        })
        .await;
    }

    /// The Events about `name` (events.k8s.io), as JSON items.
    fn events(&self, name: &str) -> Vec<Value> {
        let out = self.env().kubectl_ok(&[
            "get",
            "events.events.k8s.io",
            "--field-selector",
            &format!("regarding.name={name}"),
            "-o",
            "json",
        ]);
        let v: Value = serde_json::from_str(&out).expect("events JSON");
        v["items"].as_array().cloned().unwrap_or_default()
    }
}

/// Condition `type_` if it describes the object's current generation.
pub fn current<'a>(corg: &'a Value, type_: &str) -> Option<&'a Value> {
    let generation = &corg["metadata"]["generation"];
    corg["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && &c["observedGeneration"] == generation)
}

/// Waits until OrgProvider `name` is Ready; returns it.
pub async fn wait_provider_ready(name: &str) -> Value {
    wait_for_some(&format!("OrgProvider {name} Ready"), CONVERGE, || async {
        let out = super::kubectl(&["get", "orgprovider", name, "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = v["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(v)
    })
    .await
}
