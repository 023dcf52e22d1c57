//! Fault injection: configuration and the per-request decision.
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ratelimit::Class;

/// Probabilities (0..1) per fault kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultRates {
    /// 500/502/503 before executing.
    pub error5xx: f64,
    /// 429 RATE_LIMITED before executing.
    pub rate_limit429: f64,
    /// Execute and commit, then answer 502 or drop the connection.
    pub lose_response: f64,
    /// Drop the connection before executing.
    pub reset: f64,
    /// Add `latencyMs` before executing.
    pub latency: f64,
}

/// How a lost response shows up to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LoseMode {
    /// Half 502, half dropped connection.
    #[default]
    Mixed,
    BadGateway,
    Drop,
}

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
    pub read: Option<FaultRates>,
    pub write: Option<FaultRates>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Proceed,
    Error5xx(u16),
    RateLimited,
    Reset,
    /// Execute, store, then lose the response; `true` = drop the connection, `false` = 502.
    LoseResponse(bool),
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub latency: Option<Duration>,
    pub action: Action,
    /// Hold the request in flight this long before it executes (writes only).
    pub slow_commit: Option<Duration>,
}

impl FaultConfig {
    pub fn rates(&self, class: Class) -> FaultRates {
        let over = match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        };
        over.clone().unwrap_or(FaultRates {
            error5xx: self.error5xx,
            rate_limit429: self.rate_limit429,
            lose_response: self.lose_response,
            reset: self.reset,
            latency: self.latency,
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut all = vec![
            ("", self.rates(Class::Read)),
            ("", self.rates(Class::Write)),
        ];
        all.push((
            "",
            FaultRates {
                error5xx: self.error5xx,
                rate_limit429: self.rate_limit429,
                lose_response: self.lose_response,
                reset: self.reset,
                latency: self.latency,
            },
        ));
        for (_, r) in all {
            for (name, p) in [
                ("error5xx", r.error5xx),
                ("rateLimit429", r.rate_limit429),
                ("loseResponse", r.lose_response),
                ("reset", r.reset),
                ("latency", r.latency),
            ] {
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!("{name} must be a probability between 0 and 1"));
                }
            }
        }
        if !(0.0..=1.0).contains(&self.slow_commit) {
            return Err("slowCommit must be a probability between 0 and 1".into());
        }
        if self.latency_ms > 60_000 {
            return Err("latencyMs must be at most 60000".into());
        }
        if self.slow_commit_ms > 60_000 {
            return Err("slowCommitMs must be at most 60000".into());
        }
        Ok(())
    }

    pub fn is_quiet(&self) -> bool {
        *self
            == FaultConfig {
                latency_ms: self.latency_ms,
                lose_response_mode: self.lose_response_mode,
                slow_commit_ms: self.slow_commit_ms,
                ..FaultConfig::default()
            }
    }

    /// Rolls the dice for one request. The kinds are tried in a fixed order so each
    /// probability is "at most this often".
    pub fn plan(&self, class: Class) -> Plan {
        if self.is_quiet() {
            return Plan {
                latency: None,
                action: Action::Proceed,
                slow_commit: None,
            };
        }
        let r = self.rates(class);
        let mut rng = rand::rng();
        let latency = (self.latency_ms > 0 && rng.random_bool(r.latency.clamp(0.0, 1.0)))
            .then(|| Duration::from_millis(self.latency_ms));
        let mut hit = |p: f64| rng.random_bool(p.clamp(0.0, 1.0));
        let action = if hit(r.reset) {
            Action::Reset
        } else if hit(r.error5xx) {
            Action::Error5xx([500, 502, 503][rand::rng().random_range(0..3)])
        } else if hit(r.rate_limit429) {
            Action::RateLimited
        } else if hit(r.lose_response) {
            let drop = match self.lose_response_mode {
                LoseMode::Mixed => rand::rng().random_bool(0.5),
                LoseMode::BadGateway => false,
                LoseMode::Drop => true,
            };
            Action::LoseResponse(drop)
        } else {
            Action::Proceed
        };
        let slow_commit = (class == Class::Write
            && self.slow_commit_ms > 0
            && rand::rng().random_bool(self.slow_commit.clamp(0.0, 1.0)))
        .then(|| Duration::from_millis(self.slow_commit_ms));
        Plan {
            latency,
            action,
            slow_commit,
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
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<FaultConfig>(r#"{"bogus":1}"#).is_err());
    }
}
