//! Which reads beyond the org itself a pass needs. Steady state needs none; a deep check
//! (every verify interval, see the runtime) reads everything to notice out-of-band
//! changes the org's summary cannot show (a deleted endpoint, a revoked key).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::CustomerOrg;
use crate::provider::Capabilities;

use super::{
    OwnedRole, OwnedSecret, SecretSeen, desired_allocated, key_hash, key_secret_name,
    rotation_pending, webhook_hash, webhook_secret_name,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    pub keys: bool,
    pub webhooks: bool,
    pub ledger: bool,
}

impl Reads {
    pub fn all(caps: &Capabilities) -> Reads {
        Reads {
            keys: caps.child_api_keys,
            webhooks: caps.webhooks,
            ledger: caps.allocation_ledger,
        }
    }
}

pub fn reads(
    corg: &CustomerOrg,
    secrets: &BTreeMap<String, SecretSeen>,
    owned: &[OwnedSecret],
    caps: &Capabilities,
    deep: bool,
) -> Reads {
    if deep {
        return Reads::all(caps);
    }
    let default_status = Default::default();
    let status = corg.status.as_ref().unwrap_or(&default_status);
    let secret_ok = |name: &str, id: &str| matches!(secrets.get(name), Some(SecretSeen::Owned { id: Some(got), .. }) if got == id);
    let spec_secrets = super::spec_secret_names(corg);
    let unclaimed = |webhook: bool| {
        owned.iter().any(|o| {
            matches!(o.role, OwnedRole::Webhook { .. }) == webhook
                && !spec_secrets.contains(&o.secret_name)
        })
    };
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
        || unclaimed(false)
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
        .any(|s| !spec_hooks.contains(s.name.as_str()))
        || unclaimed(true)
        // An endpoint whose create answer was lost is known only by its own marker: every
        // pass lists endpoints until the object is Ready at its generation, so a spec that
        // drops such a webhook (a new generation) always has its endpoints listed.
        || !super::was_ready_at_this_generation(corg);
    // Only a possible top-up needs the ledger: a lowered target moves nothing.
    let wanted = desired_allocated(corg);
    let ledger = match &status.credits {
        Some(c) => c.allocated < wanted,
        None => wanted > 0,
    };
    Reads {
        keys: caps.child_api_keys && keys_differ,
        webhooks: caps.webhooks && hooks_differ,
        ledger: caps.allocation_ledger && ledger,
    }
}
