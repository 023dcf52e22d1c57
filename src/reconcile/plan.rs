//! The planner: a pure function from the desired CustomerOrg and what was observed to an
//! ordered list of actions. No I/O here, so every combination is unit-testable.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::conditions::{self, READY, STALLED};
use crate::api::{ApiKeySpec, CustomerOrg, DesiredState, KeyEnvSpec, WebhookSpec};
use crate::provider::{
    ApiKey, Capabilities, CreditConfig, IdempotencyKey, KeyEnv, KeyStatus, NewApiKey, NewOrg,
    NewWebhook, Org, OrgPatch, OrgStatus, Refill, WebhookEndpoint, WebhookPatch,
};

use super::idempotency::{content_hash, derive};

/// Org metadata key naming the CustomerOrg (`namespace/name`) that manages the org.
pub const OWNER_KEY: &str = "orgops.dev/owner";
/// Org metadata key holding spec.externalId.
pub const EXTERNAL_ID_KEY: &str = "externalId";
/// Transfer metadata marking an orgops allocation (rule 3).
pub const ALLOCATION_MARKER: &str = "orgops.dev/allocation";
/// Webhook endpoint metadata naming the spec.webhooks entry.
pub const WEBHOOK_MARKER: &str = "orgops.dev/webhook";
/// Stalled reason for an API rejection (kept until the spec changes).
pub const REASON_API_REJECTED: &str = "ApiRejected";

/// How the org was found.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// status.orgId read back; `None` means the provider answered 404.
    Tracked(Option<Org>),
    /// spec.adoptOrgId read back; `claimed_by` names another live CustomerOrg owning it.
    ById {
        org: Option<Org>,
        claimed_by: Option<String>,
    },
    /// Live orgs carrying spec.externalId; `claimed_by` as above (for a single match).
    ByExternalId {
        orgs: Vec<Org>,
        claimed_by: Option<String>,
    },
    /// Nothing to look up: the org must be created.
    Nothing,
}

/// A Secret the CustomerOrg wants to write, as found in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSeen {
    Missing,
    /// Controlled by this CustomerOrg; `id` is its orgops.dev/key-id or webhook-id annotation,
    /// `rotated_for` the `orgops.dev/rotate-keys` value its key was minted or rotated for.
    Owned {
        id: Option<String>,
        rotated_for: Option<String>,
    },
    /// Exists but this CustomerOrg does not control it: never overwritten.
    Foreign,
}

/// Everything read for one reconcile. `None` lists were not read (not needed).
#[derive(Clone, Debug)]
pub struct Observed {
    pub found: Found,
    pub keys: Option<Vec<ApiKey>>,
    pub webhooks: Option<Vec<WebhookEndpoint>>,
    /// Sum of marked allocations in the child's ledger.
    pub ledger: Option<i64>,
    pub secrets: BTreeMap<String, SecretSeen>,
    pub capabilities: Capabilities,
}

/// One step, executed in order by `apply`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateOrg {
        new: NewOrg,
        key: IdempotencyKey,
    },
    UpdateOrg {
        patch: OrgPatch,
        key: IdempotencyKey,
    },
    Resume,
    Suspend,
    Archive,
    SetCreditConfig {
        config: CreditConfig,
        key: IdempotencyKey,
    },
    Allocate {
        credits: u64,
        ledger: i64,
        target: i64,
        key: IdempotencyKey,
    },
    /// Mint, or replay a mint whose secret was lost (`replaces` = the key whose Secret is missing:
    /// revoked when the provider returns a different key). `rotation`: the pending
    /// rotate-keys value, recorded on the Secret (a fresh key needs no rotation).
    MintKey {
        name: String,
        new: NewApiKey,
        secret_name: String,
        spec_hash: String,
        replaces: Option<String>,
        rotation: Option<String>,
        key: IdempotencyKey,
    },
    /// Rotate for the rotate-keys value `rotation`, recorded on the Secret with the new
    /// key so a retry of a half-done rotation pass skips this key.
    RotateKey {
        name: String,
        key_id: String,
        secret_name: String,
        spec_hash: String,
        rotation: String,
        key: IdempotencyKey,
    },
    RevokeKey {
        name: String,
        key_id: String,
    },
    CreateWebhook {
        name: String,
        new: NewWebhook,
        secret_name: String,
        spec_hash: String,
        key: IdempotencyKey,
    },
    UpdateWebhook {
        name: String,
        id: String,
        patch: WebhookPatch,
        key: IdempotencyKey,
    },
    DeleteWebhook {
        name: String,
        id: String,
    },
    RotateWebhookSecret {
        name: String,
        id: String,
        secret_name: String,
        spec_hash: String,
        key: IdempotencyKey,
    },
    DeleteSecret {
        name: String,
    },
    /// Bookkeeping: the rotation for this annotation value is complete.
    MarkRotated {
        value: String,
    },
}

