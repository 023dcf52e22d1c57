// Over 600 lines: the Action type (every verb's fields, documented) and the planner's order of steps; each step's logic is in its own file beside it.
//! The planner: a pure function from the desired CustomerOrg and what was observed to an
//! ordered list of actions. No I/O here, so every combination is unit-testable.
//!
//! One plan per pass, built from small steps, each owning one concern:
//! `org` (identity, lifecycle, name/metadata), `credits` (credit config, allocation),
//! `keys`, `webhooks`; `reads` decides what to observe; `naming` derives names and markers.
//! What orgops created is decided from durable markers (the owner marker with the object's
//! uid on the org, owned Secrets' annotations, endpoint metadata), never from the status it
//! last managed to write (docs/architecture.md, "Exactly once").

use std::collections::BTreeMap;

use crate::api::conditions::{self, READY, STALLED};
use crate::api::{CustomerOrg, DesiredState};
use crate::provider::{
    ApiKey, Capabilities, CreditConfig, IdempotencyKey, LedgerAllocation, NewApiKey, NewOrg,
    NewWebhook, Org, OrgPatch, OrgStatus, OrgSummary, WebhookEndpoint, WebhookPatch,
};

mod credits;
mod drift;
mod keys;
mod naming;
mod org;
mod reads;
mod users;
mod webhooks;

pub use credits::allocation_key;
pub use drift::{drifted_fields, field_of};
pub use naming::*;
pub use reads::{Reads, reads};

/// Stalled reason for an API rejection (kept until the spec changes).
pub const REASON_API_REJECTED: &str = "ApiRejected";
/// Ready=False reason while the provider cannot suspend the org in its present state
/// (Gennia: only an active workspace), so the suspend waits unsent.
pub const REASON_NOT_SUSPENDABLE: &str = "NotSuspendable";
/// Stalled reason when the provider refuses every change to a suspended org but resume and
/// archive (issue 28): the changes wait for `spec.state: active` (kept until the spec
/// changes, like [`REASON_API_REJECTED`]).
pub const REASON_SUSPENDED_READ_ONLY: &str = "SuspendedOrgReadOnly";
/// Stalled reason when the parent cannot fund a top-up (the provider answered 402): not
/// gated, retried when the parent's balance rises (`runtime::funds`) or slowly.
pub const REASON_INSUFFICIENT_CREDITS: &str = "InsufficientCredits";
/// Stalled reason of a top-up a guardrail of the OrgProvider holds (nothing was sent).
pub const REASON_CREDITS_HELD: &str = "CreditsHeld";
/// Ready=False reason under managementPolicy Observe when the org differs from the spec.
pub const REASON_DRIFTED: &str = "Drifted";
/// Ready=False reason of a pass whose writes restored out-of-band changes at a generation
/// that was Ready: the next pass still calls what differs drift.
pub const REASON_CORRECTING_DRIFT: &str = "CorrectingDrift";

/// How the org was found.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    /// status.orgId read back; `None` means the provider answered 404.
    Tracked(Option<Org>),
    /// spec.adoptOrgId read back; `claimed_by` names another CustomerOrg owning it.
    ById {
        org: Option<Org>,
        claimed_by: Option<String>,
    },
    /// Live orgs carrying this object's owner marker (its uid): created by an earlier pass
    /// whose status write never happened. Never empty.
    ByOwner(Vec<Org>),
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

/// What a Secret controlled by this object holds, from its annotations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedRole {
    /// A key Secret: `name` is the spec.apiKeys entry (absent on Secrets written by 0.1);
    /// `replaced`: keys of the entry it replaced whose revoke may still be pending
    /// (`orgops.dev/replaces`).
    Key {
        name: Option<String>,
        id: Option<String>,
        replaced: Vec<String>,
    },
    Webhook {
        name: Option<String>,
        id: Option<String>,
    },
}

