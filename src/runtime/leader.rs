//! Leader election on a coordination.k8s.io Lease, written here rather than with
//! kube-lease-manager: the fence (`crate::fence`) needs the instant of each renewal the
//! API server confirmed, and kube-lease-manager reports only a bool, flipped when it next
//! manages to talk to the API server (a frozen or partitioned leader kept "leading"); its
//! renewals are also unconditional patches, so a zombie's renewal lands on the new
//! holder's Lease. Here every change of the Lease is a compare-and-swap on the
//! resourceVersion this replica read (a merge patch carrying that resourceVersion, which
//! the API server refuses with 409 when someone else wrote first):
//!
//! - Leading: renew every `duration / 3`. A renewal sent at `t` (monotonic) and confirmed
//!   with this replica still the holder opens the fence until `t + duration - margin`
//!   (`margin = duration / 5`). A renewal that fails is retried every `duration / 10`; once
//!   the fence has closed without one (frozen, partitioned, API server down) the
//!   Lease is lost: the process stops writing at once and exits (docs/architecture.md).
//! - Standing by: read the Lease every `duration / 10`. A Lease that has not changed for
//!   its `leaseDurationSeconds` since this replica first saw it that way (its own
//!   monotonic clock, as client-go's leader election measures, so no two clocks are ever
//!   compared) is expired and taken, as is a free one (released by its holder on
//!   shutdown).
//!
//! Why the fence closes before anyone can take over: a standby takes the Lease only with a
//! swap on the version it read at least `duration` earlier, so the holder's last confirmed
//! renewal was sent before that read, and its fence closed `margin` before the takeover.
use crate::fence::Fence;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How long shutdown waits for the Lease release before leaving it to expire.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Lease this replica competes for.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// `--lease-duration`: how long a Lease nobody renews stays taken.
    pub duration: Duration,
}

impl LeaseConfig {
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// Between attempts that failed, and between a standby's reads.
    pub fn retry_every(&self) -> Duration {
        (self.duration / 10).max(Duration::from_millis(100))
    }

    /// What the fence keeps back from the lease duration: room for a write that started
    /// just before the window closed, and for clock-rate drift between replicas.
    pub fn margin(&self) -> Duration {
        self.duration / 5
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs_f64().ceil() as u64)
            .unwrap_or(i32::MAX)
            .max(1)
    }
}

/// This process's identity in the Lease: the pod name when set, else host + random.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "orgops".into());
            format!("{host}-{}", uuid::Uuid::new_v4().simple())
        })
}

/// A running election: `is_leader` turns true when the Lease is taken and false when it
/// is lost (it never turns true again: the process exits and a fresh one stands by).
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    pub fence: Fence,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts competing for the Lease; API errors are retried inside, never returned.
pub fn start(client: Client, cfg: LeaseConfig) -> Leadership {
    let fence = Fence::closed(&cfg.identity);
    let (tx, is_leader) = watch::channel(false);
    let (stop, stopped) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let task = tokio::spawn(elect(api, cfg, fence.clone(), tx, stopped));
    Leadership {
        is_leader,
        fence,
        stop,
        task,
    }
}

impl Leadership {
    /// Waits until this process holds the Lease; `false` when the election ended.
    pub async fn acquired(&mut self) -> bool {
        self.is_leader.wait_for(|v| *v).await.is_ok()
    }

    /// Resolves when the Lease is lost (or the election stopped).
    pub async fn lost(mut rx: watch::Receiver<bool>) {
        if rx.wait_for(|v| *v).await.is_err() {
            return;
        }
        let _ = rx.wait_for(|v| !*v).await;
    }

