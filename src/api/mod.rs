//! CRD types: CustomerOrg, OrgProvider, ParentWebhook and their conditions.

pub mod conditions;
pub mod customer_org;
pub mod org_provider;
pub mod parent_webhook;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use customer_org::*;
pub use org_provider::*;
pub use parent_webhook::*;

/// Finalizer that runs offboarding before a CustomerOrg goes away.
pub const FINALIZER: &str = "orgops.dev/offboard";
/// `"true"` stops every API call for the resource.
pub const PAUSED_ANNOTATION: &str = "orgops.dev/paused";
/// Each new value rotates every key of the resource once.
pub const ROTATE_KEYS_ANNOTATION: &str = "orgops.dev/rotate-keys";
/// `"true"` lets one deleting CustomerOrg offboard past its provider's offboarding window.
pub const CONFIRM_OFFBOARD_ANNOTATION: &str = "orgops.dev/confirm-offboard";
/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "orgops";

/// Every CRD of the operator, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![CustomerOrg::crd(), OrgProvider::crd(), ParentWebhook::crd()]
}

/// The CRDs as multi-document YAML, exactly what `orgops crds` prints.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
