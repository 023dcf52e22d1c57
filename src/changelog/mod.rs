//! The change log: one JSON record per provider write, on the tracing target
//! `orgops::changelog` (schema `orgops.dev/changelog/v1`, docs/changelog.md).
//!
//! Every write goes through [`logged::Logged`], a wrapper around the provider a pass uses,
//! so the records come from one place whatever the pipeline looks like; ParentWebhook
//! writes (the parent's own endpoints, not the `Provider` trait) use [`Recorder`] the same
//! way. A record holds names, ids, numbers and the fields a write changed, never a secret:
//! the types it is built from carry no secret value (minted keys and signing secrets are
//! recorded as "rotated"/their key id only).
//!
//! Records are written with the operator's other logs (stderr, text or JSON): a log
//! pipeline keeps them as long as finance needs, filtered by target. [`parse_line`] reads
//! one back from either format.

pub mod logged;
pub mod revision;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use kube::ResourceExt;

use crate::api::{CustomerOrg, HeldCredits};
use crate::provider::error::ProviderError;

pub use logged::Logged;
pub use revision::GitOps;

/// The tracing target of every record.
pub const TARGET: &str = "orgops::changelog";
/// The schema (and version) of a record: a breaking change gets a new version.
pub const SCHEMA: &str = "orgops.dev/changelog/v1";

/// The object whose spec caused the write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// CustomerOrg or ParentWebhook.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub generation: i64,
}

/// What the call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The provider answered success.
    Ok,
    /// The provider answered a refusal (or the request was refused before it was sent):
    /// nothing changed.
    Refused,
    /// No answer (timeout, connection lost, 5xx, an unreadable answer): it may have
    /// happened; a later record (the replay of the same idempotency key, or `observed`)
    /// tells.
    Unknown,
    /// Accepted and applied later by the provider.
    Pending,
    /// A guardrail held a transfer: nothing was sent.
    Held,
    /// A transfer found on the ledger that no recorded answer told of (its answer was lost
    /// with a killed process, or it was made before this object tracked the org).
    Observed,
}

impl Outcome {
    pub fn of(err: &ProviderError) -> Outcome {
        match err {
            ProviderError::Pending(_) => Outcome::Pending,
            ProviderError::Invalid(_) => Outcome::Refused,
            e => match e.api_failure() {
                Some(f) if f.status < 500 => Outcome::Refused,
                _ => Outcome::Unknown,
            },
        }
    }
}

/// One field a write changed (or asked to change), before and after. Values are what the
/// spec or the provider shows publicly: names, ids, numbers, URLs, never a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub field: String,
    #[serde(default)]
    pub before: Value,
    #[serde(default)]
    pub after: Value,
}

impl Change {
    pub fn new(field: impl Into<String>, before: impl Serialize, after: impl Serialize) -> Change {
        Change {
            field: field.into(),
            before: serde_json::to_value(before).unwrap_or(Value::Null),
            after: serde_json::to_value(after).unwrap_or(Value::Null),
        }
    }
}

/// Why a call failed, without the request: the provider's code and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub message: String,
}

impl From<&ProviderError> for Failure {
    fn from(e: &ProviderError) -> Failure {
        Failure {
            code: e.code().to_string(),
            status: e.api_failure().map(|f| f.status),
            message: e.message().to_string(),
        }
    }
}

/// One record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub schema: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The OrgProvider's name.
    pub provider: String,
    /// layers, gennia or youhodler.
    pub vendor: String,
    pub object: ObjectRef,
    /// The GitOps revision (and where it came from) when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOps>,
    /// create, update, credit-config, transfer, mint, rotate, revoke, webhook-create,
    /// webhook-update, webhook-delete, webhook-rotate-secret, suspend, resume, archive,
    /// migrate, user-update, user-remove, parent-webhook-create, parent-webhook-update,
    /// parent-webhook-delete, parent-webhook-rotate-secret.
    pub call: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The provider's request id (`X-Request-Id`) of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub outcome: Outcome,
    /// Ids the write produced or acted on: transferId (txn_…), keyId, endpointId, orgId,
    /// eventId; and numbers: credits, replayed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub result: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// The fields it changed, before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Transfers: the guardrails crossed (held ones, or approved ones that were sent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<String>,
    /// Transfers: the generation `orgops.dev/confirm-credits` approved, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<i64>,
}

