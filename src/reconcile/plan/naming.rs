//! Names, markers and hashes the planner derives from the spec: the owner marker, Secret
//! names, desired metadata and credit config. Pure helpers shared by the plan steps.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{ApiKeySpec, CustomerOrg, KeyEnvSpec, WebhookSpec};
use crate::provider::{CreditConfig, KeyEnv, Refill};

use crate::reconcile::idempotency::content_hash;

/// Org metadata key naming the CustomerOrg (`namespace/name/uid`) that manages the org.
pub const OWNER_KEY: &str = "orgops.dev/owner";
/// Org metadata key holding spec.externalId.
pub const EXTERNAL_ID_KEY: &str = "externalId";
/// Transfer metadata marking an orgops allocation (rule 3).
pub const ALLOCATION_MARKER: &str = "orgops.dev/allocation";
/// Webhook endpoint metadata naming the spec.webhooks entry.
pub const WEBHOOK_MARKER: &str = "orgops.dev/webhook";
/// On a transfer (both ledgers): its idempotency key, so a ledger row names the change-log
/// records of its transfer (docs/changelog.md).
pub const TRANSFER_KEY: &str = "orgops.dev/transfer-key";
/// On a transfer: the orgops-marked ledger sum it topped up from, and to.
pub const ALLOCATED_FROM: &str = "orgops.dev/allocated-from";
pub const ALLOCATED_TO: &str = "orgops.dev/allocated-to";

/// On a transfer a person approved past guardrails: the generation the approval named,
/// and the guardrails it crossed (comma-separated).
pub const APPROVED_GENERATION: &str = "orgops.dev/approved-generation";
pub const GUARDRAILS_CROSSED: &str = "orgops.dev/guardrails";

/// The metadata of a top-up from `ledger` to `target` sent with `key`: the orgops marker
/// (rule 3, `marked_sum`), the key and the two sums, so the provider's ledger itself says
/// which top-up each row was; and, when an approval let it past guardrails
/// (`(generation, guardrails)`), that too.
pub fn allocation_metadata(
    key: &crate::provider::IdempotencyKey,
    ledger: i64,
    target: i64,
    approved: Option<(i64, &[String])>,
) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::from([
        (ALLOCATION_MARKER.to_string(), "true".to_string()),
        (TRANSFER_KEY.to_string(), key.as_str().to_string()),
        (ALLOCATED_FROM.to_string(), ledger.to_string()),
        (ALLOCATED_TO.to_string(), target.to_string()),
    ]);
    if let Some((generation, crossed)) = approved.filter(|(_, c)| !c.is_empty()) {
        m.insert(APPROVED_GENERATION.to_string(), generation.to_string());
        m.insert(GUARDRAILS_CROSSED.to_string(), crossed.join(","));
    }
    m
}

/// What a suspend sends where the API takes it: spec.suspendReason (or, when offboarding
/// without one, a note saying so) and Gennia's cancellation reason.
pub fn suspend_reason(corg: &CustomerOrg, offboarding: bool) -> crate::provider::SuspendReason {
    let reason = corg.spec.suspend_reason.clone().or_else(|| {
        offboarding.then(|| {
            format!(
                "offboarded: CustomerOrg {}/{} was deleted",
                corg.metadata.namespace.as_deref().unwrap_or_default(),
                corg_name(corg)
            )
        })
    });
    crate::provider::SuspendReason {
        reason: reason.map(|r| r.chars().take(500).collect()),
        cancellation: corg
            .spec
            .gennia
            .as_ref()
            .and_then(|g| g.cancellation_reason)
            .map(|c| c.as_str().to_string()),
    }
}

/// The child's name in a migration: the object's name (1-128 characters), which never
/// changes; the org is renamed to spec.displayName right after.
pub fn migrate_name(corg: &CustomerOrg) -> String {
    corg_name(corg).chars().take(128).collect()
}

/// `namespace/name/uid`: the owner marker value. The uid makes it durable: a later object
/// with the same name (after an `Orphan` deletion) is a different owner.
pub fn owner_of(corg: &CustomerOrg) -> String {
    format!(
        "{}/{}/{}",
        corg.metadata.namespace.as_deref().unwrap_or_default(),
        corg.metadata.name.as_deref().unwrap_or_default(),
        uid(corg)
    )
}

/// An owner marker read from an org: `namespace/name/uid`, or `namespace/name` as written
/// by orgops 0.1 (no uid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerMarker {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl OwnerMarker {
    pub fn parse(value: &str) -> Option<OwnerMarker> {
        let mut parts = value.split('/');
        let namespace = parts.next().filter(|s| !s.is_empty())?.to_string();
        let name = parts.next().filter(|s| !s.is_empty())?.to_string();
        let uid = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(OwnerMarker {
            namespace,
            name,
            uid,
        })
    }

    /// Whether the marker names this very object (same uid; a legacy marker by name).
    pub fn is(&self, corg: &CustomerOrg) -> bool {
        self.namespace == corg.metadata.namespace.as_deref().unwrap_or_default()
            && self.name == corg.metadata.name.as_deref().unwrap_or_default()
            && self.uid.as_deref().is_none_or(|u| u == uid(corg))
    }

    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

pub fn uid(corg: &CustomerOrg) -> &str {
    corg.metadata.uid.as_deref().unwrap_or_default()
}

pub fn corg_name(corg: &CustomerOrg) -> &str {
    corg.metadata.name.as_deref().unwrap_or_default()
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

/// Every Secret name the spec's keys and webhooks use (defaults included).
pub fn spec_secret_names(corg: &CustomerOrg) -> BTreeSet<String> {
    corg.spec
        .api_keys
        .iter()
        .map(|k| key_secret_name(corg, k))
        .chain(
            corg.spec
                .webhooks
                .iter()
                .map(|w| webhook_secret_name(corg, w)),
        )
        .collect()
}

/// Secret names used by more than one key or webhook (defaults included). Admission
/// rejects these (CEL on the CRD); the planner refuses them too, so an object admitted
/// before the rule existed never makes two entries fight over one Secret.
pub fn secret_name_collisions(corg: &CustomerOrg) -> Vec<String> {
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in &corg.spec.api_keys {
        users
            .entry(key_secret_name(corg, k))
            .or_default()
            .push(format!("apiKeys[{}]", k.name));
    }
    for w in &corg.spec.webhooks {
        users
            .entry(webhook_secret_name(corg, w))
            .or_default()
            .push(format!("webhooks[{}]", w.name));
    }
    users
        .into_iter()
        .filter(|(_, u)| u.len() > 1)
        .map(|(name, u)| format!("Secret {name} ({})", u.join(", ")))
        .collect()
}

pub fn sorted(list: &[String]) -> Vec<String> {
    let set: BTreeSet<&String> = list.iter().collect();
    set.into_iter().cloned().collect()
}

pub fn env_of(env: KeyEnvSpec) -> KeyEnv {
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
