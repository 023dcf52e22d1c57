//! `orgops import` fixtures: a Layers fleet made out of band (by a script, before orgops),
//! running the command, and reading what it wrote.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use super::Sim;
use super::world::count;

/// One call to the Layers simulator as a partner's script makes it (parent key, a fresh
/// idempotency key on every write, `X-Layers-Organization` inside a child).
pub async fn layers(
    sim: &Sim,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    in_org: Option<&str>,
) -> Value {
    let mut req = reqwest::Client::new()
        .request(method.clone(), format!("{}{path}", sim.base_url()))
        .bearer_auth(sim.parent_key());
    if let Some(org) = in_org {
        req = req.header("X-Layers-Organization", org);
    }
    if let Some(body) = body {
        req = req
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&body);
    }
    super::ok_json(req, &format!("{method} {path}")).await
}

/// The fleet a partner built before orgops, by label: org id.
/// - `alpha`: externalId `<ns>-alpha`, metadata, billing email; 300 credits allocated by
///   an earlier orgops (marked) and 500 by a script (unmarked); cap and auto-refill; a key
///   and a webhook endpoint of its own.
/// - `beta`: no externalId, a name with punctuation, 250 unmarked credits, a cap; suspended.
/// - `twin1`, `twin2`: both named "Twin", nothing else (their object names collide).
pub async fn seed_layers_fleet(sim: &Sim, ns: &str) -> BTreeMap<&'static str, String> {
    use reqwest::Method;
    let mut ids = BTreeMap::new();
    let create = |body: Value| layers(sim, Method::POST, "/v1/organizations", Some(body), None);
    let alpha = create(json!({
        "name": "Alpha Coffee",
        "metadata": {"externalId": format!("{ns}-alpha"), "plan": "growth"},
        "billingEmail": "ops@alpha.example",
    }))
    .await;
    let alpha = alpha["id"].as_str().expect("alpha id").to_string();
    let org = |id: &str, rest: &str| format!("/v1/organizations/{id}{rest}");
    for (credits, meta) in [
        (500, json!({"source": "script"})),
        (300, json!({"orgops.dev/allocation": "true"})),
    ] {
        let body = json!({"credits": credits, "metadata": meta});
        layers(
            sim,
            Method::POST,
            &org(&alpha, "/credits/allocate"),
            Some(body),
            None,
        )
        .await;
    }
    let config = json!({"monthlyCreditCap": 5000, "refillThreshold": 100, "refillAmount": 200});
    layers(
        sim,
        Method::PATCH,
        &org(&alpha, "/credit-config"),
        Some(config),
        None,
    )
    .await;
    let key = json!({"name": "backend", "scopes": ["content:read"]});
    layers(
        sim,
        Method::POST,
        &org(&alpha, "/api-keys"),
        Some(key),
        None,
    )
    .await;
    let hook = json!({"url": "https://crm.example.com/hooks", "events": ["post.published"]});
    layers(
        sim,
        Method::POST,
        "/v1/webhook-endpoints",
        Some(hook),
        Some(&alpha),
    )
    .await;
    ids.insert("alpha", alpha);

    let beta = create(json!({"name": "Beta & Sons"})).await;
    let beta = beta["id"].as_str().expect("beta id").to_string();
    let body = json!({"credits": 250});
    layers(
        sim,
        Method::POST,
        &org(&beta, "/credits/allocate"),
        Some(body),
        None,
    )
    .await;
    let config = json!({"monthlyCreditCap": 1000});
    layers(
        sim,
        Method::PATCH,
        &org(&beta, "/credit-config"),
        Some(config),
        None,
    )
    .await;
    layers(sim, Method::POST, &org(&beta, "/suspend"), None, None).await;
    ids.insert("beta", beta);

    for label in ["twin1", "twin2"] {
        let twin = create(json!({"name": "Twin"})).await;
        ids.insert(label, twin["id"].as_str().expect("twin id").to_string());
    }
    ids
}

/// Writes (anything but GET) to the partner API, not the `/_sim/` control routes.
pub fn api_writes(counters: &Value) -> u64 {
    count(counters, |m, route| {
        m != "GET" && !route.starts_with("/_sim")
    })
}

