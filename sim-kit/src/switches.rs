//! Assumption switches: where a vendor's docs are silent, a simulator answers one way by
//! default and a switch selects each other plausible answer (issue #28). The set is chosen by
//! flags at start and changed at run time with `PATCH /_sim/assumptions` (only the fields
//! sent change); `GET /_sim/assumptions` shows it. Kept in memory: a reset keeps it, like
//! the fault config, and the state file never holds it (flags decide on every start).
use std::sync::RwLock;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::control::ControlError;

/// A simulator's switch set `T` (a serde struct of its switches) behind a lock.
#[derive(Debug, Default)]
pub struct Switches<T> {
    current: RwLock<T>,
}

impl<T: Clone + Serialize + DeserializeOwned> Switches<T> {
    pub fn new(initial: T) -> Switches<T> {
        Switches {
            current: RwLock::new(initial),
        }
    }

    /// The switches now in force.
    pub fn get(&self) -> T {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `GET /_sim/assumptions`.
    pub fn view(&self) -> Value {
        serde_json::to_value(self.get()).unwrap_or(Value::Null)
    }

    /// `PATCH /_sim/assumptions`: the fields of `body` (a JSON object) replace the same
    /// fields of the current set; an unknown field or a value of the wrong shape is a
    /// `422` naming it, and nothing changes.
    pub fn patch(&self, body: &[u8]) -> Result<Value, ControlError> {
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        let changes: serde_json::Map<String, Value> = serde_json::from_slice(body)
            .map_err(|e| ControlError::validation(format!("invalid request body: {e}")))?;
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        let mut merged = match serde_json::to_value(&*guard) {
            Ok(Value::Object(m)) => m,
            _ => return Err(ControlError::validation("the switch set is not an object")),
        };
        for (field, value) in changes {
            if !merged.contains_key(&field) {
                let known: Vec<&String> = merged.keys().collect();
                return Err(ControlError::validation(format!(
                    "unknown assumption switch {field:?}; known: {known:?}"
                )));
            }
            merged.insert(field, value);
        }
        let next: T = serde_json::from_value(Value::Object(merged))
            .map_err(|e| ControlError::validation(format!("invalid switch value: {e}")))?;
        *guard = next;
        drop(guard);
        Ok(self.view())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Set {
        mode: String,
        burst: Option<u32>,
    }

    #[test]
    fn a_patch_changes_only_the_fields_sent_and_refuses_unknown_ones() {
        let s = Switches::new(Set {
            mode: "a".into(),
            burst: None,
        });
        let v = s.patch(br#"{"burst": 5}"#).unwrap();
        assert_eq!(v["mode"], "a");
        assert_eq!(s.get().burst, Some(5));
        let e = s.patch(br#"{"nope": 1}"#).unwrap_err();
        assert!(e.message.contains("nope"), "{e:?}");
        let e = s.patch(br#"{"burst": "x"}"#).unwrap_err();
        assert_eq!(e.status, 422);
        assert_eq!(s.get().burst, Some(5), "a refused patch changes nothing");
        s.patch(br#"{"burst": null}"#).unwrap();
        assert_eq!(s.get().burst, None);
    }
}
