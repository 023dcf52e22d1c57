//! Webhook endpoints of the *parent* organization (rows 24-29 with the parent key and no
//! `X-Layers-Organization` header): what a `ParentWebhook` manages. Kept out of the
//! provider-neutral [`Provider`](crate::provider::Provider) trait: only Layers has them.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::LayersProvider;
use super::client::Request;
use crate::provider::ProviderResult;
use crate::provider::error::ProviderError;
use crate::provider::types::{IdempotencyKey, Secret};

const ENDPOINTS: &str = "/v1/webhook-endpoints";
const ENDPOINT: &str = "/v1/webhook-endpoints/:endpointId";
const ROTATE: &str = "/v1/webhook-endpoints/:endpointId/rotate-secret";
const PAGE_LIMIT: u32 = 100;

/// A parent endpoint as read (never its signing secret).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentEndpoint {
    pub id: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `active`, `paused` or `auto_paused`.
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "nullable")]
    pub events: Vec<String>,
    /// `own` or `all_children`; `None` when the API does not echo it.
    #[serde(default)]
    pub scope: Option<String>,
    /// String values only (anything else is not ours and is ignored).
    #[serde(default, deserialize_with = "string_map")]
    pub metadata: BTreeMap<String, String>,
    /// Changes with every write, rotation included.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Endpoints scoped to a project are never a ParentWebhook's.
    #[serde(default)]
    pub project_id: Option<String>,
}

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn string_map<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let map = Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect())
}

/// A new parent endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewParentEndpoint {
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// API value: `own` or `all_children`.
    pub scope: String,
    pub metadata: BTreeMap<String, String>,
}

impl NewParentEndpoint {
    /// The request body; keys in sorted order, so the bytes (the idempotency fingerprint)
    /// are the same on every retry.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("url".into(), json!(self.url));
        body.insert("events".into(), json!(self.events));
        if let Some(d) = &self.description {
            body.insert("description".into(), json!(d));
        }
        body.insert("scope".into(), json!(self.scope));
        body.insert("metadata".into(), json!(self.metadata));
        Value::Object(body)
    }
}

/// Fields to change on a parent endpoint; `None` leaves a field alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentEndpointPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `Some(None)` clears the description.
    pub description: Option<Option<String>>,
    /// `active` or `paused`.
    pub status: Option<String>,
    pub scope: Option<String>,
    /// Merged per key by the API.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl ParentEndpointPatch {
    pub fn is_empty(&self) -> bool {
        *self == ParentEndpointPatch::default()
    }

    /// The names of the fields this patch changes, for Events.
    pub fn fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (set, name) in [
            (self.url.is_some(), "url"),
            (self.events.is_some(), "events"),
            (self.description.is_some(), "description"),
            (self.status.is_some(), "status"),
            (self.scope.is_some(), "scope"),
            (self.metadata.is_some(), "metadata"),
        ] {
            if set {
                out.push(name);
            }
        }
        out
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        if let Some(u) = &self.url {
            body.insert("url".into(), json!(u));
        }
        if let Some(e) = &self.events {
            body.insert("events".into(), json!(e));
        }
        if let Some(d) = &self.description {
            body.insert("description".into(), json!(d));
        }
        if let Some(s) = &self.status {
            body.insert("status".into(), json!(s));
        }
        if let Some(s) = &self.scope {
            body.insert("scope".into(), json!(s));
        }
        if let Some(m) = &self.metadata {
            body.insert("metadata".into(), json!(m));
        }
        Value::Object(body)
    }
}

/// A freshly shown signing secret (create or rotate).
#[derive(Debug)]
pub struct SigningSecret {
    pub secret: Secret,
    /// After a rotation, until when the previous secret keeps working.
    pub previous_expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatedWire {
    endpoint: ParentEndpoint,
    signing_secret: Secret,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RotatedWire {
    signing_secret: Secret,
    #[serde(default)]
    previous_secret_expires_at: Option<String>,
}

/// An endpoint id used as a path segment: UUIDs (hex and '-') only.
fn endpoint_seg(id: &str) -> ProviderResult<&str> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ProviderError::Invalid(format!(
            "{id:?} is not a valid endpoint id"
        )))
    }
}

impl LayersProvider {
    /// Every org-wide endpoint of the parent (project-scoped ones are left out).
    pub async fn list_parent_endpoints(&self) -> ProviderResult<Vec<ParentEndpoint>> {
        let req = Request::new(Method::GET, ENDPOINTS, ENDPOINTS.into());
        let items: Vec<ParentEndpoint> = self.http.list_all(req, PAGE_LIMIT).await?;
        Ok(items
            .into_iter()
            .filter(|e| e.project_id.is_none())
            .collect())
    }

