//! A plan's actions as a reader sees them: one line each, with the numbers that matter.

use serde::Serialize;

use crate::provider::{KeyEnv, Org, OrgPatch};
use crate::reconcile::plan::{Action, OWNER_KEY};

/// One action, rendered.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Step {
    /// Machine name: create-org, claim-org, update-org, suspend, resume, archive,
    /// set-credit-config, allocate, mint-key, rotate-key, revoke-key, create-webhook,
    /// update-webhook, delete-webhook, rotate-webhook-secret, delete-secret; for the other
    /// kinds create-provider, update-provider, create-endpoint, update-endpoint, write-secret.
    pub op: &'static str,
    pub text: String,
    /// Credits moved into the org (allocate) or reclaimed by the parent (archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<i64>,
    /// allocate: the total it tops up to.
    #[serde(skip)]
    pub target: Option<i64>,
    /// allocate: a guardrail of the OrgProvider would hold it (nothing would be sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<super::money::Held>,
}

impl Step {
    pub fn new(op: &'static str, text: String) -> Step {
        Step {
            op,
            text,
            credits: None,
            target: None,
            held: None,
        }
    }

    /// `+` adds, `~` changes, `-` removes (as in a diff).
    pub fn sign(&self) -> char {
        match self.op {
            "create-org" | "migrate-projects" | "allocate" | "mint-key" | "create-webhook"
            | "create-provider" | "create-endpoint" | "write-secret" => '+',
            "archive" | "revoke-key" | "delete-webhook" | "delete-secret" | "remove-user" => '-',
            _ => '~',
        }
    }
}

fn env(e: KeyEnv) -> &'static str {
    match e {
        KeyEnv::Live => "live",
        KeyEnv::Test => "test",
    }
}

/// The steps of a plan against `org` (None: the plan creates it). Bookkeeping that only
/// touches the status (rotation records) is left out.
pub fn steps(actions: &[Action], org: Option<&Org>) -> Vec<Step> {
    let org_name = org.map_or("the new org".to_string(), |o| format!("org {}", o.id));
    actions
        .iter()
        .filter_map(|a| step(a, org, &org_name))
        .collect()
}

/// One action, rendered: dispatched to one short function per resource.
fn step(action: &Action, org: Option<&Org>, org_name: &str) -> Option<Step> {
    Some(match action {
        Action::CreateOrg { new, .. } => {
            let ext = new
                .metadata
                .get(crate::reconcile::plan::EXTERNAL_ID_KEY)
                .map(|e| format!(" with externalId {e:?}"))
                .unwrap_or_default();
            Step::new("create-org", format!("create org {:?}{ext}", new.name))
        }
        Action::MigrateProjects { projects, name, .. } => Step::new(
            "migrate-projects",
            format!(
                "create the org by migrating {} flat project(s) into a new child {name:?} ({}); renamed and tagged next",
                projects.len(),
                projects.join(", ")
            ),
        ),
        Action::UpdateOrg { patch } => update_org(patch, org, org_name),
        Action::Resume => Step::new("resume", format!("resume {org_name}")),
        Action::Suspend => Step::new(
            "suspend",
            format!("suspend {org_name} (its keys stop working until it is resumed)"),
        ),
        Action::Archive => archive(org, org_name),
        Action::SetCreditConfig { .. } | Action::Allocate { .. } => credits(action, org_name)?,
        Action::MintKey { .. } | Action::RotateKey { .. } | Action::RevokeKey { .. } => {
            key(action)?
        }
        Action::CreateWebhook { .. }
        | Action::UpdateWebhook { .. }
        | Action::DeleteWebhook { .. }
        | Action::RotateWebhookSecret { .. } => webhook(action)?,
        Action::UpdateUser {
            email, role, name, ..
        } => Step::new(
            "update-user",
            format!(
                "set user {email}'s role to {role}{}",
                name.as_deref()
                    .map(|n| format!(" and name to {n:?}"))
                    .unwrap_or_default()
            ),
        ),
        Action::RemoveUser { email, .. } => Step::new(
            "remove-user",
            format!("remove user {email} from {org_name}"),
        ),
        Action::DeleteSecret { name } => {
            Step::new("delete-secret", format!("delete Secret {name}"))
        }
        Action::MarkRotated { .. } => return None,
    })
}

