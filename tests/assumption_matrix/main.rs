//! The assumption matrix (issue #28): where a provider's docs are silent, each simulator
//! answers one way by default and a switch selects each other plausible answer. For every
//! alternative a small world (create, fund, key, webhook, suspend, edit while suspended,
//! resume, delete) runs against a simulator started in that mode, and is audited like the
//! chaos suite: one org per customer, money exact, no orphan keys or endpoints, and no write
//! once nothing is left to do. The operator must converge, or stop with a named condition
//! saying what it met, with no repeated write.
//!
//! One test per provider; its entries run at once (one simulator and one OrgProvider each,
//! one operator for all). `ORGOPS_MATRIX=layers/credit-doc,gennia` selects entries. Each
//! entry prints one line (stderr) with its result; docs/providers/*.md name them.
#[path = "../support/mod.rs"]
mod support;

mod gennia;
mod layers;
mod run;
mod youhodler;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn layers_assumption_matrix() {
    run::matrix::<layers::World>("layers", layers::entries()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gennia_assumption_matrix() {
    run::matrix::<gennia::World>("gennia", gennia::entries()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn youhodler_assumption_matrix() {
    run::matrix::<youhodler::World>("youhodler", youhodler::entries()).await;
}
