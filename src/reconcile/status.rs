//! Status shown to humans; deterministic so a converged object writes nothing.

use crate::api::conditions::{self, Cond, READY, RECONCILING, STALLED};
use crate::api::{ApiKeyStatus, CreditsStatus, CustomerOrg, CustomerOrgStatus, WebhookStatus};
use crate::provider::{KeyStatus, Org, OrgStatus};

use super::plan::{self, Observed, SecretSeen, WEBHOOK_MARKER};

/// How this reconcile ended, for the conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing left to do.
    Converged { notes: Vec<String> },
    /// Writes happened; the next pass verifies.
    Progressing { message: String },
    /// Writes restored out-of-band changes at a generation that was Ready; the next pass
    /// verifies (and still calls what differs drift).
    CorrectingDrift { message: String },
    /// A human must act (reason, message).
    Stalled { reason: String, message: String },
    /// Temporary provider trouble.
    Transient { message: String },
    /// Work pending that must wait (a rate limit window, a busy resource): no human needed.
    Waiting { reason: String, message: String },
    /// managementPolicy Observe: the org differs from the spec and is left as it is.
    Drifted { message: String },
}

pub fn org_state(status: OrgStatus) -> &'static str {
    match status {
        OrgStatus::Active => "active",
        OrgStatus::Suspended => "suspended",
        OrgStatus::Archived => "archived",
    }
}

/// The org's id, state and (when read with its summary) credits, as status shows them;
/// `ledger` is the marked allocations' sum when the ledger was read.
pub fn record_org(status: &mut CustomerOrgStatus, org: &Org, ledger: Option<i64>) {
    status.org_id = Some(org.id.clone());
    status.state = Some(org_state(org.status).to_string());
    if let Some(summary) = &org.summary {
        let allocated = ledger
            .or(status.credits.as_ref().map(|c| c.allocated))
            .unwrap_or(0);
        // A refusal recorded at this ledger sum still counts; a moved ledger ends it.
        let refused = status
            .credits
            .as_ref()
            .and_then(|c| c.refused.clone())
            .filter(|r| r.ledger == allocated);
        status.credits = Some(CreditsStatus {
            allocated,
            balance: summary.balance,
            available: summary.available,
            refused,
        });
    }
}

/// Status facts from an observation, before any action ran. Lists that were not read keep
/// what the previous status recorded.
pub fn observed(corg: &CustomerOrg, org: Option<&Org>, obs: &Observed) -> CustomerOrgStatus {
    let mut status = corg.status.clone().unwrap_or_default();
    if let Some(org) = org {
        record_org(&mut status, org, obs.ledger);
    }
    let secret_id = |name: &str| match obs.secrets.get(name) {
        Some(SecretSeen::Owned { id, .. }) => id.clone(),
        _ => None,
    };
    if let Some(keys) = &obs.keys {
        status.api_keys = corg
            .spec
            .api_keys
            .iter()
            .filter_map(|spec| {
                let secret_name = plan::key_secret_name(corg, spec);
                let id = secret_id(&secret_name)?;
                let key = keys.iter().find(|k| {
                    k.id == id && k.status == KeyStatus::Active && k.superseded_by.is_none()
                })?;
                let mut scopes = key.scopes.clone();
                scopes.sort();
                scopes.dedup();
                let mut wanted = spec.scopes.clone();
                wanted.sort();
                wanted.dedup();
                let matches = scopes == wanted
                    && format!("{:?}", key.env).eq_ignore_ascii_case(spec.env_str());
                Some(ApiKeyStatus {
                    name: spec.name.clone(),
                    id: key.id.clone(),
                    prefix: key.prefix.clone(),
                    secret_name,
                    spec_hash: if matches {
                        plan::key_hash(corg, spec)
                    } else {
                        String::new()
                    },
                })
            })
            .collect();
    }
    if let Some(hooks) = &obs.webhooks {
        status.webhooks = corg
            .spec
            .webhooks
            .iter()
            .filter_map(|spec| {
                let secret_name = plan::webhook_secret_name(corg, spec);
                let id = secret_id(&secret_name)?;
                let hook = hooks
                    .iter()
                    .find(|h| h.id == id && h.metadata.get(WEBHOOK_MARKER) == Some(&spec.name))?;
                let mut events = hook.events.clone();
                events.sort();
                events.dedup();
                let mut wanted = spec.events.clone();
                wanted.sort();
                wanted.dedup();
                let matches = hook.url == spec.url && events == wanted;
                Some(WebhookStatus {
                    name: spec.name.clone(),
                    id: hook.id.clone(),
                    secret_name,
                    spec_hash: if matches {
                        plan::webhook_hash(corg, spec)
                    } else {
                        String::new()
                    },
                })
            })
            .collect();
    }
    status
}

/// After a pass that stopped part-way, the next pass lists keys and webhooks again
/// instead of trusting this status: a replaced key whose revoke failed, or an endpoint
/// whose delete failed, is only visible in the provider's lists.
pub fn unverified(status: &mut CustomerOrgStatus) {
    status.api_keys.iter_mut().for_each(|k| k.spec_hash.clear());
    status.webhooks.iter_mut().for_each(|w| w.spec_hash.clear());
}

