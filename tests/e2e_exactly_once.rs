//! Exactly once on the paths the chaos suite does not walk (issue 10), end to end on the
//! real control plane: what orgops created is decided from durable markers (the owner
//! marker with the object's uid, owned Secrets, endpoint metadata), never from the last
//! status it managed to write.
mod support;

use serde_json::{Value, json};
use support::world::*;
use support::{apply_yaml_ok, wait_for, wait_for_some};

fn ledger_allocations(state: &Value, org_id: &str) -> Vec<i64> {
    state["ledgers"][org_id]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["eventType"] == "allocation")
        .map(|e| e["credits"].as_i64().unwrap_or(0))
        .collect()
}

fn keys_of<'a>(state: &'a Value, org_id: &str, name: &str) -> Vec<&'a Value> {
    state["apiKeys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["organizationId"] == org_id && k["name"] == name)
        .collect()
}

fn paused(w: &World, name: &str, on: bool) {
    let value = if on {
        "orgops.dev/paused=true".to_string()
    } else {
        "orgops.dev/paused-".to_string()
    };
    w.env
        .kubectl_ok(&["annotate", "--overwrite", "customerorg", name, &value]);
}

async fn wait_paused(w: &World, name: &str) {
    wait_for(&format!("{name} paused"), CONVERGE, || async {
        condition(&w.corg(name), "Reconciling").is_some_and(|c| c.1 == "Paused")
    })
    .await;
}

async fn wait_gone(w: &World, name: &str) {
    wait_for(&format!("{name} deleted"), CONVERGE, || async {
        !w.env
            .kubectl(&["get", "customerorg", name])
            .status
            .success()
    })
    .await;
}

/// Item 2: the org's id never reached status (a kill before the status write), then the
/// spec was edited: the create key used to change with the spec and a second org was
/// created and funded. The owner marker finds the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_org_id_and_an_edit_never_create_a_second_org() {
    let w = World::new("lostid", "3s").await;
    let yaml = without_external_id(&w.corg_yaml("acme", ""));
    apply_yaml_ok(&yaml);
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");

    // As if every status write had been lost: nothing in status says what was created.
    paused(&w, "acme", true);
    wait_paused(&w, "acme").await;
    w.env.kubectl_ok(&[
        "patch",
        "customerorg",
        "acme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"orgId":null,"state":null,"credits":null,"apiKeys":null,"webhooks":null}}"#,
    ]);
    apply_yaml_ok(&yaml.replace("displayName: Acme Coffee", "displayName: Acme Renamed"));
    paused(&w, "acme", false);
    let corg = w.wait_ready("acme").await;
    assert_eq!(text(&corg["status"]["orgId"], "orgId"), org_id);
    let state = w.sim.state().await;
    let live = live_orgs(&state);
    assert_eq!(live.len(), 1, "one org: {live:?}");
    assert_eq!(live[0]["name"], "Acme Renamed");
    assert_eq!(
        ledger_allocations(&state, &org_id),
        vec![500],
        "one transfer"
    );
    assert!(
        w.events("acme").contains("Recovered"),
        "a Recovered Event names the org found by its owner marker"
    );
    w.cleanup().await;
}

/// Item 1: a removed key whose revoke failed (a 503 longer than the retry budget) used to
/// stay live for ever once the failed pass wrote a status rebuilt from the spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_key_whose_revoke_failed_is_revoked_later() {
    let w = World::new("revoke", "3s").await;
    let two_keys = w.corg_yaml("acme", "").replace(
        "  apiKeys:\n",
        "  apiKeys:\n  - name: extra\n    scopes: [content:read]\n",
    );
    apply_yaml_ok(&two_keys);
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    assert_eq!(corg["status"]["apiKeys"].as_array().map(Vec::len), Some(2));

    w.sim.set_faults(json!({"write": {"error5xx": 1.0}})).await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    wait_for("the revoke to fail", CONVERGE, || async {
        condition(&w.corg("acme"), "Ready").is_some_and(|c| c.2.contains("revoke key extra"))
    })
    .await;
    w.sim.set_faults(json!({})).await;

    wait_for(
        "key extra revoked and its Secret deleted",
        CONVERGE,
        || async {
            let state = w.sim.state().await;
            let revoked = keys_of(&state, &org_id, "extra")
                .iter()
                .all(|k| k["status"] == "revoked");
            let secret_gone = !w
                .env
                .kubectl(&["get", "secret", "acme-extra"])
                .status
                .success();
            revoked && secret_gone
        },
    )
    .await;
    w.wait_ready("acme").await;
    w.cleanup().await;
}

