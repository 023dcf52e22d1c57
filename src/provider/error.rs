//! Provider errors (placeholder; the provider engineer owns this file).

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("not implemented")]
    NotImplemented,
}
