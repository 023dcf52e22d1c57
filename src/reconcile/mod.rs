//! Reconcile pipeline: observe -> plan -> apply -> status.