/// The object a pass works for and what the records say about it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subject {
    /// The OrgProvider's name.
    pub provider: String,
    pub object: ObjectRef,
    pub gitops: Option<GitOps>,
    /// `orgops.dev/confirm-credits` names the current generation.
    pub approval: Option<i64>,
    /// `status.credits.allocated` as the pass found it: marked transfers on the ledger
    /// beyond it are recorded as `observed`.
    pub recorded_allocated: Option<i64>,
}

impl Subject {
    /// The subject of a pass over `corg` through OrgProvider `provider`.
    pub fn customer(corg: &CustomerOrg, provider: &str, gitops: Option<GitOps>) -> Subject {
        let generation = corg.metadata.generation.unwrap_or_default();
        Subject {
            provider: provider.to_string(),
            object: ObjectRef {
                kind: "CustomerOrg".to_string(),
                namespace: corg.namespace().unwrap_or_default(),
                name: corg.name_any(),
                uid: corg.uid().unwrap_or_default(),
                generation,
            },
            gitops,
            approval: crate::reconcile::credit_guard::approved(corg).then_some(generation),
            recorded_allocated: corg
                .status
                .as_ref()
                .and_then(|s| s.credits.as_ref())
                .map(|c| c.allocated),
        }
    }

    /// A record of `call` for this subject, outcome `outcome`, stamped now.
    pub fn record(&self, vendor: &str, call: &str, outcome: Outcome) -> Record {
        Record {
            schema: SCHEMA.to_string(),
            time: now(),
            provider: self.provider.clone(),
            vendor: vendor.to_string(),
            object: self.object.clone(),
            gitops: self.gitops.clone(),
            call: call.to_string(),
            org_id: None,
            idempotency_key: None,
            request_id: None,
            outcome,
            result: BTreeMap::new(),
            error: None,
            changes: Vec::new(),
            guardrails: Vec::new(),
            approval: None,
        }
    }
}

fn now() -> String {
    let t = jiff::Timestamp::now();
    t.round(jiff::Unit::Millisecond).unwrap_or(t).to_string()
}

/// The record of a top-up a guardrail holds, when the hold is new (the status did not
/// show this one already): a held transfer is recorded once, with its numbers.
pub fn held(
    subject: &Subject,
    vendor: &str,
    previous: Option<&HeldCredits>,
    now: Option<&HeldCredits>,
) -> Option<Record> {
    let hold = now.filter(|h| previous != Some(*h))?;
    let mut r = subject.record(vendor, "transfer", Outcome::Held);
    r.result.insert("credits".into(), hold.credits.into());
    r.changes.push(Change::new(
        "credits.allocated",
        hold.target - hold.credits,
        hold.target,
    ));
    r.guardrails = hold.guardrails.clone();
    Some(r)
}

/// Writes `record` on the change-log target.
pub fn emit(record: &Record) {
    match serde_json::to_string(record) {
        Ok(line) => tracing::info!(target: "orgops::changelog", "{line}"),
        // A record is plain data; this cannot happen, and must not stop the write.
        Err(e) => {
            tracing::warn!(error = %e, call = %record.call, "change-log record not encodable")
        }
    }
}

/// The record in one log line, in the text or the JSON format; None for other lines.
pub fn parse_line(line: &str) -> Option<Record> {
    let marker = format!("{{\"schema\":\"{SCHEMA}\"");
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) {
        if obj.get("schema").and_then(Value::as_str) == Some(SCHEMA) {
            return serde_json::from_value(Value::Object(obj)).ok();
        }
        let message = obj
            .get("message")
            .or_else(|| obj.get("fields").and_then(|f| f.get("message")))
            .and_then(Value::as_str)?;
        return serde_json::from_str(message).ok();
    }
    let at = line.find(&marker)?;
    serde_json::from_str(line[at..].trim_end()).ok()
}

tokio::task_local! {
    static REQUEST_ID: RefCell<Option<String>>;
}

/// Called by the HTTP clients with each answer's `X-Request-Id`: inside [`capture`], the
/// last one is kept for the record; elsewhere it is dropped.
pub fn note_request_id(id: &str) {
    let _ = REQUEST_ID.try_with(|r| *r.borrow_mut() = Some(id.to_string()));
}

/// Runs `fut`, returning its output and the request id of the last answer it got.
pub async fn capture<T>(fut: impl Future<Output = T>) -> (T, Option<String>) {
    REQUEST_ID
        .scope(RefCell::new(None), async move {
            let out = fut.await;
            let id = REQUEST_ID.with(|r| r.borrow_mut().take());
            (out, id)
        })
        .await
}

