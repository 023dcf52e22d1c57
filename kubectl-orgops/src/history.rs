//! `kubectl orgops history NAME`: one customer's changes, from the records this command can
//! reach, merged by time:
//! - change-log records (`orgops::changelog`, docs/changelog.md) from the operator's pod
//!   logs (`--operator-namespace`, label `app.kubernetes.io/name=orgops`, as long as the
//!   pods keep them) and from files a log pipeline exported (`--changelog FILE`);
//! - the object's Events (the API server keeps them an hour by default);
//! - its status (what holds now: credits, keys, endpoints, a held top-up);
//! - with `--live`, the provider's ledger: every allocation into the org, each naming the
//!   transfer key it was sent with, so a ledger row and its change-log record are shown as
//!   one change.
//!
//! What it cannot see: records older than the logs it reads, writes made outside orgops
//! (only the ledger shows those, and only for credits), and Events past their retention.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use orgops::api::{CustomerOrg, OrgProvider};
use orgops::changelog::{self, Outcome, Record};
use orgops::provider::LedgerAllocation;
use orgops::reconcile::plan::{ALLOCATED_FROM, ALLOCATED_TO, ALLOCATION_MARKER, TRANSFER_KEY};

use crate::error::CliError;
use crate::gather;

/// `kubectl orgops history` options.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The CustomerOrg name.
    pub name: String,
    /// Change-log records exported by a log pipeline (JSON or text log lines; `-` reads
    /// stdin). Repeatable.
    #[arg(long = "changelog")]
    pub changelog: Vec<PathBuf>,
    /// Where the operator runs: its pods' logs are read for change-log records.
    #[arg(long, default_value = "orgops-system")]
    pub operator_namespace: String,
    /// Do not read the operator's pod logs.
    #[arg(long)]
    pub no_pod_logs: bool,
    /// Read the provider's ledger (GETs only, with the OrgProvider's credentials).
    #[arg(long)]
    pub live: bool,
    /// json: the entries as a JSON document.
    #[arg(short = 'o', long)]
    pub output: Option<String>,
}

/// One change, from whichever records show it.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// RFC 3339; absent for the status (it says what holds now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// changelog, changelog+ledger, ledger, event, status.
    pub source: String,
    pub what: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct History {
    namespace: String,
    name: String,
    uid: String,
    /// What was read, and what could not be.
    sources: Vec<String>,
    entries: Vec<Entry>,
}

pub async fn run(client: &Client, ns: &str, args: &HistoryArgs) -> Result<String, CliError> {
    let api: Api<CustomerOrg> = Api::namespaced(client.clone(), ns);
    let corg = api
        .get_opt(&args.name)
        .await
        .map_err(|e| CliError::kube(format!("get CustomerOrg {ns}/{}", args.name), e))?
        .ok_or_else(|| CliError::NotFound {
            namespace: ns.to_string(),
            name: args.name.clone(),
        })?;
    let uid = corg.uid().unwrap_or_default();
    let mut sources = Vec::new();
    let mut records = Vec::new();
    for path in &args.changelog {
        match read_file(path) {
            Ok(r) => {
                sources.push(format!("{}: {} record(s)", path.display(), r.len()));
                records.extend(r);
            }
            Err(e) => sources.push(format!("{}: not read ({e})", path.display())),
        }
    }
    if !args.no_pod_logs {
        let (r, said) = pod_records(client, &args.operator_namespace).await;
        sources.push(said);
        records.extend(r);
    }
    records.retain(|r| r.object.uid == uid || (uid.is_empty() && r.object.name == args.name));
    let ledger = if args.live {
        let (rows, said) = ledger(client, &corg).await;
        sources.push(said);
        rows
    } else {
        sources.push("the provider's ledger: not read (add --live)".into());
        Vec::new()
    };
    let events = gather::events(client, &corg, usize::MAX).await?;
    sources.push(format!(
        "Events: {} (the API server keeps them about an hour)",
        events.len()
    ));
    let mut entries = merge(&records, &ledger);
    entries.extend(events.into_iter().map(|e| Entry {
        time: e.time,
        source: "event".into(),
        what: format!("{} {}: {}", e.type_, e.reason, e.note),
        ids: Vec::new(),
        revision: None,
    }));
    entries.sort_by(|a, b| a.time.cmp(&b.time));
    entries.push(status_entry(&corg));
    let history = History {
        namespace: ns.to_string(),
        name: args.name.clone(),
        uid,
        sources,
        entries,
    };
    if args.output.as_deref() == Some("json") {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&history)?));
    }
    Ok(render(&history))
}