/// An org PATCH: a claim (only the owner marker), the suspended-writes check (the org's
/// own name again), or the fields it changes.
fn update_org(patch: &OrgPatch, org: Option<&Org>, org_name: &str) -> Step {
    let only_claim = patch.name.is_none()
        && patch.billing_email.is_none()
        && patch
            .metadata
            .as_ref()
            .is_some_and(|m| m.keys().all(|k| k == OWNER_KEY));
    if only_claim {
        return Step::new(
            "claim-org",
            format!("claim {org_name} (write this object's owner marker)"),
        );
    }
    let same_name = patch.billing_email.is_none()
        && patch.metadata.is_none()
        && patch
            .name
            .as_deref()
            .is_some_and(|n| org.is_some_and(|o| o.name == n));
    if same_name {
        return Step::new(
            "check-suspended-writes",
            format!(
                "send {org_name}'s own name again (it is suspended: a provider that refuses changes to a suspended org says so before any keyed write)"
            ),
        );
    }
    let mut parts = Vec::new();
    if let Some(name) = &patch.name {
        let from = org.map(|o| o.name.as_str()).unwrap_or_default();
        parts.push(format!("name {from:?} -> {name:?}"));
    }
    if let Some(email) = &patch.billing_email {
        parts.push(format!(
            "billingEmail -> {}",
            email.as_deref().unwrap_or("(none)")
        ));
    }
    for (k, v) in patch.metadata.iter().flatten() {
        if k == OWNER_KEY {
            continue;
        }
        if v.is_empty() {
            parts.push(format!("metadata.{k} removed"));
        } else {
            parts.push(format!("metadata.{k} -> {v:?}"));
        }
    }
    Step::new(
        "update-org",
        format!("update {org_name}: {}", parts.join(", ")),
    )
}

fn archive(org: Option<&Org>, org_name: &str) -> Step {
    let balance = org.and_then(|o| o.summary.as_ref()).map(|s| s.balance);
    let mut s = Step::new(
        "archive",
        format!(
            "archive {org_name} (terminal: keys revoked{})",
            balance.map_or(String::new(), |b| format!(", {b} credits reclaimed"))
        ),
    );
    s.credits = balance;
    s
}

/// The allocation's actions: the credit config, a top-up.
fn credits(action: &Action, org_name: &str) -> Option<Step> {
    Some(match action {
        Action::SetCreditConfig { config } => {
            let cap = config
                .monthly_cap
                .map_or("no cap".to_string(), |c| format!("monthlyCap {c}"));
            let refill = config
                .refill
                .as_ref()
                .map_or("no autoRefill".to_string(), |r| {
                    format!("autoRefill {} when below {}", r.amount, r.threshold)
                });
            Step::new(
                "set-credit-config",
                format!("set {org_name}'s credit config: {cap}, {refill}"),
            )
        }
        Action::Allocate {
            credits,
            ledger,
            target,
            ..
        } => {
            let mut s = Step::new(
                "allocate",
                format!(
                    "move {credits} credits from the parent into {org_name} (allocated {ledger} -> {target})"
                ),
            );
            s.credits = i64::try_from(*credits).ok();
            s.target = Some(*target);
            s
        }
        _ => return None,
    })
}

/// The key's actions: mint, rotate, revoke.
fn key(action: &Action) -> Option<Step> {
    Some(match action {
        Action::MintKey {
            name,
            new,
            secret_name,
            ..
        } => Step::new(
            "mint-key",
            format!(
                "mint key {name} [{}] ({}) into Secret {secret_name}",
                new.scopes.join(", "),
                env(new.env)
            ),
        ),
        Action::RotateKey {
            name,
            key_id,
            secret_name,
            rotation,
            recover,
            ..
        } => {
            let why = if *recover {
                " (its Secret was lost; the old secret works through the grace window)".to_string()
            } else if let Some(r) = rotation {
                format!(" (rotate-keys {r:?})")
            } else {
                String::new()
            };
            Step::new(
                "rotate-key",
                format!("rotate key {name} ({key_id}) into Secret {secret_name}{why}"),
            )
        }
        Action::RevokeKey { name, key_id } => Step::new(
            "revoke-key",
            format!("revoke key {name} ({key_id}): it stops working at once"),
        ),
        _ => return None,
    })
}

/// The webhook's actions: create, update, delete, rotate its signing secret.
fn webhook(action: &Action) -> Option<Step> {
    Some(match action {
        Action::CreateWebhook { name, new, .. } => Step::new(
            "create-webhook",
            format!(
                "create webhook {name} -> {} [{}]",
                new.url,
                new.events.join(", ")
            ),
        ),
        Action::UpdateWebhook { name, id, patch } => {
            let mut parts = Vec::new();
            if let Some(url) = &patch.url {
                parts.push(format!("url -> {url}"));
            }
            if let Some(events) = &patch.events {
                parts.push(format!("events -> [{}]", events.join(", ")));
            }
            if patch.metadata.is_some() {
                parts.push("marker".to_string());
            }
            Step::new(
                "update-webhook",
                format!("update webhook {name} ({id}): {}", parts.join(", ")),
            )
        }
        Action::DeleteWebhook { name, id } => {
            Step::new("delete-webhook", format!("delete webhook {name} ({id})"))
        }
        Action::RotateWebhookSecret {
            name, secret_name, ..
        } => Step::new(
            "rotate-webhook-secret",
            format!("rotate webhook {name}'s signing secret into Secret {secret_name}"),
        ),
        _ => return None,
    })
}
