//! The allocation's verbs: the org's credit config (cap, auto-refill) and a top-up.

use crate::api::CreditsStatus;
use crate::provider::{CreditConfig, IdempotencyKey};
use crate::reconcile::plan::allocation_metadata;

use super::{Step, StepError, no_effect};

pub(super) async fn set_config(s: &mut Step<'_>, config: &CreditConfig) -> Result<(), StepError> {
    let got = s.provider.set_credit_config(s.org_id()?, config).await?;
    if &got != config {
        return Err(no_effect(
            "set credit config",
            format!("asked for {config:?}, the response says {got:?}"),
        ));
    }
    Ok(())
}

/// Tops the org up from `ledger` (the marked sum observed) to `target`.
pub(super) async fn allocate(
    s: &mut Step<'_>,
    credits: u64,
    (ledger, target): (i64, i64),
    key: &IdempotencyKey,
) -> Result<(), StepError> {
    let crossed = crate::reconcile::credit_guard::approved_crossings(key);
    let approval = s.corg.metadata.generation.map(|g| (g, crossed.as_slice()));
    let metadata = allocation_metadata(key, ledger, target, approval);
    let transfer = s
        .provider
        .allocate_credits(s.org_id()?, credits, &metadata, key)
        .await?;
    s.status.credits = Some(CreditsStatus {
        allocated: target,
        balance: transfer.balance,
        available: transfer.available,
        refused: None,
    });
    let note = format!(
        "moved {} credits ({}), {target} allocated in total",
        transfer.credits, transfer.id
    );
    s.event("CreditsAllocated", "Allocate", note);
    Ok(())
}