fn read_file(path: &PathBuf) -> std::io::Result<Vec<Record>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(path)?))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        if let Some(r) = changelog::parse_line(&line?) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The records in the operator's pods' logs (every container), and what was read.
async fn pod_records(client: &Client, namespace: &str) -> (Vec<Record>, String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = match pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=orgops"))
        .await
    {
        Ok(l) => l,
        Err(e) => {
            return (
                Vec::new(),
                format!("operator pods in {namespace}: not read ({e})"),
            );
        }
    };
    let mut records = Vec::new();
    let mut read = Vec::new();
    for pod in &list.items {
        let name = pod.name_any();
        match pods.logs(&name, &LogParams::default()).await {
            Ok(text) => {
                let before = records.len();
                records.extend(text.lines().filter_map(changelog::parse_line));
                read.push(format!("{name} ({} record(s))", records.len() - before));
            }
            Err(e) => read.push(format!("{name} (not read: {e})")),
        }
    }
    let said = if read.is_empty() {
        format!("operator pods in {namespace}: none found")
    } else {
        format!("operator pod logs: {}", read.join(", "))
    };
    (records, said)
}

async fn ledger(client: &Client, corg: &CustomerOrg) -> (Vec<LedgerAllocation>, String) {
    let Some(org_id) = corg.status.as_ref().and_then(|s| s.org_id.clone()) else {
        return (
            Vec::new(),
            "the provider's ledger: no org id in status yet".into(),
        );
    };
    let name = &corg.spec.provider_ref.name;
    let providers: Api<OrgProvider> = Api::all(client.clone());
    let op = match providers.get_opt(name).await {
        Ok(Some(op)) => op,
        Ok(None) => {
            return (
                Vec::new(),
                format!("the provider's ledger: OrgProvider {name} does not exist"),
            );
        }
        Err(e) => {
            return (
                Vec::new(),
                format!("the provider's ledger: reading OrgProvider {name}: {e}"),
            );
        }
    };
    let provider = match gather::live_provider(client, &op).await {
        Ok(p) => p,
        Err(e) => return (Vec::new(), format!("the provider's ledger: {e}")),
    };
    if !provider.capabilities().allocation_ledger {
        return (
            Vec::new(),
            format!("the provider's ledger: {} keeps none", provider.vendor()),
        );
    }
    match provider.list_allocations(&org_id).await {
        Ok(rows) => {
            let n = rows.len();
            (
                rows,
                format!("the provider's ledger of {org_id}: {n} allocation(s)"),
            )
        }
        Err(e) => (
            Vec::new(),
            format!(
                "the provider's ledger of {org_id}: not read ({} {})",
                e.code(),
                e.message()
            ),
        ),
    }
}

fn describe(r: &Record) -> String {
    let outcome = match r.outcome {
        Outcome::Ok => "ok",
        Outcome::Refused => "refused",
        Outcome::Unknown => "no answer (may have happened)",
        Outcome::Pending => "accepted, applied later",
        Outcome::Held => "HELD (nothing sent)",
        Outcome::Observed => "found on the ledger",
    };
    let changes: Vec<String> = r
        .changes
        .iter()
        .map(|c| format!("{} {} -> {}", c.field, c.before, c.after))
        .collect();
    let mut s = format!("{} {outcome}", r.call);
    if !changes.is_empty() {
        s.push_str(&format!(": {}", changes.join(", ")));
    }
    if !r.guardrails.is_empty() {
        s.push_str(&format!(" [guardrails: {}]", r.guardrails.join(", ")));
    }
    if let Some(g) = r.approval {
        s.push_str(&format!(" [approved for generation {g}]"));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!(" ({} {})", e.code, e.message));
    }
    s
}

fn ids(r: &Record) -> Vec<String> {
    let mut out = Vec::new();
    for k in ["transferId", "keyId", "endpointId", "orgId", "eventId"] {
        if let Some(v) = r.result.get(k).and_then(|v| v.as_str()) {
            out.push(v.to_string());
        }
    }
    out.extend(r.request_id.iter().map(|id| format!("request {id}")));
    out
}

/// The change-log records and the ledger rows as entries: a ledger row whose transfer key
/// a record names is that record's (shown once, `changelog+ledger`); records of the same
/// transfer key (a replay, a later `observed`) are kept, each is a record of its own.
pub fn merge(records: &[Record], ledger: &[LedgerAllocation]) -> Vec<Entry> {
    let keyed: BTreeMap<&str, &LedgerAllocation> = ledger
        .iter()
        .filter_map(|row| {
            let key = row.metadata.as_ref()?.get(TRANSFER_KEY)?;
            Some((key.as_str(), row))
        })
        .collect();
    let mut matched = BTreeSet::new();
    let mut out: Vec<Entry> = records
        .iter()
        .map(|r| {
            let row = r
                .idempotency_key
                .as_deref()
                .filter(|_| r.call == "transfer")
                .and_then(|k| keyed.get(k));
            let mut e = Entry {
                time: Some(r.time.clone()),
                source: "changelog".into(),
                what: describe(r),
                ids: ids(r),
                revision: r.gitops.as_ref().and_then(|g| g.revision.clone()),
            };
            if let Some(row) = row {
                matched.insert(row.event_id.clone());
                e.source = "changelog+ledger".into();
                e.ids.push(format!("ledger {}", row.event_id));
            }
            e
        })
        .collect();
    for row in ledger.iter().filter(|r| !matched.contains(&r.event_id)) {
        let meta = row.metadata.clone().unwrap_or_default();
        let marked = meta.get(ALLOCATION_MARKER).map(String::as_str) == Some("true");
        let span = match (meta.get(ALLOCATED_FROM), meta.get(ALLOCATED_TO)) {
            (Some(f), Some(t)) => format!(" (allocated {f} -> {t})"),
            _ => String::new(),
        };
        let who = if marked {
            "by orgops, not in the change-log records read"
        } else if meta.get("reason").map(String::as_str) == Some("auto_refill") {
            "auto-refill by the provider"
        } else {
            "not by orgops"
        };
        let mut ids = vec![format!("ledger {}", row.event_id)];
        ids.extend(meta.get("transferId").cloned());
        out.push(Entry {
            time: row.created.clone(),
            source: "ledger".into(),
            what: format!("allocation {:+} credits{span}, {who}", row.credits),
            ids,
            revision: None,
        });
    }
    out
}

