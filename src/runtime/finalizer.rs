//! Adding and removing `orgops.dev/offboard`. The merge patch carries the object's
//! resourceVersion, so a concurrent edit of the finalizer list fails with 409 (and is
//! retried) instead of being overwritten.
use crate::api::{CustomerOrg, FINALIZER};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

pub fn has(corg: &CustomerOrg) -> bool {
    corg.finalizers().iter().any(|f| f == FINALIZER)
}

pub fn add_patch(corg: &CustomerOrg) -> Value {
    let mut list: Vec<String> = corg.finalizers().to_vec();
    if !list.iter().any(|f| f == FINALIZER) {
        list.push(FINALIZER.to_string());
    }
    patch_with(corg, list)
}

/// `None` when the finalizer is not there.
pub fn remove_patch(corg: &CustomerOrg) -> Option<Value> {
    if !has(corg) {
        return None;
    }
    let list: Vec<String> = corg
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    Some(patch_with(corg, list))
}

fn patch_with(corg: &CustomerOrg, list: Vec<String>) -> Value {
    json!({"metadata": {"finalizers": list, "resourceVersion": corg.resource_version()}})
}

/// Returns the resourceVersion the patch produced.
pub async fn apply(
    api: &Api<CustomerOrg>,
    name: &str,
    patch: &Value,
) -> Result<Option<String>, kube::Error> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(|o| o.metadata.resource_version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::CustomerOrgSpec;

    fn corg(finalizers: Vec<&str>) -> CustomerOrg {
        let spec: CustomerOrgSpec =
            serde_json::from_value(json!({"displayName": "Acme"})).expect("spec");
        let mut c = CustomerOrg::new("acme", spec);
        c.metadata.finalizers = Some(finalizers.into_iter().map(String::from).collect());
        c.metadata.resource_version = Some("42".into());
        c
    }

    #[test]
    fn patches_keep_other_finalizers_and_pin_the_version() {
        let empty = corg(vec![]);
        assert!(!has(&empty));
        assert_eq!(
            add_patch(&empty),
            json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "42"}})
        );
        assert_eq!(remove_patch(&empty), None);

        let both = corg(vec!["example.com/keep", FINALIZER]);
        assert!(has(&both));
        assert_eq!(
            add_patch(&both)["metadata"]["finalizers"],
            json!(["example.com/keep", FINALIZER])
        );
        assert_eq!(
            remove_patch(&both),
            Some(
                json!({"metadata": {"finalizers": ["example.com/keep"], "resourceVersion": "42"}})
            )
        );
    }
}
