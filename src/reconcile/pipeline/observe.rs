//! Observe, the first stage of a CustomerOrg's pass: which org this object manages, the
//! Secrets it names (the owned-Secret cache where it agrees with the status), and only the
//! provider lists the plan needs (`plan::reads`).

use std::collections::BTreeMap;

use crate::api::CustomerOrg;
use crate::provider::error::ProviderError;
use crate::provider::{Org, OrgStatus};

use super::super::claims::Identity;
use super::super::plan::{self, Found, Observed, Reads, SecretSeen};
use super::super::{Context, ReconcileError, owners, secrets};
use super::observing;

pub(super) enum Observation {
    Ready(Box<Observed>),
    Failed(ProviderError),
}

/// Reads the org with its summary when a lookup returned list rows without one.
async fn with_summary(ctx: &Context, orgs: Vec<Org>) -> Result<Vec<Org>, ProviderError> {
    match orgs.as_slice() {
        [one] if one.summary.is_none() => {
            Ok(ctx.provider.get_org(&one.id).await?.into_iter().collect())
        }
        _ => Ok(orgs),
    }
}

/// Which org this object manages: status.orgId, spec.adoptOrgId, its own owner marker
/// (created by a pass whose status write never happened), spec.externalId, or none.
async fn find(
    ctx: &Context,
    corg: &CustomerOrg,
) -> Result<Result<Found, ProviderError>, ReconcileError> {
    let provider = ctx.provider.as_ref();
    let caps = provider.capabilities();
    if let Some(id) = corg.status.as_ref().and_then(|s| s.org_id.clone()) {
        let org = match provider.get_org(&id).await {
            Ok(org) => org,
            Err(e) => return Ok(Err(e)),
        };
        // Tracked, but another live object's marker (or, where orgs carry no metadata, its
        // claim on the org's name) is on it: that object owns it.
        if let Some(org) = &org
            && let Some(other) = owned_elsewhere(ctx, corg, org).await?
        {
            return Ok(Ok(Found::ById {
                org: Some(org.clone()),
                claimed_by: Some(other),
            }));
        }
        return Ok(Ok(Found::Tracked(org)));
    }
    if let Some(id) = &corg.spec.adopt_org_id {
        let org = match provider.get_org(id).await {
            Ok(org) => org,
            Err(e) => return Ok(Err(e)),
        };
        let claimed_by = match &org {
            Some(org) => owned_elsewhere(ctx, corg, org).await?,
            None => None,
        };
        return Ok(Ok(Found::ById { org, claimed_by }));
    }
    if caps.org_metadata {
        let mine = match provider.find_orgs_by_owner(&plan::owner_of(corg)).await {
            Ok(orgs) => orgs,
            Err(e) => return Ok(Err(e)),
        };
        if !mine.is_empty() {
            return Ok(with_summary(ctx, mine).await.map(Found::ByOwner));
        }
    }
    if caps.find_by_name {
        // No metadata to hold a marker: the name identifies the org (unique per parent),
        // and this object's claim on a name says which org it took, whatever the spec
        // says now (a rename Gennia cannot apply, then a lost status).
        for identity in ctx.claims.held(corg).await? {
            let Identity::Name(name) = identity else {
                continue;
            };
            match provider.find_orgs_by_name(&name).await {
                Ok(orgs) if !orgs.is_empty() => return Ok(Ok(Found::ByOwner(orgs))),
                Ok(_) => {}
                Err(e) => return Ok(Err(e)),
            }
        }
        let orgs = match provider.find_orgs_by_name(&corg.spec.display_name).await {
            Ok(orgs) => orgs,
            Err(e) => return Ok(Err(e)),
        };
        let claimed_by = match orgs.as_slice() {
            [one] => owned_elsewhere(ctx, corg, one).await?,
            _ => None,
        };
        return Ok(Ok(Found::ByExternalId { orgs, claimed_by }));
    }
    if let (Some(ext), true) = (&corg.spec.external_id, caps.find_by_external_id) {
        let orgs = match provider.find_orgs_by_external_id(ext).await {
            Ok(orgs) => orgs,
            Err(e) => return Ok(Err(e)),
        };
        let claimed_by = match orgs.as_slice() {
            [one] => owned_elsewhere(ctx, corg, one).await?,
            _ => None,
        };
        return Ok(with_summary(ctx, orgs)
            .await
            .map(|orgs| Found::ByExternalId { orgs, claimed_by }));
    }
    Ok(Ok(Found::Nothing))
}

/// Another live CustomerOrg that owns `org`: by the owner marker, or, where orgs carry no
/// metadata, by the claim on its name (`namespace/name`).
async fn owned_elsewhere(
    ctx: &Context,
    corg: &CustomerOrg,
    org: &Org,
) -> Result<Option<String>, ReconcileError> {
    if ctx.provider.capabilities().org_metadata {
        return Ok(owners::claimed_by(&ctx.client, corg, org).await?);
    }
    Ok(ctx
        .claims
        .taken_by(corg, &Identity::Name(org.name.clone()))
        .await?)
}

