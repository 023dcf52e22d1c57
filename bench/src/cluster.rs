//! The local control plane: objects the benchmark creates, readiness, apiserver write counts.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, Namespace, Secret};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::error::{BenchError, Result, failed};

const MANAGER: &str = "orgops-bench";

pub fn customer_org() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "CustomerOrg"),
        "customerorgs",
    )
}

pub fn org_provider() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1alpha1", "OrgProvider"),
        "orgproviders",
    )
}

pub async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let raw = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| BenchError::Kubeconfig(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(raw, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| BenchError::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

/// `kubectl apply --server-side -f crds/` and wait until Established; then the finalizer
/// policy, as `kubectl apply -k deploy/` installs it (the finalizer is part of the create).
pub fn install_crds(kubeconfig: &Path, root: &Path) -> Result<()> {
    let crds = root.join("crds").to_string_lossy().into_owned();
    let policy = root
        .join("deploy/finalizer-policy.yaml")
        .to_string_lossy()
        .into_owned();
    let apply = |path: &str| {
        vec![
            "apply".to_string(),
            "--server-side".into(),
            "--force-conflicts".into(),
            "--field-manager=orgops-bench".into(),
            "-f".into(),
            path.to_string(),
        ]
    };
    let wait = [
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "-f",
        &crds,
    ]
    .map(String::from)
    .to_vec();
    for args in [apply(&crds), wait, apply(&policy)] {
        let out = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(&args)
            .output()?;
        if !out.status.success() {
            return Err(failed(format!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    wait_policy(kubeconfig)
}

/// Waits until the API server applies the finalizer policy (a server-side dry-run create
/// in `default` comes back with the finalizer): right after the CRD appears, creates the
/// policy matches are refused for a while (deploy/finalizer-policy.yaml).
fn wait_policy(kubeconfig: &Path) -> Result<()> {
    let probe = r#"{"apiVersion":"orgops.dev/v1alpha1","kind":"CustomerOrg","metadata":{"name":"orgops-bench-probe","namespace":"default"},"spec":{"displayName":"Probe","providerRef":{"name":"none"}}}"#;
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .args(["create", "--dry-run=server", "-o", "json", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, probe.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let applied = out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|o| {
                o["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f == "orgops.dev/offboard"))
            });
        if applied {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(failed(
                "the finalizer policy does not apply after 120 s (deploy/finalizer-policy.yaml)",
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

pub async fn create_namespace(client: &kube::Client, ns: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    api.patch(ns, &PatchParams::apply(MANAGER).force(), &Patch::Apply(obj))
        .await?;
    Ok(())
}

/// Deletes the namespace, then drops the finalizers of its CustomerOrgs (the operator is
/// stopped by now) as the namespace controller marks them deleted: the finalizer policy
/// gives an object that is not being deleted its finalizer back, so only deleting ones
/// are patched. Gives up after ten minutes (the namespace then stays Terminating): the
/// namespace controller marks 30,000 objects deleted over several minutes.
pub async fn delete_namespace(client: &kube::Client, ns: &str) -> Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete(ns, &DeleteParams::default()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_org());
    let clear = json!({"metadata": {"finalizers": null}});
    let until = Instant::now() + Duration::from_secs(600);
    while Instant::now() < until {
        let left = api.list_metadata(&ListParams::default()).await?.items;
        if left.is_empty() {
            break;
        }
        let deleting: Vec<String> = left
            .into_iter()
            .filter(|o| o.metadata.deletion_timestamp.is_some())
            .filter_map(|o| o.metadata.name)
            .collect();
        stream::iter(deleting)
            .map(|name| {
                let api = api.clone();
                let clear = clear.clone();
                async move {
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(clear))
                        .await
                    {
                        // Gone between the list and the patch: nothing held it.
                        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                        other => other.map(|_| ()),
                    }
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<()>>()
            .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// The parent key Secret and an OrgProvider named `provider` that points at the simulator.
pub async fn create_provider(
    client: &kube::Client,
    ns: &str,
    provider: &str,
    base_url: &str,
    parent_key: &str,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret_name = format!("{provider}-parent-key");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": ns},
        "stringData": {"apiKey": parent_key},
    });
    secrets
        .patch(
            &secret_name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await?;
    let providers: Api<DynamicObject> = Api::all_with(client.clone(), &org_provider());
    let obj = json!({
        "apiVersion": "orgops.dev/v1alpha1", "kind": "OrgProvider",
        "metadata": {"name": provider},
        "spec": {
            "type": "layers",
            "baseUrl": base_url,
            "credentialsSecretRef": {"namespace": ns, "name": secret_name, "key": "apiKey"},
            "rateLimit": {"tier": "auto"},
        },
    });
    providers
        .patch(
            provider,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?;
    Ok(())
}

pub async fn delete_provider(client: &kube::Client, provider: &str) -> Result<()> {
    let providers: Api<DynamicObject> = Api::all_with(client.clone(), &org_provider());
    providers.delete(provider, &DeleteParams::default()).await?;
    Ok(())
}

/// One benchmark customer: a key, a webhook, credits and a cap (the issue's shape).
pub fn bench_org(ns: &str, provider: &str, run: &str, i: usize) -> Value {
    json!({
        "apiVersion": "orgops.dev/v1alpha1", "kind": "CustomerOrg",
        "metadata": {"name": format!("c-{i:05}"), "namespace": ns},
        "spec": {
            "providerRef": {"name": provider},
            "displayName": format!("Customer {i:05}"),
            "externalId": format!("{run}-{i:05}"),
            "credits": {"allocated": 10, "monthlyCap": 100},
            "apiKeys": [{"name": "integration", "scopes": ["content:read", "content:write"]}],
            "webhooks": [{
                "name": "crm",
                "url": "https://crm.example.com/layers/webhooks",
                "events": ["content.generated", "post.published"],
            }],
        },
    })
}

/// Server-side applies every object, `parallel` at a time.
pub async fn apply_all(
    client: &kube::Client,
    ns: &str,
    objs: Vec<Value>,
    parallel: usize,
) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_org());
    stream::iter(objs)
        .map(|obj| {
            let api = api.clone();
            async move {
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(obj),
                )
                .await
                .map(|_| ())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Ready=True for the object's current generation (condition or status observedGeneration).
pub fn is_ready(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation.unwrap_or(0);
    let status = &obj.data["status"];
    let Some(conds) = status["conditions"].as_array() else {
        return false;
    };
    conds.iter().any(|c| {
        c["type"] == "Ready"
            && c["status"] == "True"
            && c["observedGeneration"]
                .as_i64()
                .or_else(|| status["observedGeneration"].as_i64())
                == Some(generation)
    })
}

/// Watches the namespace until `expected` objects are Ready; calls `tick` about every second
/// with the number Ready so far (so the caller can check the operator is alive).
pub async fn wait_all_ready(
    client: &kube::Client,
    ns: &str,
    expected: usize,
    timeout: Duration,
    mut tick: impl FnMut(usize) -> Result<()>,
) -> Result<Duration> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_org());
    let start = Instant::now();
    let mut ready: HashMap<String, bool> = HashMap::new();
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let mut last_tick = Instant::now();
    loop {
        let count = ready.values().filter(|r| **r).count();
        if count >= expected {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(BenchError::Timeout {
                what: format!("{expected} CustomerOrgs Ready ({count} were)"),
                after: timeout,
            });
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            tick(count)?;
            last_tick = Instant::now();
        }
        let next = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
        match next {
            Ok(Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)))) => {
                ready.insert(o.metadata.name.clone().unwrap_or_default(), is_ready(&o));
            }
            Ok(Some(Ok(watcher::Event::Delete(o)))) => {
                ready.remove(&o.metadata.name.clone().unwrap_or_default());
            }
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(Some(Err(e))) => {
                // The watcher re-lists by itself; a short pause avoids a hot loop.
                eprintln!("watch error (retrying): {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(None) => return Err(failed("watch stream ended")),
        }
    }
}

/// Counts the changes (ADDED/MODIFIED/DELETED) to CustomerOrgs, Secrets and Events in one
/// namespace: the writes that changed something. The apiserver's own request counters have no
/// namespace label, so on a shared control plane they would count other tests' writes too.
pub struct WriteWatch {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteWatch {
    pub fn start(client: &kube::Client, ns: &str) -> WriteWatch {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_org());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        let tasks = vec![
            tokio::spawn(count_changes(corgs, "customerorgs", counts.clone())),
            tokio::spawn(count_changes(secrets, "secrets", counts.clone())),
            tokio::spawn(count_changes(events, "events", counts.clone())),
        ];
        WriteWatch { counts, tasks }
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Drop for WriteWatch {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

async fn count_changes<K>(
    api: Api<K>,
    what: &'static str,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let key = match event {
            Ok(watcher::Event::Apply(_)) => format!("{what} changed"),
            Ok(watcher::Event::Delete(_)) => format!("{what} deleted"),
            // The initial list and re-lists are not writes.
            Ok(_) => continue,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if let Ok(mut c) = counts.lock() {
            *c.entry(key).or_insert(0) += 1;
        }
    }
}

/// `orgops_kube_writes_total` by kind from the operator's /metrics (write attempts, no-ops
/// included); empty when the endpoint does not answer.
pub async fn operator_write_attempts(metrics_addr: &str) -> BTreeMap<String, u64> {
    let text = match reqwest::get(format!("http://{metrics_addr}/metrics")).await {
        Ok(resp) => resp.text().await.unwrap_or_default(),
        Err(_) => return BTreeMap::new(),
    };
    parse_write_attempts(&text)
}

fn parse_write_attempts(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("orgops_kube_writes_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let kind = labels
            .split("kind=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *out.entry(format!("operator {kind} writes")).or_insert(0) += n;
    }
    out
}

/// `after - before` per key, dropping zeros.
pub fn diff(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Changes seen by the watch (effective writes).
pub fn effective_writes(d: &BTreeMap<String, u64>) -> u64 {
    d.iter()
        .filter(|(k, _)| !k.starts_with("operator "))
        .map(|(_, v)| v)
        .sum()
}

/// Status writes the operator attempted.
pub fn status_writes(d: &BTreeMap<String, u64>) -> u64 {
    d.get("operator status writes").copied().unwrap_or(0)
}

pub fn default_kubeconfig(root: &Path) -> PathBuf {
    std::env::var_os("ORGOPS_BENCH_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/control-plane/kubeconfig"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_operator_write_counter_by_kind() {
        let text = "# TYPE orgops_kube_writes counter\norgops_kube_writes_total{kind=\"status\"} 3\norgops_kube_writes_total{kind=\"event\"} 5\norgops_reconciles_total{result=\"ok\"} 9\n";
        let w = parse_write_attempts(text);
        assert_eq!(status_writes(&w), 3);
        assert_eq!(w.get("operator event writes"), Some(&5));
        assert_eq!(w.len(), 2);
        let mut later = w.clone();
        later.insert("secrets changed".into(), 4);
        later.insert("operator status writes".into(), 3);
        let d = diff(&w, &later);
        assert_eq!(effective_writes(&d), 4);
        assert_eq!(status_writes(&d), 0);
    }
}
