// Over 600 lines: one handler per documented route of the Clients API, in the OpenAPI's order, so each rule reads beside its route.
//! The Clients API: authentication, strict body parsing, the documented rules.
use serde_json::{Map, Value, json};
use sim_kit::clock::{add_months, parse_rfc3339};
use sim_kit::{ApiRequest, Reply};
use uuid::Uuid;

use crate::model::{
    CANCELLATION_REASONS, Client, INVITATION_TTL_US, Invitation, ROLES, State, Status, User,
};
use crate::{Assumptions, BusinessRules, ErrorDialect, InitialStatus, Op};

/// An API error: `{"code": "...", "message": "..."}` with the status.
#[derive(Debug, Clone, PartialEq)]
pub struct GErr {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl GErr {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> GErr {
        GErr {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn validation(message: impl Into<String>) -> GErr {
        GErr::new(400, "VALIDATION_ERROR", message)
    }
    pub fn reply(&self) -> Reply {
        Reply::json(
            self.status,
            &json!({ "code": self.code, "message": self.message }),
        )
    }

    /// The error in `dialect` (`--error-dialect`). The documented 401 codes (G4) keep their
    /// shape in every dialect.
    pub fn render(&self, dialect: ErrorDialect, path: &str, now_us: i64) -> Reply {
        if self.status == 401 {
            return self.reply();
        }
        match dialect {
            ErrorDialect::Codes => self.reply(),
            ErrorDialect::Validation => {
                let code = match self.status {
                    400 => "VALIDATION_ERROR",
                    404 => "NOT_FOUND",
                    _ => self.code,
                };
                Reply::json(
                    self.status,
                    &json!({ "code": code, "message": self.message }),
                )
            }
            ErrorDialect::Spring => {
                let reason = http::StatusCode::from_u16(self.status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                Reply::json(
                    self.status,
                    &json!({
                        "timestamp": sim_kit::clock::fmt_millis(now_us),
                        "status": self.status,
                        "error": reason,
                        "message": self.message,
                        "path": path,
                    }),
                )
            }
        }
    }
}

fn client_not_found() -> GErr {
    GErr::new(404, "CLIENT_NOT_FOUND", "Client not found in this hub")
}

type R = Result<Reply, GErr>;

pub fn handle(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> Reply {
    let r = authenticate(st, req, sw).and_then(|()| dispatch(st, req, sw));
    match r {
        Ok(reply) if sw.nulls && reply.status < 300 => with_nulls(reply),
        Ok(reply) => reply,
        Err(e) => e.render(sw.error_dialect, req.path, req.now_us),
    }
}

/// `X-Api-Key: gsk_…`, or `Authorization: Bearer gsk_…`.
fn authenticate(st: &State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> Result<(), GErr> {
    let key = req
        .header("x-api-key")
        .filter(|k| !k.is_empty())
        .or_else(|| {
            req.header("authorization")
                .and_then(|a| match a.split_once(' ') {
                    Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                        Some(rest.trim().to_string())
                    }
                    _ => None,
                })
        });
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        return Err(GErr::new(
            401,
            "MISSING_API_KEY",
            "Missing API key: send X-Api-Key: gsk_...",
        ));
    };
    if !valid_key_format_min(&key, sw.api_key_min_chars) {
        return Err(GErr::new(
            401,
            "INVALID_API_KEY_FORMAT",
            "Invalid API key format: workspace keys look like gsk_...",
        ));
    }
    if key != st.api_key {
        return Err(GErr::new(
            401,
            "INVALID_API_KEY",
            "Invalid or revoked API key",
        ));
    }
    Ok(())
}

/// `gsk_` followed by 8–200 of `[A-Za-z0-9_-]` (assumed).
pub fn valid_key_format(key: &str) -> bool {
    valid_key_format_min(key, DEFAULT_KEY_MIN_CHARS)
}

/// The key length Gennia's format check wants after `gsk_` by default (assumed; Gennia's
/// CLI asks for at least 10, `--api-key-min-chars`).
pub const DEFAULT_KEY_MIN_CHARS: usize = 8;

/// `gsk_` followed by `min`–200 of `[A-Za-z0-9_-]`.
pub fn valid_key_format_min(key: &str, min: usize) -> bool {
    key.strip_prefix("gsk_").is_some_and(|rest| {
        (min..=200).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

fn dispatch(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    match req.op {
        Op::Health => Ok(Reply::json(
            200,
            &json!({
                "status": "ok",
                "workspacePublicId": st.workspace_id,
                "apiKeyPublicId": st.api_key_id,
            }),
        )),
        Op::List => list(st, req, sw),
        Op::Create => create(st, req, sw),
        Op::Get => {
            let id = client_id(st, req.param(0))?;
            Ok(client_reply(st, id, req.now_us))
        }
        Op::Suspend => suspend(st, req, sw),
        Op::Reactivate => reactivate(st, req, sw),
        Op::ResendInvitation => resend(st, req),
        Op::PatchUser => patch_user(st, req, sw),
        Op::DeleteUser => delete_user(st, req, sw),
        Op::PlanList => plan_list(st, req),
        Op::PlanGet => plan_get(st, req),
    }
}

fn client_reply(st: &State, id: Uuid, now: i64) -> Reply {
    match st.clients.get(&id) {
        Some(c) => Reply::json(200, &c.json(&st.plans, now)),
        None => client_not_found().reply(),
    }
}

/// A path id that is not a UUID cannot name a client of this hub: 404 (assumed).
fn client_id(st: &State, raw: &str) -> Result<Uuid, GErr> {
    Uuid::parse_str(raw)
        .ok()
        .filter(|id| st.clients.contains_key(id))
        .ok_or_else(client_not_found)
}

// ---------- strict body parsing ----------

fn object(body: &[u8], allowed: &[&str], required: bool) -> Result<Map<String, Value>, GErr> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if required {
            Err(GErr::validation("Request body is required"))
        } else {
            Ok(Map::new())
        };
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| GErr::validation(format!("Malformed JSON request body: {e}")))?;
    let Value::Object(m) = v else {
        return Err(GErr::validation("Request body must be a JSON object"));
    };
    check_fields(&m, allowed, "")?;
    Ok(m)
}

fn check_fields(m: &Map<String, Value>, allowed: &[&str], prefix: &str) -> Result<(), GErr> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(GErr::validation(format!(
            "Unknown field '{prefix}{k}' (allowed: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The field's value. JSON `null` is present and fails the type checks: the schema's types
/// are not nullable (assumed strictness, see README).
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name)
}

fn opt_str(
    m: &Map<String, Value>,
    name: &str,
    label: &str,
    min: usize,
    max: usize,
) -> Result<Option<String>, GErr> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min || n > max {
                Err(GErr::validation(format!(
                    "{label} must be between {min} and {max} characters (got {n})"
                )))
            } else {
                Ok(Some(s.clone()))
            }
        }
        Some(_) => Err(GErr::validation(format!("{label} must be a string"))),
    }
}

fn opt_bool(m: &Map<String, Value>, name: &str) -> Result<Option<bool>, GErr> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(GErr::validation(format!("{name} must be a boolean"))),
    }
}

fn opt_enum(
    m: &Map<String, Value>,
    name: &str,
    label: &str,
    allowed: &[&str],
) -> Result<Option<String>, GErr> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(_) => Err(GErr::validation(format!(
            "{label} must be one of {}",
            allowed.join(", ")
        ))),
    }
}

