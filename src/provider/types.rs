//! Provider-neutral objects: what the controller needs to know about a partner API's
//! child organizations, wallets, keys and webhook endpoints.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A string that must never be shown: parent keys, minted key secrets, signing secrets.
/// `Debug` and `Display` print `[REDACTED]`; only `expose()` gives the value.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Lets wire models hold a secret from the moment it is parsed.
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

/// Idempotency key sent with a write; derived deterministically by the controller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(pub String);

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgStatus {
    Active,
    Suspended,
    Archived,
}

/// A child organization as the provider reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub status: OrgStatus,
    pub metadata: BTreeMap<String, String>,
    pub billing_email: Option<String>,
    /// Present when the org was read with its summary (GET one).
    pub summary: Option<OrgSummary>,
    /// The org's users, for providers that manage them (`Capabilities::users`).
    pub users: Vec<OrgUser>,
    /// Worth saying about the org without blocking readiness (e.g. Gennia's `past_due`).
    pub billing_note: Option<String>,
    /// Why the provider cannot suspend the org in its present state, when it cannot
    /// (Gennia suspends only an `active` workspace): a suspend waits instead of being sent.
    pub suspend_blocked: Option<String>,
}

/// A user of an org (Gennia: a workspace member, or a pending invitation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgUser {
    /// The provider's id; `None` for a pending invitation (it cannot be edited).
    pub id: Option<String>,
    pub email: String,
    pub name: Option<String>,
    /// `admin`, `member`, `editor` or `viewer`.
    pub role: String,
}

/// What a suspend sends where the API takes it (Gennia); Layers takes neither.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuspendReason {
    pub reason: Option<String>,
    /// Gennia's `cancellationReason` enum value.
    pub cancellation: Option<String>,
}

/// Create-only fields some providers need (Gennia: users, plan, trial, credits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateExtras {
    pub users: Vec<OrgUser>,
    pub plan_id: Option<String>,
    pub trial: bool,
    pub send_invitations: bool,
    pub initial_credits: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrgSummary {
    pub balance: i64,
    pub available: i64,
    pub credit_config: CreditConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refill {
    pub threshold: u64,
    pub amount: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreditConfig {
    pub monthly_cap: Option<u64>,
    pub refill: Option<Refill>,
}

/// Fields to create a child org with.
#[derive(Clone, Debug, PartialEq)]
pub struct NewOrg {
    pub name: String,
    pub metadata: BTreeMap<String, String>,
    pub billing_email: Option<String>,
    pub extras: CreateExtras,
}

/// A partial update: `None` leaves a field unchanged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrgPatch {
    pub name: Option<String>,
    /// Keys to set; a value of `""` removes the key (merge semantics).
    pub metadata: Option<BTreeMap<String, String>>,
    /// `Some(None)` clears the billing email.
    pub billing_email: Option<Option<String>>,
}

/// The child a migration of flat projects created.
#[derive(Clone, Debug, PartialEq)]
pub struct Migrated {
    pub org: Org,
    /// The projects moved into it.
    pub project_ids: Vec<String>,
}

/// Result of archiving (offboarding) a child.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveResult {
    pub reclaimed_credits: i64,
    pub revoked_api_keys: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    pub id: String,
    pub credits: u64,
    pub replayed: bool,
    pub balance: i64,
    pub available: i64,
}

/// One allocation into the child, read back from its ledger.
#[derive(Clone, Debug, PartialEq)]
pub struct LedgerAllocation {
    pub event_id: String,
    pub credits: i64,
    /// The transfer's metadata on the event; `None` when the event carries none at all
    /// (a provider that does not echo it: nothing says whose transfer it was).
    pub metadata: Option<BTreeMap<String, String>>,
    /// When the provider booked it (RFC 3339), when the listing says.
    pub created: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEnv {
    Live,
    Test,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Revoked,
}

/// A child API key, masked (never the secret).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub env: KeyEnv,
    pub scopes: Vec<String>,
    pub status: KeyStatus,
    /// Set on a key that was rotated: the id of its replacement.
    pub superseded_by: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub env: KeyEnv,
}

/// A key with its one-time secret (mint or rotate).
#[derive(Clone, Debug)]
pub struct MintedKey {
    pub key: ApiKey,
    pub secret: Secret,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEndpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
pub struct CreatedWebhook {
    pub endpoint: WebhookEndpoint,
    pub signing_secret: Secret,
}

/// Who the provider credential is (whoami).
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub organization_id: String,
    pub organization_name: String,
    pub parent_organization_id: Option<String>,
    pub scopes: Vec<String>,
    pub rate_limit_tier: String,
    pub api_key_id: String,
}

/// What a provider can do; the controller skips (and reports) what is missing.
impl Capabilities {
    /// What a CustomerOrg may use with this provider, named after the spec fields
    /// (shown as `OrgProvider.status.capabilities`).
    pub fn names(&self) -> Vec<String> {
        [
            (self.find_by_external_id, "externalId"),
            (self.allocation_ledger, "credits.allocated"),
            (self.credit_config, "credits.monthlyCap"),
            (self.credit_config, "credits.autoRefill"),
            (self.child_api_keys, "apiKeys"),
            (self.key_rotation, "rotate-keys"),
            (self.webhooks, "webhooks"),
            (self.suspend, "state.suspended"),
            (self.archive, "state.archived"),
            (self.migrate_projects, "migrateProjects"),
            (self.org_update, "displayName updates"),
            (self.billing_email, "billingEmail"),
            (self.users, "gennia.users"),
            (self.suspend, "suspendReason"),
        ]
        .into_iter()
        .filter(|(yes, _)| *yes)
        .map(|(_, name)| name.to_string())
        .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Flat projects can be migrated into a new child (`spec.migrateProjects`).
    pub migrate_projects: bool,
    /// Orgs carry string metadata: the owner marker (claims, recovery) and `externalId`.
    pub org_metadata: bool,
    /// The org's name and metadata can be changed after creation.
    pub org_update: bool,
    /// Orgs carry a billing email (`spec.billingEmail`).
    pub billing_email: bool,
    /// Orgs can be archived (terminal); without it, offboarding suspends.
    pub archive: bool,
    /// The org's name is unique per parent and identifies it (`find_orgs_by_name`).
    pub find_by_name: bool,
    /// Users are managed (`spec.gennia.users`).
    pub users: bool,
    pub find_by_external_id: bool,
    pub credit_config: bool,
    pub allocation_ledger: bool,
    pub child_api_keys: bool,
    pub key_rotation: bool,
    pub webhooks: bool,
    pub suspend: bool,
}
