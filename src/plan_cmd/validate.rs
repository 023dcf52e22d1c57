//! What admission would say about a CustomerOrg, checked before planning it: the CRD's
//! OpenAPI schema (types, unknown fields, required, enum, lengths, patterns, ranges, list
//! keys) walked here, and the CRD's CEL rules mirrored in Rust (`cel_rules`; a unit test
//! fails when the CRD gains a rule that is not mirrored). Errors name the field.

use std::collections::BTreeSet;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::{CustomerOrg, DesiredState};

/// The CustomerOrg schema (openAPIV3Schema) as JSON.
pub fn customer_org_schema() -> Value {
    schema_of(CustomerOrg::crd())
}

/// The openAPIV3Schema of a CRD (its first version; all versions share it) as JSON.
pub fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

/// Every schema violation under `path`.
pub fn schema_errors(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) && !path.is_empty() {
            out.push(format!("{path}: must not be null"));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str)
        && !type_ok(ty, v)
    {
        out.push(format!("{path}: must be of type {ty}"));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(format!("{path}: {v} is not one of {}", names.join(", ")));
    }
    match v {
        Value::String(s) => string_errors(schema, s, path, out),
        Value::Number(n) => {
            if let (Some(min), Some(x)) =
                (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
                && x < min
            {
                out.push(format!("{path}: must be at least {min} (got {n})"));
            }
            if let (Some(max), Some(x)) =
                (schema.get("maximum").and_then(Value::as_f64), n.as_f64())
                && x > max
            {
                out.push(format!("{path}: must be at most {max} (got {n})"));
            }
        }
        Value::Array(items) => array_errors(schema, items, path, out),
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    out.push(format!("{path}.{req}: required"));
                }
            }
            let extra = schema.get("additionalProperties");
            for (k, child) in map {
                // The object's own fields are the apiserver's, not the CRD schema's.
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => schema_errors(s, child, &p, out),
                    (None, Some(s)) if s.is_object() => schema_errors(s, child, &p, out),
                    (None, _) if props.is_some() => out.push(format!("{p}: unknown field")),
                    _ => {}
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                out.push(format!("{path}: at most {max} entries (got {})", map.len()));
            }
        }
        _ => {}
    }
}

fn string_errors(schema: &Value, s: &str, path: &str, out: &mut Vec<String>) {
    let len = s.chars().count() as u64;
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        out.push(format!("{path}: at least {min} characters"));
    }
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        out.push(format!("{path}: at most {max} characters (got {len})"));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(s))
    {
        out.push(format!("{path}: {s:?} does not match {pattern}"));
    }
}

