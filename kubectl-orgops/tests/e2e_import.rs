//! `kubectl orgops import` is `orgops import`: the same fleet imported by both commands
//! (read-only identity) gives byte-identical directories; a non-empty directory is refused
//! before anything is read; `--management-policy Full` is honoured.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;

use support::import::{api_writes, files, objects, run_import, seed_layers_fleet};
use support::world::World;
use support::{orgops_bin, read_only_kubeconfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_orgops_import_writes_what_orgops_import_writes() {
    let w = World::with("kimport", &["--tier", "pilot"], &[]).await;
    let ns = w.env.ns.clone();
    seed_layers_fleet(&w.sim, &ns).await;
    let ro = read_only_kubeconfig(&ns);
    let tmp = tempfile::tempdir().expect("tempdir");
    let (by_orgops, by_plugin) = (tmp.path().join("a"), tmp.path().join("b"));
    let plugin = Path::new(env!("CARGO_BIN_EXE_kubectl-orgops"));
    let before = api_writes(&w.sim.counters().await);
    for (bin, dir) in [
        (orgops_bin(), &by_orgops),
        (plugin.to_path_buf(), &by_plugin),
    ] {
        let out = run_import(&bin, &ro, &w.provider, &ns, dir, &[]);
        assert!(
            out.status.success(),
            "{} import: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let written = files(&by_orgops);
    assert_eq!(
        written.len(),
        6,
        "4 objects, kustomization.yaml, IMPORT-REPORT.md"
    );
    assert_eq!(
        written,
        files(&by_plugin),
        "the two commands wrote different files"
    );

    // A directory that is not empty is refused before any read, and left as it was.
    let out = run_import(plugin, &ro, &w.provider, &ns, &by_plugin, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(files(&by_plugin), written);

    let full = tmp.path().join("full");
    let out = run_import(
        plugin,
        &ro,
        &w.provider,
        &ns,
        &full,
        &["--management-policy", "Full"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, obj) in objects(&full) {
        assert_eq!(obj["spec"]["managementPolicy"], "Full", "{name}");
    }
    assert_eq!(
        api_writes(&w.sim.counters().await),
        before,
        "an import wrote"
    );
    w.cleanup().await;
}
