//! Reads everything one view needs from the cluster (and, with `--live`, the partner API).
//! Secret values are read only by `--verify` (to call whoami) and never kept or shown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret as KubeSecret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::{Client, ResourceExt};

use orgops::api::conditions::{READY, find};
use orgops::api::{CustomerOrg, OrgProvider, OrgProviderSpec, PAUSED_ANNOTATION};
use orgops::provider::build::{ClientOptions, Credentials, build, credentials};
use orgops::provider::error::ProviderError;
use orgops::provider::layers::{LayersConfig, LayersProvider};
use orgops::provider::{KeyStatus, Provider, Secret};
use orgops::reconcile::plan::{ALLOCATION_MARKER, key_secret_name, webhook_secret_name};
use orgops::reconcile::secrets::{KEY_ID_ANNOTATION, WEBHOOK_ID_ANNOTATION};

use crate::diagnose;
use crate::error::CliError;
use crate::view::*;

/// How much to read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Depth {
    pub live: bool,
    pub verify: bool,
    pub events: usize,
}

/// OrgProviders by name, read once per command.
pub async fn providers(client: &Client) -> Result<BTreeMap<String, OrgProvider>, CliError> {
    let api: Api<OrgProvider> = Api::all(client.clone());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| CliError::kube("list OrgProviders", e))?;
    Ok(list.items.into_iter().map(|p| (p.name_any(), p)).collect())
}

pub fn provider_view(name: &str, provider: Option<&OrgProvider>) -> ProviderView {
    let Some(p) = provider else {
        return ProviderView {
            name: name.to_string(),
            ..Default::default()
        };
    };
    let status = p.status.clone().unwrap_or_default();
    let ready = find(&status.conditions, READY);
    ProviderView {
        name: name.to_string(),
        found: true,
        ready: ready.map(|c| c.status == "True"),
        reason: ready.map(|c| c.reason.clone()),
        message: ready.map(|c| c.message.clone()),
        organization_id: status.organization_id,
        rate_limit_tier: status.rate_limit_tier,
        base_url: Some(p.spec.base_url.clone()),
        verified: None,
    }
}

/// Metadata of the Secrets in `ns` (names, owners, annotations; never data).
pub async fn secret_metas(
    client: &Client,
    ns: &str,
) -> Result<BTreeMap<String, ObjectMeta>, CliError> {
    let api: Api<PartialObjectMeta<KubeSecret>> = Api::namespaced(client.clone(), ns);
    let list = api
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| CliError::kube(format!("list Secrets in {ns}"), e))?;
    Ok(list
        .items
        .into_iter()
        .map(|s| (s.name_any(), s.metadata))
        .collect())
}

fn health(
    metas: &BTreeMap<String, ObjectMeta>,
    corg: &CustomerOrg,
    secret_name: &str,
    id_annotation: &str,
    status_id: Option<&str>,
) -> SecretHealth {
    let Some(meta) = metas.get(secret_name) else {
        return SecretHealth {
            detail: Some(
                if status_id.is_some() {
                    "missing"
                } else {
                    "not created yet"
                }
                .into(),
            ),
            ..Default::default()
        };
    };
    let uid = corg.metadata.uid.as_deref();
    let owned = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && uid.is_some() && Some(o.uid.as_str()) == uid);
    let id = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(id_annotation))
        .cloned();
    let id_matches = match (status_id, id.as_deref()) {
        (Some(want), Some(got)) => Some(want == got),
        (Some(_), None) => Some(false),
        _ => None,
    };
    let detail = if !owned {
        Some("not owned by this CustomerOrg".into())
    } else if id_matches == Some(false) {
        Some(format!(
            "holds {} but status records {}",
            id.as_deref().unwrap_or("no id"),
            status_id.unwrap_or("none")
        ))
    } else {
        None
    };
    SecretHealth {
        present: true,
        owned,
        id_matches,
        authenticating: None,
        detail,
    }
}

