//! The leader fence: a replica may start a write (to the provider or to Kubernetes) only
//! while `now < last confirmed Lease renewal + lease duration - margin`, measured on the
//! monotonic clock ([`std::time::Instant`]). A leader frozen (GC, SIGSTOP, a starved CPU)
//! or cut off from the API server stops by itself before any other replica can take the
//! Lease: nobody has to tell it (`runtime/leader.rs` opens the window on each confirmed
//! renewal; docs/architecture.md, "The leader fence").
//!
//! Every write checks [`Fence::check`] right before it starts: each provider request
//! (every attempt of a retried one, in the HTTP client), each Kubernetes write of the
//! reconcile (Secrets, status, finalizers, Events, claims, the offboarding window). A
//! write already in flight when the window closes completes; the margin is there for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Request header naming the replica that sent a provider write.
pub const REPLICA_HEADER: &str = "X-Orgops-Replica";
/// Request header with the end of the sender's fenced window (Unix milliseconds, wall
/// clock at the moment of sending): lets a simulator (and the chaos audit) check that no
/// write arrived after the window of the replica that sent it.
pub const DEADLINE_HEADER: &str = "X-Orgops-Fence-Deadline";

/// Shared by everything a replica writes with; cheap to clone.
#[derive(Clone)]
pub struct Fence(Arc<Inner>);

struct Inner {
    origin: Instant,
    /// Nanoseconds after `origin` before which writes may start; 0: closed.
    until: AtomicU64,
    /// Leader election off (a single process): always open, no deadline.
    unfenced: bool,
    replica: String,
}

/// An open window, as a write sees it when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub replica: String,
    /// Unix milliseconds (wall clock) when the window closes; `None` when unfenced.
    pub deadline_unix_ms: Option<u64>,
}

/// No write may start: the window closed (or never opened).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this replica's leader fence is closed (no Lease renewal confirmed within the lease duration minus the margin): write not started"
)]
pub struct Fenced;

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("replica", &self.0.replica)
            .field("unfenced", &self.0.unfenced)
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Fence {
    fn new(replica: &str, unfenced: bool) -> Fence {
        Fence(Arc::new(Inner {
            origin: Instant::now(),
            until: AtomicU64::new(0),
            unfenced,
            replica: replica.to_string(),
        }))
    }

    /// Leader election off: one process, always allowed to write.
    pub fn unfenced(replica: &str) -> Fence {
        Fence::new(replica, true)
    }

    /// Closed until a Lease renewal opens it.
    pub fn closed(replica: &str) -> Fence {
        Fence::new(replica, false)
    }

    pub fn replica(&self) -> &str {
        &self.0.replica
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.0.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Lets writes start until `deadline` (never moves an open window back).
    pub fn open_until(&self, deadline: Instant) {
        let n = self.nanos(deadline).max(1);
        self.0.until.fetch_max(n, Ordering::SeqCst);
    }

    /// No write starts from now on (the Lease is lost or being released).
    pub fn close(&self) {
        self.0.until.store(0, Ordering::SeqCst);
    }

    /// Time left in the window; `None` when closed (or unfenced).
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.0.until.load(Ordering::SeqCst);
        let now = self.nanos(Instant::now());
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    pub fn is_open(&self) -> bool {
        self.0.unfenced || self.remaining().is_some()
    }

    /// The window a write starting now falls in, or [`Fenced`].
    pub fn check(&self) -> Result<Window, Fenced> {
        if self.0.unfenced {
            return Ok(Window {
                replica: self.0.replica.clone(),
                deadline_unix_ms: None,
            });
        }
        let left = self.remaining().ok_or(Fenced)?;
        let wall = SystemTime::now()
            .checked_add(left)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Ok(Window {
            replica: self.0.replica.clone(),
            deadline_unix_ms: wall,
        })
    }
}

/// A provider write about to be sent: refused when `fence` is closed, else stamped with
/// the sender and its deadline ([`REPLICA_HEADER`], [`DEADLINE_HEADER`]). Called by each
/// provider client right before each attempt of a write (reads are never fenced).
pub fn stamp(
    fence: Option<&Fence>,
    rb: reqwest::RequestBuilder,
) -> Result<reqwest::RequestBuilder, Fenced> {
    let Some(fence) = fence else {
        return Ok(rb);
    };
    let window = fence.check()?;
    let rb = rb.header(REPLICA_HEADER, window.replica);
    Ok(match window.deadline_unix_ms {
        Some(ms) => rb.header(DEADLINE_HEADER, ms.to_string()),
        None => rb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_opens_on_renewal_and_closes_by_itself() {
        let fence = Fence::closed("r1");
        assert_eq!(fence.check(), Err(Fenced), "closed until a renewal");
        fence.open_until(Instant::now() + Duration::from_millis(60));
        let w = fence.check().expect("open after a renewal");
        assert_eq!(w.replica, "r1");
        assert!(w.deadline_unix_ms.is_some());
        // An older renewal confirmed late never shortens the window.
        fence.open_until(Instant::now());
        assert!(fence.is_open());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(
            fence.check(),
            Err(Fenced),
            "nobody said the Lease was lost, yet the window closed on time"
        );
        fence.open_until(Instant::now() + Duration::from_secs(5));
        fence.close();
        assert!(!fence.is_open(), "closed at once on loss or release");
    }

    #[test]
    fn unfenced_is_always_open_without_a_deadline() {
        let fence = Fence::unfenced("solo");
        assert_eq!(
            fence.check(),
            Ok(Window {
                replica: "solo".into(),
                deadline_unix_ms: None
            })
        );
    }
}