impl Action {
    /// Whether the action changes anything outside the status.
    pub fn is_write(&self) -> bool {
        !matches!(self, Action::MarkRotated { .. })
    }
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The org the actions apply to (absent when it must be created).
    pub org: Option<Org>,
    /// Set when this plan adopts an existing org: how it was found.
    pub adopted: Option<String>,
    pub actions: Vec<Action>,
    /// Why a human is needed (reason, message); the first one wins.
    pub stalled: Option<(String, String)>,
    /// Things worth saying that do not block readiness.
    pub notes: Vec<String>,
    /// Out-of-band changes being corrected (for the DriftCorrected event).
    pub drift: Vec<String>,
}

/// Why no API call may be made at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Paused,
    /// The API rejected this generation; wait for a spec change.
    Rejected,
}

/// Checked before observing: a gated object costs zero API calls.
pub fn gate(corg: &CustomerOrg) -> Option<Gate> {
    let paused = corg
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::api::PAUSED_ANNOTATION))
        .is_some_and(|v| v == "true");
    if paused {
        return Some(Gate::Paused);
    }
    let status = corg.status.as_ref()?;
    let stalled = conditions::find(&status.conditions, STALLED)?;
    (stalled.status == "True"
        && stalled.reason == REASON_API_REJECTED
        && stalled.observed_generation == corg.metadata.generation)
        .then_some(Gate::Rejected)
}

/// `namespace/name`, the ownership marker value.
pub fn owner_of(corg: &CustomerOrg) -> String {
    format!(
        "{}/{}",
        corg.metadata.namespace.as_deref().unwrap_or_default(),
        corg.metadata.name.as_deref().unwrap_or_default()
    )
}

fn uid(corg: &CustomerOrg) -> &str {
    corg.metadata.uid.as_deref().unwrap_or_default()
}

fn corg_name(corg: &CustomerOrg) -> &str {
    corg.metadata.name.as_deref().unwrap_or_default()
}

pub fn rotation_pending(corg: &CustomerOrg) -> Option<String> {
    let wanted = corg
        .metadata
        .annotations
        .as_ref()?
        .get(crate::api::ROTATE_KEYS_ANNOTATION)?;
    let applied = corg
        .status
        .as_ref()
        .and_then(|s| s.keys_rotated_for.as_ref());
    (applied != Some(wanted)).then(|| wanted.clone())
}

pub fn key_secret_name(corg: &CustomerOrg, key: &ApiKeySpec) -> String {
    key.secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", corg_name(corg), key.name))
}

pub fn webhook_secret_name(corg: &CustomerOrg, hook: &WebhookSpec) -> String {
    hook.secret_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}-webhook", corg_name(corg), hook.name))
}

fn sorted(list: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = list.iter().collect();
    set.into_iter().cloned().collect()
}

fn env_of(env: KeyEnvSpec) -> KeyEnv {
    match env {
        KeyEnvSpec::Live => KeyEnv::Live,
        KeyEnvSpec::Test => KeyEnv::Test,
    }
}

pub fn key_hash(corg: &CustomerOrg, key: &ApiKeySpec) -> String {
    let scopes = sorted(&key.scopes).join(",");
    let env = format!("{:?}", env_of(key.env));
    content_hash(&[&key.name, &scopes, &env, &key_secret_name(corg, key)])
}

pub fn webhook_hash(corg: &CustomerOrg, hook: &WebhookSpec) -> String {
    let events = sorted(&hook.events).join(",");
    content_hash(&[
        &hook.name,
        &hook.url,
        &events,
        &webhook_secret_name(corg, hook),
    ])
}

