//! Customers waiting on their parent's funds, and the parent balance each OrgProvider's
//! health check reads.
//!
//! A top-up the parent cannot fund (the provider answered 402, `InsufficientCredits`) or
//! that `guardrails.minParentBalance` holds waits for the partner to top the parent up,
//! which no Kubernetes object announces. So the CustomerOrg controller records each such
//! customer here after its pass (with the credits it needs), and the OrgProvider
//! controller, which reads the parent's balance in its health check, checks every
//! `--funds-check-interval` (default 15 s) while anyone waits. When the balance rose, the
//! waiting customers whose top-up now fits (balance minus the floor covers it) are
//! re-triggered, and only they: a top-up reaches Ready within about one interval and one
//! pass instead of `--slow-retry`.
//!
//! In memory on purpose: after a restart every waiting customer's first pass fails or
//! holds again and records itself anew.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::api::conditions::{READY, find};
use crate::api::{CustomerOrg, CustomerOrgStatus};
use crate::reconcile::guardrails::FLOOR;
use crate::reconcile::plan::{REASON_INSUFFICIENT_CREDITS, desired_allocated};

/// A customer waiting on funds, as "namespace/name".
pub type Waiter = String;

/// The credits `corg`'s top-up needs from the parent while its pass left it waiting on
/// funds (`status`: what the pass wrote): a top-up the floor holds, or one the provider
/// refused for the parent's balance. None: it waits for nothing of the parent's.
pub fn need(corg: &CustomerOrg, status: &CustomerOrgStatus) -> Option<i64> {
    if let Some(held) = &status.held_credits {
        return held
            .guardrails
            .iter()
            .any(|g| g == FLOOR)
            .then_some(held.credits);
    }
    let ready = find(&status.conditions, READY)?;
    if ready.status == "True" || ready.reason != REASON_INSUFFICIENT_CREDITS {
        return None;
    }
    let from = status
        .credits
        .as_ref()
        .map_or(0, |c| c.refused.as_ref().map_or(c.allocated, |r| r.ledger));
    Some((desired_allocated(corg) - from).max(0))
}

#[derive(Default)]
struct ProviderFunds {
    /// The balance the last check read.
    balance: Option<i64>,
    /// Customer -> credits its top-up needs.
    waiting: BTreeMap<Waiter, i64>,
}

/// Shared by the OrgProvider controller and the CustomerOrg controllers of one process.
pub struct Funds {
    by_provider: Mutex<HashMap<String, ProviderFunds>>,
    /// Customers to reconcile now (their parent's balance rose enough).
    retrigger: broadcast::Sender<Vec<Waiter>>,
    /// OrgProviders that just got their first waiter: check them now, then keep polling.
    wake: broadcast::Sender<String>,
}

impl Default for Funds {
    fn default() -> Self {
        let (retrigger, _) = broadcast::channel(64);
        let (wake, _) = broadcast::channel(64);
        Funds {
            by_provider: Mutex::new(HashMap::new()),
            retrigger,
            wake,
        }
    }
}

impl Funds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ProviderFunds>> {
        self.by_provider
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a CustomerOrg pass: `need` is Some(credits) while `who` waits on funds.
    pub fn record(&self, provider: &str, who: &str, need: Option<i64>) {
        let first = {
            let mut all = self.lock();
            match need {
                Some(n) => {
                    let p = all.entry(provider.to_string()).or_default();
                    let was_empty = p.waiting.is_empty();
                    p.waiting.insert(who.to_string(), n);
                    was_empty
                }
                None => {
                    if let Some(p) = all.get_mut(provider) {
                        p.waiting.remove(who);
                    }
                    false
                }
            }
        };
        if first {
            // No receiver (the provider controller not running yet) is fine: its next
            // check polls anyway.
            let _ = self.wake.send(provider.to_string());
        }
    }

    /// `who` is gone (deleted): it waits for nothing any more.
    pub fn forget(&self, who: &str) {
        for p in self.lock().values_mut() {
            p.waiting.remove(who);
        }
    }

    /// Whether anyone waits on `provider`'s funds (its check then polls).
    pub fn anyone_waiting(&self, provider: &str) -> bool {
        self.lock()
            .get(provider)
            .is_some_and(|p| !p.waiting.is_empty())
    }

    /// The balance `provider`'s check read (None: unknown yet).
    pub fn balance(&self, provider: &str) -> Option<i64> {
        self.lock().get(provider).and_then(|p| p.balance)
    }

