//! Benchmark (prints figures, asserts no timing): 300 writes at the standard tier.
//! The server's write bucket holds 60 tokens and refills 1 per second, so no client can
//! finish 300 writes faster than (300 - 60) / 1 = 240 s without a 429. Run once with
//! `cargo test --release --test provider_bench -- --ignored --nocapture`.
//! `ORGOPS_BENCH_WRITES=N` changes the count; `ORGOPS_BENCH_ALGORITHM=fixed-window` runs
//! the simulator's other rate-limit algorithm (per clock minute), to show the client is
//! not tuned to one of them.

mod provider_support;

use std::time::Instant;

use futures::StreamExt;
use layers_sim::Tier;
use orgops::provider::layers::{LayersProvider, RateTier};
use orgops::provider::metrics::ProviderMetrics;
use orgops::provider::*;
use provider_support::*;

const CONCURRENCY: usize = 8;

#[tokio::test]
#[ignore = "benchmark: takes about 4 minutes"]
async fn bench_standard_tier() {
    let writes: usize = std::env::var("ORGOPS_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let algorithm = match std::env::var("ORGOPS_BENCH_ALGORITHM").as_deref() {
        Ok("fixed-window") => layers_sim::RateLimitAlgorithm::FixedWindow,
        _ => layers_sim::RateLimitAlgorithm::TokenBucket,
    };
    let sim = layers_sim::spawn(layers_sim::SimConfig {
        tier: Tier::Standard,
        parent_credits: 1_000,
        rate_limit_algorithm: algorithm,
        ..Default::default()
    })
    .await
    .expect("simulator starts");
    let metrics = ProviderMetrics::unregistered();
    let mut cfg = fast_config(&sim.base_url(), &sim.parent_key, RateTier::Standard);
    cfg.metrics = Some(metrics.clone());
    let fixed = algorithm == layers_sim::RateLimitAlgorithm::FixedWindow;
    if fixed {
        // A fixed window's Retry-After runs to the next minute: let the client wait it out
        // (the operator would requeue instead).
        cfg.max_retry_time = std::time::Duration::from_secs(90);
    }
    let p = LayersProvider::new(cfg).unwrap();

    let start = Instant::now();
    let done: Vec<bool> = futures::stream::iter(0..writes)
        .map(|i| {
            let p = &p;
            async move {
                let new = NewOrg {
                    name: format!("bench {i}"),
                    metadata: meta(&[]),
                    billing_email: None,
                    extras: Default::default(),
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
    let minimum = (writes as f64 - 60.0).max(0.0) / 1.0;
    println!("standard tier ({algorithm:?}): {writes} writes, concurrency {CONCURRENCY}");
    println!("  succeeded:        {ok}");
    println!("  wall time:        {wall:.1} s");
    println!("  theoretical min:  {minimum:.1} s");
    println!("  ratio:            {:.3}", wall / minimum);
    println!("  429 (client/sim): {client_429}/{server_429}");
    println!("  server counts:    {server:?}");
    assert_eq!(ok, writes, "every write succeeded");
    // A token bucket client can overrun a fixed window once per misaligned burst (it then
    // waits for Retry-After); against the token bucket it never provokes one.
    if !fixed {
        assert_eq!(server_429, 0, "no write provoked a 429");
    }
    sim.shutdown().await;
}
