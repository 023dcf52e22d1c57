//! One reconcile: gate -> observe (staged, as few reads as possible) -> plan -> apply ->
//! status. One plan and one apply per pass; status is built from what happened. The
//! stages are the CustomerOrg's `engine::Resource` (`OrgPass`); `engine::run` sequences them.

use crate::api::conditions::{self, READY};
use crate::api::{CustomerOrg, CustomerOrgStatus, ManagementPolicy};
use crate::provider::error::ProviderError;

use super::apply::{self, Prover, StepError};
use super::claims::{self, Claimed};
use super::credit_guard::{self, Admission};
use super::engine::{self, Flow};
use super::plan::{self, Action, Gate, Observed, REASON_DRIFTED};
use super::status::{self, Verdict};
use super::{Context, OrgEvent, Outcome, ReconcileError, Retry, secrets};

mod failure;
mod observe;
#[cfg(test)]
pub(crate) use failure::remember_failure;
use failure::{not_leader, provider_failure, step_failure};
use observe::{Observation, observe};

/// Ready=False reason while a lifecycle change the provider accepted is not applied yet.
pub const REASON_TRANSITION_PENDING: &str = "TransitionPending";

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
    engine::run(OrgPass {
        ctx,
        corg,
        working: corg.status.clone().unwrap_or_default(),
        events: Vec::new(),
    })
    .await
}

/// One CustomerOrg's pass through the engine: the working status (what the pass learnt
/// and did, written even when it fails) and the events it publishes.
struct OrgPass<'a> {
    ctx: &'a Context,
    corg: &'a CustomerOrg,
    working: CustomerOrgStatus,
    events: Vec<OrgEvent>,
}

/// The plan as admitted: the top-up through the OrgProvider's guardrails.
struct Admitted {
    plan: plan::Plan,
    admission: Admission,
}