fn status_entry(corg: &CustomerOrg) -> Entry {
    let st = corg.status.clone().unwrap_or_default();
    let mut parts = Vec::new();
    if let Some(id) = &st.org_id {
        parts.push(format!("org {id} {}", st.state.as_deref().unwrap_or("")));
    }
    if let Some(c) = &st.credits {
        parts.push(format!(
            "credits.allocated {} (balance {})",
            c.allocated, c.balance
        ));
    }
    if let Some(h) = &st.held_credits {
        parts.push(format!(
            "a top-up of {} credits (to {}) HELD by {} at generation {}",
            h.credits,
            h.target,
            h.guardrails.join(", "),
            h.generation
        ));
    }
    for k in &st.api_keys {
        parts.push(format!("key {} {}", k.name, k.id));
    }
    for w in &st.webhooks {
        parts.push(format!("webhook {} {}", w.name, w.id));
    }
    Entry {
        time: None,
        source: "status".into(),
        what: if parts.is_empty() {
            "nothing recorded yet".into()
        } else {
            parts.join("; ")
        },
        ids: Vec::new(),
        revision: None,
    }
}

fn render(h: &History) -> String {
    let mut out = format!("CustomerOrg {}/{} (uid {})\n", h.namespace, h.name, h.uid);
    for s in &h.sources {
        out.push_str(&format!("  read: {s}\n"));
    }
    out.push('\n');
    for e in &h.entries {
        let time = e.time.as_deref().unwrap_or("now");
        out.push_str(&format!("{time:<29} {:<16} {}", e.source, e.what));
        if !e.ids.is_empty() {
            out.push_str(&format!("  [{}]", e.ids.join(", ")));
        }
        if let Some(r) = &e.revision {
            out.push_str(&format!("  rev {r}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use orgops::changelog::{Change, ObjectRef, Subject};

    fn record(key: &str, outcome: Outcome) -> Record {
        let s = Subject {
            provider: "layers".into(),
            object: ObjectRef {
                kind: "CustomerOrg".into(),
                namespace: "ns".into(),
                name: "a".into(),
                uid: "u".into(),
                generation: 2,
            },
            ..Default::default()
        };
        let mut r = s.record("layers", "transfer", outcome);
        r.idempotency_key = Some(key.into());
        r.result.insert("transferId".into(), "txn_1".into());
        r.changes.push(Change::new("credits.allocated", 0, 500));
        r
    }

    fn row(id: &str, credits: i64, meta: &[(&str, &str)]) -> LedgerAllocation {
        LedgerAllocation {
            event_id: id.into(),
            credits,
            metadata: Some(
                meta.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            created: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn a_ledger_row_and_its_record_are_one_change() {
        let records = [record("k1", Outcome::Ok)];
        let ledger = [
            row(
                "evt_1",
                500,
                &[
                    (ALLOCATION_MARKER, "true"),
                    (TRANSFER_KEY, "k1"),
                    (ALLOCATED_FROM, "0"),
                    (ALLOCATED_TO, "500"),
                ],
            ),
            row("evt_2", 300, &[("reason", "auto_refill")]),
            row(
                "evt_3",
                200,
                &[(ALLOCATION_MARKER, "true"), (TRANSFER_KEY, "k9")],
            ),
        ];
        let e = merge(&records, &ledger);
        assert_eq!(e.len(), 3, "{e:#?}");
        assert_eq!(e[0].source, "changelog+ledger");
        assert!(e[0].ids.contains(&"ledger evt_1".to_string()), "{e:?}");
        assert!(
            e[0].what.contains("credits.allocated 0 -> 500"),
            "{}",
            e[0].what
        );
        assert!(e[1].what.contains("auto-refill"), "{}", e[1].what);
        assert!(
            e[2].what
                .contains("by orgops, not in the change-log records read"),
            "{}",
            e[2].what
        );
    }
}
