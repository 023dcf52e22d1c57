//! The money guardrails' I/O: before a pass applies its plan, its top-up (if any) goes
//! through the OrgProvider's `spec.guardrails` (`guardrails.rs` decides, pure). A held
//! top-up is taken out of the plan, so the rest of the plan (keys, webhooks, lifecycle)
//! still applies and nothing is sent to move credits.
//!
//! The hourly window is `OrgProvider.status.creditWindow` (minute buckets), durable so it
//! survives a restart and is shared by replicas and shards: a claim is a merge patch of
//! that list carrying the resourceVersion it was computed from (409: read, decide, claim
//! again), field manager `orgops-credits`, written only while `maxCreditsPerHour` is set.
//! A claim is made before the transfer is sent and given back (`release`) when the
//! provider refuses it (it moved nothing). A transfer whose answer was lost keeps its
//! claim; its retry with the same idempotency key is not claimed again by this process
//! (kept in memory by key for the window's length); after a restart between a claim and
//! its transfer the transfer is counted twice, which errs on the side of holding.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::guardrails::{self, Crossing, Decision, Funds, Proposed};
use super::offboard_guard;
use super::plan::{Action, Plan};
use crate::api::{
    CONFIRM_CREDITS_ANNOTATION, CustomerOrg, GuardrailsSpec, HeldCredits, OrgProvider,
};
use crate::provider::error::ProviderError;
use crate::provider::{IdempotencyKey, Provider};

/// Field manager of `OrgProvider.status.creditWindow`.
pub const FIELD_MANAGER: &str = "orgops-credits";

/// Claims lost to concurrent writers before giving up this pass.
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum CreditGuardError {
    #[error("credit guardrails: {0}")]
    Read(#[from] offboard_guard::GuardError),
    #[error(
        "credit guardrails: claiming {credits} credits in OrgProvider {provider}'s hourly window: {source}"
    )]
    Claim {
        provider: String,
        credits: i64,
        source: kube::Error,
    },
    #[error(
        "credit guardrails: OrgProvider {provider}'s hourly window changed under {ATTEMPTS} claims in a row; retrying later"
    )]
    Contended { provider: String },
}

/// A top-up the guard let through, by idempotency key: where its claim is (to give it back
/// after a refusal) and the guardrails an approval let it past (for its change-log record).
struct Claimed {
    provider: String,
    /// The bucket it was claimed in; None when no hourly bound is set.
    minute: Option<Timestamp>,
    credits: i64,
    crossed: Vec<String>,
    at: Instant,
}

static CLAIMED: LazyLock<Mutex<HashMap<String, Claimed>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn claimed() -> std::sync::MutexGuard<'static, HashMap<String, Claimed>> {
    CLAIMED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The guardrails an approval let the top-up sent with `key` past (none: it crossed none).
pub fn approved_crossings(key: &IdempotencyKey) -> Vec<String> {
    claimed()
        .get(key.as_str())
        .map(|c| c.crossed.clone())
        .unwrap_or_default()
}

/// A top-up the guard holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// For `status.heldCredits`.
    pub held: HeldCredits,
    /// The condition message, with the numbers and how to approve it.
    pub message: String,
    /// When it may fit by itself (the hourly window frees); None: a person or the parent's
    /// funds must act.
    pub wait: Option<Duration>,
}

/// The guard's answer for one pass.
#[derive(Debug)]
pub enum Admission {
    /// No top-up in the plan, no guardrails, or the top-up may be sent.
    Clear,
    /// Held: the top-up was taken out of the plan.
    Held(Hold),
    /// The parent's balance (needed for the floor) could not be read: the top-up was taken
    /// out of the plan for this pass.
    Unread(ProviderError),
}

/// The top-up of `plan`, if any.
fn top_up(plan: &Plan) -> Option<(i64, i64, IdempotencyKey)> {
    plan.actions.iter().find_map(|a| match a {
        Action::Allocate {
            credits,
            target,
            key,
            ..
        } => Some((
            i64::try_from(*credits).unwrap_or(i64::MAX),
            *target,
            key.clone(),
        )),
        _ => None,
    })
}

fn drop_top_up(plan: &mut Plan) {
    plan.actions
        .retain(|a| !matches!(a, Action::Allocate { .. }));
}

/// Whether `corg` carries `orgops.dev/confirm-credits` naming its current generation.
pub fn approved(corg: &CustomerOrg) -> bool {
    let generation = corg.metadata.generation.unwrap_or_default();
    corg.annotations()
        .get(CONFIRM_CREDITS_ANNOTATION)
        .is_some_and(|v| v.trim() == generation.to_string())
}

