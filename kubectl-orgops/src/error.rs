//! Errors, each naming the step that failed.

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot load the kubeconfig: {0}")]
    Config(String),
    #[error("{step}: {source}")]
    Kube {
        step: String,
        #[source]
        source: kube::Error,
    },
    #[error("CustomerOrg {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("--live: {0}")]
    Live(String),
    #[error("{0}")]
    Refused(String),
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    pub fn kube(step: impl Into<String>, source: kube::Error) -> CliError {
        CliError::Kube {
            step: step.into(),
            source,
        }
    }
}
