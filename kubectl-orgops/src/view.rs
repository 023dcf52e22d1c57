//! The view model: what `status` prints, and exactly what `-o json` serialises.
//!
//! The JSON is versioned by `apiVersion`; fields are only ever added within a version.
//! README.md documents every field.

use serde::Serialize;

pub const API_VERSION: &str = "orgops.dev/kubectl-view/v1";

/// `status NAME -o json`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    pub api_version: &'static str,
    /// Always `CustomerOrgView`.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    pub ready: bool,
    /// Why it is not Ready and what to do (or that it is Ready).
    pub diagnosis: Diagnosis,
    pub paused: bool,
    pub deleting: bool,
    pub provider: ProviderView,
    pub desired_state: String,
    pub observed_state: Option<String>,
    pub org_id: Option<String>,
    pub credits: CreditsView,
    pub api_keys: Vec<KeyView>,
    pub webhooks: Vec<WebhookView>,
    pub conditions: Vec<ConditionView>,
    /// Newest last.
    pub events: Vec<EventView>,
    /// Present only with `--live`.
    pub live: Option<LiveView>,
}

/// The deepest failure found, with its source and the next step.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnosis {
    /// CamelCase cause: a condition reason (`ApiRejected`, `Unauthorized`, ...), or one of
    /// this tool's own (`Paused`, `SecretMissing`, `SecretNotOwned`, `NotObserved`,
    /// `LiveReadFailed`), or `Ready`.
    pub cause: String,
    /// Where it was found: `OrgProvider/<name>`, `CustomerOrg`, `Secret/<name>`, `PartnerAPI`.
    pub source: String,
    /// The full message (never cut).
    pub message: String,
    pub request_id: Option<String>,
    /// RFC 3339 time of the next attempt, when the message names one.
    pub retry_at: Option<String>,
    pub next_step: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    pub name: String,
    pub found: bool,
    /// `None` when the operator has not checked it yet.
    pub ready: Option<bool>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub organization_id: Option<String>,
    pub rate_limit_tier: Option<String>,
    pub base_url: Option<String>,
    /// `--verify` on a provider without per-customer keys: whoami with its credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditsView {
    pub spec: Option<CreditsSpecView>,
    pub status: Option<CreditsStatusView>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditsSpecView {
    pub allocated: i64,
    pub monthly_cap: Option<i64>,
    pub refill_threshold: Option<i64>,
    pub refill_amount: Option<i64>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreditsStatusView {
    pub allocated: i64,
    pub balance: i64,
    pub available: i64,
}

/// Health of the Secret that holds a key or signing secret. Values are never read
/// except with `--verify`, and never printed.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretHealth {
    pub present: bool,
    /// Controlled by this CustomerOrg (owner reference with its uid).
    pub owned: bool,
    /// The Secret's `orgops.dev/key-id` / `orgops.dev/webhook-id` equals the id in status.
    pub id_matches: Option<bool>,
    /// `--verify` only (keys): whoami with the key in the Secret succeeded.
    pub authenticating: Option<bool>,
    /// One line for humans: what is wrong, or how it was verified.
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub name: String,
    pub id: Option<String>,
    pub prefix: Option<String>,
    pub secret_name: String,
    pub secret: SecretHealth,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    pub name: String,
    pub id: Option<String>,
    pub url: String,
    pub secret_name: String,
    pub secret: SecretHealth,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// RFC 3339, when known.
    pub time: Option<String>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub note: String,
    pub count: i32,
}

/// Read from the partner API with the OrgProvider's credentials (GETs only).
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveView {
    /// Set when a read failed; the other fields hold what was read before it.
    pub error: Option<String>,
    pub state: Option<String>,
    pub balance: Option<i64>,
    pub available: Option<i64>,
    pub monthly_cap: Option<u64>,
    pub refill_threshold: Option<u64>,
    pub refill_amount: Option<u64>,
    /// Allocation events in the child's ledger, newest first.
    pub ledger: Vec<LedgerRow>,
    /// Sum of the rows marked `orgops.dev/allocation=true` (what orgops moved).
    pub marked_sum: i64,
    pub keys: Vec<LiveKey>,
    /// The provider has no allocation ledger (Gennia, YouHodler): `ledger` is empty by nature.
    #[serde(skip)]
    pub no_ledger: bool,
    /// `error` is the partner API refusing the credentials (not a network or server error).
    #[serde(skip)]
    pub refused: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerRow {
    pub event_id: String,
    /// The parent-side transfer id (`txn_…`), when the provider records it.
    pub transfer_id: Option<String>,
    pub credits: i64,
    /// Moved by orgops (counted in `markedSum`); unmarked rows are refills or manual.
    pub marked: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub status: String,
    pub superseded_by: Option<String>,
}

/// `status -o json` without NAME.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SummaryList {
    pub api_version: &'static str,
    /// Always `CustomerOrgSummaryList`.
    pub kind: &'static str,
    pub items: Vec<Summary>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub namespace: String,
    pub name: String,
    pub org_id: Option<String>,
    pub desired_state: String,
    pub observed_state: Option<String>,
    pub ready: bool,
    pub balance: Option<i64>,
    pub diagnosis: Diagnosis,
}
