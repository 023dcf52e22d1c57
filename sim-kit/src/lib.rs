//! `sim-kit`: the machinery every partner-API simulator shares — fault injection, request
//! counters, a simulator clock, the state file, the common `/_sim/` control API, an
//! idempotency store and a hyper serve loop that can drop a connection without answering.
//! A simulator implements [`App`] (its routes, handlers, error envelope and state) and
//! calls [`serve`]. See `sim-kit/README.md`.

pub mod cli;
pub mod clock;
mod control;
pub mod counters;
pub mod faults;
mod http;
pub mod idempotency;
pub mod router;
pub mod store;
pub mod switches;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use ::http::{Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use clock::Clock;
pub use control::{ControlError, parse_control_body};
pub use counters::Counters;
pub use faults::{Class, FaultConfig, FaultRates, LoseMode};
pub use http::{ApiRequest, Dropped, MAX_BODY, Rejection, Reply, finish, header, read_body};
pub use idempotency::{IdemStore, Lookup, fingerprint};
pub use router::{Matched, Miss, Route};
pub use switches::Switches;

/// Errors of the simulator process itself (not of API requests).
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    StateIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    StateParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// One simulated API. The kit owns the state behind one lock; every API request and
/// control call runs with `&mut State`, so a request is atomic and a duplicate waits.
pub trait App: Send + Sync + Sized + 'static {
    /// Everything persisted in the state file.
    type State: Serialize + DeserializeOwned + Send + 'static;
    /// The API's operations (route table values).
    type Op: Copy + Send + Sync + std::fmt::Debug + 'static;
    /// The simulator's own `/_sim/` operations beyond the common ones.
    type ControlOp: Copy + Send + Sync + std::fmt::Debug + 'static;

    /// The API route table.
    fn routes(&self) -> &'static [Route<Self::Op>];
    /// Runs one API request (after faults, body limits and content-type checks).
    fn handle(&self, st: &mut Self::State, req: &ApiRequest<'_, Self::Op>) -> Reply;
    /// Renders an error the kit detected in the vendor's envelope.
    fn reject(&self, rejection: &Rejection, request_id: &str) -> Reply;

    /// Extra `/_sim/` routes (plans, status switches, ...).
    fn control_routes(&self) -> &'static [Route<Self::ControlOp>] {
        &[]
    }
    /// Runs one extra control call; the value is answered with `200`.
    fn control(
        &self,
        _st: &mut Self::State,
        _op: Self::ControlOp,
        _params: &[String],
        _body: &[u8],
        _now_us: i64,
    ) -> Result<serde_json::Value, ControlError> {
        Err(ControlError::not_found("control route"))
    }
    /// `POST /_sim/reset`: replace the state with a fresh one (credentials kept).
    fn reset(&self, st: &mut Self::State, now_us: i64);
    /// `GET /_sim/state`: a JSON document, never containing secrets.
    fn state_view(&self, st: &Self::State, now_us: i64) -> Vec<u8>;
    /// Adds headers to every API response, faults included (e.g. rate-limit class).
    fn decorate(&self, _op: Option<Self::Op>, _reply: &mut Reply) {}

    /// `GET /_sim/assumptions`: the switches selecting the simulator's answers where the
    /// vendor's docs are silent (see [`Switches`]).
    fn assumptions(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// `PATCH /_sim/assumptions`: changes the switches sent (see [`Switches::patch`]).
    fn set_assumptions(&self, _body: &[u8]) -> Result<serde_json::Value, ControlError> {
        Err(ControlError::validation(
            "this simulator has no assumption switches",
        ))
    }
}

/// Everything a connection needs; reachable from in-process tests through [`RunningSim::sim`].
pub struct Sim<A: App> {
    pub app: A,
    state: Mutex<A::State>,
    faults: RwLock<FaultConfig>,
    pub counters: Counters,
    pub clock: Clock,
    control: bool,
    dirty: Notify,
}

impl<A: App> Sim<A> {
    /// Runs `f` on the state under the lock (in-process tests and start-up only).
    pub fn with_state<T>(&self, f: impl FnOnce(&mut A::State) -> T) -> T {
        let out = f(&mut lock(&self.state));
        self.dirty.notify_one();
        out
    }

    pub fn faults(&self) -> FaultConfig {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_faults(&self, cfg: FaultConfig) -> Result<(), String> {
        cfg.validate()?;
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = cfg;
        Ok(())
    }
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct KitConfig {
    pub listen: SocketAddr,
    /// Serve the `/_sim/` control API.
    pub control: bool,
    /// Write the state here after changes (atomic) and once more on shutdown.
    pub state_file: Option<PathBuf>,
    pub faults: FaultConfig,
}

impl Default for KitConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: true,
            state_file: None,
            faults: FaultConfig::default(),
        }
    }
}

