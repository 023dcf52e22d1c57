//! The `orgops` binary: `orgops crds` prints the CRDs, `orgops run` runs the operator,
//! `orgops plan` shows what applying manifests would do, `orgops import` writes
//! CustomerOrgs for a provider's existing orgs.

use clap::{Parser, Subcommand};

/// The image's binary allocates through jemalloc: musl's allocator cost the operator about a
/// sixth of its CPU at 10,000 new orgs (docs/benchmarks.md, eighth pass).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "orgops",
    version,
    about = "Kubernetes operator for SaaS partner customer organizations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as multi-document YAML.
    Crds,
    /// Run the operator.
    Run(orgops::runtime::RunArgs),
    /// Show what applying these manifests would do, without doing it. Exit status:
    /// 0 no changes, 2 changes, 1 an error.
    Plan(orgops::plan_cmd::PlanArgs),
    /// Write one CustomerOrg per existing org of an OrgProvider (not yet owned by one), a
    /// kustomization.yaml and IMPORT-REPORT.md; reads only. Exit status: 0 written, 1 an error.
    Import(orgops::import::ImportArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match orgops::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: cannot render CRDs: {err}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(args),
        Command::Plan(args) => orgops::plan_cmd::run(args),
        Command::Import(args) => orgops::import::run(args),
    }
}

fn run(args: orgops::runtime::RunArgs) -> std::process::ExitCode {
    orgops::runtime::telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(orgops::runtime::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "orgops stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
