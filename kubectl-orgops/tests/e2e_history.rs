//! `kubectl orgops history` (issue 30) against the real control plane, layers-sim and the
//! operator (run `cargo build -p orgops -p layers-sim --bins` first): one customer funded
//! twice; the history read from the operator's change log (exported to a file, as a log
//! pipeline would) and, with --live, the provider's ledger shows each transfer once, as
//! both a record and a ledger row, with the txn id, the revision and the before/after; a
//! transfer orgops did not make shows as the ledger's alone. No secret in any output.

mod plugin;
#[path = "../../tests/support/mod.rs"]
mod support;

use plugin::plugin;
use serde_json::{Value, json};
use support::apply_yaml_ok;
use support::world::{World, secret_value};

/// (ok, stdout, stderr) of the plugin.
fn run(args: &[&str]) -> (bool, String, String) {
    let r = plugin(args);
    (r.ok, r.stdout, r.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_each_change_once_from_the_records_it_reaches() {
    let w = World::with(
        "hist",
        &["--tier", "unlimited"],
        &["--resync-interval", "5s"],
    )
    .await;
    let ns = w.env.ns.clone();
    let yaml = w.corg_yaml("c", "").replace(
        "metadata: {name: c, namespace:",
        "metadata: {annotations: {orgops.dev/revision: 9d8e7f6}, name: c, namespace:",
    );
    apply_yaml_ok(&yaml);
    w.wait_ready("c").await;
    w.env.kubectl_ok(&[
        "patch",
        "customerorg",
        "c",
        "--type=merge",
        "-p",
        &json!({"spec": {"credits": {"allocated": 900}}}).to_string(),
    ]);
    let ready = w.wait_ready("c").await;
    let key_secret = ready["status"]["apiKeys"][0]["secretName"]
        .as_str()
        .expect("key Secret")
        .to_string();
    let key = secret_value(&w.env, &key_secret, "apiKey").expect("the minted key");

    // The change log as a log pipeline keeps it: the operator's log lines, in a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let exported = dir.path().join("orgops.log");
    std::fs::write(&exported, w.op.log()).expect("write");
    let exported = exported.to_string_lossy().to_string();

    let (ok, out, err) = run(&[
        "history",
        "c",
        "-n",
        &ns,
        "--changelog",
        &exported,
        "--no-pod-logs",
        "--live",
        "-o",
        "json",
    ]);
    assert!(ok, "history failed: {err}");
    let h: Value = serde_json::from_str(&out).expect("JSON history");
    let entries = h["entries"].as_array().expect("entries");
    let transfers: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["what"]
                .as_str()
                .is_some_and(|t| t.starts_with("transfer ok"))
        })
        .collect();
    assert_eq!(transfers.len(), 2, "500 then 400: {h:#}");
    for t in &transfers {
        assert_eq!(
            t["source"], "changelog+ledger",
            "one change, both records: {t}"
        );
        assert_eq!(t["revision"], "9d8e7f6");
        assert!(
            t["ids"].to_string().contains("txn_") && t["ids"].to_string().contains("ledger "),
            "{t}"
        );
    }
    assert!(
        transfers[1]["what"]
            .as_str()
            .is_some_and(|t| t.contains("credits.allocated 500 -> 900")),
        "{:#}",
        transfers[1]
    );
    for call in [
        "create ok",
        "mint ok",
        "webhook-create ok",
        "credit-config ok",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e["what"].as_str().is_some_and(|t| t.starts_with(call))),
            "no {call}: {h:#}"
        );
    }
    assert!(
        entries.iter().any(|e| e["source"] == "event"),
        "Events are read: {h:#}"
    );
    assert_eq!(entries.last().expect("status")["source"], "status");
    let status = entries.last().expect("status")["what"].to_string();
    assert!(status.contains("credits.allocated 900"), "{status}");
    let sources = h["sources"].to_string();
    assert!(
        sources.contains("record(s)") && sources.contains("allocation(s)"),
        "what was read is said: {sources}"
    );

    // Without the change log's records, the ledger still shows what orgops moved, and
    // says the records of those transfers were not among those read.
    let (ok, text, err) = run(&["history", "c", "-n", &ns, "--no-pod-logs", "--live"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("allocation +400 credits (allocated 500 -> 900), by orgops, not in the change-log records read"),
        "{text}"
    );
    assert!(text.contains("the provider's ledger of org_"), "{text}");
    for output in [&out, &text] {
        assert!(!output.contains(&key), "a minted key in history's output");
        assert!(
            !output.contains("whsec_"),
            "a signing secret in history's output"
        );
        assert!(!output.contains(w.sim.parent_key()));
    }
    w.cleanup().await;
}
