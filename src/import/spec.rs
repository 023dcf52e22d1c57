//! From what was read to a CustomerOrg spec: every field the provider reports that the spec
//! can express, exactly as observed, so that the operator's plan for the object is empty
//! (Observe: Ready; Full: nothing but the adoption claim). What the spec cannot express is
//! never guessed: the org is `held` in Observe with the reason, for a person to decide.
//!
//! `credits.allocated` is what the operator's first pass attributes to orgops in the child's
//! ledger (`reconcile::plan::attributed` with no record): the sum of the orgops-marked
//! allocations, the very number it compares with before a top-up, so Full moves nothing.
//! Allocations carrying metadata without the marker (made by scripts or by hand) are not
//! counted: the operator never counts them either, so adding them would make Full transfer
//! them a second time. Where the provider shows events without any metadata (issue 28,
//! row 1) the operator counts every allocation as its own, and so does the import. The
//! report lists unmarked allocations per org.

use std::collections::BTreeMap;

use crate::api::{
    AutoRefillSpec, CreditsSpec, CustomerOrgSpec, DeletionPolicy, DesiredState, GenniaRole,
    GenniaSpec, GenniaUser, ManagementPolicy, ProviderRef,
};
use crate::provider::{Capabilities, OrgStatus};
use crate::reconcile::plan::{EXTERNAL_ID_KEY, OWNER_KEY, WEBHOOK_MARKER, attributed};

use super::read::Observed;

/// What the person running the import chose.
#[derive(Clone, Debug)]
pub struct Choices {
    pub provider: String,
    pub caps: Capabilities,
    pub policy: ManagementPolicy,
    pub deletion: DeletionPolicy,
}

/// One org as a spec, with what a person must know about it.
#[derive(Clone, Debug)]
pub struct Built {
    pub spec: CustomerOrgSpec,
    /// Why the org stays in Observe whatever `--management-policy` asks: with this spec a
    /// Full pass would change something the spec cannot express.
    pub held: Vec<String>,
    /// Worth knowing, changes nothing.
    pub notes: Vec<String>,
    /// Allocations without the marker, not counted.
    pub unmarked: i64,
}

fn fits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.chars().count())
}