// ---------- handlers ----------

fn list(st: &State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    let q = req.query_pairs();
    let first = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let int = |name: &str, default: i64, min: i64, max: i64| -> Result<i64, GErr> {
        match first(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(GErr::validation(format!(
                    "{name} must be an integer between {min} and {max}, got {v:?}"
                ))),
            },
        }
    };
    // `page` has no minimum in the schema: relaxed, page 0 or less is page 1 (assumed 400).
    let page = match first("page").and_then(|v| v.parse::<i32>().ok()) {
        Some(n) if n < 1 && sw.business_rules == BusinessRules::Relaxed => 1,
        _ => int("page", 1, 1, i64::from(i32::MAX))?,
    };
    let limit = int("limit", 20, 1, 100)?;
    let status = match first("status") {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            GErr::validation(format!(
                "status must be one of active, past_due, canceled, trialing, pending_onboarding, suspended, got {s:?}"
            ))
        })?),
    };
    let needle = first("q").map(str::trim).filter(|s| !s.is_empty());
    let mut hits: Vec<&Client> = st
        .clients
        .values()
        .filter(|c| status.is_none_or(|s| c.status == s))
        .filter(|c| needle.is_none_or(|n| c.matches(n)))
        .collect();
    hits.sort_by_key(|c| std::cmp::Reverse(c.seq));
    let total = hits.len() as i64;
    let total_pages = (total + limit - 1) / limit;
    let items: Vec<Value> = hits
        .into_iter()
        .skip(usize::try_from((page - 1).saturating_mul(limit)).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|c| c.list_item(&st.plans))
        .collect();
    Ok(Reply::json(
        200,
        &json!({
            "items": items,
            "page": page,
            "limit": limit,
            "total": total,
            "totalPages": total_pages,
        }),
    ))
}

