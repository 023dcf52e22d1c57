//! The GitOps revision that produced an object's spec, for the change log.
//!
//! Where it comes from, first match wins:
//! - `orgops.dev/revision` on the object: the revision itself (a pipeline sets it, e.g.
//!   kustomize `commonAnnotations` filled by CI, or Argo CD's `$ARGOCD_APP_REVISION`).
//! - Argo CD's tracking annotation `argocd.argoproj.io/tracking-id`
//!   (`<app>:<group>/<kind>:<namespace>/<name>`, the app `<namespace>_<name>` when
//!   Applications live outside Argo CD's namespace): the Application's
//!   `status.sync.revision` (or its `revisions`, multi-source).
//! - Flux's labels `kustomize.toolkit.fluxcd.io/name` + `/namespace` (the Kustomization's
//!   `status.lastAppliedRevision`) or `helm.toolkit.fluxcd.io/name` + `/namespace` (the
//!   HelmRelease's `status.lastAttemptedRevision`).
//!
//! The Application or Kustomization is read when a write is recorded, so the revision is
//! the one the tool last synced, which is the one that produced the spec unless a newer
//! sync landed in between; the annotation is exact. Reads are cached for 30 s per source,
//! failures too (no read access, the CRD not installed): then the record names the source
//! and no revision.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::core::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::REVISION_ANNOTATION;

pub const ARGOCD_TRACKING: &str = "argocd.argoproj.io/tracking-id";
pub const FLUX_KUSTOMIZATION_NAME: &str = "kustomize.toolkit.fluxcd.io/name";
pub const FLUX_KUSTOMIZATION_NAMESPACE: &str = "kustomize.toolkit.fluxcd.io/namespace";
pub const FLUX_HELM_NAME: &str = "helm.toolkit.fluxcd.io/name";
pub const FLUX_HELM_NAMESPACE: &str = "helm.toolkit.fluxcd.io/namespace";

/// How long a read revision (or a failed read) is reused.
const TTL: Duration = Duration::from_secs(30);

/// The GitOps revision of a record, and where it was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitOps {
    /// The revision (a commit, `main@sha1:…`, a chart version); absent when the source
    /// could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// `annotation`, `argocd:<namespace>/<application>`,
    /// `flux:Kustomization/<namespace>/<name>` or `flux:HelmRelease/<namespace>/<name>`.
    pub source: String,
}

