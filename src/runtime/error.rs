//! Errors of the runtime (process wiring and Kubernetes writes).
use crate::reconcile::ReconcileError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("reconcile: {0}")]
    Reconcile(#[from] ReconcileError),
    #[error("cannot load the kube config: {0}")]
    Config(String),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The leader fence is closed: this replica may not start the write.
    #[error(transparent)]
    Fenced(#[from] crate::fence::Fenced),
    #[error("lost the leader Lease; exiting so that a fresh process can stand by")]
    LeadershipLost,
    #[error("cannot encode a patch: {0}")]
    Encode(#[from] serde_json::Error),
}
