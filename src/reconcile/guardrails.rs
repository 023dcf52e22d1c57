//! The money guardrails' decision, pure: may this top-up be sent, given the OrgProvider's
//! `spec.guardrails`, the credits moved in the last hour (`status.creditWindow`), the
//! parent's balance and whether a person approved it? The I/O (reading the provider,
//! claiming the window) is in `credit_guard.rs`.
//!
//! The hourly window is kept in minute buckets: an entry is the credits claimed in one
//! minute, so the list never holds more than about 61 entries however many customers are
//! funded (a list of transfers would outgrow an object when a fleet is onboarded). A
//! bucket counts until a minute past the hour after its minute began: a transfer claimed
//! at 10:04:59 counts until 11:05:00, a little longer than an hour, never less.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{CreditWindowEntry, GuardrailsSpec};

/// How long a minute bucket counts after its minute began.
pub const WINDOW: SignedDuration = SignedDuration::from_mins(61);

/// Names of the guardrails, as the spec, the status and the metrics spell them.
pub const PER_ORG: &str = "maxCreditsPerOrg";
pub const PER_HOUR: &str = "maxCreditsPerHour";
pub const FLOOR: &str = "minParentBalance";

/// A top-up the planner wants to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// Credits it moves.
    pub credits: i64,
    /// spec.credits.allocated: what the org holds from orgops once it is sent.
    pub target: i64,
}

/// What the guard knows besides the spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Funds {
    /// The parent's prepaid balance, read fresh; None when not read (no floor set).
    pub parent_balance: Option<i64>,
    /// `status.creditWindow` as read.
    pub window: Vec<CreditWindowEntry>,
}

/// One guardrail a top-up would cross, with the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// spec.credits.allocated is above the per-org bound.
    PerOrg { target: i64, max: i64 },
    /// The hour's transfers plus this one exceed the hourly bound. `frees_at`: when
    /// enough of the window has left for it to fit (None: it never fits on its own).
    PerHour {
        moved: i64,
        credits: i64,
        max: i64,
        frees_at: Option<Timestamp>,
    },
    /// The parent's balance after the transfer would be below the floor.
    Floor {
        balance: i64,
        credits: i64,
        min: i64,
    },
}

impl Crossing {
    pub fn guardrail(&self) -> &'static str {
        match self {
            Crossing::PerOrg { .. } => PER_ORG,
            Crossing::PerHour { .. } => PER_HOUR,
            Crossing::Floor { .. } => FLOOR,
        }
    }

    /// One sentence with the numbers.
    pub fn describe(&self) -> String {
        match self {
            Crossing::PerOrg { target, max } => {
                format!("spec.credits.allocated {target} is above guardrails.{PER_ORG} {max}")
            }
            Crossing::PerHour {
                moved,
                credits,
                max,
                frees_at,
            } => {
                let when = match frees_at {
                    Some(at) => format!("; it fits from {}", round(*at)),
                    None => "; it never fits on its own".to_string(),
                };
                format!(
                    "{moved} credits moved in the last hour plus these {credits} exceed guardrails.{PER_HOUR} {max}{when}"
                )
            }
            Crossing::Floor {
                balance,
                credits,
                min,
            } => format!(
                "the parent's balance {balance} minus these {credits} is below guardrails.{FLOOR} {min}"
            ),
        }
    }
}

fn round(t: Timestamp) -> Timestamp {
    t.round(jiff::Unit::Second).unwrap_or(t)
}

/// The guard's answer for one top-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send it. `approved`: the guardrails it crosses, let through by the approval.
    Send { approved: Vec<Crossing> },
    /// Hold it: nothing is sent.
    Held(Vec<Crossing>),
}

/// Whether `entry` still counts at `now`.
fn counts(entry: &CreditWindowEntry, now: Timestamp) -> bool {
    entry
        .minute
        .0
        .checked_add(WINDOW)
        .is_ok_and(|until| until > now)
}

/// The entries that still count, oldest first.
pub fn in_window(entries: &[CreditWindowEntry], now: Timestamp) -> Vec<CreditWindowEntry> {
    let mut kept: Vec<CreditWindowEntry> =
        entries.iter().filter(|e| counts(e, now)).cloned().collect();
    kept.sort_by_key(|e| e.minute.0);
    kept
}