/// Everything but the partner API: spec, status, Secrets' health and the diagnosis.
pub fn base_view(
    corg: &CustomerOrg,
    providers: &BTreeMap<String, OrgProvider>,
    metas: &BTreeMap<String, ObjectMeta>,
) -> CustomerView {
    let status = corg.status.clone().unwrap_or_default();
    let provider_name = corg.spec.provider_ref.name.clone();
    let provider = provider_view(&provider_name, providers.get(&provider_name));
    let api_keys = corg
        .spec
        .api_keys
        .iter()
        .map(|spec| {
            let st = status.api_keys.iter().find(|k| k.name == spec.name);
            let secret_name = key_secret_name(corg, spec);
            KeyView {
                name: spec.name.clone(),
                id: st.map(|k| k.id.clone()),
                prefix: st.map(|k| k.prefix.clone()),
                secret: health(
                    metas,
                    corg,
                    &secret_name,
                    KEY_ID_ANNOTATION,
                    st.map(|k| k.id.as_str()),
                ),
                secret_name,
            }
        })
        .collect();
    let webhooks = corg
        .spec
        .webhooks
        .iter()
        .map(|spec| {
            let st = status.webhooks.iter().find(|w| w.name == spec.name);
            let secret_name = webhook_secret_name(corg, spec);
            WebhookView {
                name: spec.name.clone(),
                id: st.map(|w| w.id.clone()),
                url: spec.url.clone(),
                secret: health(
                    metas,
                    corg,
                    &secret_name,
                    WEBHOOK_ID_ANNOTATION,
                    st.map(|w| w.id.as_str()),
                ),
                secret_name,
            }
        })
        .collect();
    let conditions = status
        .conditions
        .iter()
        .map(|c| ConditionView {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            observed_generation: c.observed_generation,
            last_transition_time: c.last_transition_time.0.to_string(),
        })
        .collect();
    let credits = CreditsView {
        spec: corg.spec.credits.as_ref().map(|c| CreditsSpecView {
            allocated: c.allocated,
            monthly_cap: c.monthly_cap,
            refill_threshold: c.auto_refill.as_ref().and_then(|r| r.threshold),
            refill_amount: c.auto_refill.as_ref().and_then(|r| r.amount),
        }),
        status: status.credits.as_ref().map(|c| CreditsStatusView {
            allocated: c.allocated,
            balance: c.balance,
            available: c.available,
        }),
    };
    let paused = corg
        .annotations()
        .get(PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true");
    let mut view = CustomerView {
        api_version: API_VERSION,
        kind: "CustomerOrgView",
        namespace: corg.namespace().unwrap_or_default(),
        name: corg.name_any(),
        generation: corg.metadata.generation,
        observed_generation: status.observed_generation,
        ready: false,
        diagnosis: Diagnosis::default(),
        paused,
        deleting: corg.metadata.deletion_timestamp.is_some(),
        provider,
        desired_state: corg.spec.state.as_str().to_string(),
        observed_state: status.state.clone(),
        org_id: status.org_id.clone(),
        credits,
        api_keys,
        webhooks,
        conditions,
        events: Vec::new(),
        live: None,
    };
    view.diagnosis = diagnose::diagnose(&view);
    view.ready = view.diagnosis.cause == diagnose::READY_CAUSE;
    view
}

/// The last `limit` Events (events.k8s.io) regarding this CustomerOrg, oldest first.
pub async fn events(
    client: &Client,
    corg: &CustomerOrg,
    limit: usize,
) -> Result<Vec<EventView>, CliError> {
    let ns = corg.namespace().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let selector = format!(
        "regarding.kind=CustomerOrg,regarding.name={}",
        corg.name_any()
    );
    let list = api
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(|e| CliError::kube(format!("list Events in {ns}"), e))?;
    let uid = corg.metadata.uid.clone();
    let mut rows: Vec<(Option<jiff::Timestamp>, EventView)> = list
        .items
        .into_iter()
        .filter(|e| uid.is_none() || e.regarding.as_ref().and_then(|r| r.uid.clone()) == uid)
        .map(|e| {
            let time = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.deprecated_last_timestamp.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let count = e
                .series
                .as_ref()
                .map(|s| s.count)
                .or(e.deprecated_count)
                .unwrap_or(1);
            (
                time,
                EventView {
                    time: time.map(|t| t.to_string()),
                    type_: e.type_.unwrap_or_default(),
                    reason: e.reason.unwrap_or_default(),
                    note: e.note.unwrap_or_default(),
                    count,
                },
            )
        })
        .collect();
    rows.sort_by_key(|(t, _)| *t);
    let skip = rows.len().saturating_sub(limit);
    Ok(rows.into_iter().skip(skip).map(|(_, e)| e).collect())
}

/// A read-only client for the OrgProvider's partner API (any of its types), with its
/// credentials.
pub async fn live_provider(
    client: &Client,
    provider: &OrgProvider,
) -> Result<Arc<dyn Provider>, CliError> {
    let r = &provider.spec.credentials_secret_ref;
    let secrets: Api<KubeSecret> = Api::namespaced(client.clone(), &r.namespace);
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| CliError::kube(format!("read Secret {}/{}", r.namespace, r.name), e))?
        .ok_or_else(|| {
            CliError::Live(format!(
                "credentials Secret {}/{} does not exist",
                r.namespace, r.name
            ))
        })?;
    let creds = credentials(&provider.spec, &secret).map_err(CliError::Live)?;
    interactive_client(&provider.spec, creds)
}

