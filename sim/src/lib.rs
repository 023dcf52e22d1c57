//! layers-sim: a local, faithful, stateful and fault-injecting simulator of the Layers
//! Partner API (customer-organization surface). See `sim/README.md`.

mod api;
mod control;
mod error;
mod faults;
mod http;
mod ids;
mod model;
mod ratelimit;
mod router;
mod scopes;
mod store;
mod time;
mod validate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

pub use error::SimError;
pub use faults::{FaultConfig, FaultRates, LoseMode};
pub use ratelimit::{Algorithm as RateLimitAlgorithm, Tier};
pub use scopes::{
    CATALOG as SCOPE_CATALOG, DEFAULT_PARENT as DEFAULT_PARENT_SCOPES, parse_list as parse_scopes,
};

/// What a duplicate request gets while the original (same `Idempotency-Key`) is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum InFlightMode {
    /// Wait for the original to finish, then replay its stored outcome.
    #[default]
    Wait,
    /// Answer `409 IDEMPOTENCY_CONFLICT` with `details.inFlight: true` and `Retry-After: 1`.
    Conflict,
}

/// How to run the simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub listen: SocketAddr,
    /// The partner (`org:admin`) key; generated when absent.
    pub parent_key: Option<String>,
    pub parent_credits: u64,
    pub tier: Tier,
    /// Serve the `/_sim/` control API.
    pub control: bool,
    pub state_file: Option<PathBuf>,
    pub faults: FaultConfig,
    pub idempotency_window: Duration,
    /// The parent key's scopes; each must be in [`SCOPE_CATALOG`].
    pub parent_scopes: Vec<String>,
    pub rate_limit_algorithm: RateLimitAlgorithm,
    /// Replaces the tier's documented daily write-light cap (assumed knob, for tests that
    /// cannot send 10,000 writes); `None` = the documented figure.
    pub daily_write_cap: Option<u32>,
    pub idempotency_in_flight: InFlightMode,
    /// Store and replay 4xx outcomes under their `Idempotency-Key` (2xx are always stored,
    /// 5xx never).
    pub idempotency_store_4xx: bool,
    /// Archive deletes the child's webhook endpoints (default: they are kept).
    pub archive_deletes_webhooks: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            parent_key: None,
            parent_credits: 1_000_000,
            tier: Tier::Standard,
            control: true,
            state_file: None,
            faults: FaultConfig::default(),
            idempotency_window: Duration::from_secs(24 * 3600),
            parent_scopes: scopes::default_parent(),
            rate_limit_algorithm: RateLimitAlgorithm::default(),
            daily_write_cap: None,
            idempotency_in_flight: InFlightMode::default(),
            idempotency_store_4xx: true,
            archive_deletes_webhooks: false,
        }
    }
}

pub(crate) type Counters = HashMap<(::http::Method, &'static str, u16), u64>;

/// State shared by every connection.
pub(crate) struct Shared {
    pub state: Mutex<model::State>,
    pub limiter: Mutex<ratelimit::Limiter>,
    pub faults: RwLock<FaultConfig>,
    pub counters: Mutex<Counters>,
    pub faults_injected: AtomicU64,
    pub tier: Tier,
    pub control: bool,
    pub idem_window_us: i64,
    pub parent_credits: i64,
    pub parent_scopes: Vec<String>,
    pub rate_limit_algorithm: RateLimitAlgorithm,
    pub in_flight_mode: InFlightMode,
    pub store_4xx: bool,
    pub archive_deletes_webhooks: bool,
    pub dirty: Notify,
    /// Woken whenever an in-flight idempotent request finishes.
    pub idem_done: Notify,
}

/// A running simulator; stop it with [`RunningSim::shutdown`].
pub struct RunningSim {
    pub addr: SocketAddr,
    pub parent_key: String,
    pub parent_org_id: String,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    persister: Option<tokio::task::JoinHandle<()>>,
}

impl RunningSim {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes open connections and writes the state file one last time.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(p) = self.persister {
            let _ = p.await;
        }
    }
}