/// Item 5: offboarding by owner marker used to match by name only, and archived an org
/// that an earlier object of the same name had deliberately orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offboarding_never_archives_an_earlier_objects_orphaned_org() {
    let w = World::new("uid", "3s").await;
    let orphan = without_external_id(&w.corg_yaml("acme", "  deletionPolicy: Orphan\n"));
    apply_yaml_ok(&orphan);
    let corg = w.wait_ready("acme").await;
    let orphaned = text(&corg["status"]["orgId"], "orgId");
    w.env.kubectl_ok(&["delete", "customerorg", "acme"]);
    wait_gone(&w, "acme").await;

    // A new object of the same name, deleted before its org id reached status.
    let again = without_external_id(&w.corg_yaml("acme", "")).replace(
        "metadata: {name: acme,",
        "metadata: {annotations: {orgops.dev/paused: \"true\"}, name: acme,",
    );
    apply_yaml_ok(&again);
    wait_paused(&w, "acme").await;
    w.env
        .kubectl_ok(&["delete", "customerorg", "acme", "--wait=false"]);
    paused(&w, "acme", false);
    wait_gone(&w, "acme").await;
    let state = w.sim.state().await;
    let live = live_orgs(&state);
    assert!(
        live.iter().any(|o| o["id"] == orphaned.as_str()),
        "the orphaned org was archived: {state}"
    );
    w.cleanup().await;
}

/// Item 4: an owner being deleted with Archive used to be ignored as a claimant, so
/// another CustomerOrg adopted the org, funded it, and then lost it to the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_being_archived_is_not_adopted() {
    let w = World::new("race", "3s").await;
    let ext = format!("{}-shared", w.env.ns);
    let first = w.corg_yaml("first", "").replace(
        &format!("externalId: {}-first", w.env.ns),
        &format!("externalId: {ext}"),
    );
    apply_yaml_ok(&first);
    let corg = w.wait_ready("first").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    paused(&w, "first", true);
    wait_paused(&w, "first").await;
    w.env
        .kubectl_ok(&["delete", "customerorg", "first", "--wait=false"]);

    let second = w.corg_yaml("second", "").replace(
        &format!("externalId: {}-second", w.env.ns),
        &format!("externalId: {ext}"),
    );
    apply_yaml_ok(&second);
    let stalled = w.wait_stalled("second", "AdoptionConflict").await;
    let (_, _, message) = condition(&stalled, "Stalled").expect("Stalled");
    assert!(message.contains("first"), "names the claimant: {message}");

    paused(&w, "first", false);
    wait_gone(&w, "first").await;
    let state = w.sim.state().await;
    assert_eq!(
        ledger_allocations(&state, &org_id)
            .iter()
            .filter(|c| **c > 0)
            .count(),
        1,
        "second never funded the org being archived: {}",
        state["ledgers"][org_id.as_str()]
    );
    w.cleanup().await;
}

/// Item 6: steady state never listed endpoints, so one deleted out of band was never
/// noticed; the deep check (`--verify-interval`) finds it, and the re-create is a new
/// request, not a replay of the original create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_deleted_out_of_band_is_recreated() {
    let w = World::with(
        "hook",
        &[],
        &["--resync-interval", "2s", "--verify-interval", "3s"],
    )
    .await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    let corg = w.wait_ready("acme").await;
    let org_id = text(&corg["status"]["orgId"], "orgId");
    let old = text(&corg["status"]["webhooks"][0]["id"], "webhook id");
    let deleted = reqwest::Client::new()
        .delete(format!("{}/v1/webhook-endpoints/{old}", w.sim.base_url()))
        .bearer_auth(w.sim.parent_key())
        .header("X-Layers-Organization", &org_id)
        .send()
        .await
        .expect("delete endpoint");
    assert!(deleted.status().is_success(), "{}", deleted.status());

    let new = wait_for_some("a new endpoint in status", CONVERGE, || async {
        let c = w.corg("acme");
        let id = c["status"]["webhooks"][0]["id"].as_str()?.to_string();
        (id != old).then_some(id)
    })
    .await;
    wait_for(
        "the signing Secret names the new endpoint",
        CONVERGE,
        || async {
            secret_value(&w.env, "acme-crm-webhook", "endpointId").as_deref() == Some(new.as_str())
        },
    )
    .await;
    let state = w.sim.state().await;
    let endpoints: Vec<&Value> = state["webhookEndpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["organizationId"] == org_id.as_str())
        .collect();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    assert_eq!(endpoints[0]["id"], new.as_str());
    w.cleanup().await;
}