/// Runs `plan`'s top-up through the guardrails of OrgProvider `provider_name`: held
/// (taken out of the plan), or let through (its hourly claim made).
pub async fn admit(
    client: &Client,
    provider: &dyn Provider,
    provider_name: &str,
    corg: &CustomerOrg,
    plan: &mut Plan,
) -> Result<Admission, CreditGuardError> {
    let Some((credits, target, key)) = top_up(plan) else {
        return Ok(Admission::Clear);
    };
    forget_old();
    if claimed().contains_key(key.as_str()) {
        // Let through by an earlier pass whose transfer did not get an answer: the same
        // transfer, retried with the same key, neither decided nor claimed again.
        return Ok(Admission::Clear);
    }
    let api: Api<OrgProvider> = Api::all(client.clone());
    let mut current = offboard_guard::read(&api, provider_name).await?;
    let Some(limits) = current.spec.guardrails.clone() else {
        return Ok(Admission::Clear);
    };
    let parent_balance = match limits.min_parent_balance {
        Some(_) => match provider.parent_balance().await {
            Ok(b) => Some(b),
            Err(e) => {
                drop_top_up(plan);
                return Ok(Admission::Unread(e));
            }
        },
        None => None,
    };
    let proposed = Proposed { credits, target };
    let approved = approved(corg);
    for _ in 0..ATTEMPTS {
        let window = current
            .status
            .as_ref()
            .map(|s| s.credit_window.clone())
            .unwrap_or_default();
        let funds = Funds {
            parent_balance,
            window,
        };
        let now = crate::api::conditions::now().0;
        let crossed = match guardrails::decide(&limits, proposed, &funds, approved, now) {
            Decision::Held(crossed) => {
                drop_top_up(plan);
                return Ok(Admission::Held(hold(
                    corg,
                    provider_name,
                    proposed,
                    &crossed,
                    now,
                )));
            }
            Decision::Send { approved } => approved,
        };
        let names: Vec<String> = crossed.iter().map(|c| c.guardrail().to_string()).collect();
        if limits.max_credits_per_hour.is_none() {
            remember(&key, provider_name, None, credits, names);
            return Ok(Admission::Clear);
        }
        let entries = guardrails::claim(&funds.window, credits, now);
        match patch_window(&api, &current, &entries).await {
            Ok(()) => {
                let minute = guardrails::minute_of(now);
                remember(&key, provider_name, Some(minute), credits, names);
                return Ok(Admission::Clear);
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                current = offboard_guard::read(&api, provider_name).await?;
            }
            Err(source) => {
                return Err(CreditGuardError::Claim {
                    provider: provider_name.to_string(),
                    credits,
                    source,
                });
            }
        }
    }
    Err(CreditGuardError::Contended {
        provider: provider_name.to_string(),
    })
}

/// Gives back the hourly claim of the top-up sent with `key`: the provider refused it, so
/// it moved nothing. Best effort (a failure leaves the window counting it, which only
/// holds more).
pub async fn release(client: &Client, key: &IdempotencyKey) {
    let Some(c) = claimed().remove(key.as_str()) else {
        return;
    };
    let Some(minute) = c.minute else { return };
    let api: Api<OrgProvider> = Api::all(client.clone());
    for _ in 0..ATTEMPTS {
        let Ok(current) = offboard_guard::read(&api, &c.provider).await else {
            return;
        };
        let window = current
            .status
            .as_ref()
            .map(|s| s.credit_window.clone())
            .unwrap_or_default();
        let now = crate::api::conditions::now().0;
        let entries = guardrails::release(&window, minute, c.credits, now);
        match patch_window(&api, &current, &entries).await {
            Ok(()) => return,
            Err(kube::Error::Api(status)) if status.is_conflict() => continue,
            Err(e) => {
                tracing::warn!(provider = %c.provider, error = %e, "giving back a refused transfer's hourly claim failed; the window counts it until it leaves");
                return;
            }
        }
    }
}

/// Whether the top-up sent with `key` was refused so that it moved nothing (its claim is
/// then given back): a definitive answer, not a lost one.
pub fn moved_nothing(e: &ProviderError) -> bool {
    matches!(
        crate::changelog::Outcome::of(e),
        crate::changelog::Outcome::Refused
    )
}