/// Runs `bin import --provider P -n NS -o DIR <extra>` with `kubeconfig`.
pub fn run_import(
    bin: &Path,
    kubeconfig: &Path,
    provider: &str,
    ns: &str,
    dir: &Path,
    extra: &[&str],
) -> Output {
    std::process::Command::new(bin)
        .args(["import", "--provider", provider, "-n", ns, "-o"])
        .arg(dir)
        .args(extra)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("run {} import: {e}", bin.display()))
}

/// Every file an import wrote, by name.
pub fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .expect("read import dir")
        .map(|e| {
            let path: PathBuf = e.expect("dir entry").path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&path).expect("read imported file");
            (name, text)
        })
        .collect()
}

/// The CustomerOrgs an import wrote (its `<name>.yaml` files), parsed, by object name.
pub fn objects(dir: &Path) -> BTreeMap<String, Value> {
    files(dir)
        .into_iter()
        .filter(|(name, _)| name.ends_with(".yaml") && name != "kustomization.yaml")
        .map(|(name, text)| {
            let v: Value = serde_yaml::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not YAML: {e}\n{text}"));
            (
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                v,
            )
        })
        .collect()
}

/// Rewrites every imported object's `managementPolicy` (as a person editing the files).
pub fn set_policy(dir: &Path, policy: &str) {
    for (name, text) in files(dir) {
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            let edited: String = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("managementPolicy:") {
                        format!("  managementPolicy: {policy}")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(dir.join(&name), edited + "\n").expect("rewrite object");
        }
    }
}

/// `kubectl apply -k DIR` (client-side, as a person or a CI job would); panics on failure.
pub fn apply_dir(dir: &Path) {
    let out = super::kubectl(&["apply", "-k", &dir.to_string_lossy()]);
    assert!(
        out.status.success(),
        "kubectl apply -k {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `orgops plan -k DIR -o json` with `kubeconfig`: (exit status, the plan).
pub fn plan_dir(kubeconfig: &Path, dir: &Path) -> (Option<i32>, Value) {
    let out = std::process::Command::new(super::orgops_bin())
        .args(["plan", "-o", "json", "-k"])
        .arg(dir)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_LOG")
        .output()
        .expect("run orgops plan");
    let plan = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "orgops plan printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), plan)
}

/// The plan's ops per object name.
pub fn plan_ops(plan: &Value) -> BTreeMap<String, Vec<String>> {
    plan["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let ops = o["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a["op"].as_str().unwrap_or_default().to_string())
                .collect();
            (o["name"].as_str().unwrap_or_default().to_string(), ops)
        })
        .collect()
}

/// Non-GET requests to the partner API by "METHOD route", for a before/after difference
/// (not the control routes, not YouHodler's token requests: a token changes no data).
pub fn writes_by_route(counters: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for row in counters["requests"].as_array().into_iter().flatten() {
        let (m, r) = (
            row["method"].as_str().unwrap_or_default(),
            row["route"].as_str().unwrap_or_default(),
        );
        if m != "GET" && !r.starts_with("/_sim") && r != "/oauth/token" {
            *out.entry(format!("{m} {r}")).or_insert(0) += row["count"].as_u64().unwrap_or(0);
        }
    }
    out
}

/// `after - before`, route by route, without zeros.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// A Layers org as the simulator holds it, without the owner marker: name, state, billing
/// email, other metadata, credit config, balance, its ledger, its keys and endpoints.
pub fn layers_org_view(state: &Value, org_id: &str) -> Value {
    let org = state["orgs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["id"] == org_id)
        .cloned()
        .unwrap_or_else(|| panic!("org {org_id} missing in the simulator's state"));
    let mut metadata = org["metadata"].clone();
    if let Some(m) = metadata.as_object_mut() {
        m.remove("orgops.dev/owner");
    }
    let of_org = |list: &str| -> Vec<Value> {
        state[list]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["organizationId"] == org_id)
            .map(|x| json!({"id": x["id"], "status": x["status"], "url": x["url"], "events": x["events"]}))
            .collect()
    };
    json!({
        "name": org["name"],
        "status": org["status"],
        "billingEmail": org["billingEmail"],
        "metadata": metadata,
        "creditConfig": org["creditConfig"],
        "balance": org["balance"],
        "ledger": state["ledgers"][org_id],
        "keys": of_org("apiKeys"),
        "endpoints": of_org("webhookEndpoints"),
    })
}
