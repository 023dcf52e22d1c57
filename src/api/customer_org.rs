//! `CustomerOrg`: one customer's child organization, as a platform team declares it in Git.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The customer's child organization as it should be: name, metadata, credits, keys, webhooks, state.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "orgops.dev",
    version = "v1beta1",
    kind = "CustomerOrg",
    namespaced,
    shortname = "corg",
    doc = "One customer's child organization at a partner API, managed by orgops.",
    status = "CustomerOrgStatus",
    printcolumn = r#"{"name":"Org","type":"string","jsonPath":".status.orgId","description":"Provider id of the child organization"}"#,
    printcolumn = r#"{"name":"Desired","type":"string","jsonPath":".spec.state","description":"State asked for in spec"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state","description":"State last observed at the provider"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether the org matches the spec"}"#,
    printcolumn = r#"{"name":"Balance","type":"integer","jsonPath":".status.credits.balance","description":"Credit balance of the child"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.state) || oldSelf.state != 'archived' || self.state == 'archived'",
        "message": "spec.state: archived is terminal; an archived org cannot be made active or suspended again"
    },
    {
        "rule": "!has(oldSelf.adoptOrgId) || (has(self.adoptOrgId) && self.adoptOrgId == oldSelf.adoptOrgId)",
        "message": "spec.adoptOrgId is immutable: once set it cannot be changed or removed"
    },
    {
        "rule": "!has(oldSelf.migrateProjects) || (has(self.migrateProjects) && self.migrateProjects == oldSelf.migrateProjects)",
        "message": "spec.migrateProjects is immutable: once set it cannot be changed or removed"
    },
    {
        "rule": "!has(self.migrateProjects) || !has(self.adoptOrgId)",
        "message": "spec.migrateProjects and spec.adoptOrgId exclude each other: migrate creates a new org, adoptOrgId takes an existing one"
    },
    // Every key and webhook writes its own Secret. CEL at this level cannot see the
    // object's name within the cost budget, so it compares default with default
    // (<name>-<key> vs <name>-<webhook>-webhook) and explicit with explicit; a default
    // meeting an explicit name is refused by the planner (Stalled SecretNameCollision).
    {
        "rule": "!has(self.apiKeys) || !has(self.webhooks) || self.apiKeys.all(k, self.webhooks.all(w, has(k.secretName) != has(w.secretName) || (has(k.secretName) ? k.secretName != w.secretName : k.name != w.name + '-webhook')))",
        "message": "spec.apiKeys and spec.webhooks: a key and a webhook write the same Secret (defaults are <name>-<key> and <name>-<webhook>-webhook); set distinct secretName values"
    },
    {
        "rule": "!has(self.apiKeys) || self.apiKeys.all(a, !has(a.secretName) || self.apiKeys.exists_one(b, has(b.secretName) && b.secretName == a.secretName))",
        "message": "spec.apiKeys and spec.webhooks: two keys write the same Secret; set distinct secretName values"
    },
    {
        "rule": "!has(self.webhooks) || self.webhooks.all(a, !has(a.secretName) || self.webhooks.exists_one(b, has(b.secretName) && b.secretName == a.secretName))",
        "message": "spec.apiKeys and spec.webhooks: two webhooks write the same Secret; set distinct secretName values"
    }
]))]
pub struct CustomerOrgSpec {
    /// The OrgProvider (cluster-scoped) whose partner API manages this org.
    #[serde(default)]
    pub provider_ref: ProviderRef,
    /// The org's name at the provider (API `name`), 1-128 characters.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Your stable customer id. Written to the org's metadata as `externalId` and used to adopt
    /// an existing org (for example after the cluster was rebuilt) instead of creating a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 500))]
    pub external_id: Option<String>,
    /// Billing contact stored on the org (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub billing_email: Option<String>,
    /// Extra org metadata (string to string). Keys of 1-40 characters, values of 1-500, at most
    /// 48 entries: `externalId` and `orgops.dev/owner` take two of the provider's 50.
    /// The keys `externalId` and `orgops.dev/*` are reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "metadata_schema")]
    pub metadata: BTreeMap<String, String>,
    /// Lifecycle asked for: active, suspended or archived. archived is terminal.
    #[serde(default)]
    pub state: DesiredState,
    /// Take over this existing child org instead of creating one. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub adopt_org_id: Option<String>,
    /// The parent's flat projects (one project per customer, the older shape) to move into
    /// this org: when the org does not exist yet it is created by migrating them, then tagged
    /// and managed as usual. Immutable once set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(regex(
        pattern = r"^(prj_)?[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )))]
    pub migrate_projects: Vec<String>,
    /// Credits moved from the parent into this org, and its spending limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsSpec>,
    /// API keys minted inside the child; each key's secret is written to a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub api_keys: Vec<ApiKeySpec>,
    /// Webhook endpoints created inside the child; each signing secret is written to a Secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub webhooks: Vec<WebhookSpec>,
    /// What deleting this resource does: Archive (default) archives the org, revoking its keys and
    /// reclaiming unspent credits; Orphan leaves the org untouched.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Why the org is suspended, sent where the API takes a reason (Gennia); at most 500
    /// characters. Layers has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 500))]
    pub suspend_reason: Option<String>,
    /// Gennia only: the workspace's users and its create-only choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gennia: Option<GenniaSpec>,
    /// Full (default) makes the org match this spec. Observe only reads: it finds the org
    /// (spec.adoptOrgId or spec.externalId), fills status and reports drift, and never writes
    /// to the partner API (no create, no transfer, no key, no archive on deletion).
    /// Switching to Full then converges.
    #[serde(default)]
    pub management_policy: ManagementPolicy,
}

