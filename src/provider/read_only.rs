//! The provider as `orgops plan` and `orgops import` use it: every read passes through
//! (with the same rate-limited client the operator uses), every write is refused before it
//! is sent. Neither command calls a write; this makes "they never write" structural.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::provider::error::ProviderError;
use crate::provider::*;

pub struct ReadOnly(pub Arc<dyn Provider>);

fn refused<T>(what: &str) -> ProviderResult<T> {
    Err(ProviderError::Invalid(format!(
        "a read-only command never writes to the provider ({what} refused)"
    )))
}

#[async_trait]
impl Provider for ReadOnly {
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn vendor(&self) -> &'static str {
        self.0.vendor()
    }
    async fn whoami(&self) -> ProviderResult<Identity> {
        self.0.whoami().await
    }
    async fn get_org(&self, org_id: &str) -> ProviderResult<Option<Org>> {
        self.0.get_org(org_id).await
    }
    async fn find_orgs_by_external_id(&self, external_id: &str) -> ProviderResult<Vec<Org>> {
        self.0.find_orgs_by_external_id(external_id).await
    }
    async fn find_orgs_by_owner(&self, owner: &str) -> ProviderResult<Vec<Org>> {
        self.0.find_orgs_by_owner(owner).await
    }
    async fn find_orgs_by_name(&self, name: &str) -> ProviderResult<Vec<Org>> {
        self.0.find_orgs_by_name(name).await
    }
    async fn suspend_org_with(&self, _: &Owned, _: &SuspendReason) -> ProviderResult<Org> {
        refused("suspend")
    }
    async fn update_user(&self, _: &str, _: &str, _: Option<&str>, _: &str) -> ProviderResult<Org> {
        refused("update user")
    }
    async fn remove_user(&self, _: &Owned, _: &str) -> ProviderResult<Org> {
        refused("remove user")
    }
    async fn find_orgs_by_metadata(&self, key: &str, value: &str) -> ProviderResult<Vec<Org>> {
        self.0.find_orgs_by_metadata(key, value).await
    }
    async fn list_orgs(&self) -> ProviderResult<Vec<Org>> {
        self.0.list_orgs().await
    }
    async fn create_org(&self, _: &NewOrg, _: &IdempotencyKey) -> ProviderResult<Org> {
        refused("create org")
    }
    async fn migrate_projects(
        &self,
        _: &[String],
        _: &str,
        _: &IdempotencyKey,
    ) -> ProviderResult<Migrated> {
        refused("migrate projects")
    }
    async fn update_org(&self, _: &str, _: &OrgPatch) -> ProviderResult<Org> {
        refused("update org")
    }
    async fn suspend_org(&self, _: &Owned) -> ProviderResult<Org> {
        refused("suspend")
    }
    async fn resume_org(&self, _: &str) -> ProviderResult<Org> {
        refused("resume")
    }
    async fn archive_org(&self, _: &Owned) -> ProviderResult<ArchiveResult> {
        refused("archive")
    }
    async fn get_credit_config(&self, org_id: &str) -> ProviderResult<CreditConfig> {
        self.0.get_credit_config(org_id).await
    }
    async fn set_credit_config(&self, _: &str, _: &CreditConfig) -> ProviderResult<CreditConfig> {
        refused("set credit config")
    }
    async fn allocate_credits(
        &self,
        _: &str,
        _: u64,
        _: &BTreeMap<String, String>,
        _: &IdempotencyKey,
    ) -> ProviderResult<Transfer> {
        refused("allocate")
    }
    async fn list_allocations(&self, org_id: &str) -> ProviderResult<Vec<LedgerAllocation>> {
        self.0.list_allocations(org_id).await
    }
    async fn parent_balance(&self) -> ProviderResult<i64> {
        self.0.parent_balance().await
    }
    async fn mint_key(
        &self,
        _: &str,
        _: &NewApiKey,
        _: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        refused("mint key")
    }
    async fn list_keys(&self, org_id: &str) -> ProviderResult<Vec<ApiKey>> {
        self.0.list_keys(org_id).await
    }
    async fn rotate_key(&self, _: &str, _: &str, _: &IdempotencyKey) -> ProviderResult<MintedKey> {
        refused("rotate key")
    }
    async fn revoke_key(&self, _: &Owned, _: &str) -> ProviderResult<()> {
        refused("revoke key")
    }
    async fn list_webhooks(&self, org_id: &str) -> ProviderResult<Vec<WebhookEndpoint>> {
        self.0.list_webhooks(org_id).await
    }
    async fn create_webhook(
        &self,
        _: &str,
        _: &NewWebhook,
        _: &IdempotencyKey,
    ) -> ProviderResult<CreatedWebhook> {
        refused("create webhook")
    }
    async fn update_webhook(
        &self,
        _: &str,
        _: &str,
        _: &WebhookPatch,
    ) -> ProviderResult<WebhookEndpoint> {
        refused("update webhook")
    }
    async fn delete_webhook(&self, _: &Owned, _: &str) -> ProviderResult<()> {
        refused("delete webhook")
    }
    async fn rotate_webhook_secret(
        &self,
        _: &str,
        _: &str,
        _: &IdempotencyKey,
    ) -> ProviderResult<Secret> {
        refused("rotate webhook secret")
    }
}