struct NewUser {
    email: String,
    name: String,
    role: String,
}

/// The users of a create. Relaxed (`--business-rules relaxed`), only the schema's rules:
/// `role` required, `email` optional (stored empty) and unchecked, no admin needed.
fn parse_users(m: &Map<String, Value>, relaxed: bool) -> Result<Vec<NewUser>, GErr> {
    let Some(v) = field(m, "users") else {
        return Err(GErr::validation("users is required (at least one user)"));
    };
    let Value::Array(items) = v else {
        return Err(GErr::validation("users must be an array"));
    };
    if items.is_empty() {
        return Err(GErr::validation("users must contain at least one user"));
    }
    let mut out: Vec<NewUser> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(u) = item else {
            return Err(GErr::validation(format!("users[{i}] must be an object")));
        };
        check_fields(u, &["email", "name", "role"], &format!("users[{i}]."))?;
        let role = opt_enum(u, "role", &format!("users[{i}].role"), &ROLES)?
            .ok_or_else(|| GErr::validation(format!("users[{i}].role is required")))?;
        let email = match opt_str(u, "email", &format!("users[{i}].email"), 1, 254)? {
            Some(e) => e,
            None if relaxed => String::new(),
            None => return Err(GErr::validation(format!("users[{i}].email is required"))),
        };
        let email = email.trim().to_string();
        let looks_like_email = email.split_once('@').is_some_and(|(a, b)| {
            !a.is_empty() && !b.is_empty() && !email.contains(char::is_whitespace)
        });
        if !looks_like_email && !relaxed {
            return Err(GErr::validation(format!(
                "users[{i}].email must be a valid email address"
            )));
        }
        if !relaxed && out.iter().any(|o| o.email.eq_ignore_ascii_case(&email)) {
            return Err(GErr::validation(format!(
                "users[{i}].email {email} is listed twice"
            )));
        }
        let name = opt_str(u, "name", &format!("users[{i}].name"), 1, 255)?
            .unwrap_or_else(|| email.split('@').next().unwrap_or("").to_string());
        out.push(NewUser { email, name, role });
    }
    if !relaxed && !out.iter().any(|u| u.role == "admin") {
        return Err(GErr::validation(
            "users must include at least one user with role admin",
        ));
    }
    Ok(out)
}

const CREATE_FIELDS: [&str; 7] = [
    "workspaceName",
    "users",
    "planPublicId",
    "inviteToTrial",
    "sendInvitations",
    "creditsOverride",
    "periodEndOverride",
];

