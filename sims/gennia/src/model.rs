//! Gennia's records (hub plans, client workspaces, users, invitations) and their JSON views,
//! shaped exactly like the OpenAPI excerpt's schemas (absent values are omitted, never null).
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sim_kit::clock::fmt_secs;
use uuid::Uuid;

/// Invitations expire this long after they are sent or re-sent (assumed: 7 days).
pub const INVITATION_TTL_US: i64 = 7 * 86_400 * 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    PastDue,
    Canceled,
    Trialing,
    PendingOnboarding,
    Suspended,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Active,
        Status::PastDue,
        Status::Canceled,
        Status::Trialing,
        Status::PendingOnboarding,
        Status::Suspended,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Canceled => "canceled",
            Status::Trialing => "trialing",
            Status::PendingOnboarding => "pending_onboarding",
            Status::Suspended => "suspended",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.name() == s)
    }
}

pub const ROLES: [&str; 4] = ["admin", "member", "editor", "viewer"];
pub const CANCELLATION_REASONS: [&str; 7] = [
    "customer_request",
    "payment_failed",
    "switching_provider",
    "not_needed",
    "price",
    "feature_missing",
    "other",
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: Uuid,
    pub name: String,
    pub price_cents: i32,
    pub currency: String,
    pub billing_interval_months: i32,
    /// `one_time` or `recurring`.
    pub billing_type: String,
    pub credits_included: i32,
    pub seats_included: i32,
    pub unlimited_credits: bool,
    /// The hub's trial plan (used by `inviteToTrial`).
    pub trial: bool,
    pub created_us: i64,
}

impl Plan {
    /// `PlanRef`.
    pub fn plan_ref(&self) -> Value {
        json!({
            "billingIntervalMonths": self.billing_interval_months,
            "billingType": self.billing_type,
            "creditsIncluded": self.credits_included,
            "currency": self.currency,
            "name": self.name,
            "priceCents": self.price_cents,
            "publicId": self.id,
        })
    }