    /// Closes the fence and releases the Lease so a standby takes over at once instead of
    /// after expiry. Bounded: with the API server gone the Lease simply expires.
    pub async fn release(self) {
        self.fence.close();
        let _ = self.stop.send(true);
        if tokio::time::timeout(RELEASE_TIMEOUT, self.task)
            .await
            .is_err()
        {
            warn!(
                timeout_secs = RELEASE_TIMEOUT.as_secs(),
                "releasing the leader Lease timed out; it will expire instead"
            );
        }
    }
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// `lease` as `cfg.identity` takes or renews it: holder, times, duration.
fn held_by(lease: &Lease, cfg: &LeaseConfig, acquiring: bool) -> Lease {
    let mut next = lease.clone();
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    let now = MicroTime(jiff::Timestamp::now());
    if acquiring {
        if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(now.clone());
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(cfg.seconds());
    next
}

/// One compare-and-swap on the Lease as read (`lease` carries its resourceVersion): its
/// whole spec, as a merge patch pinned to that version (absent fields are cleared).
/// `Ok(None)` when someone wrote it first (409).
pub async fn swap(api: &Api<Lease>, lease: &Lease) -> Result<Option<Lease>, kube::Error> {
    let name = lease.metadata.name.clone().unwrap_or_default();
    let spec = lease.spec.clone().unwrap_or_default();
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": lease.metadata.resource_version},
        "spec": {
            "holderIdentity": spec.holder_identity,
            "acquireTime": spec.acquire_time,
            "renewTime": spec.renew_time,
            "leaseDurationSeconds": spec.lease_duration_seconds,
            "leaseTransitions": spec.lease_transitions,
        },
    });
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(l) => Ok(Some(l)),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes `observed` (free or expired, as read) for `cfg.identity`: `Ok(None)` when
/// another replica changed it since the read.
pub async fn try_acquire(
    api: &Api<Lease>,
    observed: &Lease,
    cfg: &LeaseConfig,
) -> Result<Option<Lease>, kube::Error> {
    swap(api, &held_by(observed, cfg, true)).await
}

enum Step {
    Lead(Box<Lease>),
    Stand,
    Lost(&'static str),
    Stopped,
}

/// What a standby remembers of the Lease: the version it last saw change, and when.
struct Seen {
    version: String,
    since: Instant,
}

async fn elect(
    api: Api<Lease>,
    cfg: LeaseConfig,
    fence: Fence,
    tx: watch::Sender<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut seen: Option<Seen> = None;
    let mut held: Option<Box<Lease>> = None;
    loop {
        let step = match held.take() {
            None => stand_by(&api, &cfg, &fence, &mut seen, &mut stopped).await,
            Some(lease) => lead(&api, &cfg, &fence, *lease, &mut stopped).await,
        };
        match step {
            Step::Lead(lease) => {
                if !*tx.borrow() {
                    info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity,
                        fence_secs = fence.remaining().map(|d| d.as_secs_f64()), "acquired the leader Lease");
                    let _ = tx.send(true);
                }
                held = Some(lease);
            }
            Step::Stand => {}
            Step::Lost(why) => {
                fence.close();
                warn!(reason = why, "lost the leader Lease");
                let _ = tx.send(false);
                return;
            }
            Step::Stopped => {
                fence.close();
                if *tx.borrow() {
                    release(&api, &cfg).await;
                }
                return;
            }
        }
    }
}

/// Sleeps `d` unless asked to stop first (`true`: stop).
async fn pause(d: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

async fn stand_by(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    fence: &Fence,
    seen: &mut Option<Seen>,
    stopped: &mut watch::Receiver<bool>,
) -> Step {
    if pause(Duration::ZERO, stopped).await {
        return Step::Stopped;
    }
    let read = tokio::time::timeout(cfg.renew_every(), api.get_opt(&cfg.name)).await;
    let lease = match read {
        Ok(Ok(Some(lease))) => lease,
        Ok(Ok(None)) => {
            let new = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: None,
            };
            let sent = Instant::now();
            match api
                .create(&PostParams::default(), &held_by(&new, cfg, true))
                .await
            {
                Ok(lease) => {
                    fence.open_until(sent + cfg.duration.saturating_sub(cfg.margin()));
                    return Step::Lead(Box::new(lease));
                }
                Err(kube::Error::Api(e)) if e.code == 409 => return Step::Stand,
                Err(e) => {
                    warn!(error = %e, "cannot create the leader Lease; retrying");
                    return wait(cfg, stopped).await;
                }
            }
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot read the leader Lease; retrying");
            return wait(cfg, stopped).await;
        }
        Err(_) => return wait(cfg, stopped).await,
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let now = Instant::now();
    let since = match seen.as_ref() {
        Some(s) if s.version == version => s.since,
        _ => {
            *seen = Some(Seen {
                version,
                since: now,
            });
            now
        }
    };
    let lasts = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(cfg.duration, Duration::from_secs);
    // Held under this very identity (a restart under the same POD_NAME) counts as held:
    // this process never had a window under it, so it waits for expiry like anyone.
    let free = holder(&lease).is_none();
    let expired = now.duration_since(since) >= lasts;
    if !(free || expired) {
        return wait(cfg, stopped).await;
    }
    let sent = Instant::now();
    match try_acquire(api, &lease, cfg).await {
        Ok(Some(lease)) => {
            fence.open_until(sent + cfg.duration.saturating_sub(cfg.margin()));
            Step::Lead(Box::new(lease))
        }
        Ok(None) => Step::Stand,
        Err(e) => {
            warn!(error = %e, "cannot take the leader Lease; retrying");
            wait(cfg, stopped).await
        }
    }
}

async fn wait(cfg: &LeaseConfig, stopped: &mut watch::Receiver<bool>) -> Step {
    if pause(cfg.retry_every(), stopped).await {
        Step::Stopped
    } else {
        Step::Stand
    }
}

/// One renewal round: wait for the renewal time, then swap until confirmed, or until the
/// fence closed without one.
async fn lead(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    fence: &Fence,
    mut lease: Lease,
    stopped: &mut watch::Receiver<bool>,
) -> Step {
    if pause(cfg.renew_every(), stopped).await {
        return Step::Stopped;
    }
    loop {
        let sent = Instant::now();
        let attempt = tokio::time::timeout(
            cfg.retry_every().max(cfg.renew_every()),
            swap(api, &held_by(&lease, cfg, false)),
        )
        .await;
        match attempt {
            Ok(Ok(Some(renewed))) if holder(&renewed) == Some(cfg.identity.as_str()) => {
                fence.open_until(sent + cfg.duration.saturating_sub(cfg.margin()));
                return Step::Lead(Box::new(renewed));
            }
            Ok(Ok(Some(_))) => return Step::Lost("another replica holds the Lease"),
            Ok(Ok(None)) => match api.get_opt(&cfg.name).await {
                // Changed by someone else (an annotation, a label) but still ours.
                Ok(Some(current)) if holder(&current) == Some(cfg.identity.as_str()) => {
                    lease = current;
                }
                Ok(_) => return Step::Lost("another replica took the Lease"),
                Err(e) => warn!(error = %e, "cannot read the leader Lease after a conflict"),
            },
            Ok(Err(e)) => warn!(error = %e, "renewing the leader Lease failed; retrying"),
            Err(_) => warn!("renewing the leader Lease timed out; retrying"),
        }
        if !fence.is_open() {
            return Step::Lost(
                "leader fence expired: no Lease renewal confirmed within the lease duration minus the margin",
            );
        }
        if pause(cfg.retry_every(), stopped).await {
            return Step::Stopped;
        }
    }
}

/// Clears the holder so a standby takes over at once (a swap: never another's Lease).
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let current = match api.get_opt(&cfg.name).await {
        Ok(Some(l)) if holder(&l) == Some(cfg.identity.as_str()) => l,
        Ok(_) => return,
        Err(e) => {
            warn!(error = %e, "releasing the leader Lease: cannot read it");
            return;
        }
    };
    let mut released = current;
    if let Some(spec) = released.spec.as_mut() {
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = None;
        spec.lease_duration_seconds = None;
    }
    if let Err(e) = swap(api, &released).await {
        warn!(error = %e, "releasing the leader Lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(secs: u64) -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: "me".into(),
            duration: Duration::from_secs(secs),
        }
    }

    #[test]
    fn renewals_keep_the_window_open_and_the_margin_closes_it_before_expiry() {
        let c = cfg(15);
        assert_eq!(c.renew_every(), Duration::from_secs(5));
        assert_eq!(c.margin(), Duration::from_secs(3));
        assert_eq!(c.retry_every(), Duration::from_millis(1500));
        // A renewal every 5 s keeps a 12 s window open; the window of the last one
        // confirmed closes 3 s before a standby may take the Lease.
        assert!(c.renew_every() < c.duration - c.margin());
        let c = cfg(4);
        assert!(c.renew_every() + c.retry_every() < c.duration - c.margin());
        assert_eq!(c.seconds(), 4);
    }

    #[test]
    fn taking_the_lease_counts_a_transition_and_a_renewal_does_not() {
        let c = cfg(15);
        let other = Lease {
            metadata: ObjectMeta {
                name: Some("l".into()),
                resource_version: Some("7".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("other".into()),
                lease_transitions: Some(2),
                ..Default::default()
            }),
        };
        let taken = held_by(&other, &c, true);
        let spec = taken.spec.clone().unwrap_or_default();
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("7"),
            "a swap on the version read"
        );
        let renewed = held_by(&taken, &c, false);
        assert_eq!(
            renewed.spec.and_then(|s| s.lease_transitions),
            Some(3),
            "a renewal is no transition"
        );
    }
}
