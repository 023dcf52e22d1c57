//! The common `/_sim/` API (state, counters, faults, reset, clock) plus the app's own
//! control routes. No authentication, never faulted; errors are `{"error":{code,message}}`.
use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::clock::fmt_millis;
use crate::faults::FaultConfig;
use crate::http::{Rejection, Reply};
use crate::router::{self, Miss, Route};
use crate::{App, Sim, lock};

/// A control-call error: 422 `VALIDATION` (naming the field) or 404 `NOT_FOUND`.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ControlError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self {
            status: 422,
            code: "VALIDATION",
            message: message.into(),
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self {
            status: 404,
            code: "NOT_FOUND",
            message: format!("{what} not found"),
        }
    }
    fn reply(&self) -> Reply {
        Reply::json(
            self.status,
            &json!({ "error": { "code": self.code, "message": self.message } }),
        )
    }
}

/// Parses a control body strictly; the message names the offending field. An empty body
/// counts as `{}`.
pub fn parse_control_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ControlError::validation(format!("invalid request body: {e}")))
}

#[derive(Debug, Clone, Copy)]
enum Builtin {
    State,
    Counters,
    Writes,
    FaultsGet,
    FaultsPut,
    Reset,
    ClockGet,
    ClockAdvance,
    AssumptionsGet,
    AssumptionsPatch,
}

static BUILTINS: &[Route<Builtin>] = &[
    ("/_sim/state", Method::GET, Builtin::State),
    ("/_sim/counters", Method::GET, Builtin::Counters),
    ("/_sim/writes", Method::GET, Builtin::Writes),
    ("/_sim/faults", Method::GET, Builtin::FaultsGet),
    ("/_sim/faults", Method::PUT, Builtin::FaultsPut),
    ("/_sim/reset", Method::POST, Builtin::Reset),
    ("/_sim/clock", Method::GET, Builtin::ClockGet),
    ("/_sim/clock", Method::POST, Builtin::ClockAdvance),
    ("/_sim/assumptions", Method::GET, Builtin::AssumptionsGet),
    (
        "/_sim/assumptions",
        Method::PATCH,
        Builtin::AssumptionsPatch,
    ),
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Advance {
    advance_seconds: u64,
}

fn clock_json<A: App>(sim: &Sim<A>) -> Value {
    json!({
        "now": fmt_millis(sim.clock.now_us()),
        "offsetSeconds": sim.clock.offset_us() / 1_000_000,
    })
}

pub(crate) fn handle<A: App>(
    sim: &Sim<A>,
    method: &Method,
    path: &str,
    body: Result<Bytes, Rejection>,
) -> (&'static str, Reply) {
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            return (
                "(unmatched)",
                ControlError::validation(format!("request body refused: {r:?}")).reply(),
            );
        }
    };
    let builtin = router::route(BUILTINS, method, path);
    let app = match &builtin {
        Err(Miss::NotFound) => Some(router::route(sim.app.control_routes(), method, path)),
        _ => None,
    };
    let miss = |m: Miss| -> (&'static str, Reply) {
        match m {
            Miss::NotFound => (
                "(unmatched)",
                ControlError::not_found("control route").reply(),
            ),
            Miss::MethodNotAllowed(allowed) => {
                let mut r = ControlError {
                    status: 405,
                    code: "METHOD_NOT_ALLOWED",
                    message: format!("{method} is not allowed on {path}"),
                }
                .reply();
                r.headers.push(("allow", allowed.join(", ")));
                ("(unmatched)", r)
            }
        }
    };
    let result: (&'static str, Result<Reply, ControlError>) = match (builtin, app) {
        (Ok(m), _) => (m.template, run_builtin(sim, m.op, &body)),
        (Err(Miss::NotFound), Some(Ok(m))) => {
            let now = sim.clock.now_us();
            let r = {
                let mut st = lock(&sim.state);
                sim.app.control(&mut st, m.op, &m.params, &body, now)
            };
            if method != Method::GET {
                sim.dirty.notify_one();
            }
            (m.template, r.map(|v| Reply::json(200, &v)))
        }
        (Err(Miss::NotFound), Some(Err(m))) => return miss(m),
        (Err(m), _) => return miss(m),
    };
    match result {
        (t, Ok(r)) => (t, r),
        (t, Err(e)) => (t, e.reply()),
    }
}

fn run_builtin<A: App>(sim: &Sim<A>, op: Builtin, body: &[u8]) -> Result<Reply, ControlError> {
    if let Builtin::State = op {
        let now = sim.clock.now_us();
        let bytes = sim.app.state_view(&lock(&sim.state), now);
        return Ok(Reply {
            status: 200,
            body: bytes.into(),
            headers: Vec::new(),
        });
    }
    builtin_value(sim, op, body).map(|v| Reply::json(200, &v))
}

fn builtin_value<A: App>(sim: &Sim<A>, op: Builtin, body: &[u8]) -> Result<Value, ControlError> {
    match op {
        Builtin::State => Ok(Value::Null),
        Builtin::Counters => Ok(sim.counters.json()),
        Builtin::Writes => Ok(sim.counters.writes_json()),
        Builtin::FaultsGet => Ok(serde_json::to_value(sim.faults()).unwrap_or(Value::Null)),
        Builtin::FaultsPut => {
            let cfg: FaultConfig = parse_control_body(body)?;
            sim.set_faults(cfg).map_err(ControlError::validation)?;
            Ok(serde_json::to_value(sim.faults()).unwrap_or(Value::Null))
        }
        Builtin::Reset => {
            let now = sim.clock.now_us();
            sim.app.reset(&mut lock(&sim.state), now);
            sim.counters.clear();
            sim.dirty.notify_one();
            Ok(json!({ "reset": true }))
        }
        Builtin::ClockGet => Ok(clock_json(sim)),
        Builtin::AssumptionsGet => Ok(sim.app.assumptions()),
        Builtin::AssumptionsPatch => sim.app.set_assumptions(body),
        Builtin::ClockAdvance => {
            let a: Advance = parse_control_body(body)?;
            if a.advance_seconds > 10 * 365 * 86_400 {
                return Err(ControlError::validation(
                    "advanceSeconds must be at most 315360000 (10 years)",
                ));
            }
            sim.clock.advance_us(a.advance_seconds as i64 * 1_000_000);
            Ok(clock_json(sim))
        }
    }
}
