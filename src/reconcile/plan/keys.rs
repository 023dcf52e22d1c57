//! API keys: mint, replace on a scope/env change, rotate, recover a lost Secret, revoke.
//! Keys carry no metadata at the provider, so a key is this object's only when something of
//! this object's names it: the status records its id, a Secret it controls names its id,
//! it is the predecessor or successor of such a key in a rotation, or a claim Secret of
//! this object (written empty before a mint, `secrets::claim`) stands for a mint under its
//! name whose answer was lost. Any other key, even one under a spec entry's name (minted by
//! the customer), is left alone: never revoked, replaced or rotated into a Secret.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::CustomerOrg;
use crate::provider::{ApiKey, IdempotencyKey, KeyStatus, NewApiKey};
use crate::reconcile::idempotency::derive;

use super::{
    Action, Observed, OwnedRole, Plan, SecretSeen, env_of, key_hash, key_secret_name,
    rotation_pending, sorted, uid,
};

/// The rotated key id is part of the key: one rotate-keys value rotates each key once,
/// and a value reused later (on another key id) is a new request, not a conflicting one.
fn rotate_key(uid: &str, name: &str, value: &str, key_id: &str) -> IdempotencyKey {
    derive(&[uid, "rotate", name, value, key_id])
}

/// The Secret this CustomerOrg may write at `secret_name`, or `None` (and Stalled) when
/// another owner controls it: such a Secret is never overwritten.
pub(super) fn usable_secret(
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
        plan.stall(
            "SecretConflict",
            format!("Secret {secret_name} exists and is not owned by this CustomerOrg; it is never overwritten: delete it or set {field}.secretName"),
        );
        return None;
    }
    Some(seen)
}

/// Of several provider objects with one name, the one the Secret points at, else the one
/// status records, else the first; the others are extras.
pub(super) fn kept<'a, T>(
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

/// Deletes each named Secret once, and only one this CustomerOrg owns.
pub(super) fn delete_owned_secrets(
    obs: &Observed,
    names: impl IntoIterator<Item = String>,
    plan: &mut Plan,
) {
    let owned: BTreeSet<&str> = obs.owned.iter().map(|o| o.secret_name.as_str()).collect();
    for name in names.into_iter().collect::<BTreeSet<_>>() {
        let ours = matches!(obs.secrets.get(&name), Some(SecretSeen::Owned { .. }))
            || (!matches!(obs.secrets.get(&name), Some(SecretSeen::Foreign))
                && owned.contains(name.as_str()));
        let planned = plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::DeleteSecret { name: n } if *n == name));
        if ours && !planned {
            plan.actions.push(Action::DeleteSecret { name });
        }
    }
}

fn is_current(k: &ApiKey) -> bool {
    k.status == KeyStatus::Active && k.superseded_by.is_none()
}

/// The ids of the keys this object can show are its own (see the module comment).
fn provable(corg: &CustomerOrg, keys: &[ApiKey], obs: &Observed) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = BTreeSet::new();
    if let Some(status) = &corg.status {
        ids.extend(status.api_keys.iter().map(|k| k.id.clone()));
    }
    let mut claimed_names: BTreeSet<String> = BTreeSet::new();
    for owned in &obs.owned {
        if let OwnedRole::Key { name, id, replaced } = &owned.role {
            match id {
                Some(id) => {
                    ids.insert(id.clone());
                }
                None => claimed_names.extend(name.clone()),
            }
            ids.extend(replaced.iter().cloned());
        }
    }
    for seen in obs.secrets.values() {
        if let SecretSeen::Owned { id: Some(id), .. } = seen {
            ids.insert(id.clone());
        }
    }
    // A Secret the spec names that holds only a claim (no id yet): the claim's name is the
    // spec entry's, and its mint's answer may have been lost.
    for spec in &corg.spec.api_keys {
        if matches!(
            obs.secrets.get(&key_secret_name(corg, spec)),
            Some(SecretSeen::Owned { id: None, .. })
        ) {
            claimed_names.insert(spec.name.clone());
        }
    }
    ids.retain(|id| !id.is_empty());
    ids.extend(
        keys.iter()
            .filter(|k| claimed_names.contains(&k.name))
            .map(|k| k.id.clone()),
    );
    // Rotation chains: a key superseded by one of ours, or superseding one of ours.
    loop {
        let more: Vec<String> = keys
            .iter()
            .filter(|k| !ids.contains(&k.id))
            .filter(|k| {
                k.superseded_by.as_ref().is_some_and(|s| ids.contains(s))
                    || keys.iter().any(|o| {
                        ids.contains(&o.id) && o.superseded_by.as_deref() == Some(k.id.as_str())
                    })
            })
            .map(|k| k.id.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        ids.extend(more);
    }
    ids
}

