//! The simulator's records and their JSON views.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ids::{key_id, org_id, prj_id};
use crate::time::{fmt_org, fmt_z, month_bounds, wall_now_us};

pub type Metadata = BTreeMap<String, String>;

pub const GRACE_US: i64 = 24 * 3600 * 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrgStatus {
    Active,
    Suspended,
    Archived,
}

impl OrgStatus {
    pub fn name(self) -> &'static str {
        match self {
            OrgStatus::Active => "active",
            OrgStatus::Suspended => "suspended",
            OrgStatus::Archived => "archived",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditConfig {
    pub cap: Option<i64>,
    pub threshold: Option<i64>,
    pub amount: Option<i64>,
}

impl CreditConfig {
    pub fn json(&self) -> Value {
        json!({
            "monthlyCreditCap": self.cap,
            "refillThreshold": self.threshold,
            "refillAmount": self.amount,
            "autoRefillEnabled": self.threshold.is_some() && self.amount.is_some(),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreditEvent {
    pub id: Uuid,
    pub credits: i64,
    pub event_type: String,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub balance_after: i64,
    pub created_us: i64,
    pub seq: u64,
}

impl CreditEvent {
    pub fn json(&self) -> Value {
        let mut v = self.documented_json();
        v["description"] = json!(self.description);
        v["metadata"] = json!(self.metadata);
        v
    }

    /// Only the fields §2.6 shows (`--credit-events documented`): no description, no
    /// metadata, so nothing says which transfer an event belongs to.
    pub fn documented_json(&self) -> Value {
        json!({
            "eventId": self.id,
            "projectId": null,
            "credits": self.credits,
            "eventType": self.event_type,
            "balanceAfterPrepaid": self.balance_after,
            "createdAt": fmt_z(self.created_us),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Org {
    pub id: Uuid,
    pub parent: Option<Uuid>,
    pub name: String,
    pub status: OrgStatus,
    #[serde(default)]
    pub metadata: Metadata,
    pub billing_email: Option<String>,
    pub created_us: i64,
    pub updated_us: i64,
    pub archived_us: Option<i64>,
    #[serde(default)]
    pub config: CreditConfig,
    pub balance: i64,
    pub seq: u64,
    #[serde(default)]
    pub children: Vec<Uuid>,
    #[serde(default)]
    pub keys: Vec<Uuid>,
    #[serde(default)]
    pub endpoints: Vec<Uuid>,
    #[serde(default)]
    pub ledger: Vec<CreditEvent>,
    /// Start of the monthly period `used_this_period` belongs to (UTC calendar months).
    #[serde(default)]
    pub period_start_us: i64,
    /// Usage debited in that period (what the monthly cap limits).
    #[serde(default)]
    pub used_this_period: i64,
    /// Projects owned by this org, in creation (`seq`) order.
    #[serde(default)]
    pub projects: Vec<Uuid>,
}

impl Org {
    pub fn json(&self) -> Value {
        json!({
            "id": org_id(self.id),
            "object": "organization",
            "parentOrganizationId": self.parent.map(org_id),
            "name": self.name,
            "status": self.status.name(),
            "metadata": self.metadata,
            "billingEmail": self.billing_email,
            "archivedAt": self.archived_us.map(fmt_org),
            "createdAt": fmt_org(self.created_us),
            "updatedAt": fmt_org(self.updated_us),
        })
    }

    /// Usage in the monthly period containing `now` (0 once a new month started).
    pub fn used_in_period(&self, now: i64) -> i64 {
        if self.period_start_us == month_bounds(now).0 {
            self.used_this_period
        } else {
            0
        }
    }

    pub fn json_with_summary(&self, project_count: usize) -> Value {
        let mut v = self.json();
        v["summary"] = json!({
            "projectCount": project_count,
            "balance": self.balance,
            "available": self.balance.max(0),
            "creditConfig": self.config.json(),
        });
        v
    }

    pub fn wallet_json(&self, now: i64) -> Value {
        let (start, end) = month_bounds(now);
        let used = self.used_in_period(now);
        json!({
            "organizationId": org_id(self.id),
            "balance": self.balance,
            "available": self.balance.max(0),
            "includedRemaining": 0,
            "prepaidBalance": self.balance,
            "reservedCredits": 0,
            "includedThisPeriod": 0,
            "usedThisPeriod": used,
            "currentPeriod": { "start": fmt_z(start), "end": fmt_z(end), "usedCredits": used },
            "billingStatus": "active",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiKeyRec {
    pub id: Uuid,
    pub org: Uuid,
    pub name: String,
    pub prefix: String,
    pub env: String,
    pub scopes: Vec<String>,
    pub hash: String,
    pub created_us: i64,
    pub last_used_us: Option<i64>,
    pub rotated_us: Option<i64>,
    pub revoked_us: Option<i64>,
    pub grace_until_us: Option<i64>,
    pub superseded_by: Option<Uuid>,
    pub seq: u64,
}

impl ApiKeyRec {
    /// When the key stopped (or stops) authenticating: explicit revocation, or the end of a
    /// rotation grace period.
    pub fn revoked_at(&self, now: i64) -> Option<i64> {
        match (self.revoked_us, self.grace_until_us) {
            (Some(r), _) => Some(r),
            (None, Some(g)) if g <= now => Some(g),
            _ => None,
        }
    }

    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at(now).is_none()
    }

    pub fn tier_name(&self, tier: crate::Tier) -> &'static str {
        if self.env == "test" {
            "sandbox"
        } else {
            tier.name()
        }
    }

    pub fn json(&self, now: i64, tier: crate::Tier) -> Value {
        let revoked = self.revoked_at(now);
        json!({
            "id": key_id(self.id),
            "object": "api_key",
            "organizationId": org_id(self.org),
            "name": self.name,
            "prefix": self.prefix,
            "env": self.env,
            "scopes": self.scopes,
            "rateLimitTier": self.tier_name(tier),
            "status": if revoked.is_some() { "revoked" } else { "active" },
            "createdAt": fmt_z(self.created_us),
            "lastUsedAt": self.last_used_us.map(fmt_z),
            "rotatedAt": self.rotated_us.map(fmt_z),
            "revokedAt": revoked.map(fmt_z),
            "graceUntil": self.grace_until_us.map(fmt_z),
            "supersededBy": self.superseded_by.map(key_id),
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: Uuid,
    pub org: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub status: String,
    pub events: Vec<String>,
    pub scope: String,
    #[serde(default)]
    pub metadata: Metadata,
    pub secret_hash: String,
    pub previous_secret_expires_us: Option<i64>,
    /// Only this project's events (project-scoped endpoint).
    #[serde(default)]
    pub project: Option<Uuid>,
    pub created_us: i64,
    pub updated_us: i64,
    pub seq: u64,
}

impl Endpoint {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "webhook_endpoint",
            "organizationId": org_id(self.org),
            "projectId": self.project.map(prj_id),
            "url": self.url,
            "description": self.description,
            "status": self.status,
            "events": self.events,
            "scope": self.scope,
            "metadata": self.metadata,
            "apiVersion": "v1",
            "createdAt": fmt_z(self.created_us),
            "updatedAt": fmt_z(self.updated_us),
            "lastSuccessAt": null,
            "lastFailureAt": null,
            "consecutiveFailureCount": 0,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Project {
    pub id: Uuid,
    pub org: Uuid,
    pub name: String,
    pub timezone: String,
    pub customer_external_id: Option<String>,
    pub owner_email: Option<String>,
    pub primary_language: String,
    pub app_name: Option<String>,
    pub app_description: Option<String>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
    pub created_us: i64,
    pub updated_us: i64,
    pub seq: u64,
    /// `/_sim/projects/:id/in-flight`: an execution is running (migrate refuses to move it).
    #[serde(default)]
    pub in_flight: bool,
}

impl Project {
    pub fn json(&self) -> Value {
        json!({
            "id": prj_id(self.id),
            "object": "project",
            "organizationId": org_id(self.org),
            "name": self.name,
            "status": "active",
            "customerExternalId": self.customer_external_id,
            "timezone": self.timezone,
            "primaryLanguage": self.primary_language,
            "ownerEmail": self.owner_email,
            "appName": self.app_name,
            "appDescription": self.app_description,
            "metadata": self.metadata,
            "brandContext": {},
            "ingestState": {},
            "createdAt": fmt_z(self.created_us),
            "updatedAt": fmt_z(self.updated_us),
        })
    }
}

/// A stored idempotent outcome, replayed byte for byte.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdemEntry {
    pub fingerprint: String,
    pub status: u16,
    pub body: String,
    /// Body served on replay when it differs from the original (allocate sets `replayed`).
    pub replay_body: Option<String>,
    pub stored_us: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub parent_id: Uuid,
    pub parent_key: String,
    pub parent_key_id: Uuid,
    pub orgs: HashMap<Uuid, Org>,
    pub keys: HashMap<Uuid, ApiKeyRec>,
    pub endpoints: HashMap<Uuid, Endpoint>,
    #[serde(default)]
    pub projects: HashMap<Uuid, Project>,
    #[serde(default)]
    pub idem: HashMap<String, IdemEntry>,
    pub seq: u64,
    /// What `POST /_sim/clock` added to the wall clock, in microseconds (never negative).
    #[serde(default)]
    pub clock_offset_us: i64,
    /// `/_sim/switches`: the partner org's kill switch (every `/v1` call → 503 KILL_SWITCH).
    #[serde(default)]
    pub kill_switch: bool,
    /// `/_sim/switches`: the parent key is revoked (its calls → 401).
    #[serde(default)]
    pub parent_key_revoked: bool,
    #[serde(skip)]
    pub key_by_hash: HashMap<String, Uuid>,
    /// Idempotency store keys whose original request is still executing.
    #[serde(skip)]
    pub in_flight: HashSet<String>,
}

impl State {
    /// The simulator's clock: the wall clock plus the `/_sim/clock` offset.
    pub fn now(&self) -> i64 {
        wall_now_us() + self.clock_offset_us
    }
}
