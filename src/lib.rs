//! orgops: a Kubernetes operator for SaaS partner customer organizations.

pub mod api;
pub mod changelog;
pub mod cli;
pub mod fence;
pub mod import;
pub mod plan_cmd;
pub mod provider;
pub mod reconcile;
pub mod runtime;