impl engine::Resource for OrgPass<'_> {
    type Observed = Box<Observed>;
    type Plan = Admitted;
    type Applied = apply::Applied;
    type Outcome = Outcome;
    type Error = ReconcileError;

    async fn gate(&mut self) -> Result<Option<Outcome>, ReconcileError> {
        let (ctx, corg) = (self.ctx, self.corg);
        match plan::gate(corg) {
            Some(Gate::Paused) => {
                return Ok(Some(Outcome {
                    status: status::paused(corg),
                    events: Vec::new(),
                    retry: Retry::Resync,
                }));
            }
            Some(Gate::Rejected) => {
                return Ok(Some(Outcome {
                    status: corg.status.clone().unwrap_or_default(),
                    events: Vec::new(),
                    retry: Retry::Slow,
                }));
            }
            None => {}
        }
        if let Some((reason, message)) = plan::refusal(corg, &ctx.provider.capabilities()) {
            let (verdict, retry, event) = stalled(&reason, message);
            let events = once(corg, event).collect();
            let base = self.working.clone();
            return Ok(Some(finish(corg, base, verdict, retry, events)));
        }
        Ok(None)
    }

    async fn observe(&mut self) -> Result<Flow<Box<Observed>, Outcome>, ReconcileError> {
        Ok(match observe(self.ctx, self.corg).await? {
            Observation::Ready(obs) => Flow::Go(obs),
            Observation::Failed(e) => {
                let (verdict, retry, event) = provider_failure(&e, None);
                let events = once(self.corg, event).collect();
                let base = self.working.clone();
                Flow::Done(finish(self.corg, base, verdict, retry, events))
            }
        })
    }

    async fn plan(
        &mut self,
        obs: Box<Observed>,
    ) -> Result<Flow<Admitted, Outcome>, ReconcileError> {
        let (ctx, corg) = (self.ctx, self.corg);
        if observing(corg) {
            return Ok(Flow::Done(observe_only(corg, &obs, self.working.clone())));
        }
        let mut plan = plan::plan(corg, &obs);
        self.working = status::observed(corg, plan.org.as_ref(), &obs);
        if plan
            .stalled
            .as_ref()
            .is_some_and(|(reason, _)| reason == ADOPTION_CONFLICT)
        {
            // Another object owns what was found: nothing of it stays in this one's status,
            // where a deletion would take it for its own.
            forget_org(&mut self.working);
        }
        if let Some(outcome) = claim_identities(ctx, corg, &plan, &mut self.working).await? {
            return Ok(Flow::Done(outcome));
        }
        if let Some(outcome) = archive_admitted(ctx, corg, &plan, &self.working).await? {
            return Ok(Flow::Done(outcome));
        }
        // The top-up goes through the OrgProvider's guardrails: held, it leaves the plan.
        let admission = credit_guard::admit(
            &ctx.client,
            ctx.provider.as_ref(),
            &ctx.provider_name,
            corg,
            &mut plan,
        )
        .await?;
        self.working.held_credits = match &admission {
            Admission::Held(hold) => Some(hold.held.clone()),
            _ => None,
        };
        if let Some((reason, how)) = &plan.adopted {
            self.events.push(OrgEvent {
                warning: false,
                reason: reason.clone(),
                note: how.clone(),
                action: "Adopt".to_string(),
            });
        }
        Ok(Flow::Go(Admitted { plan, admission }))
    }

    async fn apply(&mut self, admitted: &Admitted) -> apply::Applied {
        let (ctx, corg) = (self.ctx, self.corg);
        let secret_api = secrets::api(corg, &ctx.client);
        let prover = Prover {
            provider: ctx.provider.as_ref(),
            claims: &ctx.claims,
            owner: claims::owner(corg),
        };
        let plan = &admitted.plan;
        apply::apply(
            &prover,
            &secret_api,
            corg,
            plan,
            &mut self.working,
            &ctx.fence,
        )
        .await
    }

    async fn finish(
        self,
        admitted: Admitted,
        applied: apply::Applied,
    ) -> Result<Outcome, ReconcileError> {
        let OrgPass {
            ctx,
            corg,
            mut working,
            mut events,
        } = self;
        let Admitted { plan, admission } = admitted;
        events.extend(applied.events);
        if let Some(failure) = applied.failure {
            status::unverified(&mut working);
            let failed = applied.failed.as_ref();
            if let (StepError::Provider { error, .. }, Some(Action::Allocate { key, .. })) =
                (&failure, failed)
                && credit_guard::moved_nothing(error)
            {
                // Refused: it moved nothing, so its hourly claim is given back.
                credit_guard::release(&ctx.client, key).await;
            }
            let (verdict, retry, event) =
                step_failure(ctx, corg, &failure, failed, &mut working).await?;
            events.extend(once(corg, event));
            return Ok(finish(corg, working, verdict, retry, events));
        }
        Ok(converged(
            corg,
            plan,
            admission,
            applied.writes,
            working,
            events,
        ))
    }
}

/// The outcome of a pass whose actions all succeeded.
fn converged(
    corg: &CustomerOrg,
    plan: plan::Plan,
    admission: Admission,
    writes: usize,
    working: CustomerOrgStatus,
    mut events: Vec<OrgEvent>,
) -> Outcome {
    if let Some((reason, message)) = plan.stalled {
        let (verdict, retry, event) = stalled(&reason, message);
        events.extend(once(corg, event));
        return finish(corg, working, verdict, retry, events);
    }
    // Every pass with writes is verified by the next one (a first create too: skipping
    // that verification, 5 writes per org instead of 6, was tried and the chaos suite found
    // violations it could not be cleared of in time; see docs/benchmarks.md).
    if writes > 0 {
        let message = format!("applied {} change(s); verifying", writes);
        let verdict = if plan.drift.is_empty() {
            Verdict::Progressing { message }
        } else {
            Verdict::CorrectingDrift { message }
        };
        return finish(corg, working, verdict, Retry::Soon, events);
    }
    match admission {
        Admission::Held(hold) => {
            let retry = hold.wait.map_or(Retry::Slow, Retry::Stalled);
            let event = warning(plan::REASON_CREDITS_HELD, hold.message.clone());
            events.extend(once(corg, Some(event)));
            let verdict = Verdict::Stalled {
                reason: plan::REASON_CREDITS_HELD.into(),
                message: hold.message,
            };
            return finish(corg, working, verdict, retry, events);
        }
        Admission::Unread(e) => {
            let verdict = Verdict::Transient {
                message: format!(
                    "reading the parent's balance for guardrails.minParentBalance failed, the top-up waits: {} {}",
                    e.code(),
                    e.message()
                ),
            };
            return finish(corg, working, verdict, Retry::Backoff, events);
        }
        Admission::Clear => {}
    }
    if let Some((reason, message)) = plan.waiting {
        // Nothing to send until the provider's state changes (a person's doing): the
        // object says so, one Warning per episode, and looks again at its next resync.
        events.extend(once(corg, Some(warning(&reason, message.clone()))));
        return finish(
            corg,
            working,
            Verdict::Waiting { reason, message },
            Retry::Resync,
            events,
        );
    }
    finish(
        corg,
        working,
        Verdict::Converged { notes: plan.notes },
        Retry::Resync,
        events,
    )
}