fn create(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    let relaxed = sw.business_rules == BusinessRules::Relaxed;
    let now = req.now_us;
    let m = object(req.body, &CREATE_FIELDS, true)?;
    let name = opt_str(&m, "workspaceName", "workspaceName", 1, 150)?
        .ok_or_else(|| GErr::validation("workspaceName is required"))?;
    if name.trim().is_empty() && !relaxed {
        return Err(GErr::validation("workspaceName must not be blank"));
    }
    let users = parse_users(&m, relaxed)?;
    let plan_raw = match field(&m, "planPublicId") {
        None => None,
        Some(Value::String(s)) => {
            Some(Uuid::parse_str(s).map_err(|_| GErr::validation("planPublicId must be a UUID"))?)
        }
        Some(_) => return Err(GErr::validation("planPublicId must be a UUID string")),
    };
    let trial = opt_bool(&m, "inviteToTrial")?.unwrap_or(false);
    let send = opt_bool(&m, "sendInvitations")?.unwrap_or(false);
    let credits_override = match field(&m, "creditsOverride") {
        None => None,
        // A JSON integer may be written 5000.0 (JSON Schema counts it as an integer, and
        // Jackson takes it for an int); found by the contract's positive-data check.
        Some(v) => match v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .and_then(|n| i32::try_from(n).ok())
        {
            Some(n) if n >= 0 || relaxed => Some(n),
            _ => {
                return Err(GErr::validation(
                    "creditsOverride must be an integer between 0 and 2147483647",
                ));
            }
        },
    };
    let period_end_override = match field(&m, "periodEndOverride") {
        None => None,
        Some(Value::String(s)) => match parse_rfc3339(s) {
            Some(t) if t > now || relaxed => Some(t),
            Some(_) => {
                return Err(GErr::validation("periodEndOverride must be in the future"));
            }
            None => {
                return Err(GErr::validation(
                    "periodEndOverride must be an ISO-8601 date-time",
                ));
            }
        },
        Some(_) => return Err(GErr::validation("periodEndOverride must be a string")),
    };

    // Business rules, after the shape is valid.
    if let Some(seats) = sw.seats
        && users.len() > seats as usize
        && !relaxed
    {
        return Err(GErr::new(
            400,
            "SEAT_LIMIT",
            format!(
                "The workspace would have {} users but a client workspace has {seats} seats",
                users.len()
            ),
        ));
    }
    if sw.unique_login_email
        && !relaxed
        && let Some(taken) = users.iter().find(|u| st.email_taken(&u.email))
    {
        return Err(GErr::new(
            400,
            "EMAIL_TAKEN",
            format!(
                "User email {} already belongs to another workspace (one login per email)",
                taken.email
            ),
        ));
    }
    if st.name_taken(&name) && !relaxed {
        return Err(GErr::new(
            400,
            "WORKSPACE_NAME_TAKEN",
            format!(
                "A client workspace named {:?} already exists in this hub",
                name.trim()
            ),
        ));
    }
    let trial_plan = st.plans.values().find(|p| p.trial).map(|p| p.id);
    let plan_id = if trial && (trial_plan.is_some() || !relaxed) {
        Some(trial_plan.ok_or_else(|| {
            GErr::new(
                400,
                "TRIAL_NOT_ENABLED",
                "inviteToTrial needs a trial plan configured in the hub",
            )
        })?)
    } else {
        match plan_raw {
            Some(id) if st.plans.contains_key(&id) => Some(id),
            Some(_) if relaxed => None,
            Some(_) => {
                return Err(GErr::new(
                    400,
                    "PLAN_NOT_FOUND",
                    "planPublicId is not a plan of this hub",
                ));
            }
            None => None,
        }
    };
    let plan = plan_id.and_then(|id| st.plans.get(&id)).cloned();
    let status = match &plan {
        Some(_) if trial => Status::Trialing,
        Some(_) if sw.initial_status == InitialStatus::PendingOnboarding => {
            Status::PendingOnboarding
        }
        Some(_) => Status::Active,
        None => Status::PendingOnboarding,
    };
    let period_end = period_end_override.or_else(|| {
        plan.as_ref()
            .filter(|p| p.billing_type == "recurring" && p.billing_interval_months > 0)
            .map(|p| add_months(now, p.billing_interval_months))
    });
    let recurring = plan.as_ref().is_some_and(|p| p.billing_type == "recurring");
    let credits =
        credits_override.unwrap_or_else(|| plan.as_ref().map_or(0, |p| p.credits_included));
    let user_recs: Vec<User> = users
        .into_iter()
        .map(|u| User {
            id: Uuid::new_v4(),
            email: u.email,
            name: u.name,
            role: u.role,
            completed_onboarding: false,
            last_seen_us: None,
            deleted_us: None,
        })
        .collect();
    let invitations = if send {
        user_recs
            .iter()
            .map(|u| Invitation {
                id: Uuid::new_v4(),
                user: u.id,
                email: u.email.clone(),
                name: u.name.clone(),
                role: u.role.clone(),
                created_us: now,
                expires_us: now + INVITATION_TTL_US,
                sent: 1,
            })
            .collect()
    } else {
        Vec::new()
    };
    let seq = st.next_seq();
    let client = Client {
        id: Uuid::new_v4(),
        workspace_name: name.trim().to_string(),
        status,
        plan: plan_id,
        created_us: now,
        period_start_us: now,
        period_end_us: period_end,
        next_renewal_us: if recurring { period_end } else { None },
        credits_limit: credits,
        credits_balance: i64::from(credits),
        extra_credits_balance: 0,
        credits_used: 0,
        unlimited_credits: plan.as_ref().is_some_and(|p| p.unlimited_credits),
        seats_limit: match sw.seats {
            Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
            None => plan.as_ref().map_or(1, |p| p.seats_included).max(1),
        },
        users: user_recs,
        invitations,
        suspend_reason: None,
        cancellation_reason: None,
        seq,
    };
    let body = client.json(&st.plans, now);
    tracing::info!(client = %client.id, status = client.status.name(), "client created");
    st.clients.insert(client.id, client);
    Ok(Reply::json(201, &body))
}

