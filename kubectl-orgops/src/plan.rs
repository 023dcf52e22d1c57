//! `kubectl orgops plan …` runs `orgops plan …`: one code path for both commands.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// `orgops` next to this binary, else the first one on PATH.
fn find_orgops() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("orgops")))
        .filter(|p| is_executable(p));
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("orgops"))
                .find(|p| is_executable(p))
        })
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Exit status as `orgops plan`'s (0 no changes, 2 changes, 1 error); 1 when it cannot run.
pub fn run(args: &[String]) -> ExitCode {
    let Some(bin) = find_orgops() else {
        eprintln!(
            "error: plan: no `orgops` binary next to kubectl-orgops or on PATH; install it \
             (cargo install --path . in the orgops repository) and run again"
        );
        return ExitCode::from(1);
    };
    // An orgops without the plan command would answer with a usage error (exit 2), which
    // would read as "changes": check first.
    let has_plan = Command::new(&bin)
        .args(["plan", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_plan {
        eprintln!(
            "error: plan: {} has no `plan` command; upgrade orgops",
            bin.display()
        );
        return ExitCode::from(1);
    }
    match Command::new(&bin).arg("plan").args(args).status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::from(1),
        },
        Err(e) => {
            eprintln!("error: plan: cannot run {}: {e}", bin.display());
            ExitCode::from(1)
        }
    }
}