/// Whether `id` fits `spec.adoptOrgId` (the CRD's pattern and length).
pub fn adoptable_id(id: &str) -> bool {
    fits(id, 1, 64)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Metadata keys and values `spec.metadata` admits: keys 1-40, values 1-500, at most 48,
/// neither `externalId` nor `orgops.dev/*` (which the operator writes itself).
fn metadata(
    observed: &BTreeMap<String, String>,
    held: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in observed {
        if k == EXTERNAL_ID_KEY || k == OWNER_KEY {
            continue;
        }
        if k.starts_with("orgops.dev/") {
            held.push(format!(
                "metadata key {k:?} is reserved for orgops and cannot be in spec.metadata: a Full pass would remove it"
            ));
        } else if !fits(k, 1, 40) || !fits(v, 1, 500) {
            held.push(format!(
                "metadata key {k:?} or its value is outside spec.metadata's limits (keys 1-40, values 1-500 characters): a Full pass would remove it"
            ));
        } else if out.len() == 48 {
            held.push(format!(
                "metadata key {k:?} is past spec.metadata's 48 entries: a Full pass would remove it"
            ));
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn users(o: &Observed, held: &mut Vec<String>) -> Option<GenniaSpec> {
    let mut users: Vec<GenniaUser> = Vec::new();
    // Members come before pending invitations: a member with an invitation still pending
    // (sendInvitations) is listed once, as the member. The planner matches emails without
    // regard to case; the list is keyed by email.
    let mut seen = std::collections::BTreeSet::new();
    for u in &o.org.users {
        if !seen.insert(u.email.trim().to_lowercase()) {
            continue;
        }
        let role: Option<GenniaRole> =
            serde_json::from_value(serde_json::Value::String(u.role.clone())).ok();
        let Some(role) = role else {
            held.push(format!(
                "user {} has role {:?}, which spec.gennia.users cannot express: a Full pass would remove the user",
                u.email, u.role
            ));
            continue;
        };
        if !fits(&u.email, 3, 254) {
            held.push(format!(
                "user email {:?} is outside spec.gennia.users' 3-254 characters: a Full pass would remove the user",
                u.email
            ));
            continue;
        }
        let name = match u.name.as_deref() {
            None | Some("") => None,
            Some(n) if fits(n, 1, 200) => Some(n.to_string()),
            Some(n) => {
                held.push(format!(
                    "user {}'s name is longer than spec.gennia.users' 200 characters ({}); it is left out, which the operator reads as \"any name\"",
                    u.email,
                    n.chars().count()
                ));
                None
            }
        };
        users.push(GenniaUser {
            email: u.email.clone(),
            name,
            role,
        });
    }
    if users.len() > 200 {
        held.push(format!(
            "{} users: spec.gennia.users takes at most 200; a Full pass would remove the rest",
            users.len()
        ));
        users.truncate(200);
    }
    if !users.is_empty() && !users.iter().any(|u| u.role == GenniaRole::Admin) {
        // Admission requires an admin in a non-empty list: the spec cannot list them.
        held.push(
            "the workspace has no admin, and spec.gennia.users needs one: its users are left out, and a Full pass would remove them".into(),
        );
        users.clear();
    }
    (!users.is_empty()).then(|| GenniaSpec {
        users,
        ..Default::default()
    })
}

/// The spec for one observed org, or why none can be written.
pub fn build(o: &Observed, choices: &Choices) -> Result<Built, String> {
    let org = &o.org;
    let caps = choices.caps;
    if !adoptable_id(&org.id) {
        return Err(format!(
            "its id {:?} does not fit spec.adoptOrgId (1-64 characters of A-Z a-z 0-9 _ -), so no CustomerOrg can name it",
            org.id
        ));
    }
    let mut held = Vec::new();
    let mut notes = Vec::new();
    let display_name = if fits(&org.name, 1, 128) {
        org.name.clone()
    } else {
        held.push(format!(
            "its name ({} characters) does not fit spec.displayName's 1-128: the spec has the first 128 (or the org id), and a Full pass would rename the org",
            org.name.chars().count()
        ));
        let cut: String = org.name.chars().take(128).collect();
        if cut.trim().is_empty() {
            org.id.clone()
        } else {
            cut
        }
    };
    let external_id = match org.metadata.get(EXTERNAL_ID_KEY) {
        Some(e) if caps.find_by_external_id && fits(e, 1, 500) => Some(e.clone()),
        Some(e) => {
            held.push(format!(
                "its externalId {e:?} does not fit spec.externalId (1-500 characters): a Full pass would remove it"
            ));
            None
        }
        None => None,
    };
    let billing_email = match &org.billing_email {
        Some(b) if caps.billing_email && fits(b, 3, 254) => Some(b.clone()),
        Some(b) => {
            held.push(format!(
                "its billing email {b:?} does not fit spec.billingEmail (3-254 characters): a Full pass would clear it"
            ));
            None
        }
        None => None,
    };
    let metadata = if caps.org_metadata {
        metadata(&org.metadata, &mut held)
    } else {
        BTreeMap::new()
    };
    if let Some(marker) = org.metadata.get(OWNER_KEY) {
        notes.push(format!(
            "it carries the owner marker of {marker}, which no CustomerOrg holds any more: the imported object takes the org over (a Full pass writes its own marker)"
        ));
    }
    let state = match org.status {
        OrgStatus::Active => DesiredState::Active,
        OrgStatus::Suspended => DesiredState::Suspended,
        OrgStatus::Archived => DesiredState::Archived,
    };
    if let Some(note) = &org.billing_note {
        notes.push(format!("billing: {note}"));
    }
    let allocations = o.allocations.as_deref().unwrap_or_default();
    // What the operator's first pass reads from this ledger: the marked sum, or, where the
    // provider shows events without metadata, every allocation (`plan::attributed`, no record).
    let (marked, ledger_note) = attributed(allocations, None);
    let marked = marked.max(0);
    notes.extend(ledger_note);
    let unmarked = allocations.iter().map(|a| a.credits).sum::<i64>() - marked;
    let config = org
        .summary
        .as_ref()
        .map(|s| s.credit_config.clone())
        .unwrap_or_default();
    let auto_refill = config.refill.as_ref().map(|r| AutoRefillSpec {
        threshold: Some(i64::try_from(r.threshold).unwrap_or(i64::MAX)),
        amount: Some(i64::try_from(r.amount).unwrap_or(i64::MAX).max(1)),
    });
    if config.refill.as_ref().is_some_and(|r| r.amount == 0) {
        held.push("its auto-refill amount is 0, and spec.credits.autoRefill.amount is at least 1: a Full pass would set the refill to 1".into());
    }
    let credits = CreditsSpec {
        allocated: if caps.allocation_ledger { marked } else { 0 },
        monthly_cap: config
            .monthly_cap
            .map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
        auto_refill,
    };
    let credits = (credits != CreditsSpec::default()).then_some(credits);
    if unmarked > 0 {
        notes.push(format!(
            "{unmarked} credits were allocated to it without orgops's marker: spec.credits.allocated counts only orgops's transfers ({marked}), so they are not moved again"
        ));
    }
    for hook in o.webhooks.iter().flatten() {
        if let Some(name) = hook.metadata.get(WEBHOOK_MARKER) {
            held.push(format!(
                "webhook endpoint {} carries orgops's marker {WEBHOOK_MARKER}={name} from an earlier CustomerOrg: a Full pass deletes marked endpoints that spec.webhooks does not list",
                hook.id
            ));
        }
    }
    let gennia = if caps.users {
        users(o, &mut held)
    } else {
        None
    };
    let spec = CustomerOrgSpec {
        provider_ref: ProviderRef {
            name: choices.provider.clone(),
        },
        display_name,
        external_id,
        billing_email,
        metadata,
        state,
        adopt_org_id: Some(org.id.clone()),
        migrate_projects: Vec::new(),
        credits,
        api_keys: Vec::new(),
        webhooks: Vec::new(),
        deletion_policy: choices.deletion,
        suspend_reason: None,
        gennia,
        management_policy: if held.is_empty() {
            choices.policy
        } else {
            ManagementPolicy::Observe
        },
    };
    Ok(Built {
        spec,
        held,
        notes,
        unmarked,
    })
}

/// Whether a provider key's name fits `spec.apiKeys[].name` (1-120 of a-z 0-9 - ., starting
/// and ending with a letter or digit), so the key can be rotated into a Secret by name.
pub fn key_name_fits(name: &str) -> bool {
    let b = name.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.';
    let edge = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=120).contains(&b.len()) && b.iter().all(inner) && edge(b.first()) && edge(b.last())
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