/// Binds `cfg.listen` and serves in background tasks.
pub async fn spawn(cfg: SimConfig) -> Result<RunningSim, SimError> {
    cfg.faults.validate().map_err(SimError::Config)?;
    let credits = i64::try_from(cfg.parent_credits)
        .map_err(|_| SimError::Config("parent credits too large".into()))?;
    let window = i64::try_from(cfg.idempotency_window.as_micros())
        .map_err(|_| SimError::Config("idempotency window too large".into()))?;
    let parent_scopes = scopes::parse_list(&cfg.parent_scopes.join(","))
        .map_err(|e| SimError::Config(format!("parent scopes: {e}")))?;
    let loaded = match &cfg.state_file {
        Some(p) => store::load(p)?,
        None => None,
    };
    let state = match loaded {
        Some(mut st) => {
            if let Some(k) = cfg.parent_key.as_deref().filter(|k| *k != st.parent_key) {
                st.replace_parent_key(k);
            }
            st.set_parent_scopes(&parent_scopes);
            st
        }
        None => {
            let key = cfg
                .parent_key
                .clone()
                .unwrap_or_else(|| ids::new_api_key("live").0);
            model::State::fresh(store::Seed {
                parent_key: &key,
                parent_id: Uuid::new_v4(),
                parent_key_id: Uuid::new_v4(),
                credits,
                scopes: &parent_scopes,
                clock_offset_us: 0,
            })
        }
    };
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let parent_key = state.parent_key.clone();
    let parent_org_id = ids::org_id(state.parent_id);
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        limiter: Mutex::new(ratelimit::Limiter::new(
            cfg.rate_limit_algorithm,
            cfg.daily_write_cap,
        )),
        faults: RwLock::new(cfg.faults.clone()),
        counters: Mutex::new(HashMap::new()),
        faults_injected: AtomicU64::new(0),
        tier: cfg.tier,
        control: cfg.control,
        idem_window_us: window,
        parent_credits: credits,
        parent_scopes,
        rate_limit_algorithm: cfg.rate_limit_algorithm,
        in_flight_mode: cfg.idempotency_in_flight,
        store_4xx: cfg.idempotency_store_4xx,
        archive_deletes_webhooks: cfg.archive_deletes_webhooks,
        dirty: Notify::new(),
        idem_done: Notify::new(),
    });
    let (stop, rx) = watch::channel(false);
    let server = tokio::spawn(accept_loop(listener, shared.clone(), rx.clone()));
    let persister = cfg
        .state_file
        .clone()
        .map(|p| tokio::spawn(persist_loop(shared.clone(), p, rx)));
    if let Some(p) = &cfg.state_file {
        // Write the initial state so a restart before any change keeps the same parent org.
        flush(&shared, p).await;
    }
    Ok(RunningSim {
        addr,
        parent_key,
        parent_org_id,
        stop,
        server,
        persister,
    })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut rx: watch::Receiver<bool>) {
    loop {
        let conn_rx = rx.clone();
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let mut rx = conn_rx;
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| http::handle(shared.clone(), req));
                        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            res = conn => if let Err(e) = res {
                                tracing::debug!(error = %e, "connection ended");
                            },
                            _ = stopped(&mut rx) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stopped(&mut rx) => break,
        }
    }
}

async fn persist_loop(shared: Arc<Shared>, path: PathBuf, mut rx: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = shared.dirty.notified() => false,
            _ = stopped(&mut rx) => true,
        };
        if !stopping {
            // Debounce: one write per burst of changes.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        flush(&shared, &path).await;
        if stopping {
            break;
        }
    }
}

async fn flush(shared: &Arc<Shared>, path: &std::path::Path) {
    let bytes = {
        let st = match shared.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        serde_json::to_vec(&*st)
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize state");
            return;
        }
    };
    let path = path.to_path_buf();
    match tokio::task::spawn_blocking(move || store::save(&path, &bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write state file"),
        Err(e) => tracing::error!(error = %e, "state writer task failed"),
    }
}

/// Locks a mutex, recovering from poisoning (a panicked holder must not wedge the server).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves once shutdown was requested (or the handle was dropped).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
