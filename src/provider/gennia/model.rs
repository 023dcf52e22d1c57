//! Gennia wire types (`/public/api/v1`, OpenAPI excerpt `gennia-openapi-clients.json`).
//! Responses are read leniently (unknown fields ignored, absent ones defaulted); request
//! bodies are sent exactly as the schema names them, because Gennia rejects unknown fields.

use serde::{Deserialize, Deserializer, Serialize};

/// `null` reads like an absent field: Gennia's schema has no nullable types, but a server
/// that writes every property (Jackson without `NON_NULL`) sends `null` for what is unset
/// (issue 28, row 6).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `PublicClientDTO`: one client workspace of the hub.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub public_id: String,
    pub workspace_name: String,
    /// `active`, `past_due`, `canceled`, `trialing`, `pending_onboarding`, `suspended`
    /// (kept as a string so a new value is reported, not a decode failure; empty when the
    /// API sends `null`); see [`Client::state`].
    #[serde(default, deserialize_with = "nullable")]
    pub subscription_status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub plan: Option<PlanRef>,
    #[serde(default)]
    pub pending_plan: Option<PendingPlanRef>,
    #[serde(default)]
    pub current_period_start: Option<String>,
    #[serde(default)]
    pub current_period_end: Option<String>,
    #[serde(default)]
    pub next_credit_renewal_at: Option<String>,
    #[serde(default)]
    pub credits_balance: Option<f64>,
    #[serde(default)]
    pub extra_credits_balance: Option<f64>,
    #[serde(default)]
    pub credits_used_this_period: Option<f64>,
    #[serde(default)]
    pub unlimited_credits: Option<bool>,
    #[serde(default)]
    pub seats_limit: Option<i32>,
    #[serde(default)]
    pub users_count: Option<i32>,
    #[serde(default, deserialize_with = "nullable")]
    pub users: Vec<UserRef>,
    #[serde(default, deserialize_with = "nullable")]
    pub pending_invitations: Vec<PendingInvitation>,
}

/// `PublicClientListItemDTO`: the slimmer list row.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientListItem {
    pub public_id: String,
    pub workspace_name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub subscription_status: String,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub plan_name: Option<String>,
    #[serde(default)]
    pub price_cents: Option<i64>,
    #[serde(default)]
    pub total_cost_cents: Option<i64>,
    #[serde(default)]
    pub credits_balance: Option<f64>,
    #[serde(default)]
    pub extra_credits_balance: Option<f64>,
    #[serde(default)]
    pub credits_limit: Option<i32>,
    #[serde(default)]
    pub unlimited_credits: Option<bool>,
    #[serde(default)]
    pub seats_limit: Option<i32>,
    #[serde(default)]
    pub users_count: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanRef {
    pub public_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub price_cents: Option<i32>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub billing_interval_months: Option<i32>,
    #[serde(default)]
    pub billing_type: Option<String>,
    #[serde(default)]
    pub credits_included: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPlanRef {
    pub public_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub effective_at: Option<String>,
}

/// `UserRef`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    pub public_id: String,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub completed_onboarding: Option<bool>,
    #[serde(default)]
    pub last_seen_at: Option<String>,
}

/// `PublicPendingInvitationDTO`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingInvitation {
    pub public_id: String,
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub is_expired: Option<bool>,
}

/// `PublicPaginatedDTOPublicClientListItemDTO`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientPage {
    #[serde(default, deserialize_with = "nullable")]
    pub items: Vec<ClientListItem>,
    #[serde(default, deserialize_with = "nullable")]
    pub page: u32,
    #[serde(default, deserialize_with = "nullable")]
    pub total_pages: u32,
    #[serde(default, deserialize_with = "nullable")]
    pub total: u64,
}

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub workspace_public_id: Option<String>,
    #[serde(default)]
    pub api_key_public_id: Option<String>,
}

/// A role inside a client workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
    Editor,
    Viewer,
}

/// `ClientUser` in a create request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewUser {
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub role: Role,
}

/// `CreatePublicClientRequest`. Absent options are left out (Gennia's types are not nullable).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewClient {
    pub workspace_name: String,
    pub users: Vec<NewUser>,
    /// `spec.gennia.planId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_public_id: Option<String>,
    /// `spec.gennia.trial`: the hub's trial plan (then `plan_public_id` is ignored).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invite_to_trial: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub send_invitations: bool,
    /// `spec.gennia.initialCredits`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits_override: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_end_override: Option<String>,
}

impl NewClient {
    pub fn new(workspace_name: impl Into<String>, users: Vec<NewUser>) -> NewClient {
        NewClient {
            workspace_name: workspace_name.into(),
            users,
            plan_public_id: None,
            invite_to_trial: false,
            send_invitations: false,
            credits_override: None,
            period_end_override: None,
        }
    }
}

/// `SuspendPublicClientRequest.cancellationReason`: the CRD's enum is the wire enum.
pub use crate::api::GenniaCancellation as CancellationReason;

/// `SuspendPublicClientRequest`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspension {
    /// Free text, at most 500 characters (`spec.suspendReason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<CancellationReason>,
}

/// `UpdatePublicClientUserRequest`: `role` is required, `name` optional.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserPatch {
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Filters of `GET /clients`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ListFilter {
    /// One `subscriptionStatus` value.
    pub status: Option<String>,
    /// Substring of workspace name, user name or email (case-insensitive).
    pub q: Option<String>,
}

/// The error body. Gennia does not document it; the simulator sends `{code, message}`
/// (README "assumed" #1). A nested `{error: {...}}` is read too, and Spring Boot's default
/// `{timestamp, status, error: "Bad Request", message, path}` (no code at all).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// A nested body, or Spring's reason phrase (a string, ignored).
    #[serde(default)]
    pub error: Option<serde_json::Value>,
    #[serde(default)]
    pub request_id: Option<String>,
}

impl ErrorBody {
    /// The nested `{error: {...}}` body, when there is one.
    pub(crate) fn nested(&self) -> Option<ErrorBody> {
        self.error
            .as_ref()
            .filter(|e| e.is_object())
            .and_then(|e| serde_json::from_value(e.clone()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn create_body_leaves_out_what_is_not_set() {
        let mut n = NewClient::new(
            "Acme",
            vec![NewUser {
                email: "a@acme.test".into(),
                name: None,
                role: Role::Admin,
            }],
        );
        assert_eq!(
            serde_json::to_value(&n).unwrap(),
            json!({"workspaceName": "Acme", "users": [{"email": "a@acme.test", "role": "admin"}]})
        );
        n.invite_to_trial = true;
        n.send_invitations = true;
        n.credits_override = Some(5000);
        n.plan_public_id = Some("p".into());
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["inviteToTrial"], true);
        assert_eq!(v["sendInvitations"], true);
        assert_eq!(v["creditsOverride"], 5000);
        assert_eq!(v["planPublicId"], "p");
    }

    #[test]
    fn suspension_uses_the_schema_enum() {
        let s = Suspension {
            reason: Some("unpaid".into()),
            cancellation_reason: Some(CancellationReason::PaymentFailed),
        };
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"reason": "unpaid", "cancellationReason": "payment_failed"})
        );
        assert_eq!(
            serde_json::to_value(Suspension::default()).unwrap(),
            json!({})
        );
    }
}
