//! gennia-sim: a local, faithful, stateful and fault-injecting simulator of Gennia's public
//! Clients API (`/public/api/v1/clients…`, `GET /public/api/v1/health`), built on `sim-kit`.
//! See `sims/gennia/README.md`.

pub mod api;
pub mod model;

use http::Method;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sim_kit::{
    ApiRequest, App, ControlError, KitConfig, KitError, Rejection, Reply, Route, RunningSim,
    Switches, parse_control_body,
};
use uuid::Uuid;

use crate::model::{Plan, State, Status};

/// The API's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Health,
    List,
    Create,
    Get,
    Suspend,
    Reactivate,
    ResendInvitation,
    PatchUser,
    DeleteUser,
    PlanList,
    PlanGet,
}

const BASE: &str = "/public/api/v1";

static ROUTES: &[Route<Op>] = &[
    ("/public/api/v1/health", Method::GET, Op::Health),
    ("/public/api/v1/clients", Method::GET, Op::List),
    ("/public/api/v1/clients", Method::POST, Op::Create),
    (
        "/public/api/v1/clients/:clientPublicId",
        Method::GET,
        Op::Get,
    ),
    (
        "/public/api/v1/clients/:clientPublicId/suspend",
        Method::POST,
        Op::Suspend,
    ),
    (
        "/public/api/v1/clients/:clientPublicId/reactivate",
        Method::POST,
        Op::Reactivate,
    ),
    (
        "/public/api/v1/clients/:clientPublicId/invitations/:invitationPublicId/resend",
        Method::POST,
        Op::ResendInvitation,
    ),
    (
        "/public/api/v1/clients/:clientPublicId/users/:userPublicId",
        Method::PATCH,
        Op::PatchUser,
    ),
    (
        "/public/api/v1/clients/:clientPublicId/users/:userPublicId",
        Method::DELETE,
        Op::DeleteUser,
    ),
    ("/public/api/v1/billing/plans", Method::GET, Op::PlanList),
    (
        "/public/api/v1/billing/plans/:planPublicId",
        Method::GET,
        Op::PlanGet,
    ),
];

/// The simulator's own `/_sim/` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ctl {
    PlanCreate,
    PlanList,
    ClientStatus,
    Onboard,
}

static CONTROL_ROUTES: &[Route<Ctl>] = &[
    ("/_sim/plans", Method::POST, Ctl::PlanCreate),
    ("/_sim/plans", Method::GET, Ctl::PlanList),
    (
        "/_sim/clients/:clientPublicId/status",
        Method::PUT,
        Ctl::ClientStatus,
    ),
    (
        "/_sim/clients/:clientPublicId/onboard",
        Method::POST,
        Ctl::Onboard,
    ),
];

/// How business errors look (the docs show codes only for 401s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorDialect {
    /// `{code, message}` with a code per rule (`WORKSPACE_NAME_TAKEN`, …), invented here.
    #[default]
    Codes,
    /// `{code, message}` with every 400 `VALIDATION_ERROR` (the one code the docs show for
    /// bad input) and every 404 `NOT_FOUND`: only the message tells the rules apart.
    Validation,
    /// Spring Boot's default `{timestamp, status, error, message, path}`, no code at all.
    Spring,
}

/// What a new workspace with a (non-trial) plan starts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum InitialStatus {
    /// `active` at once.
    #[default]
    Active,
    /// `pending_onboarding` until one of its users finishes onboarding
    /// (`POST /_sim/clients/{id}/onboard`); suspend is refused meanwhile (only from active).
    #[value(name = "pending_onboarding")]
    PendingOnboarding,
}

/// Whether the rules the schema cannot express are enforced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BusinessRules {
    #[default]
    Enforce,
    /// Everything the OpenAPI excerpt allows is accepted: an unknown plan or a trial without
    /// a trial plan means no plan, names may repeat, suspend/reactivate in the wrong state
    /// answer the client as it is, the last admin may go. For the contract test's
    /// positive-data check: any other 4xx is strictness the spec does not state.
    Relaxed,
}

/// Where Gennia's docs are silent, one plausible answer per switch (README "Assumption
/// switches"); flags set them at start, `PATCH /_sim/assumptions` at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assumptions {
    pub error_dialect: ErrorDialect,
    /// Every property present, `null` when unset (and empty lists `null`).
    pub nulls: bool,
    pub initial_status: InitialStatus,
    /// One login email per person: a user email already in another workspace is refused.
    pub unique_login_email: bool,
    /// At most this many users per workspace (refused at create); `None` = not enforced.
    pub seats: Option<u32>,
    /// Characters the key format check wants after `gsk_` (Gennia's CLI: 10).
    pub api_key_min_chars: usize,
    pub business_rules: BusinessRules,
}

impl Default for Assumptions {
    fn default() -> Assumptions {
        Assumptions {
            error_dialect: ErrorDialect::default(),
            nulls: false,
            initial_status: InitialStatus::default(),
            unique_login_email: false,
            seats: None,
            api_key_min_chars: api::DEFAULT_KEY_MIN_CHARS,
            business_rules: BusinessRules::default(),
        }
    }
}

