//! Provider layer: the provider-neutral trait and the Layers implementation.
//!
//! The controller talks only to [`Provider`]; a later partner API (see
//! `other-providers.md`) implements the same trait and declares what it lacks in
//! [`Capabilities`].

pub mod types;

use async_trait::async_trait;

pub use types::*;

/// Result alias for provider calls. `ProviderError` lives in `error.rs` (provider engineer).
pub type ProviderResult<T> = Result<T, crate::provider::error::ProviderError>;

pub mod build;
pub mod error;
pub mod gennia;
pub(crate) mod http;
pub mod layers;
pub mod metrics;
pub mod org_index;
pub mod owned;
pub mod read_only;
pub mod youhodler;

pub use owned::Owned;

fn unsupported(what: &str, on: &str) -> crate::provider::error::ProviderError {
    crate::provider::error::ProviderError::Invalid(format!(
        "{what} ({on}) is not supported by this provider; its capabilities should have prevented the call"
    ))
}

/// Everything the controller needs from a partner API. Every write that is not
/// idempotent by state takes an [`IdempotencyKey`]; implementations retry only
/// requests that are safe to retry (idempotent by method or state, or keyed).
#[async_trait]
pub trait Provider: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    /// The partner API's name, for messages ("Gennia has no archive").
    fn vendor(&self) -> &'static str;

    /// whoami: who the credential is, its scopes and rate-limit tier.
    async fn whoami(&self) -> ProviderResult<Identity>;

    /// One child with its summary (balance, credit config). `Ok(None)` on 404.
    async fn get_org(&self, org_id: &str) -> ProviderResult<Option<Org>>;
    /// Live (not archived) direct children whose `metadata.externalId` equals `external_id`.
    async fn find_orgs_by_external_id(&self, external_id: &str) -> ProviderResult<Vec<Org>>;
    /// Live direct children carrying the owner marker `owner` (`orgops.dev/owner`); may be
    /// answered from a cache that this client's own writes keep current.
    async fn find_orgs_by_owner(&self, owner: &str) -> ProviderResult<Vec<Org>>;
    /// Live direct children whose `metadata[key]` equals `value`, read fresh from the
    /// provider (no cache): for rare paths that must not miss an org, such as offboarding
    /// an object whose org id was never recorded.
    async fn find_orgs_by_metadata(&self, key: &str, value: &str) -> ProviderResult<Vec<Org>>;
    /// Every live (not archived) direct child, all pages, read fresh (`orgops import`). The
    /// rows are what the listing returns: a caller that needs an org's summary or users
    /// reads it with [`Provider::get_org`].
    async fn list_orgs(&self) -> ProviderResult<Vec<Org>> {
        Err(unsupported("list_orgs", "every org"))
    }
    async fn create_org(&self, new: &NewOrg, key: &IdempotencyKey) -> ProviderResult<Org>;
    /// Creates one child named `name` from the parent's flat `projects` (moved into it),
    /// all or nothing.
    async fn migrate_projects(
        &self,
        projects: &[String],
        name: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<Migrated> {
        let _ = (projects, key);
        Err(unsupported("migrate_projects", name))
    }
    /// PATCHes that set absolute state carry no idempotency key: applying one twice is
    /// applying it once, and a key would turn a second identical correction of the same
    /// out-of-band change into a replay of the first (nothing changed, yet "success").
    async fn update_org(&self, org_id: &str, patch: &OrgPatch) -> ProviderResult<Org>;
    // Destructive calls take a proof that the caller owns the org (`owned::prove`).
    async fn suspend_org(&self, org: &Owned) -> ProviderResult<Org>;
    /// Suspends with a reason, where the API takes one (Gennia); others ignore it.
    async fn suspend_org_with(&self, org: &Owned, why: &SuspendReason) -> ProviderResult<Org> {
        let _ = why;
        self.suspend_org(org).await
    }
    /// Live orgs named `name`, for providers whose names identify orgs
    /// (`Capabilities::find_by_name`).
    async fn find_orgs_by_name(&self, name: &str) -> ProviderResult<Vec<Org>> {
        Err(unsupported("find_orgs_by_name", name))
    }
    /// Changes a user's name and role (`Capabilities::users`).
    async fn update_user(
        &self,
        org_id: &str,
        user_id: &str,
        name: Option<&str>,
        role: &str,
    ) -> ProviderResult<Org> {
        let _ = (user_id, name, role);
        Err(unsupported("update_user", org_id))
    }
    /// Removes a user (`Capabilities::users`).
    async fn remove_user(&self, org: &Owned, user_id: &str) -> ProviderResult<Org> {
        let _ = user_id;
        Err(unsupported("remove_user", org.org_id()))
    }
    async fn resume_org(&self, org_id: &str) -> ProviderResult<Org>;
    /// Archives (terminal) where `Capabilities::archive`; elsewhere offboarding suspends.
    async fn archive_org(&self, org: &Owned) -> ProviderResult<ArchiveResult> {
        Err(unsupported("archive_org", org.org_id()))
    }

    // Credits, keys and webhooks: only where `Capabilities` says so (Layers); the defaults
    // refuse, and the planner never calls them elsewhere.
    async fn get_credit_config(&self, org_id: &str) -> ProviderResult<CreditConfig> {
        Err(unsupported("get_credit_config", org_id))
    }
    async fn set_credit_config(
        &self,
        org_id: &str,
        config: &CreditConfig,
    ) -> ProviderResult<CreditConfig> {
        let _ = config;
        Err(unsupported("set_credit_config", org_id))
    }
    /// Moves credits from the parent into the child. `metadata` is written to both ledgers.
    async fn allocate_credits(
        &self,
        org_id: &str,
        credits: u64,
        metadata: &std::collections::BTreeMap<String, String>,
        key: &IdempotencyKey,
    ) -> ProviderResult<Transfer> {
        let _ = (credits, metadata, key);
        Err(unsupported("allocate_credits", org_id))
    }
    /// The parent's own prepaid balance: the wallet `allocate_credits` draws from (where
    /// `Capabilities::allocation_ledger`). A read.
    async fn parent_balance(&self) -> ProviderResult<i64> {
        Err(unsupported("parent_balance", "the parent's wallet"))
    }
    /// Every allocation event in the child's ledger (all pages).
    async fn list_allocations(&self, org_id: &str) -> ProviderResult<Vec<LedgerAllocation>> {
        Err(unsupported("list_allocations", org_id))
    }

    async fn mint_key(
        &self,
        org_id: &str,
        new: &NewApiKey,
        key: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        let _ = (new, key);
        Err(unsupported("mint_key", org_id))
    }
    /// Every key of the child, revoked ones included (all pages).
    async fn list_keys(&self, org_id: &str) -> ProviderResult<Vec<ApiKey>> {
        Err(unsupported("list_keys", org_id))
    }
    async fn rotate_key(
        &self,
        org_id: &str,
        key_id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        let _ = (key_id, key);
        Err(unsupported("rotate_key", org_id))
    }
    async fn revoke_key(&self, org: &Owned, key_id: &str) -> ProviderResult<()> {
        let _ = key_id;
        Err(unsupported("revoke_key", org.org_id()))
    }

    /// Webhook endpoints inside the child (Layers: parent key + `X-Layers-Organization`).
    async fn list_webhooks(&self, org_id: &str) -> ProviderResult<Vec<WebhookEndpoint>> {
        Err(unsupported("list_webhooks", org_id))
    }
    async fn create_webhook(
        &self,
        org_id: &str,
        new: &NewWebhook,
        key: &IdempotencyKey,
    ) -> ProviderResult<CreatedWebhook> {
        let _ = (new, key);
        Err(unsupported("create_webhook", org_id))
    }
    async fn update_webhook(
        &self,
        org_id: &str,
        endpoint_id: &str,
        patch: &WebhookPatch,
    ) -> ProviderResult<WebhookEndpoint> {
        let _ = (endpoint_id, patch);
        Err(unsupported("update_webhook", org_id))
    }
    async fn delete_webhook(&self, org: &Owned, endpoint_id: &str) -> ProviderResult<()> {
        let _ = endpoint_id;
        Err(unsupported("delete_webhook", org.org_id()))
    }
    async fn rotate_webhook_secret(
        &self,
        org_id: &str,
        endpoint_id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<Secret> {
        let _ = (endpoint_id, key);
        Err(unsupported("rotate_webhook_secret", org_id))
    }
}
