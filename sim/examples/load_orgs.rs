//! Loader for the memory figure: creates N child orgs (with metadata) through the HTTP API.
//! Usage: cargo run --release -p layers-sim --example load_orgs -- BASE_URL PARENT_KEY [N]
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (base, key) = match (args.get(1), args.get(2)) {
        (Some(b), Some(k)) => (b.clone(), k.clone()),
        _ => {
            eprintln!("usage: load_orgs BASE_URL PARENT_KEY [N]");
            std::process::exit(2);
        }
    };
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (http, base, key, next) = (http.clone(), base.clone(), key.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let body = serde_json::json!({
                    "name": format!("customer-{i:06}"),
                    "metadata": { "externalId": format!("cust-{i}"), "orgops.io/namespace": "tenants" },
                });
                let r = http
                    .post(format!("{base}/v1/organizations"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {}
                    Ok(r) => eprintln!("org {i}: status {}", r.status()),
                    Err(e) => eprintln!("org {i}: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "created {n} orgs in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
