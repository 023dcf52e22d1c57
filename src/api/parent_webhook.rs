//! `ParentWebhook`: a webhook endpoint on the partner's *parent* organization, typically the
//! firehose (`scope: allChildren`) that receives every child's events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::customer_org::ProviderRef;

/// Each new value rotates the endpoint's signing secret once.
pub const ROTATE_SECRET_ANNOTATION: &str = "orgops.dev/rotate-secret";
/// Finalizer that deletes the endpoint before a ParentWebhook goes away.
pub const PARENT_WEBHOOK_FINALIZER: &str = "orgops.dev/delete-endpoint";
/// Metadata key on the endpoint naming the ParentWebhook (`<namespace>/<name>`): how a
/// rebuilt cluster finds (adopts) its endpoint instead of creating a second one.
pub const PARENT_WEBHOOK_MARKER: &str = "orgops.dev/parent-webhook";

/// A webhook endpoint on the parent organization.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "orgops.dev",
    version = "v1beta1",
    kind = "ParentWebhook",
    namespaced,
    shortname = "pwh",
    doc = "A webhook endpoint on the partner's parent organization (e.g. the all-children firehose), managed by orgops.",
    status = "ParentWebhookStatus",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url","description":"Delivery URL"}"#,
    printcolumn = r#"{"name":"Scope","type":"string","jsonPath":".spec.scope","description":"allChildren (firehose) or own"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether the endpoint matches the spec"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ParentWebhookSpec {
    /// The OrgProvider (cluster-scoped) whose parent organization holds the endpoint.
    #[serde(default)]
    pub provider_ref: ProviderRef,
    /// Delivery URL: https, or http only for localhost / 127.0.0.1.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('https://') || self.matches('^http://(localhost|127[.]0[.]0[.]1)([:/?#].*)?$')",
        "message": "url must use https (http is allowed only for localhost and 127.0.0.1)"
    }]))]
    pub url: String,
    /// Event names to deliver (1-50), such as post.published.
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 100)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<String>,
    /// allChildren (default): the parent's events and every direct child's, each tagged with
    /// data.organizationId (needs an org:admin parent key). own: the parent's events only.
    #[serde(default)]
    pub scope: WebhookScope,
    /// Free text shown at the provider (at most 500 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
    /// false pauses deliveries (endpoint status paused); true (default) keeps it active,
    /// re-activating an endpoint paused by hand or auto-paused after failures.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Secret that receives the signing secret; default `<name>-signing-secret`. Must not be
    /// owned by anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Which organizations' events the endpoint receives.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookScope {
    #[default]
    AllChildren,
    Own,
}

impl WebhookScope {
    /// The API's value (`all_children` / `own`).
    pub fn api_value(self) -> &'static str {
        match self {
            WebhookScope::AllChildren => "all_children",
            WebhookScope::Own => "own",
        }
    }
}

/// What the operator last observed and did (never the signing secret).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// As for CustomerOrg: stored on a new object so kstatus reads it as InProgress until the
// operator writes a real status.
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct ParentWebhookStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Provider id of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    /// Secret holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// Value of the orgops.dev/rotate-secret annotation whose rotation has been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_rotated_for: Option<String>,
    /// After the last rotation the previous signing secret stays valid until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Ready, Reconciling and Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl ParentWebhook {
    /// The Secret that receives the signing secret.
    pub fn secret_name(&self) -> String {
        self.spec.secret_name.clone().unwrap_or_else(|| {
            format!(
                "{}-signing-secret",
                self.metadata.name.as_deref().unwrap_or_default()
            )
        })
    }

    /// The marker value written to the endpoint's metadata: `<namespace>/<name>`.
    pub fn marker(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_names() {
        let spec: ParentWebhookSpec = serde_json::from_value(serde_json::json!({
            "url": "https://hooks.example.com/layers",
            "events": ["post.published"]
        }))
        .unwrap();
        assert_eq!(spec.scope, WebhookScope::AllChildren);
        assert_eq!(spec.scope.api_value(), "all_children");
        assert!(spec.enabled);
        assert_eq!(spec.provider_ref.name, "default");
        let mut pwh = ParentWebhook::new("firehose", spec);
        pwh.metadata.namespace = Some("partner".into());
        assert_eq!(pwh.secret_name(), "firehose-signing-secret");
        assert_eq!(pwh.marker(), "partner/firehose");
        let own: WebhookScope = serde_json::from_value(serde_json::json!("own")).unwrap();
        assert_eq!(own.api_value(), "own");
        assert!(serde_json::from_value::<WebhookScope>(serde_json::json!("all_children")).is_err());
    }
}
