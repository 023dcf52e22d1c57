//! `orgops run`: the operator process (controllers, providers, metrics, leader election).
//!
//! Decisions:
//! - Leader election is on by default; `--leader-election=false` is for local runs and
//!   tests with a single process.
//! - Losing the Lease ends the process with an error (exit code 1) after in-flight
//!   reconciles finish; the Deployment restarts it as a standby. Simple and safe. No write
//!   starts after the loss: the fence (`crate::fence`) closes first, and by itself when no
//!   renewal was confirmed in time (`leader.rs`).
//! - A standby never exits on its own: the election retries API errors itself.
//! - `/readyz` is ok while leading and while standing by as a healthy non-leader (so a
//!   rollout of several replicas completes); `/healthz` is ok while the process lives.
//! - `orgops_queue_depth` counts reconciles in flight or waiting for a worker slot; objects
//!   only scheduled for a later requeue are not counted (approximate by design).

pub mod access;
pub mod args;
pub mod controller;
pub mod deferred_status;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod first_seen;
pub mod funds;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod own_writes;
pub mod owned_secrets;
pub mod parent_webhook_controller;
pub mod priority;
pub mod provider_controller;
pub mod prune;
pub mod registry;
pub mod requeue;
pub mod shard;
pub mod telemetry;

pub use args::RunArgs;
pub use error::RuntimeError;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use http::{Health, Phase};
use metrics::Metrics;
use registry::Registry;
use std::sync::Arc;
use tracing::{info, warn};

type Signal = Shared<BoxFuture<'static, ()>>;

/// Runs until SIGTERM/SIGINT (Ok) or until the leader Lease is lost (Err).
pub async fn run(args: RunArgs) -> Result<(), RuntimeError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| RuntimeError::Config(e.to_string()))?;
    let metrics = Metrics::new();
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RuntimeError::Http {
            addr: args.metrics_addr,
            source,
        })?;
    let app = http::router(metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            warn!(error = %err, "metrics server stopped");
        }
    });
    info!(addr = %args.metrics_addr, namespaces = ?args.watched_namespaces(),
        resync = ?args.resync_interval, concurrency = args.concurrency,
        leader_election = args.leader_election, "starting orgops");
    tokio::spawn(access::check_until_granted(
        client.clone(),
        args.watched_namespaces(),
        args.lease_namespace(),
        health.clone(),
    ));

    let namespaces = args.watched_namespaces();
    shard::check(
        &client,
        namespaces.first().map(String::as_str),
        args.shard_selector(),
    )
    .await?;
    if let Some(selector) = args.shard_selector() {
        info!(
            selector,
            rate_shares = args.rate_shares,
            "one shard: only objects matching the selector"
        );
    }

    let shutdown: Signal = shutdown_signal().boxed().shared();
    let identity = leader::identity();
    if !args.leader_election {
        health.set(Phase::Leading);
        metrics.set_leader(true);
        let fence = crate::fence::Fence::unfenced(&identity);
        run_controllers(&args, client, metrics.clone(), shutdown, fence).await;
        health.set(Phase::Stopping);
        return Ok(());
    }

    let lease_ns = args.lease_namespace();
    // Standing by: the election retries API errors itself and never ends on its own
    // before the Lease was taken.
    let mut leadership = leader::start(
        client.clone(),
        leader::LeaseConfig {
            namespace: lease_ns.clone(),
            name: args.lease_name.clone(),
            identity,
            duration: args.lease_duration,
        },
    );
    health.set(Phase::StandingBy);
    info!(lease = %format!("{lease_ns}/{}", args.lease_name), "waiting for the leader Lease");
    let acquired = tokio::select! {
        got = leadership.acquired() => got,
        () = shutdown.clone() => {
            health.set(Phase::Stopping);
            leadership.release().await;
            return Ok(());
        }
    };
    if !acquired {
        health.set(Phase::Stopping);
        return Err(RuntimeError::LeadershipLost);
    }
    info!("acquired the leader Lease; starting controllers");
    health.set(Phase::Leading);
    metrics.set_leader(true);
    let lost: Signal = leader::Leadership::lost(leadership.is_leader.clone())
        .boxed()
        .shared();
    let stop: Signal = futures::future::select(shutdown.clone(), lost.clone())
        .map(drop)
        .boxed()
        .shared();
    run_controllers(
        &args,
        client,
        metrics.clone(),
        stop,
        leadership.fence.clone(),
    )
    .await;
    health.set(Phase::Stopping);
    metrics.set_leader(false);
    let lost_lease = lost.peek().is_some() && shutdown.peek().is_none();
    leadership.release().await;
    if lost_lease {
        return Err(RuntimeError::LeadershipLost);
    }
    Ok(())
}

