//! `impl Provider for GenniaProvider`: Gennia's client workspaces as orgs. What Gennia
//! lacks (metadata, keys, webhooks, a ledger, archive, renames) is declared in
//! [`Capabilities`], so the controller never asks for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    CancellationReason, Client, ClientListItem, ClientState, GenniaClient, ListFilter, NewClient,
    NewUser, Role, Suspension, UserPatch,
};
use crate::provider::error::ProviderError;
use crate::provider::types::*;
use crate::provider::{Owned, Provider, ProviderResult};

/// What Gennia can do: no metadata, renames, archive, keys, webhooks or ledger; found by
/// its (unique) workspace name; users.
pub const CAPABILITIES: Capabilities = Capabilities {
    migrate_projects: false,
    org_metadata: false,
    org_update: false,
    billing_email: false,
    archive: false,
    find_by_name: true,
    users: true,
    find_by_external_id: false,
    credit_config: false,
    allocation_ledger: false,
    child_api_keys: false,
    key_rotation: false,
    webhooks: false,
    suspend: true,
};

/// One Gennia hub behind its workspace key.
pub struct GenniaProvider {
    client: Arc<GenniaClient>,
}

impl GenniaProvider {
    pub fn new(client: GenniaClient) -> GenniaProvider {
        GenniaProvider {
            client: Arc::new(client),
        }
    }
}

fn not_here(what: &str) -> ProviderError {
    ProviderError::Invalid(format!(
        "Gennia has no {what}; the capabilities should have prevented this call"
    ))
}

fn role(r: &str) -> ProviderResult<Role> {
    match r {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        "editor" => Ok(Role::Editor),
        "viewer" => Ok(Role::Viewer),
        other => Err(ProviderError::Invalid(format!(
            "role {other:?} is not one of admin, member, editor, viewer"
        ))),
    }
}

fn cancellation(v: &str) -> ProviderResult<CancellationReason> {
    serde_json::from_value(serde_json::Value::String(v.to_string())).map_err(|_| {
        ProviderError::Invalid(format!("cancellationReason {v:?} is not one of Gennia's"))
    })
}

/// The org state a `subscriptionStatus` means, what is worth saying about it, and why a
/// suspend must wait (Gennia suspends "only from active": any other live state is waited out).
fn status_of(subscription_status: &str) -> (OrgStatus, Option<String>, Option<String>) {
    let state = ClientState::from_status(subscription_status);
    let suspend_blocked = match &state {
        ClientState::Active { billing_note: None } | ClientState::Suspended => None,
        ClientState::PendingOnboarding => Some(
            "Gennia suspends only an active workspace, and this one is pending_onboarding (none of its users has finished onboarding, or it has no plan yet); orgops suspends it once it is active".to_string(),
        ),
        ClientState::Active { .. } | ClientState::Terminal | ClientState::Unknown(_) => {
            Some(format!(
                "Gennia suspends only an active workspace, and this one is {subscription_status:?}; orgops suspends it once it is active"
            ))
        }
    };
    let (status, billing_note) = match state {
        ClientState::Active { billing_note } => (OrgStatus::Active, billing_note),
        ClientState::PendingOnboarding => (
            OrgStatus::Active,
            Some("pending_onboarding: no user has finished onboarding, or no plan yet".into()),
        ),
        ClientState::Suspended => (OrgStatus::Suspended, None),
        ClientState::Terminal => (OrgStatus::Archived, Some("canceled".into())),
        ClientState::Unknown(s) if s.is_empty() => (
            OrgStatus::Active,
            Some("no subscription status (the API sent none)".into()),
        ),
        ClientState::Unknown(s) => (
            OrgStatus::Active,
            Some(format!("subscription status {s:?} is not documented")),
        ),
    };
    (status, billing_note, suspend_blocked)
}

/// A workspace as an org, before its users and summary: no metadata, no billing email.
fn bare_org(id: String, workspace_name: String, subscription_status: &str) -> Org {
    let (status, billing_note, suspend_blocked) = status_of(subscription_status);
    Org {
        id,
        name: workspace_name,
        status,
        metadata: BTreeMap::new(),
        billing_email: None,
        summary: None,
        users: Vec::new(),
        billing_note,
        suspend_blocked,
    }
}

/// A row of the clients list as an org: no users and no summary (read the client for them).
fn org_of_row(c: ClientListItem) -> Org {
    bare_org(c.public_id, c.workspace_name, &c.subscription_status)
}

/// A client as an org: the workspace name is its name, users and pending invitations its
/// users, the credit balance its (read-only) balance.
pub fn org_of(c: Client) -> Org {
    let mut org = bare_org(c.public_id, c.workspace_name, &c.subscription_status);
    org.users = c
        .users
        .into_iter()
        .map(|u| OrgUser {
            id: Some(u.public_id),
            email: u.email,
            name: u.name,
            role: u.role.unwrap_or_default(),
        })
        .collect();
    org.users
        .extend(c.pending_invitations.into_iter().map(|i| OrgUser {
            id: None,
            email: i.email,
            name: i.name,
            role: i.role.unwrap_or_default(),
        }));
    let balance = c.credits_balance.unwrap_or(0.0) + c.extra_credits_balance.unwrap_or(0.0);
    // Whole credits: Gennia reports a float; status shows an integer balance.
    let balance = balance.floor() as i64;
    org.summary = Some(OrgSummary {
        balance,
        available: balance,
        credit_config: CreditConfig::default(),
    });
    org
}

