//! Credits: the child's credit config (cap, auto-refill) and top-up allocations.

use crate::api::CustomerOrg;
use crate::provider::Org;
use crate::reconcile::idempotency::derive;

use super::{Action, Observed, Plan, desired_allocated, desired_credit_config, uid};

pub(super) fn plan_credits(
    corg: &CustomerOrg,
    org: &Org,
    obs: &Observed,
    drift: bool,
    plan: &mut Plan,
) {
    if obs.capabilities.credit_config {
        plan_credit_config(corg, org, drift, plan);
    }
    if let Some(ledger) = obs.ledger {
        plan.notes.extend(obs.ledger_note.clone());
        plan_allocation(corg, org, ledger, plan);
    }
}

/// Absolute state, sent without an idempotency key (see `org::plan_fields`).
fn plan_credit_config(corg: &CustomerOrg, org: &Org, drift: bool, plan: &mut Plan) {
    let Some(summary) = &org.summary else {
        return;
    };
    let wanted = desired_credit_config(corg);
    if summary.credit_config == wanted {
        return;
    }
    if drift {
        plan.drift.push("credit config".into());
    }
    plan.actions
        .push(Action::SetCreditConfig { config: wanted });
}

/// Allocation is top-up only, keyed by (org, observed marked sum): a compare-and-swap on
/// the ledger. Any two writers that saw the same ledger send the same key, so at most one
/// transfer happens (a different amount gets IDEMPOTENCY_CONFLICT and re-reads). No uid:
/// a rebuilt cluster reaches the same key and the ledger decides. After a refusal (402
/// stored by the provider under that key) the attempt number, recorded in status, gives
/// the next try a new key; the refused key never moved money, so this cannot double.
pub fn allocation_key(org_id: &str, ledger: i64, attempt: u32) -> crate::provider::IdempotencyKey {
    if attempt == 0 {
        derive(&["allocate", org_id, &ledger.to_string()])
    } else {
        derive(&[
            "allocate",
            org_id,
            &ledger.to_string(),
            &attempt.to_string(),
        ])
    }
}

fn plan_allocation(corg: &CustomerOrg, org: &Org, ledger: i64, plan: &mut Plan) {
    let target = desired_allocated(corg);
    if ledger < target {
        let attempt = corg
            .status
            .as_ref()
            .and_then(|s| s.credits.as_ref())
            .and_then(|c| c.refused.as_ref())
            .filter(|r| r.ledger == ledger)
            .map_or(0, |r| r.attempts);
        // An org this plan creates has no id yet: its first top-up is keyed by the uid.
        let handle = if org.id == super::NEW_ORG {
            format!("new/{}", uid(corg))
        } else {
            org.id.clone()
        };
        plan.actions.push(Action::Allocate {
            credits: u64::try_from(target - ledger).unwrap_or(0),
            ledger,
            target,
            key: allocation_key(&handle, ledger, attempt),
        });
    } else if ledger > target {
        plan.notes.push(format!("spec.credits.allocated is {target} but {ledger} credits were already moved; allocation is top-up only, nothing is moved back"));
    }
}
