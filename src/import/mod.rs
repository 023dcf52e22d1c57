//! `orgops import` (and `kubectl orgops import`, which calls [`import`]): brings a
//! provider's existing orgs under GitOps. It lists every live org of one OrgProvider, skips
//! those a CustomerOrg already owns (`owners`), reads the rest (`read`), turns each into a
//! CustomerOrg that adopts it exactly as it is (`spec`), names them (`names`) and writes
//! the YAML, a `kustomization.yaml` and a report (`output`).
//!
//! Read-only by construction: the provider is the operator's own client (same rate limiter,
//! sized from the tier) behind [`ReadOnly`], which refuses every write before it is sent;
//! the kube calls are GET and LIST (an identity with a read-only role is enough). Files are
//! written only once every read succeeded.

mod names;
mod output;
mod owners;
mod read;
mod spec;

pub use owners::{How, Owned, Owners};

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use kube::Client;

use crate::api::{CustomerOrg, DeletionPolicy, ManagementPolicy};
use crate::provider::build::{fixed_tier, from_cluster};
use crate::provider::error::ProviderError;
use crate::provider::layers::RateTier;
use crate::provider::read_only::ReadOnly;
use crate::provider::{KeyStatus, Provider};

use output::{Imported, OutputError, Report};
use read::{Failed, Outcome};

/// `--management-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    #[value(name = "Observe")]
    Observe,
    #[value(name = "Full")]
    Full,
}

/// `--deletion-policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Deletion {
    #[value(name = "Orphan")]
    Orphan,
    #[value(name = "Archive")]
    Archive,
}

/// What `orgops import` and `kubectl orgops import` share (the namespace comes from each
/// command's own `-n`).
#[derive(Clone, Debug, clap::Args)]
pub struct ImportOptions {
    /// The OrgProvider whose orgs are imported.
    #[arg(long)]
    pub provider: String,
    /// Directory to write (default `import-<provider>`); created if missing, and must be
    /// empty unless --overwrite.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// managementPolicy of the objects written. Observe (default): the operator only reads
    /// the org. Full: it manages it (objects whose spec cannot express the org stay
    /// Observe; the report says why).
    #[arg(long, value_enum, ignore_case = true, default_value = "Observe")]
    pub management_policy: Policy,
    /// deletionPolicy of the objects written. Orphan (default): deleting an imported
    /// object leaves the org alone until you decide otherwise. Archive: it offboards.
    #[arg(long, value_enum, ignore_case = true, default_value = "Orphan")]
    pub deletion_policy: Deletion,
    /// Orgs read at the same time (the provider's rate limiter paces the requests).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Write into a directory that is not empty, replacing the files the import writes.
    #[arg(long)]
    pub overwrite: bool,
}

/// `orgops import` options.
#[derive(Clone, Debug, clap::Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub options: ImportOptions,
    /// Namespace of the CustomerOrgs written (default: the kubeconfig's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("namespace {0:?} is not a valid namespace name")]
    Namespace(String),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{0}")]
    Provider(String),
    #[error("{step} of OrgProvider {provider}: {code} {message}")]
    Call {
        step: &'static str,
        provider: String,
        code: String,
        message: String,
    },
    #[error(
        "listing the cluster's CustomerOrgs to find the orgs they own: {0} (the identity needs list on customerorgs.orgops.dev in all namespaces)"
    )]
    Owners(#[source] kube::Error),
    #[error("{} org(s) could not be read, so nothing was written:\n{}", .0.len(), describe(.0))]
    Reads(Vec<Failed>),
}

fn describe(failed: &[Failed]) -> String {
    let mut out = String::new();
    for f in failed.iter().take(20) {
        let _ = writeln!(
            out,
            "  org {}: {}: {} {}",
            f.org_id,
            f.step,
            f.error.code(),
            f.error.message()
        );
    }
    if failed.len() > 20 {
        let _ = writeln!(out, "  ... and {} more", failed.len() - 20);
    }
    out.trim_end().to_string()
}