/// The org metadata the spec asks for, ownership marker included.
pub fn desired_metadata(corg: &CustomerOrg) -> BTreeMap<String, String> {
    let mut meta = corg.spec.metadata.clone();
    if let Some(ext) = &corg.spec.external_id {
        meta.insert(EXTERNAL_ID_KEY.to_string(), ext.clone());
    }
    meta.insert(OWNER_KEY.to_string(), owner_of(corg));
    meta
}

pub fn desired_credit_config(corg: &CustomerOrg) -> CreditConfig {
    let Some(credits) = &corg.spec.credits else {
        return CreditConfig::default();
    };
    let refill = credits
        .auto_refill
        .as_ref()
        .and_then(|r| match (r.threshold, r.amount) {
            (Some(t), Some(a)) => Some(Refill {
                threshold: u64::try_from(t).unwrap_or(0),
                amount: u64::try_from(a).unwrap_or(0),
            }),
            _ => None,
        });
    CreditConfig {
        monthly_cap: credits.monthly_cap.and_then(|c| u64::try_from(c).ok()),
        refill,
    }
}

pub fn desired_allocated(corg: &CustomerOrg) -> i64 {
    corg.spec.credits.as_ref().map_or(0, |c| c.allocated.max(0))
}

/// Which extra reads (beyond the org itself) this reconcile needs. Steady state needs none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub keys: bool,
    pub webhooks: bool,
    pub ledger: bool,
}

pub fn reads(
    corg: &CustomerOrg,
    secrets: &BTreeMap<String, SecretSeen>,
    caps: &Capabilities,
) -> Reads {
    let default_status = Default::default();
    let status = corg.status.as_ref().unwrap_or(&default_status);
    let secret_ok = |name: &str, id: &str| matches!(secrets.get(name), Some(SecretSeen::Owned { id: Some(got), .. }) if got == id);
    let spec_keys: BTreeSet<&str> = corg.spec.api_keys.iter().map(|k| k.name.as_str()).collect();
    let keys_differ = corg.spec.api_keys.iter().any(|k| {
        let recorded = status.api_keys.iter().find(|s| s.name == k.name);
        !recorded.is_some_and(|s| {
            s.spec_hash == key_hash(corg, k) && secret_ok(&key_secret_name(corg, k), &s.id)
        })
    }) || status
        .api_keys
        .iter()
        .any(|s| !spec_keys.contains(s.name.as_str()))
        || (rotation_pending(corg).is_some() && !corg.spec.api_keys.is_empty());
    let spec_hooks: BTreeSet<&str> = corg.spec.webhooks.iter().map(|w| w.name.as_str()).collect();
    let hooks_differ = corg.spec.webhooks.iter().any(|w| {
        let recorded = status.webhooks.iter().find(|s| s.name == w.name);
        !recorded.is_some_and(|s| {
            s.spec_hash == webhook_hash(corg, w) && secret_ok(&webhook_secret_name(corg, w), &s.id)
        })
    }) || status
        .webhooks
        .iter()
        .any(|s| !spec_hooks.contains(s.name.as_str()));
    let wanted = desired_allocated(corg);
    let ledger = match &status.credits {
        Some(c) => c.allocated != wanted,
        None => wanted > 0,
    };
    Reads {
        keys: caps.child_api_keys && keys_differ,
        webhooks: caps.webhooks && hooks_differ,
        ledger: caps.allocation_ledger && ledger,
    }
}

fn was_ready_at_this_generation(corg: &CustomerOrg) -> bool {
    corg.status.as_ref().is_some_and(|s| {
        conditions::find(&s.conditions, READY).is_some_and(|c| {
            c.status == "True" && c.observed_generation == corg.metadata.generation
        })
    })
}

