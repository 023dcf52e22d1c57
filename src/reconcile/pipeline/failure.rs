//! What a failed step or read means for a CustomerOrg: the verdict, the retry and the
//! Warning, knowing which step failed; and what a failure leaves on record in the working
//! status for the next pass (a refused create's count, a refused top-up's attempts).

use kube::ResourceExt;

use crate::api::{CustomerOrg, CustomerOrgStatus, RefusedAllocation};
use crate::provider::error::ProviderError;
use crate::provider::owned::Unproven;

use super::super::apply::{self, StepError};
use super::super::plan::{self, Action, OWNER_KEY, REASON_API_REJECTED};
use super::super::status::Verdict;
use super::super::{Context, OrgEvent, ReconcileError, Retry};
use super::{REASON_TRANSITION_PENDING, stalled, warning};

/// A Retry-After at least this long is a rate-limit window worth saying so (the daily
/// write cap), not a blip the client's own backoff absorbs.
const LONG_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The verdict, retry and event for a provider failure, knowing which step failed.
pub(super) fn provider_failure(
    e: &ProviderError,
    failed: Option<&Action>,
) -> (Verdict, Retry, Option<OrgEvent>) {
    let what = match e.request_id() {
        Some(rid) => format!("{} {} (request {rid})", e.code(), e.message()),
        None => format!("{} {}", e.code(), e.message()),
    };
    let step = failed
        .map(apply::describe)
        .unwrap_or_else(|| "observe".into());
    if let (ProviderError::ForbiddenScope(_), Some(Action::MintKey { name, new, .. })) = (e, failed)
    {
        // The parent key works; this key's scopes are not the parent's to give.
        return stalled(
            REASON_API_REJECTED,
            format!(
                "the provider refused key {name}'s scopes [{}]: {what}; a child key's scopes must be a subset of the parent key's: edit spec.apiKeys[{name}].scopes",
                new.scopes.join(", ")
            ),
        );
    }
    if let ProviderError::RateLimited(_) = e
        && let Some(wait) = e.retry_after().filter(|w| *w >= LONG_WAIT)
    {
        let at = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(
                i64::try_from(wait.as_secs()).unwrap_or(i64::MAX / 2),
            ))
            .map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
            .unwrap_or_default();
        let message = format!(
            "{step}: the provider's write limit is reached ({what}); next attempt at {at}, in {}s",
            wait.as_secs()
        );
        return (
            Verdict::Waiting {
                reason: "RateLimited".into(),
                message: message.clone(),
            },
            Retry::After(wait),
            Some(warning("RateLimited", message)),
        );
    }
    if let ProviderError::Pending(why) = e {
        // Accepted and applied later: nothing is sent again, the object looks again.
        let message = format!("{step}: {why}");
        return (
            Verdict::Waiting {
                reason: REASON_TRANSITION_PENDING.into(),
                message,
            },
            Retry::Backoff,
            None,
        );
    }
    if e.is_auth() {
        return stalled(
            "ProviderUnauthorized",
            format!(
                "{step}: the provider refused the parent key ({what}); fix the OrgProvider's credentials"
            ),
        );
    }
    match (e, failed) {
        (ProviderError::BillingExhausted(_), _) => {
            // Not gated like ApiRejected: topping up the parent (no spec change) must
            // unblock it; the next attempt uses a new key (status.credits.refused).
            return stalled(
                plan::REASON_INSUFFICIENT_CREDITS,
                format!(
                    "{step}: the parent org cannot fund it ({what}); top up the parent's balance"
                ),
            );
        }
        (ProviderError::IdempotencyConflict(_), Some(Action::Allocate { ledger, .. })) => {
            return (
                Verdict::Transient {
                    message: format!(
                        "{step}: another writer already moved credits from ledger sum {ledger}; re-reading the ledger"
                    ),
                },
                Retry::Backoff,
                None,
            );
        }
        _ => {}
    }
    if e.needs_human() {
        return stalled(
            REASON_API_REJECTED,
            format!("{step}: the provider rejected the spec: {what}; edit the spec to retry"),
        );
    }
    (
        Verdict::Transient {
            message: format!("{step}: provider call failed, retrying: {what}"),
        },
        Retry::Backoff,
        None,
    )
}

