//! What the one-shot commands (`orgops plan`, `orgops import`) share: a single-threaded
//! runtime (their concurrency is I/O) and an exit status.

use std::future::Future;
use std::process::ExitCode;

/// Runs `command` to completion; its `u8` is the exit status (1 when no runtime starts).
pub fn block_on(command: impl Future<Output = u8>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => ExitCode::from(rt.block_on(command)),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        }
    }
}