    /// A health check read `balance` (`floor`: the provider's minParentBalance). When it
    /// rose, the waiters whose top-up now fits are re-triggered (and returned).
    pub fn observed(&self, provider: &str, balance: i64, floor: Option<i64>) -> Vec<Waiter> {
        let due = {
            let mut all = self.lock();
            let p = all.entry(provider.to_string()).or_default();
            let rose = p.balance.is_none_or(|old| balance > old);
            p.balance = Some(balance);
            if !rose {
                return Vec::new();
            }
            let spare = balance.saturating_sub(floor.unwrap_or(0));
            p.waiting
                .iter()
                .filter(|(_, need)| **need <= spare)
                .map(|(who, _)| who.clone())
                .collect::<Vec<_>>()
        };
        if !due.is_empty() {
            let _ = self.retrigger.send(due.clone());
        }
        due
    }

    /// Customers to reconcile now, as balances rise.
    pub fn retriggers(&self) -> broadcast::Receiver<Vec<Waiter>> {
        self.retrigger.subscribe()
    }

    /// OrgProviders that got their first waiting customer.
    pub fn wakes(&self) -> broadcast::Receiver<String> {
        self.wake.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{Cond, settle};
    use crate::api::{CreditsStatus, HeldCredits, RefusedAllocation};

    #[test]
    fn who_waits_on_funds_and_for_how_much() {
        let corg: CustomerOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"displayName": "A", "providerRef": {"name": "p"},
                     "credits": {"allocated": 1500}}
        }))
        .expect("corg");
        let stalled = |reason: &str| CustomerOrgStatus {
            conditions: settle(
                &[],
                &[Cond::new(READY, false, reason, "m")],
                &crate::api::conditions::now(),
            ),
            credits: Some(CreditsStatus {
                allocated: 500,
                refused: Some(RefusedAllocation {
                    ledger: 500,
                    attempts: 1,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            need(&corg, &stalled(REASON_INSUFFICIENT_CREDITS)),
            Some(1000)
        );
        assert_eq!(need(&corg, &stalled("ApiRejected")), None);
        let mut held = stalled("CreditsHeld");
        held.held_credits = Some(HeldCredits {
            credits: 700,
            target: 1500,
            generation: 2,
            guardrails: vec![FLOOR.into()],
        });
        assert_eq!(need(&corg, &held), Some(700));
        held.held_credits = Some(HeldCredits {
            guardrails: vec!["maxCreditsPerOrg".into()],
            ..Default::default()
        });
        assert_eq!(
            need(&corg, &held),
            None,
            "a person, not the parent, releases it"
        );
    }

    #[test]
    fn a_rise_retriggers_exactly_the_waiters_it_can_fund() {
        let f = Funds::default();
        let mut rx = f.retriggers();
        f.observed("p", 0, None);
        f.record("p", "ns/a", Some(500));
        f.record("p", "ns/b", Some(5_000));
        f.record("q", "ns/c", Some(1));
        assert!(f.anyone_waiting("p"));
        assert_eq!(f.observed("p", 1_000, None), ["ns/a"], "b needs more");
        assert_eq!(rx.try_recv().expect("sent"), ["ns/a"]);
        assert!(f.observed("p", 1_000, None).is_empty(), "no rise, no news");
        assert!(f.observed("p", 900, None).is_empty(), "a fall is no news");
        assert_eq!(f.observed("p", 6_000, None), ["ns/a", "ns/b"]);
        // The floor is kept: 6,400 - 1,500 spare covers a but not b.
        assert_eq!(f.observed("p", 6_400, Some(1_500)), ["ns/a"]);
    }

    #[test]
    fn a_customer_that_stops_waiting_is_not_retriggered() {
        let f = Funds::default();
        f.record("p", "ns/a", Some(10));
        f.record("p", "ns/a", None);
        assert!(!f.anyone_waiting("p"));
        assert!(f.observed("p", 100, None).is_empty());
        f.record("p", "ns/b", Some(10));
        f.forget("ns/b");
        assert!(f.observed("p", 200, None).is_empty());
    }

    #[test]
    fn the_first_waiter_wakes_the_provider_check() {
        let f = Funds::default();
        let mut wakes = f.wakes();
        f.record("p", "ns/a", Some(10));
        assert_eq!(wakes.try_recv().expect("woken"), "p");
        f.record("p", "ns/b", Some(10));
        assert!(wakes.try_recv().is_err(), "already polling");
        assert_eq!(f.balance("p"), None);
    }
}
