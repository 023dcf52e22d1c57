//! Benchmark (prints figures, asserts no timing): 300 writes at the standard tier.
//! The server's write bucket holds 60 tokens and refills 1 per second, so no client can
//! finish 300 writes faster than (300 - 60) / 1 = 240 s without a 429. Run once with
//! `cargo test --release --test provider_bench -- --ignored --nocapture`.

mod provider_support;

use std::time::Instant;

use futures::StreamExt;
use layers_sim::Tier;
use orgops::provider::layers::{LayersProvider, RateTier};
use orgops::provider::metrics::ProviderMetrics;
use orgops::provider::*;
use provider_support::*;

const WRITES: usize = 300;
const CONCURRENCY: usize = 8;

#[tokio::test]
#[ignore = "benchmark: takes about 4 minutes"]
async fn bench_standard_tier() {
    let sim = sim(Tier::Standard, 1_000).await;
    let metrics = ProviderMetrics::unregistered();
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Standard);
    cfg.metrics = Some(metrics.clone());
    let p = LayersProvider::new(cfg).unwrap();

    let start = Instant::now();
    let done: Vec<bool> = futures::stream::iter(0..WRITES)
        .map(|i| {
            let p = &p;
            async move {
                let new = NewOrg {
                    name: format!("bench {i}"),
                    metadata: meta(&[]),
                    billing_email: None,
                };
                p.create_org(&new, &key(format!("bench-{i}"))).await.is_ok()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let wall = start.elapsed().as_secs_f64();

    let ok = done.iter().filter(|d| **d).count();
    let server = count(&sim, "POST", "/v1/organizations").await;
    let server_429 = server.get(&429).copied().unwrap_or(0);
    let client_429 = metrics.responses_with_status("429");
    let minimum = (WRITES as f64 - 60.0) / 1.0;
    println!("standard tier: {WRITES} writes, concurrency {CONCURRENCY}");
    println!("  succeeded:        {ok}");
    println!("  wall time:        {wall:.1} s");
    println!("  theoretical min:  {minimum:.1} s");
    println!("  ratio:            {:.3}", wall / minimum);
    println!("  429 (client/sim): {client_429}/{server_429}");
    println!("  server counts:    {server:?}");
    assert_eq!(ok, WRITES, "every write succeeded");
    assert_eq!(server_429, 0, "no write provoked a 429");
    sim.shutdown().await;
}
