//! Fault injection: the configuration (`GET/PUT /_sim/faults`) and the per-request decision.
use std::time::Duration;

use http::Method;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Endpoint class for fault overrides: reads (GET, HEAD) and writes (everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Read,
    Write,
}

impl Class {
    pub fn of(method: &Method) -> Class {
        if method == Method::GET || method == Method::HEAD {
            Class::Read
        } else {
            Class::Write
        }
    }
}

/// Probabilities (0..1) per fault kind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultRates {
    /// 500/502/503 before executing.
    pub error5xx: f64,
    /// 429 before executing.
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

impl std::str::FromStr for LoseMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mixed" => Ok(LoseMode::Mixed),
            "bad-gateway" | "502" => Ok(LoseMode::BadGateway),
            "drop" => Ok(LoseMode::Drop),
            _ => Err(format!(
                "unknown lose mode {s:?} (mixed, bad-gateway, drop)"
            )),
        }
    }
}

/// The whole fault configuration. `read` / `write`, when present, replace the top-level
/// rates for that endpoint class.
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
    pub read: Option<FaultRates>,
    pub write: Option<FaultRates>,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Proceed,
    Error5xx(u16),
    RateLimited,
    Reset,
    /// Execute, commit, then lose the response; `true` = drop the connection, `false` = 502.
    LoseResponse(bool),
}

#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub latency: Option<Duration>,
    pub action: Action,
}

impl Plan {
    /// No latency, proceed.
    pub const QUIET: Plan = Plan {
        latency: None,
        action: Action::Proceed,
    };
}

impl FaultRates {
    /// The first probability outside 0..1, as (camelCase field name, value).
    pub fn out_of_range(&self) -> Option<(&'static str, f64)> {
        [
            ("error5xx", self.error5xx),
            ("rateLimit429", self.rate_limit429),
            ("loseResponse", self.lose_response),
            ("reset", self.reset),
            ("latency", self.latency),
        ]
        .into_iter()
        .find(|(_, p)| !(0.0..=1.0).contains(p))
    }

    /// Rolls the dice for one request. Kinds are tried in a fixed order (reset, 5xx, 429,
    /// lose-response) so each probability is "at most this often"; latency (`latency_ms`,
    /// 0 = none) is independent.
    pub fn roll(&self, latency_ms: u64, mode: LoseMode) -> Plan {
        let mut rng = rand::rng();
        let latency = (latency_ms > 0 && rng.random_bool(self.latency.clamp(0.0, 1.0)))
            .then(|| Duration::from_millis(latency_ms));
        let mut hit = |p: f64| rng.random_bool(p.clamp(0.0, 1.0));
        let action = if hit(self.reset) {
            Action::Reset
        } else if hit(self.error5xx) {
            Action::Error5xx([500, 502, 503][rand::rng().random_range(0..3)])
        } else if hit(self.rate_limit429) {
            Action::RateLimited
        } else if hit(self.lose_response) {
            let drop = match mode {
                LoseMode::Mixed => rand::rng().random_bool(0.5),
                LoseMode::BadGateway => false,
                LoseMode::Drop => true,
            };
            Action::LoseResponse(drop)
        } else {
            Action::Proceed
        };
        Plan { latency, action }
    }
}

impl FaultConfig {
    /// The top-level rates (used for a class without its own override).
    pub fn top(&self) -> FaultRates {
        FaultRates {
            error5xx: self.error5xx,
            rate_limit429: self.rate_limit429,
            lose_response: self.lose_response,
            reset: self.reset,
            latency: self.latency,
        }
    }

    pub fn rates(&self, class: Class) -> FaultRates {
        let over = match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
        };
        over.clone().unwrap_or_else(|| self.top())
    }

    /// Every probability within 0..1 and the latency bounded; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (prefix, r) in [
            ("", Some(self.top())),
            ("read.", self.read.clone()),
            ("write.", self.write.clone()),
        ] {
            if let Some((name, p)) = r.and_then(|r| r.out_of_range()) {
                return Err(format!(
                    "{prefix}{name} must be a probability between 0 and 1, got {p}"
                ));
            }
        }
        if self.latency_ms > 60_000 {
            return Err("latencyMs must be at most 60000".into());
        }
        Ok(())
    }

    fn is_quiet(&self) -> bool {
        *self
            == FaultConfig {
                latency_ms: self.latency_ms,
                lose_response_mode: self.lose_response_mode,
                ..FaultConfig::default()
            }
    }

    /// Rolls the dice for one request of `class` (see [`FaultRates::roll`]).
    pub fn plan(&self, class: Class) -> Plan {
        if self.is_quiet() {
            return Plan::QUIET;
        }
        self.rates(class)
            .roll(self.latency_ms, self.lose_response_mode)
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
        let bad: FaultConfig = serde_json::from_str(r#"{"write":{"reset":1.5}}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("write.reset"));
        assert!(serde_json::from_str::<FaultConfig>(r#"{"bogus":1}"#).is_err());
        let lose: FaultConfig =
            serde_json::from_str(r#"{"loseResponse":1.0,"loseResponseMode":"drop"}"#).unwrap();
        assert_eq!(lose.plan(Class::Write).action, Action::LoseResponse(true));
    }
}
