//! One reconcile: gate -> observe (staged, as few reads as possible) -> plan -> apply -> status.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::Api;

use crate::api::CustomerOrg;
use crate::api::conditions::{self, STALLED};
use crate::provider::Org;
use crate::provider::error::ProviderError;

use super::apply::{self, StepError};
use super::plan::{self, Found, Gate, OWNER_KEY, Observed, REASON_API_REJECTED};
use super::secrets;
use super::status::{self, Verdict};
use super::{Context, OrgEvent, Outcome, ReconcileError, Retry};

fn warning(reason: &str, note: String) -> OrgEvent {
    OrgEvent {
        warning: true,
        reason: reason.to_string(),
        note,
        action: "Reconcile".to_string(),
    }
}

/// The verdict, retry and event for a provider failure.
fn provider_failure(e: &ProviderError) -> (Verdict, Retry, Option<OrgEvent>) {
    let what = format!("{} {}", e.code(), e.message());
    if e.is_auth() {
        let message = format!(
            "the provider refused the parent key ({what}); fix the OrgProvider's credentials"
        );
        (
            Verdict::Stalled {
                reason: "ProviderUnauthorized".into(),
                message: message.clone(),
            },
            Retry::Slow,
            Some(warning("ProviderUnauthorized", message)),
        )
    } else if matches!(e, ProviderError::BillingExhausted(_)) {
        // Not gated like ApiRejected: topping up the parent (no spec change) must unblock it.
        let message = format!(
            "the parent org cannot fund the allocation ({what}); top up the parent's balance"
        );
        (
            Verdict::Stalled {
                reason: "InsufficientCredits".into(),
                message: message.clone(),
            },
            Retry::Slow,
            Some(warning("InsufficientCredits", message)),
        )
    } else if e.needs_human() {
        let message = format!("the provider rejected the spec: {what}; edit the spec to retry");
        (
            Verdict::Stalled {
                reason: REASON_API_REJECTED.into(),
                message: message.clone(),
            },
            Retry::Slow,
            Some(warning(REASON_API_REJECTED, message)),
        )
    } else {
        (
            Verdict::Transient {
                message: format!("provider call failed, retrying: {what}"),
            },
            Retry::Backoff,
            None,
        )
    }
}

fn stalled_reason(corg: &CustomerOrg) -> Option<String> {
    let status = corg.status.as_ref()?;
    let c = conditions::find(&status.conditions, STALLED)?;
    (c.status == "True").then(|| c.reason.clone())
}

/// Another live CustomerOrg named by the org's ownership marker, if any.
async fn claimed_by(
    ctx: &Context,
    corg: &CustomerOrg,
    org: &Org,
) -> Result<Option<String>, kube::Error> {
    let Some(owner) = org.metadata.get(OWNER_KEY) else {
        return Ok(None);
    };
    if *owner == plan::owner_of(corg) {
        return Ok(None);
    }
    let Some((ns, name)) = owner.split_once('/') else {
        return Ok(None);
    };
    let api: Api<CustomerOrg> = Api::namespaced(ctx.client.clone(), ns);
    let other = api.get_opt(name).await?;
    Ok(other
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .map(|_| owner.clone()))
}

enum Observation {
    Ready(Box<Observed>),
    Failed(ProviderError),
}