/// What a failed step means for the object. Records what the next pass needs (the org an
/// earlier create made, a refused top-up) in the working status.
pub(super) async fn step_failure(
    ctx: &Context,
    corg: &CustomerOrg,
    failure: &StepError,
    failed: Option<&Action>,
    working: &mut CustomerOrgStatus,
) -> Result<(Verdict, Retry, Option<OrgEvent>), ReconcileError> {
    Ok(match failure {
        StepError::Provider { error, .. } if matches!(**error, ProviderError::Fenced(_)) => {
            not_leader()
        }
        StepError::Provider { error, .. } => {
            let error = error.as_ref();
            match (error, failed) {
                // The create key is the uid's: an earlier create of this object exists
                // (its body differed). Find it by the owner marker, fresh.
                (ProviderError::IdempotencyConflict(_), Some(Action::CreateOrg { .. })) => {
                    return Ok(recover_created(ctx, corg, working).await);
                }
                // Migrate is all or nothing: a refusal moved nothing, and the provider
                // stores it under the key, so the next attempt gets a new one.
                (ProviderError::Conflict(_), Some(Action::MigrateProjects { .. })) => {
                    working.create_refusals = Some(working.create_refusals.unwrap_or(0) + 1);
                    return Ok((
                        Verdict::Transient {
                            message: format!(
                                "migrate refused while a project has work in flight (all or nothing: nothing moved): {} {}; retrying with backoff",
                                error.code(),
                                error.message()
                            ),
                        },
                        Retry::Backoff,
                        None,
                    ));
                }
                // A provider that refuses changes to a suspended org: they wait for the
                // resume (the plan sends an unkeyed write first, so no key is spent).
                (ProviderError::Conflict(_), Some(action))
                    if action.changes_the_org()
                        && working.state.as_deref() == Some("suspended")
                        && corg.spec.state == crate::api::DesiredState::Suspended =>
                {
                    return Ok(stalled(
                        plan::REASON_SUSPENDED_READ_ONLY,
                        format!(
                            "{}: the provider refuses changes to suspended org {} ({} {}); they are applied when spec.state is active again (orgops resumes the org first), and nothing is sent until the spec changes",
                            apply::describe(action),
                            working.org_id.as_deref().unwrap_or("?"),
                            error.code(),
                            error.message()
                        ),
                    ));
                }
                (e, Some(Action::MigrateProjects { .. }))
                    if e.is_not_found() || (e.needs_human() && !e.is_auth()) =>
                {
                    working.create_refusals = Some(working.create_refusals.unwrap_or(0) + 1);
                    return Ok(stalled(
                        REASON_API_REJECTED,
                        format!(
                            "the provider refused to migrate spec.migrateProjects: {} {}; nothing moved. spec.migrateProjects is immutable: delete this CustomerOrg and create it again with the partner's project ids",
                            e.code(),
                            e.message()
                        ),
                    ));
                }
                _ => remember_failure(error, failed, working),
            }
            provider_failure(error, failed)
        }
        StepError::Kube(e) => {
            tracing::warn!(corg = %corg.name_any(), error = %e, "kubernetes call failed mid-plan");
            return Err(ReconcileError::Kube(clone_kube_error(e)));
        }
        StepError::SecretConflict(name) => stalled(
            "SecretConflict",
            format!(
                "Secret {name} exists and is not owned by this CustomerOrg; it is never overwritten: delete it or choose another secretName"
            ),
        ),
        StepError::NoEffect { .. } => stalled(
            "NoEffect",
            format!("{failure}; retrying slowly, check the provider"),
        ),
        StepError::NotLeader => not_leader(),
        StepError::Unproven { step, source } => match source.as_ref() {
            Unproven::NotOurs { .. } => stalled(
                super::super::offboard::OWNERSHIP_UNPROVEN,
                format!(
                    "{step}: {source}; nothing destructive is done to an org this object cannot prove is its own"
                ),
            ),
            _ => (
                Verdict::Transient {
                    message: format!("{step}: {source}; retrying"),
                },
                Retry::Backoff,
                None,
            ),
        },
    })
}

/// A write refused by the leader fence: nothing was sent; the leader (this replica once
/// it renews, or another) continues.
pub(super) fn not_leader() -> (Verdict, Retry, Option<OrgEvent>) {
    (
        Verdict::Transient {
            message: "this replica's leader fence is closed (Lease not renewed in time, or lost); the leader continues".into(),
        },
        Retry::Backoff,
        None,
    )
}

/// What a failed write leaves on record for the next pass (the status is written even
/// when the pass failed): a refused create's count, a refused top-up's attempts.
pub(crate) fn remember_failure(
    error: &ProviderError,
    failed: Option<&Action>,
    working: &mut CustomerOrgStatus,
) {
    match (error, failed) {
        // A definitive refusal made no org: the retry after a fix needs a new key
        // (a provider that stores 4xx would replay the refusal for ever).
        (e, Some(Action::CreateOrg { .. })) if e.needs_human() && !e.is_auth() => {
            working.create_refusals = Some(working.create_refusals.unwrap_or(0) + 1);
        }
        (ProviderError::BillingExhausted(_), Some(Action::Allocate { ledger, .. })) => {
            if let Some(credits) = working.credits.as_mut() {
                let attempts = credits
                    .refused
                    .as_ref()
                    .filter(|r| r.ledger == *ledger)
                    .map_or(0, |r| r.attempts);
                credits.refused = Some(RefusedAllocation {
                    ledger: *ledger,
                    attempts: attempts + 1,
                });
            }
        }
        _ => {}
    }
}

async fn recover_created(
    ctx: &Context,
    corg: &CustomerOrg,
    working: &mut CustomerOrgStatus,
) -> (Verdict, Retry, Option<OrgEvent>) {
    match ctx
        .provider
        .find_orgs_by_metadata(OWNER_KEY, &plan::owner_of(corg))
        .await
    {
        Ok(orgs) if orgs.len() == 1 => {
            working.org_id = Some(orgs[0].id.clone());
            (
                Verdict::Progressing {
                    message: format!(
                        "an earlier create of this object made org {}; continuing with it",
                        orgs[0].id
                    ),
                },
                Retry::Soon,
                None,
            )
        }
        Ok(_) => (
            Verdict::Transient {
                message: "the provider reports an earlier create of this object but no org with its owner marker is visible yet; retrying".into(),
            },
            Retry::Backoff,
            None,
        ),
        Err(e) => provider_failure(&e, None),
    }
}

fn clone_kube_error(e: &kube::Error) -> kube::Error {
    match e {
        kube::Error::Api(status) => kube::Error::Api(status.clone()),
        other => kube::Error::Service(other.to_string().into()),
    }
}
