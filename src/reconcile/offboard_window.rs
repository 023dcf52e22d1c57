//! The offboarding guard's decision, pure: given the offboardings an OrgProvider recorded
//! (`status.offboarding`), may this CustomerOrg offboard now, and if not, when does a slot
//! free? The I/O (reading the window, claiming a slot) is in `offboard_guard.rs`.
//!
//! The window is rolling: an entry counts while `time + 1h > now`. Every entry counts,
//! confirmed ones too (a confirmation bypasses the bound, it does not hide the offboarding).

use crate::api::OffboardingEntry;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// How far back the window looks.
pub const WINDOW: SignedDuration = SignedDuration::from_hours(1);

/// The deleting CustomerOrg asking for a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// It carries `orgops.dev/confirm-offboard: "true"`.
    pub confirmed: bool,
}

/// Why a CustomerOrg waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pause {
    /// Offboardings in the last hour.
    pub in_window: usize,
    pub max_per_hour: u32,
    /// When the next slot frees; None with `maxPerHour: 0` (only the annotation helps).
    pub next_free: Option<Timestamp>,
}

/// What the guard decided for one candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The candidate already holds a slot (a retried pass): offboard, record nothing.
    AlreadyClaimed,
    /// Record `entries` (the window, pruned, plus the candidate), then offboard.
    Claim { entries: Vec<OffboardingEntry> },
    /// No slot and no confirmation: wait.
    Paused(Pause),
}

/// Whether `entry` still counts at `now`.
fn counts(entry: &OffboardingEntry, now: Timestamp) -> bool {
    entry
        .time
        .0
        .checked_add(WINDOW)
        .is_ok_and(|until| until > now)
}

/// The entries that still count, oldest first.
pub fn in_window(entries: &[OffboardingEntry], now: Timestamp) -> Vec<OffboardingEntry> {
    let mut kept: Vec<OffboardingEntry> =
        entries.iter().filter(|e| counts(e, now)).cloned().collect();
    kept.sort_by_key(|e| e.time.0);
    kept
}

/// When fewer than `max` entries of `window` (oldest first, all counting) will count:
/// the moment the entry at `len - max` leaves. None when that never happens by time alone.
pub fn next_free(window: &[OffboardingEntry], max: u32) -> Option<Timestamp> {
    let max = usize::try_from(max).ok()?;
    if max == 0 {
        return None;
    }
    let oldest_to_leave = window.len().checked_sub(max)?;
    window
        .get(oldest_to_leave)
        .and_then(|e| e.time.0.checked_add(WINDOW).ok())
}

/// The decision for `candidate` against the recorded `entries` and `max` per hour.
pub fn decide(
    entries: &[OffboardingEntry],
    candidate: &Candidate,
    max: u32,
    now: Timestamp,
) -> Decision {
    // Any entry for this uid (even one about to expire) means the slot is taken: a pass
    // retried after the claim (archive failed, process killed) never takes a second one.
    if entries.iter().any(|e| e.uid == candidate.uid) {
        return Decision::AlreadyClaimed;
    }
    let mut window = in_window(entries, now);
    let free = usize::try_from(max).is_ok_and(|max| window.len() < max);
    if !free && !candidate.confirmed {
        return Decision::Paused(Pause {
            in_window: window.len(),
            max_per_hour: max,
            next_free: next_free(&window, max),
        });
    }
    window.push(OffboardingEntry {
        namespace: candidate.namespace.clone(),
        name: candidate.name.clone(),
        uid: candidate.uid.clone(),
        time: Time(now),
        confirmed: !free,
    });
    Decision::Claim { entries: window }
}

/// How long to wait before looking again (at least a second).
pub fn wait(pause: &Pause, now: Timestamp) -> Option<std::time::Duration> {
    let at = pause.next_free?;
    let left = at.duration_since(now);
    Some(
        std::time::Duration::try_from(left)
            .unwrap_or_default()
            .max(std::time::Duration::from_secs(1)),
    )
}

