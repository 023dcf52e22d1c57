//! `OrgProvider`: how to reach one partner API (cluster-scoped).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a partner API lives and which parent key to use.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "orgops.dev",
    version = "v1beta1",
    kind = "OrgProvider",
    doc = "How orgops reaches one partner API: its URL, parent key and rate limit.",
    status = "OrgProviderStatus",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type","description":"Partner API type"}"#,
    printcolumn = r#"{"name":"Tier","type":"string","jsonPath":".status.rateLimitTier","description":"Rate-limit tier in use"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"Whether the parent key works"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.youhodler) || self.type == 'youhodler'",
    "message": "spec.youhodler applies only to type: youhodler"
}, {
    "rule": "!has(self.guardrails) || self.type == 'layers'",
    "message": "spec.guardrails applies only to type: layers (the only provider whose credits move from the parent's wallet)"
}]))]
pub struct OrgProviderSpec {
    /// Partner API type: layers, gennia or youhodler.
    #[serde(rename = "type")]
    pub provider_type: ProviderType,
    /// Base URL of the API: https, or http only for localhost / 127.0.0.1.
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('https://') || self.matches('^http://(localhost|127[.]0[.]0[.]1)([:/?#].*)?$')",
        "message": "baseUrl must use https (http is allowed only for localhost and 127.0.0.1)"
    }]))]
    pub base_url: String,
    /// The Secret holding the credential: its key `key` (default apiKey) holds the parent
    /// key (layers, gennia); for youhodler the Secret holds `clientId` and `clientSecret`
    /// (OAuth client credentials) and `key` is not used.
    pub credentials_secret_ref: SecretKeyRef,
    /// Client-side rate limit.
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
    /// How many CustomerOrgs deletions may offboard (archive or suspend) per hour.
    #[serde(default)]
    pub offboarding: OffboardingSpec,
    /// YouHodler only: which enterprise the clients belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub youhodler: Option<YouhodlerProviderSpec>,
    /// Money guardrails (layers only): a transfer that would cross one is held (Ready=False,
    /// reason CreditsHeld) until a person approves it on its CustomerOrg with
    /// orgops.dev/confirm-credits: "<metadata.generation>".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<GuardrailsSpec>,
}

/// Bounds on the credits orgops moves from the parent's wallet. Each is optional; unset
/// means no bound.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailsSpec {
    /// The most credits one CustomerOrg may have allocated in total
    /// (spec.credits.allocated). A spec above it is refused, not capped: its top-up is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000i64))]
    pub max_credits_per_org: Option<i64>,
    /// The most credits orgops moves from the parent into all its customers in any rolling
    /// hour (auto-refills the provider makes itself are not orgops' transfers and do not
    /// count). 0: every transfer needs an approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000i64))]
    pub max_credits_per_hour: Option<i64>,
    /// Never allocate below this floor: a transfer that would leave the parent's prepaid
    /// balance under it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000i64))]
    pub min_parent_balance: Option<i64>,
}

/// YouHodler Business settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct YouhodlerProviderSpec {
    /// The enterprise (uuid) whose clients orgops manages (`scope_ref: enterprises/<id>`).
    /// Optional: when unset, the one enterprise `GET /enterprises` lists is used, and the
    /// provider is not Ready when the service account sees none or several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub enterprise_id: Option<String>,
}

/// Default `spec.offboarding.maxPerHour`: enough for ordinary churn, small enough that a
/// pruned namespace or a bad commit cannot offboard more than a handful of customers.
pub const DEFAULT_OFFBOARDINGS_PER_HOUR: u32 = 10;

/// The offboarding guard: a bound on offboardings per rolling hour.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffboardingSpec {
    /// Offboardings allowed in any rolling hour (default 10). Past it, a deleting
    /// CustomerOrg waits (Stalled, reason OffboardingPaused) until the window frees or it
    /// carries orgops.dev/confirm-offboard: "true". 0: every offboarding needs the annotation.
    #[serde(default = "default_offboardings_per_hour")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_per_hour: u32,
}

impl Default for OffboardingSpec {
    fn default() -> Self {
        OffboardingSpec {
            max_per_hour: DEFAULT_OFFBOARDINGS_PER_HOUR,
        }
    }
}

fn default_offboardings_per_hour() -> u32 {
    DEFAULT_OFFBOARDINGS_PER_HOUR
}

/// The fields a client is built from: a change to any of them makes the operator build a
/// new client (`orgops plan` says so). A provider's own section (`spec.<type>`) belongs
/// here when its client reads it.
pub const CLIENT_FIELDS: &[&str] = &[
    "spec.type",
    "spec.baseUrl",
    "spec.credentialsSecretRef",
    "spec.youhodler",
];

/// Partner API type.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    Layers,
    /// Gennia's Clients API (a hub's client workspaces); `baseUrl` is the server, the
    /// credentials Secret holds the hub's workspace key (`gsk_…`).
    Gennia,
    /// YouHodler Business API (an enterprise's clients); the credentials Secret holds
    /// `clientId` and `clientSecret`.
    Youhodler,
}

/// A key inside a namespaced Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
pub struct SecretKeyRef {
    /// Namespace of the Secret.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data; "apiKey" when omitted.
    #[serde(default = "default_secret_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_secret_key() -> String {
    "apiKey".to_string()
}

/// Client-side rate limiting.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RateLimitSpec {
    /// auto (default) reads the tier from whoami; or standard, pilot, partner, unlimited.
    #[serde(default)]
    pub tier: RateTierSpec,
}

/// Rate-limit tier choice.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateTierSpec {
    #[default]
    Auto,
    Standard,
    Pilot,
    Partner,
    Unlimited,
}

/// What the operator learnt from the provider.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// The apiserver stores this on a new object, so kstatus (Flux) reads it as InProgress
// until the operator writes a real status; without it an object with no status is Current.
#[schemars(extend("default" = {"observedGeneration": -1}))]
pub struct OrgProviderStatus {
    /// The parent organization id (from whoami).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Rate-limit tier in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_tier: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What a CustomerOrg may use with this provider, named after the spec fields
    /// (apiKeys, webhooks, credits.allocated, ...). A field not listed makes a
    /// CustomerOrg Stalled with reason UnsupportedByProvider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Ready (parent key works), with a reason when it does not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The offboardings through this provider in the last hour: the durable window of the
    /// offboarding guard. Written only by the CustomerOrg controller (field manager
    /// orgops-offboarding), with a resourceVersion precondition, before each offboarding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offboarding: Vec<OffboardingEntry>,
    /// Credits orgops moved through this provider per minute over the last hour: the
    /// durable window of spec.guardrails.maxCreditsPerHour (kept only while it is set).
    /// Written only by the CustomerOrg controller (field manager orgops-credits), with a
    /// resourceVersion precondition, before each transfer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credit_window: Vec<CreditWindowEntry>,
}

/// Credits moved in one minute, recorded in `status.creditWindow`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditWindowEntry {
    /// The minute (its first second) the transfers were claimed in.
    pub minute: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Credits claimed for transfers in that minute (approved ones included).
    pub credits: i64,
    /// How many transfers.
    pub transfers: u32,
}

/// One offboarding recorded in `status.offboarding`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffboardingEntry {
    /// Namespace of the CustomerOrg.
    pub namespace: String,
    /// Name of the CustomerOrg.
    pub name: String,
    /// Its metadata.uid: one slot per object, however often its offboarding is retried.
    pub uid: String,
    /// When the slot was claimed (just before the archive or suspend).
    pub time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    /// Let through by orgops.dev/confirm-offboard rather than by a free slot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}
