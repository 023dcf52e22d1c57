//! What the reconciler never reads is dropped before an object is cached: `managedFields`
//! and kubectl's last-applied annotation are most of a small object's size, and every
//! cache keeps one copy per object for the life of the process (docs/benchmarks.md).

use kube::Resource;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Strips what no reconciler reads from one watched object.
pub fn prune<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn managed_fields_and_last_applied_go_other_annotations_stay() {
        let mut cm = ConfigMap::default();
        cm.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        cm.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{}".to_string()),
                ("orgops.dev/paused".to_string(), "true".to_string()),
            ]
            .into(),
        );
        prune(&mut cm);
        assert!(cm.metadata.managed_fields.is_none());
        let a = cm.metadata.annotations.unwrap_or_default();
        assert_eq!(a.len(), 1);
        assert_eq!(a.get("orgops.dev/paused").map(String::as_str), Some("true"));
    }
}
