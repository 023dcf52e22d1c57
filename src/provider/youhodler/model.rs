//! YouHodler Business API wire types (`other-providers.md` §1, simulated by `sims/youhodler`).
//! Responses are read leniently (unknown fields ignored, absent or `null` ones defaulted);
//! request bodies carry only the fields the API names, because the API refuses unknown ones
//! (400 `invalid_request`, `unknown_field`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::provider::types::Secret;

/// A client (a downstream customer of the enterprise).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct YhClient {
    pub id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub display_name: String,
    pub external_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// `enterprises/<id>`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub scope_ref: String,
    /// `active`, `suspended`, ... kept as the API spells it; see [`YhClient::state`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: String,
    /// Weak ETag, e.g. `W/"a1b2c3d4"`; filled from the `ETag` header when the body has none.
    #[serde(default, deserialize_with = "null_as_default")]
    pub etag: String,
    /// The account created with the client: a ref string (`client-accounts/<id>`) in the
    /// simulator, possibly an object in the API, so kept as it came.
    pub default_client_account: Option<serde_json::Value>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// What a client's `status` means to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum YhStatus {
    /// `active`: the only value the documentation shows.
    Active,
    /// `suspended` (the simulator's assumption 1; the docs never spell it), or a synonym the
    /// docs leave open: `blocked`, `frozen`, `disabled`, `paused`.
    Suspended,
    /// `closed`, `terminated`, `archived` or `deleted`: the closure the settlement workflow
    /// describes. No API call brings such a client back.
    Closed,
    /// Anything else (e.g. a pending onboarding state): reported, never acted on.
    Unknown(String),
}

impl YhStatus {
    /// Case-insensitive; surrounding blanks ignored.
    pub fn from_status(status: &str) -> YhStatus {
        match status.trim().to_ascii_lowercase().as_str() {
            "active" => YhStatus::Active,
            "suspended" | "blocked" | "frozen" | "disabled" | "paused" => YhStatus::Suspended,
            "closed" | "terminated" | "archived" | "deleted" => YhStatus::Closed,
            _ => YhStatus::Unknown(status.to_string()),
        }
    }
}

impl YhClient {
    pub fn state(&self) -> YhStatus {
        YhStatus::from_status(&self.status)
    }

    pub fn is_suspended(&self) -> bool {
        self.state() == YhStatus::Suspended
    }

    pub fn is_active(&self) -> bool {
        self.state() == YhStatus::Active
    }

    /// The enterprise id of `scope_ref` (`enterprises/<id>`).
    pub fn enterprise_id(&self) -> Option<&str> {
        self.scope_ref.strip_prefix("enterprises/")
    }
}

/// Fields to create a client with; `scope_ref` is filled in by the client from the enterprise.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewClient {
    pub display_name: String,
    pub external_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A change to a client; `None` leaves the field alone. `metadata` is the whole map wanted:
/// sent as it is where PATCH replaces the map (simulator assumption 11), with the keys to
/// remove as `null` where it merges ([`ClientPatch::to_send`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClientPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl ClientPatch {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.display_name.is_none() && self.metadata.is_none()
    }

    /// `client` already shows every field of the patch.
    pub fn is_satisfied_by(&self, client: &YhClient) -> bool {
        self.display_name
            .as_ref()
            .is_none_or(|n| *n == client.display_name)
            && self.metadata.as_ref().is_none_or(|m| *m == client.metadata)
    }

    /// After a PATCH, `client` shows the name and every metadata key sent, plus keys that
    /// were left out to be removed: the API merged the map into the old one.
    pub fn merged_into(&self, client: &YhClient) -> bool {
        let Some(m) = &self.metadata else {
            return false;
        };
        self.display_name
            .as_ref()
            .is_none_or(|n| *n == client.display_name)
            && m.iter().all(|(k, v)| client.metadata.get(k) == Some(v))
            && client.metadata.len() > m.len()
    }

    /// The body to send given the client as read: with `merges`, every key of `current`
    /// the map leaves out is sent as `null` (JSON merge patch, RFC 7396).
    pub fn to_send(&self, current: &YhClient, merges: bool) -> serde_json::Value {
        let mut body = serde_json::Map::new();
        if let Some(n) = &self.display_name {
            body.insert("display_name".into(), serde_json::Value::String(n.clone()));
        }
        if let Some(m) = &self.metadata {
            let mut map: serde_json::Map<String, serde_json::Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            if merges {
                for k in current.metadata.keys().filter(|k| !m.contains_key(*k)) {
                    map.insert(k.clone(), serde_json::Value::Null);
                }
            }
            body.insert("metadata".into(), serde_json::Value::Object(map));
        }
        serde_json::Value::Object(body)
    }
}

