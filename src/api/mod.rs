//! CRD types: CustomerOrg, OrgProvider, ParentWebhook and their conditions.

pub mod conditions;
pub mod customer_org;
pub mod org_provider;
pub mod parent_webhook;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
    JSONSchemaPropsOrBool,
};
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
/// `"<metadata.generation>"` approves the transfer a guardrail holds for that generation of
/// one CustomerOrg (a later generation needs a new approval).
pub const CONFIRM_CREDITS_ANNOTATION: &str = "orgops.dev/confirm-credits";
/// The GitOps revision that produced the spec, when the pipeline sets it (the change log
/// records it; Argo CD's and Flux's own marks are read too).
pub const REVISION_ANNOTATION: &str = "orgops.dev/revision";
/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "orgops";

/// The version the operator reads and writes, and the CRDs' storage version.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` of every orgops object the operator writes.
pub const API_VERSION: &str = "orgops.dev/v1beta1";
/// The first version, still served with the same schema (conversion `None`) and deprecated:
/// see docs/upgrading.md.
pub const DEPRECATED_VERSION: &str = "v1alpha1";

/// Every CRD of the operator, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        served_versions(CustomerOrg::crd()),
        served_versions(OrgProvider::crd()),
        served_versions(ParentWebhook::crd()),
    ]
}

/// The generated CRD serves one version (`VERSION`, the storage version); this adds the
/// deprecated `v1alpha1` beside it with the identical schema. Identical schemas convert
/// losslessly by rewriting `apiVersion` only, so the conversion strategy is `None` (no
/// webhook). Also drops integer formats the apiserver does not know (schemars writes
/// `uint32` for u32; `minimum: 0` stays), which `kubectl apply` warned about.
fn served_versions(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_unknown_formats(schema);
        }
    }
    if let Some(current) = crd.spec.versions.first() {
        let mut old = current.clone();
        old.name = DEPRECATED_VERSION.to_string();
        old.storage = false;
        old.deprecated = Some(true);
        old.deprecation_warning = Some(format!(
            "orgops.dev/{DEPRECATED_VERSION} {} is deprecated; use {API_VERSION} (same fields)",
            crd.spec.names.kind
        ));
        crd.spec.versions.push(old);
    }
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "None".to_string(),
        webhook: None,
    });
    crd
}

/// Formats the apiserver recognises for the types orgops uses; any other is dropped.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "uri",
    "email",
    "hostname",
    "uuid",
    "password",
];

fn drop_unknown_formats(schema: &mut JSONSchemaProps) {
    if schema
        .format
        .as_deref()
        .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
    {
        schema.format = None;
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        drop_unknown_formats(child);
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => drop_unknown_formats(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => {
            items.iter_mut().for_each(drop_unknown_formats)
        }
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        drop_unknown_formats(extra);
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        list.iter_mut().flatten().for_each(drop_unknown_formats);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn formats(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(f)) = m.get("format") {
                    out.push(f.clone());
                }
                m.values().for_each(|c| formats(c, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|c| formats(c, out)),
            _ => {}
        }
    }

    /// `kubectl apply` of the CRDs printed `Warning: unrecognized format "uint32"`: every
    /// format in every served version must be one the apiserver knows.
    #[test]
    fn every_format_in_the_crds_is_known_to_the_apiserver() {
        let mut found = Vec::new();
        for crd in crds() {
            formats(&serde_json::to_value(&crd.spec).unwrap(), &mut found);
        }
        assert!(!found.is_empty());
        let unknown: Vec<&String> = found
            .iter()
            .filter(|f| !KNOWN_FORMATS.contains(&f.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "formats the apiserver warns about: {unknown:?}"
        );
    }

    #[test]
    fn every_kind_serves_both_versions_with_one_schema() {
        for crd in crds() {
            let names: Vec<(&str, bool, bool)> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.served, v.storage))
                .collect();
            assert_eq!(
                names,
                [(VERSION, true, true), (DEPRECATED_VERSION, true, false)]
            );
            assert_eq!(crd.spec.versions[0].schema, crd.spec.versions[1].schema);
            assert_eq!(
                crd.spec.conversion.as_ref().map(|c| c.strategy.as_str()),
                Some("None")
            );
        }
    }
}