async fn observe(ctx: &Context, corg: &CustomerOrg) -> Result<Observation, ReconcileError> {
    let provider = ctx.provider.as_ref();
    let caps = provider.capabilities();
    let tracked = corg.status.as_ref().and_then(|s| s.org_id.clone());
    let found = if let Some(id) = tracked {
        match provider.get_org(&id).await {
            Ok(org) => Found::Tracked(org),
            Err(e) => return Ok(Observation::Failed(e)),
        }
    } else if let Some(id) = &corg.spec.adopt_org_id {
        match provider.get_org(id).await {
            Ok(Some(org)) => {
                let claimed_by = claimed_by(ctx, corg, &org).await?;
                Found::ById {
                    org: Some(org),
                    claimed_by,
                }
            }
            Ok(None) => Found::ById {
                org: None,
                claimed_by: None,
            },
            Err(e) => return Ok(Observation::Failed(e)),
        }
    } else if let (Some(ext), true) = (&corg.spec.external_id, caps.find_by_external_id) {
        match provider.find_orgs_by_external_id(ext).await {
            Ok(orgs) => {
                let claimed_by = match orgs.as_slice() {
                    [one] => claimed_by(ctx, corg, one).await?,
                    _ => None,
                };
                Found::ByExternalId { orgs, claimed_by }
            }
            Err(e) => return Ok(Observation::Failed(e)),
        }
    } else {
        Found::Nothing
    };
    // find_orgs_by_external_id returns list rows; read the one org with its summary.
    let found = match found {
        Found::ByExternalId { orgs, claimed_by }
            if orgs.len() == 1 && orgs[0].summary.is_none() =>
        {
            match provider.get_org(&orgs[0].id).await {
                Ok(Some(org)) => Found::ByExternalId {
                    orgs: vec![org],
                    claimed_by,
                },
                Ok(None) => Found::ByExternalId {
                    orgs: Vec::new(),
                    claimed_by: None,
                },
                Err(e) => return Ok(Observation::Failed(e)),
            }
        }
        other => other,
    };

    let secret_api = secrets::api(corg, &ctx.client);
    let mut names: Vec<String> = corg
        .spec
        .api_keys
        .iter()
        .map(|k| plan::key_secret_name(corg, k))
        .collect();
    names.extend(
        corg.spec
            .webhooks
            .iter()
            .map(|w| plan::webhook_secret_name(corg, w)),
    );
    if let Some(st) = &corg.status {
        names.extend(st.api_keys.iter().map(|k| k.secret_name.clone()));
        names.extend(st.webhooks.iter().map(|w| w.secret_name.clone()));
    }
    names.sort();
    names.dedup();
    let mut seen = BTreeMap::new();
    for name in names {
        let s = secrets::seen(&secret_api, corg, &name).await?;
        seen.insert(name, s);
    }

    let org = match &found {
        Found::Tracked(Some(o))
        | Found::ById {
            org: Some(o),
            claimed_by: None,
        } => Some(o),
        Found::ByExternalId {
            orgs,
            claimed_by: None,
        } if orgs.len() == 1 => orgs.first(),
        _ => None,
    };
    let mut obs = Observed {
        found: found.clone(),
        keys: None,
        webhooks: None,
        ledger: None,
        secrets: seen,
        capabilities: caps,
    };
    let Some(org) = org else {
        return Ok(Observation::Ready(Box::new(obs)));
    };
    if org.status == crate::provider::OrgStatus::Archived
        || corg.spec.state == crate::api::DesiredState::Archived
    {
        return Ok(Observation::Ready(Box::new(obs)));
    }
    // A new or adopted org has no bookkeeping: read everything once.
    let mut reads = plan::reads(corg, &obs.secrets, &caps);
    if !matches!(found, Found::Tracked(_)) {
        reads = plan::Reads {
            keys: caps.child_api_keys,
            webhooks: caps.webhooks,
            ledger: caps.allocation_ledger,
        };
    }
    if reads.keys {
        match provider.list_keys(&org.id).await {
            Ok(keys) => obs.keys = Some(keys),
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    if reads.webhooks {
        match provider.list_webhooks(&org.id).await {
            Ok(hooks) => obs.webhooks = Some(hooks),
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    if reads.ledger {
        match provider.list_allocations(&org.id).await {
            Ok(rows) => {
                let sum = rows
                    .iter()
                    .filter(|r| {
                        r.metadata.get(plan::ALLOCATION_MARKER).map(String::as_str) == Some("true")
                    })
                    .map(|r| r.credits)
                    .sum();
                obs.ledger = Some(sum);
            }
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    Ok(Observation::Ready(Box::new(obs)))
}

pub async fn run(ctx: &Context, corg: &CustomerOrg) -> Result<Outcome, ReconcileError> {
    match plan::gate(corg) {
        Some(Gate::Paused) => {
            return Ok(Outcome {
                status: status::paused(corg),
                events: Vec::new(),
                retry: Retry::Resync,
            });
        }
        Some(Gate::Rejected) => {
            return Ok(Outcome {
                status: corg.status.clone().unwrap_or_default(),
                events: Vec::new(),
                retry: Retry::Slow,
            });
        }
        None => {}
    }
    let obs = match observe(ctx, corg).await? {
        Observation::Ready(obs) => obs,
        Observation::Failed(e) => {
            let (verdict, retry, event) = provider_failure(&e);
            let base = corg.status.clone().unwrap_or_default();
            let events = event
                .into_iter()
                .filter(|ev| stalled_reason(corg).as_deref() != Some(ev.reason.as_str()))
                .collect();
            return Ok(finish(corg, base, verdict, retry, events));
        }
    };
    let plan = plan::plan(corg, &obs);
    let mut working = status::observed(corg, plan.org.as_ref(), &obs);
    let mut events = Vec::new();
    if let Some(how) = &plan.adopted {
        events.push(OrgEvent {
            warning: false,
            reason: "Adopted".to_string(),
            note: how.clone(),
            action: "Adopt".to_string(),
        });
    }
    let secret_api = secrets::api(corg, &ctx.client);
    let provider = ctx.provider.as_ref();
    let applied = apply::apply(provider, &secret_api, corg, &plan, &mut working).await;
    events.extend(applied.events);
    let mut writes = applied.writes;
    let mut failure = applied.failure;
    let mut plan = plan;
    // The org this pass created is known to be empty: plan its follow-ups now instead of
    // re-reading everything next pass (safety: docs/architecture.md, "Exactly once").
    if failure.is_none()
        && plan.stalled.is_none()
        && let Some(created) = &applied.created
        && let Some(fresh) = plan::fresh_org_observation(corg, created, &obs)
    {
        let mut next = corg.clone();
        next.status = Some(working.clone());
        let follow = plan::plan(&next, &fresh);
        working = status::observed(&next, follow.org.as_ref(), &fresh);
        let more = apply::apply(provider, &secret_api, &next, &follow, &mut working).await;
        events.extend(more.events);
        writes += more.writes;
        failure = more.failure;
        plan = follow;
    }
    if let Some(failure) = failure {
        let (verdict, retry, event) = match &failure {
            StepError::Provider(e) => provider_failure(e),
            StepError::Kube(e) => {
                tracing::warn!(corg = %corg.name_any(), error = %e, "kubernetes call failed mid-plan");
                return Err(ReconcileError::Kube(clone_kube_error(e)));
            }
            StepError::SecretConflict(name) => {
                let message = format!(
                    "Secret {name} exists and is not owned by this CustomerOrg; it is never overwritten: delete it or choose another secretName"
                );
                (
                    Verdict::Stalled {
                        reason: "SecretConflict".into(),
                        message: message.clone(),
                    },
                    Retry::Slow,
                    Some(warning("SecretConflict", message)),
                )
            }
        };
        events.extend(
            event
                .into_iter()
                .filter(|ev| stalled_reason(corg).as_deref() != Some(ev.reason.as_str())),
        );
        return Ok(finish(corg, working, verdict, retry, events));
    }
    if let Some((reason, message)) = plan.stalled {
        // One Warning per episode, not one per retry.
        if stalled_reason(corg).as_deref() != Some(reason.as_str()) {
            events.push(warning(&reason, message.clone()));
        }
        return Ok(finish(
            corg,
            working,
            Verdict::Stalled { reason, message },
            Retry::Slow,
            events,
        ));
    }
    if writes > 0 {
        let message = format!("applied {writes} change(s); verifying");
        return Ok(finish(
            corg,
            working,
            Verdict::Progressing { message },
            Retry::Soon,
            events,
        ));
    }
    Ok(finish(
        corg,
        working,
        Verdict::Converged { notes: plan.notes },
        Retry::Resync,
        events,
    ))
}

fn finish(
    corg: &CustomerOrg,
    base: crate::api::CustomerOrgStatus,
    verdict: Verdict,
    retry: Retry,
    events: Vec<OrgEvent>,
) -> Outcome {
    Outcome {
        status: status::finish(corg, base, &verdict),
        events,
        retry,
    }
}

fn clone_kube_error(e: &kube::Error) -> kube::Error {
    match e {
        kube::Error::Api(status) => kube::Error::Api(status.clone()),
        other => kube::Error::Service(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::error::test_failure as failure;

    fn reason(v: &Verdict) -> &str {
        match v {
            Verdict::Stalled { reason, .. } => reason,
            _ => "",
        }
    }

    #[test]
    fn failures_map_to_the_right_stall_and_retry() {
        let (v, retry, ev) =
            provider_failure(&ProviderError::Validation(failure(422, "VALIDATION")));
        assert_eq!((reason(&v), retry), (REASON_API_REJECTED, Retry::Slow));
        assert!(ev.is_some_and(|e| e.warning && e.note.contains("not allowed")));

        // A parent top-up fixes this without a spec change: not the generation gate.
        let (v, retry, _) = provider_failure(&ProviderError::BillingExhausted(failure(
            402,
            "BILLING_EXHAUSTED",
        )));
        assert_eq!((reason(&v), retry), ("InsufficientCredits", Retry::Slow));

        let (v, retry, _) = provider_failure(&ProviderError::Unauthenticated(failure(
            401,
            "UNAUTHENTICATED",
        )));
        assert_eq!((reason(&v), retry), ("ProviderUnauthorized", Retry::Slow));

        let (v, retry, ev) = provider_failure(&ProviderError::Timeout);
        assert!(matches!(v, Verdict::Transient { .. }));
        assert_eq!(retry, Retry::Backoff);
        assert!(ev.is_none());
    }
}