    /// The `/_sim/plans` view.
    pub fn json(&self) -> Value {
        let mut v = self.plan_ref();
        v["seatsIncluded"] = json!(self.seats_included);
        v["unlimitedCredits"] = json!(self.unlimited_credits);
        v["trial"] = json!(self.trial);
        v["createdAt"] = json!(fmt_secs(self.created_us));
        v
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub completed_onboarding: bool,
    pub last_seen_us: Option<i64>,
    /// Soft-deleted users stay in the state file but not in any response.
    pub deleted_us: Option<i64>,
}

impl User {
    /// `UserRef`.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "completedOnboarding".into(),
            json!(self.completed_onboarding),
        );
        m.insert("email".into(), json!(self.email));
        if let Some(t) = self.last_seen_us {
            m.insert("lastSeenAt".into(), json!(fmt_secs(t)));
        }
        m.insert("name".into(), json!(self.name));
        m.insert("publicId".into(), json!(self.id));
        m.insert("role".into(), json!(self.role));
        Value::Object(m)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitation {
    pub id: Uuid,
    pub user: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_us: i64,
    pub expires_us: i64,
    /// How many times it was sent (1 + resends).
    pub sent: u32,
}

impl Invitation {
    /// `PublicPendingInvitationDTO`.
    pub fn json(&self, now_us: i64) -> Value {
        json!({
            "createdAt": fmt_secs(self.created_us),
            "email": self.email,
            "expiresAt": fmt_secs(self.expires_us),
            "isExpired": self.expires_us <= now_us,
            "name": self.name,
            "publicId": self.id,
            "role": self.role,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: Uuid,
    pub workspace_name: String,
    pub status: Status,
    pub plan: Option<Uuid>,
    pub created_us: i64,
    pub period_start_us: i64,
    pub period_end_us: Option<i64>,
    pub next_renewal_us: Option<i64>,
    pub credits_limit: i32,
    pub credits_balance: i64,
    pub extra_credits_balance: i64,
    pub credits_used: i64,
    pub unlimited_credits: bool,
    pub seats_limit: i32,
    pub users: Vec<User>,
    pub invitations: Vec<Invitation>,
    pub suspend_reason: Option<String>,
    pub cancellation_reason: Option<String>,
    pub seq: u64,
}

impl Client {
    pub fn live_users(&self) -> impl Iterator<Item = &User> {
        self.users.iter().filter(|u| u.deleted_us.is_none())
    }

    pub fn admins(&self) -> usize {
        self.live_users().filter(|u| u.role == "admin").count()
    }

    fn users_count(&self) -> i32 {
        i32::try_from(self.live_users().count()).unwrap_or(i32::MAX)
    }

    /// `PublicClientDTO`.
    pub fn json(&self, plans: &HashMap<Uuid, Plan>, now_us: i64) -> Value {
        let mut m = Map::new();
        m.insert("createdAt".into(), json!(fmt_secs(self.created_us)));
        m.insert("creditsBalance".into(), json!(self.credits_balance));
        m.insert("creditsUsedThisPeriod".into(), json!(self.credits_used));
        if let Some(t) = self.period_end_us {
            m.insert("currentPeriodEnd".into(), json!(fmt_secs(t)));
        }
        m.insert(
            "currentPeriodStart".into(),
            json!(fmt_secs(self.period_start_us)),
        );
        m.insert(
            "extraCreditsBalance".into(),
            json!(self.extra_credits_balance),
        );
        if let Some(t) = self.next_renewal_us {
            m.insert("nextCreditRenewalAt".into(), json!(fmt_secs(t)));
        }
        m.insert(
            "pendingInvitations".into(),
            Value::Array(self.invitations.iter().map(|i| i.json(now_us)).collect()),
        );
        if let Some(p) = self.plan.and_then(|id| plans.get(&id)) {
            m.insert("plan".into(), p.plan_ref());
        }
        m.insert("publicId".into(), json!(self.id));
        m.insert("seatsLimit".into(), json!(self.seats_limit));
        m.insert("subscriptionStatus".into(), json!(self.status.name()));
        m.insert("unlimitedCredits".into(), json!(self.unlimited_credits));
        m.insert(
            "users".into(),
            Value::Array(self.live_users().map(User::json).collect()),
        );
        m.insert("usersCount".into(), json!(self.users_count()));
        m.insert("workspaceName".into(), json!(self.workspace_name));
        Value::Object(m)
    }

    /// `PublicClientListItemDTO`.
    pub fn list_item(&self, plans: &HashMap<Uuid, Plan>) -> Value {
        let mut m = Map::new();
        m.insert("createdAt".into(), json!(fmt_secs(self.created_us)));
        m.insert("creditsBalance".into(), json!(self.credits_balance));
        m.insert("creditsLimit".into(), json!(self.credits_limit));
        m.insert(
            "extraCreditsBalance".into(),
            json!(self.extra_credits_balance),
        );
        if let Some(p) = self.plan.and_then(|id| plans.get(&id)) {
            m.insert("planName".into(), json!(p.name));
            m.insert("priceCents".into(), json!(i64::from(p.price_cents)));
            m.insert("totalCostCents".into(), json!(i64::from(p.price_cents)));
        }
        m.insert("publicId".into(), json!(self.id));
        m.insert("seatsLimit".into(), json!(self.seats_limit));
        m.insert("subscriptionStatus".into(), json!(self.status.name()));
        m.insert("unlimitedCredits".into(), json!(self.unlimited_credits));
        m.insert("usersCount".into(), json!(self.users_count()));
        m.insert("workspaceName".into(), json!(self.workspace_name));
        Value::Object(m)
    }

    /// Matches `q`: workspace name, a user's name or email (case-insensitive substring).
    pub fn matches(&self, q: &str) -> bool {
        let q = q.to_lowercase();
        self.workspace_name.to_lowercase().contains(&q)
            || self
                .live_users()
                .any(|u| u.name.to_lowercase().contains(&q) || u.email.to_lowercase().contains(&q))
    }
}

/// Everything the state file holds. The API key is the simulator's own credential and is
/// stored in plain text so a restart keeps it (mode 0600).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub api_key: String,
    pub api_key_id: Uuid,
    pub workspace_id: Uuid,
    pub plans: HashMap<Uuid, Plan>,
    pub clients: HashMap<Uuid, Client>,
    pub seq: u64,
}

impl State {
    pub fn fresh(api_key: String, api_key_id: Uuid, workspace_id: Uuid) -> State {
        State {
            api_key,
            api_key_id,
            workspace_id,
            plans: HashMap::new(),
            clients: HashMap::new(),
            seq: 0,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A live user of any client has this login email (case-insensitive).
    pub fn email_taken(&self, email: &str) -> bool {
        self.clients
            .values()
            .flat_map(Client::live_users)
            .any(|u| u.email.eq_ignore_ascii_case(email))
    }

    /// `PublicPlanDTO` (assumed shape: the plan, its seats and how many clients use it).
    pub fn plan_dto(&self, p: &Plan) -> Value {
        let mut v = p.json();
        if let Some(m) = v.as_object_mut() {
            m.remove("trial");
        }
        v["activeSubscriptions"] = json!(
            self.clients
                .values()
                .filter(|c| c.plan == Some(p.id) && c.status != Status::Canceled)
                .count()
        );
        v
    }

    pub fn name_taken(&self, name: &str) -> bool {
        let n = name.trim().to_lowercase();
        self.clients
            .values()
            .any(|c| c.workspace_name.trim().to_lowercase() == n)
    }
}
