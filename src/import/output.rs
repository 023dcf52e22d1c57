//! What an import writes: one `<name>.yaml` per CustomerOrg, a `kustomization.yaml` and
//! `IMPORT-REPORT.md`. Everything is sorted and carries no timestamp, so importing the same
//! fleet again writes the same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::api::{CustomerOrg, ManagementPolicy};
use crate::provider::{KeyEnv, KeyStatus};

use super::names::Renamed;
use super::owners::Owned;
use super::read::Observed;

pub const KUSTOMIZATION: &str = "kustomization.yaml";
pub const REPORT: &str = "IMPORT-REPORT.md";

/// One imported org.
pub struct Imported {
    pub name: String,
    pub corg: CustomerOrg,
    pub observed: Observed,
    pub held: Vec<String>,
    pub notes: Vec<String>,
    pub unmarked: i64,
}

/// Everything the report says.
pub struct Report<'a> {
    pub provider: &'a str,
    pub vendor: &'a str,
    pub namespace: &'a str,
    pub dir: &'a Path,
    pub policy: ManagementPolicy,
    pub listed: usize,
    pub imported: &'a [Imported],
    /// (org id, org name, owner).
    pub owned: &'a [(String, String, Owned)],
    /// (org id, org name, why).
    pub refused: &'a [(String, String, String)],
    /// Listed, then gone (404) when read.
    pub gone: &'a [String],
    pub renamed: &'a [Renamed],
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{0} exists and is not empty: import into a new directory (or pass --overwrite to replace the files it writes there)"
    )]
    NotEmpty(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rendering {name} as YAML: {source}")]
    Yaml {
        name: String,
        source: serde_yaml::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checked before anything is read: the directory is new, empty, or `overwrite` is set.
pub fn check_dir(dir: &Path, overwrite: bool) -> Result<(), OutputError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() && !overwrite {
                Err(OutputError::NotEmpty(dir.to_path_buf()))
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// The YAML of one object, with a comment saying where it came from and what it does.
pub fn object_yaml(i: &Imported, provider: &str) -> Result<String, OutputError> {
    let mut value = serde_yaml::to_value(&i.corg).map_err(|source| OutputError::Yaml {
        name: i.name.clone(),
        source,
    })?;
    // Create-only Gennia choices mean nothing for an org that exists: left out.
    if let Some(g) = value
        .get_mut("spec")
        .and_then(|s| s.get_mut("gennia"))
        .and_then(serde_yaml::Value::as_mapping_mut)
    {
        for key in ["trial", "sendInvitations"] {
            if g.get(key) == Some(&serde_yaml::Value::Bool(false)) {
                g.remove(key);
            }
        }
    }
    let body = serde_yaml::to_string(&value).map_err(|source| OutputError::Yaml {
        name: i.name.clone(),
        source,
    })?;
    let org = &i.observed.org;
    let mut head = format!(
        "# Imported by `orgops import` from OrgProvider {provider}: org {} ({:?}).\n",
        org.id, org.name
    );
    match i.corg.spec.management_policy {
        ManagementPolicy::Observe => head.push_str(
            "# managementPolicy Observe: orgops reads this org, fills status and reports drift; it writes nothing.\n",
        ),
        ManagementPolicy::Full => head.push_str(
            "# managementPolicy Full: orgops manages this org; its first pass writes only its owner marker.\n",
        ),
    }
    for why in &i.held {
        let _ = writeln!(head, "# Held in Observe: {why}.");
    }
    Ok(format!("{head}{body}"))
}

/// Writes every file; `dir` is created if needed.
pub fn write(report: &Report<'_>) -> Result<(), OutputError> {
    let dir = report.dir;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut resources = String::new();
    for i in report.imported {
        let file = format!("{}.yaml", i.name);
        let path = dir.join(&file);
        std::fs::write(&path, object_yaml(i, report.provider)?).map_err(io(&path))?;
        let _ = writeln!(resources, "- {file}");
    }
    let kustomization = format!(
        "# Written by `orgops import --provider {provider}`: {n} CustomerOrg(s) in namespace {ns}.\n\
         # Read {REPORT} first, then apply this directory with `kubectl apply -k`.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:{list}\n",
        provider = report.provider,
        n = report.imported.len(),
        ns = report.namespace,
        list = if resources.is_empty() {
            " []".to_string()
        } else {
            format!("\n{}", resources.trim_end())
        },
    );
    let path = dir.join(KUSTOMIZATION);
    std::fs::write(&path, kustomization).map_err(io(&path))?;
    let path = dir.join(REPORT);
    std::fs::write(&path, markdown(report)).map_err(io(&path))?;
    Ok(())
}

/// A table cell: no pipe or line break can break the row.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn policy_name(p: ManagementPolicy) -> &'static str {
    match p {
        ManagementPolicy::Full => "Full",
        ManagementPolicy::Observe => "Observe",
    }
}

pub fn markdown(r: &Report<'_>) -> String {
    let mut out = String::new();
    let held: Vec<&Imported> = r.imported.iter().filter(|i| !i.held.is_empty()).collect();
    let _ = writeln!(
        out,
        "# orgops import: OrgProvider `{}` ({})\n",
        r.provider, r.vendor
    );
    let _ = writeln!(
        out,
        "{} live org(s) listed. **{} imported** into namespace `{}` (managementPolicy {}{}), \
         {} already owned by a CustomerOrg (skipped), {} could not be imported, {} gone while reading.\n",
        r.listed,
        r.imported.len(),
        r.namespace,
        policy_name(r.policy),
        if held.is_empty() {
            String::new()
        } else {
            format!(", {} of them held in Observe", held.len())
        },
        r.owned.len(),
        r.refused.len(),
        r.gone.len(),
    );
    let _ = writeln!(
        out,
        "Nothing was written to the provider or to the cluster. Review, commit, then apply this \
         directory (`kubectl apply -k`). Each object adopts its org by `spec.adoptOrgId`; in \
         Observe the operator only reads it and is Ready when the org matches. Before switching \
         an object to `Full`, read \"Held in Observe\" below, then run `orgops plan -k` on the \
         directory: for an imported org it shows `claim-org` (the owner marker, where the \
         provider keeps metadata) and nothing else.\n"
    );

    if !r.owned.is_empty() {
        out.push_str("## Already owned by a CustomerOrg (skipped)\n\n| org | name | owned by | found by |\n|---|---|---|---|\n");
        for (id, name, owned) in r.owned {
            let _ = writeln!(
                out,
                "| `{id}` | {} | `{}` | {} |",
                cell(name),
                owned.by,
                owned.how.describe()
            );
        }
        out.push('\n');
    }
    if !r.refused.is_empty() {
        out.push_str("## Could not be imported\n\n| org | name | why |\n|---|---|---|\n");
        for (id, name, why) in r.refused {
            let _ = writeln!(out, "| `{id}` | {} | {} |", cell(name), cell(why));
        }
        out.push('\n');
    }
    if !r.gone.is_empty() {
        out.push_str("## Listed, then gone when read (not imported)\n\n");
        for id in r.gone {
            let _ = writeln!(out, "- `{id}`");
        }
        out.push('\n');
    }
    if !held.is_empty() {
        out.push_str(
            "## Held in Observe: decide before Full\n\n\
             These objects are written with `managementPolicy: Observe` whatever \
             `--management-policy` asked: their spec cannot express something the org has, so a \
             Full pass would change the org. In Observe their drift shows as `Ready=False` reason \
             `Drifted`. Change the org at the provider or accept the change, then switch to Full.\n\n",
        );
        for i in &held {
            let _ = writeln!(out, "- `{}` (org `{}`):", i.name, i.observed.org.id);
            for why in &i.held {
                let _ = writeln!(out, "  - {why}");
            }
        }
        out.push('\n');
    }
    if !r.renamed.is_empty() {
        out.push_str("## Renamed to avoid a collision\n\n| org | derived name | object name | why |\n|---|---|---|---|\n");
        for n in r.renamed {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | `{}` | {} |",
                n.org_id, n.base, n.name, n.why
            );
        }
        out.push('\n');
    }
    imported_table(r, &mut out);
    keys_section(r, &mut out);
    webhooks_section(r, &mut out);
    out
}

fn imported_table(r: &Report<'_>, out: &mut String) {
    if r.imported.is_empty() {
        return;
    }
    out.push_str(
        "## Imported\n\n`allocated` is the sum of orgops-marked allocations in the org's ledger, the \
         number the operator tops up from; `unmarked` are allocations made without orgops's \
         marker, not counted (they are never moved again).\n\n\
         | object | org | state | policy | allocated | unmarked | cap | refill | balance | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for i in r.imported {
        let spec = &i.corg.spec;
        let credits = spec.credits.clone().unwrap_or_default();
        let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let refill = credits.auto_refill.as_ref().map_or("-".to_string(), |a| {
            format!("{}/{}", opt(a.threshold), opt(a.amount))
        });
        let balance = i
            .observed
            .org
            .summary
            .as_ref()
            .map_or("-".to_string(), |s| s.balance.to_string());
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
            i.name,
            i.observed.org.id,
            spec.state.as_str(),
            policy_name(spec.management_policy),
            credits.allocated,
            i.unmarked,
            opt(credits.monthly_cap),
            refill,
            balance,
            cell(&i.notes.join("; ")),
        );
    }
    out.push('\n');
}

