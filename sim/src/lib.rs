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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sim_kit::{Counters, Persisted, Switches, Tasks};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use uuid::Uuid;

pub use error::SimError;
pub use faults::{FaultConfig, FaultRates, LoseMode};
pub use ratelimit::{Algorithm as RateLimitAlgorithm, Tier};
pub use scopes::{
    CATALOG as SCOPE_CATALOG, DEFAULT_PARENT as DEFAULT_PARENT_SCOPES, parse_list as parse_scopes,
};

/// What a duplicate request gets while the original (same `Idempotency-Key`) is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InFlightMode {
    /// Wait for the original to finish, then replay its stored outcome.
    #[default]
    Wait,
    /// Answer `409 IDEMPOTENCY_CONFLICT` with `details.inFlight: true` and `Retry-After: 1`.
    Conflict,
}

/// What `GET …/credits/events` shows of an allocation's `description` and `metadata`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CreditEvents {
    /// The request's `description` and `metadata` (system keys winning) on both ledger
    /// events: "merged onto the ledger event" (row 11), field names assumed.
    #[default]
    WithMetadata,
    /// Only the fields §2.6 shows (`eventId`, `projectId`, `credits`, `eventType`,
    /// `balanceAfterPrepaid`, `createdAt`, …): no `description`, no `metadata`.
    Documented,
}

/// Whether the parent may change a suspended child (seed 000: "can still read and manage").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SuspendedWrites {
    /// Every parent write works on a suspended child (decision 8).
    #[default]
    Allow,
    /// Only resume, archive and reads: any other write to a suspended child (PATCH,
    /// allocate, credit config, keys, webhooks through `X-Layers-Organization`) is
    /// `409 CONFLICT` ("that's how you resume or archive it").
    Refuse,
}

/// Whose requests share a per-minute bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitScope {
    /// One bucket per API key and class: everything the parent key does, inside any
    /// child too, counts on the parent key.
    #[default]
    ParentKey,
    /// One bucket per organization and class: a request about a child (its path, or
    /// `X-Layers-Organization`) and the child's own keys share the child's bucket; the
    /// parent's other requests use the parent's. The daily cap stays per key.
    ChildOrg,
}

/// What an unknown field in a request body gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownFields {
    /// `422 VALIDATION` naming the field (decision 17).
    #[default]
    Reject,
    /// Ignored, as many APIs do (Layers' own MCP client sends `tagline`, `brandVoice` and
    /// `targetGender` on `POST /v1/projects`).
    Ignore,
}

/// Where the Layers docs are silent, one plausible answer per switch (README "Assumption
/// switches"); flags set them at start, `PATCH /_sim/assumptions` at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assumptions {
    pub credit_events: CreditEvents,
    pub suspended_writes: SuspendedWrites,
    pub idempotency_in_flight: InFlightMode,
    /// Store and replay 4xx outcomes under their `Idempotency-Key` (2xx are always
    /// stored, 5xx never).
    pub idempotency_store_4xx: bool,
    /// Archive deletes the child's webhook endpoints (default: they are kept).
    pub archive_deletes_webhooks: bool,
    /// Capacity of a per-minute token bucket; `None` = the per-minute limit itself. The
    /// refill stays limit/60 per second.
    pub rate_limit_burst: Option<u32>,
    pub rate_limit_scope: RateLimitScope,
    pub unknown_fields: UnknownFields,
}

/// The answers the simulator gives by default (README "Decisions").
impl Default for Assumptions {
    fn default() -> Assumptions {
        Assumptions {
            credit_events: CreditEvents::default(),
            suspended_writes: SuspendedWrites::default(),
            idempotency_in_flight: InFlightMode::default(),
            idempotency_store_4xx: true,
            archive_deletes_webhooks: false,
            rate_limit_burst: None,
            rate_limit_scope: RateLimitScope::default(),
            unknown_fields: UnknownFields::default(),
        }
    }
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
    /// The assumption switches at start.
    pub assumptions: Assumptions,
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
            assumptions: Assumptions::default(),
        }
    }
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub state: Mutex<model::State>,
    pub limiter: Mutex<ratelimit::Limiter>,
    pub faults: RwLock<FaultConfig>,
    pub counters: Counters,
    pub tier: Tier,
    pub control: bool,
    pub idem_window_us: i64,
    pub parent_credits: i64,
    pub parent_scopes: Vec<String>,
    pub rate_limit_algorithm: RateLimitAlgorithm,
    pub switches: Switches<Assumptions>,
    pub dirty: Notify,
    /// Woken whenever an in-flight idempotent request finishes.
    pub idem_done: Notify,
}

/// A running simulator; stop it with [`RunningSim::shutdown`].
pub struct RunningSim {
    pub addr: SocketAddr,
    pub parent_key: String,
    pub parent_org_id: String,
    tasks: Tasks,
}

impl RunningSim {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, closes open connections and writes the state file one last time.
    pub async fn shutdown(self) {
        self.tasks.shutdown().await;
    }
}

impl Persisted for Shared {
    fn dirty(&self) -> &Notify {
        &self.dirty
    }
    fn snapshot(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&*lock(&self.state))
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
        counters: Counters::default(),
        tier: cfg.tier,
        control: cfg.control,
        idem_window_us: window,
        parent_credits: credits,
        parent_scopes,
        rate_limit_algorithm: cfg.rate_limit_algorithm,
        switches: Switches::new(cfg.assumptions.clone()),
        dirty: Notify::new(),
        idem_done: Notify::new(),
    });
    let handler = {
        let shared = shared.clone();
        move |req| http::handle(shared.clone(), req)
    };
    let persist = cfg
        .state_file
        .clone()
        .map(|p| (shared.clone(), p, Duration::from_millis(100)));
    let tasks = sim_kit::start(listener, handler, persist);
    if let Some(p) = &cfg.state_file {
        // Write the initial state so a restart before any change keeps the same parent org.
        sim_kit::flush(&*shared, p).await;
    }
    Ok(RunningSim {
        addr,
        parent_key,
        parent_org_id,
        tasks,
    })
}

pub(crate) use sim_kit::lock;
