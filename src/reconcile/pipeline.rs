//! One reconcile: gate -> observe (staged, as few reads as possible) -> plan -> apply ->
//! status. One plan and one apply per pass; status is built from what happened.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::conditions::{self, READY};
use crate::api::{CustomerOrg, CustomerOrgStatus, ManagementPolicy, RefusedAllocation};
use crate::provider::error::ProviderError;
use crate::provider::{Org, OrgStatus};

use super::apply::{self, StepError};
use super::plan::{
    self, Action, Found, Gate, OWNER_KEY, Observed, REASON_API_REJECTED, REASON_DRIFTED, Reads,
    SecretSeen,
};
use super::status::{self, Verdict};
use super::{Context, OrgEvent, Outcome, ReconcileError, Retry, owners, secrets};

/// A Retry-After at least this long is a rate-limit window worth saying so (the daily
/// write cap), not a blip the client's own backoff absorbs.
const LONG_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

fn warning(reason: &str, note: String) -> OrgEvent {
    OrgEvent {
        warning: true,
        reason: reason.to_string(),
        note,
        action: "Reconcile".to_string(),
    }
}

fn stalled(reason: &str, message: String) -> (Verdict, Retry, Option<OrgEvent>) {
    (
        Verdict::Stalled {
            reason: reason.into(),
            message: message.clone(),
        },
        Retry::Slow,
        Some(warning(reason, message)),
    )
}

/// The verdict, retry and event for a provider failure, knowing which step failed.
fn provider_failure(
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
                "InsufficientCredits",
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

/// The reason the object already shows, so a Warning is published once per episode.
fn shown_reason(corg: &CustomerOrg) -> Option<String> {
    let status = corg.status.as_ref()?;
    let c = conditions::find(&status.conditions, READY)?;
    (c.status != "True").then(|| c.reason.clone())
}

fn once(corg: &CustomerOrg, event: Option<OrgEvent>) -> impl Iterator<Item = OrgEvent> {
    let shown = shown_reason(corg);
    event
        .into_iter()
        .filter(move |ev| shown.as_deref() != Some(ev.reason.as_str()))
}

enum Observation {
    Ready(Box<Observed>),
    Failed(ProviderError),
}

/// Reads the org with its summary when a lookup returned list rows without one.
async fn with_summary(ctx: &Context, orgs: Vec<Org>) -> Result<Vec<Org>, ProviderError> {
    match orgs.as_slice() {
        [one] if one.summary.is_none() => {
            Ok(ctx.provider.get_org(&one.id).await?.into_iter().collect())
        }
        _ => Ok(orgs),
    }
}

/// Which org this object manages: status.orgId, spec.adoptOrgId, its own owner marker
/// (created by a pass whose status write never happened), spec.externalId, or none.
async fn find(
    ctx: &Context,
    corg: &CustomerOrg,
) -> Result<Result<Found, ProviderError>, ReconcileError> {
    let provider = ctx.provider.as_ref();
    let caps = provider.capabilities();
    if let Some(id) = corg.status.as_ref().and_then(|s| s.org_id.clone()) {
        let org = match provider.get_org(&id).await {
            Ok(org) => org,
            Err(e) => return Ok(Err(e)),
        };
        // Tracked, but another live object's marker is on it (it adopted the same org at
        // the same moment and its claim stayed): that object owns it.
        if let Some(org) = &org
            && let Some(other) = owners::claimed_by(&ctx.client, corg, org).await?
        {
            return Ok(Ok(Found::ById {
                org: Some(org.clone()),
                claimed_by: Some(other),
            }));
        }
        return Ok(Ok(Found::Tracked(org)));
    }
    if let Some(id) = &corg.spec.adopt_org_id {
        let org = match provider.get_org(id).await {
            Ok(org) => org,
            Err(e) => return Ok(Err(e)),
        };
        let claimed_by = match &org {
            Some(org) => owners::claimed_by(&ctx.client, corg, org).await?,
            None => None,
        };
        return Ok(Ok(Found::ById { org, claimed_by }));
    }
    if caps.org_metadata {
        let mine = match provider.find_orgs_by_owner(&plan::owner_of(corg)).await {
            Ok(orgs) => orgs,
            Err(e) => return Ok(Err(e)),
        };
        if !mine.is_empty() {
            return Ok(with_summary(ctx, mine).await.map(Found::ByOwner));
        }
    }
    if caps.find_by_name {
        // No metadata to hold a marker: the name identifies the org (unique per parent).
        // Another live CustomerOrg tracking the same org claims it.
        let orgs = match provider.find_orgs_by_name(&corg.spec.display_name).await {
            Ok(orgs) => orgs,
            Err(e) => return Ok(Err(e)),
        };
        let claimed_by = match orgs.as_slice() {
            [one] => owners::tracked_by(&ctx.client, corg, &one.id).await?,
            _ => None,
        };
        return Ok(Ok(Found::ByExternalId { orgs, claimed_by }));
    }
    if let (Some(ext), true) = (&corg.spec.external_id, caps.find_by_external_id) {
        let orgs = match provider.find_orgs_by_external_id(ext).await {
            Ok(orgs) => orgs,
            Err(e) => return Ok(Err(e)),
        };
        let claimed_by = match orgs.as_slice() {
            [one] => owners::claimed_by(&ctx.client, corg, one).await?,
            _ => None,
        };
        return Ok(with_summary(ctx, orgs)
            .await
            .map(|orgs| Found::ByExternalId { orgs, claimed_by }));
    }
    Ok(Ok(Found::Nothing))
}

/// The id the status records for the key or webhook whose Secret is `name`.
fn recorded_id<'a>(corg: &'a CustomerOrg, name: &str) -> Option<&'a str> {
    let st = corg.status.as_ref()?;
    st.api_keys
        .iter()
        .find(|k| k.secret_name == name)
        .map(|k| k.id.as_str())
        .or_else(|| {
            st.webhooks
                .iter()
                .find(|w| w.secret_name == name)
                .map(|w| w.id.as_str())
        })
        .filter(|id| !id.is_empty())
}