/// What an import did, for the command's output.
#[derive(Debug)]
pub struct Summary {
    pub provider: String,
    pub vendor: String,
    pub tier: Option<RateTier>,
    pub dir: PathBuf,
    pub listed: usize,
    pub imported: usize,
    pub held: usize,
    /// (org id, org name, owner).
    pub owned: Vec<(String, String, Owned)>,
    pub refused: usize,
    pub gone: usize,
    pub renamed: usize,
    pub keys: usize,
    pub webhooks: usize,
    pub policy: ManagementPolicy,
    pub deletion: DeletionPolicy,
    pub seconds: f64,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let tier = self.tier.map(|t| format!(", tier {t}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "OrgProvider {} ({}{tier}): {} live org(s) listed and read in {:.1}s",
            self.provider, self.vendor, self.listed, self.seconds
        );
        if !self.owned.is_empty() {
            let _ = writeln!(
                out,
                "skipped {} already owned by a CustomerOrg:",
                self.owned.len()
            );
            for (id, name, o) in self.owned.iter().take(20) {
                let _ = writeln!(
                    out,
                    "  {id} {name:?}: owned by {} ({})",
                    o.by,
                    o.how.describe()
                );
            }
            if self.owned.len() > 20 {
                let _ = writeln!(
                    out,
                    "  ... and {} more (all in {})",
                    self.owned.len() - 20,
                    output::REPORT
                );
            }
        }
        let policy = match self.policy {
            ManagementPolicy::Full => "Full",
            ManagementPolicy::Observe => "Observe",
        };
        let deletion = match self.deletion {
            DeletionPolicy::Orphan => "Orphan",
            DeletionPolicy::Archive => "Archive",
        };
        let _ = writeln!(
            out,
            "imported {} into {} (managementPolicy {policy}, deletionPolicy {deletion})",
            self.imported,
            self.dir.display()
        );
        let report = self.dir.join(output::REPORT);
        let report = report.display();
        if self.held > 0 {
            let _ = writeln!(
                out,
                "{} held in Observe: their spec cannot express everything the org has (see {report})",
                self.held
            );
        }
        if self.renamed > 0 {
            let _ = writeln!(
                out,
                "{} renamed to avoid a name collision (see {report})",
                self.renamed
            );
        }
        if self.refused > 0 || self.gone > 0 {
            let _ = writeln!(
                out,
                "not imported: {} that no CustomerOrg can name, {} gone while reading (see {report})",
                self.refused, self.gone
            );
        }
        if self.keys > 0 || self.webhooks > 0 {
            let _ = writeln!(
                out,
                "{} API key(s) and {} webhook endpoint(s) are not imported (a secret is shown only once): listed in {report}",
                self.keys, self.webhooks
            );
        }
        let _ = writeln!(
            out,
            "next: read {report}, commit {dir}, then `kubectl apply -k {dir}`",
            dir = self.dir.display()
        );
        out
    }
}

/// Runs the command: exit status 0 when the files are written, 1 on an error.
pub fn run(args: ImportArgs) -> std::process::ExitCode {
    crate::cli::block_on(async {
        let client = match Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "error: cannot reach the cluster: {e} (set KUBECONFIG or --kubeconfig's file)"
                );
                return 1;
            }
        };
        let ns = args
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        print_outcome(import(&client, &ns, &args.options).await)
    })
}