/// A durable marker in the cluster: a Secret this object controls (owner uid), found
/// whatever the status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedSecret {
    pub secret_name: String,
    pub role: OwnedRole,
}

/// Everything read for one reconcile. `None` lists were not read (not needed).
#[derive(Clone, Debug)]
pub struct Observed {
    pub found: Found,
    pub keys: Option<Vec<ApiKey>>,
    pub webhooks: Option<Vec<WebhookEndpoint>>,
    /// Credits orgops moved into the child, from its ledger ([`attributed`]).
    pub ledger: Option<i64>,
    /// How `ledger` was found when the ledger could not say (see [`attributed`]).
    pub ledger_note: Option<String>,
    /// The Secrets named by the spec and the status, read from the API.
    pub secrets: BTreeMap<String, SecretSeen>,
    /// Every Secret this object controls (a cache; may lag a fresh write).
    pub owned: Vec<OwnedSecret>,
    pub capabilities: Capabilities,
}

/// The sum of orgops-marked allocations (rule 3); refills and usage never count.
pub fn marked_sum(rows: &[LedgerAllocation]) -> i64 {
    rows.iter()
        .filter(|r| {
            r.metadata
                .as_ref()
                .and_then(|m| m.get(ALLOCATION_MARKER))
                .map(String::as_str)
                == Some("true")
        })
        .map(|r| r.credits)
        .sum()
}

/// The credits orgops moved into the org, and, when the ledger could not say, how that
/// figure was found (for Ready's message).
///
/// Every allocation event carries metadata: the marked sum (rule 3). Some carry none at
/// all (a provider that does not show a transfer's metadata on its events, issue 28): the
/// ledger cannot tell orgops' transfers from refills or a person's, so the durable record is
/// orgops' own: `recorded`, the `status.credits.allocated` its transfers' answers set
/// (a lost status write leaves it behind, and the next top-up then reuses the idempotency
/// key of the one it lost, `(org, recorded sum)`, so the provider replays it instead of
/// moving money again). With no record at all (a rebuilt cluster, or a first look at an
/// adopted org), every unattributable allocation is counted as orgops': top-ups are then at
/// most what the spec asks, never more (at worst fewer, when others allocated too).
pub fn attributed(rows: &[LedgerAllocation], recorded: Option<i64>) -> (i64, Option<String>) {
    let marked = marked_sum(rows);
    let bare: Vec<i64> = rows
        .iter()
        .filter(|r| r.metadata.as_ref().is_none_or(BTreeMap::is_empty) && r.credits > 0)
        .map(|r| r.credits)
        .collect();
    if bare.is_empty() {
        return (marked, None);
    }
    let total: i64 = bare.iter().sum();
    let why = format!(
        "the provider's ledger shows {} allocation(s) of {total} credits without metadata, so it cannot say which orgops made",
        bare.len()
    );
    match recorded {
        Some(r) => (
            r.max(marked),
            Some(format!(
                "{why}; orgops counts the {} credits its own transfers recorded (status.credits.allocated)",
                r.max(marked)
            )),
        ),
        None => (
            marked + total,
            Some(format!(
                "{why}, and this object has no record of its transfers (a rebuilt cluster or an adopted org): all {} credits count as moved by orgops, so a top-up never exceeds spec.credits.allocated",
                marked + total
            )),
        ),
    }
}