/// Gennia's client workspace: users, plan, trial, credits (see docs/providers/gennia.md).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenniaSpec {
    /// The workspace's users; at least one admin. Roles and names are kept in line and
    /// users missing here are removed (never the last admin); a user added after the
    /// workspace exists cannot be created through Gennia's API (invite them in Gennia).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["email"]))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.size() == 0 || self.exists(u, u.role == 'admin')",
        "message": "spec.gennia.users needs at least one admin"
    }]))]
    pub users: Vec<GenniaUser>,
    /// The hub's plan (publicId, a uuid); create only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub plan_id: Option<String>,
    /// Start on the hub's trial plan; create only.
    #[serde(default)]
    pub trial: bool,
    /// Email the users their invitations; create only.
    #[serde(default)]
    pub send_invitations: bool,
    /// Credits to start with; create only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub initial_credits: Option<i64>,
    /// Gennia's cancellation reason, sent on suspend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_reason: Option<GenniaCancellation>,
}

/// A user of a Gennia workspace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct GenniaUser {
    #[schemars(length(min = 3, max = 254))]
    pub email: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub name: Option<String>,
    pub role: GenniaRole,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GenniaRole {
    Admin,
    Member,
    Editor,
    Viewer,
}

impl GenniaRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GenniaRole::Admin => "admin",
            GenniaRole::Member => "member",
            GenniaRole::Editor => "editor",
            GenniaRole::Viewer => "viewer",
        }
    }
}

/// Gennia's `cancellationReason` values.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GenniaCancellation {
    CustomerRequest,
    PaymentFailed,
    SwitchingProvider,
    NotNeeded,
    Price,
    FeatureMissing,
    Other,
}

impl GenniaCancellation {
    pub fn as_str(self) -> &'static str {
        match self {
            GenniaCancellation::CustomerRequest => "customer_request",
            GenniaCancellation::PaymentFailed => "payment_failed",
            GenniaCancellation::SwitchingProvider => "switching_provider",
            GenniaCancellation::NotNeeded => "not_needed",
            GenniaCancellation::Price => "price",
            GenniaCancellation::FeatureMissing => "feature_missing",
            GenniaCancellation::Other => "other",
        }
    }
}

/// Whether orgops writes to the partner API for this object.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementPolicy {
    #[default]
    Full,
    Observe,
}

/// Reference to a cluster-scoped OrgProvider.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct ProviderRef {
    /// Name of the OrgProvider; "default" when omitted.
    #[serde(default = "default_provider_name")]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Default for ProviderRef {
    fn default() -> Self {
        ProviderRef {
            name: default_provider_name(),
        }
    }
}

fn default_provider_name() -> String {
    "default".to_string()
}

/// Lifecycle state asked for in spec.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Active,
    Suspended,
    Archived,
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Active => "active",
            DesiredState::Suspended => "suspended",
            DesiredState::Archived => "archived",
        }
    }
}

/// What deleting the CustomerOrg does to the org.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Archive,
    Orphan,
}

/// Credits and spending limits.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditsSpec {
    /// Total credits moved from the parent into this org over its life. Top-up only: raising it
    /// moves the difference once; lowering it moves nothing back.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub allocated: i64,
    /// Credits the org may spend per billing period; absent means no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub monthly_cap: Option<i64>,
    /// Automatic refill from the parent when the org's available credits drop below threshold.
    /// Set both threshold and amount, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_refill: Option<AutoRefillSpec>,
}

/// Auto-refill settings (both fields or neither).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.threshold) == has(self.amount)",
    "message": "set both threshold and amount, or neither"
}]))]
pub struct AutoRefillSpec {
    /// Refill when the org's available credits drop below this many credits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub threshold: Option<i64>,
    /// Credits moved from the parent per refill (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub amount: Option<i64>,
}

/// One API key minted inside the child.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeySpec {
    /// Key name, also its name at the provider (lowercase letters, digits, '-', '.'; 1-120).
    #[schemars(
        length(min = 1, max = 120),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Scopes granted to the key (1-64), such as content:read. org:admin can never be delegated.
    #[schemars(
        length(min = 1, max = 64),
        inner(
            length(min = 1, max = 64),
            regex(pattern = r"^(\*|[a-z][a-z0-9_-]*:[a-z*][a-z0-9_*-]*)$")
        )
    )]
    #[schemars(extend(
        "x-kubernetes-list-type" = "set",
        "x-kubernetes-validations" = [{
            "rule": "!self.exists(s, s == 'org:admin')",
            "message": "org:admin can never be granted to a child key"
        }]
    ))]
    pub scopes: Vec<String>,
    /// live (default) or test.
    #[serde(default)]
    pub env: KeyEnvSpec,
    /// Secret that receives the key; default `<customerorg>-<key name>`. Must not be owned by
    /// anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

