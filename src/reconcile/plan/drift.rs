//! Which spec fields a plan's writes would change: what managementPolicy Observe reports
//! as drift instead of correcting it.

use super::{Action, EXTERNAL_ID_KEY, OWNER_KEY, Plan};

/// The spec field one action would make true, or `None` for bookkeeping that is not a
/// difference from the spec (the adoption claim, Secret clean-up, rotation records).
pub fn field_of(action: &Action) -> Option<String> {
    Some(match action {
        Action::CreateOrg { .. } | Action::MigrateProjects { .. } => {
            "the org itself (none exists)".into()
        }
        Action::UpdateOrg { patch } => {
            let mut fields = Vec::new();
            if patch.name.is_some() {
                fields.push("spec.displayName".to_string());
            }
            if patch.billing_email.is_some() {
                fields.push("spec.billingEmail".to_string());
            }
            for key in patch.metadata.iter().flatten().map(|(k, _)| k) {
                match key.as_str() {
                    OWNER_KEY => {}
                    EXTERNAL_ID_KEY => fields.push("spec.externalId".into()),
                    other => fields.push(format!("spec.metadata.{other}")),
                }
            }
            if fields.is_empty() {
                return None;
            }
            fields.join(", ")
        }
        Action::Resume | Action::Suspend | Action::Archive => "spec.state".into(),
        Action::SetCreditConfig { .. } => "spec.credits (monthlyCap, autoRefill)".into(),
        Action::Allocate { credits, .. } => {
            format!("spec.credits.allocated ({credits} credits not yet moved)")
        }
        Action::MintKey { name, .. } => format!("spec.apiKeys[{name}] (no key)"),
        Action::RotateKey { name, .. } => format!("spec.apiKeys[{name}]"),
        Action::RevokeKey { name, .. } => format!("spec.apiKeys (key {name} is not in it)"),
        Action::CreateWebhook { name, .. } => format!("spec.webhooks[{name}] (no endpoint)"),
        Action::UpdateWebhook { name, .. } | Action::RotateWebhookSecret { name, .. } => {
            format!("spec.webhooks[{name}]")
        }
        Action::DeleteWebhook { name, .. } => {
            format!("spec.webhooks (endpoint {name} is not in it)")
        }
        Action::UpdateUser { email, .. } => format!("spec.gennia.users[{email}]"),
        Action::RemoveUser { email, .. } => {
            format!("spec.gennia.users (user {email} is not in it)")
        }
        Action::DeleteSecret { .. } | Action::MarkRotated { .. } => return None,
    })
}

/// Every field the plan would change, in plan order, each once.
pub fn drifted_fields(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for field in plan.actions.iter().filter_map(field_of) {
        if !out.contains(&field) {
            out.push(field);
        }
    }
    out
}