    /// `None` when the parent has no such endpoint (404).
    pub async fn get_parent_endpoint(&self, id: &str) -> ProviderResult<Option<ParentEndpoint>> {
        let req = Request::new(
            Method::GET,
            ENDPOINT,
            format!("{ENDPOINTS}/{}", endpoint_seg(id)?),
        );
        match self.http.json::<ParentEndpoint>(&req).await {
            Ok(e) => Ok(Some(e)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the endpoint; a retry with the same `key` replays the original response
    /// (the same endpoint and signing secret) instead of creating a second one.
    pub async fn create_parent_endpoint(
        &self,
        new: &NewParentEndpoint,
        key: &IdempotencyKey,
    ) -> ProviderResult<(ParentEndpoint, SigningSecret)> {
        let req = Request::new(Method::POST, ENDPOINTS, ENDPOINTS.into())
            .json(&new.body())
            .key(key);
        let created: CreatedWire = self.http.json(&req).await?;
        Ok((
            created.endpoint,
            SigningSecret {
                secret: created.signing_secret,
                previous_expires_at: None,
            },
        ))
    }

    pub async fn update_parent_endpoint(
        &self,
        id: &str,
        patch: &ParentEndpointPatch,
    ) -> ProviderResult<ParentEndpoint> {
        let req = Request::new(
            Method::PATCH,
            ENDPOINT,
            format!("{ENDPOINTS}/{}", endpoint_seg(id)?),
        )
        .json(&patch.body())
        .idempotent_by_state();
        self.http.json(&req).await
    }

    /// A 404 counts as done: the endpoint is gone, which is what was asked. Takes the
    /// proof that a fresh listing showed the endpoint carrying the caller's marker.
    pub async fn delete_parent_endpoint(
        &self,
        endpoint: &crate::provider::owned::OwnedEndpoint,
    ) -> ProviderResult<()> {
        let id = endpoint.id();
        let req = Request::new(
            Method::DELETE,
            ENDPOINT,
            format!("{ENDPOINTS}/{}", endpoint_seg(id)?),
        );
        match self.http.send(&req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A new signing secret; the previous one stays valid until `previous_expires_at`.
    pub async fn rotate_parent_endpoint_secret(
        &self,
        id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<SigningSecret> {
        let seg = endpoint_seg(id)?;
        let req = Request::new(
            Method::POST,
            ROTATE,
            format!("{ENDPOINTS}/{seg}/rotate-secret"),
        )
        .key(key);
        let rotated: RotatedWire = self.http.json(&req).await?;
        Ok(SigningSecret {
            secret: rotated.signing_secret,
            previous_expires_at: rotated.previous_secret_expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_reads_tolerate_nulls_and_foreign_metadata() {
        let e: ParentEndpoint = serde_json::from_value(json!({
            "id": "0b4c2c52-6a43-4a0e-9a5e-3f3a1c2d4e5f", "url": "https://x", "status": "active",
            "events": null, "metadata": {"orgops.dev/parent-webhook": "ns/a", "n": 1},
            "description": null, "scope": "all_children", "updatedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert!(e.events.is_empty());
        assert_eq!(e.metadata.len(), 1);
        assert_eq!(e.scope.as_deref(), Some("all_children"));
    }

    #[test]
    fn bodies_carry_only_what_is_set() {
        let patch = ParentEndpointPatch {
            description: Some(None),
            status: Some("active".into()),
            ..Default::default()
        };
        assert_eq!(
            patch.body(),
            json!({"description": null, "status": "active"})
        );
        assert_eq!(patch.fields(), ["description", "status"]);
        assert!(ParentEndpointPatch::default().is_empty());
        let new = NewParentEndpoint {
            url: "https://x".into(),
            events: vec!["post.published".into()],
            description: None,
            scope: "all_children".into(),
            metadata: BTreeMap::from([("k".into(), "v".into())]),
        };
        assert_eq!(
            serde_json::to_string(&new.body()).unwrap(),
            r#"{"events":["post.published"],"metadata":{"k":"v"},"scope":"all_children","url":"https://x"}"#
        );
    }

    #[test]
    fn endpoint_ids_are_checked_before_sending() {
        assert!(endpoint_seg("0b4c2c52-6a43-4a0e-9a5e-3f3a1c2d4e5f").is_ok());
        assert!(endpoint_seg("../x").is_err());
        assert!(endpoint_seg("").is_err());
    }
}