/// Decides what to do. Pure: same inputs, same plan.
pub fn plan(corg: &CustomerOrg, obs: &Observed) -> Plan {
    let mut plan = Plan::default();
    if gate(corg).is_some() {
        return plan;
    }
    let wants = corg.spec.state;
    let org = match &obs.found {
        Found::Tracked(Some(org)) => org.clone(),
        Found::Tracked(None) => {
            if wants != DesiredState::Archived {
                plan.stalled = Some((
                    "OrgNotFound".into(),
                    "the org in status.orgId no longer exists at the provider; to start over with a new org, remove status.orgId (kubectl edit --subresource=status) or set spec.adoptOrgId".into(),
                ));
            }
            return plan;
        }
        Found::ById { org: None, .. } => {
            plan.stalled = Some((
                "OrgNotFound".into(),
                "spec.adoptOrgId names an org that does not exist or is not a child of the provider's parent org; fix spec.adoptOrgId".into(),
            ));
            return plan;
        }
        Found::ById {
            org: Some(org),
            claimed_by,
        } => {
            if let Some(other) = claimed_by {
                plan.stalled = Some((
                    "AdoptionConflict".into(),
                    format!(
                        "org {} is already managed by CustomerOrg {other}; remove spec.adoptOrgId or delete the other resource",
                        org.id
                    ),
                ));
                return plan;
            }
            plan.adopted = Some(format!("adopted org {} from spec.adoptOrgId", org.id));
            org.clone()
        }
        Found::ByExternalId { orgs, claimed_by } => match orgs.as_slice() {
            [] => return plan_create(corg, plan),
            [org] => {
                if let Some(other) = claimed_by {
                    plan.stalled = Some((
                        "AdoptionConflict".into(),
                        format!(
                            "org {} with externalId {:?} is already managed by CustomerOrg {other}; change spec.externalId or delete the other resource",
                            org.id,
                            corg.spec.external_id.as_deref().unwrap_or_default()
                        ),
                    ));
                    return plan;
                }
                plan.adopted = Some(format!(
                    "adopted org {} by externalId {:?}",
                    org.id,
                    corg.spec.external_id.as_deref().unwrap_or_default()
                ));
                org.clone()
            }
            many => {
                let ids: Vec<&str> = many.iter().map(|o| o.id.as_str()).collect();
                plan.stalled = Some((
                    "AdoptionConflict".into(),
                    format!(
                        "several live orgs carry externalId {:?} ({}); set spec.adoptOrgId to the one to manage",
                        corg.spec.external_id.as_deref().unwrap_or_default(),
                        ids.join(", ")
                    ),
                ));
                return plan;
            }
        },
        Found::Nothing => return plan_create(corg, plan),
    };
    plan.org = Some(org.clone());

    match (org.status, wants) {
        (OrgStatus::Archived, DesiredState::Archived) => return plan,
        (OrgStatus::Archived, _) => {
            plan.stalled = Some((
                "OrgArchived".into(),
                format!(
                    "org {} is archived at the provider and cannot be reactivated; set spec.state: archived, or delete this resource and create a new one",
                    org.id
                ),
            ));
            return plan;
        }
        (_, DesiredState::Archived) => {
            plan.actions.push(Action::Archive);
            return plan;
        }
        _ => {}
    }
    let drift_possible = was_ready_at_this_generation(corg) && plan.adopted.is_none();
    let org_id = org.id.clone();
    let uid = uid(corg).to_string();

    if org.status == OrgStatus::Suspended && wants == DesiredState::Active {
        plan.actions.push(Action::Resume);
        if drift_possible {
            plan.drift.push("state (suspended -> active)".into());
        }
    }

    plan_org_fields(corg, &org, &uid, drift_possible, &mut plan);
    if obs.capabilities.credit_config {
        plan_credit_config(corg, &org, &uid, drift_possible, &mut plan);
    } else if corg
        .spec
        .credits
        .as_ref()
        .is_some_and(|c| c.monthly_cap.is_some() || c.auto_refill.is_some())
    {
        plan.notes.push(
            "the provider has no credit config: monthlyCap and autoRefill are ignored".into(),
        );
    }
    if let Some(ledger) = obs.ledger {
        let target = desired_allocated(corg);
        if ledger < target {
            let diff = u64::try_from(target - ledger).unwrap_or(0);
            let key = derive(&[
                "allocate",
                &org_id,
                &ledger.to_string(),
                &target.to_string(),
            ]);
            plan.actions.push(Action::Allocate {
                credits: diff,
                ledger,
                target,
                key,
            });
        } else if ledger > target {
            plan.notes.push(format!("spec.credits.allocated is {target} but {ledger} credits were already moved; allocation is top-up only, nothing is moved back"));
        }
    }
    if let Some(keys) = &obs.keys {
        plan_keys(corg, keys, &obs.secrets, &uid, &mut plan);
    } else if !obs.capabilities.child_api_keys && !corg.spec.api_keys.is_empty() {
        plan.notes
            .push("the provider cannot mint child keys: spec.apiKeys is ignored".into());
    }
    if let Some(rotation) = rotation_pending(corg)
        && corg.spec.api_keys.is_empty()
    {
        plan.actions.push(Action::MarkRotated { value: rotation });
    }
    if let Some(hooks) = &obs.webhooks {
        plan_webhooks(corg, hooks, &obs.secrets, &uid, &mut plan);
    } else if !obs.capabilities.webhooks && !corg.spec.webhooks.is_empty() {
        plan.notes
            .push("the provider has no webhooks: spec.webhooks is ignored".into());
    }
    if org.status == OrgStatus::Active && wants == DesiredState::Suspended {
        plan.actions.push(Action::Suspend);
        if drift_possible {
            plan.drift.push("state (active -> suspended)".into());
        }
    }
    plan
}