/// One step, executed in order by `apply`.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    CreateOrg {
        new: NewOrg,
        key: IdempotencyKey,
    },
    /// Create the org by moving the parent's flat `projects` into one new child named
    /// `name` (see `migrate_name`); tagged and renamed by the follow-ups.
    MigrateProjects {
        projects: Vec<String>,
        name: String,
        key: IdempotencyKey,
    },
    /// Absolute state: sent without an idempotency key (see `Provider::update_org`).
    UpdateOrg {
        patch: OrgPatch,
    },
    Resume,
    Suspend,
    Archive,
    SetCreditConfig {
        config: CreditConfig,
    },
    /// Top the child up from `ledger` (the marked sum observed) to `target`.
    Allocate {
        credits: u64,
        ledger: i64,
        target: i64,
        key: IdempotencyKey,
    },
    /// Mint a key for a spec entry that has none. `rotation`: the pending rotate-keys
    /// value, recorded on the Secret (a fresh key needs no rotation). `claim`: the Secret
    /// is missing, so it is first written empty, naming the key: keys carry no metadata at
    /// the provider, and without that marker a key whose answer was lost (a crash, a
    /// timeout) would be nobody's to revoke once the spec drops it.
    MintKey {
        name: String,
        new: NewApiKey,
        secret_name: String,
        spec_hash: String,
        rotation: Option<String>,
        claim: bool,
        /// This entry's earlier keys still active (replaced, their revoke next): the Secret
        /// records them, the durable proof they are this object's to revoke.
        replaces: Vec<String>,
        key: IdempotencyKey,
    },
    /// Rotate `key_id` and write the new secret. `rotation: Some(value)` rotates for the
    /// rotate-keys value (recorded on the Secret so a retried half-done pass skips this
    /// key); `recover: true` replaces a key whose Secret was lost: the old secret keeps
    /// working through the provider's grace window instead of being cut off.
    RotateKey {
        name: String,
        key_id: String,
        secret_name: String,
        spec_hash: String,
        rotation: Option<String>,
        recover: bool,
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
        /// The pass observed no Secret of that name: the signing secret's write creates
        /// it without reading it first.
        absent: bool,
        spec_hash: String,
        key: IdempotencyKey,
    },
    UpdateWebhook {
        name: String,
        id: String,
        patch: WebhookPatch,
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
    /// Set a user's role and name (providers with `Capabilities::users`).
    UpdateUser {
        email: String,
        user_id: String,
        name: Option<String>,
        role: String,
    },
    /// Remove a user no longer in the spec (never the last admin).
    RemoveUser {
        email: String,
        user_id: String,
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

    /// Whether the action destroys something at the provider: it needs a proof that the
    /// org is this object's (`provider::owned`), read in the same pass.
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Action::Suspend
                | Action::Archive
                | Action::RevokeKey { .. }
                | Action::DeleteWebhook { .. }
                | Action::RemoveUser { .. }
        )
    }

    /// A provider write sent under an idempotency key: a refusal the provider stores
    /// under that key is what a retry with it gets back.
    pub fn is_keyed(&self) -> bool {
        matches!(
            self,
            Action::CreateOrg { .. }
                | Action::MigrateProjects { .. }
                | Action::Allocate { .. }
                | Action::MintKey { .. }
                | Action::RotateKey { .. }
                | Action::CreateWebhook { .. }
                | Action::RotateWebhookSecret { .. }
        )
    }

    /// A provider write other than a lifecycle change (resume, suspend, archive).
    pub fn changes_the_org(&self) -> bool {
        self.is_write()
            && !matches!(
                self,
                Action::Resume | Action::Suspend | Action::Archive | Action::DeleteSecret { .. }
            )
    }
}

/// The planner's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The org the actions apply to (absent when it must be created).
    pub org: Option<Org>,
    /// Set when this plan takes over an org it did not track: (Event reason, how).
    pub adopted: Option<(String, String)>,
    pub actions: Vec<Action>,
    /// Why a human is needed (reason, message); the first one wins.
    pub stalled: Option<(String, String)>,
    /// Something the spec asks that the provider cannot do in the org's present state
    /// (reason, message): nothing is sent for it, the object says so and looks again at
    /// its next resync.
    pub waiting: Option<(String, String)>,
    /// Things worth saying that do not block readiness.
    pub notes: Vec<String>,
    /// Out-of-band changes being corrected (for the DriftCorrected event).
    pub drift: Vec<String>,
    /// The org is created by this plan and its follow-ups were planned against the known
    /// empty new org: when every action succeeds, their answers are the observation.
    pub fresh: bool,
}