pub(super) fn plan_keys(corg: &CustomerOrg, keys: &[ApiKey], obs: &Observed, plan: &mut Plan) {
    let default_status = Default::default();
    let status = corg.status.as_ref().unwrap_or(&default_status);
    let uid = uid(corg);
    let rotation = rotation_pending(corg);
    let mut rotation_complete = true;
    let mut kept_ids = BTreeSet::new();
    let mut stale_secrets = Vec::new();
    let ours = provable(corg, keys, obs);
    let foreign: Vec<&ApiKey> = keys
        .iter()
        .filter(|k| is_current(k) && !ours.contains(&k.id))
        .filter(|k| corg.spec.api_keys.iter().any(|s| s.name == k.name))
        .collect();
    if !foreign.is_empty() {
        let ids: Vec<&str> = foreign.iter().map(|k| k.id.as_str()).collect();
        plan.notes.push(format!(
            "key(s) {} carry a spec.apiKeys name but nothing of this object names them (minted outside orgops?): left alone",
            ids.join(", ")
        ));
    }
    let keys_all = keys;
    let keys: Vec<ApiKey> = keys
        .iter()
        .filter(|k| ours.contains(&k.id))
        .cloned()
        .collect();
    let keys = keys.as_slice();
    for spec in &corg.spec.api_keys {
        let secret_name = key_secret_name(corg, spec);
        let field = format!("spec.apiKeys[{}]", spec.name);
        let Some(seen) = usable_secret(&obs.secrets, &secret_name, &field, plan) else {
            rotation_complete = false;
            continue;
        };
        let (secret_id, secret_rotated_for) = match &seen {
            SecretSeen::Owned { id, rotated_for } => (id.clone(), rotated_for.clone()),
            _ => (None, None),
        };
        let recorded = status.api_keys.iter().find(|s| s.name == spec.name);
        let named: Vec<&ApiKey> = keys.iter().filter(|k| k.name == spec.name).collect();
        // Counted over every key of the name, the customer's too: the mint key is the one
        // an earlier pass that saw the same keys used.
        let named_all = keys_all.iter().filter(|k| k.name == spec.name).count();
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
        // A replacement is keyed by the key it replaces: a retry after a lost answer (the
        // new key then named by nothing of ours yet) replays it instead of minting another.
        let mint = |plan: &mut Plan, replaces: Option<&str>| {
            let count = named_all.to_string();
            let nth = match replaces {
                Some(old) => format!("replaces {old}"),
                None => count,
            };
            plan.actions.push(Action::MintKey {
                name: spec.name.clone(),
                new: NewApiKey {
                    name: spec.name.clone(),
                    scopes: scopes.clone(),
                    env,
                },
                secret_name: secret_name.clone(),
                spec_hash: spec_hash.clone(),
                rotation: rotation.clone(),
                claim: seen == SecretSeen::Missing,
                replaces: named
                    .iter()
                    .filter(|k| k.status == KeyStatus::Active)
                    .map(|k| k.id.clone())
                    .collect(),
                key: derive(&[
                    uid,
                    "mint",
                    &spec.name,
                    &scopes.join(","),
                    &format!("{env:?}"),
                    &nth,
                ]),
            });
        };
        match keep {
            None => mint(plan, None),
            Some(cur) if sorted(&cur.scopes) != scopes || cur.env != env => {
                // Scopes and env cannot be edited at the provider: mint a replacement, then revoke.
                kept_ids.insert(cur.id.clone());
                mint(plan, Some(&cur.id));
                plan.actions.push(Action::RevokeKey {
                    name: spec.name.clone(),
                    key_id: cur.id.clone(),
                });
            }
            Some(cur) if secret_id.as_deref() == Some(cur.id.as_str()) => {
                kept_ids.insert(cur.id.clone());
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
                        rotation: Some(value.clone()),
                        recover: false,
                        key: rotate_key(uid, &spec.name, value, &cur.id),
                    });
                }
            }
            Some(cur) => {
                kept_ids.insert(cur.id.clone());
                // A key without its Secret. A rotation whose response was lost is replayed
                // on the superseded key the Secret still names.
                let lost_rotation = rotation.as_ref().and_then(|value| {
                    named
                        .iter()
                        .find(|k| {
                            Some(&k.id) == secret_id.as_ref()
                                && k.superseded_by.as_deref() == Some(cur.id.as_str())
                        })
                        .map(|old| (old.id.clone(), value.clone()))
                });
                let (key_id, key, rotation_value, recover) = match lost_rotation {
                    Some((old_id, value)) => {
                        let key = rotate_key(uid, &spec.name, &value, &old_id);
                        (old_id, key, Some(value), false)
                    }
                    // Otherwise the Secret was lost: rotate, so whoever still holds the
                    // old secret keeps working through the provider's grace window.
                    None => (
                        cur.id.clone(),
                        derive(&[uid, "recover", &spec.name, &cur.id]),
                        rotation.clone(),
                        true,
                    ),
                };
                plan.actions.push(Action::RotateKey {
                    name: spec.name.clone(),
                    key_id,
                    secret_name: secret_name.clone(),
                    spec_hash,
                    rotation: rotation_value,
                    recover,
                    key,
                });
            }
        }
        if let Some(old) = recorded
            && old.secret_name != secret_name
        {
            stale_secrets.push(old.secret_name.clone());
        }
    }
    plan_removed(corg, keys, obs, &kept_ids, stale_secrets, plan);
    if let Some(value) = rotation
        && rotation_complete
    {
        // Rotations planned above complete it; a freshly minted key needs none.
        plan.actions.push(Action::MarkRotated { value });
    }
}

