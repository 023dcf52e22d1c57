//! Fault injection: configuration and the per-request decision. The rates, the lose modes
//! and the dice are sim-kit's; Layers adds the slow-commit fault (writes held in flight).
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use sim_kit::faults::Action;
pub use sim_kit::{Class, FaultRates, LoseMode};

/// The whole fault configuration (`GET/PUT /_sim/faults`). `read` / `write`, when present,
/// replace the top-level rates for that endpoint class.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultConfig {
    pub error5xx: f64,
    pub rate_limit429: f64,
    pub lose_response: f64,
    pub reset: f64,
    pub latency: f64,
    pub latency_ms: u64,
    pub lose_response_mode: LoseMode,
    /// Probability that a write is held "in flight" for `slowCommitMs` before it executes
    /// (duplicates with the same `Idempotency-Key` see it as in flight).
    pub slow_commit: f64,
    pub slow_commit_ms: u64,
    /// Probability that a write's connection is closed at once, with no answer (what a
    /// client sees after its own timeout), while the request goes on: held in flight for
    /// `slowCommitMs`, then executed and committed. A retry meanwhile meets it in flight.
    pub late_commit: f64,
    pub read: Option<FaultRates>,
    pub write: Option<FaultRates>,
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub latency: Option<Duration>,
    pub action: Action,
    /// Hold the request in flight this long before it executes (writes only).
    pub slow_commit: Option<Duration>,
    /// Close the connection at once and commit the request later (`slow_commit` long).
    pub late_commit: bool,
}

impl FaultConfig {
    /// The configuration without the slow commit, as sim-kit rolls it.
    fn kit(&self) -> sim_kit::FaultConfig {
        sim_kit::FaultConfig {
            error5xx: self.error5xx,
            rate_limit429: self.rate_limit429,
            lose_response: self.lose_response,
            reset: self.reset,
            latency: self.latency,
            latency_ms: self.latency_ms,
            lose_response_mode: self.lose_response_mode,
            read: self.read.clone(),
            write: self.write.clone(),
        }
    }

    pub fn rates(&self, class: Class) -> FaultRates {
        self.kit().rates(class)
    }

    pub fn validate(&self) -> Result<(), String> {
        let kit = self.kit();
        let all = [kit.rates(Class::Read), kit.rates(Class::Write), kit.top()];
        if let Some((name, _)) = all.iter().find_map(FaultRates::out_of_range) {
            return Err(format!("{name} must be a probability between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&self.slow_commit) {
            return Err("slowCommit must be a probability between 0 and 1".into());
        }
        if !(0.0..=1.0).contains(&self.late_commit) {
            return Err("lateCommit must be a probability between 0 and 1".into());
        }
        if self.latency_ms > 60_000 {
            return Err("latencyMs must be at most 60000".into());
        }
        if self.slow_commit_ms > 60_000 {
            return Err("slowCommitMs must be at most 60000".into());
        }
        Ok(())
    }

    /// Rolls the dice for one request (sim-kit's order: reset, 5xx, 429, lose-response;
    /// latency independent), then, for a write that proceeds, the late commit and the slow
    /// commit.
    pub fn plan(&self, class: Class) -> Plan {
        let base = self.kit().plan(class);
        let write = class == Class::Write;
        let late_commit = write
            && base.action == Action::Proceed
            && self.late_commit > 0.0
            && rand::rng().random_bool(self.late_commit.clamp(0.0, 1.0));
        let slow_commit = if late_commit {
            Some(Duration::from_millis(self.slow_commit_ms))
        } else {
            (write
                && self.slow_commit > 0.0
                && self.slow_commit_ms > 0
                && rand::rng().random_bool(self.slow_commit.clamp(0.0, 1.0)))
            .then(|| Duration::from_millis(self.slow_commit_ms))
        };
        Plan {
            latency: base.latency,
            action: base.action,
            slow_commit,
            late_commit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_override_and_validation() {
        let cfg: FaultConfig =
            serde_json::from_str(r#"{"error5xx":1.0,"read":{"reset":0.0}}"#).unwrap();
        assert_eq!(cfg.plan(Class::Read).action, Action::Proceed);
        assert!(matches!(cfg.plan(Class::Write).action, Action::Error5xx(_)));
        let bad = FaultConfig {
            reset: 1.5,
            ..Default::default()
        };
        assert_eq!(
            bad.validate().unwrap_err(),
            "reset must be a probability between 0 and 1"
        );
        assert!(serde_json::from_str::<FaultConfig>(r#"{"bogus":1}"#).is_err());
    }
}