/// Where an object's revision can be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Annotation(String),
    ArgoCd {
        namespace: String,
        name: String,
    },
    Flux {
        kind: FluxKind,
        namespace: String,
        name: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FluxKind {
    Kustomization,
    HelmRelease,
}

impl Source {
    /// The `source` field of a record.
    pub fn label(&self) -> String {
        match self {
            Source::Annotation(_) => "annotation".to_string(),
            Source::ArgoCd { namespace, name } => format!("argocd:{namespace}/{name}"),
            Source::Flux {
                kind,
                namespace,
                name,
            } => format!("flux:{kind:?}/{namespace}/{name}"),
        }
    }
}

/// The source `meta` names. `argocd_namespace`: where Argo CD's own Applications live
/// (a tracking id without a namespace prefix names one there).
pub fn source_of(meta: &ObjectMeta, argocd_namespace: &str) -> Option<Source> {
    let annotation = |k: &str| meta.annotations.as_ref().and_then(|a| a.get(k));
    let label = |k: &str| meta.labels.as_ref().and_then(|l| l.get(k));
    if let Some(rev) = annotation(REVISION_ANNOTATION).filter(|r| !r.trim().is_empty()) {
        return Some(Source::Annotation(rev.trim().to_string()));
    }
    if let Some(app) = annotation(ARGOCD_TRACKING)
        .and_then(|id| id.split(':').next())
        .filter(|a| !a.is_empty())
    {
        let (namespace, name) = match app.split_once('_') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => (ns, name),
            _ => (argocd_namespace, app),
        };
        return Some(Source::ArgoCd {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }
    for (kind, name_key, ns_key) in [
        (
            FluxKind::Kustomization,
            FLUX_KUSTOMIZATION_NAME,
            FLUX_KUSTOMIZATION_NAMESPACE,
        ),
        (FluxKind::HelmRelease, FLUX_HELM_NAME, FLUX_HELM_NAMESPACE),
    ] {
        if let (Some(name), Some(namespace)) = (label(name_key), label(ns_key)) {
            return Some(Source::Flux {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
    }
    None
}

/// The revision in an Application's or a Flux object's status.
pub fn revision_in(source: &Source, status: &Value) -> Option<String> {
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
    match source {
        Source::Annotation(r) => Some(r.clone()),
        Source::ArgoCd { .. } => {
            let sync = &status["sync"];
            text(&sync["revision"]).or_else(|| {
                let all: Vec<String> = sync["revisions"]
                    .as_array()?
                    .iter()
                    .filter_map(text)
                    .collect();
                (!all.is_empty()).then(|| all.join(","))
            })
        }
        Source::Flux {
            kind: FluxKind::Kustomization,
            ..
        } => text(&status["lastAppliedRevision"]),
        Source::Flux {
            kind: FluxKind::HelmRelease,
            ..
        } => text(&status["lastAttemptedRevision"]),
    }
}

fn resource(source: &Source) -> Option<(ApiResource, &str, &str)> {
    let (gvk, plural, namespace, name) = match source {
        Source::Annotation(_) => return None,
        Source::ArgoCd { namespace, name } => (
            GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"),
            "applications",
            namespace,
            name,
        ),
        Source::Flux {
            kind: FluxKind::Kustomization,
            namespace,
            name,
        } => (
            GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
            "kustomizations",
            namespace,
            name,
        ),
        Source::Flux {
            kind: FluxKind::HelmRelease,
            namespace,
            name,
        } => (
            GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
            "helmreleases",
            namespace,
            name,
        ),
    };
    Some((
        ApiResource::from_gvk_with_plural(&gvk, plural),
        namespace.as_str(),
        name.as_str(),
    ))
}

/// Reads revisions from the cluster, cached.
pub struct Revisions {
    client: kube::Client,
    argocd_namespace: String,
    cache: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl Revisions {
    pub fn new(client: kube::Client, argocd_namespace: impl Into<String>) -> Revisions {
        Revisions {
            client,
            argocd_namespace: argocd_namespace.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The GitOps revision of the object `meta` describes, when it names a source.
    pub async fn of(&self, meta: &ObjectMeta) -> Option<GitOps> {
        let source = source_of(meta, &self.argocd_namespace)?;
        let label = source.label();
        let Some((ar, namespace, name)) = resource(&source) else {
            return Some(GitOps {
                revision: revision_in(&source, &Value::Null),
                source: label,
            });
        };
        let cached = {
            let cache = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cache
                .get(&label)
                .filter(|(at, _)| at.elapsed() < TTL)
                .map(|(_, r)| r.clone())
        };
        let revision = match cached {
            Some(r) => r,
            None => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), namespace, &ar);
                let read = match api.get_opt(name).await {
                    Ok(Some(obj)) => revision_in(&source, &obj.data["status"]),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(source = %label, error = %e, "cannot read the GitOps revision");
                        None
                    }
                };
                self.cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(label.clone(), (Instant::now(), read.clone()));
                read
            }
        };
        Some(GitOps {
            revision,
            source: label,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn meta(annotations: &[(&str, &str)], labels: &[(&str, &str)]) -> ObjectMeta {
        let map = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            })
        };
        ObjectMeta {
            annotations: map(annotations),
            labels: map(labels),
            ..Default::default()
        }
    }

    #[test]
    fn the_annotation_wins_then_argocd_then_flux() {
        let all = meta(
            &[
                (REVISION_ANNOTATION, " 4f2c9e1 "),
                (
                    ARGOCD_TRACKING,
                    "payments:orgops.dev/CustomerOrg:team-a/acme",
                ),
            ],
            &[
                (FLUX_KUSTOMIZATION_NAME, "apps"),
                (FLUX_KUSTOMIZATION_NAMESPACE, "flux-system"),
            ],
        );
        assert_eq!(
            source_of(&all, "argocd"),
            Some(Source::Annotation("4f2c9e1".into()))
        );
        let argo = meta(
            &[(
                ARGOCD_TRACKING,
                "payments:orgops.dev/CustomerOrg:team-a/acme",
            )],
            &[],
        );
        assert_eq!(
            source_of(&argo, "argocd"),
            Some(Source::ArgoCd {
                namespace: "argocd".into(),
                name: "payments".into()
            })
        );
        let any_ns = meta(
            &[(
                ARGOCD_TRACKING,
                "team-a_payments:orgops.dev/CustomerOrg:team-a/acme",
            )],
            &[],
        );
        assert_eq!(
            source_of(&any_ns, "argocd").map(|s| s.label()),
            Some("argocd:team-a/payments".into())
        );
        let flux = meta(
            &[],
            &[
                (FLUX_KUSTOMIZATION_NAME, "apps"),
                (FLUX_KUSTOMIZATION_NAMESPACE, "flux-system"),
            ],
        );
        assert_eq!(
            source_of(&flux, "argocd").map(|s| s.label()),
            Some("flux:Kustomization/flux-system/apps".into())
        );
        let helm = meta(
            &[],
            &[
                (FLUX_HELM_NAME, "orgs"),
                (FLUX_HELM_NAMESPACE, "flux-system"),
            ],
        );
        assert_eq!(
            source_of(&helm, "argocd").map(|s| s.label()),
            Some("flux:HelmRelease/flux-system/orgs".into())
        );
        assert_eq!(source_of(&meta(&[], &[]), "argocd"), None);
        // Half of Flux's pair names nothing.
        assert_eq!(
            source_of(&meta(&[], &[(FLUX_KUSTOMIZATION_NAME, "apps")]), "argocd"),
            None
        );
    }

    #[test]
    fn revisions_are_read_where_each_tool_keeps_them() {
        let argo = Source::ArgoCd {
            namespace: "argocd".into(),
            name: "a".into(),
        };
        assert_eq!(
            revision_in(&argo, &json!({"sync": {"revision": "abc"}})),
            Some("abc".into())
        );
        assert_eq!(
            revision_in(&argo, &json!({"sync": {"revisions": ["a1", "b2"]}})),
            Some("a1,b2".into()),
            "multi-source"
        );
        assert_eq!(revision_in(&argo, &json!({})), None);
        let ks = Source::Flux {
            kind: FluxKind::Kustomization,
            namespace: "f".into(),
            name: "k".into(),
        };
        assert_eq!(
            revision_in(&ks, &json!({"lastAppliedRevision": "main@sha1:abc"})),
            Some("main@sha1:abc".into())
        );
        let hr = Source::Flux {
            kind: FluxKind::HelmRelease,
            namespace: "f".into(),
            name: "h".into(),
        };
        assert_eq!(
            revision_in(&hr, &json!({"lastAttemptedRevision": "1.2.3"})),
            Some("1.2.3".into())
        );
    }
}
