//! `kubectl orgops`: why a CustomerOrg is not Ready, the few writes a platform engineer
//! needs (pause, resume, rotate-keys), and `import` (orgops's own import code, read-only).
//! Never prints a secret value.

mod annotate;
mod diagnose;
mod error;
mod gather;
mod history;
mod plan;
mod render;
mod view;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};

use orgops::api::{CustomerOrg, OrgProvider, ProviderType};

use error::CliError;
use gather::Depth;
use render::Style;
use view::{API_VERSION, CustomerView, Summary, SummaryList};

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-orgops",
    bin_name = "kubectl orgops",
    version,
    about = "orgops CustomerOrgs from kubectl: why one is not Ready, and what to do"
)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Without NAME: a table of CustomerOrgs and what blocks each. With NAME: the full view,
    /// led by why it is not Ready and the next step.
    Status(StatusArgs),
    /// Set orgops.dev/paused=true: the operator stops every API call for the object.
    Pause(WriteArgs),
    /// Remove orgops.dev/paused: the operator reconciles the object again.
    Resume(WriteArgs),
    /// Set orgops.dev/rotate-keys to a new value: every key is rotated once.
    RotateKeys(WriteArgs),
    /// Write one CustomerOrg per existing org of an OrgProvider (not yet owned by one), a
    /// kustomization.yaml and IMPORT-REPORT.md: `orgops import`'s code, reading only. The
    /// objects go to -n's namespace.
    Import(orgops::import::ImportOptions),
    /// One CustomerOrg's changes from the records this command can reach: change-log
    /// records (operator pod logs, --changelog files), Events, its status and, with --live,
    /// the provider's ledger (docs/changelog.md says what each can and cannot see).
    History(history::HistoryArgs),
    /// Run `orgops plan` with these arguments (read-only preview of what applying would do).
    Plan {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Wide,
    Json,
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// A CustomerOrg name; without it, a table.
    name: Option<String>,
    /// Every namespace (table only).
    #[arg(short = 'A', long, conflicts_with = "name")]
    all_namespaces: bool,
    /// wide: more columns and the reason messages; json: the documented v1 schema.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Output>,
    /// Print again whenever the objects change (Ctrl-C to stop).
    #[arg(short = 'w', long)]
    watch: bool,
    /// Read the partner API (GETs only, with the OrgProvider's credentials): ledger, keys.
    #[arg(long)]
    live: bool,
    /// Check that each key in its Secret authenticates (whoami with the key; never shown).
    #[arg(long)]
    verify: bool,
    /// How many recent Events to show.
    #[arg(long, default_value_t = 10)]
    events: usize,
}

#[derive(clap::Args, Debug)]
struct WriteArgs {
    /// The CustomerOrg name.
    name: String,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    yes: bool,
}