/// The OrgProvider controller and one CustomerOrg and one ParentWebhook controller per
/// watched namespace (or one each for all), until `stop` resolves and in-flight reconciles finish.
async fn run_controllers(
    args: &RunArgs,
    client: kube::Client,
    metrics: Metrics,
    stop: Signal,
    fence: crate::fence::Fence,
) {
    // No write starts outside the fenced window (checked right before each one).
    let registry = Arc::new(Registry::default());
    let funds = Arc::new(funds::Funds::default());
    let credentials =
        access::credential_namespaces(&args.watched_namespaces(), &args.lease_namespace());
    let provider_ctrl = provider_controller::controller(client.clone(), credentials.as_deref())
        .reconcile_on(provider_controller::woken(&funds));
    let providers = provider_ctrl.store();
    let provider_ctx = Arc::new(provider_controller::ProviderCtx {
        client: client.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        resync: args.resync_interval,
        backoff: Default::default(),
        credential_namespaces: credentials,
        client_options: crate::provider::build::ClientOptions {
            fence: Some(fence.clone()),
            request_timeout: args.provider_request_timeout,
            rate_shares: args.rate_shares,
            ..Default::default()
        },
        funds: funds.clone(),
        funds_interval: args.funds_check_interval,
    });
    let namespaces = args.watched_namespaces();
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    // One Secret watch per scope: it fills the owned-Secret index, then triggers the
    // owners in both controllers of that scope.
    let mut owned_secrets = owned_secrets::OwnedSecrets::default();
    let mut caches = Vec::new();
    let mut triggers = Vec::new();
    for ns in &scopes {
        let (org_tx, org_rx) = owned_secrets::trigger();
        let (pwh_tx, pwh_rx) = owned_secrets::trigger();
        caches.push(
            owned_secrets
                .watch(client.clone(), *ns, vec![org_tx, pwh_tx])
                .boxed(),
        );
        triggers.push((org_rx, pwh_rx));
    }
    // The caches run until the controllers stop.
    let caches = futures::future::select(futures::future::join_all(caches), stop.clone());
    let pwh_ctx = Arc::new(parent_webhook_controller::PwhCtx {
        client: client.clone(),
        registry: registry.clone(),
        providers: providers.clone(),
        metrics: metrics.clone(),
        resync: args.resync_interval,
        slow_retry: args.slow_retry,
        backoff: Default::default(),
        fence: fence.clone(),
    });
    let org_ctx = Arc::new(controller::OrgCtx {
        client: client.clone(),
        registry: registry.clone(),
        providers: providers.clone(),
        metrics,
        resync: args.resync_interval,
        slow_retry: args.slow_retry,
        backoff: Default::default(),
        own_writes: Arc::new(Default::default()),
        permits: priority::PriorityGate::new(usize::from(args.concurrency)),
        first_seen: Arc::new(Default::default()),
        owned_secrets,
        fence,
        verify_interval: args.verify_interval,
        claims_namespace: args.lease_namespace(),
        verified: Default::default(),
        deferred: Default::default(),
        funds: funds.clone(),
        revisions: Arc::new(crate::changelog::revision::Revisions::new(
            client.clone(),
            args.argocd_namespace.clone(),
        )),
    });
    let mut tasks =
        vec![provider_controller::run(provider_ctrl, provider_ctx, stop.clone()).boxed()];
    // Passes still waiting for a slot when the controllers stop do no work.
    let (gate, stopped) = (org_ctx.permits.clone(), stop.clone());
    tasks.push(
        async move {
            stopped.await;
            gate.close();
        }
        .boxed(),
    );
    let mut org_stores = Vec::new();
    for (ns, (org_rx, pwh_rx)) in scopes.into_iter().zip(triggers) {
        let scope = shard::Scope {
            namespace: ns,
            selector: args.shard_selector(),
        };
        let ctrl = controller::controller(
            client.clone(),
            scope,
            providers.clone(),
            &registry,
            org_ctx.own_writes.clone(),
            org_ctx.first_seen.clone(),
            org_rx,
        );
        let ctrl = controller::with_funds(ctrl, &funds, org_ctx.own_writes.clone());
        org_stores.push(ctrl.store());
        tasks.push(controller::run(ctrl, org_ctx.clone(), stop.clone()).boxed());
        // ParentWebhooks, under the same leadership and write gating.
        let pwh = parent_webhook_controller::controller(client.clone(), scope, pwh_rx);
        tasks.push(
            parent_webhook_controller::run(pwh, pwh_ctx.clone(), args.concurrency, stop.clone())
                .boxed(),
        );
    }
    // The per-state gauges read these caches at each scrape, for this leadership term.
    org_ctx.metrics.watch_stores(org_stores, providers);
    futures::future::select(futures::future::join_all(tasks), caches).await;
    // A replica that no longer leads has no current caches: it stops exporting their gauges.
    org_ctx.metrics.forget_stores();
    info!("controllers stopped");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT: shutting down"),
        () = term => info!("SIGTERM: shutting down"),
    }
}