fn keys_section(r: &Report<'_>, out: &mut String) {
    let rows: Vec<String> = r
        .imported
        .iter()
        .flat_map(|i| {
            i.observed
                .keys
                .iter()
                .flatten()
                .filter(|k| k.status == KeyStatus::Active)
                .map(move |k| {
                    let nameable = super::spec::key_name_fits(&k.name);
                    let note = match (&k.superseded_by, nameable) {
                        (Some(next), _) => format!("rotated to `{next}`, in its grace window"),
                        (None, false) => "its name does not fit spec.apiKeys[].name: it can only stay unmanaged (or be replaced by a new key)".into(),
                        (None, true) => String::new(),
                    };
                    let env = match k.env {
                        KeyEnv::Live => "live",
                        KeyEnv::Test => "test",
                    };
                    format!(
                        "| `{}` | `{}` | {} | `{}…` | {env} | {} | {} |",
                        i.name,
                        k.id,
                        cell(&k.name),
                        cell(&k.prefix),
                        cell(&k.scopes.join(" ")),
                        note
                    )
                })
        })
        .collect();
    section(
        out,
        "## API keys: not imported\n\n\
         A key's secret is shown once, when it is minted, so no import can put it in a Secret. \
         For each key below, choose:\n\n\
         - **Leave it unmanaged** (what the imported spec does): the operator never revokes or \
           rotates a key it did not mint. It acts only on keys that `spec.apiKeys`, its status \
           or a Secret it controls names.\n\
         - **Rotate it into a Secret later**: add a `spec.apiKeys` entry with the key's exact \
           name, scopes and env, with the object in Full. The operator then rotates that key: \
           the new secret lands in the Secret (`<object>-<key name>` unless `secretName` says \
           otherwise), and the old secret keeps working for the provider's 24-hour grace \
           window. Move the key's users to the Secret within that window. Other scopes or \
           another env mint a new key and revoke this one at once.\n\n\
         | object | key id | name | prefix | env | scopes | note |\n\
         |---|---|---|---|---|---|---|\n",
        &rows,
    );
}