/// Puts the conditions for `verdict` on `status` (lastTransitionTime kept unless flipped).
pub fn finish(
    corg: &CustomerOrg,
    mut status: CustomerOrgStatus,
    verdict: &Verdict,
) -> CustomerOrgStatus {
    let generation = corg.metadata.generation;
    status.observed_generation = generation;
    let wanted = match verdict {
        Verdict::Converged { notes } => {
            let mut message = match &status.org_id {
                Some(id) => format!("org {id} matches the spec"),
                None => "nothing to manage".to_string(),
            };
            for note in notes {
                message.push_str("; ");
                message.push_str(note);
            }
            [
                Cond::new(READY, true, "Reconciled", message),
                Cond::new(RECONCILING, false, "Reconciled", "no work pending"),
                Cond::new(STALLED, false, "Reconciled", "no human action needed"),
            ]
        }
        Verdict::Progressing { message } => [
            Cond::new(READY, false, "Progressing", message.clone()),
            Cond::new(RECONCILING, true, "Progressing", message.clone()),
            Cond::new(STALLED, false, "Progressing", "no human action needed"),
        ],
        Verdict::CorrectingDrift { message } => [
            Cond::new(READY, false, plan::REASON_CORRECTING_DRIFT, message.clone()),
            Cond::new(
                RECONCILING,
                true,
                plan::REASON_CORRECTING_DRIFT,
                message.clone(),
            ),
            Cond::new(
                STALLED,
                false,
                plan::REASON_CORRECTING_DRIFT,
                "no human action needed",
            ),
        ],
        Verdict::Stalled { reason, message } => [
            Cond::new(READY, false, reason, message.clone()),
            Cond::new(
                RECONCILING,
                false,
                reason,
                "waiting for a human: see Stalled",
            ),
            Cond::new(STALLED, true, reason, message.clone()),
        ],
        Verdict::Transient { message } => [
            Cond::new(READY, false, "ProviderUnavailable", message.clone()),
            Cond::new(RECONCILING, true, "Retrying", message.clone()),
            Cond::new(STALLED, false, "Retrying", "no human action needed yet"),
        ],
        Verdict::Drifted { message } => [
            Cond::new(READY, false, plan::REASON_DRIFTED, message.clone()),
            Cond::new(
                RECONCILING,
                false,
                "Observing",
                "managementPolicy Observe: nothing is written",
            ),
            Cond::new(
                STALLED,
                false,
                "Observing",
                "set managementPolicy: Full to converge",
            ),
        ],
        Verdict::Waiting { reason, message } => [
            Cond::new(READY, false, reason, message.clone()),
            Cond::new(RECONCILING, true, reason, message.clone()),
            Cond::new(STALLED, false, reason, "no human action needed yet"),
        ],
    };
    let wanted: Vec<Cond> = wanted
        .into_iter()
        .map(|c| c.generation(generation))
        .collect();
    status.conditions = conditions::settle(&status.conditions, &wanted, &conditions::now());
    status
}

/// Paused: Reconciling=False reason Paused; Ready and Stalled stay as they were.
pub fn paused(corg: &CustomerOrg) -> CustomerOrgStatus {
    let mut status = corg.status.clone().unwrap_or_default();
    let message = format!(
        "{} is \"true\": no API calls are made",
        crate::api::PAUSED_ANNOTATION
    );
    let mut wanted = Vec::new();
    for type_ in [READY, RECONCILING, STALLED] {
        let cond = if type_ == RECONCILING {
            Cond::new(RECONCILING, false, "Paused", message.clone())
                .generation(corg.metadata.generation)
        } else if let Some(old) = conditions::find(&status.conditions, type_) {
            Cond {
                type_,
                status: old.status == "True",
                reason: old.reason.clone(),
                message: old.message.clone(),
                observed_generation: old.observed_generation,
            }
        } else {
            Cond::new(type_, false, "Paused", message.clone()).generation(corg.metadata.generation)
        };
        wanted.push(cond);
    }
    status.conditions = conditions::settle(&status.conditions, &wanted, &conditions::now());
    status
}

/// The status while the provider is not checked yet or briefly unreachable: work is
/// pending, no human is needed.
pub fn provider_pending(corg: &CustomerOrg, message: &str) -> CustomerOrgStatus {
    let status = corg.status.clone().unwrap_or_default();
    finish(
        corg,
        status,
        &Verdict::Transient {
            message: message.to_string(),
        },
    )
}

/// The status to show when the provider is missing or not Ready: keeps what was observed,
/// says why nothing happens. `Stalled` because a human must fix the OrgProvider.
pub fn unavailable(corg: &CustomerOrg, reason: &str, message: &str) -> CustomerOrgStatus {
    let status = corg.status.clone().unwrap_or_default();
    finish(
        corg,
        status,
        &Verdict::Stalled {
            reason: reason.to_string(),
            message: message.to_string(),
        },
    )
}
