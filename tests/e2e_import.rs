//! Issue 33 end to end, one test per provider: orgs made out of band (funded, capped,
//! suspended) → `orgops import` as a read-only kube identity (0 provider writes, and no
//! cluster write is possible) → `kubectl apply -k` → every CustomerOrg Ready in Observe
//! with 0 provider writes → `orgops plan` on the directory exits 0 → switched to Full, the
//! plan shows nothing but the adoption claim and the operator writes nothing else.
mod support;

use std::collections::BTreeMap;

use serde_json::{Value, json};
use support::corgs::CorgWaits;
use support::gennia::{self, GenniaWorld};
use support::import::{
    api_writes, apply_dir, delta, files, layers_org_view, objects, plan_dir, plan_ops, run_import,
    seed_layers_fleet, set_policy, writes_by_route,
};
use support::world::World;
use support::youhodler::{self, YouhodlerWorld};
use support::{apply_yaml_ok, ok_json, orgops_bin, read_only_kubeconfig};

/// Runs the import as the read-only identity; panics with its stderr on failure.
fn import_ok(ns: &str, provider: &str, dir: &std::path::Path) -> String {
    let ro = read_only_kubeconfig(ns);
    let out = run_import(&orgops_bin(), &ro, provider, ns, dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "orgops import failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Applies the directory and waits until every object in it is Ready at its generation.
async fn apply_and_wait_ready(w: &impl CorgWaits, dir: &std::path::Path) -> Vec<Value> {
    apply_dir(dir);
    let mut ready = Vec::new();
    for name in objects(dir).keys() {
        ready.push(w.wait_ready(name).await);
    }
    ready
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_fleet_imports_observes_then_full_writes_only_the_claim() {
    // Pilot tier: Observe reads every list on every pass, five objects every 5 s.
    let w = World::with("import", &["--tier", "pilot"], &["--resync-interval", "5s"]).await;
    let ns = w.env.ns.clone();
    // A customer orgops already manages: the import must leave it out and say so.
    apply_yaml_ok(&format!(
        "apiVersion: orgops.dev/v1alpha1\nkind: CustomerOrg\nmetadata: {{name: gamma, namespace: {ns}}}\n\
         spec:\n  providerRef: {{name: {p}}}\n  displayName: Gamma\n  externalId: {ns}-gamma\n",
        p = w.provider
    ));
    let gamma = w.wait_ready("gamma").await;
    let fleet = seed_layers_fleet(&w.sim, &ns).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().join("customers");
    let before = w.sim.counters().await;
    let stdout = import_ok(&ns, &w.provider, &dir);
    assert_eq!(
        api_writes(&w.sim.counters().await),
        api_writes(&before),
        "the import wrote to the provider"
    );
    assert!(
        stdout.contains("skipped 1 already owned") && stdout.contains(&format!("{ns}/gamma")),
        "{stdout}"
    );

    // One object per unowned org, adopting it as it is.
    let objs = objects(&dir);
    let by_org: BTreeMap<String, (String, Value)> = objs
        .iter()
        .map(|(name, v)| {
            let id = v["spec"]["adoptOrgId"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (id, (name.clone(), v.clone()))
        })
        .collect();
    assert_eq!(by_org.len(), 4, "{:?}", objs.keys());
    assert!(!by_org.contains_key(gamma["status"]["orgId"].as_str().unwrap_or("-")));
    let (alpha_name, alpha) = &by_org[&fleet["alpha"]];
    assert_eq!(
        alpha_name,
        &format!("{ns}-alpha"),
        "named from its externalId"
    );
    let spec = &alpha["spec"];
    assert_eq!(spec["externalId"], format!("{ns}-alpha").as_str());
    assert_eq!(spec["displayName"], "Alpha Coffee");
    assert_eq!(spec["billingEmail"], "ops@alpha.example");
    assert_eq!(spec["metadata"], json!({"plan": "growth"}));
    assert_eq!(spec["state"], "active");
    assert_eq!(spec["managementPolicy"], "Observe");
    assert_eq!(spec["deletionPolicy"], "Orphan");
    assert_eq!(
        spec["credits"],
        json!({"allocated": 300, "monthlyCap": 5000, "autoRefill": {"threshold": 100, "amount": 200}}),
        "allocated is the marked ledger sum (the script's 500 are not counted)"
    );
    let (beta_name, beta) = &by_org[&fleet["beta"]];
    assert_eq!(beta_name, "beta-sons");
    assert_eq!(beta["spec"]["state"], "suspended");
    assert_eq!(
        beta["spec"]["credits"],
        json!({"allocated": 0, "monthlyCap": 1000})
    );
    let twins = [&by_org[&fleet["twin1"]].0, &by_org[&fleet["twin2"]].0];
    assert!(
        twins[0] != twins[1]
            && twins
                .iter()
                .all(|n| n.starts_with("twin-") && n.len() == 11),
        "colliding names get a suffix from the org id: {twins:?}"
    );
    let written = files(&dir);
    let kustomization = &written["kustomization.yaml"];
    for name in objs.keys() {
        assert!(
            kustomization.contains(&format!("- {name}.yaml")),
            "{kustomization}"
        );
    }
    let report = &written["IMPORT-REPORT.md"];
    for needle in [
        "## API keys: not imported",
        "| backend |",
        "https://crm.example.com/hooks",
        "## Renamed to avoid a collision",
        "## Already owned by a CustomerOrg",
        "500 credits were allocated to it without orgops's marker",
    ] {
        assert!(report.contains(needle), "{needle:?} missing:\n{report}");
    }

    // Applied: Ready in Observe, and still not one provider write.
    let writes = w.writes().await;
    apply_and_wait_ready(&w, &dir).await;
    w.org_reads(8).await;
    assert_eq!(w.writes().await, writes, "Observe wrote to the provider");
    let ro = read_only_kubeconfig_again(&ns);
    let (code, plan) = plan_dir(&ro, &dir);
    assert_eq!(
        code,
        Some(0),
        "orgops plan on the imported directory: {plan:#}"
    );

    // Full: the plan is the claim alone, and so are the operator's writes.
    set_policy(&dir, "Full");
    let (code, plan) = plan_dir(&ro, &dir);
    assert_eq!(code, Some(2), "{plan:#}");
    for (name, ops) in plan_ops(&plan) {
        assert_eq!(ops, ["claim-org"], "{name}: {plan:#}");
    }
    let state_before = w.sim.state().await;
    let routes_before = writes_by_route(&w.sim.counters().await);
    apply_and_wait_ready(&w, &dir).await;
    w.org_reads(8).await;
    assert_eq!(
        delta(&routes_before, &writes_by_route(&w.sim.counters().await)),
        BTreeMap::from([("PATCH /v1/organizations/:orgId".to_string(), 4)]),
        "Full wrote more than one owner marker per org"
    );
    let state_after = w.sim.state().await;
    for id in fleet.values() {
        assert_eq!(
            layers_org_view(&state_after, id),
            layers_org_view(&state_before, id),
            "org {id} changed beyond its owner marker"
        );
        let owner = state_after["orgs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["id"] == id.as_str())
            .map(|o| o["metadata"]["orgops.dev/owner"].clone());
        assert!(
            owner.is_some_and(|m| m.as_str().is_some_and(|m| m.starts_with(&format!("{ns}/")))),
            "org {id} carries no owner marker"
        );
    }
    w.cleanup().await;
}

/// The read-only ServiceAccount already exists after the first import: a fresh token.
fn read_only_kubeconfig_again(ns: &str) -> std::path::PathBuf {
    support::write_token_kubeconfig_for(ns, "plan-reader")
}

/// A Gennia call as a partner's script makes it.
async fn gennia_call(
    sim: &support::GenniaSim,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let req = reqwest::Client::new()
        .request(
            method.clone(),
            format!("{}{}{path}", sim.base_url(), gennia::API),
        )
        .header("X-Api-Key", sim.api_key())
        .json(&body);
    ok_json(req, &format!("{method} {path}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gennia_workspaces_import_with_their_users_and_full_writes_nothing() {
    let w = GenniaWorld::new("import-g", "5s").await;
    let ns = w.env.ns.clone();
    apply_yaml_ok(&w.corg_yaml("gamma", "Gamma", &format!(
        "  gennia:\n    planId: {}\n    users:\n    - {{email: gus@gamma.example, role: admin}}\n",
        w.plan_id
    )));
    w.wait_ready("gamma").await;
    let post = reqwest::Method::POST;
    let acme = gennia_call(
        &w.sim,
        post.clone(),
        "/clients",
        json!({
            "workspaceName": "Acme Coffee",
            "planPublicId": w.plan_id,
            "creditsOverride": 120,
            "users": [
                {"email": "ana@acme.example", "name": "Ana", "role": "admin"},
                {"email": "bo@acme.example", "role": "editor"},
            ],
        }),
    )
    .await;
    let beta = gennia_call(
        &w.sim,
        post.clone(),
        "/clients",
        json!({
            "workspaceName": "Beta",
            "planPublicId": w.plan_id,
            "sendInvitations": true,
            "users": [{"email": "cy@beta.example", "name": "Cy", "role": "admin"}],
        }),
    )
    .await;
    let beta_id = beta["publicId"].as_str().expect("beta id");
    gennia_call(
        &w.sim,
        post,
        &format!("/clients/{beta_id}/suspend"),
        json!({"reason": "unpaid"}),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().join("customers");
    let before = w.sim.counters().await;
    let stdout = import_ok(&ns, &w.provider, &dir);
    assert_eq!(
        gennia::writes(&w.sim.counters().await),
        gennia::writes(&before)
    );
    assert!(stdout.contains(&format!("{ns}/gamma")), "{stdout}");
    let objs = objects(&dir);
    assert_eq!(objs.keys().collect::<Vec<_>>(), ["acme-coffee", "beta"]);
    let acme_spec = &objs["acme-coffee"]["spec"];
    assert_eq!(acme_spec["adoptOrgId"], acme["publicId"]);
    assert_eq!(acme_spec["displayName"], "Acme Coffee");
    assert_eq!(
        acme_spec["gennia"],
        json!({"users": [
            {"email": "ana@acme.example", "name": "Ana", "role": "admin"},
            // Gennia names a user from the email when the create sends no name.
            {"email": "bo@acme.example", "name": "bo", "role": "editor"},
        ]})
    );
    assert!(
        acme_spec.get("credits").is_none(),
        "Gennia's balance is read-only"
    );
    assert_eq!(objs["beta"]["spec"]["state"], "suspended");

    let writes = gennia::writes(&w.sim.counters().await);
    apply_and_wait_ready(&w, &dir).await;
    w.provider_checks(2).await;
    assert_eq!(gennia::writes(&w.sim.counters().await), writes);
    let ro = read_only_kubeconfig_again(&ns);
    assert_eq!(plan_dir(&ro, &dir).0, Some(0));

    // Gennia keeps no metadata: Full has no claim to write, so nothing at all.
    set_policy(&dir, "Full");
    let (code, plan) = plan_dir(&ro, &dir);
    assert!(
        plan_ops(&plan).values().all(Vec::is_empty),
        "exit {code:?}: {plan:#}"
    );
    apply_and_wait_ready(&w, &dir).await;
    w.provider_checks(2).await;
    assert_eq!(
        gennia::writes(&w.sim.counters().await),
        writes,
        "Full wrote to an imported workspace"
    );
    w.cleanup().await;
}

/// A YouHodler call as a partner's script makes it (a token first).
async fn youhodler_call(sim: &support::youhodler::YouhodlerSim, path: &str, body: Value) -> Value {
    let http = reqwest::Client::new();
    let token = http
        .post(format!("{}/oauth/token", sim.base_url()))
        .json(&json!({
            "client_id": sim.client_id,
            "client_secret": sim.client_secret,
            "grant_type": "client_credentials",
        }));
    let token = ok_json(token, "POST /oauth/token").await;
    let req = http
        .post(format!("{}{path}", sim.base_url()))
        .bearer_auth(token["access_token"].as_str().expect("access_token"))
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&body);
    ok_json(req, &format!("POST {path}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn youhodler_clients_import_and_full_writes_only_the_claim() {
    let w = YouhodlerWorld::new("import-y", "5s", &[]).await;
    let ns = w.env.ns.clone();
    let scope = format!("enterprises/{}", w.sim.enterprise_id);
    let acme = youhodler_call(
        &w.sim,
        "/clients",
        json!({
            "display_name": "Acme Coffee",
            "external_id": format!("{ns}-acme"),
            "metadata": {"tier": "gold"},
            "scope_ref": scope,
        }),
    )
    .await;
    let beta = youhodler_call(
        &w.sim,
        "/clients",
        json!({"display_name": "Beta", "scope_ref": scope}),
    )
    .await;
    let beta_id = beta["id"].as_str().expect("beta id").to_string();
    youhodler_call(
        &w.sim,
        &format!("/clients/{beta_id}/suspend"),
        json!({"reason": "kyc"}),
    )
    .await;

    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().join("customers");
    let before = w.sim.counters().await;
    import_ok(&ns, &w.provider, &dir);
    assert_eq!(
        youhodler::client_writes(&w.sim.counters().await),
        youhodler::client_writes(&before)
    );
    let objs = objects(&dir);
    let acme_obj = &objs[&format!("{ns}-acme")]["spec"];
    assert_eq!(acme_obj["adoptOrgId"], acme["id"]);
    assert_eq!(acme_obj["externalId"], format!("{ns}-acme").as_str());
    assert_eq!(acme_obj["metadata"], json!({"tier": "gold"}));
    assert_eq!(objs["beta"]["spec"]["state"], "suspended");

    let writes = youhodler::client_writes(&w.sim.counters().await);
    apply_and_wait_ready(&w, &dir).await;
    w.provider_checks(2).await;
    assert_eq!(youhodler::client_writes(&w.sim.counters().await), writes);
    let ro = read_only_kubeconfig_again(&ns);
    assert_eq!(plan_dir(&ro, &dir).0, Some(0));

    set_policy(&dir, "Full");
    let (code, plan) = plan_dir(&ro, &dir);
    assert_eq!(code, Some(2));
    for (name, ops) in plan_ops(&plan) {
        assert_eq!(ops, ["claim-org"], "{name}: {plan:#}");
    }
    let routes = writes_by_route(&w.sim.counters().await);
    let clients_before = w.sim.clients().await;
    apply_and_wait_ready(&w, &dir).await;
    w.provider_checks(2).await;
    assert_eq!(
        delta(&routes, &writes_by_route(&w.sim.counters().await)),
        BTreeMap::from([("PATCH /clients/:client_id".to_string(), 2)]),
        "Full wrote more than one owner marker per client"
    );
    for before in clients_before {
        let after = w
            .sim
            .clients()
            .await
            .into_iter()
            .find(|c| c["id"] == before["id"])
            .expect("client");
        for field in ["display_name", "external_id", "status"] {
            assert_eq!(after[field], before[field], "{field}");
        }
        let mut meta = after["metadata"].clone();
        if let Some(m) = meta.as_object_mut() {
            m.remove("orgops.dev/owner");
        }
        assert_eq!(meta, before["metadata"]);
    }
    w.cleanup().await;
}