fn suspend(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    let id = client_id(st, req.param(0))?;
    let m = object(req.body, &["cancellationReason", "reason"], false)?;
    let cancellation = opt_enum(
        &m,
        "cancellationReason",
        "cancellationReason",
        &CANCELLATION_REASONS,
    )?;
    let reason = opt_str(&m, "reason", "reason", 0, 500)?;
    let c = st.clients.get_mut(&id).ok_or_else(client_not_found)?;
    if c.status != Status::Active && sw.business_rules == BusinessRules::Relaxed {
        return Ok(client_reply(st, id, req.now_us));
    }
    if c.status != Status::Active {
        return Err(GErr::new(
            400,
            "CLIENT_NOT_SUSPENDABLE",
            format!(
                "Client is not in a state that can be suspended (status {})",
                c.status.name()
            ),
        ));
    }
    c.status = Status::Suspended;
    c.suspend_reason = reason;
    c.cancellation_reason = cancellation;
    Ok(client_reply(st, id, req.now_us))
}

fn reactivate(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    let id = client_id(st, req.param(0))?;
    object(req.body, &[], false)?;
    let c = st.clients.get_mut(&id).ok_or_else(client_not_found)?;
    if c.status != Status::Suspended && sw.business_rules == BusinessRules::Relaxed {
        return Ok(client_reply(st, id, req.now_us));
    }
    if c.status != Status::Suspended {
        return Err(GErr::new(
            400,
            "CLIENT_NOT_SUSPENDED",
            format!("Client is not suspended (status {})", c.status.name()),
        ));
    }
    c.status = Status::Active;
    c.suspend_reason = None;
    c.cancellation_reason = None;
    Ok(client_reply(st, id, req.now_us))
}

fn resend(st: &mut State, req: &ApiRequest<'_, Op>) -> R {
    let not_found = || {
        GErr::new(
            404,
            "INVITATION_NOT_FOUND",
            "Client or invitation not found in this hub",
        )
    };
    let id = client_id(st, req.param(0)).map_err(|_| not_found())?;
    object(req.body, &[], false)?;
    let inv_id = Uuid::parse_str(req.param(1)).map_err(|_| not_found())?;
    let c = st.clients.get_mut(&id).ok_or_else(not_found)?;
    let inv = c
        .invitations
        .iter_mut()
        .find(|i| i.id == inv_id)
        .ok_or_else(not_found)?;
    inv.expires_us = req.now_us + INVITATION_TTL_US;
    inv.sent += 1;
    Ok(Reply::json(200, &inv.json(req.now_us)))
}

fn user_index(c: &Client, raw: &str) -> Result<usize, GErr> {
    let not_found = || GErr::new(404, "USER_NOT_FOUND", "Client or user not found");
    let uid = Uuid::parse_str(raw).map_err(|_| not_found())?;
    c.users
        .iter()
        .position(|u| u.id == uid && u.deleted_us.is_none())
        .ok_or_else(not_found)
}

fn patch_user(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    let id = client_id(st, req.param(0))?;
    let m = object(req.body, &["name", "role"], true)?;
    let role = opt_enum(&m, "role", "role", &ROLES)?
        .ok_or_else(|| GErr::validation("role is required"))?;
    let name = opt_str(&m, "name", "name", 0, 150)?;
    let c = st.clients.get_mut(&id).ok_or_else(client_not_found)?;
    let i = user_index(c, req.param(1))?;
    if c.users[i].role == "admin"
        && role != "admin"
        && c.admins() == 1
        && sw.business_rules == BusinessRules::Enforce
    {
        return Err(GErr::new(
            400,
            "LAST_ADMIN",
            "Cannot demote the last admin of the client workspace",
        ));
    }
    let u = &mut c.users[i];
    u.role = role.clone();
    if let Some(n) = name {
        u.name = n;
    }
    let (uid, uname) = (u.id, u.name.clone());
    for inv in c.invitations.iter_mut().filter(|inv| inv.user == uid) {
        inv.role = role.clone();
        inv.name = uname.clone();
    }
    Ok(client_reply(st, id, req.now_us))
}

fn delete_user(st: &mut State, req: &ApiRequest<'_, Op>, sw: &Assumptions) -> R {
    let id = client_id(st, req.param(0))?;
    object(req.body, &[], false)?;
    let c = st.clients.get_mut(&id).ok_or_else(client_not_found)?;
    let i = user_index(c, req.param(1))?;
    if c.users[i].role == "admin" && c.admins() == 1 && sw.business_rules == BusinessRules::Enforce
    {
        return Err(GErr::new(
            400,
            "LAST_ADMIN",
            "Cannot remove the last admin of the client workspace",
        ));
    }
    c.users[i].deleted_us = Some(req.now_us);
    let uid = c.users[i].id;
    c.invitations.retain(|inv| inv.user != uid);
    Ok(client_reply(st, id, req.now_us))
}