async fn patch_window(
    api: &Api<OrgProvider>,
    current: &OrgProvider,
    entries: &[crate::api::CreditWindowEntry],
) -> Result<(), kube::Error> {
    let patch = json!({
        "metadata": {"resourceVersion": current.resource_version()},
        "status": {"creditWindow": entries},
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch_status(&current.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map(drop)
}

fn remember(
    key: &IdempotencyKey,
    provider: &str,
    minute: Option<Timestamp>,
    credits: i64,
    crossed: Vec<String>,
) {
    claimed().insert(
        key.as_str().to_string(),
        Claimed {
            provider: provider.to_string(),
            minute,
            credits,
            crossed,
            at: Instant::now(),
        },
    );
}

/// Claims older than the window are of no use any more.
fn forget_old() {
    let window = Duration::try_from(guardrails::WINDOW).unwrap_or(Duration::from_secs(3660));
    claimed().retain(|_, c| c.at.elapsed() < window);
}

fn hold(
    corg: &CustomerOrg,
    provider: &str,
    proposed: Proposed,
    crossed: &[Crossing],
    now: Timestamp,
) -> Hold {
    let generation = corg.metadata.generation.unwrap_or_default();
    Hold {
        held: HeldCredits {
            credits: proposed.credits,
            target: proposed.target,
            generation,
            guardrails: crossed.iter().map(|c| c.guardrail().to_string()).collect(),
        },
        message: guardrails::message(
            crossed,
            proposed,
            provider,
            generation,
            CONFIRM_CREDITS_ANNOTATION,
        ),
        wait: guardrails::wait(crossed, now),
    }
}

/// The guardrails of `provider` as a plan preview sees them (`orgops plan`): the decision
/// for each top-up in input order, each one sent counting against the next.
pub struct Preview {
    pub limits: GuardrailsSpec,
    pub funds: Funds,
    pub now: Timestamp,
}

impl Preview {
    /// The decision for one top-up; a top-up that would be sent is counted (window and
    /// balance) for the ones after it.
    pub fn next(&mut self, proposed: Proposed, approved: bool) -> Decision {
        let d = guardrails::decide(&self.limits, proposed, &self.funds, approved, self.now);
        if matches!(d, Decision::Send { .. }) {
            if self.limits.max_credits_per_hour.is_some() {
                self.funds.window =
                    guardrails::claim(&self.funds.window, proposed.credits, self.now);
            }
            if let Some(b) = self.funds.parent_balance.as_mut() {
                *b -= proposed.credits;
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corg(generation: i64, annotation: Option<&str>) -> CustomerOrg {
        let mut c: CustomerOrg = serde_json::from_value(json!({
            "apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
            "metadata": {"name": "a", "namespace": "ns", "generation": generation},
            "spec": {"displayName": "A", "providerRef": {"name": "p"}}
        }))
        .expect("corg");
        if let Some(v) = annotation {
            c.annotations_mut()
                .insert(CONFIRM_CREDITS_ANNOTATION.into(), v.into());
        }
        c
    }

    #[test]
    fn an_approval_names_one_generation() {
        assert!(approved(&corg(3, Some("3"))));
        assert!(approved(&corg(3, Some(" 3 "))));
        assert!(!approved(&corg(4, Some("3"))), "stale: a later generation");
        assert!(!approved(&corg(3, Some("true"))));
        assert!(!approved(&corg(3, None)));
    }

    #[test]
    fn a_preview_counts_each_sent_top_up_against_the_next() {
        let mut p = Preview {
            limits: GuardrailsSpec {
                max_credits_per_hour: Some(1000),
                min_parent_balance: Some(100),
                ..Default::default()
            },
            funds: Funds {
                parent_balance: Some(1200),
                window: vec![],
            },
            now: Timestamp::from_second(1_800_000_000).expect("ts"),
        };
        let p1 = Proposed {
            credits: 600,
            target: 600,
        };
        assert!(matches!(p.next(p1, false), Decision::Send { .. }));
        // 600 more would be 1200 in the hour, and leave 600 - 600 < 100.
        let d = p.next(p1, false);
        let Decision::Held(c) = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            c.iter().map(Crossing::guardrail).collect::<Vec<_>>(),
            ["maxCreditsPerHour", "minParentBalance"]
        );
        // A held one is not counted.
        assert!(matches!(
            p.next(
                Proposed {
                    credits: 400,
                    target: 400
                },
                false
            ),
            Decision::Send { .. }
        ));
    }

    #[test]
    fn a_refusal_moved_nothing_a_lost_answer_may_have() {
        use crate::provider::error::ApiFailure;
        let f = |status| ApiFailure {
            status,
            code: "X".into(),
            message: "m".into(),
            request_id: None,
            retry_after: None,
        };
        assert!(moved_nothing(&ProviderError::BillingExhausted(f(402))));
        assert!(moved_nothing(&ProviderError::IdempotencyConflict(f(409))));
        assert!(!moved_nothing(&ProviderError::Timeout));
        assert!(!moved_nothing(&ProviderError::Server(f(503))));
    }
}