fn plan_create(corg: &CustomerOrg, mut plan: Plan) -> Plan {
    if corg.spec.state == DesiredState::Archived {
        plan.notes
            .push("spec.state is archived and no org exists: nothing to create".into());
        return plan;
    }
    let new = NewOrg {
        name: corg.spec.display_name.clone(),
        metadata: desired_metadata(corg),
        billing_email: corg.spec.billing_email.clone(),
    };
    let meta: Vec<String> = new
        .metadata
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let key = derive(&[
        uid(corg),
        "create",
        &new.name,
        &meta.join("\u{1e}"),
        new.billing_email.as_deref().unwrap_or_default(),
    ]);
    plan.actions.push(Action::CreateOrg { new, key });
    plan
}

fn plan_org_fields(corg: &CustomerOrg, org: &Org, uid: &str, drift: bool, plan: &mut Plan) {
    let mut patch = OrgPatch::default();
    let mut changed = Vec::new();
    if org.name != corg.spec.display_name {
        patch.name = Some(corg.spec.display_name.clone());
        changed.push("name");
    }
    let wanted = desired_metadata(corg);
    let mut meta = BTreeMap::new();
    for (k, v) in &wanted {
        if org.metadata.get(k) != Some(v) {
            meta.insert(k.clone(), v.clone());
        }
    }
    for k in org.metadata.keys() {
        if !wanted.contains_key(k) {
            meta.insert(k.clone(), String::new());
        }
    }
    // The ownership marker alone changing is adoption bookkeeping, not drift.
    let only_owner = meta.keys().all(|k| k == OWNER_KEY);
    if !meta.is_empty() {
        patch.metadata = Some(meta);
        if !only_owner {
            changed.push("metadata");
        }
    }
    if org.billing_email != corg.spec.billing_email {
        patch.billing_email = Some(corg.spec.billing_email.clone());
        changed.push("billingEmail");
    }
    if patch == OrgPatch::default() {
        return;
    }
    if drift {
        plan.drift.extend(changed.iter().map(|c| c.to_string()));
    }
    let body = format!("{patch:?}");
    let key = derive(&[uid, "update", &org.id, &body]);
    plan.actions.push(Action::UpdateOrg { patch, key });
}

fn plan_credit_config(corg: &CustomerOrg, org: &Org, uid: &str, drift: bool, plan: &mut Plan) {
    let Some(summary) = &org.summary else {
        return;
    };
    let wanted = desired_credit_config(corg);
    if summary.credit_config == wanted {
        return;
    }
    if drift {
        plan.drift.push("credit config".into());
    }
    let key = derive(&[uid, "credit-config", &org.id, &format!("{wanted:?}")]);
    plan.actions.push(Action::SetCreditConfig {
        config: wanted,
        key,
    });
}

/// The rotated key id is part of the key: one rotate-keys value rotates each key once,
/// and a value reused later (on another key id) is a new request, not a conflicting one.
fn rotate_key(uid: &str, name: &str, value: &str, key_id: &str) -> IdempotencyKey {
    derive(&[uid, "rotate", name, value, key_id])
}