/// `GET /billing/plans`: the hub's plans, one page (`page`, `limit` as for clients). Not in
/// the excerpt; the paginated envelope and the fields are assumed from the clients list and
/// other-providers.md §2 (`PublicPlanDTO`, with `activeSubscriptions`).
fn plan_list(st: &State, req: &ApiRequest<'_, Op>) -> R {
    let q = req.query_pairs();
    let first = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let int = |name: &str, default: i64, max: i64| -> Result<i64, GErr> {
        match first(name) {
            None => Ok(default),
            Some(v) => match v.parse::<i64>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(GErr::validation(format!(
                    "{name} must be an integer between 1 and {max}, got {v:?}"
                ))),
            },
        }
    };
    let page = int("page", 1, i64::from(i32::MAX))?;
    let limit = int("limit", 20, 100)?;
    let mut plans: Vec<&crate::model::Plan> = st.plans.values().collect();
    plans.sort_by_key(|p| (p.created_us, p.id));
    let total = plans.len() as i64;
    let items: Vec<Value> = plans
        .into_iter()
        .skip(usize::try_from((page - 1).saturating_mul(limit)).unwrap_or(usize::MAX))
        .take(limit as usize)
        .map(|p| st.plan_dto(p))
        .collect();
    Ok(Reply::json(
        200,
        &json!({"items": items, "page": page, "limit": limit, "total": total,
                "totalPages": (total + limit - 1) / limit}),
    ))
}

/// `GET /billing/plans/{planPublicId}`.
fn plan_get(st: &State, req: &ApiRequest<'_, Op>) -> R {
    Uuid::parse_str(req.param(0))
        .ok()
        .and_then(|id| st.plans.get(&id))
        .map(|p| Reply::json(200, &st.plan_dto(p)))
        .ok_or_else(|| GErr::new(404, "PLAN_NOT_FOUND", "Plan not found in this hub"))
}

/// Every property of the response schemas present, `null` when unset (`--nulls`): what
/// Jackson writes without `NON_NULL`. Empty lists become `null` too, and a client without
/// a subscription (no plan, `pending_onboarding`) has `subscriptionStatus: null`.
fn with_nulls(mut reply: Reply) -> Reply {
    let Ok(mut v) = serde_json::from_slice::<Value>(&reply.body) else {
        return reply;
    };
    fill_nulls(&mut v);
    reply.body = serde_json::to_vec(&v).unwrap_or_default().into();
    reply
}

const CLIENT_FIELDS: [&str; 17] = [
    "createdAt",
    "creditsBalance",
    "creditsUsedThisPeriod",
    "currentPeriodEnd",
    "currentPeriodStart",
    "extraCreditsBalance",
    "nextCreditRenewalAt",
    "pendingInvitations",
    "pendingPlan",
    "plan",
    "publicId",
    "seatsLimit",
    "subscriptionStatus",
    "unlimitedCredits",
    "users",
    "usersCount",
    "workspaceName",
];
const LIST_ITEM_FIELDS: [&str; 3] = ["planName", "priceCents", "totalCostCents"];

fn fill_nulls(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(fill_nulls),
        Value::Object(m) => {
            let client = m.contains_key("workspaceName");
            let full = m.contains_key("users");
            if client && full {
                for f in CLIENT_FIELDS {
                    m.entry(f).or_insert(Value::Null);
                }
            } else if client {
                for f in LIST_ITEM_FIELDS {
                    m.entry(f).or_insert(Value::Null);
                }
            }
            if client
                && m.get("plan").is_none_or(Value::is_null)
                && m.get("planName").is_none_or(Value::is_null)
                && m["subscriptionStatus"] == "pending_onboarding"
            {
                m.insert("subscriptionStatus".into(), Value::Null);
            }
            if m.contains_key("completedOnboarding") {
                m.entry("lastSeenAt").or_insert(Value::Null);
            }
            for (_, child) in m.iter_mut() {
                if child.as_array().is_some_and(Vec::is_empty) {
                    *child = Value::Null;
                } else {
                    fill_nulls(child);
                }
            }
        }
        _ => {}
    }
}
