//! Money in a plan: per OrgProvider, the parent's balance against the credits the plan
//! moves (a shortfall when it holds less), and every top-up a guardrail of
//! `spec.guardrails` would hold, decided as the operator decides it
//! (`reconcile::credit_guard::Preview`): in input order, each top-up that would be sent
//! counting against the hourly window and the parent's balance for the ones after it.

use std::collections::BTreeMap;

use kube::Client;
use kube::api::Api;
use serde::Serialize;

use super::Providers;
use super::render::ObjectPlan;
use crate::api::{CONFIRM_CREDITS_ANNOTATION, OrgProvider};
use crate::reconcile::credit_guard::Preview;
use crate::reconcile::guardrails::{Crossing, Decision, Funds, Proposed};

/// What a guardrail would do to one top-up.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    /// The guardrails it would cross.
    pub guardrails: Vec<String>,
    /// Why, with the numbers.
    pub reasons: Vec<String>,
    /// The annotation that would send it (on this object, naming its generation).
    pub approve_with: String,
}

/// The money of one OrgProvider in this plan.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProviderFunds {
    pub provider: String,
    /// The parent's prepaid balance now; absent when it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_balance: Option<i64>,
    /// Credits the plan's top-ups would move (held ones left out).
    pub credits_moved: i64,
    /// Credits of the top-ups a guardrail would hold.
    pub credits_held: i64,
    pub transfers_held: usize,
    /// How many credits the parent lacks for what the plan moves (0: none).
    pub shortfall: i64,
    /// Why the balance or the guardrails could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Reading {
    funds: ProviderFunds,
    preview: Option<Preview>,
    balance_left: Option<i64>,
}

async fn read(client: &Client, providers: &mut Providers, name: &str) -> Reading {
    let mut funds = ProviderFunds {
        provider: name.to_string(),
        ..Default::default()
    };
    let mut errors = Vec::new();
    let balance = match providers.get(client, name).await {
        Ok(p) if p.capabilities().allocation_ledger => match p.parent_balance().await {
            Ok(b) => Some(b),
            Err(e) => {
                errors.push(format!(
                    "reading the parent's balance: {} {}",
                    e.code(),
                    e.message()
                ));
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            errors.push(e);
            None
        }
    };
    funds.parent_balance = balance;
    let api: Api<OrgProvider> = Api::all(client.clone());
    let preview = match api.get_opt(name).await {
        Ok(Some(op)) => op.spec.guardrails.clone().map(|limits| Preview {
            limits,
            funds: Funds {
                parent_balance: balance,
                window: op.status.map(|s| s.credit_window).unwrap_or_default(),
            },
            now: jiff::Timestamp::now(),
        }),
        Ok(None) => None,
        Err(e) => {
            errors.push(format!("reading OrgProvider {name}'s guardrails: {e}"));
            None
        }
    };
    if !errors.is_empty() {
        funds.error = Some(errors.join("; "));
    }
    Reading {
        funds,
        preview,
        balance_left: balance,
    }
}

/// Marks the top-ups of `plans` a guardrail would hold and returns the funds of every
/// OrgProvider whose parent the plan moves credits from.
pub async fn check(
    client: &Client,
    providers: &mut Providers,
    plans: &mut [ObjectPlan],
) -> Vec<ProviderFunds> {
    let mut readings: BTreeMap<String, Reading> = BTreeMap::new();
    for p in plans.iter_mut() {
        let Some(provider) = p.provider.clone() else {
            continue;
        };
        let approved = p.approved;
        let generation = p.generation;
        for step in p.actions.iter_mut().filter(|s| s.op == "allocate") {
            let (Some(credits), Some(target)) = (step.credits, step.target) else {
                continue;
            };
            if !readings.contains_key(&provider) {
                let r = read(client, providers, &provider).await;
                readings.insert(provider.clone(), r);
            }
            let Some(reading) = readings.get_mut(&provider) else {
                continue;
            };
            let proposed = Proposed { credits, target };
            let decision = match reading.preview.as_mut() {
                Some(preview) => preview.next(proposed, approved),
                None => Decision::Send { approved: vec![] },
            };
            match decision {
                Decision::Held(crossed) => {
                    reading.funds.credits_held += credits;
                    reading.funds.transfers_held += 1;
                    step.held = Some(held(&crossed, generation));
                }
                Decision::Send { .. } => {
                    reading.funds.credits_moved += credits;
                    if let Some(left) = reading.balance_left.as_mut() {
                        if *left < credits {
                            step.text.push_str(&format!(
                                " (the parent's balance, {left} by then, cannot cover it: InsufficientCredits until it is topped up)"
                            ));
                        }
                        *left -= credits;
                    }
                }
            }
        }
    }
    readings
        .into_values()
        .map(|mut r| {
            if let Some(b) = r.funds.parent_balance {
                r.funds.shortfall = (r.funds.credits_moved - b).max(0);
            }
            r.funds
        })
        .collect()
}

fn held(crossed: &[Crossing], generation: i64) -> Held {
    Held {
        guardrails: crossed.iter().map(|c| c.guardrail().to_string()).collect(),
        reasons: crossed.iter().map(Crossing::describe).collect(),
        approve_with: format!("{CONFIRM_CREDITS_ANNOTATION}: \"{generation}\""),
    }
}

/// One line per provider: the balance against what the plan moves, and what is held.
pub fn lines(funds: &[ProviderFunds]) -> Vec<String> {
    funds
        .iter()
        .map(|f| {
            let mut line = format!("OrgProvider {}: ", f.provider);
            match f.parent_balance {
                Some(b) if f.shortfall > 0 => line.push_str(&format!(
                    "the parent holds {b} credits, this plan moves {}: SHORT by {} credits",
                    f.credits_moved, f.shortfall
                )),
                Some(b) => line.push_str(&format!(
                    "the parent holds {b} credits, this plan moves {}",
                    f.credits_moved
                )),
                None => line.push_str(&format!(
                    "this plan moves {} credits (the parent's balance is unknown)",
                    f.credits_moved
                )),
            }
            if f.transfers_held > 0 {
                line.push_str(&format!(
                    "; {} top-up(s) of {} credits HELD by guardrails",
                    f.transfers_held, f.credits_held
                ));
            }
            if let Some(e) = &f.error {
                line.push_str(&format!(" ({e})"));
            }
            line
        })
        .collect()
}

/// The held marker of a step, in one line.
pub fn held_text(h: &Held) -> String {
    format!(
        "HELD by guardrails.{}: {}; approve with {}",
        h.guardrails.join(", guardrails."),
        h.reasons.join("; "),
        h.approve_with
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_name_the_shortfall_and_the_holds() {
        let f = ProviderFunds {
            provider: "layers".into(),
            parent_balance: Some(3000),
            credits_moved: 5000,
            credits_held: 100_000_000,
            transfers_held: 1,
            shortfall: 2000,
            error: None,
        };
        let l = lines(&[f]);
        assert_eq!(
            l[0],
            "OrgProvider layers: the parent holds 3000 credits, this plan moves 5000: SHORT by 2000 credits; 1 top-up(s) of 100000000 credits HELD by guardrails"
        );
        let h = held(
            &[Crossing::PerOrg {
                target: 100,
                max: 10,
            }],
            4,
        );
        assert_eq!(
            held_text(&h),
            "HELD by guardrails.maxCreditsPerOrg: spec.credits.allocated 100 is above guardrails.maxCreditsPerOrg 10; approve with orgops.dev/confirm-credits: \"4\""
        );
    }
}