/// Environment of an API key.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyEnvSpec {
    #[default]
    Live,
    Test,
}

/// One webhook endpoint inside the child.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Name of the webhook, unique in this CustomerOrg (DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Delivery URL: https, or http only for localhost / 127.0.0.1.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('https://') || self.matches('^http://(localhost|127[.]0[.]0[.]1)([:/?#].*)?$')",
        "message": "url must use https (http is allowed only for localhost and 127.0.0.1)"
    }]))]
    pub url: String,
    /// Event names to deliver (1-50), such as post.published.
    #[schemars(length(min = 1, max = 50), inner(length(min = 1, max = 100)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub events: Vec<String>,
    /// Secret that receives the signing secret; default `<customerorg>-<webhook name>-webhook`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: Option<String>,
}

fn metadata_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Extra org metadata (string to string). Keys of 1-40 characters, values of 1-500, at most 48 entries. The keys externalId and orgops.dev/* are reserved.",
        "type": "object",
        "maxProperties": 48,
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 500},
        "x-kubernetes-validations": [
            {
                "rule": "self.all(k, size(k) >= 1 && size(k) <= 40)",
                "message": "keys must be 1-40 characters"
            },
            {
                "rule": "self.all(k, k != 'externalId' && !k.startsWith('orgops.dev/'))",
                "message": "externalId and orgops.dev/* are reserved (use spec.externalId)"
            }
        ]
    })
}

/// What the operator last observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// The apiserver stores this on a new object, so kstatus (Flux) reads it as InProgress
// until the operator writes a real status; without it an object with no status is Current.
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct CustomerOrgStatus {
    /// Provider id of the child organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// State last observed at the provider: active, suspended or archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Credits as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<CreditsStatus>,
    /// Keys minted for spec.apiKeys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<ApiKeyStatus>,
    /// Webhook endpoints created for spec.webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookStatus>,
    /// How many times the provider refused to create the org (a definitive 4xx such as a
    /// validation error). Each retry after a spec fix uses a new idempotency key; a
    /// refused create made no org, so this cannot create a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_refusals: Option<u32>,
    /// The flat projects spec.migrateProjects moved into this org.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// Value of the orgops.dev/rotate-keys annotation whose rotation has been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_rotated_for: Option<String>,
    /// A top-up held by the OrgProvider's guardrails (nothing was sent), while it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_credits: Option<HeldCredits>,
    /// Ready, Reconciling and Stalled (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Credits as last observed at the provider.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditsStatus {
    /// Sum of orgops allocation transfers in the child's ledger.
    pub allocated: i64,
    /// The child's credit balance.
    pub balance: i64,
    /// Credits the child can spend now.
    pub available: i64,
    /// The provider refused a top-up at this ledger sum (for example the parent had too
    /// few credits); each retry uses a new idempotency key, so a refusal the provider
    /// stored is not replayed for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedAllocation>,
}

/// A top-up a guardrail holds: `orgops.dev/confirm-credits: "<generation>"` approves it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldCredits {
    /// Credits the top-up would move.
    pub credits: i64,
    /// The total it tops up to (spec.credits.allocated).
    pub target: i64,
    /// The metadata.generation it is held at.
    pub generation: i64,
    /// The guardrails it would cross: maxCreditsPerOrg, maxCreditsPerHour, minParentBalance.
    pub guardrails: Vec<String>,
}

/// Top-up attempts the provider refused at one ledger sum.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusedAllocation {
    /// The orgops-marked ledger sum the refused attempts started from.
    pub ledger: i64,
    /// How many attempts were refused at that sum.
    pub attempts: u32,
}

/// A minted key (never its secret).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyStatus {
    /// Key name (spec.apiKeys[].name).
    pub name: String,
    /// Provider key id.
    pub id: String,
    /// Public prefix of the key, to recognise it.
    pub prefix: String,
    /// Secret holding the key.
    pub secret_name: String,
    /// Hash of the key's spec (scopes, env, secretName) the key was minted for.
    #[serde(default)]
    pub spec_hash: String,
}

/// A created webhook endpoint (never its signing secret).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// Webhook name (spec.webhooks[].name).
    pub name: String,
    /// Provider endpoint id.
    pub id: String,
    /// Secret holding the signing secret.
    pub secret_name: String,
    /// Hash of the webhook's spec (url, events, secretName) last applied.
    #[serde(default)]
    pub spec_hash: String,
}

impl ApiKeySpec {
    pub fn env_str(&self) -> &'static str {
        match self.env {
            KeyEnvSpec::Live => "live",
            KeyEnvSpec::Test => "test",
        }
    }
}