impl Plan {
    fn stall(&mut self, reason: &str, message: String) {
        self.stalled.get_or_insert((reason.to_string(), message));
    }
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
        && (stalled.reason == REASON_API_REJECTED || stalled.reason == REASON_SUSPENDED_READ_ONLY)
        && stalled.observed_generation == corg.metadata.generation)
        .then_some(Gate::Rejected)
}

/// The spec fields this provider cannot honour (its `Capabilities`).
pub fn unsupported(corg: &CustomerOrg, caps: &Capabilities) -> Vec<&'static str> {
    let credits = corg.spec.credits.as_ref();
    [
        (
            !corg.spec.api_keys.is_empty() && !caps.child_api_keys,
            "spec.apiKeys",
        ),
        (
            !corg.spec.webhooks.is_empty() && !caps.webhooks,
            "spec.webhooks",
        ),
        (
            credits.is_some_and(|c| c.allocated > 0) && !caps.allocation_ledger,
            "spec.credits.allocated",
        ),
        (
            credits.is_some_and(|c| c.monthly_cap.is_some()) && !caps.credit_config,
            "spec.credits.monthlyCap",
        ),
        (
            credits.is_some_and(|c| c.auto_refill.is_some()) && !caps.credit_config,
            "spec.credits.autoRefill",
        ),
        (
            corg.spec.state == DesiredState::Suspended && !caps.suspend,
            "spec.state: suspended",
        ),
        (
            corg.spec.state == DesiredState::Archived && !caps.archive,
            "spec.state: archived",
        ),
        (
            !corg.spec.migrate_projects.is_empty() && !caps.migrate_projects,
            "spec.migrateProjects",
        ),
        (corg.spec.gennia.is_some() && !caps.users, "spec.gennia"),
        (
            corg.spec.external_id.is_some() && !caps.org_metadata,
            "spec.externalId",
        ),
        (
            !corg.spec.metadata.is_empty() && !caps.org_metadata,
            "spec.metadata",
        ),
        (
            corg.spec.billing_email.is_some() && !caps.billing_email,
            "spec.billingEmail",
        ),
    ]
    .into_iter()
    .filter_map(|(bad, field)| bad.then_some(field))
    .collect()
}

/// Checked before observing, like the gate: a spec the planner will refuse costs no
/// API call, and nothing is half-applied. Admission rejects what CEL can see; this covers
/// what depends on the provider or on the object's name.
pub fn refusal(corg: &CustomerOrg, caps: &Capabilities) -> Option<(String, String)> {
    let fields = unsupported(corg, caps);
    if !fields.is_empty() {
        return Some((
            "UnsupportedByProvider".to_string(),
            format!(
                "the provider of spec.providerRef cannot honour {}; remove them or use another provider (see the OrgProvider's status.capabilities)",
                fields.join(", ")
            ),
        ));
    }
    let collisions = secret_name_collisions(corg);
    (!collisions.is_empty()).then(|| {
        (
            "SecretNameCollision".to_string(),
            format!(
                "several entries would write one Secret: {}; set distinct secretName values",
                collisions.join("; ")
            ),
        )
    })
}

pub(super) fn was_ready_at_this_generation(corg: &CustomerOrg) -> bool {
    ready_reason_at_this_generation(corg).is_some_and(|(ready, _)| ready)
}

/// Whether this generation was applied already: Ready, or a drift correction since (which
/// the next pass verifies, from a deferred or a written status). Anything that differs
/// from the spec then is an out-of-band change, not a spec being applied.
fn applied_at_this_generation(corg: &CustomerOrg) -> bool {
    ready_reason_at_this_generation(corg)
        .is_some_and(|(ready, reason)| ready || reason == REASON_CORRECTING_DRIFT)
}