/// Credits claimed in the window at `now`.
pub fn moved(entries: &[CreditWindowEntry], now: Timestamp) -> i64 {
    entries
        .iter()
        .filter(|e| counts(e, now))
        .map(|e| e.credits)
        .sum()
}

/// The minute `now` falls in.
pub fn minute_of(now: Timestamp) -> Timestamp {
    let s = now.as_second();
    Timestamp::from_second(s - s.rem_euclid(60)).unwrap_or(now)
}

/// The window after claiming `credits` at `now`: pruned, the current minute's bucket grown.
pub fn claim(
    entries: &[CreditWindowEntry],
    credits: i64,
    now: Timestamp,
) -> Vec<CreditWindowEntry> {
    let mut window = in_window(entries, now);
    let minute = minute_of(now);
    match window.iter_mut().find(|e| e.minute.0 == minute) {
        Some(e) => {
            e.credits += credits;
            e.transfers += 1;
        }
        None => window.push(CreditWindowEntry {
            minute: Time(minute),
            credits,
            transfers: 1,
        }),
    }
    window
}

/// The window after giving back a claim of `credits` made in `minute` (its transfer was
/// refused, so it moved nothing). A bucket that already left the window is not revived.
pub fn release(
    entries: &[CreditWindowEntry],
    minute: Timestamp,
    credits: i64,
    now: Timestamp,
) -> Vec<CreditWindowEntry> {
    let mut window = in_window(entries, now);
    if let Some(e) = window.iter_mut().find(|e| e.minute.0 == minute) {
        e.credits = (e.credits - credits).max(0);
        e.transfers = e.transfers.saturating_sub(1);
    }
    window.retain(|e| e.transfers > 0 || e.credits > 0);
    window
}

/// When `credits` more fit under `max`, as buckets leave the window (oldest first).
pub fn frees_at(
    entries: &[CreditWindowEntry],
    credits: i64,
    max: i64,
    now: Timestamp,
) -> Option<Timestamp> {
    if credits > max {
        return None;
    }
    let window = in_window(entries, now);
    let mut left: i64 = window.iter().map(|e| e.credits).sum();
    for e in &window {
        if left + credits <= max {
            break;
        }
        left -= e.credits;
        if left + credits <= max {
            return e.minute.0.checked_add(WINDOW).ok();
        }
    }
    (left + credits <= max).then_some(now)
}

/// The decision for `proposed` under `limits`. `approved`: the CustomerOrg carries
/// `orgops.dev/confirm-credits` naming its current generation.
pub fn decide(
    limits: &GuardrailsSpec,
    proposed: Proposed,
    funds: &Funds,
    approved: bool,
    now: Timestamp,
) -> Decision {
    let mut crossed = Vec::new();
    if let Some(max) = limits.max_credits_per_org
        && proposed.target > max
    {
        crossed.push(Crossing::PerOrg {
            target: proposed.target,
            max,
        });
    }
    if let Some(max) = limits.max_credits_per_hour {
        let moved = moved(&funds.window, now);
        if moved.saturating_add(proposed.credits) > max {
            crossed.push(Crossing::PerHour {
                moved,
                credits: proposed.credits,
                max,
                frees_at: frees_at(&funds.window, proposed.credits, max, now),
            });
        }
    }
    if let (Some(min), Some(balance)) = (limits.min_parent_balance, funds.parent_balance)
        && balance.saturating_sub(proposed.credits) < min
    {
        crossed.push(Crossing::Floor {
            balance,
            credits: proposed.credits,
            min,
        });
    }
    if crossed.is_empty() || approved {
        Decision::Send { approved: crossed }
    } else {
        Decision::Held(crossed)
    }
}

/// The condition message of a hold: what, why (with the numbers), how to approve it.
pub fn message(
    crossed: &[Crossing],
    proposed: Proposed,
    provider: &str,
    generation: i64,
    annotation: &str,
) -> String {
    let why: Vec<String> = crossed.iter().map(Crossing::describe).collect();
    format!(
        "a top-up of {} credits (to {}) is held by OrgProvider {provider}'s guardrails; nothing was sent: {}. To send it once, annotate this CustomerOrg {annotation}=\"{generation}\" (an approval holds for this generation only)",
        proposed.credits,
        proposed.target,
        why.join("; ")
    )
}