#[async_trait]
impl Provider for GenniaProvider {
    fn vendor(&self) -> &'static str {
        "Gennia"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    /// `GET /health`: the key works and names its hub.
    async fn whoami(&self) -> ProviderResult<Identity> {
        let h = self.client.health().await?;
        Ok(Identity {
            organization_id: h.workspace_public_id.clone().unwrap_or_default(),
            organization_name: String::new(),
            parent_organization_id: None,
            scopes: Vec::new(),
            rate_limit_tier: "undocumented".into(),
            api_key_id: h.api_key_public_id.unwrap_or_default(),
        })
    }

    async fn get_org(&self, org_id: &str) -> ProviderResult<Option<Org>> {
        Ok(self.client.get_client(org_id).await?.map(org_of))
    }

    async fn find_orgs_by_external_id(&self, _: &str) -> ProviderResult<Vec<Org>> {
        Err(not_here("metadata to hold an externalId"))
    }

    /// Gennia keeps no metadata: nothing carries an owner marker.
    async fn find_orgs_by_owner(&self, _: &str) -> ProviderResult<Vec<Org>> {
        Ok(Vec::new())
    }

    async fn find_orgs_by_metadata(&self, _: &str, _: &str) -> ProviderResult<Vec<Org>> {
        Ok(Vec::new())
    }

    /// Every client of the hub (all pages); canceled ones are not live.
    async fn list_orgs(&self) -> ProviderResult<Vec<Org>> {
        let all = self.client.list_clients(&ListFilter::default()).await?;
        Ok(all
            .into_iter()
            .map(org_of_row)
            .filter(|o| o.status != OrgStatus::Archived)
            .collect())
    }

    /// The workspace name is unique per hub: the client of that name, live or suspended.
    async fn find_orgs_by_name(&self, name: &str) -> ProviderResult<Vec<Org>> {
        let found = self.client.find_client_by_name(name).await?;
        Ok(found
            .map(org_of)
            .into_iter()
            .filter(|o| o.status != OrgStatus::Archived)
            .collect())
    }

    /// No idempotency at Gennia: [`GenniaClient::ensure_client`] looks the name up before
    /// the create and after any ambiguous failure, and adopts on "duplicate name".
    async fn create_org(&self, new: &NewOrg, _: &IdempotencyKey) -> ProviderResult<Org> {
        let x = &new.extras;
        let mut users = Vec::new();
        for u in &x.users {
            users.push(NewUser {
                email: u.email.clone(),
                name: u.name.clone(),
                role: role(&u.role)?,
            });
        }
        let mut body = NewClient::new(new.name.clone(), users);
        body.plan_public_id = x.plan_id.clone();
        body.invite_to_trial = x.trial;
        body.send_invitations = x.send_invitations;
        body.credits_override = match x.initial_credits {
            Some(c) => Some(i32::try_from(c).map_err(|_| {
                ProviderError::Invalid(format!(
                    "spec.gennia.initialCredits {c} is out of Gennia's range"
                ))
            })?),
            None => None,
        };
        let (client, _) = self.client.ensure_client(&body).await?;
        Ok(org_of(client))
    }

    async fn update_org(&self, _: &str, _: &OrgPatch) -> ProviderResult<Org> {
        Err(not_here("workspace rename or metadata"))
    }

    async fn suspend_org(&self, org: &Owned) -> ProviderResult<Org> {
        self.suspend_org_with(org, &SuspendReason::default()).await
    }

    async fn suspend_org_with(&self, org: &Owned, why: &SuspendReason) -> ProviderResult<Org> {
        let org_id = org.org_id();
        let suspension = Suspension {
            reason: why.reason.clone(),
            cancellation_reason: why.cancellation.as_deref().map(cancellation).transpose()?,
        };
        Ok(org_of(
            self.client.suspend_client(org_id, &suspension).await?,
        ))
    }

    async fn resume_org(&self, org_id: &str) -> ProviderResult<Org> {
        Ok(org_of(self.client.reactivate_client(org_id).await?))
    }

    async fn update_user(
        &self,
        org_id: &str,
        user_id: &str,
        name: Option<&str>,
        r: &str,
    ) -> ProviderResult<Org> {
        let patch = UserPatch {
            role: role(r)?,
            name: name.map(str::to_string),
        };
        Ok(org_of(
            self.client.patch_user(org_id, user_id, &patch).await?,
        ))
    }

    async fn remove_user(&self, org: &Owned, user_id: &str) -> ProviderResult<Org> {
        Ok(org_of(
            self.client.delete_user(org.org_id(), user_id).await?,
        ))
    }
}