/// The Secret this CustomerOrg may write at `secret_name`, or `None` (and Stalled) when
/// another owner controls it: such a Secret is never overwritten.
fn usable_secret(
    secrets: &BTreeMap<String, SecretSeen>,
    secret_name: &str,
    field: &str,
    plan: &mut Plan,
) -> Option<SecretSeen> {
    let seen = secrets
        .get(secret_name)
        .cloned()
        .unwrap_or(SecretSeen::Missing);
    if seen == SecretSeen::Foreign {
        plan.stalled.get_or_insert((
            "SecretConflict".into(),
            format!("Secret {secret_name} exists and is not owned by this CustomerOrg; it is never overwritten: delete it or set {field}.secretName"),
        ));
        return None;
    }
    Some(seen)
}

/// Of several provider objects with one name, the one the Secret points at, else the one
/// status records, else the first; the others are extras.
fn kept<'a, T>(
    found: &[&'a T],
    id: impl Fn(&T) -> &String,
    secret_id: &Option<String>,
    recorded_id: Option<&String>,
) -> Option<&'a T> {
    found
        .iter()
        .find(|x| Some(id(x)) == secret_id.as_ref())
        .or_else(|| found.iter().find(|x| recorded_id == Some(id(x))))
        .or(found.first())
        .copied()
}

/// Only a Secret this CustomerOrg owns is ever deleted.
fn delete_owned_secret(secrets: &BTreeMap<String, SecretSeen>, name: &str, plan: &mut Plan) {
    if matches!(secrets.get(name), Some(SecretSeen::Owned { .. })) {
        plan.actions.push(Action::DeleteSecret {
            name: name.to_string(),
        });
    }
}

fn is_current(k: &ApiKey) -> bool {
    k.status == KeyStatus::Active && k.superseded_by.is_none()
}

