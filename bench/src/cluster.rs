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
        &GroupVersionKind::gvk("orgops.dev", "v1beta1", "CustomerOrg"),
        "customerorgs",
    )
}

pub fn org_provider() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("orgops.dev", "v1beta1", "OrgProvider"),
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
    let probe = r#"{"apiVersion":"orgops.dev/v1beta1","kind":"CustomerOrg","metadata":{"name":"orgops-bench-probe","namespace":"default"},"spec":{"displayName":"Probe","providerRef":{"name":"none"}}}"#;
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
/// are patched. Returns when the namespace is gone, so that the namespace controller's
/// deletion of the Secrets and Events is not still running in the next benchmark's
/// measurements. Gives up after ten minutes (the namespace then stays Terminating): the
/// namespace controller marks 30,000 objects deleted over several minutes.
pub async fn delete_namespace(client: &kube::Client, ns: &str) -> Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.delete(ns, &DeleteParams::default()).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_org());
    let clear = json!({"metadata": {"finalizers": null}});
    let until = Instant::now() + Duration::from_secs(600);
    while Instant::now() < until {
        if nss.get_opt(ns).await?.is_none() {
            break;
        }
        let left = api.list_metadata(&ListParams::default()).await?.items;
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
        "apiVersion": "orgops.dev/v1beta1", "kind": "OrgProvider",
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
        "apiVersion": "orgops.dev/v1beta1", "kind": "CustomerOrg",
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

/// Waits until `expected` objects in the watched namespace are Ready, as the watch's
/// CustomerOrg stream sees them; calls `tick` about every second with the number Ready so
/// far (so the caller can check the operator is alive).
pub async fn wait_all_ready(
    watch: &WriteWatch,
    expected: usize,
    timeout: Duration,
    mut tick: impl FnMut(usize) -> Result<()>,
) -> Result<Duration> {
    let start = Instant::now();
    let mut ready = watch.ready.clone();
    let mut last_tick = Instant::now();
    loop {
        let count = *ready.borrow_and_update();
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
        // Woken by the next change of the count, or after a second to tick.
        if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(1), ready.changed()).await {
            return Err(failed("the CustomerOrg watch ended"));
        }
    }
}

/// The benchmark's only watches of one namespace, one per kind: they count the changes
/// (ADDED/MODIFIED/DELETED) to CustomerOrgs, Secrets and Events (the writes that changed
/// something), and the CustomerOrg one also counts the objects Ready. The apiserver's own
/// request counters have no namespace label, so on a shared control plane they would
/// count other tests' writes too. The API server's bound runs under the same watches
/// (`bound.rs`): what the benchmark observes costs both phases the same.
pub struct WriteWatch {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    pub ready: tokio::sync::watch::Receiver<usize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WriteWatch {
    /// Starts the watches and returns once each has listed the namespace, so the initial
    /// lists are not part of what is timed next.
    pub async fn start(client: &kube::Client, ns: &str) -> Result<WriteWatch> {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let (ready_tx, ready) = tokio::sync::watch::channel(0);
        let (listed_tx, mut listed) = tokio::sync::mpsc::channel::<()>(3);
        let corgs: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &customer_org());
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        let tasks = vec![
            tokio::spawn(count_changes(
                corgs,
                "customerorgs",
                counts.clone(),
                listed_tx.clone(),
                Some((ready_tx, is_ready as fn(&DynamicObject) -> bool)),
            )),
            tokio::spawn(count_changes(
                secrets,
                "secrets",
                counts.clone(),
                listed_tx.clone(),
                None,
            )),
            tokio::spawn(count_changes(
                events,
                "events",
                counts.clone(),
                listed_tx,
                None,
            )),
        ];
        let watch = WriteWatch {
            counts,
            ready,
            tasks,
        };
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(300), listed.recv())
                .await
                .map_err(|_| failed(format!("the watches of {ns} did not list it in 300s")))?
                .ok_or_else(|| failed(format!("a watch of {ns} ended before listing it")))?;
        }
        Ok(watch)
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

/// Where a watch reports how many of its objects are Ready, and how it tells.
type ReadyCount<K> = (tokio::sync::watch::Sender<usize>, fn(&K) -> bool);

/// Ready objects by name, for the CustomerOrg watch.
struct Readiness {
    ready: HashMap<String, bool>,
    count: tokio::sync::watch::Sender<usize>,
}

