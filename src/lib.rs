//! orgops: a Kubernetes operator for SaaS partner customer organizations.

pub mod api;
pub mod plan_cmd;
pub mod provider;
pub mod reconcile;
pub mod runtime;