/// Item 6: a lowered `credits.allocated` made every resync list the ledger for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_allocation_does_not_list_the_ledger_every_resync() {
    let w = World::new("lowered", "2s").await;
    apply_yaml_ok(&w.corg_yaml("acme", ""));
    w.wait_ready("acme").await;
    apply_yaml_ok(
        &w.corg_yaml("acme", "")
            .replace("allocated: 500", "allocated: 100"),
    );
    w.wait_ready("acme").await;
    let ledger_reads = |c: &Value| {
        count(c, |m, route| {
            m == "GET" && route == "/v1/organizations/:orgId/credits/events"
        })
    };
    let org_reads = |c: &Value| {
        count(c, |m, route| {
            m == "GET" && route == "/v1/organizations/:orgId"
        })
    };
    let before = w.sim.counters().await;
    // Several resyncs happen (each one GET of the org), then compare.
    wait_for("five more resyncs", CONVERGE, || async {
        org_reads(&w.sim.counters().await) >= org_reads(&before) + 5
    })
    .await;
    assert_eq!(
        ledger_reads(&w.sim.counters().await),
        ledger_reads(&before),
        "ledger listed at steady state"
    );
    w.cleanup().await;
}

/// A default Secret name meeting an explicit one (admission cannot see the object name
/// within CEL's budget): refused before any API call, naming the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_secret_names_stall_before_any_call() {
    let w = World::new("collide", "3s").await;
    let yaml = w.corg_yaml("acme", "").replace(
        "  - name: crm\n    url:",
        "  - name: crm\n    secretName: acme-integration\n    url:",
    );
    apply_yaml_ok(&yaml);
    let corg = w.wait_stalled("acme", "SecretNameCollision").await;
    let (_, _, message) = condition(&corg, "Stalled").expect("Stalled");
    assert!(message.contains("acme-integration"), "{message}");
    assert_eq!(w.org_requests().await, 0, "no API call for a refused spec");
    w.cleanup().await;
}

/// A key's Secret is claimed with a create and written with the claim's resourceVersion as
/// a precondition (no read in between, #18), on the real API server: the write lands on
/// our claim; a claim of a name that exists is ours only when we control it; a write
/// whose precondition is stale is refused (the operator then retries with a read); a
/// Secret someone else created is never taken. A Secret the pass saw missing (a webhook's
/// signing secret) is created without a read; one that appeared since is read then, and
/// written only if it is ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_key_secret_is_written_without_a_read_and_never_over_another() {
    use k8s_openapi::api::core::v1::Secret as KubeSecret;
    use kube::api::{Api, PostParams};
    use orgops::reconcile::secrets::{self, KEY_ID_ANNOTATION, Known, Payload, SecretError};
    use std::collections::BTreeMap;

    let env = support::TestEnv::new("claim").await;
    let client = env.client().await;
    let corgs: Api<orgops::api::CustomerOrg> = Api::namespaced(client.clone(), &env.ns);
    let corg: orgops::api::CustomerOrg = serde_json::from_value(json!({
        "apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
        "metadata": {"name": "acme", "namespace": env.ns},
        "spec": {"displayName": "Acme", "providerRef": {"name": "nobody"}},
    }))
    .expect("CustomerOrg");
    let corg = corgs
        .create(&PostParams::default(), &corg)
        .await
        .expect("create CustomerOrg");
    let api: Api<KubeSecret> = Api::namespaced(client, &env.ns);
    let secret = orgops::provider::Secret::new("lp_live_claim_test_value");
    let payload = |id: &'static str| Payload {
        id_annotation: KEY_ID_ANNOTATION,
        id,
        name_annotation: secrets::KEY_NAME_ANNOTATION,
        entry: "crm",
        org_id: "org_1",
        plain: BTreeMap::from([("keyId", id.to_string())]),
        secret_key: "apiKey",
        secret: &secret,
        rotated_for: None,
        replaces: &[],
    };
    let key_id = |name: &str| {
        let out = env.kubectl_ok(&["get", "secret", name, "-o", "json"]);
        let s: Value = serde_json::from_str(&out).expect("Secret JSON");
        s["metadata"]["annotations"][KEY_ID_ANNOTATION]
            .as_str()
            .map(str::to_string)
    };

    let rv = secrets::claim(&api, &corg, "acme-crm", "crm", "org_1")
        .await
        .expect("claim")
        .expect("a created claim has a resourceVersion");
    assert_eq!(key_id("acme-crm").as_deref(), Some(""));
    secrets::write(
        &api,
        &corg,
        "acme-crm",
        payload("key_1"),
        Known::Claimed(&rv),
    )
    .await
    .expect("write on our claim");
    assert_eq!(key_id("acme-crm").as_deref(), Some("key_1"));

    // The claim's version is stale now: a write with it is refused, without it it lands.
    let stale = secrets::write(
        &api,
        &corg,
        "acme-crm",
        payload("key_2"),
        Known::Claimed(&rv),
    )
    .await;
    assert!(
        matches!(&stale, Err(SecretError::Kube(kube::Error::Api(e))) if e.code == 409),
        "{stale:?}"
    );
    assert_eq!(key_id("acme-crm").as_deref(), Some("key_1"));
    secrets::write(&api, &corg, "acme-crm", payload("key_2"), Known::Unknown)
        .await
        .expect("write after a read");
    assert_eq!(key_id("acme-crm").as_deref(), Some("key_2"));

    // Claiming a name we control again is fine (a pass after a lost answer).
    let again = secrets::claim(&api, &corg, "acme-crm", "crm", "org_1").await;
    assert!(matches!(again, Ok(Some(_))), "{again:?}");
    assert_eq!(key_id("acme-crm").as_deref(), Some("key_2"));

    // Someone else's Secret: never claimed, never written.
    env.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "theirs",
        "--from-literal=k=v",
    ]);
    let theirs = secrets::claim(&api, &corg, "theirs", "crm", "org_1").await;
    assert!(matches!(theirs, Err(SecretError::Foreign(_))), "{theirs:?}");
    let theirs = secrets::write(&api, &corg, "theirs", payload("key_3"), Known::Unknown).await;
    assert!(matches!(theirs, Err(SecretError::Foreign(_))), "{theirs:?}");
    assert_eq!(key_id("theirs"), None);

    // Seen missing: created at once; appeared since: read, written only when ours.
    secrets::write(&api, &corg, "acme-hook", payload("key_4"), Known::Missing)
        .await
        .expect("create a Secret seen missing");
    assert_eq!(key_id("acme-hook").as_deref(), Some("key_4"));
    let owner = env.kubectl_ok(&[
        "get",
        "secret",
        "acme-hook",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].uid}",
    ]);
    assert_eq!(Some(owner.trim()), corg.metadata.uid.as_deref());
    secrets::write(&api, &corg, "acme-hook", payload("key_5"), Known::Missing)
        .await
        .expect("ours appeared since: written after a read");
    assert_eq!(key_id("acme-hook").as_deref(), Some("key_5"));
    let theirs = secrets::write(&api, &corg, "theirs", payload("key_6"), Known::Missing).await;
    assert!(matches!(theirs, Err(SecretError::Foreign(_))), "{theirs:?}");
    assert_eq!(key_id("theirs"), None);
    env.cleanup().await;
}

