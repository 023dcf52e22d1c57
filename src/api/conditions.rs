//! kstatus conditions: Ready, Reconciling, Stalled.
//!
//! `lastTransitionTime` changes only when a condition's status flips, so the same
//! observation always yields the same status (and a converged object costs no writes).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// One condition as the reconciler wants it, before timestamps are settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}

impl Cond {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Cond {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: None,
        }
    }

    pub fn generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }
}

pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Builds the condition list from `wanted`, keeping each previous `lastTransitionTime`
/// when the status did not flip; `now` stamps the ones that did.
pub fn settle(previous: &[Condition], wanted: &[Cond], now: &Time) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" };
            let last_transition_time = match find(previous, w.type_) {
                Some(old) if old.status == status => old.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: w.type_.to_string(),
                status: status.to_string(),
                reason: w.reason.clone(),
                message: w.message.clone(),
                observed_generation: w.observed_generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The current time truncated to whole seconds (the API serialises seconds).
pub fn now() -> Time {
    let ts = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_kept_when_status_unchanged() {
        let first = settle(&[], &[Cond::new(READY, true, "Reconciled", "ok")], &at(10));
        let second = settle(
            &first,
            &[Cond::new(READY, true, "Reconciled", "still ok")],
            &at(20),
        );
        assert_eq!(second[0].last_transition_time, at(10));
        assert_eq!(second[0].message, "still ok");
        let flipped = settle(&second, &[Cond::new(READY, false, "Failed", "no")], &at(30));
        assert_eq!(flipped[0].last_transition_time, at(30));
        assert_eq!(flipped[0].status, "False");
    }
}
