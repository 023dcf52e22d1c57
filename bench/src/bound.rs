//! The API server's own bound for converging N customers: the same number and kinds of
//! Kubernetes writes the operator makes for a new org (the key's Secret claimed by a
//! create before its mint and then applied (server-side apply), the webhook's Secret
//! created, an Event, and the verifying pass's status by server-side apply; the finalizer
//! is part of the create, by the finalizer policy, and the creating pass's status is not
//! written), sent by one client with the operator's concurrency and nothing else (no
//! partner API, no reads, no queue), under the benchmark's same watches of the namespace
//! as the converge (`cluster::WriteWatch`). The converge time divided by this time is how
//! far the operator is from what this API server can absorb.
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::cluster;
use crate::error::{Result, failed};

const MANAGER: &str = "orgops-bench-bound";

/// Writes of one new org, in the operator's order.
pub const WRITES_PER_ORG: usize = 5;
/// What [`WRITES_PER_ORG`] is, for the report.
pub const WRITES_NAMED: &str =
    "key Secret claim, key Secret apply, webhook Secret create, Event, status";

/// Creates `n` CustomerOrgs in a scratch namespace (not timed, no operator watches it),
/// then times `n` × [`WRITES_PER_ORG`] writes, `concurrency` orgs at a time. Returns the
/// time and the CPU line of the timed part (`meter` starts when the clock does), and the
/// objects Ready over time (seconds, count).
pub async fn measure(
    client: &kube::Client,
    n: usize,
    concurrency: usize,
    apply_parallel: usize,
    meter: impl FnOnce() -> crate::machine::CpuMeter,
) -> Result<(Duration, String, Vec<(f64, f64)>)> {
    let ns = format!(
        "bench-bound-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    cluster::create_namespace(client, &ns).await?;
    let objs = (0..n)
        .map(|i| cluster::bench_org(&ns, "bound", &ns, i))
        .collect();
    cluster::apply_all(client, &ns, objs, apply_parallel).await?;
    // Observed as the converge is, from before the clock starts.
    let watch = cluster::WriteWatch::start(client, &ns).await?;
    let corgs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &cluster::customer_org());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let requests_before = cluster::apiserver_requests(client).await;
    let meter = meter();
    let started = Instant::now();
    let writes = stream::iter(0..n)
        .map(|i| {
            let (corgs, secrets, events, ns) = (&corgs, &secrets, &events, ns.as_str());
            async move { one_org(corgs, secrets, events, ns, i).await }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>();
    // Objects Ready over time, as the converge's chart counts them (the same watch).
    let mut progress = vec![(0.0, 0.0)];
    let mut ready = watch.ready.clone();
    tokio::pin!(writes);
    let result = loop {
        tokio::select! {
            r = &mut writes => break r,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                progress.push((started.elapsed().as_secs_f64(), *ready.borrow_and_update() as f64));
            }
        }
    };
    let took = started.elapsed();
    progress.push((took.as_secs_f64(), *ready.borrow_and_update() as f64));
    let cpu_line = meter.report("the bound");
    println!(
        "changes the bound's watches had seen when the clock stopped: {}",
        cluster::effective_writes(&watch.snapshot())
    );
    drop(watch);
    let requests = cluster::diff(&requests_before, &cluster::apiserver_requests(client).await);
    crate::scenarios::print_requests("the bound", &requests, n);
    cluster::delete_namespace(client, &ns).await?;
    result?;
    Ok((took, cpu_line, progress))
}

async fn one_org(
    corgs: &Api<DynamicObject>,
    secrets: &Api<Secret>,
    events: &Api<Event>,
    ns: &str,
    i: usize,
) -> Result<()> {
    let name = format!("c-{i:05}");
    let claim: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("{name}-integration"), "namespace": ns,
                     "labels": {"app.kubernetes.io/managed-by": "orgops"},
                     "annotations": {"orgops.dev/key-id": "", "orgops.dev/key-name": "integration"}},
        "type": "Opaque",
    }))
    .map_err(|e| failed(format!("bound: a Secret: {e}")))?;
    let create = PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..Default::default()
    };
    secrets.create(&create, &claim).await?;
    let status = || {
        json!({
            "apiVersion": "orgops.dev/v1beta1", "kind": "CustomerOrg",
            "status": {
                "observedGeneration": 1,
                "orgId": format!("org_{i:032}"),
                "state": "active",
                "credits": {"allocated": 10, "balance": 10, "available": 10},
                "apiKeys": [{"name": "integration", "id": format!("key_{i:032}"),
                             "prefix": "lk_live_abcd", "secretName": format!("{name}-integration"),
                             "specHash": "0123456789abcdef"}],
                "webhooks": [{"name": "crm", "id": format!("we_{i:032}"),
                              "secretName": format!("{name}-crm-webhook"),
                              "specHash": "0123456789abcdef"}],
                "conditions": [
                    cond("Ready", "True", "Reconciled", "org matches the spec"),
                    cond("Reconciling", "False", "Reconciled", "no work pending"),
                    cond("Stalled", "False", "Reconciled", "no human action needed"),
                ],
            },
        })
    };

    let secret = |suffix: &str, key: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{name}-{suffix}"), "namespace": ns,
                         "labels": {"app.kubernetes.io/managed-by": "orgops"},
                         "annotations": {"orgops.dev/owner": format!("{ns}/{name}")}},
            "type": "Opaque",
            "stringData": {key: format!("lk_live_{i:040}")},
        })
    };
    secrets
        .patch(
            &format!("{name}-integration"),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret("integration", "apiKey")),
        )
        .await?;
    let hook: Secret = serde_json::from_value(secret("crm-webhook", "signingSecret"))
        .map_err(|e| failed(format!("bound: a Secret: {e}")))?;
    secrets.create(&create, &hook).await?;
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.{}", &uuid::Uuid::new_v4().simple().to_string()[..16])},
        "eventTime": MicroTime(k8s_openapi::jiff::Timestamp::now()),
        "reportingController": "orgops.dev/controller",
        "reportingInstance": "orgops-bench",
        "action": "Reconcile",
        "reason": "Created",
        "type": "Normal",
        "note": "created org, allocated 10 credits, minted key integration, created webhook crm",
        "regarding": {"apiVersion": "orgops.dev/v1beta1", "kind": "CustomerOrg",
                      "name": name, "namespace": ns},
    }))
    .map_err(|e| failed(format!("bound: an Event: {e}")))?;
    events.create(&PostParams::default(), &event).await?;
    apply_status(corgs, &name, &status()).await?;
    Ok(())
}

async fn apply_status(
    corgs: &Api<DynamicObject>,
    name: &str,
    status: &serde_json::Value,
) -> Result<()> {
    corgs
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(status),
        )
        .await?;
    Ok(())
}

fn cond(t: &str, s: &str, reason: &str, message: &str) -> serde_json::Value {
    json!({"type": t, "status": s, "reason": reason, "message": message,
           "observedGeneration": 1, "lastTransitionTime": "2026-11-26T00:00:00Z"})
}
