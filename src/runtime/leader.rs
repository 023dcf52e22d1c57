//! Leader election on a coordination.k8s.io Lease (kube-lease-manager).
use super::error::RuntimeError;
use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Lease validity and how early the holder renews: a crashed leader is replaced in
/// about 15 s.
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;
/// How long shutdown waits for the Lease release before leaving it to expire.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Waits between attempts to (re)start leader election after the API server failed it.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(30);

pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
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

/// The field manager of this replica's Lease applies: its own (kube-lease-manager requires
/// one per replica). A replica takes a free Lease with a server-side apply of
/// `holderIdentity`; under a manager shared by all replicas a second replica's apply just
/// after the first one's did not conflict, and both believed they led until the first
/// one's next renewal (the Layers chaos suite caught two writers for ~10 s).
pub fn field_manager(identity: &str) -> String {
    format!("orgops-leader-election-{identity}")
}

pub async fn start(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Leadership, RuntimeError> {
    let identity = identity();
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_field_manager(field_manager(&identity))
        .with_identity(identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    let (is_leader, task) = manager.watch().await;
    Ok(Leadership { is_leader, task })
}

/// [`start`] until it succeeds: a standby that cannot read or create the Lease (the API
/// server restarting, throttling, a dropped connection) waits and tries again instead of
/// exiting. `None` when `shutdown` resolved first.
pub async fn start_until_ok<S>(
    client: &Client,
    namespace: &str,
    name: &str,
    shutdown: S,
) -> Option<Leadership>
where
    S: std::future::Future<Output = ()> + Clone,
{
    let mut wait = RETRY_FIRST;
    loop {
        match start(client.clone(), namespace, name).await {
            Ok(leadership) => return Some(leadership),
            Err(err) => tracing::warn!(error = %err, retry_in_secs = wait.as_secs(),
                "cannot start leader election; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.clone() => return None,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

impl Leadership {
    /// Waits until this process holds the Lease; `false` when the watch ended.
    pub async fn acquired(&mut self) -> bool {
        self.is_leader.wait_for(|v| *v).await.is_ok()
    }

    /// Resolves when the Lease is lost (or the manager stopped).
    pub async fn lost(mut rx: watch::Receiver<bool>) {
        let _ = rx.wait_for(|v| !*v).await;
    }

    /// Releases the Lease so a standby takes over at once instead of after expiry.
    /// Bounded: with the API server gone the Lease simply expires, and shutdown must not hang.
    pub async fn release(self) {
        drop(self.is_leader);
        let task = self.task;
        match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "releasing the leader Lease"),
            Ok(Err(err)) => tracing::warn!(error = %err, "leader election task"),
            Err(_) => tracing::warn!(
                timeout_secs = RELEASE_TIMEOUT.as_secs(),
                "releasing the leader Lease timed out; it will expire instead"
            ),
        }
    }
}
