//! `orgops plan` for the two other kinds: what applying an OrgProvider or a ParentWebhook
//! would change. Both are checked against their CRD's schema and compared with the object
//! in the cluster; an OrgProvider's credentials are read (never shown) and, unless
//! `--cluster-only`, tried with a whoami, since a provider that cannot authenticate stops
//! every CustomerOrg that uses it. Nothing is written.

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::Value;

use super::input::Doc;
use super::render::{Change, ObjectPlan};
use super::steps::Step;
use super::validate;
use crate::api::{CustomerOrg, OrgProvider, ParentWebhook, ProviderType};
use crate::reconcile::parent_webhook::plan::Desired;

/// Schema check and parse of one document; the plan carries the errors when it fails.
fn parse<K: serde::de::DeserializeOwned>(
    doc: &Doc,
    schema: &Value,
    plan: &mut ObjectPlan,
    ns: Option<&str>,
) -> Option<K> {
    let mut errs = Vec::new();
    if plan.name.is_empty() {
        errs.push(".metadata.name: required".to_string());
    }
    validate::schema_errors(schema, &doc.value, "", &mut errs);
    let mut value = doc.value.clone();
    if let (Some(ns), Some(meta)) = (ns, value.get_mut("metadata").and_then(Value::as_object_mut)) {
        meta.insert("namespace".into(), Value::String(ns.to_string()));
    }
    let parsed = serde_json::from_value::<K>(value);
    if let Err(e) = &parsed {
        errs.push(format!("does not parse: {e}"));
    }
    if errs.is_empty() {
        return parsed.ok();
    }
    plan.change = Change::Error;
    plan.errors = errs
        .into_iter()
        .map(|e| format!("{}: {e}", doc.source))
        .collect();
    None
}

/// `spec.<field>: old -> new` for each top-level spec field that differs.
fn spec_changes(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(unset)".to_string(), Value::to_string);
            format!("spec.{k}: {} -> {}", show(o.get(k)), show(n.get(k)))
        })
        .collect()
}

fn step(op: &'static str, text: String) -> Step {
    Step::new(op, text)
}

/// What applying one OrgProvider would do.
pub async fn plan_provider(client: &Client, doc: &Doc, cluster_only: bool) -> ObjectPlan {
    let name = doc.value["metadata"]["name"].as_str().unwrap_or_default();
    let mut p = ObjectPlan::new("", name, Some(doc.source.clone()));
    p.kind = "OrgProvider";
    let schema = validate::schema_of(OrgProvider::crd());
    let Some(new) = parse::<OrgProvider>(doc, &schema, &mut p, None) else {
        return p;
    };
    let api: Api<OrgProvider> = Api::all(client.clone());
    let live = match api.get_opt(name).await {
        Ok(l) => l,
        Err(e) => return error(p, format!("reading the live OrgProvider: {e}")),
    };
    let spec = serde_json::to_value(&new.spec).unwrap_or_default();
    let changes = match &live {
        None => {
            p.change = Change::Create;
            let r = &new.spec.credentials_secret_ref;
            p.actions.push(step(
                "create-provider",
                format!(
                    "add the {} API at {} with the credentials in Secret {}/{}",
                    spec["type"].as_str().unwrap_or("?"),
                    new.spec.base_url,
                    r.namespace,
                    r.name
                ),
            ));
            Vec::new()
        }
        Some(live) => {
            let changes =
                spec_changes(&serde_json::to_value(&live.spec).unwrap_or_default(), &spec);
            if !changes.is_empty() {
                p.change = Change::Update;
            }
            for c in &changes {
                p.actions.push(step("update-provider", c.clone()));
            }
            changes
        }
    };
    // Who depends on it: every CustomerOrg naming it (cluster-wide list; a namespaced
    // reader may not be allowed, and then says so).
    let users: Api<CustomerOrg> = Api::all(client.clone());
    match users.list(&ListParams::default()).await {
        Ok(list) => {
            let n = list
                .items
                .iter()
                .filter(|c| c.spec.provider_ref.name == name)
                .count();
            let client_changes = changes.iter().any(|c| {
                crate::api::org_provider::CLIENT_FIELDS
                    .iter()
                    .any(|f| c.starts_with(&format!("{f}:")))
            });
            if client_changes {
                p.notes.push(format!(
                    "the operator builds a new client: its {n} CustomerOrg(s) are verified against it next (writes only where they drifted)"
                ));
            } else {
                p.notes.push(format!("{n} CustomerOrg(s) use it"));
            }
        }
        Err(e) => p
            .notes
            .push(format!("cannot list CustomerOrgs to count its users: {e}")),
    }
    if let Some(e) = credentials_problem(client, &new, cluster_only).await {
        p.change = Change::Error;
        p.errors.push(format!(
            "{}: the OrgProvider would not be Ready: {e}",
            doc.source
        ));
    } else if !cluster_only {
        p.notes
            .push("its credentials authenticate (whoami, read-only)".into());
    }
    p
}

