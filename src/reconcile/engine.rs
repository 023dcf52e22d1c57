//! The one reconcile driver both kinds go through (the CustomerOrg's [`super::pipeline`],
//! the ParentWebhook's [`super::parent_webhook`]): gate -> observe -> plan (and admit) ->
//! apply, one action at a time -> the outcome built from what happened.
//!
//! A kind answers the stages ([`Resource`]) and the steps of its plan ([`Steps`]); the
//! driver sequences them. Before each action that writes, the leader fence must be open;
//! before a pass's first destructive action, the kind proves the object owns what it acts
//! on (a fresh read made for it, `provider::owned`), and the proof serves every later one.
//! Each stage may end the pass with its own outcome (a gate, a failed read, a stall); the
//! first failed action ends applying, and the outcome says which step failed.

use crate::fence::Fence;

/// A stage's answer: carry on with this, or the pass ends here with this outcome.
pub(crate) enum Flow<T, O> {
    Go(T),
    Done(O),
}

/// One kind's pass.
pub(crate) trait Resource {
    type Observed;
    type Plan;
    type Applied;
    type Outcome;
    type Error;

    /// Before any read (paused, waiting for a spec change, refused): the outcome, no call.
    async fn gate(&mut self) -> Result<Option<Self::Outcome>, Self::Error>;

    /// What is there now (the provider, the cluster).
    async fn observe(&mut self) -> Result<Flow<Self::Observed, Self::Outcome>, Self::Error>;

    /// The plan from what was observed, admitted for writing (claims, guardrails, the
    /// offboarding window), or the outcome that ends the pass before any write.
    async fn plan(
        &mut self,
        observed: Self::Observed,
    ) -> Result<Flow<Self::Plan, Self::Outcome>, Self::Error>;

    /// Applies the plan's actions in order (through [`apply_all`]).
    async fn apply(&mut self, plan: &Self::Plan) -> Self::Applied;

    /// The outcome (status, events, when to look again) from what the pass did.
    async fn finish(
        self,
        plan: Self::Plan,
        applied: Self::Applied,
    ) -> Result<Self::Outcome, Self::Error>;
}

/// One pass of `resource`, stage by stage.
pub(crate) async fn run<R: Resource>(mut resource: R) -> Result<R::Outcome, R::Error> {
    if let Some(outcome) = resource.gate().await? {
        return Ok(outcome);
    }
    let observed = match resource.observe().await? {
        Flow::Go(observed) => observed,
        Flow::Done(outcome) => return Ok(outcome),
    };
    let plan = match resource.plan(observed).await? {
        Flow::Go(plan) => plan,
        Flow::Done(outcome) => return Ok(outcome),
    };
    let applied = resource.apply(&plan).await;
    resource.finish(plan, applied).await
}

/// One kind's actions, carried out one at a time.
pub(crate) trait Steps {
    type Action;
    /// Why a step did not happen; says which step.
    type Failure;

    /// Writes to the provider or the cluster: only with the leader fence open.
    fn is_write(action: &Self::Action) -> bool;

    /// Takes the pass's proof of ownership.
    fn is_destructive(action: &Self::Action) -> bool;

    /// The failure of a write refused because the leader fence is closed (nothing sent).
    fn not_leader(&self) -> Self::Failure;

    /// Proves, by a read made for it, that what `action` destroys is the object's own;
    /// kept for the pass's later destructive actions.
    async fn prove(&mut self, action: &Self::Action) -> Result<(), Self::Failure>;

    /// Carries out one action.
    async fn step(&mut self, action: &Self::Action) -> Result<(), Self::Failure>;
}

/// What applying a plan did.
pub(crate) struct Ran<F> {
    /// Writes that succeeded.
    pub writes: usize,
    /// The index of the action that failed, and why; the actions after it did not run.
    pub stopped: Option<(usize, F)>,
}

/// Applies `actions` in order, stopping at the first failure: the fence before each write,
/// the proof before the first destructive action.
pub(crate) async fn apply_all<S: Steps>(
    steps: &mut S,
    actions: &[S::Action],
    fence: &Fence,
) -> Ran<S::Failure> {
    let mut ran = Ran {
        writes: 0,
        stopped: None,
    };
    let mut proved = false;
    for (i, action) in actions.iter().enumerate() {
        let write = S::is_write(action);
        let result = if write && !fence.is_open() {
            Err(steps.not_leader())
        } else if S::is_destructive(action) && !proved {
            match steps.prove(action).await {
                Ok(()) => {
                    proved = true;
                    steps.step(action).await
                }
                Err(e) => Err(e),
            }
        } else {
            steps.step(action).await
        };
        match result {
            Ok(()) if write => ran.writes += 1,
            Ok(()) => {}
            Err(failure) => {
                ran.stopped = Some((i, failure));
                return ran;
            }
        }
    }
    ran
}
