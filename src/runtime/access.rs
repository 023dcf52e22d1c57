//! Start-up check of the permissions the operator needs where it was told to work.
//!
//! Decision: a scope it cannot use (a watched namespace without the Role, or the whole
//! cluster without the ClusterRole) is logged as an error naming the namespace and every
//! missing permission, and `/readyz` fails (503, listing them) until they are granted.
//! The process keeps running: the other namespaces keep working, and the check repeats
//! every 30 s, so granting the Role later heals the install without a restart.
//! The check uses SelfSubjectAccessReview, which every authenticated user may create.
use super::http::Health;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{error, info, warn};

/// How often a failed check is repeated.
const RECHECK: Duration = Duration::from_secs(30);

/// Verbs on one resource.
struct Need {
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verbs: &'static [&'static str],
}

const fn need(
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verbs: &'static [&'static str],
) -> Need {
    Need {
        group,
        resource,
        subresource,
        verbs,
    }
}

/// Where CustomerOrgs and ParentWebhooks are watched (deploy/rbac.yaml, deploy/overlays/namespaced/rbac.yaml).
const WATCHED: &[Need] = &[
    need(
        "orgops.dev",
        "customerorgs",
        "",
        &["get", "list", "watch", "patch"],
    ),
    need("orgops.dev", "customerorgs", "status", &["patch"]),
    need(
        "orgops.dev",
        "parentwebhooks",
        "",
        &["list", "watch", "patch"],
    ),
    need("orgops.dev", "parentwebhooks", "status", &["patch"]),
    need(
        "",
        "secrets",
        "",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    need("events.k8s.io", "events", "", &["create"]),
];
/// The operator's own namespace in namespaced mode: the provider credentials.
const CREDENTIALS: &[Need] = &[need("", "secrets", "", &["get", "list", "watch"])];
/// The operator's own namespace: the leader Lease and the ownership claims (Leases).
const LEASES: &[Need] = &[need(
    "coordination.k8s.io",
    "leases",
    "",
    &["get", "create", "patch", "list", "delete"],
)];
/// OrgProviders are cluster-scoped.
const CLUSTER: &[Need] = &[
    need("orgops.dev", "orgproviders", "", &["list", "watch"]),
    need("orgops.dev", "orgproviders", "status", &["patch"]),
];

/// One permission to ask about; `namespace` None means every namespace (or a
/// cluster-scoped resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    pub namespace: Option<String>,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub verb: &'static str,
}

impl Permission {
    /// `list secrets`, `patch customerorgs.orgops.dev/status`.
    fn what(&self) -> String {
        let mut s = format!("{} {}", self.verb, self.resource);
        if !self.group.is_empty() {
            s = format!("{s}.{}", self.group);
        }
        if !self.subresource.is_empty() {
            s = format!("{s}/{}", self.subresource);
        }
        s
    }
}

/// Secret namespaces the OrgProvider controller watches for credential rotation: None
/// (all) in cluster-wide mode; else the watched namespaces plus the operator's own.
pub fn credential_namespaces(watched: &[String], own: &str) -> Option<Vec<String>> {
    if watched.is_empty() {
        return None;
    }
    let mut out = watched.to_vec();
    if !out.iter().any(|n| n == own) {
        out.push(own.to_string());
    }
    Some(out)
}

/// Every permission the operator needs for these watched namespaces (empty: all).
pub fn required(watched: &[String], own: &str) -> Vec<Permission> {
    let mut scopes: Vec<(Option<String>, &[Need])> =
        vec![(None, CLUSTER), (Some(own.to_string()), LEASES)];
    if watched.is_empty() {
        scopes.push((None, WATCHED));
    } else {
        scopes.extend(watched.iter().map(|ns| (Some(ns.clone()), WATCHED)));
        if !watched.iter().any(|n| n == own) {
            scopes.push((Some(own.to_string()), CREDENTIALS));
        }
    }
    scopes
        .into_iter()
        .flat_map(|(ns, needs)| {
            needs.iter().flat_map(move |n| {
                let ns = ns.clone();
                n.verbs.iter().map(move |verb| Permission {
                    namespace: ns.clone(),
                    group: n.group,
                    resource: n.resource,
                    subresource: n.subresource,
                    verb,
                })
            })
        })
        .collect()
}