/// A running simulator; stop it with [`RunningSim::shutdown`].
pub struct RunningSim<A: App> {
    pub addr: SocketAddr,
    pub sim: Arc<Sim<A>>,
    tasks: Tasks,
}

impl<A: App> RunningSim<A> {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes open connections and writes the state file one last time.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

impl<A: App> Persisted for Sim<A> {
    fn dirty(&self) -> &Notify {
        &self.dirty
    }
    fn snapshot(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&*lock(&self.state))
    }
}

/// Binds `cfg.listen`, writes the initial state file and serves in background tasks.
/// Load a previous state first with [`store::load`].
pub async fn serve<A: App>(
    app: A,
    state: A::State,
    cfg: KitConfig,
) -> Result<RunningSim<A>, KitError> {
    cfg.faults.validate().map_err(KitError::Config)?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| KitError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| KitError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let sim = Arc::new(Sim {
        app,
        state: Mutex::new(state),
        faults: RwLock::new(cfg.faults.clone()),
        counters: Counters::default(),
        clock: Clock::default(),
        control: cfg.control,
        dirty: Notify::new(),
    });
    if let Some(p) = &cfg.state_file {
        // The first write fails loudly (bad directory, permissions) instead of later in a log.
        let bytes = sim
            .snapshot()
            .map_err(|e| KitError::Config(format!("cannot serialize state: {e}")))?;
        store::save(p, &bytes)?;
    }
    let handler = {
        let sim = sim.clone();
        move |req| http::handle(sim.clone(), req)
    };
    let persist = cfg
        .state_file
        .clone()
        .map(|p| (sim.clone(), p, Duration::from_millis(50)));
    let tasks = start(listener, handler, persist);
    Ok(RunningSim { addr, sim, tasks })
}

/// What the state-file writer needs: a change signal and a serialized snapshot.
pub trait Persisted: Send + Sync + 'static {
    /// Notified after every change worth writing.
    fn dirty(&self) -> &Notify;
    fn snapshot(&self) -> Result<Vec<u8>, serde_json::Error>;
}

/// A server's background tasks: the accept loop and, with a state file, its writer.
pub struct Tasks {
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    persister: Option<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    /// Stops accepting, closes open connections and writes the state file one last time.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if let Some(p) = self.persister {
            let _ = p.await;
        }
    }
}

/// Serves `listener` (HTTP/1, one `handler` call per request; `Err(Dropped)` aborts the
/// connection) and, with `persist = (source, path, debounce)`, writes the state file at most
/// once per `debounce` after changes and once more on shutdown.
pub fn start<H, F, P>(
    listener: TcpListener,
    handler: H,
    persist: Option<(Arc<P>, PathBuf, Duration)>,
) -> Tasks
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Dropped>> + Send + 'static,
    P: Persisted,
{
    let (stop, rx) = watch::channel(false);
    let server = tokio::spawn(accept_loop(listener, handler, rx.clone()));
    let persister =
        persist.map(|(src, path, debounce)| tokio::spawn(persist_loop(src, path, debounce, rx)));
    Tasks {
        stop,
        server,
        persister,
    }
}

async fn accept_loop<H, F>(listener: TcpListener, handler: H, rx: watch::Receiver<bool>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, Dropped>> + Send + 'static,
{
    let mut stop_rx = rx.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let mut conn_rx = rx.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(handler);
                        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                        tokio::select! {
                            res = conn => if let Err(e) = res {
                                tracing::debug!(error = %e, "connection ended");
                            },
                            _ = stopped(&mut conn_rx) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = stopped(&mut stop_rx) => break,
        }
    }
}

async fn persist_loop<P: Persisted>(
    src: Arc<P>,
    path: PathBuf,
    debounce: Duration,
    mut rx: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = src.dirty().notified() => false,
            _ = stopped(&mut rx) => true,
        };
        if !stopping {
            // Debounce: one write per burst of changes.
            tokio::time::sleep(debounce).await;
        }
        flush(&*src, &path).await;
        if stopping {
            break;
        }
    }
}

/// Writes the current snapshot to the state file; failures are logged, not returned.
pub async fn flush<P: Persisted>(src: &P, path: &std::path::Path) {
    let bytes = match src.snapshot() {
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
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Resolves once shutdown was requested (or the handle was dropped).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// A fresh request id: `req_` + 32 hex digits.
pub fn request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}