/// The id the status records for the key or webhook whose Secret is `name`.
pub(super) fn recorded_id<'a>(corg: &'a CustomerOrg, name: &str) -> Option<&'a str> {
    let st = corg.status.as_ref()?;
    st.api_keys
        .iter()
        .find(|k| k.secret_name == name)
        .map(|k| k.id.as_str())
        .or_else(|| {
            st.webhooks
                .iter()
                .find(|w| w.secret_name == name)
                .map(|w| w.id.as_str())
        })
        .filter(|id| !id.is_empty())
}

/// The cached view of a named Secret, when it can stand in for a read (#18: no Secret
/// GETs for a converged object's passes): controlled by this object and holding the id the
/// status records. Every write of ours that changes what a pass reads from a Secret (its
/// id, its rotated-for mark) writes a new id, which the status being planned from
/// already records: a cache behind our own write disagrees and the Secret is read. Missing,
/// another's, or anything else: read (a name missing from the cache may be someone
/// else's Secret, which only a read tells). Deep checks always read.
pub(super) fn trusted(cached: Option<SecretSeen>, recorded: Option<&str>) -> Option<SecretSeen> {
    match (&cached, recorded) {
        (Some(SecretSeen::Owned { id: Some(id), .. }), Some(r)) if id == r => cached,
        _ => None,
    }
}

pub(super) async fn observe(
    ctx: &Context,
    corg: &CustomerOrg,
) -> Result<Observation, ReconcileError> {
    let provider = ctx.provider.as_ref();
    let caps = provider.capabilities();
    let found = match find(ctx, corg).await? {
        Ok(found) => found,
        Err(e) => return Ok(Observation::Failed(e)),
    };
    let secret_api = secrets::api(corg, &ctx.client);
    let mut names: Vec<String> = corg
        .spec
        .api_keys
        .iter()
        .map(|k| plan::key_secret_name(corg, k))
        .collect();
    names.extend(
        corg.spec
            .webhooks
            .iter()
            .map(|w| plan::webhook_secret_name(corg, w)),
    );
    if let Some(st) = &corg.status {
        names.extend(st.api_keys.iter().map(|k| k.secret_name.clone()));
        names.extend(st.webhooks.iter().map(|w| w.secret_name.clone()));
    }
    names.sort();
    names.dedup();
    let mut seen = BTreeMap::new();
    for name in names {
        let cached = (!ctx.deep).then(|| ctx.owned.seen(corg, &name)).flatten();
        let s = match trusted(cached, recorded_id(corg, &name)) {
            Some(s) => s,
            None => secrets::seen(&secret_api, corg, &name).await?,
        };
        seen.insert(name, s);
    }
    let owned = ctx.owned.owned(corg);

    let org = match &found {
        Found::Tracked(Some(o))
        | Found::ById {
            org: Some(o),
            claimed_by: None,
        } => Some(o),
        Found::ByOwner(orgs)
        | Found::ByExternalId {
            orgs,
            claimed_by: None,
        } if orgs.len() == 1 => orgs.first(),
        _ => None,
    };
    let mut obs = Observed {
        found: found.clone(),
        keys: None,
        webhooks: None,
        ledger: None,
        ledger_note: None,
        secrets: seen,
        owned,
        capabilities: caps,
    };
    let Some(org) = org else {
        return Ok(Observation::Ready(Box::new(obs)));
    };
    if org.status == OrgStatus::Archived || corg.spec.state == crate::api::DesiredState::Archived {
        return Ok(Observation::Ready(Box::new(obs)));
    }
    // A newly found or adopted org has no bookkeeping: read everything once. Observe
    // keeps no bookkeeping of its own and reports every difference: it always reads all.
    let deep = ctx.deep || observing(corg) || !matches!(found, Found::Tracked(_));
    let reads: Reads = plan::reads(corg, &obs.secrets, &obs.owned, &caps, deep);
    if reads.keys {
        match provider.list_keys(&org.id).await {
            Ok(keys) => obs.keys = Some(keys),
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    if reads.webhooks {
        match provider.list_webhooks(&org.id).await {
            Ok(hooks) => obs.webhooks = Some(hooks),
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    if reads.ledger {
        match provider.list_allocations(&org.id).await {
            Ok(rows) => {
                let recorded = corg
                    .status
                    .as_ref()
                    .and_then(|s| s.credits.as_ref())
                    .map(|c| c.allocated);
                let (sum, note) = plan::attributed(&rows, recorded);
                obs.ledger = Some(sum);
                obs.ledger_note = note;
            }
            Err(e) => return Ok(Observation::Failed(e)),
        }
    }
    Ok(Observation::Ready(Box::new(obs)))
}