/// The client a control route's `:clientPublicId` names.
fn client_param<'a>(
    clients: &'a mut std::collections::HashMap<Uuid, crate::model::Client>,
    params: &[String],
) -> Result<&'a mut crate::model::Client, ControlError> {
    params
        .first()
        .and_then(|p| Uuid::parse_str(p).ok())
        .and_then(|id| clients.get_mut(&id))
        .ok_or_else(|| ControlError::not_found("client"))
}

/// The Gennia API as a `sim-kit` app.
#[derive(Debug, Default)]
pub struct Gennia {
    pub switches: Switches<Assumptions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewPlan {
    name: String,
    #[serde(default)]
    price_cents: i32,
    #[serde(default = "usd")]
    currency: String,
    #[serde(default = "one")]
    billing_interval_months: i32,
    #[serde(default = "recurring")]
    billing_type: String,
    #[serde(default)]
    credits_included: i32,
    #[serde(default = "five")]
    seats_included: i32,
    #[serde(default)]
    unlimited_credits: bool,
    #[serde(default)]
    trial: bool,
}

fn usd() -> String {
    "USD".into()
}
fn one() -> i32 {
    1
}
fn five() -> i32 {
    5
}
fn recurring() -> String {
    "recurring".into()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetStatus {
    status: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

impl App for Gennia {
    type State = State;
    type Op = Op;
    type ControlOp = Ctl;

    fn routes(&self) -> &'static [Route<Op>] {
        ROUTES
    }

    fn handle(&self, st: &mut State, req: &ApiRequest<'_, Op>) -> Reply {
        api::handle(st, req, &self.switches.get())
    }

    fn assumptions(&self) -> Value {
        self.switches.view()
    }

    fn set_assumptions(&self, body: &[u8]) -> Result<Value, ControlError> {
        self.switches.patch(body)
    }

    fn reject(&self, rejection: &Rejection, _request_id: &str) -> Reply {
        use api::GErr;
        let e = match rejection {
            Rejection::NotFound { method, path } => {
                GErr::new(404, "NOT_FOUND", format!("No endpoint {method} {path}"))
            }
            Rejection::MethodNotAllowed { allowed } => GErr::new(
                405,
                "METHOD_NOT_ALLOWED",
                format!("Method not allowed; allowed: {}", allowed.join(", ")),
            ),
            Rejection::PayloadTooLarge => {
                GErr::new(413, "PAYLOAD_TOO_LARGE", "Request body exceeds 1 MiB")
            }
            Rejection::UnsupportedMediaType => GErr::new(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "Request bodies must be JSON (Content-Type: application/json)",
            ),
            Rejection::BodyUnreadable(e) => {
                GErr::validation(format!("Cannot read request body: {e}"))
            }
            Rejection::Injected5xx(500) => GErr::new(
                500,
                "INTERNAL_ERROR",
                "Internal server error (injected fault)",
            ),
            Rejection::Injected5xx(502) | Rejection::ResponseLost => {
                GErr::new(502, "BAD_GATEWAY", "Bad gateway (injected fault)")
            }
            Rejection::Injected5xx(s) => GErr::new(
                *s,
                "SERVICE_UNAVAILABLE",
                "Service unavailable (injected fault)",
            ),
            Rejection::InjectedRateLimit => {
                return GErr::new(429, "RATE_LIMITED", "Too many requests (injected fault)")
                    .reply()
                    .with_header("retry-after", "1");
            }
        };
        e.reply()
    }

    fn control_routes(&self) -> &'static [Route<Ctl>] {
        CONTROL_ROUTES
    }

    fn control(
        &self,
        st: &mut State,
        op: Ctl,
        params: &[String],
        body: &[u8],
        now_us: i64,
    ) -> Result<Value, ControlError> {
        match op {
            Ctl::PlanList => {
                let mut plans: Vec<&Plan> = st.plans.values().collect();
                plans.sort_by_key(|p| (p.created_us, p.id));
                Ok(json!({ "plans": plans.iter().map(|p| p.json()).collect::<Vec<_>>() }))
            }
            Ctl::PlanCreate => {
                let p: NewPlan = parse_control_body(body)?;
                let len = p.name.chars().count();
                if !(3..=100).contains(&len) {
                    return Err(ControlError::validation("name must be 3 to 100 characters"));
                }
                if p.price_cents < 0 {
                    return Err(ControlError::validation("priceCents must be at least 0"));
                }
                if p.currency.len() != 3 {
                    return Err(ControlError::validation("currency must be a 3-letter code"));
                }
                if p.billing_type != "recurring" && p.billing_type != "one_time" {
                    return Err(ControlError::validation(
                        "billingType must be recurring or one_time",
                    ));
                }
                if !(1..=120).contains(&p.billing_interval_months) {
                    return Err(ControlError::validation(
                        "billingIntervalMonths must be 1 to 120",
                    ));
                }
                if p.credits_included < 0 {
                    return Err(ControlError::validation(
                        "creditsIncluded must be at least 0",
                    ));
                }
                if p.seats_included < 1 {
                    return Err(ControlError::validation("seatsIncluded must be at least 1"));
                }
                if p.trial {
                    for other in st.plans.values_mut() {
                        other.trial = false;
                    }
                }
                let plan = Plan {
                    id: Uuid::new_v4(),
                    name: p.name,
                    price_cents: p.price_cents,
                    currency: p.currency,
                    billing_interval_months: p.billing_interval_months,
                    billing_type: p.billing_type,
                    credits_included: p.credits_included,
                    seats_included: p.seats_included,
                    unlimited_credits: p.unlimited_credits,
                    trial: p.trial,
                    created_us: now_us,
                };
                let v = plan.json();
                st.plans.insert(plan.id, plan);
                Ok(v)
            }
            Ctl::ClientStatus => {
                let s: SetStatus = parse_control_body(body)?;
                let status = Status::parse(&s.status).ok_or_else(|| {
                    ControlError::validation(format!(
                        "status must be one of active, past_due, canceled, trialing, pending_onboarding, suspended, got {:?}",
                        s.status
                    ))
                })?;
                let c = client_param(&mut st.clients, params)?;
                c.status = status;
                Ok(c.json(&st.plans, now_us))
            }
            Ctl::Onboard => {
                parse_control_body::<Empty>(body)?;
                let c = client_param(&mut st.clients, params)?;
                for u in c.users.iter_mut().filter(|u| u.deleted_us.is_none()) {
                    u.completed_onboarding = true;
                    u.last_seen_us = Some(now_us);
                }
                if c.status == Status::PendingOnboarding && c.plan.is_some() {
                    c.status = Status::Active;
                }
                Ok(c.json(&st.plans, now_us))
            }
        }
    }

    fn reset(&self, st: &mut State, _now_us: i64) {
        *st = State::fresh(st.api_key.clone(), st.api_key_id, st.workspace_id);
    }

    /// Never includes the API key.
    fn state_view(&self, st: &State, now_us: i64) -> Vec<u8> {
        let mut clients: Vec<_> = st.clients.values().collect();
        clients.sort_by_key(|c| c.seq);
        let mut plans: Vec<&Plan> = st.plans.values().collect();
        plans.sort_by_key(|p| (p.created_us, p.id));
        let clients: Vec<Value> = clients
            .iter()
            .map(|c| {
                let mut v = c.json(&st.plans, now_us);
                v["suspendReason"] = json!(c.suspend_reason);
                v["cancellationReason"] = json!(c.cancellation_reason);
                v["deletedUsers"] = json!(
                    c.users
                        .iter()
                        .filter(|u| u.deleted_us.is_some())
                        .map(|u| u.json())
                        .collect::<Vec<_>>()
                );
                v["invitationsSent"] = json!(c.invitations.iter().map(|i| i.sent).sum::<u32>());
                v
            })
            .collect();
        serde_json::to_vec(&json!({
            "workspacePublicId": st.workspace_id,
            "apiKeyPublicId": st.api_key_id,
            "plans": plans.iter().map(|p| p.json()).collect::<Vec<_>>(),
            "clients": clients,
        }))
        .unwrap_or_default()
    }
}

/// How to run the simulator.
#[derive(Clone, Debug, Default)]
pub struct GenniaConfig {
    pub kit: KitConfig,
    /// The hub's workspace API key (`gsk_…`); generated when absent.
    pub api_key: Option<String>,
    /// The assumption switches at start.
    pub assumptions: Assumptions,
}

/// A started simulator and its API key.
pub struct Started {
    pub sim: RunningSim<Gennia>,
    pub api_key: String,
}

impl Started {
    pub fn base_url(&self) -> String {
        self.sim.base_url()
    }
    /// The API root, `http://ADDR/public/api/v1`.
    pub fn api_url(&self) -> String {
        format!("{}{BASE}", self.sim.base_url())
    }
}

/// A new workspace key: `gsk_` + 40 random alphanumerics.
pub fn generate_api_key() -> String {
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
        .collect();
    format!("gsk_{body}")
}

/// Loads the state file (if any), applies `api_key` and serves.
pub async fn spawn(cfg: GenniaConfig) -> Result<Started, KitError> {
    let min = cfg.assumptions.api_key_min_chars;
    if let Some(k) = &cfg.api_key
        && !api::valid_key_format_min(k, min)
    {
        return Err(KitError::Config(format!(
            "--api-key must look like gsk_ followed by {min}-200 of A-Z a-z 0-9 _ -"
        )));
    }
    let loaded: Option<State> = match &cfg.kit.state_file {
        Some(p) => sim_kit::store::load(p)?,
        None => None,
    };
    let state = match loaded {
        Some(mut st) => {
            if let Some(k) = &cfg.api_key {
                st.api_key = k.clone();
            }
            st
        }
        None => State::fresh(
            cfg.api_key.clone().unwrap_or_else(generate_api_key),
            Uuid::new_v4(),
            Uuid::new_v4(),
        ),
    };
    let api_key = state.api_key.clone();
    let app = Gennia {
        switches: Switches::new(cfg.assumptions),
    };
    let sim = sim_kit::serve(app, state, cfg.kit).await?;
    Ok(Started { sim, api_key })
}