/// `POST /clients`.
#[derive(Serialize)]
pub(crate) struct CreateBody<'a> {
    pub display_name: &'a str,
    pub scope_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: &'a BTreeMap<String, String>,
}

/// `POST /clients/{id}/suspend` and `/reactivate`: `{"reason": string | null}`, the key
/// always present (the suspend page lists a 400 `missing_required_field`).
#[derive(Serialize)]
pub(crate) struct TransitionBody<'a> {
    pub reason: Option<&'a str>,
}

/// `POST /oauth/token` (client credentials, JSON). Deliberately not `Debug`: it holds the
/// client secret.
#[derive(Serialize)]
pub(crate) struct TokenRequest<'a> {
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub grant_type: &'static str,
}

/// The token answer; the token itself stays a [`Secret`] from the moment it is parsed.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: Secret,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
}

/// One enterprise of `GET /enterprises`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Enterprise {
    pub id: String,
    pub display_name: Option<String>,
    pub admission_state: Option<String>,
    pub restriction_state: Option<String>,
}

/// A page of a list: `{items, next_page_token}` (`null` on the last page).
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// The error envelope: `{code, message, details?}`; `details` is context only.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    pub code: Option<String>,
    pub message: Option<String>,
    pub details: Option<serde_json::Value>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_and_their_synonyms() {
        assert_eq!(YhStatus::from_status("active"), YhStatus::Active);
        for s in [
            "suspended",
            "SUSPENDED",
            " blocked ",
            "frozen",
            "disabled",
            "paused",
        ] {
            assert_eq!(YhStatus::from_status(s), YhStatus::Suspended, "{s}");
        }
        for s in ["closed", "terminated", "archived", "deleted"] {
            assert_eq!(YhStatus::from_status(s), YhStatus::Closed, "{s}");
        }
        assert_eq!(
            YhStatus::from_status("pending"),
            YhStatus::Unknown("pending".into())
        );
    }

    #[test]
    fn clients_are_read_leniently() {
        let c: YhClient = serde_json::from_value(json!({
            "id": "7b1c", "resource": "client", "display_name": "Acme", "external_id": null,
            "metadata": null, "scope_ref": "enterprises/e1", "status": "Suspended",
            "etag": "W/\"ab\"", "default_client_account": "client-accounts/x", "new_field": 1
        }))
        .unwrap();
        assert!(c.metadata.is_empty() && c.is_suspended() && !c.is_active());
        assert_eq!(c.enterprise_id(), Some("e1"));
        assert_eq!(c.default_client_account, Some(json!("client-accounts/x")));
    }

    #[test]
    fn patches_send_only_what_they_change() {
        let mut p = ClientPatch::default();
        assert!(p.is_empty());
        assert_eq!(serde_json::to_value(&p).unwrap(), json!({}));
        p.display_name = Some("New".into());
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"display_name": "New"})
        );
        let mut c: YhClient =
            serde_json::from_value(json!({"id": "1", "display_name": "Old", "status": "active"}))
                .unwrap();
        assert!(!p.is_satisfied_by(&c));
        c.display_name = "New".into();
        assert!(p.is_satisfied_by(&c));
        p.metadata = Some(BTreeMap::from([("a".to_string(), "1".to_string())]));
        assert!(!p.is_satisfied_by(&c), "metadata replaces the whole map");
    }

    #[test]
    fn request_bodies() {
        let meta = BTreeMap::new();
        let body = CreateBody {
            display_name: "Acme",
            scope_ref: "enterprises/e1".into(),
            external_id: None,
            metadata: &meta,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"display_name": "Acme", "scope_ref": "enterprises/e1"})
        );
        assert_eq!(
            serde_json::to_value(TransitionBody { reason: None }).unwrap(),
            json!({"reason": null})
        );
    }
}