/// A heading, its text and table head, then the rows; nothing when there is no row.
fn section(out: &mut String, head: &str, rows: &[String]) {
    if rows.is_empty() {
        return;
    }
    out.push_str(head);
    for row in rows {
        out.push_str(row);
        out.push('\n');
    }
    out.push('\n');
}

fn webhooks_section(r: &Report<'_>, out: &mut String) {
    let marker = crate::reconcile::plan::WEBHOOK_MARKER;
    let rows: Vec<String> = r
        .imported
        .iter()
        .flat_map(|i| {
            i.observed.webhooks.iter().flatten().map(move |h| {
                let note = h
                    .metadata
                    .get(marker)
                    .map(|n| format!("marked `{marker}={}`: see Held in Observe", cell(n)))
                    .unwrap_or_default();
                format!(
                    "| `{}` | `{}` | {} | {} | {} |",
                    i.name,
                    h.id,
                    cell(&h.url),
                    cell(&h.events.join(" ")),
                    note
                )
            })
        })
        .collect();
    let head = format!(
        "## Webhook endpoints: not imported\n\n\
         An endpoint's signing secret is shown once, when it is created. For each endpoint \
         below, choose:\n\n\
         - **Leave it unmanaged** (what the imported spec does): the operator touches only \
           endpoints carrying its marker `{marker}`; these keep delivering as they do.\n\
         - **Manage it**: add a `spec.webhooks` entry with the object in Full. The operator \
           creates a new endpoint and puts its signing secret in a Secret; switch the receiver \
           to that secret, then delete the old endpoint at the provider. (Setting the marker \
           `{marker}: <entry name>` on the old endpoint at the provider instead makes the \
           operator keep it and rotate its signing secret into the Secret.)\n\n\
         | object | endpoint id | url | events | note |\n\
         |---|---|---|---|---|\n",
    );
    section(out, &head, &rows);
}
