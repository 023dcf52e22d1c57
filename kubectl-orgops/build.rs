//! The e2e tests reuse the root crate's fixture (tests/support/operator.rs), which names the
//! operator binary with `env!("CARGO_BIN_EXE_orgops")`; Cargo sets that only inside the
//! orgops package, so point it at the workspace's build of it (`cargo build -p orgops`).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    if let Some(profile) = out.ancestors().nth(3) {
        println!(
            "cargo:rustc-env=CARGO_BIN_EXE_orgops={}",
            profile.join("orgops").display()
        );
    }
}