/// The Stalled condition's message: how many, when it frees, how to let it through.
pub fn message(pause: &Pause, provider: &str, annotation: &str) -> String {
    let frees = match pause.next_free {
        Some(at) => format!("the next slot frees at {at}"),
        None => "maxPerHour is 0, so no slot ever frees".to_string(),
    };
    format!(
        "offboarding paused: {} offboardings through OrgProvider {provider} in the last hour \
         (spec.offboarding.maxPerHour {}); {frees}. To offboard this object now, annotate it \
         {annotation}=\"true\"",
        pause.in_window, pause.max_per_hour
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minute * 60).expect("timestamp")
    }

    fn entry(uid: &str, minute: i64) -> OffboardingEntry {
        OffboardingEntry {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
            time: Time(at(minute)),
            confirmed: false,
        }
    }

    fn candidate(uid: &str, confirmed: bool) -> Candidate {
        Candidate {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
            confirmed,
        }
    }

    fn uids(d: &Decision) -> Vec<String> {
        match d {
            Decision::Claim { entries } => entries.iter().map(|e| e.uid.clone()).collect(),
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn a_free_slot_is_claimed_and_the_window_pruned() {
        let entries = [entry("old", 0), entry("a", 30), entry("b", 50)];
        let d = decide(&entries, &candidate("c", false), 3, at(61));
        assert_eq!(uids(&d), ["a", "b", "c"], "the entry from minute 0 left");
        let Decision::Claim { entries } = d else {
            unreachable!()
        };
        assert_eq!(entries[2].time, Time(at(61)));
        assert!(!entries[2].confirmed);
    }

    #[test]
    fn a_full_window_pauses_until_the_oldest_leaves() {
        let entries = [entry("b", 20), entry("a", 10), entry("c", 30)];
        let d = decide(&entries, &candidate("d", false), 3, at(40));
        assert_eq!(
            d,
            Decision::Paused(Pause {
                in_window: 3,
                max_per_hour: 3,
                next_free: Some(at(70)),
            })
        );
    }

    #[test]
    fn an_entry_counts_for_exactly_one_hour() {
        let entries = [entry("a", 0)];
        assert!(matches!(
            decide(
                &entries,
                &candidate("b", false),
                1,
                at(60) - SignedDuration::from_secs(1)
            ),
            Decision::Paused(_)
        ));
        assert_eq!(
            uids(&decide(&entries, &candidate("b", false), 1, at(60))),
            ["b"]
        );
    }

    #[test]
    fn confirmed_objects_pass_and_still_count() {
        let entries = [entry("a", 0), entry("b", 5)];
        let d = decide(&entries, &candidate("c", true), 2, at(10));
        let Decision::Claim { entries } = d else {
            panic!("a confirmed object passes a full window: {d:?}")
        };
        assert!(
            entries[2].confirmed,
            "recorded as let through by the annotation"
        );
        // Three count now: two must leave before an unconfirmed object gets a slot.
        let d = decide(&entries, &candidate("d", false), 2, at(11));
        assert_eq!(
            d,
            Decision::Paused(Pause {
                in_window: 3,
                max_per_hour: 2,
                next_free: Some(at(65)),
            })
        );
    }

    #[test]
    fn a_confirmed_object_with_a_free_slot_is_not_marked_confirmed() {
        let d = decide(&[], &candidate("a", true), 1, at(0));
        let Decision::Claim { entries } = d else {
            panic!("{d:?}")
        };
        assert!(!entries[0].confirmed);
    }

    #[test]
    fn a_retried_pass_never_takes_a_second_slot() {
        let entries = [entry("a", 0), entry("b", 1)];
        assert_eq!(
            decide(&entries, &candidate("a", false), 2, at(2)),
            Decision::AlreadyClaimed
        );
        // Even with the window full and no confirmation.
        assert_eq!(
            decide(&entries, &candidate("b", false), 1, at(2)),
            Decision::AlreadyClaimed
        );
    }

    #[test]
    fn zero_per_hour_needs_the_annotation_for_every_object() {
        let d = decide(&[], &candidate("a", false), 0, at(0));
        assert_eq!(
            d,
            Decision::Paused(Pause {
                in_window: 0,
                max_per_hour: 0,
                next_free: None,
            })
        );
        let Decision::Paused(p) = d else {
            unreachable!()
        };
        assert_eq!(wait(&p, at(0)), None);
        assert!(message(&p, "p", "x/y").contains("maxPerHour is 0"));
        assert!(matches!(
            decide(&[], &candidate("a", true), 0, at(0)),
            Decision::Claim { .. }
        ));
    }

    #[test]
    fn the_wait_ends_when_the_slot_frees() {
        let p = Pause {
            in_window: 5,
            max_per_hour: 5,
            next_free: Some(at(30)),
        };
        assert_eq!(
            wait(&p, at(10)),
            Some(std::time::Duration::from_secs(20 * 60))
        );
        assert_eq!(
            wait(&p, at(31)),
            Some(std::time::Duration::from_secs(1)),
            "never a busy loop"
        );
        let m = message(&p, "layers", "orgops.dev/confirm-offboard");
        assert!(
            m.contains("5 offboardings through OrgProvider layers"),
            "{m}"
        );
        assert!(m.contains(&at(30).to_string()), "{m}");
        assert!(m.contains("orgops.dev/confirm-offboard=\"true\""), "{m}");
    }

    #[test]
    fn future_times_count_until_an_hour_after_them() {
        // A clock ahead on another replica: its entry counts a little longer, never less.
        let entries = [entry("a", 5)];
        let d = decide(&entries, &candidate("b", false), 1, at(0));
        assert_eq!(
            d,
            Decision::Paused(Pause {
                in_window: 1,
                max_per_hour: 1,
                next_free: Some(at(65)),
            })
        );
    }
}
