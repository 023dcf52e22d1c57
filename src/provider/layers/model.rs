//! Wire models of the Layers API (reference §2) and their conversion to the
//! provider-neutral types. Unknown fields are ignored (the API adds fields within v1);
//! ids arrive `org_`/`key_`-prefixed or as bare UUIDs and are normalised to the prefix.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::provider::types::{
    ApiKey, ArchiveResult, CreatedWebhook, CreditConfig, Identity, KeyEnv, KeyStatus,
    LedgerAllocation, MintedKey, Org, OrgStatus, OrgSummary, Refill, Secret, Transfer,
    WebhookEndpoint,
};

/// `null` and absent both mean "empty".
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Adds `prefix` to a bare UUID; leaves anything else as sent.
pub fn normalize_id(prefix: &str, id: &str) -> String {
    if !id.starts_with(prefix) && uuid::Uuid::parse_str(id).is_ok() {
        format!("{prefix}{id}")
    } else {
        id.to_string()
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub struct Page<T> {
    #[serde(default = "Vec::new", deserialize_with = "nullable")]
    pub items: Vec<T>,
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

/// `POST /v1/organizations/migrate` → `201 { projectsMoved, childrenCreated, children }`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateWire {
    pub children: Vec<MigratedChildWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigratedChildWire {
    pub id: String,
    #[serde(default)]
    pub project_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrgWire {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub status: OrgStatus,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub billing_email: Option<String>,
    #[serde(default)]
    pub parent_organization_id: Option<String>,
    #[serde(default)]
    pub archived_at: Option<String>,
    #[serde(default)]
    pub summary: Option<SummaryWire>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryWire {
    #[serde(default)]
    pub balance: i64,
    #[serde(default)]
    pub available: i64,
    #[serde(default)]
    pub credit_config: Option<CreditConfigWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditConfigWire {
    #[serde(default)]
    pub monthly_credit_cap: Option<u64>,
    #[serde(default)]
    pub refill_threshold: Option<u64>,
    #[serde(default)]
    pub refill_amount: Option<u64>,
}

/// `GET/PATCH /v1/organizations/:orgId/credit-config`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditConfigEnvelope {
    #[serde(default)]
    pub config: CreditConfigWire,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveWire {
    #[serde(default)]
    pub reclaimed_credits: i64,
    #[serde(default)]
    pub revoked_api_keys: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferWire {
    pub id: String,
    #[serde(default)]
    pub allocated: Option<u64>,
    #[serde(default)]
    pub credits: Option<u64>,
    #[serde(default)]
    pub balance: i64,
    #[serde(default)]
    pub available: i64,
    #[serde(default)]
    pub replayed: bool,
}

/// `GET /v1/credits`: the caller's own wallet (§2.5). Transfers draw on `prepaidBalance`
/// [P-ALLOC]; `available` is the fallback when a wallet does not break the balance down.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WalletWire {
    #[serde(default)]
    pub prepaid_balance: Option<i64>,
    #[serde(default)]
    pub available: i64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditEventWire {
    #[serde(alias = "id")]
    pub event_id: String,
    #[serde(default)]
    pub credits: i64,
    #[serde(default)]
    pub event_type: String,
    /// Absent or `null`: the API does not show the transfer's metadata on its events.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyWire {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub prefix: String,
    #[serde(default = "default_env")]
    pub env: KeyEnv,
    #[serde(default, deserialize_with = "nullable")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub superseded_by: Option<String>,
}

fn default_env() -> KeyEnv {
    KeyEnv::Live
}

/// Mint and rotate: the key and its one-time secret.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MintWire {
    pub api_key: ApiKeyWire,
    pub secret: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookWire {
    pub id: String,
    #[serde(default)]
    pub url: String,
    #[serde(default, deserialize_with = "nullable")]
    pub events: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedWebhookWire {
    pub endpoint: WebhookWire,
    pub signing_secret: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotatedSecretWire {
    pub signing_secret: Secret,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoamiWire {
    pub organization_id: String,
    #[serde(default)]
    pub organization_name: String,
    #[serde(default)]
    pub parent_organization_id: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub rate_limit_tier: String,
    #[serde(default)]
    pub api_key_id: String,
}

impl From<CreditConfigWire> for CreditConfig {
    fn from(w: CreditConfigWire) -> Self {
        let refill = match (w.refill_threshold, w.refill_amount) {
            (Some(threshold), Some(amount)) => Some(Refill { threshold, amount }),
            _ => None,
        };
        CreditConfig {
            monthly_cap: w.monthly_credit_cap,
            refill,
        }
    }
}

impl From<OrgWire> for Org {
    fn from(w: OrgWire) -> Self {
        Org {
            id: normalize_id("org_", &w.id),
            name: w.name,
            status: w.status,
            metadata: w.metadata,
            billing_email: w.billing_email,
            summary: w.summary.map(|s| OrgSummary {
                balance: s.balance,
                available: s.available,
                credit_config: s.credit_config.unwrap_or_default().into(),
            }),
            users: Vec::new(),
            billing_note: None,
            suspend_blocked: None,
        }
    }
}

impl From<ArchiveWire> for ArchiveResult {
    fn from(w: ArchiveWire) -> Self {
        ArchiveResult {
            reclaimed_credits: w.reclaimed_credits,
            revoked_api_keys: w.revoked_api_keys,
        }
    }
}

impl TransferWire {
    pub fn into_transfer(self, requested: u64) -> Transfer {
        Transfer {
            id: normalize_id("txn_", &self.id),
            credits: self.allocated.or(self.credits).unwrap_or(requested),
            replayed: self.replayed,
            balance: self.balance,
            available: self.available,
        }
    }
}

impl From<CreditEventWire> for LedgerAllocation {
    fn from(w: CreditEventWire) -> Self {
        LedgerAllocation {
            event_id: w.event_id,
            credits: w.credits,
            metadata: w.metadata,
            created: w.created_at,
        }
    }
}

impl From<ApiKeyWire> for ApiKey {
    fn from(w: ApiKeyWire) -> Self {
        ApiKey {
            id: normalize_id("key_", &w.id),
            name: w.name,
            prefix: w.prefix,
            env: w.env,
            scopes: w.scopes,
            // The API documents only active|revoked; anything else cannot be relied on.
            status: if w.status == "active" {
                KeyStatus::Active
            } else {
                KeyStatus::Revoked
            },
            superseded_by: w.superseded_by.map(|s| normalize_id("key_", &s)),
        }
    }
}

impl From<MintWire> for MintedKey {
    fn from(w: MintWire) -> Self {
        MintedKey {
            key: w.api_key.into(),
            secret: w.secret,
        }
    }
}

impl From<WebhookWire> for WebhookEndpoint {
    fn from(w: WebhookWire) -> Self {
        WebhookEndpoint {
            id: w.id,
            url: w.url,
            events: w.events,
            metadata: w.metadata,
        }
    }
}

impl From<CreatedWebhookWire> for CreatedWebhook {
    fn from(w: CreatedWebhookWire) -> Self {
        CreatedWebhook {
            endpoint: w.endpoint.into(),
            signing_secret: w.signing_secret,
        }
    }
}

impl From<WhoamiWire> for Identity {
    fn from(w: WhoamiWire) -> Self {
        Identity {
            organization_id: normalize_id("org_", &w.organization_id),
            organization_name: w.organization_name,
            parent_organization_id: w.parent_organization_id.map(|p| normalize_id("org_", &p)),
            scopes: w.scopes,
            rate_limit_tier: w.rate_limit_tier,
            api_key_id: normalize_id("key_", &w.api_key_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "3f1c7a52-6a59-4f0e-9d0b-1e2f3a4b5c6d";

    #[test]
    fn org_with_summary_bare_id_and_unknown_fields() {
        let json = format!(
            r#"{{"id":"{UUID}","object":"organization","name":"Acme","status":"suspended",
            "metadata":null,"billingEmail":null,"createdAt":"2026-06-01T14:30:00.000000+00:00",
            "newField":{{"x":1}},
            "summary":{{"projectCount":0,"balance":4800,"available":4700,
              "creditConfig":{{"monthlyCreditCap":5000,"refillThreshold":1000,"refillAmount":2000,
              "autoRefillEnabled":true}}}}}}"#
        );
        let org: Org = serde_json::from_str::<OrgWire>(&json).unwrap().into();
        assert_eq!(org.id, format!("org_{UUID}"));
        assert_eq!(org.status, OrgStatus::Suspended);
        assert!(org.metadata.is_empty());
        let s = org.summary.unwrap();
        assert_eq!((s.balance, s.available), (4800, 4700));
        assert_eq!(
            s.credit_config,
            CreditConfig {
                monthly_cap: Some(5000),
                refill: Some(Refill {
                    threshold: 1000,
                    amount: 2000
                })
            }
        );
    }

    #[test]
    fn prefixed_ids_are_kept() {
        assert_eq!(normalize_id("org_", "org_abc"), "org_abc");
        assert_eq!(normalize_id("org_", "not-a-uuid"), "not-a-uuid");
        assert_eq!(normalize_id("key_", UUID), format!("key_{UUID}"));
    }

    #[test]
    fn half_set_refill_is_no_refill() {
        let w: CreditConfigEnvelope = serde_json::from_str(
            r#"{"organizationId":"org_x","config":{"monthlyCreditCap":null,
            "refillThreshold":10,"refillAmount":null,"autoRefillEnabled":false},"balance":0}"#,
        )
        .unwrap();
        assert_eq!(CreditConfig::from(w.config), CreditConfig::default());
    }

    #[test]
    fn transfer_replay_and_amount() {
        let w: TransferWire = serde_json::from_str(&format!(
            r#"{{"id":"{UUID}","allocated":250,"balance":250,"available":250,"replayed":true,
            "created":1767225600,"metadata":{{"orgops":"x"}}}}"#
        ))
        .unwrap();
        let t = w.into_transfer(999);
        assert_eq!(t.id, format!("txn_{UUID}"));
        assert_eq!(t.credits, 250);
        assert!(t.replayed);
    }

    #[test]
    fn minted_key_secret_is_redacted_in_debug() {
        let w: MintWire = serde_json::from_str(
            r#"{"apiKey":{"id":"key_1","name":"k","prefix":"lp_live_ABC","env":"test",
            "scopes":["content:read"],"status":"active","supersededBy":null},
            "secret":"lp_test_ABC_verysecretvalue"}"#,
        )
        .unwrap();
        let shown = format!("{w:?}");
        assert!(!shown.contains("verysecretvalue"));
        let k: MintedKey = w.into();
        assert_eq!(k.secret.expose(), "lp_test_ABC_verysecretvalue");
        assert_eq!(k.key.env, KeyEnv::Test);
        assert_eq!(k.key.status, KeyStatus::Active);
    }

    #[test]
    fn pages_and_ledger_events() {
        let p: Page<CreditEventWire> = serde_json::from_str(
            r#"{"items":[{"eventId":"e1","projectId":null,"credits":100,"eventType":"allocation",
            "description":null,"metadata":{"orgops.dev/uid":"u"},"createdAt":"2026-01-01T00:00:00Z"}],
            "nextCursor":"abc"}"#,
        )
        .unwrap();
        assert_eq!(p.next_cursor.as_deref(), Some("abc"));
        let a: LedgerAllocation = p.items.into_iter().next().unwrap().into();
        assert_eq!(a.credits, 100);
        assert_eq!(
            a.metadata
                .as_ref()
                .and_then(|m| m.get("orgops.dev/uid"))
                .map(String::as_str),
            Some("u")
        );
        // An event without metadata (the reference shows none) says so.
        let bare: CreditEventWire =
            serde_json::from_str(r#"{"eventId":"e2","credits":5,"eventType":"allocation"}"#)
                .unwrap();
        assert_eq!(LedgerAllocation::from(bare).metadata, None);
        let last: Page<WebhookWire> =
            serde_json::from_str(r#"{"items":[],"nextCursor":null}"#).unwrap();
        assert!(last.next_cursor.is_none() && last.items.is_empty());
    }

    #[test]
    fn revoked_and_unknown_key_status() {
        for (status, want) in [
            ("revoked", KeyStatus::Revoked),
            ("active", KeyStatus::Active),
            ("weird", KeyStatus::Revoked),
        ] {
            let w: ApiKeyWire = serde_json::from_str(&format!(
                r#"{{"id":"{UUID}","status":"{status}","supersededBy":"{UUID}"}}"#
            ))
            .unwrap();
            let k = ApiKey::from(w);
            assert_eq!(k.status, want);
            assert_eq!(k.superseded_by, Some(format!("key_{UUID}")));
            assert_eq!(k.env, KeyEnv::Live);
        }
    }
}