/// Why the spec's credentials would not work: the Secret or its key is missing, or (unless
/// `cluster_only`) the partner API refuses them. Never prints a value.
async fn credentials_problem(
    client: &Client,
    provider: &OrgProvider,
    cluster_only: bool,
) -> Option<String> {
    let r = &provider.spec.credentials_secret_ref;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &r.namespace);
    let secret = match secrets.get_opt(&r.name).await {
        Ok(Some(s)) => s,
        Ok(None) => return Some(format!("Secret {}/{} does not exist", r.namespace, r.name)),
        Err(e) => return Some(format!("reading Secret {}/{}: {e}", r.namespace, r.name)),
    };
    let creds = match crate::provider::build::credentials(&provider.spec, &secret) {
        Ok(c) => c,
        Err(e) => return Some(e),
    };
    if cluster_only {
        return None;
    }
    let built = match crate::provider::build::build(
        &provider.spec,
        &creds,
        None,
        &crate::provider::build::ClientOptions::default(),
    ) {
        Ok(b) => b.provider(),
        Err(e) => return Some(format!("cannot build a client: {}", e.message())),
    };
    match built.whoami().await {
        Ok(_) => None,
        Err(e) => Some(format!(
            "whoami with these credentials: {} {}",
            e.code(),
            e.message()
        )),
    }
}

/// What applying one ParentWebhook would do to its endpoint at the parent organization.
pub async fn plan_parent_webhook(client: &Client, doc: &Doc, default_ns: &str) -> ObjectPlan {
    let name = doc.value["metadata"]["name"].as_str().unwrap_or_default();
    let ns = doc.value["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_ns)
        .to_string();
    let mut p = ObjectPlan::new(&ns, name, Some(doc.source.clone()));
    p.kind = "ParentWebhook";
    let schema = validate::schema_of(ParentWebhook::crd());
    let Some(new) = parse::<ParentWebhook>(doc, &schema, &mut p, Some(&ns)) else {
        return p;
    };
    let providers: Api<OrgProvider> = Api::all(client.clone());
    match providers.get_opt(&new.spec.provider_ref.name).await {
        Ok(Some(op)) if op.spec.provider_type != ProviderType::Layers => {
            return error(
                p,
                format!(
                    "OrgProvider {} is of type {:?}: parent webhooks exist only on Layers",
                    op.name_any(),
                    op.spec.provider_type
                ),
            );
        }
        Ok(Some(_)) => {}
        Ok(None) => p.notes.push(format!(
            "OrgProvider {} does not exist: the endpoint waits for it",
            new.spec.provider_ref.name
        )),
        Err(e) => return error(p, format!("reading OrgProvider: {e}")),
    }
    let api: Api<ParentWebhook> = Api::namespaced(client.clone(), &ns);
    let live = match api.get_opt(name).await {
        Ok(l) => l,
        Err(e) => return error(p, format!("reading the live ParentWebhook: {e}")),
    };
    let want = Desired::of(&new);
    match &live {
        None => {
            p.change = Change::Create;
            p.actions.push(step(
                "create-endpoint",
                format!(
                    "create a parent endpoint ({}, {}) -> {} for {}",
                    want.scope,
                    want.status,
                    want.url,
                    want.events.join(", ")
                ),
            ));
            p.actions.push(step(
                "write-secret",
                format!(
                    "write its signing secret into Secret {ns}/{}",
                    want.secret_name
                ),
            ));
        }
        Some(live) => {
            let had = Desired::of(live);
            let mut parts = Vec::new();
            if had.url != want.url {
                parts.push(format!("url {} -> {}", had.url, want.url));
            }
            let added: Vec<&String> = want
                .events
                .iter()
                .filter(|e| !had.events.contains(e))
                .collect();
            let removed: Vec<&String> = had
                .events
                .iter()
                .filter(|e| !want.events.contains(e))
                .collect();
            for (sign, list) in [("+", added), ("-", removed)] {
                if !list.is_empty() {
                    let names: Vec<&str> = list.iter().map(|s| s.as_str()).collect();
                    parts.push(format!("events {sign}{}", names.join(&format!(" {sign}"))));
                }
            }
            if had.description != want.description {
                parts.push("description".into());
            }
            if had.status != want.status {
                parts.push(format!("status {} -> {}", had.status, want.status));
            }
            if had.scope != want.scope {
                parts.push(format!("scope {} -> {}", had.scope, want.scope));
            }
            if !parts.is_empty() {
                p.actions.push(step(
                    "update-endpoint",
                    format!("update the parent endpoint: {}", parts.join(", ")),
                ));
            }
            if had.secret_name != want.secret_name {
                p.actions.push(step(
                    "write-secret",
                    format!(
                        "move the signing secret to Secret {ns}/{} ({} is deleted)",
                        want.secret_name, had.secret_name
                    ),
                ));
            }
            if want.rotate_for.is_some() && had.rotate_for != want.rotate_for {
                p.actions.push(step(
                    "rotate-webhook-secret",
                    format!(
                        "rotate the signing secret into Secret {ns}/{}",
                        want.secret_name
                    ),
                ));
            }
            if !p.actions.is_empty() {
                p.change = Change::Update;
            }
            p.org_id = live.status.as_ref().and_then(|s| s.endpoint_id.clone());
        }
    }
    p
}

fn error(mut p: ObjectPlan, e: String) -> ObjectPlan {
    p.change = Change::Error;
    p.errors.push(e);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_changes_name_each_changed_field_with_both_values() {
        let old = serde_json::json!({"type": "layers", "baseUrl": "https://a", "rateLimit": {"tier": "auto"}});
        let new = serde_json::json!({"type": "layers", "baseUrl": "https://b", "offboarding": {"maxPerHour": 5}});
        assert_eq!(
            spec_changes(&old, &new),
            [
                r#"spec.baseUrl: "https://a" -> "https://b""#,
                r#"spec.offboarding: (unset) -> {"maxPerHour":5}"#,
                r#"spec.rateLimit: {"tier":"auto"} -> (unset)"#,
            ]
        );
        assert!(spec_changes(&old, &old).is_empty());
    }
}