/// An interactive tool fails fast rather than retrying for a minute: two attempts, 10 s of
/// retries, 15 s per request, whatever the provider type.
const ATTEMPTS: u32 = 2;
const RETRY_TIME: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

fn interactive_client(
    spec: &OrgProviderSpec,
    creds: Credentials,
) -> Result<Arc<dyn Provider>, CliError> {
    let opts = ClientOptions {
        request_timeout: Some(REQUEST_TIMEOUT),
        max_attempts: Some(ATTEMPTS),
        max_retry_time: Some(RETRY_TIME),
        ..ClientOptions::default()
    };
    let built = build(spec, &creds, None, &opts)
        .map_err(|e| CliError::Live(format!("cannot build a client: {}", e.message())))?;
    Ok(built.provider())
}

fn layers(base_url: &str, key: Secret) -> Result<LayersProvider, CliError> {
    let mut cfg = LayersConfig::new(base_url.to_string(), key);
    cfg.max_attempts = ATTEMPTS;
    cfg.max_retry_time = RETRY_TIME;
    cfg.request_timeout = REQUEST_TIMEOUT;
    LayersProvider::new(cfg).map_err(|e| CliError::Live(format!("cannot build a client: {e}")))
}

fn secret_data(secret: &KubeSecret, key: &str) -> Option<Secret> {
    orgops::provider::build::secret_value(secret, key).map(Secret::new)
}

/// The partner API refused the credentials (any provider's wording): not a transient failure.
fn refused(e: &ProviderError) -> bool {
    e.is_auth() || matches!(e, ProviderError::KillSwitch(_))
}

fn describe(e: &ProviderError) -> String {
    match e.request_id() {
        Some(rid) => format!("{} {} (request {rid})", e.code(), e.message()),
        None => format!("{} {}", e.code(), e.message()),
    }
}

/// GETs the org and, where the provider has them, its ledger of allocations and its keys.
pub async fn live(provider: &dyn Provider, org_id: &str) -> LiveView {
    let mut live = LiveView::default();
    let can = provider.capabilities();
    live.no_ledger = !can.allocation_ledger;
    match provider.get_org(org_id).await {
        Ok(Some(org)) => {
            live.state = Some(orgops::reconcile::status::org_state(org.status).to_string());
            if let Some(s) = org.summary {
                live.balance = Some(s.balance);
                live.available = Some(s.available);
                live.monthly_cap = s.credit_config.monthly_cap;
                live.refill_threshold = s.credit_config.refill.as_ref().map(|r| r.threshold);
                live.refill_amount = s.credit_config.refill.as_ref().map(|r| r.amount);
            }
        }
        Ok(None) => {
            live.error = Some(format!("org {org_id} was not found at the provider"));
            return live;
        }
        Err(e) => {
            live.refused = refused(&e);
            live.error = Some(format!("GET org {org_id}: {}", describe(&e)));
            return live;
        }
    }
    let ledger = if can.allocation_ledger {
        provider.list_allocations(org_id).await
    } else {
        Ok(Vec::new())
    };
    match ledger {
        Ok(rows) => {
            live.ledger = rows
                .into_iter()
                .map(|r| {
                    let meta = r.metadata.unwrap_or_default();
                    LedgerRow {
                        marked: meta.get(ALLOCATION_MARKER).map(String::as_str) == Some("true"),
                        transfer_id: meta.get("transferId").cloned(),
                        event_id: r.event_id,
                        credits: r.credits,
                    }
                })
                .collect();
            live.marked_sum = live
                .ledger
                .iter()
                .filter(|r| r.marked)
                .map(|r| r.credits)
                .sum();
        }
        Err(e) => {
            live.refused = refused(&e);
            live.error = Some(format!("GET ledger: {}", describe(&e)));
            return live;
        }
    }
    let keys = if can.child_api_keys {
        provider.list_keys(org_id).await
    } else {
        Ok(Vec::new())
    };
    match keys {
        Ok(keys) => {
            live.keys = keys
                .into_iter()
                .map(|k| LiveKey {
                    id: k.id,
                    name: k.name,
                    prefix: k.prefix,
                    status: match k.status {
                        KeyStatus::Active => "active".into(),
                        KeyStatus::Revoked => "revoked".into(),
                    },
                    superseded_by: k.superseded_by,
                })
                .collect();
        }
        Err(e) => {
            live.refused = refused(&e);
            live.error = Some(format!("GET keys: {}", describe(&e)));
        }
    }
    live
}