/// Issue 27, item 5: a Secret delete checked ownership, then deleted by name: a Secret
/// replaced in between (another owner's, same name) went. The delete now carries the uid
/// and resourceVersion it read as preconditions, on the real API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_replaced_after_it_was_read_is_not_deleted() {
    use k8s_openapi::api::core::v1::Secret as KubeSecret;
    use kube::api::{Api, DeleteParams, PostParams};
    use orgops::reconcile::secrets;

    let env = support::TestEnv::new("delsecret").await;
    let api: Api<KubeSecret> = Api::namespaced(env.client().await, &env.ns);
    let secret = |owner: &str| -> KubeSecret {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "acme-crm", "annotations": {"owner": owner}},
            "stringData": {"k": "v"},
        }))
        .expect("Secret")
    };
    let ours = api
        .create(&PostParams::default(), &secret("orgops"))
        .await
        .expect("create ours");
    // Replaced between the read and the delete.
    api.delete("acme-crm", &DeleteParams::default())
        .await
        .expect("delete ours");
    api.create(&PostParams::default(), &secret("someone else"))
        .await
        .expect("create theirs");
    let deleted = secrets::delete_observed(&api, &ours)
        .await
        .expect("delete call");
    assert!(!deleted, "a Secret replaced since the read was deleted");
    let left = api.get("acme-crm").await.expect("theirs is still there");
    assert_eq!(left.metadata.annotations.unwrap()["owner"], "someone else");
    // Changed since the read (same uid, new version): left alone as well.
    let read = api.get("acme-crm").await.expect("read");
    let mut changed = read.clone();
    changed
        .metadata
        .annotations
        .get_or_insert_default()
        .insert("touched".into(), "yes".into());
    api.replace("acme-crm", &PostParams::default(), &changed)
        .await
        .expect("change");
    assert!(!secrets::delete_observed(&api, &read).await.expect("call"));
    // Exactly as read: deleted.
    let current = api.get("acme-crm").await.expect("read");
    assert!(
        secrets::delete_observed(&api, &current)
            .await
            .expect("call")
    );
    assert!(api.get_opt("acme-crm").await.expect("get").is_none());
    env.cleanup().await;
}