/// Keys whose spec entry is gone: named by the status, or by a Secret this object
/// controls that no spec entry uses any more. Their active keys are revoked, then their
/// Secrets deleted (the Secret stays as the marker until the revoke succeeded).
fn plan_removed(
    corg: &CustomerOrg,
    keys: &[ApiKey],
    obs: &Observed,
    kept_ids: &BTreeSet<String>,
    mut stale_secrets: Vec<String>,
    plan: &mut Plan,
) {
    let spec_names: BTreeSet<&str> = corg.spec.api_keys.iter().map(|k| k.name.as_str()).collect();
    let spec_secrets = super::spec_secret_names(corg);
    let mut gone_names: BTreeSet<String> = BTreeSet::new();
    let mut gone_ids: BTreeSet<String> = BTreeSet::new();
    if let Some(status) = &corg.status {
        for rec in status
            .api_keys
            .iter()
            .filter(|s| !spec_names.contains(s.name.as_str()))
        {
            gone_names.insert(rec.name.clone());
            stale_secrets.push(rec.secret_name.clone());
        }
    }
    for owned in &obs.owned {
        let OwnedRole::Key { name, id, .. } = &owned.role else {
            continue;
        };
        if spec_secrets.contains(&owned.secret_name) {
            continue;
        }
        // A spec entry that moved to another Secret keeps its key; only the Secret goes.
        match name {
            Some(n) if spec_names.contains(n.as_str()) => {}
            Some(n) => {
                gone_names.insert(n.clone());
            }
            None => {}
        }
        if let Some(id) = id
            && !kept_ids.contains(id)
            && name.as_deref().is_none_or(|n| !spec_names.contains(n))
        {
            gone_ids.insert(id.clone());
        }
        stale_secrets.push(owned.secret_name.clone());
    }
    let planned = |plan: &Plan, id: &str| {
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::RevokeKey { key_id, .. } if key_id == id))
    };
    for k in keys.iter().filter(|k| {
        k.status == KeyStatus::Active
            && !kept_ids.contains(&k.id)
            && (gone_names.contains(&k.name) || gone_ids.contains(&k.id))
    }) {
        if !planned(plan, &k.id) {
            plan.actions.push(Action::RevokeKey {
                name: k.name.clone(),
                key_id: k.id.clone(),
            });
        }
    }
    stale_secrets.retain(|s| !spec_secrets.contains(s));
    delete_owned_secrets(obs, stale_secrets, plan);
}