fn plan_keys(
    corg: &CustomerOrg,
    keys: &[ApiKey],
    secrets: &BTreeMap<String, SecretSeen>,
    uid: &str,
    plan: &mut Plan,
) {
    let default_status = Default::default();
    let status = corg.status.as_ref().unwrap_or(&default_status);
    let rotation = rotation_pending(corg);
    let mut rotation_complete = true;
    for spec in &corg.spec.api_keys {
        let secret_name = key_secret_name(corg, spec);
        let field = format!("spec.apiKeys[{}]", spec.name);
        let Some(seen) = usable_secret(secrets, &secret_name, &field, plan) else {
            rotation_complete = false;
            continue;
        };
        let (secret_id, secret_rotated_for) = match &seen {
            SecretSeen::Owned { id, rotated_for } => (id.clone(), rotated_for.clone()),
            _ => (None, None),
        };
        let recorded = status.api_keys.iter().find(|s| s.name == spec.name);
        let named: Vec<&ApiKey> = keys.iter().filter(|k| k.name == spec.name).collect();
        let current: Vec<&ApiKey> = named.iter().copied().filter(|k| is_current(k)).collect();
        let keep = kept(&current, |k| &k.id, &secret_id, recorded.map(|r| &r.id));
        for extra in current
            .iter()
            .filter(|k| Some(k.id.as_str()) != keep.map(|k| k.id.as_str()))
        {
            plan.actions.push(Action::RevokeKey {
                name: spec.name.clone(),
                key_id: extra.id.clone(),
            });
        }
        let scopes = sorted(&spec.scopes);
        let env = env_of(spec.env);
        let spec_hash = key_hash(corg, spec);
        let new = NewApiKey {
            name: spec.name.clone(),
            scopes: scopes.clone(),
            env,
        };
        let mint_key = |n: usize| {
            derive(&[
                uid,
                "mint",
                &spec.name,
                &scopes.join(","),
                &format!("{env:?}"),
                &n.to_string(),
            ])
        };
        match keep {
            None => {
                plan.actions.push(Action::MintKey {
                    name: spec.name.clone(),
                    new,
                    secret_name: secret_name.clone(),
                    spec_hash,
                    replaces: None,
                    rotation: rotation.clone(),
                    key: mint_key(named.len()),
                });
            }
            Some(cur) if sorted(&cur.scopes) != scopes || cur.env != env => {
                // Scopes and env cannot be edited at the provider: mint a replacement, then revoke.
                plan.actions.push(Action::MintKey {
                    name: spec.name.clone(),
                    new,
                    secret_name: secret_name.clone(),
                    spec_hash,
                    replaces: None,
                    rotation: rotation.clone(),
                    key: mint_key(named.len()),
                });
                plan.actions.push(Action::RevokeKey {
                    name: spec.name.clone(),
                    key_id: cur.id.clone(),
                });
            }
            Some(cur) if secret_id.as_deref() == Some(cur.id.as_str()) => {
                // A Secret already written for this value: rotated earlier in a pass that
                // failed later on; rotating again would replace a key the user just got.
                if let Some(value) = &rotation
                    && secret_rotated_for.as_ref() != Some(value)
                {
                    plan.actions.push(Action::RotateKey {
                        name: spec.name.clone(),
                        key_id: cur.id.clone(),
                        secret_name: secret_name.clone(),
                        spec_hash,
                        rotation: value.clone(),
                        key: rotate_key(uid, &spec.name, value, &cur.id),
                    });
                }
            }
            Some(cur) => {
                // A key without its Secret. A rotation whose response was lost is replayed on
                // the superseded key; otherwise the original mint is replayed.
                let lost_rotation = rotation.as_ref().and_then(|value| {
                    named
                        .iter()
                        .find(|k| {
                            Some(&k.id) == secret_id.as_ref()
                                && k.superseded_by.as_deref() == Some(cur.id.as_str())
                        })
                        .map(|old| (old.id.clone(), value.clone()))
                });
                if let Some((old_id, value)) = lost_rotation {
                    // Same key id and value as the lost request: the provider replays it.
                    let key = rotate_key(uid, &spec.name, &value, &old_id);
                    plan.actions.push(Action::RotateKey {
                        name: spec.name.clone(),
                        key_id: old_id,
                        secret_name: secret_name.clone(),
                        spec_hash,
                        rotation: value,
                        key,
                    });
                } else {
                    plan.actions.push(Action::MintKey {
                        name: spec.name.clone(),
                        new,
                        secret_name: secret_name.clone(),
                        spec_hash,
                        replaces: Some(cur.id.clone()),
                        rotation: rotation.clone(),
                        key: mint_key(named.len() - 1),
                    });
                }
            }
        }
        if let Some(old) = recorded
            && old.secret_name != secret_name
        {
            delete_owned_secret(secrets, &old.secret_name, plan);
        }
    }
    let spec_names: BTreeSet<&str> = corg.spec.api_keys.iter().map(|k| k.name.as_str()).collect();
    for gone in status
        .api_keys
        .iter()
        .filter(|s| !spec_names.contains(s.name.as_str()))
    {
        for k in keys
            .iter()
            .filter(|k| k.name == gone.name && k.status == KeyStatus::Active)
        {
            plan.actions.push(Action::RevokeKey {
                name: gone.name.clone(),
                key_id: k.id.clone(),
            });
        }
        delete_owned_secret(secrets, &gone.secret_name, plan);
    }
    if let Some(value) = rotation
        && rotation_complete
    {
        // Rotations planned above complete it; a freshly minted key needs none.
        plan.actions.push(Action::MarkRotated { value });
    }
}