/// How long a hold waits before looking again by itself: until the hourly window frees
/// when that alone holds it; None when only a person (or the parent's funds) can help.
pub fn wait(crossed: &[Crossing], now: Timestamp) -> Option<std::time::Duration> {
    let mut at = None;
    for c in crossed {
        match c {
            Crossing::PerHour {
                frees_at: Some(t), ..
            } => at = Some(*t),
            _ => return None,
        }
    }
    let left = at?.duration_since(now);
    Some(
        std::time::Duration::try_from(left)
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1)),
    )
}

/// Whether the parent's funds alone hold it (a top-up of the parent may release it).
pub fn waits_for_funds(crossed: &[Crossing]) -> bool {
    crossed.iter().any(|c| matches!(c, Crossing::Floor { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).expect("timestamp")
    }

    fn bucket(minute: i64, credits: i64) -> CreditWindowEntry {
        CreditWindowEntry {
            minute: Time(minute_of(at(minute))),
            credits,
            transfers: 1,
        }
    }

    fn limits(per_org: Option<i64>, per_hour: Option<i64>, floor: Option<i64>) -> GuardrailsSpec {
        GuardrailsSpec {
            max_credits_per_org: per_org,
            max_credits_per_hour: per_hour,
            min_parent_balance: floor,
        }
    }

    fn proposed(credits: i64, target: i64) -> Proposed {
        Proposed { credits, target }
    }

    #[test]
    fn no_guardrails_send_everything() {
        let d = decide(
            &GuardrailsSpec::default(),
            proposed(100_000_000, 100_000_000),
            &Funds::default(),
            false,
            at(0),
        );
        assert_eq!(d, Decision::Send { approved: vec![] });
    }

    #[test]
    fn a_spec_above_the_per_org_bound_is_held_not_capped() {
        let l = limits(Some(50_000), None, None);
        let d = decide(
            &l,
            proposed(60_000, 100_000),
            &Funds::default(),
            false,
            at(0),
        );
        assert_eq!(
            d,
            Decision::Held(vec![Crossing::PerOrg {
                target: 100_000,
                max: 50_000
            }])
        );
        // At the bound exactly: sent.
        let d = decide(
            &l,
            proposed(50_000, 50_000),
            &Funds::default(),
            false,
            at(0),
        );
        assert_eq!(d, Decision::Send { approved: vec![] });
    }

    #[test]
    fn the_per_org_bound_is_on_the_total_not_the_step() {
        // 10,000 more into an org that holds 45,000: the total 55,000 is what is bounded.
        let l = limits(Some(50_000), None, None);
        let d = decide(
            &l,
            proposed(10_000, 55_000),
            &Funds::default(),
            false,
            at(0),
        );
        assert!(matches!(d, Decision::Held(_)), "{d:?}");
    }

    #[test]
    fn an_approval_sends_past_every_crossing_and_says_which() {
        let l = limits(Some(10), Some(10), Some(1000));
        let funds = Funds {
            parent_balance: Some(1000),
            window: vec![bucket(0, 5)],
        };
        let d = decide(&l, proposed(20, 20), &funds, true, at(1));
        let Decision::Send { approved } = d else {
            panic!("approved: {d:?}")
        };
        let names: Vec<_> = approved.iter().map(Crossing::guardrail).collect();
        assert_eq!(names, [PER_ORG, PER_HOUR, FLOOR]);
    }

    #[test]
    fn the_hourly_bound_counts_the_window_and_says_when_it_frees() {
        let l = limits(None, Some(1000), None);
        let funds = Funds {
            parent_balance: None,
            window: vec![bucket(0, 400), bucket(10, 300), bucket(20, 200)],
        };
        // 900 moved; 200 more would be 1100: the bucket of minute 0 must leave (at 61).
        let d = decide(&l, proposed(200, 200), &funds, false, at(30));
        assert_eq!(
            d,
            Decision::Held(vec![Crossing::PerHour {
                moved: 900,
                credits: 200,
                max: 1000,
                frees_at: Some(at(61)),
            }])
        );
        assert_eq!(
            wait(
                match &d {
                    Decision::Held(c) => c,
                    _ => unreachable!(),
                },
                at(30)
            ),
            Some(std::time::Duration::from_secs(31 * 60))
        );
        // 100 fits now.
        let d = decide(&l, proposed(100, 100), &funds, false, at(30));
        assert_eq!(d, Decision::Send { approved: vec![] });
        // After minute 61 the first bucket no longer counts.
        let d = decide(&l, proposed(200, 200), &funds, false, at(61));
        assert_eq!(d, Decision::Send { approved: vec![] });
    }

    #[test]
    fn a_transfer_larger_than_the_hourly_bound_never_fits_alone() {
        let l = limits(None, Some(100), None);
        let d = decide(&l, proposed(101, 101), &Funds::default(), false, at(0));
        let Decision::Held(c) = &d else {
            panic!("{d:?}")
        };
        assert!(matches!(c[0], Crossing::PerHour { frees_at: None, .. }));
        assert_eq!(wait(c, at(0)), None, "only a person can send it");
        assert!(c[0].describe().contains("never fits"));
    }

    #[test]
    fn zero_per_hour_holds_every_transfer() {
        let l = limits(None, Some(0), None);
        let d = decide(&l, proposed(1, 1), &Funds::default(), false, at(0));
        assert!(matches!(d, Decision::Held(_)));
    }

    #[test]
    fn the_floor_holds_a_transfer_that_would_leave_the_parent_below_it() {
        let l = limits(None, None, Some(1000));
        let funds = |balance| Funds {
            parent_balance: Some(balance),
            window: vec![],
        };
        assert_eq!(
            decide(&l, proposed(500, 500), &funds(1500), false, at(0)),
            Decision::Send { approved: vec![] },
            "exactly at the floor afterwards"
        );
        let d = decide(&l, proposed(501, 501), &funds(1500), false, at(0));
        let Decision::Held(c) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            c,
            &vec![Crossing::Floor {
                balance: 1500,
                credits: 501,
                min: 1000
            }]
        );
        assert!(waits_for_funds(c));
        assert_eq!(wait(c, at(0)), None);
    }

    #[test]
    fn claims_fill_the_current_minute_and_prune_the_rest() {
        let window = vec![bucket(0, 10), bucket(30, 20)];
        let now = at(62) + SignedDuration::from_secs(30);
        let after = claim(&window, 5, now);
        assert_eq!(after.len(), 2, "minute 0 left: {after:?}");
        assert_eq!(after[1].minute.0, at(62));
        assert_eq!((after[1].credits, after[1].transfers), (5, 1));
        let again = claim(&after, 7, now + SignedDuration::from_secs(10));
        assert_eq!((again[1].credits, again[1].transfers), (12, 2));
        assert_eq!(moved(&again, now), 32);
    }

    #[test]
    fn a_bucket_counts_for_a_minute_past_the_hour() {
        let window = vec![bucket(0, 10)];
        assert_eq!(moved(&window, at(61) - SignedDuration::from_secs(1)), 10);
        assert_eq!(moved(&window, at(61)), 0);
        // A transfer in the last second of minute 0 counts for more than an hour.
        let late = at(0) + SignedDuration::from_secs(59);
        assert!(at(61).duration_since(late) > SignedDuration::from_hours(1));
    }

    #[test]
    fn a_release_gives_back_a_refused_transfer() {
        let window = claim(&[], 100, at(5));
        let window = claim(&window, 50, at(5));
        let back = release(&window, at(5), 100, at(6));
        assert_eq!((back[0].credits, back[0].transfers), (50, 1));
        let empty = release(&back, at(5), 50, at(6));
        assert!(empty.is_empty(), "{empty:?}");
        // A bucket that left the window stays gone.
        assert!(release(&window, at(5), 100, at(70)).is_empty());
    }

    #[test]
    fn the_message_names_the_numbers_and_the_approval() {
        let crossed = vec![Crossing::PerOrg {
            target: 100_000_000,
            max: 50_000,
        }];
        let m = message(
            &crossed,
            proposed(100_000_000, 100_000_000),
            "layers",
            3,
            "orgops.dev/confirm-credits",
        );
        assert!(m.contains("100000000 credits"), "{m}");
        assert!(m.contains("maxCreditsPerOrg 50000"), "{m}");
        assert!(m.contains("orgops.dev/confirm-credits=\"3\""), "{m}");
        assert!(m.contains("nothing was sent"), "{m}");
    }
}
