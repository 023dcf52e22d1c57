//! A typed client for Gennia's public Clients API (`/public/api/v1`, reference
//! `other-providers.md` §2): one hub workspace key sent as `X-Api-Key`, page-numbered
//! lists, state errors as `400`, and **no idempotency at all** — so a create is made safe by
//! the workspace name (unique per hub): [`GenniaClient::ensure_client`].
//!
//! The HTTP plumbing that is not Layers-specific is shared with the Layers client: the retry
//! policy ([`RetryPolicy`](crate::provider::layers::retry::RetryPolicy)), the metrics, body
//! decoding, transport-error and `Retry-After` parsing.

mod client;
pub mod model;
mod provider;

use std::fmt;
use std::time::Duration;

pub use client::{Ensured, GenniaClient};
pub use model::*;
pub use provider::{CAPABILITIES, GenniaProvider, org_of};

use crate::provider::error::ProviderError;
use crate::provider::metrics::ProviderMetrics;
use crate::provider::types::Secret;

/// How to reach one Gennia hub with its workspace key.
#[derive(Clone)]
pub struct GenniaConfig {
    /// The server, e.g. `https://api.gennia.ai`; the client adds `/public/api/v1`.
    pub base_url: String,
    /// The hub's workspace key (`gsk_…`), sent as `X-Api-Key`.
    pub api_key: Secret,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Requests in flight at once through this client (rate limits are undocumented).
    pub max_concurrency: usize,
    /// Attempts per retry-safe request, the first included.
    pub max_attempts: u32,
    /// Retries stop when the next one would start later than this after the first attempt.
    pub max_retry_time: Duration,
    /// First backoff ceiling; doubles per attempt up to `retry_max_delay` (full jitter).
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    pub metrics: Option<ProviderMetrics>,
    /// The replica's leader fence: every attempt of a write is checked and stamped right
    /// before it is sent (`crate::fence::stamp`); `None` outside the operator.
    pub fence: Option<crate::fence::Fence>,
}

impl GenniaConfig {
    pub fn new(base_url: impl Into<String>, api_key: Secret) -> GenniaConfig {
        GenniaConfig {
            base_url: base_url.into(),
            api_key,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_concurrency: 4,
            max_attempts: 5,
            max_retry_time: Duration::from_secs(60),
            retry_base_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(10),
            metrics: None,
            fence: None,
        }
    }
}

impl fmt::Debug for GenniaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenniaConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_attempts", &self.max_attempts)
            .field("max_retry_time", &self.max_retry_time)
            .finish_non_exhaustive()
    }
}

/// What a `subscriptionStatus` means to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// `active`, `trialing` or `past_due`: usable. `billing_note` says why it is not plain
    /// `active` (for the object's status), `None` when it is.
    Active {
        billing_note: Option<String>,
    },
    /// `pending_onboarding`: created without a plan; not suspendable until it has one.
    PendingOnboarding,
    Suspended,
    /// `canceled`: nothing brings it back through the API.
    Terminal,
    /// A value the excerpt does not list.
    Unknown(String),
}

impl ClientState {
    pub fn from_status(status: &str) -> ClientState {
        match status {
            "active" => ClientState::Active { billing_note: None },
            "trialing" => ClientState::Active {
                billing_note: Some("trialing: on the hub's trial plan".into()),
            },
            "past_due" => ClientState::Active {
                billing_note: Some("past_due: the last payment failed".into()),
            },
            "pending_onboarding" => ClientState::PendingOnboarding,
            "suspended" => ClientState::Suspended,
            "canceled" => ClientState::Terminal,
            other => ClientState::Unknown(other.to_string()),
        }
    }

    pub fn is_active(&self) -> bool {
        matches!(self, ClientState::Active { .. })
    }
}

impl Client {
    pub fn state(&self) -> ClientState {
        ClientState::from_status(&self.subscription_status)
    }
}

impl ClientListItem {
    pub fn state(&self) -> ClientState {
        ClientState::from_status(&self.subscription_status)
    }
}

/// What a Gennia refusal was about. Gennia's codes are not documented: the simulator's
/// (README "assumed" #1) are read first, then the documented messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenniaErrorKind {
    /// 400 "duplicate workspace name": the name is taken in this hub (adopt it).
    NameTaken,
    /// 400 "Client is not in a state that can be suspended".
    NotSuspendable,
    /// 400 "Client is not suspended".
    NotSuspended,
    /// 400: the last admin can be neither demoted nor removed.
    LastAdmin,
    /// 400 "plan not in this hub".
    PlanNotFound,
    /// 400: `inviteToTrial` without a trial plan in the hub.
    TrialNotEnabled,
    /// 400 `VALIDATION_ERROR` (or another 400 not listed here).
    Validation,
    ClientNotFound,
    UserNotFound,
    InvitationNotFound,
}