fn plan_webhooks(
    corg: &CustomerOrg,
    hooks: &[WebhookEndpoint],
    secrets: &BTreeMap<String, SecretSeen>,
    uid: &str,
    plan: &mut Plan,
) {
    let default_status = Default::default();
    let status = corg.status.as_ref().unwrap_or(&default_status);
    let generation = corg.metadata.generation.unwrap_or_default().to_string();
    let ours = |name: &str| -> Vec<&WebhookEndpoint> {
        hooks
            .iter()
            .filter(|h| h.metadata.get(WEBHOOK_MARKER).map(String::as_str) == Some(name))
            .collect()
    };
    for spec in &corg.spec.webhooks {
        let secret_name = webhook_secret_name(corg, spec);
        let field = format!("spec.webhooks[{}]", spec.name);
        let Some(seen) = usable_secret(secrets, &secret_name, &field, plan) else {
            continue;
        };
        let secret_id = match &seen {
            SecretSeen::Owned { id, .. } => id.clone(),
            _ => None,
        };
        let recorded = status.webhooks.iter().find(|s| s.name == spec.name);
        let found = ours(&spec.name);
        let keep = kept(&found, |h| &h.id, &secret_id, recorded.map(|r| &r.id));
        let spec_hash = webhook_hash(corg, spec);
        let events = sorted(&spec.events);
        for extra in found
            .iter()
            .filter(|h| Some(h.id.as_str()) != keep.map(|h| h.id.as_str()))
        {
            plan.actions.push(Action::DeleteWebhook {
                name: spec.name.clone(),
                id: extra.id.clone(),
            });
        }
        let Some(hook) = keep else {
            let mut metadata = BTreeMap::new();
            metadata.insert(WEBHOOK_MARKER.to_string(), spec.name.clone());
            plan.actions.push(Action::CreateWebhook {
                name: spec.name.clone(),
                new: NewWebhook {
                    url: spec.url.clone(),
                    events: events.clone(),
                    metadata,
                },
                secret_name,
                spec_hash,
                key: derive(&[
                    uid,
                    "webhook",
                    &spec.name,
                    &spec.url,
                    &events.join(","),
                    &generation,
                ]),
            });
            continue;
        };
        let mut patch = WebhookPatch::default();
        if hook.url != spec.url {
            patch.url = Some(spec.url.clone());
        }
        if sorted(&hook.events) != events {
            patch.events = Some(events.clone());
        }
        if patch != WebhookPatch::default() {
            let body = format!("{patch:?}");
            plan.actions.push(Action::UpdateWebhook {
                name: spec.name.clone(),
                id: hook.id.clone(),
                patch,
                key: derive(&[uid, "webhook-update", &hook.id, &body]),
            });
        }
        if secret_id.as_deref() != Some(hook.id.as_str()) {
            plan.actions.push(Action::RotateWebhookSecret {
                name: spec.name.clone(),
                id: hook.id.clone(),
                secret_name: secret_name.clone(),
                spec_hash,
                key: derive(&[uid, "webhook-secret", &hook.id]),
            });
        }
        if let Some(old) = recorded
            && old.secret_name != secret_name
        {
            delete_owned_secret(secrets, &old.secret_name, plan);
        }
    }
    let spec_names: BTreeSet<&str> = corg.spec.webhooks.iter().map(|w| w.name.as_str()).collect();
    for gone in status
        .webhooks
        .iter()
        .filter(|s| !spec_names.contains(s.name.as_str()))
    {
        for h in ours(&gone.name) {
            plan.actions.push(Action::DeleteWebhook {
                name: gone.name.clone(),
                id: h.id.clone(),
            });
        }
        delete_owned_secret(secrets, &gone.secret_name, plan);
    }
}

/// What a pass that just created `created` knows without reading: a new org has no keys,
/// no webhooks, an empty ledger and the default credit config. `None` when that cannot be
/// trusted because the create may have replayed an earlier create whose follow-ups used
/// other idempotency keys: a spec edited since (generation > 1), a pending rotation, or a
/// status that already records keys, webhooks, credits or a rotation.
pub fn fresh_org_observation(
    corg: &CustomerOrg,
    created: &Org,
    seen: &Observed,
) -> Option<Observed> {
    let first_generation = corg.metadata.generation.unwrap_or(1) == 1;
    let no_records = corg.status.as_ref().is_none_or(|s| {
        s.api_keys.is_empty()
            && s.webhooks.is_empty()
            && s.credits.is_none()
            && s.keys_rotated_for.is_none()
    });
    if !first_generation
        || !no_records
        || rotation_pending(corg).is_some()
        || created.status != OrgStatus::Active
    {
        return None;
    }
    let caps = seen.capabilities;
    let mut org = created.clone();
    org.summary.get_or_insert(crate::provider::OrgSummary {
        balance: 0,
        available: 0,
        credit_config: CreditConfig::default(),
    });
    Some(Observed {
        found: Found::Tracked(Some(org)),
        keys: caps.child_api_keys.then(Vec::new),
        webhooks: caps.webhooks.then(Vec::new),
        ledger: caps.allocation_ledger.then_some(0),
        secrets: seen.secrets.clone(),
        capabilities: caps,
    })
}