fn ready_reason_at_this_generation(corg: &CustomerOrg) -> Option<(bool, &str)> {
    let s = corg.status.as_ref()?;
    let c = conditions::find(&s.conditions, READY)?;
    (c.observed_generation == corg.metadata.generation)
        .then_some((c.status == "True", c.reason.as_str()))
}

/// Decides what to do. Pure: same inputs, same plan.
pub fn plan(corg: &CustomerOrg, obs: &Observed) -> Plan {
    let mut plan = Plan::default();
    if gate(corg).is_some() {
        return plan;
    }
    if let Some((reason, message)) = refusal(corg, &obs.capabilities) {
        plan.stall(&reason, message);
        return plan;
    }
    let org = match org::identify(corg, obs, &mut plan) {
        org::Identity::Known(org) => *org,
        org::Identity::Stop => return plan,
        org::Identity::Create => {
            org::plan_create(corg, &mut plan);
            // A new org is known to be empty: plan its follow-ups in this same plan,
            // when every follow-up key is the one an earlier pass would have used.
            if let Some((org, fresh)) = fresh_org(corg, obs, &plan) {
                converge(corg, &org, &fresh, false, &mut plan);
                plan.fresh = plan.stalled.is_none();
            }
            return plan;
        }
    };
    plan.org = Some(org.clone());
    if claims(corg, &plan, &obs.capabilities) {
        // Claim first, act after reading the claim back: two objects adopting one org at
        // the same moment both write their marker, and only the one whose marker stays
        // goes on to mint and fund (the other is then AdoptionConflict).
        org::plan_claim(corg, &mut plan);
        return plan;
    }
    let drift = applied_at_this_generation(corg) && plan.adopted.is_none();
    converge(corg, &org, obs, drift, &mut plan);
    plan
}

/// The plan as it stands once an adoption claim is in place: for readers that never write
/// the claim (`orgops plan`, managementPolicy Observe) and want to show everything the
/// adoption leads to. Identical to [`plan`] when there is no claim to make.
pub fn plan_through_claim(corg: &CustomerOrg, obs: &Observed) -> Plan {
    let first = plan(corg, obs);
    if !claims(corg, &first, &obs.capabilities) {
        return first;
    }
    let mut claimed = obs.clone();
    claimed.found = with_owner_marker(&obs.found, &owner_of(corg));
    let mut then = plan(corg, &claimed);
    then.actions.splice(0..0, first.actions);
    then.adopted = first.adopted;
    then
}

/// Whether this plan only claims an adopted org (the rest follows once it reads back).
pub fn claims(corg: &CustomerOrg, plan: &Plan, caps: &Capabilities) -> bool {
    caps.org_metadata
        && plan.adopted.is_some()
        && plan
            .org
            .as_ref()
            .is_some_and(|o| !org::marked_ours(corg, o) && o.status != OrgStatus::Archived)
}

fn with_owner_marker(found: &Found, marker: &str) -> Found {
    let mark = |org: &Org| {
        let mut org = org.clone();
        org.metadata
            .insert(OWNER_KEY.to_string(), marker.to_string());
        org
    };
    match found {
        Found::Tracked(org) => Found::Tracked(org.as_ref().map(mark)),
        Found::ById { org, claimed_by } => Found::ById {
            org: org.as_ref().map(mark),
            claimed_by: claimed_by.clone(),
        },
        Found::ByOwner(orgs) => Found::ByOwner(orgs.iter().map(mark).collect()),
        Found::ByExternalId { orgs, claimed_by } => Found::ByExternalId {
            orgs: orgs.iter().map(mark).collect(),
            claimed_by: claimed_by.clone(),
        },
        Found::Nothing => Found::Nothing,
    }
}