/// `--verify` where the provider has no per-customer keys (Gennia, YouHodler): whoami with
/// the OrgProvider's own credentials, the ones the operator uses for this customer. A refusal
/// is a live read failure (the diagnosis names it); a success is shown on the provider line.
pub async fn verify_provider(provider: &dyn Provider, view: &mut CustomerView) {
    match provider.whoami().await {
        Ok(who) => {
            view.provider.verified = Some(format!(
                "whoami ok as {} in {}",
                who.api_key_id, who.organization_id
            ));
        }
        Err(e) => {
            let live = view.live.get_or_insert_with(LiveView::default);
            if live.error.is_none() {
                live.error = Some(format!("whoami: {}", describe(&e)));
            }
            live.refused |= refused(&e);
            view.provider.verified = Some(format!("whoami refused: {}", describe(&e)));
        }
    }
}

/// `--verify`: whoami with each key Secret's key. The value goes from the Secret straight
/// into the Authorization header and is dropped.
pub async fn verify_keys(
    client: &Client,
    view: &mut CustomerView,
    base_url: &str,
) -> Result<(), CliError> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), &view.namespace);
    for key in view.api_keys.iter_mut().filter(|k| k.secret.present) {
        let secret = api
            .get_opt(&key.secret_name)
            .await
            .map_err(|e| CliError::kube(format!("read Secret {}", key.secret_name), e))?;
        let Some(value) = secret.as_ref().and_then(|s| secret_data(s, "apiKey")) else {
            key.secret.authenticating = Some(false);
            key.secret.detail = Some("has no apiKey".into());
            continue;
        };
        let outcome = match layers(base_url, value) {
            Ok(p) => p.whoami().await,
            Err(e) => {
                key.secret.detail = Some(format!("could not check: {e}"));
                continue;
            }
        };
        match outcome {
            Ok(who) => {
                let as_expected = key.id.as_deref().is_none_or(|id| id == who.api_key_id)
                    && view
                        .org_id
                        .as_deref()
                        .is_none_or(|o| o == who.organization_id);
                key.secret.authenticating = Some(true);
                key.secret.detail = Some(if as_expected {
                    format!("whoami ok as {}", who.api_key_id)
                } else {
                    format!(
                        "whoami ok but as {} in {} (not the key in status)",
                        who.api_key_id, who.organization_id
                    )
                });
            }
            // Authentication comes before the kill switch: the key is valid, its org (or
            // the key) is switched off, as for a suspended org.
            Err(e @ ProviderError::KillSwitch(_)) => {
                key.secret.authenticating = Some(true);
                key.secret.detail = Some(format!("valid, but calls are refused: {}", describe(&e)));
            }
            Err(e) if e.is_auth() => {
                key.secret.authenticating = Some(false);
                key.secret.detail = Some(format!("whoami refused: {}", describe(&e)));
            }
            Err(e) => key.secret.detail = Some(format!("could not check: {}", describe(&e))),
        }
    }
    Ok(())
}