/// Stalled reason when what a pass found is another object's.
pub const ADOPTION_CONFLICT: &str = "AdoptionConflict";

/// Drops the org from a status (its id, state and credits): it is not this object's.
fn forget_org(status: &mut CustomerOrgStatus) {
    status.org_id = None;
    status.state = None;
    status.credits = None;
}

/// Takes the claims the plan needs before it acts (`claims::needed`); another live owner
/// of one of them stalls the pass `AdoptionConflict`, with nothing of theirs in status.
async fn claim_identities(
    ctx: &Context,
    corg: &CustomerOrg,
    plan: &plan::Plan,
    working: &mut CustomerOrgStatus,
) -> Result<Option<Outcome>, ReconcileError> {
    let needed = claims::needed(corg, plan, &ctx.provider.capabilities());
    if needed.is_empty() {
        return Ok(None);
    }
    // A claim is a write: only inside the fence.
    if ctx.fence.check().is_err() {
        let (verdict, retry, _) = not_leader();
        return Ok(Some(finish(
            corg,
            working.clone(),
            verdict,
            retry,
            Vec::new(),
        )));
    }
    // A create or an adoption claims what nobody held yet; other passes keep a claim.
    let likely_new = plan::creates_org(plan) || plan.adopted.is_some();
    for identity in &needed {
        if let Claimed::Taken(other) = ctx.claims.claim(corg, identity, likely_new).await? {
            forget_org(working);
            let (verdict, retry, event) = stalled(
                ADOPTION_CONFLICT,
                format!(
                    "{} is already claimed by CustomerOrg {other}: change this object's spec (externalId, displayName, adoptOrgId) or delete the other resource",
                    identity.describe()
                ),
            );
            let events = once(corg, event).collect();
            return Ok(Some(finish(corg, working.clone(), verdict, retry, events)));
        }
    }
    Ok(None)
}

/// `spec.state: archived` archives as surely as a deletion: it takes a slot of the
/// offboarding guard's window first, or waits (`OffboardingPaused`).
async fn archive_admitted(
    ctx: &Context,
    corg: &CustomerOrg,
    plan: &plan::Plan,
    working: &CustomerOrgStatus,
) -> Result<Option<Outcome>, ReconcileError> {
    if !plan.actions.iter().any(|a| matches!(a, Action::Archive)) {
        return Ok(None);
    }
    if ctx.fence.check().is_err() {
        let (verdict, retry, _) = not_leader();
        let status = working.clone();
        return Ok(Some(finish(corg, status, verdict, retry, Vec::new())));
    }
    match super::offboard_guard::admit(&ctx.client, &ctx.provider_name, corg).await? {
        super::offboard_guard::Admission::Granted { .. } => Ok(None),
        super::offboard_guard::Admission::Paused(pause) => {
            let (message, retry) = super::offboard::pause_message(ctx, &pause);
            let reason = super::offboard::OFFBOARDING_PAUSED;
            let (verdict, _, event) = stalled(reason, message);
            let events = once(corg, event).collect();
            Ok(Some(finish(corg, working.clone(), verdict, retry, events)))
        }
    }
}

pub(super) fn observing(corg: &CustomerOrg) -> bool {
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

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