/// Everything after identity, against a known (or just created) org.
fn converge(corg: &CustomerOrg, org: &Org, obs: &Observed, drift: bool, plan: &mut Plan) {
    if !org::lifecycle_first(corg, org, drift, plan) {
        return;
    }
    let caps = obs.capabilities;
    if caps.org_update {
        org::plan_fields(corg, org, drift, plan);
    } else if org.name != corg.spec.display_name && caps.find_by_name {
        // The name is the org's identity here: a rename would lose it.
        plan.stall(
            "UnsupportedByProvider",
            format!(
                "spec.displayName {:?} differs from org {}'s name {:?}, which this provider cannot change (it identifies the org): restore spec.displayName",
                corg.spec.display_name, org.id, org.name
            ),
        );
        return;
    }
    if let Some(note) = &org.billing_note {
        plan.notes.push(format!("billing: {note}"));
    }
    if caps.users {
        users::plan_users(corg, org, drift, plan);
    }
    credits::plan_credits(corg, org, obs, drift, plan);
    if let Some(keys) = &obs.keys {
        keys::plan_keys(corg, keys, obs, plan);
    }
    if let Some(rotation) = rotation_pending(corg)
        && corg.spec.api_keys.is_empty()
    {
        plan.actions.push(Action::MarkRotated { value: rotation });
    }
    if let Some(hooks) = &obs.webhooks {
        webhooks::plan_webhooks(corg, hooks, obs, drift, plan);
    }
    if caps.org_update {
        org::unkeyed_first_while_suspended(corg, org, plan);
    }
    org::lifecycle_last(corg, org, drift, plan);
}

/// The org id used in keys of a plan that creates the org (its id is not known yet).
pub(crate) const NEW_ORG: &str = "";

/// What a pass that creates the org knows without reading: a new org has no keys, no
/// webhooks, an empty ledger and the default credit config. `None` when that cannot be
/// trusted because the create may replay an earlier create whose follow-ups used other
/// idempotency keys: a spec edited since (generation > 1), a pending rotation, or any
/// record of earlier work (status lists, owned Secrets).
fn fresh_org(corg: &CustomerOrg, obs: &Observed, plan: &Plan) -> Option<(Org, Observed)> {
    let (name, metadata, billing_email, users) = match plan.actions.first() {
        Some(Action::CreateOrg { new, .. }) => (
            new.name.clone(),
            new.metadata.clone(),
            new.billing_email.clone(),
            new.extras.users.clone(),
        ),
        // A migrated child starts plain: no metadata, no billing email.
        Some(Action::MigrateProjects { name, .. }) => {
            (name.clone(), BTreeMap::new(), None, Vec::new())
        }
        _ => return None,
    };
    let first_generation = corg.metadata.generation.unwrap_or(1) == 1;
    let no_records = corg.status.as_ref().is_none_or(|s| {
        s.api_keys.is_empty()
            && s.webhooks.is_empty()
            && s.credits.is_none()
            && s.keys_rotated_for.is_none()
    }) && obs.owned.is_empty();
    if !first_generation || !no_records || rotation_pending(corg).is_some() {
        return None;
    }
    let caps = obs.capabilities;
    let org = Org {
        id: NEW_ORG.to_string(),
        name,
        status: OrgStatus::Active,
        metadata,
        billing_email,
        summary: Some(OrgSummary {
            balance: 0,
            available: 0,
            credit_config: CreditConfig::default(),
        }),
        users,
        billing_note: None,
        suspend_blocked: None,
    };
    let fresh = Observed {
        found: Found::Tracked(Some(org.clone())),
        keys: caps.child_api_keys.then(Vec::new),
        webhooks: caps.webhooks.then(Vec::new),
        ledger: caps.allocation_ledger.then_some(0),
        ledger_note: None,
        secrets: obs.secrets.clone(),
        owned: Vec::new(),
        capabilities: caps,
    };
    Some((org, fresh))
}

/// Whether this plan acts on an org that its own first action creates.
pub fn creates_org(plan: &Plan) -> bool {
    matches!(
        plan.actions.first(),
        Some(Action::CreateOrg { .. } | Action::MigrateProjects { .. })
    )
}

pub(crate) fn wants(corg: &CustomerOrg) -> DesiredState {
    corg.spec.state
}