/// Writes records for one subject from code that is not a [`crate::provider::Provider`]
/// (the parent's webhook endpoints).
pub struct Recorder {
    pub subject: Subject,
    pub vendor: &'static str,
}

impl Recorder {
    /// Runs one write and records it: `describe` gives the org id, key, result ids and
    /// changes from the answer (or the error).
    pub async fn write<T>(
        &self,
        call: &str,
        fut: impl Future<Output = Result<T, ProviderError>>,
        describe: impl FnOnce(&mut Record, Result<&T, &ProviderError>),
    ) -> Result<T, ProviderError> {
        let (result, request_id) = capture(fut).await;
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) => Outcome::of(e),
        };
        let mut record = self.subject.record(self.vendor, call, outcome);
        record.request_id = request_id.or_else(|| {
            result
                .as_ref()
                .err()
                .and_then(|e| e.request_id().map(str::to_string))
        });
        if let Err(e) = &result {
            record.error = Some(Failure::from(e));
        }
        describe(&mut record, result.as_ref());
        emit(&record);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::error::ApiFailure;

    fn sample() -> Record {
        let subject = Subject {
            provider: "layers".into(),
            object: ObjectRef {
                kind: "CustomerOrg".into(),
                namespace: "ns".into(),
                name: "acme".into(),
                uid: "u-1".into(),
                generation: 3,
            },
            gitops: Some(GitOps {
                revision: Some("abc123".into()),
                source: "annotation".into(),
            }),
            ..Default::default()
        };
        let mut r = subject.record("layers", "transfer", Outcome::Ok);
        r.idempotency_key = Some("orgops-1".into());
        r.result.insert("transferId".into(), "txn_1".into());
        r.result.insert("credits".into(), 500.into());
        r.changes.push(Change::new("credits.allocated", 1000, 1500));
        r
    }

    #[test]
    fn a_record_reads_back_from_a_text_or_a_json_log_line() {
        let r = sample();
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.starts_with(&format!("{{\"schema\":\"{SCHEMA}\"")),
            "{json}"
        );
        let text = format!(
            "2026-01-01T00:00:00Z  INFO reconcile{{object=ns/acme}}: orgops::changelog: {json}"
        );
        assert_eq!(parse_line(&text), Some(r.clone()));
        let as_json = serde_json::json!({
            "timestamp": "2026-01-01T00:00:00Z", "level": "INFO",
            "message": json, "target": TARGET,
        });
        assert_eq!(parse_line(&as_json.to_string()), Some(r.clone()));
        assert_eq!(parse_line(&json), Some(r));
        assert_eq!(parse_line("2026 INFO orgops: starting"), None);
        assert_eq!(parse_line("{\"message\":\"hello\"}"), None);
    }

    #[test]
    fn outcomes_say_whether_it_may_have_happened() {
        let api = |status: u16| ApiFailure {
            status,
            code: "X".into(),
            message: "m".into(),
            request_id: None,
            retry_after: None,
        };
        assert_eq!(
            Outcome::of(&ProviderError::BillingExhausted(api(402))),
            Outcome::Refused
        );
        assert_eq!(
            Outcome::of(&ProviderError::Server(api(502))),
            Outcome::Unknown
        );
        assert_eq!(Outcome::of(&ProviderError::Timeout), Outcome::Unknown);
        assert_eq!(
            Outcome::of(&ProviderError::Decode {
                route: "r".into(),
                detail: "d".into()
            }),
            Outcome::Unknown,
            "a 2xx whose body could not be read happened"
        );
        assert_eq!(
            Outcome::of(&ProviderError::Pending("later".into())),
            Outcome::Pending
        );
        assert_eq!(
            Outcome::of(&ProviderError::Invalid("bad id".into())),
            Outcome::Refused
        );
    }

    #[tokio::test]
    async fn the_last_request_id_of_a_call_is_captured() {
        let ((), id) = capture(async {
            note_request_id("req_1");
            note_request_id("req_2");
        })
        .await;
        assert_eq!(id.as_deref(), Some("req_2"));
        // Outside a capture: dropped, no panic.
        note_request_id("req_3");
        let ((), none) = capture(async {}).await;
        assert_eq!(none, None);
    }
}