/// Prints the summary or the error; the exit status (0 written, 1 an error).
pub fn print_outcome(outcome: Result<Summary, ImportError>) -> u8 {
    match outcome {
        Ok(summary) => {
            print!("{}", summary.text());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// A provider call that failed at `step` (whoami, the listing), for the error.
fn call_failed(step: &'static str, provider: &str) -> impl FnOnce(ProviderError) -> ImportError {
    move |e| ImportError::Call {
        step,
        provider: provider.to_string(),
        code: e.code().to_string(),
        message: e.message().to_string(),
    }
}

/// The import itself, for `orgops import` and `kubectl orgops import`.
pub async fn import(
    client: &Client,
    namespace: &str,
    opts: &ImportOptions,
) -> Result<Summary, ImportError> {
    if names::slug(namespace, names::MAX) != namespace {
        return Err(ImportError::Namespace(namespace.to_string()));
    }
    let dir = opts
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("import-{}", opts.provider)));
    output::check_dir(&dir, opts.overwrite)?;
    let started = Instant::now();
    let (op, built) = from_cluster(client, &opts.provider)
        .await
        .map_err(ImportError::Provider)?;
    let provider: Arc<dyn Provider> = Arc::new(ReadOnly(built.provider()));
    let identity = provider.whoami().await.map_err(call_failed(
        "checking the credentials (whoami)",
        &opts.provider,
    ))?;
    // As the operator does: the tier the spec fixes, else the one whoami reports.
    let tier = built.layers().map(|layers| {
        let tier = fixed_tier(op.spec.rate_limit.tier)
            .unwrap_or_else(|| RateTier::from_whoami(&identity.rate_limit_tier));
        layers.set_tier(tier);
        tier
    });
    let caps = provider.capabilities();
    let owners = Owners::load(client, &opts.provider, caps)
        .await
        .map_err(ImportError::Owners)?;
    let listed = provider
        .list_orgs()
        .await
        .map_err(call_failed("listing the orgs", &opts.provider))?;
    let total = listed.len();
    let mut owned = Vec::new();
    let mut todo = Vec::new();
    for org in listed {
        match owners.owner(&org).await.map_err(ImportError::Owners)? {
            Some(o) => owned.push((org.id, org.name, o)),
            None => todo.push(org),
        }
    }
    let mut failed = Vec::new();
    let mut gone = Vec::new();
    let mut observed = Vec::new();
    for result in read::details(provider.as_ref(), todo, usize::from(opts.concurrency)).await {
        match result {
            Ok(Outcome::Read(o)) => {
                // The full read may show an owner marker the listing row did not.
                match owners.owner(&o.org).await.map_err(ImportError::Owners)? {
                    Some(owner) => owned.push((o.org.id.clone(), o.org.name.clone(), owner)),
                    None => observed.push(*o),
                }
            }
            Ok(Outcome::Gone(id)) => gone.push(id),
            Err(f) => failed.push(f),
        }
    }
    if !failed.is_empty() {
        return Err(ImportError::Reads(failed));
    }
    let choices = spec::Choices {
        provider: opts.provider.clone(),
        caps,
        policy: match opts.management_policy {
            Policy::Observe => ManagementPolicy::Observe,
            Policy::Full => ManagementPolicy::Full,
        },
        deletion: match opts.deletion_policy {
            Deletion::Orphan => DeletionPolicy::Orphan,
            Deletion::Archive => DeletionPolicy::Archive,
        },
    };
    let mut refused = Vec::new();
    let mut specs = Vec::new();
    for o in observed {
        match spec::build(&o, &choices) {
            Ok(b) => specs.push((o, b)),
            Err(why) => refused.push((o.org.id.clone(), o.org.name.clone(), why)),
        }
    }
    let bases: Vec<(String, String)> = specs
        .iter()
        .map(|(o, b)| {
            let base = names::base(
                &[b.spec.external_id.as_deref(), Some(o.org.name.as_str())],
                &o.org.id,
            );
            (o.org.id.clone(), base)
        })
        .collect();
    let (names, renamed) = names::assign(&bases, &owners.names_in(namespace));
    let mut imported: Vec<Imported> = specs
        .into_iter()
        .map(|(o, b)| {
            let name = names.get(&o.org.id).cloned().unwrap_or_default();
            let mut corg = CustomerOrg::new(&name, b.spec);
            corg.metadata.namespace = Some(namespace.to_string());
            Imported {
                name,
                corg,
                observed: o,
                held: b.held,
                notes: b.notes,
                unmarked: b.unmarked,
            }
        })
        .collect();
    imported.sort_by(|a, b| a.name.cmp(&b.name));
    owned.sort_by(|a, b| a.0.cmp(&b.0));
    refused.sort();
    gone.sort();
    let report = Report {
        provider: &opts.provider,
        vendor: provider.vendor(),
        namespace,
        dir: &dir,
        policy: choices.policy,
        listed: total,
        imported: &imported,
        owned: &owned,
        refused: &refused,
        gone: &gone,
        renamed: &renamed,
    };
    output::write(&report)?;
    let keys = imported
        .iter()
        .flat_map(|i| i.observed.keys.iter().flatten())
        .filter(|k| k.status == KeyStatus::Active)
        .count();
    let webhooks = imported
        .iter()
        .flat_map(|i| i.observed.webhooks.iter().flatten())
        .count();
    Ok(Summary {
        provider: opts.provider.clone(),
        vendor: provider.vendor().to_string(),
        tier,
        dir,
        listed: total,
        imported: imported.len(),
        held: imported.iter().filter(|i| !i.held.is_empty()).count(),
        owned,
        refused: refused.len(),
        gone: gone.len(),
        renamed: renamed.len(),
        keys,
        webhooks,
        policy: choices.policy,
        deletion: choices.deletion,
        seconds: started.elapsed().as_secs_f64(),
    })
}