/// The cached view of a named Secret, when it can stand in for a read (#18: no Secret
/// GETs for a converged object's passes): controlled by this object and holding the id the
/// status records. Every write of ours that changes what a pass reads from a Secret (its
/// id, its rotated-for mark) writes a new id, which the status being planned from
/// already records: a cache behind our own write disagrees and the Secret is read. Missing,
/// another's, or anything else: read (a name missing from the cache may be someone
/// else's Secret, which only a read tells). Deep checks always read.
fn trusted(cached: Option<SecretSeen>, recorded: Option<&str>) -> Option<SecretSeen> {
    match (&cached, recorded) {
        (Some(SecretSeen::Owned { id: Some(id), .. }), Some(r)) if id == r => cached,
        _ => None,
    }
}

async fn observe(ctx: &Context, corg: &CustomerOrg) -> Result<Observation, ReconcileError> {
    let provider = ctx.provider.as_ref();
    let caps = provider.capabilities();
    let found = match find(ctx, corg).await? {
        Ok(found) => found,
        Err(e) => return Ok(Observation::Failed(e)),
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
        let cached = (!ctx.deep).then(|| ctx.owned.seen(corg, &name)).flatten();
        let s = match trusted(cached, recorded_id(corg, &name)) {
            Some(s) => s,
            None => secrets::seen(&secret_api, corg, &name).await?,
        };
        seen.insert(name, s);
    }
    let owned = ctx.owned.owned(corg);

    let org = match &found {
        Found::Tracked(Some(o))
        | Found::ById {
            org: Some(o),
            claimed_by: None,
        } => Some(o),
        Found::ByOwner(orgs)
        | Found::ByExternalId {
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
        owned,
        capabilities: caps,
    };
    let Some(org) = org else {
        return Ok(Observation::Ready(Box::new(obs)));
    };
    if org.status == OrgStatus::Archived || corg.spec.state == crate::api::DesiredState::Archived {
        return Ok(Observation::Ready(Box::new(obs)));
    }
    // A newly found or adopted org has no bookkeeping: read everything once. Observe
    // keeps no bookkeeping of its own and reports every difference: it always reads all.
    let deep = ctx.deep || observing(corg) || !matches!(found, Found::Tracked(_));
    let reads: Reads = plan::reads(corg, &obs.secrets, &obs.owned, &caps, deep);
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
            Ok(rows) => obs.ledger = Some(plan::marked_sum(&rows)),
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    Ok(Observation::Ready(Box::new(obs)))
}

/// What the next pass would do, found by the same gate, observation and planner as
/// [`run`], applying nothing: `orgops plan` reads through here.
#[derive(Debug)]
pub enum Preview {
    /// Paused or waiting for a spec change: no API call.
    Gated(Gate),
    /// Refused before observing (reason, message).
    Refused(String, String),
    /// The observation failed.
    Failed(ProviderError),
    /// The plan, through an adoption claim (see [`plan::plan_through_claim`]).
    Planned(Box<plan::Plan>),
}

pub async fn preview(ctx: &Context, corg: &CustomerOrg) -> Result<Preview, ReconcileError> {
    if let Some(gate) = plan::gate(corg) {
        return Ok(Preview::Gated(gate));
    }
    if let Some((reason, message)) = plan::refusal(corg, &ctx.provider.capabilities()) {
        return Ok(Preview::Refused(reason, message));
    }
    Ok(match observe(ctx, corg).await? {
        Observation::Ready(obs) => Preview::Planned(Box::new(plan::plan_through_claim(corg, &obs))),
        Observation::Failed(e) => Preview::Failed(e),
    })
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
    let base = corg.status.clone().unwrap_or_default();
    if let Some((reason, message)) = plan::refusal(corg, &ctx.provider.capabilities()) {
        let (verdict, retry, event) = stalled(&reason, message);
        let events = once(corg, event).collect();
        return Ok(finish(corg, base, verdict, retry, events));
    }
    let obs = match observe(ctx, corg).await? {
        Observation::Ready(obs) => obs,
        Observation::Failed(e) => {
            let (verdict, retry, event) = provider_failure(&e, None);
            let events = once(corg, event).collect();
            return Ok(finish(corg, base, verdict, retry, events));
        }
    };
    if observing(corg) {
        return Ok(observe_only(corg, &obs, base));
    }
    let plan = plan::plan(corg, &obs);
    let mut working = status::observed(corg, plan.org.as_ref(), &obs);
    let mut events = Vec::new();
    if let Some((reason, how)) = &plan.adopted {
        events.push(OrgEvent {
            warning: false,
            reason: reason.clone(),
            note: how.clone(),
            action: "Adopt".to_string(),
        });
    }
    let secret_api = secrets::api(corg, &ctx.client);
    let applied = apply::apply(
        ctx.provider.as_ref(),
        &secret_api,
        corg,
        &plan,
        &mut working,
        ctx.may_write.as_ref(),
    )
    .await;
    events.extend(applied.events);
    if let Some(failure) = applied.failure {
        status::unverified(&mut working);
        let failed = applied.failed.as_ref();
        let (verdict, retry, event) =
            step_failure(ctx, corg, &failure, failed, &mut working).await?;
        events.extend(once(corg, event));
        return Ok(finish(corg, working, verdict, retry, events));
    }
    if let Some((reason, message)) = plan.stalled {
        let (verdict, retry, event) = stalled(&reason, message);
        events.extend(once(corg, event));
        return Ok(finish(corg, working, verdict, retry, events));
    }
    // Every pass with writes is verified by the next one (a first create too: skipping
    // that verification, 5 writes per org instead of 6, was tried and the chaos suite found
    // violations it could not be cleared of in time; see docs/benchmarks.md).
    if applied.writes > 0 {
        let message = format!("applied {} change(s); verifying", applied.writes);
        let verdict = if plan.drift.is_empty() {
            Verdict::Progressing { message }
        } else {
            Verdict::CorrectingDrift { message }
        };
        return Ok(finish(corg, working, verdict, Retry::Soon, events));
    }
    Ok(finish(
        corg,
        working,
        Verdict::Converged { notes: plan.notes },
        Retry::Resync,
        events,
    ))
}

fn observing(corg: &CustomerOrg) -> bool {
    corg.spec.management_policy == ManagementPolicy::Observe
}

/// managementPolicy Observe: the plan is computed as for Full (through an adoption claim)
/// and reported, never applied. Status comes from the observation alone.
fn observe_only(corg: &CustomerOrg, obs: &Observed, base: CustomerOrgStatus) -> Outcome {
    let plan = plan::plan_through_claim(corg, obs);
    let working = if plan.org.is_some() {
        status::observed(corg, plan.org.as_ref(), obs)
    } else {
        base
    };
    if let Some((reason, message)) = plan.stalled {
        let (verdict, retry, event) = stalled(&reason, message);
        let events = once(corg, event).collect();
        return finish(corg, working, verdict, retry, events);
    }
    let fields = plan::drifted_fields(&plan);
    if fields.is_empty() {
        let mut notes = plan.notes;
        notes.push("managementPolicy Observe: nothing is written to the provider".into());
        return finish(
            corg,
            working,
            Verdict::Converged { notes },
            Retry::Resync,
            Vec::new(),
        );
    }
    let org = match &plan.org {
        Some(org) => format!("org {}", org.id),
        None => "no org found (by spec.adoptOrgId or spec.externalId); Full would create one"
            .to_string(),
    };
    let message = format!(
        "managementPolicy Observe: {org}; differs from the spec in {}; not corrected (set managementPolicy: Full to converge)",
        fields.join(", ")
    );
    let event = warning(REASON_DRIFTED, message.clone());
    let events = once(corg, Some(event)).collect();
    finish(
        corg,
        working,
        Verdict::Drifted { message },
        Retry::Resync,
        events,
    )
}

/// What a failed step means for the object. Records what the next pass needs (the org an
/// earlier create made, a refused top-up) in the working status.
async fn step_failure(
    ctx: &Context,
    corg: &CustomerOrg,
    failure: &StepError,
    failed: Option<&Action>,
    working: &mut CustomerOrgStatus,
) -> Result<(Verdict, Retry, Option<OrgEvent>), ReconcileError> {
    Ok(match failure {
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
        StepError::NotLeader => (
            Verdict::Transient {
                message: "this replica lost the leader Lease; the new leader continues".into(),
            },
            Retry::Backoff,
            None,
        ),
    })
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

fn finish(
    corg: &CustomerOrg,
    base: CustomerOrgStatus,
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
    use crate::provider::NewApiKey;
    use crate::provider::error::test_failure as failure;

    fn reason(v: &Verdict) -> &str {
        match v {
            Verdict::Stalled { reason, .. } | Verdict::Waiting { reason, .. } => reason,
            _ => "",
        }
    }

    #[test]
    fn a_cached_secret_stands_in_for_a_read_only_when_it_holds_the_recorded_id() {
        let owned = |id: Option<&str>| SecretSeen::Owned {
            id: id.map(str::to_string),
            rotated_for: Some("r1".into()),
        };
        // Agrees with the status: no read.
        assert_eq!(
            trusted(Some(owned(Some("key_2"))), Some("key_2")),
            Some(owned(Some("key_2")))
        );
        // Behind our own write (the claim, or the previous key): read.
        assert_eq!(trusted(Some(owned(None)), Some("key_2")), None);
        assert_eq!(trusted(Some(owned(Some("key_1"))), Some("key_2")), None);
        // Nothing recorded (a first pass), missing from the cache, or another's: read.
        assert_eq!(trusted(Some(owned(Some("key_2"))), None), None);
        assert_eq!(trusted(None, Some("key_2")), None);
        assert_eq!(trusted(Some(SecretSeen::Foreign), Some("key_2")), None);
    }

    #[test]
    fn the_recorded_id_is_the_status_entry_of_that_secret() {
        let corg: CustomerOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"displayName": "A", "providerRef": {"name": "p"}},
            "status": {
                "apiKeys": [{"name": "k", "id": "key_1", "prefix": "", "secretName": "a-k", "specHash": ""},
                            {"name": "c", "id": "", "prefix": "", "secretName": "a-c", "specHash": ""}],
                "webhooks": [{"name": "w", "id": "wh_1", "secretName": "a-w", "specHash": ""}],
            },
        }))
        .expect("CustomerOrg");
        assert_eq!(recorded_id(&corg, "a-k"), Some("key_1"));
        assert_eq!(recorded_id(&corg, "a-w"), Some("wh_1"));
        assert_eq!(recorded_id(&corg, "a-c"), None, "no id yet");
        assert_eq!(recorded_id(&corg, "other"), None);
    }

    #[test]
    fn failures_map_to_the_right_stall_and_retry() {
        let (v, retry, ev) =
            provider_failure(&ProviderError::Validation(failure(422, "VALIDATION")), None);
        assert_eq!((reason(&v), retry), (REASON_API_REJECTED, Retry::Slow));
        assert!(ev.is_some_and(|e| e.warning && e.note.contains("not allowed")));

        // A parent top-up fixes this without a spec change: not the generation gate.
        let (v, retry, _) = provider_failure(
            &ProviderError::BillingExhausted(failure(402, "BILLING_EXHAUSTED")),
            None,
        );
        assert_eq!((reason(&v), retry), ("InsufficientCredits", Retry::Slow));

        let (v, retry, _) = provider_failure(
            &ProviderError::Unauthenticated(failure(401, "UNAUTHENTICATED")),
            None,
        );
        assert_eq!((reason(&v), retry), ("ProviderUnauthorized", Retry::Slow));

        let (v, retry, ev) = provider_failure(&ProviderError::Timeout, None);
        assert!(matches!(v, Verdict::Transient { .. }));
        assert_eq!(retry, Retry::Backoff);
        assert!(ev.is_none());
    }

    #[test]
    fn a_scope_refusal_on_mint_blames_the_spec_not_the_credentials() {
        let mint = Action::MintKey {
            name: "crm".into(),
            new: NewApiKey {
                name: "crm".into(),
                scopes: vec!["billing:write".into()],
                env: crate::provider::KeyEnv::Live,
            },
            secret_name: "s".into(),
            spec_hash: String::new(),
            rotation: None,
            claim: true,
            key: crate::reconcile::idempotency::derive(&["x"]),
        };
        let e = ProviderError::ForbiddenScope(failure(403, "FORBIDDEN_SCOPE"));
        let (v, retry, _) = provider_failure(&e, Some(&mint));
        assert_eq!((reason(&v), retry), (REASON_API_REJECTED, Retry::Slow));
        let Verdict::Stalled { message, .. } = v else {
            unreachable!()
        };
        assert!(message.contains("billing:write") && message.contains("spec.apiKeys[crm]"));
        // The same code on an org read is the parent key's problem.
        let (v, _, _) = provider_failure(&e, None);
        assert_eq!(reason(&v), "ProviderUnauthorized");
    }

    #[test]
    fn a_long_retry_after_waits_for_the_window_and_says_when() {
        let mut f = failure(429, "RATE_LIMITED");
        f.retry_after = Some(std::time::Duration::from_secs(7200));
        let (v, retry, ev) = provider_failure(&ProviderError::RateLimited(f), None);
        assert_eq!(reason(&v), "RateLimited");
        assert_eq!(retry, Retry::After(std::time::Duration::from_secs(7200)));
        assert!(ev.is_some_and(|e| e.note.contains("7200s")));
    }
}