impl Readiness {
    fn set(&mut self, name: String, ready: Option<bool>) {
        match ready {
            Some(r) => self.ready.insert(name, r),
            None => self.ready.remove(&name),
        };
        let count = self.ready.values().filter(|r| **r).count();
        self.count
            .send_if_modified(|c| std::mem::replace(c, count) != count);
    }
}

async fn count_changes<K>(
    api: Api<K>,
    what: &'static str,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    listed: tokio::sync::mpsc::Sender<()>,
    ready: Option<ReadyCount<K>>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut readiness = ready.map(|(count, is_ready)| {
        (
            Readiness {
                ready: HashMap::new(),
                count,
            },
            is_ready,
        )
    });
    let mut track = |obj: &K, deleted: bool| {
        if let Some((r, is_ready)) = readiness.as_mut() {
            let name = obj.meta().name.clone().unwrap_or_default();
            r.set(name, (!deleted).then(|| is_ready(obj)));
        }
    };
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = stream.next().await {
        let key = match event {
            Ok(watcher::Event::Apply(o)) => {
                track(&o, false);
                format!("{what} changed")
            }
            Ok(watcher::Event::Delete(o)) => {
                track(&o, true);
                format!("{what} deleted")
            }
            // The initial list and re-lists are not writes.
            Ok(watcher::Event::InitApply(o)) => {
                track(&o, false);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                let _ = listed.try_send(());
                continue;
            }
            Ok(watcher::Event::Init) => continue,
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

/// The API server's requests on CustomerOrgs, Secrets and Events so far, by verb,
/// resource and code (`apiserver_request_total`), for where the control plane's work goes.
/// Cluster-wide (the counter has no namespace): meaningful while nothing else runs.
pub async fn apiserver_requests(client: &kube::Client) -> BTreeMap<String, u64> {
    let Ok(request) = http::Request::get("/metrics").body(Vec::new()) else {
        return BTreeMap::new();
    };
    match client.request_text(request).await {
        Ok(text) => parse_apiserver_requests(&text),
        Err(_) => BTreeMap::new(),
    }
}

/// The samples of `metric` in a Prometheus text page: a label reader and the value.
fn samples<'a>(
    text: &'a str,
    metric: &'a str,
) -> impl Iterator<Item = (impl Fn(&str) -> String + 'a, u64)> + 'a {
    text.lines()
        .filter_map(move |l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(labels, value)| {
            let label = move |name: &str| {
                labels
                    .split(&format!("{name}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or_default()
                    .to_string()
            };
            (label, value.trim().parse::<f64>().unwrap_or(0.0) as u64)
        })
}

fn parse_apiserver_requests(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (label, n) in samples(text, "apiserver_request_total") {
        let resource = label("resource");
        if !["customerorgs", "secrets", "events"].contains(&resource.as_str())
            || !label("dry_run").is_empty()
        {
            continue;
        }
        let sub = label("subresource");
        let what = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        *out.entry(format!("{} {what} {}", label("verb"), label("code")))
            .or_insert(0) += n;
    }
    out
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
    for (label, n) in samples(text, "orgops_kube_writes_total") {
        let kind = Some(label("kind"))
            .filter(|k| !k.is_empty())
            .unwrap_or_else(|| "?".into());
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
    fn reads_the_api_servers_requests_by_verb_resource_and_code() {
        let text = concat!(
            "apiserver_request_total{code=\"404\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"secrets\",scope=\"resource\",subresource=\"\",verb=\"GET\",version=\"v1\"} 7\n",
            "apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"orgops.dev\",resource=\"customerorgs\",scope=\"resource\",subresource=\"status\",verb=\"APPLY\",version=\"v1beta1\"} 3\n",
            "apiserver_request_total{code=\"201\",component=\"apiserver\",dry_run=\"All\",group=\"orgops.dev\",resource=\"customerorgs\",scope=\"resource\",subresource=\"\",verb=\"POST\",version=\"v1beta1\"} 1\n",
            "apiserver_request_total{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"coordination.k8s.io\",resource=\"leases\",scope=\"resource\",subresource=\"\",verb=\"PUT\",version=\"v1\"} 9\n",
        );
        let r = parse_apiserver_requests(text);
        assert_eq!(r.get("GET secrets 404"), Some(&7));
        assert_eq!(r.get("APPLY customerorgs/status 200"), Some(&3));
        assert_eq!(
            r.len(),
            2,
            "dry runs and other resources are left out: {r:?}"
        );
    }

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