async fn client(cli: &Cli) -> Result<(Client, String), CliError> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let raw = Kubeconfig::read_from(path)
                .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(raw, &options)
                .await
                .map_err(|e| CliError::Config(e.to_string()))?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
        None => Config::infer()
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
    };
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| CliError::Config(e.to_string()))?;
    Ok((client, ns))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Plan { args } = &cli.command {
        return plan::run(args);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let (client, ns) = client(&cli).await?;
    match &cli.command {
        Command::Status(args) => status(&client, &ns, args).await,
        Command::Pause(a) => annotate::run(&client, &ns, &a.name, annotate::Op::Pause, a.yes).await,
        Command::Resume(a) => {
            annotate::run(&client, &ns, &a.name, annotate::Op::Resume, a.yes).await
        }
        Command::RotateKeys(a) => {
            annotate::run(&client, &ns, &a.name, annotate::Op::RotateKeys, a.yes).await
        }
        Command::Import(options) => Ok(ExitCode::from(orgops::import::print_outcome(
            orgops::import::import(&client, &ns, options).await,
        ))),
        Command::History(args) => {
            write_out(&history::run(&client, &ns, args).await?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn status(client: &Client, ns: &str, args: &StatusArgs) -> Result<ExitCode, CliError> {
    let style = Style::detect();
    let depth = Depth {
        live: args.live,
        verify: args.verify,
        events: args.events,
    };
    if !args.watch {
        let text = render_once(client, ns, args, depth, &style).await?;
        write_out(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    // --watch: print again on every change of the CustomerOrg(s), and at least every 15 s
    // (Events and Secrets change without touching the object).
    let api: Api<CustomerOrg> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), ns)
    };
    let mut config = watcher::Config::default();
    if let Some(name) = &args.name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let mut stream = Box::pin(watcher(api, config));
    let clear = style.color;
    let mut last = String::new();
    loop {
        let text = render_once(client, ns, args, depth, &style).await?;
        if text != last {
            let shown = if args.output == Some(Output::Json) {
                // One compact document per line.
                let v: serde_json::Value = serde_json::from_str(&text)?;
                format!("{}\n", serde_json::to_string(&v)?)
            } else if clear {
                format!("\x1b[2J\x1b[H{text}")
            } else {
                format!("{text}\n")
            };
            write_out(&shown)?;
            last = text;
        }
        // Drain a burst of watch events, then render again.
        match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
            Ok(None) => return Ok(ExitCode::SUCCESS),
            Ok(Some(Err(e))) => {
                eprintln!("watch: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Ok(Some(Ok(_))) | Err(_) => {}
        }
        while let Ok(Some(_)) =
            tokio::time::timeout(Duration::from_millis(300), stream.next()).await
        {}
    }
}

fn write_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        // `| head` closed the pipe: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(CliError::from),
    }
}

async fn render_once(
    client: &Client,
    ns: &str,
    args: &StatusArgs,
    depth: Depth,
    style: &Style,
) -> Result<String, CliError> {
    let providers = gather::providers(client).await?;
    match &args.name {
        Some(name) => {
            let view = one(client, ns, name, &providers, depth).await?;
            match args.output {
                Some(Output::Json) => Ok(format!("{}\n", serde_json::to_string_pretty(&view)?)),
                _ => Ok(render::customer(&view, style)),
            }
        }
        None => {
            let items = summaries(client, ns, args.all_namespaces, &providers).await?;
            match args.output {
                Some(Output::Json) => {
                    let list = SummaryList {
                        api_version: API_VERSION,
                        kind: "CustomerOrgSummaryList",
                        items,
                    };
                    Ok(format!("{}\n", serde_json::to_string_pretty(&list)?))
                }
                o => Ok(render::table(&items, style, o == Some(Output::Wide))),
            }
        }
    }
}

async fn one(
    client: &Client,
    ns: &str,
    name: &str,
    providers: &BTreeMap<String, OrgProvider>,
    depth: Depth,
) -> Result<CustomerView, CliError> {
    let api: Api<CustomerOrg> = Api::namespaced(client.clone(), ns);
    let corg = api
        .get_opt(name)
        .await
        .map_err(|e| CliError::kube(format!("get CustomerOrg {ns}/{name}"), e))?
        .ok_or_else(|| CliError::NotFound {
            namespace: ns.to_string(),
            name: name.to_string(),
        })?;
    let metas = gather::secret_metas(client, ns).await?;
    let mut view = gather::base_view(&corg, providers, &metas);
    view.events = gather::events(client, &corg, depth.events).await?;
    let provider = providers.get(&corg.spec.provider_ref.name);
    if depth.live {
        let provider = provider.ok_or_else(|| {
            CliError::Live(format!(
                "OrgProvider {} does not exist",
                corg.spec.provider_ref.name
            ))
        })?;
        let live = match (gather::live_provider(client, provider).await, &view.org_id) {
            (Ok(p), Some(org_id)) => gather::live(p.as_ref(), org_id).await,
            (Ok(_), None) => view::LiveView {
                error: Some("no org id in status yet: nothing to read".into()),
                ..Default::default()
            },
            (Err(e), _) => view::LiveView {
                error: Some(e.to_string()),
                ..Default::default()
            },
        };
        view.live = Some(live);
    }
    if depth.verify
        && let Some(provider) = provider
    {
        if provider.spec.provider_type == ProviderType::Layers {
            gather::verify_keys(client, &mut view, &provider.spec.base_url).await?;
        } else {
            // No per-customer keys: the credentials to check are the OrgProvider's.
            match gather::live_provider(client, provider).await {
                Ok(p) => gather::verify_provider(p.as_ref(), &mut view).await,
                Err(e) => view.provider.verified = Some(format!("could not check: {e}")),
            }
        }
    }
    view.diagnosis = diagnose::diagnose(&view);
    view.ready = view.diagnosis.cause == diagnose::READY_CAUSE;
    Ok(view)
}

async fn summaries(
    client: &Client,
    ns: &str,
    all: bool,
    providers: &BTreeMap<String, OrgProvider>,
) -> Result<Vec<Summary>, CliError> {
    let api: Api<CustomerOrg> = if all {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), ns)
    };
    let mut corgs = api
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::kube("list CustomerOrgs", e))?
        .items;
    corgs.sort_by_key(|c| (c.namespace(), c.name_any()));
    let mut metas_by_ns = BTreeMap::new();
    let mut items = Vec::new();
    for corg in &corgs {
        let corg_ns = corg.namespace().unwrap_or_default();
        if !metas_by_ns.contains_key(&corg_ns) {
            let metas = gather::secret_metas(client, &corg_ns).await?;
            metas_by_ns.insert(corg_ns.clone(), metas);
        }
        let view = gather::base_view(corg, providers, &metas_by_ns[&corg_ns]);
        items.push(Summary {
            namespace: view.namespace,
            name: view.name,
            org_id: view.org_id,
            desired_state: view.desired_state,
            observed_state: view.observed_state,
            ready: view.ready,
            balance: view.credits.status.as_ref().map(|c| c.balance),
            diagnosis: view.diagnosis,
        });
    }
    Ok(items)
}
