//! pause / resume / rotate-keys: one annotation write each, after saying what it causes.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use orgops::api::{CustomerOrg, PAUSED_ANNOTATION, ROTATE_KEYS_ANNOTATION};
use orgops::reconcile::plan::key_secret_name;

use crate::error::CliError;

const FIELD_MANAGER: &str = "kubectl-orgops";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Pause,
    Resume,
    RotateKeys,
}

/// What the write will cause, for the confirmation prompt; `None` when there is nothing
/// to do.
fn consequences(op: Op, corg: &CustomerOrg, value: &str) -> Option<String> {
    let id = format!(
        "CustomerOrg {}/{}",
        corg.namespace().unwrap_or_default(),
        corg.name_any()
    );
    let paused = corg
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true");
    match op {
        Op::Pause if paused => None,
        Op::Pause => Some(format!(
            "This sets {PAUSED_ANNOTATION}=true on {id}.\n\
             The operator then makes no API calls for it: spec changes are not applied, drift \
             at the provider is not corrected, lost key Secrets are not recovered, and deleting \
             it does not archive the org until it is resumed. Existing keys keep working."
        )),
        Op::Resume if !paused => None,
        Op::Resume => {
            let pending = match (
                corg.metadata.generation,
                corg.status.as_ref().and_then(|s| s.observed_generation),
            ) {
                (Some(g), Some(o)) if o < g => format!(
                    " The spec changed while paused (generation {g}, last applied {o}): those \
                     changes are applied now."
                ),
                _ => String::new(),
            };
            Some(format!(
                "This removes {PAUSED_ANNOTATION} from {id}.\n\
                 The operator reconciles it at once: it reads the org, corrects any drift at \
                 the provider and applies the spec.{pending}"
            ))
        }
        Op::RotateKeys => {
            let keys: Vec<String> = corg
                .spec
                .api_keys
                .iter()
                .map(|k| format!("  {} -> Secret {}", k.name, key_secret_name(corg, k)))
                .collect();
            if keys.is_empty() {
                return None;
            }
            let when = if paused {
                "when the object is resumed (it is paused now)"
            } else {
                "at the next reconcile"
            };
            Some(format!(
                "This sets {ROTATE_KEYS_ANNOTATION}={value} on {id}.\n\
                 Every API key below is rotated once, {when}: a new key is minted and written \
                 to its Secret, and the old key is retired, so applications must pick up the \
                 new Secret value.\n{}",
                keys.join("\n")
            ))
        }
    }
}

fn confirm(text: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::Refused(format!(
            "{text}\nNot confirmed: stdin is not a terminal. Run again with --yes to proceed."
        )));
    }
    let mut err = std::io::stderr().lock();
    write!(err, "{text}\nProceed? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(CliError::Refused("aborted; nothing was changed".into()))
    }
}

pub async fn run(
    client: &Client,
    ns: &str,
    name: &str,
    op: Op,
    yes: bool,
) -> Result<ExitCode, CliError> {
    let api: Api<CustomerOrg> = Api::namespaced(client.clone(), ns);
    let corg = api
        .get_opt(name)
        .await
        .map_err(|e| CliError::kube(format!("get CustomerOrg {ns}/{name}"), e))?
        .ok_or_else(|| CliError::NotFound {
            namespace: ns.to_string(),
            name: name.to_string(),
        })?;
    let value = jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string());
    let Some(text) = consequences(op, &corg, &value) else {
        let what = match op {
            Op::Pause => "already paused",
            Op::Resume => "not paused",
            Op::RotateKeys => "has no spec.apiKeys to rotate",
        };
        println!("CustomerOrg {ns}/{name} {what}; nothing changed.");
        return Ok(ExitCode::SUCCESS);
    };
    confirm(&text, yes)?;
    let annotation = match op {
        Op::Pause => serde_json::json!({ PAUSED_ANNOTATION: "true" }),
        Op::Resume => serde_json::json!({ PAUSED_ANNOTATION: null }),
        Op::RotateKeys => serde_json::json!({ ROTATE_KEYS_ANNOTATION: value }),
    };
    // resourceVersion makes the write conditional on what the prompt described.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": corg.resource_version(),
            "annotations": annotation,
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => CliError::Refused(format!(
                "CustomerOrg {ns}/{name} changed while you were confirming; nothing was \
                 changed, run the command again"
            )),
            e => CliError::kube(format!("annotate CustomerOrg {ns}/{name}"), e),
        })?;
    let done = match op {
        Op::Pause => "paused".to_string(),
        Op::Resume => "resumed".to_string(),
        Op::RotateKeys => format!("key rotation requested ({ROTATE_KEYS_ANNOTATION}={value})"),
    };
    println!("CustomerOrg {ns}/{name} {done}.");
    Ok(ExitCode::SUCCESS)
}