/// The permissions of `wanted` the apiserver denies to this process.
async fn denied(
    client: &kube::Client,
    wanted: &[Permission],
) -> Result<Vec<Permission>, kube::Error> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut out = Vec::new();
    for p in wanted {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: p.namespace.clone(),
                    group: Some(p.group.to_string()),
                    resource: Some(p.resource.to_string()),
                    subresource: Some(p.subresource.to_string()).filter(|s| !s.is_empty()),
                    verb: Some(p.verb.to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = api.create(&PostParams::default(), &review).await?;
        if !answer.status.is_some_and(|s| s.allowed) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// `namespace team-a: list secrets, watch secrets; all namespaces: ...`
pub fn summary(missing: &[Permission]) -> String {
    let mut by_scope: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in missing {
        let scope = match &p.namespace {
            Some(ns) => format!("namespace {ns}"),
            None => "cluster-wide".to_string(),
        };
        by_scope.entry(scope).or_default().push(p.what());
    }
    by_scope
        .into_iter()
        .map(|(scope, what)| format!("{scope}: {}", what.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks until every permission is granted: logs each scope's missing permissions (again
/// only when they change) and holds `/readyz` at 503 meanwhile.
pub async fn check_until_granted(
    client: kube::Client,
    watched: Vec<String>,
    own: String,
    health: Health,
) {
    let wanted = required(&watched, &own);
    let mut last: Option<Vec<Permission>> = None;
    loop {
        match denied(&client, &wanted).await {
            Ok(missing) if missing.is_empty() => {
                if last.is_some() {
                    info!("every required permission is granted now; ready");
                }
                health.set_missing_permissions(None);
                return;
            }
            Ok(missing) => {
                if last.as_ref() != Some(&missing) {
                    let mut scopes: BTreeMap<Option<String>, Vec<Permission>> = BTreeMap::new();
                    for p in &missing {
                        scopes
                            .entry(p.namespace.clone())
                            .or_default()
                            .push(p.clone());
                    }
                    for (ns, perms) in &scopes {
                        error!(
                            namespace = ns.as_deref().unwrap_or("(all namespaces)"),
                            missing = %perms.iter().map(Permission::what).collect::<Vec<_>>().join(", "),
                            "the ServiceAccount lacks permissions the operator needs here; \
                             CustomerOrgs there are not reconciled and /readyz fails until \
                             they are granted (see docs/install.md)"
                        );
                    }
                }
                health.set_missing_permissions(Some(summary(&missing)));
                last = Some(missing);
            }
            Err(err) => warn!(error = %err, "cannot check permissions (SelfSubjectAccessReview)"),
        }
        tokio::time::sleep(RECHECK).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_mode_needs_roles_per_namespace_and_the_credentials_namespace() {
        let watched = vec!["team-a".to_string(), "team-b".to_string()];
        let req = required(&watched, "orgops-system");
        let in_ns = |ns: &str| {
            req.iter()
                .filter(|p| p.namespace.as_deref() == Some(ns))
                .map(Permission::what)
                .collect::<Vec<_>>()
        };
        assert!(in_ns("team-a").contains(&"create secrets".to_string()));
        assert!(in_ns("team-b").contains(&"patch customerorgs.orgops.dev/status".to_string()));
        assert_eq!(
            in_ns("orgops-system"),
            vec![
                "get leases.coordination.k8s.io",
                "create leases.coordination.k8s.io",
                "patch leases.coordination.k8s.io",
                "list leases.coordination.k8s.io",
                "delete leases.coordination.k8s.io",
                "get secrets",
                "list secrets",
                "watch secrets"
            ]
        );
        // Cluster-wide: only the cluster-scoped OrgProviders.
        let cluster: Vec<_> = req.iter().filter(|p| p.namespace.is_none()).collect();
        assert!(cluster.iter().all(|p| p.resource == "orgproviders"));
        assert_eq!(
            credential_namespaces(&watched, "orgops-system"),
            Some(vec![
                "team-a".into(),
                "team-b".into(),
                "orgops-system".into()
            ])
        );
    }

    #[test]
    fn cluster_wide_mode_asks_for_every_namespace() {
        let req = required(&[], "orgops-system");
        assert!(req.iter().all(|p| p.namespace.is_none()
            || (p.namespace.as_deref() == Some("orgops-system") && p.resource == "leases")));
        assert!(req.iter().any(|p| p.what() == "delete secrets"));
        assert_eq!(credential_namespaces(&[], "orgops-system"), None);
        let s = summary(&req[..2]);
        assert_eq!(
            s,
            "cluster-wide: list orgproviders.orgops.dev, watch orgproviders.orgops.dev"
        );
    }
}