fn array_errors(schema: &Value, items: &[Value], path: &str, out: &mut Vec<String>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && items.len() as u64 > max
    {
        out.push(format!("{path}: at most {max} items (got {})", items.len()));
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (items.len() as u64) < min
    {
        out.push(format!("{path}: at least {min} items"));
    }
    if let Some(item) = schema.get("items") {
        for (i, child) in items.iter().enumerate() {
            schema_errors(item, child, &format!("{path}[{i}]"), out);
        }
    }
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = BTreeSet::new();
            for v in items {
                if !seen.insert(v.to_string()) {
                    out.push(format!("{path}: duplicate entry {v}"));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut seen = BTreeSet::new();
            for v in items {
                let key: Vec<String> = keys.iter().map(|k| v[*k].to_string()).collect();
                if !seen.insert(key.clone()) {
                    out.push(format!("{path}: duplicate entry {}", key.join("/")));
                }
            }
        }
        _ => {}
    }
}

/// The CEL rules of the CRD, each mirrored by a check in [`cel_errors`].
#[cfg(test)]
const CEL_RULES_MIRRORED: &[&str] = &[
    "!self.exists(s, s == 'org:admin')",
    "has(self.threshold) == has(self.amount)",
    "self.all(k, size(k) >= 1 && size(k) <= 40)",
    "self.all(k, k != 'externalId' && !k.startsWith('orgops.dev/'))",
    "self.startsWith('https://') || self.matches('^http://(localhost|127[.]0[.]0[.]1)([:/?#].*)?$')",
    "!has(oldSelf.state) || oldSelf.state != 'archived' || self.state == 'archived'",
    "!has(oldSelf.adoptOrgId) || (has(self.adoptOrgId) && self.adoptOrgId == oldSelf.adoptOrgId)",
    "!has(oldSelf.migrateProjects) || (has(self.migrateProjects) && self.migrateProjects == oldSelf.migrateProjects)",
    "!has(self.migrateProjects) || !has(self.adoptOrgId)",
    "self.size() == 0 || self.exists(u, u.role == 'admin')",
    // The Secret-name rules: the planner's SecretNameCollision refusal covers all three.
    "!has(self.apiKeys) || !has(self.webhooks) || self.apiKeys.all(k, self.webhooks.all(w, has(k.secretName) != has(w.secretName) || (has(k.secretName) ? k.secretName != w.secretName : k.name != w.name + '-webhook')))",
    "!has(self.apiKeys) || self.apiKeys.all(a, !has(a.secretName) || self.apiKeys.exists_one(b, has(b.secretName) && b.secretName == a.secretName))",
    "!has(self.webhooks) || self.webhooks.all(a, !has(a.secretName) || self.webhooks.exists_one(b, has(b.secretName) && b.secretName == a.secretName))",
];

fn webhook_url_ok(url: &str) -> bool {
    url.starts_with("https://")
        || regex::Regex::new("^http://(localhost|127[.]0[.]0[.]1)([:/?#].*)?$")
            .is_ok_and(|re| re.is_match(url))
}

/// The CEL rules, on a parsed object; `live` is the object in the cluster (for the
/// transition rules).
pub fn cel_errors(new: &CustomerOrg, live: Option<&CustomerOrg>) -> Vec<String> {
    let mut out = Vec::new();
    let spec = &new.spec;
    if let Some(g) = &spec.gennia
        && !g.users.is_empty()
        && !g
            .users
            .iter()
            .any(|u| u.role == crate::api::GenniaRole::Admin)
    {
        out.push(".spec.gennia.users: needs at least one admin".into());
    }
    if !spec.migrate_projects.is_empty() && spec.adopt_org_id.is_some() {
        out.push(
            ".spec.migrateProjects: excludes spec.adoptOrgId (migrate creates a new org)".into(),
        );
    }
    for k in &spec.api_keys {
        if k.scopes.iter().any(|s| s == "org:admin") {
            out.push(format!(
                ".spec.apiKeys[{}].scopes: org:admin cannot be given to a child key",
                k.name
            ));
        }
    }
    for k in spec.metadata.keys() {
        if k.is_empty() || k.chars().count() > 40 {
            out.push(format!(".spec.metadata.{k}: keys are 1-40 characters"));
        }
        if k == "externalId" || k.starts_with("orgops.dev/") {
            out.push(format!(
                ".spec.metadata.{k}: externalId and orgops.dev/* are reserved (use spec.externalId)"
            ));
        }
    }
    for w in &spec.webhooks {
        if !webhook_url_ok(&w.url) {
            out.push(format!(
                ".spec.webhooks[{}].url: must use https (http only for localhost and 127.0.0.1)",
                w.name
            ));
        }
    }
    if let Some(live) = live {
        if live.spec.state == DesiredState::Archived && spec.state != DesiredState::Archived {
            out.push(".spec.state: archived is terminal; an archived org cannot be made active or suspended again".into());
        }
        if live.spec.adopt_org_id.is_some() && live.spec.adopt_org_id != spec.adopt_org_id {
            out.push(".spec.adoptOrgId: immutable once set".into());
        }
        if !live.spec.migrate_projects.is_empty()
            && live.spec.migrate_projects != spec.migrate_projects
        {
            out.push(".spec.migrateProjects: immutable once set".into());
        }
    }
    out
}

/// autoRefill's pairing is checked on the raw document: the typed spec requires both.
pub fn raw_cel_errors(doc: &Value) -> Vec<String> {
    let refill = &doc["spec"]["credits"]["autoRefill"];
    if refill.is_object() && refill.get("threshold").is_some() != refill.get("amount").is_some() {
        return vec![".spec.credits.autoRefill: set threshold and amount together".into()];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(list) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
                    out.extend(
                        list.iter()
                            .filter_map(|r| r["rule"].as_str().map(String::from)),
                    );
                }
                m.values().for_each(|c| rules(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| rules(c, out)),
            _ => {}
        }
    }

    #[test]
    fn every_cel_rule_of_the_crd_is_mirrored() {
        let mut found = Vec::new();
        rules(&customer_org_schema(), &mut found);
        found.sort();
        found.dedup();
        let mut mirrored: Vec<String> = CEL_RULES_MIRRORED.iter().map(|s| s.to_string()).collect();
        mirrored.sort();
        assert_eq!(
            found, mirrored,
            "a CEL rule changed: mirror it in cel_errors"
        );
    }

    #[test]
    fn schema_errors_name_the_field() {
        let schema = customer_org_schema();
        let doc = serde_json::json!({
            "apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
            "metadata": {"name": "a"},
            "spec": {"displayName": "", "credits": {"allocated": -1, "monthlyCapp": 3},
                     "state": "gone",
                     "apiKeys": [{"name": "k", "scopes": ["a:b"]}, {"name": "k", "scopes": ["a:b"]}]}
        });
        let mut out = Vec::new();
        schema_errors(&schema, &doc, "", &mut out);
        let all = out.join("\n");
        for want in [
            ".spec.displayName: at least 1 characters",
            ".spec.credits.allocated: must be at least 0",
            ".spec.credits.monthlyCapp: unknown field",
            ".spec.state: \"gone\" is not one of",
            ".spec.apiKeys: duplicate entry",
        ] {
            assert!(all.contains(want), "{want} missing in:\n{all}");
        }
        let good = serde_json::json!({"apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
            "metadata": {"name": "a"}, "spec": {"displayName": "A"}});
        let mut out = Vec::new();
        schema_errors(&schema, &good, "", &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