/// The Gennia meaning of `err`, from the API code kept in [`ApiFailure::code`](crate::provider::error::ApiFailure);
/// a generic code (`VALIDATION_ERROR`, or none) is read from the documented messages.
pub fn error_kind(err: &ProviderError) -> Option<GenniaErrorKind> {
    let f = err.api_failure()?;
    let code = match f.code.as_str() {
        "VALIDATION_ERROR" | "HTTP_400" => {
            code_from_message(f.status, &f.message).unwrap_or(f.code.as_str())
        }
        c => c,
    };
    let kind = match code {
        "WORKSPACE_NAME_TAKEN" => GenniaErrorKind::NameTaken,
        "CLIENT_NOT_SUSPENDABLE" => GenniaErrorKind::NotSuspendable,
        "CLIENT_NOT_SUSPENDED" => GenniaErrorKind::NotSuspended,
        "LAST_ADMIN" => GenniaErrorKind::LastAdmin,
        "PLAN_NOT_FOUND" => GenniaErrorKind::PlanNotFound,
        "TRIAL_NOT_ENABLED" => GenniaErrorKind::TrialNotEnabled,
        "VALIDATION_ERROR" => GenniaErrorKind::Validation,
        "CLIENT_NOT_FOUND" => GenniaErrorKind::ClientNotFound,
        "USER_NOT_FOUND" => GenniaErrorKind::UserNotFound,
        "INVITATION_NOT_FOUND" => GenniaErrorKind::InvitationNotFound,
        _ if f.status == 400 => return Some(GenniaErrorKind::Validation),
        _ => return None,
    };
    Some(kind)
}

/// An API code for a refusal whose body carried none, from the documented messages.
pub(crate) fn code_from_message(status: u16, message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    match status {
        400 if m.contains("duplicate") || (m.contains("name") && m.contains("already")) => {
            Some("WORKSPACE_NAME_TAKEN")
        }
        400 if m.contains("can be suspended") => Some("CLIENT_NOT_SUSPENDABLE"),
        400 if m.contains("not suspended") => Some("CLIENT_NOT_SUSPENDED"),
        400 if m.contains("last admin") => Some("LAST_ADMIN"),
        400 if m.contains("plan") && m.contains("not") => Some("PLAN_NOT_FOUND"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::error::ApiFailure;

    #[test]
    fn statuses_map_to_states() {
        assert_eq!(
            ClientState::from_status("active"),
            ClientState::Active { billing_note: None }
        );
        for s in ["trialing", "past_due"] {
            match ClientState::from_status(s) {
                ClientState::Active {
                    billing_note: Some(note),
                } => assert!(note.starts_with(s)),
                other => panic!("{s}: {other:?}"),
            }
        }
        assert_eq!(
            ClientState::from_status("suspended"),
            ClientState::Suspended
        );
        assert_eq!(ClientState::from_status("canceled"), ClientState::Terminal);
        assert_eq!(
            ClientState::from_status("pending_onboarding"),
            ClientState::PendingOnboarding
        );
        assert_eq!(
            ClientState::from_status("frozen"),
            ClientState::Unknown("frozen".into())
        );
    }

    #[test]
    fn documented_messages_give_a_code() {
        assert_eq!(
            code_from_message(400, "Duplicate workspace name"),
            Some("WORKSPACE_NAME_TAKEN")
        );
        assert_eq!(
            code_from_message(400, "Client is not in a state that can be suspended"),
            Some("CLIENT_NOT_SUSPENDABLE")
        );
        assert_eq!(
            code_from_message(400, "Client is not suspended"),
            Some("CLIENT_NOT_SUSPENDED")
        );
        assert_eq!(
            code_from_message(400, "Cannot remove last admin"),
            Some("LAST_ADMIN")
        );
        assert_eq!(code_from_message(400, "users: required"), None);
        assert_eq!(code_from_message(500, "duplicate"), None);
    }

    #[test]
    fn kinds_come_from_the_api_code() {
        let err = |status, code: &str| {
            ProviderError::Conflict(ApiFailure {
                status,
                code: code.into(),
                message: String::new(),
                request_id: None,
                retry_after: None,
            })
        };
        assert_eq!(
            error_kind(&err(400, "WORKSPACE_NAME_TAKEN")),
            Some(GenniaErrorKind::NameTaken)
        );
        assert_eq!(
            error_kind(&err(400, "HTTP_400")),
            Some(GenniaErrorKind::Validation)
        );
        assert_eq!(error_kind(&err(500, "INTERNAL_ERROR")), None);
        assert_eq!(error_kind(&ProviderError::Timeout), None);
    }

    #[test]
    fn config_debug_redacts_the_key() {
        let cfg = GenniaConfig::new("http://127.0.0.1:1", Secret::new("gsk_supersecret"));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
    }
}
