//! `impl Provider for LayersProvider`: one method per API operation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::LayersProvider;
use super::client::Request;
use super::model::{
    ApiKeyWire, ArchiveWire, CreatedWebhookWire, CreditConfigEnvelope, CreditEventWire,
    MigrateWire, MintWire, OrgWire, RotatedSecretWire, TransferWire, WalletWire, WebhookWire,
    WhoamiWire,
};
use crate::provider::error::ProviderError;
use crate::provider::org_index::{self, Listing};
use crate::provider::types::*;
use crate::provider::{Owned, Provider, ProviderResult};

/// Layers can do everything the controller knows, except find orgs by name and manage users.
pub const CAPABILITIES: Capabilities = Capabilities {
    migrate_projects: true,
    org_metadata: true,
    org_update: true,
    billing_email: true,
    archive: true,
    find_by_name: false,
    users: false,
    find_by_external_id: true,
    credit_config: true,
    allocation_ledger: true,
    child_api_keys: true,
    key_rotation: true,
    webhooks: true,
    suspend: true,
};

const ORGS: &str = "/v1/organizations";
const ORG: &str = "/v1/organizations/:orgId";
const MIGRATE: &str = "/v1/organizations/migrate";
const ORG_LIMIT: u32 = 200;
const KEY_LIMIT: u32 = 100;
const EVENT_LIMIT: u32 = 100;
const WEBHOOK_LIMIT: u32 = 100;

/// An id used as a path segment: ids are `[A-Za-z0-9_-]`, so anything else is refused
/// locally instead of being sent (no path tricks, no encoding surprises).
fn seg(id: &str) -> ProviderResult<&str> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id)
    } else {
        Err(ProviderError::Invalid(format!("{id:?} is not a valid id")))
    }
}

fn org_path(org_id: &str, rest: &str) -> ProviderResult<String> {
    Ok(format!("{ORGS}/{}{rest}", seg(org_id)?))
}

fn metadata_value(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

fn opt_u64(v: Option<u64>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn credit_config_request<'a>(method: Method, org_id: &str) -> ProviderResult<Request<'a>> {
    Ok(Request::new(
        method,
        "/v1/organizations/:orgId/credit-config",
        org_path(org_id, "/credit-config")?,
    ))
}

impl LayersProvider {
    /// Suspend and resume are idempotent by state: a repeat is a no-op at the provider.
    async fn transition_org(
        &self,
        org_id: &str,
        route: &'static str,
        rest: &str,
    ) -> ProviderResult<Org> {
        let req = Request::new(Method::POST, route, org_path(org_id, rest)?).idempotent_by_state();
        let org: Org = self.http.json::<OrgWire>(&req).await?.into();
        self.orgs.upsert(&org);
        Ok(org)
    }

    async fn credit_config(&self, req: Request<'_>) -> ProviderResult<CreditConfig> {
        Ok(self
            .http
            .json::<CreditConfigEnvelope>(&req)
            .await?
            .config
            .into())
    }

    /// Live children whose indexed metadata `key` is `value`, from the cached index.
    async fn find_indexed(&self, key: &'static str, value: &str) -> ProviderResult<Vec<Org>> {
        self.orgs
            .find(key, value, || async {
                let mut listing = Listing::default();
                self.each_live_org(|org| listing.push(&org)).await?;
                Ok(listing)
            })
            .await
    }

    /// Every active and suspended child, handed to `each` page by page: a listing of
    /// every child is never held whole.
    async fn each_live_org(&self, mut each: impl FnMut(Org)) -> ProviderResult<()> {
        for status in ["active", "suspended"] {
            let req = Request::new(Method::GET, ORGS, ORGS.to_string()).query("status", status);
            self.http
                .list_each(req, ORG_LIMIT, |o: OrgWire| each(o.into()))
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Provider for LayersProvider {
    fn vendor(&self) -> &'static str {
        "Layers"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn whoami(&self) -> ProviderResult<Identity> {
        let req = Request::new(Method::GET, "/v1/whoami", "/v1/whoami".into());
        Ok(self.http.json::<WhoamiWire>(&req).await?.into())
    }

    async fn parent_balance(&self) -> ProviderResult<i64> {
        let req = Request::new(Method::GET, "/v1/credits", "/v1/credits".into());
        let wallet = self.http.json::<WalletWire>(&req).await?;
        Ok(wallet.prepaid_balance.unwrap_or(wallet.available))
    }

    async fn get_org(&self, org_id: &str) -> ProviderResult<Option<Org>> {
        let req = Request::new(Method::GET, ORG, org_path(org_id, "")?);
        // A fresh read also refreshes the index entry (e.g. archived by someone else).
        match self.http.json::<OrgWire>(&req).await {
            Ok(o) => {
                let org: Org = o.into();
                self.orgs.upsert(&org);
                Ok(Some(org))
            }
            Err(e) if e.is_not_found() => {
                self.orgs.remove(org_id);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Layers has no filter on metadata: answered from the cached index (see
    /// `org_index.rs`), which lists every active and suspended child when it is stale.
    async fn find_orgs_by_external_id(&self, external_id: &str) -> ProviderResult<Vec<Org>> {
        self.find_indexed(org_index::EXTERNAL_ID, external_id).await
    }

    /// From the same index as `find_orgs_by_external_id`.
    async fn find_orgs_by_owner(&self, owner: &str) -> ProviderResult<Vec<Org>> {
        self.find_indexed(org_index::OWNER, owner).await
    }

    async fn find_orgs_by_metadata(&self, key: &str, value: &str) -> ProviderResult<Vec<Org>> {
        let mut found = Vec::new();
        self.each_live_org(|org| {
            if org.metadata.get(key).is_some_and(|v| v == value) {
                found.push(org);
            }
        })
        .await?;
        Ok(found)
    }

    /// `GET /v1/organizations?status=active`, then `suspended`, every page (rows carry no
    /// summary).
    async fn list_orgs(&self) -> ProviderResult<Vec<Org>> {
        let mut orgs = Vec::new();
        self.each_live_org(|org| orgs.push(org)).await?;
        Ok(orgs)
    }

    async fn create_org(&self, new: &NewOrg, key: &IdempotencyKey) -> ProviderResult<Org> {
        let mut body = Map::new();
        body.insert("name".into(), json!(new.name));
        if !new.metadata.is_empty() {
            body.insert("metadata".into(), metadata_value(&new.metadata));
        }
        if let Some(email) = &new.billing_email {
            body.insert("billingEmail".into(), json!(email));
        }
        let req = Request::new(Method::POST, ORGS, ORGS.into())
            .json(&Value::Object(body))
            .key(key);
        let org: Org = self.http.json::<OrgWire>(&req).await?.into();
        self.orgs.upsert(&org);
        Ok(org)
    }

    async fn migrate_projects(
        &self,
        projects: &[String],
        name: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<Migrated> {
        let mapping: Map<String, Value> =
            projects.iter().map(|p| (p.clone(), json!(name))).collect();
        let req = Request::new(Method::POST, MIGRATE, MIGRATE.into())
            .json(&json!({ "mapping": mapping }))
            .key(key);
        let wire: MigrateWire = self.http.json(&req).await?;
        let child = match wire.children.as_slice() {
            [one] => one,
            _ => {
                return Err(ProviderError::Decode {
                    route: MIGRATE.into(),
                    detail: format!(
                        "expected one child for one name, got {}",
                        wire.children.len()
                    ),
                });
            }
        };
        // The response names the child only: read it whole (status, metadata, summary).
        let org = self
            .get_org(&child.id)
            .await?
            .ok_or_else(|| ProviderError::Decode {
                route: MIGRATE.into(),
                detail: format!("the migrated child {} is not readable", child.id),
            })?;
        Ok(Migrated {
            org,
            project_ids: child.project_ids.clone(),
        })
    }

    async fn update_org(&self, org_id: &str, patch: &OrgPatch) -> ProviderResult<Org> {
        let mut body = Map::new();
        if let Some(name) = &patch.name {
            body.insert("name".into(), json!(name));
        }
        if let Some(m) = &patch.metadata {
            body.insert("metadata".into(), metadata_value(m));
        }
        if let Some(email) = &patch.billing_email {
            body.insert("billingEmail".into(), json!(email));
        }
        let req = Request::new(Method::PATCH, ORG, org_path(org_id, "")?)
            .json(&Value::Object(body))
            .idempotent_by_state();
        let org: Org = self.http.json::<OrgWire>(&req).await?.into();
        self.orgs.upsert(&org);
        Ok(org)
    }

    async fn suspend_org(&self, org: &Owned) -> ProviderResult<Org> {
        self.transition_org(org.org_id(), "/v1/organizations/:orgId/suspend", "/suspend")
            .await
    }

    async fn resume_org(&self, org_id: &str) -> ProviderResult<Org> {
        self.transition_org(org_id, "/v1/organizations/:orgId/resume", "/resume")
            .await
    }

    async fn archive_org(&self, org: &Owned) -> ProviderResult<ArchiveResult> {
        let org_id = org.org_id();
        let req = Request::new(Method::DELETE, ORG, org_path(org_id, "")?);
        let result = self.http.json::<ArchiveWire>(&req).await;
        // Archived or not a child (404): either way no longer a live org.
        if result.as_ref().is_ok() || result.as_ref().is_err_and(|e| e.is_not_found()) {
            self.orgs.remove(org_id);
        }
        Ok(result?.into())
    }

    async fn get_credit_config(&self, org_id: &str) -> ProviderResult<CreditConfig> {
        self.credit_config(credit_config_request(Method::GET, org_id)?)
            .await
    }

    /// Sends every field, so the result is exactly `config` (null clears).
    async fn set_credit_config(
        &self,
        org_id: &str,
        config: &CreditConfig,
    ) -> ProviderResult<CreditConfig> {
        let body = json!({
            "monthlyCreditCap": opt_u64(config.monthly_cap),
            "refillThreshold": opt_u64(config.refill.as_ref().map(|r| r.threshold)),
            "refillAmount": opt_u64(config.refill.as_ref().map(|r| r.amount)),
        });
        let req = credit_config_request(Method::PATCH, org_id)?
            .json(&body)
            .idempotent_by_state();
        self.credit_config(req).await
    }

    async fn allocate_credits(
        &self,
        org_id: &str,
        credits: u64,
        metadata: &BTreeMap<String, String>,
        key: &IdempotencyKey,
    ) -> ProviderResult<Transfer> {
        let mut body = Map::new();
        body.insert("credits".into(), json!(credits));
        if !metadata.is_empty() {
            body.insert("metadata".into(), metadata_value(metadata));
        }
        let req = Request::new(
            Method::POST,
            "/v1/organizations/:orgId/credits/allocate",
            org_path(org_id, "/credits/allocate")?,
        )
        .json(&Value::Object(body))
        .key(key);
        Ok(self
            .http
            .json::<TransferWire>(&req)
            .await?
            .into_transfer(credits))
    }

    async fn list_allocations(&self, org_id: &str) -> ProviderResult<Vec<LedgerAllocation>> {
        let req = Request::new(
            Method::GET,
            "/v1/organizations/:orgId/credits/events",
            org_path(org_id, "/credits/events")?,
        )
        .query("eventType", "allocation");
        let items: Vec<CreditEventWire> = self.http.list_all(req, EVENT_LIMIT).await?;
        Ok(items
            .into_iter()
            .filter(|e| e.event_type == "allocation")
            .map(LedgerAllocation::from)
            .collect())
    }

    async fn mint_key(
        &self,
        org_id: &str,
        new: &NewApiKey,
        key: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        let body = json!({ "name": new.name, "scopes": new.scopes, "env": new.env });
        let req = Request::new(
            Method::POST,
            "/v1/organizations/:orgId/api-keys",
            org_path(org_id, "/api-keys")?,
        )
        .json(&body)
        .key(key);
        Ok(self.http.json::<MintWire>(&req).await?.into())
    }

    async fn list_keys(&self, org_id: &str) -> ProviderResult<Vec<ApiKey>> {
        let req = Request::new(
            Method::GET,
            "/v1/organizations/:orgId/api-keys",
            org_path(org_id, "/api-keys")?,
        );
        let items: Vec<ApiKeyWire> = self.http.list_all(req, KEY_LIMIT).await?;
        Ok(items.into_iter().map(ApiKey::from).collect())
    }

    async fn rotate_key(
        &self,
        org_id: &str,
        key_id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        let path = org_path(org_id, &format!("/api-keys/{}/rotate", seg(key_id)?))?;
        let req = Request::new(
            Method::POST,
            "/v1/organizations/:orgId/api-keys/:keyId/rotate",
            path,
        )
        .key(key);
        Ok(self.http.json::<MintWire>(&req).await?.into())
    }

    /// Idempotent by state: revoking a revoked key succeeds.
    async fn revoke_key(&self, org: &Owned, key_id: &str) -> ProviderResult<()> {
        let path = org_path(org.org_id(), &format!("/api-keys/{}", seg(key_id)?))?;
        let req = Request::new(
            Method::DELETE,
            "/v1/organizations/:orgId/api-keys/:keyId",
            path,
        );
        self.http.send(&req).await.map(|_| ())
    }

    async fn list_webhooks(&self, org_id: &str) -> ProviderResult<Vec<WebhookEndpoint>> {
        let req = Request::new(
            Method::GET,
            "/v1/webhook-endpoints",
            "/v1/webhook-endpoints".into(),
        )
        .in_org(seg(org_id)?);
        let items: Vec<WebhookWire> = self.http.list_all(req, WEBHOOK_LIMIT).await?;
        Ok(items.into_iter().map(WebhookEndpoint::from).collect())
    }

    async fn create_webhook(
        &self,
        org_id: &str,
        new: &NewWebhook,
        key: &IdempotencyKey,
    ) -> ProviderResult<CreatedWebhook> {
        let mut body = Map::new();
        body.insert("url".into(), json!(new.url));
        body.insert("events".into(), json!(new.events));
        if !new.metadata.is_empty() {
            body.insert("metadata".into(), metadata_value(&new.metadata));
        }
        let req = Request::new(
            Method::POST,
            "/v1/webhook-endpoints",
            "/v1/webhook-endpoints".into(),
        )
        .json(&Value::Object(body))
        .key(key)
        .in_org(seg(org_id)?);
        Ok(self.http.json::<CreatedWebhookWire>(&req).await?.into())
    }

    async fn update_webhook(
        &self,
        org_id: &str,
        endpoint_id: &str,
        patch: &WebhookPatch,
    ) -> ProviderResult<WebhookEndpoint> {
        let mut body = Map::new();
        if let Some(url) = &patch.url {
            body.insert("url".into(), json!(url));
        }
        if let Some(events) = &patch.events {
            body.insert("events".into(), json!(events));
        }
        if let Some(m) = &patch.metadata {
            body.insert("metadata".into(), metadata_value(m));
        }
        let req = Request::new(
            Method::PATCH,
            "/v1/webhook-endpoints/:endpointId",
            format!("/v1/webhook-endpoints/{}", seg(endpoint_id)?),
        )
        .json(&Value::Object(body))
        .idempotent_by_state()
        .in_org(seg(org_id)?);
        Ok(self.http.json::<WebhookWire>(&req).await?.into())
    }

    /// A 404 counts as done: the endpoint is gone, which is what was asked (and what a
    /// retry after a lost response sees).
    async fn delete_webhook(&self, org: &Owned, endpoint_id: &str) -> ProviderResult<()> {
        let org_id = org.org_id();
        let req = Request::new(
            Method::DELETE,
            "/v1/webhook-endpoints/:endpointId",
            format!("/v1/webhook-endpoints/{}", seg(endpoint_id)?),
        )
        .in_org(seg(org_id)?);
        match self.http.send(&req).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn rotate_webhook_secret(
        &self,
        org_id: &str,
        endpoint_id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<Secret> {
        let req = Request::new(
            Method::POST,
            "/v1/webhook-endpoints/:endpointId/rotate-secret",
            format!("/v1/webhook-endpoints/{}/rotate-secret", seg(endpoint_id)?),
        )
        .key(key)
        .in_org(seg(org_id)?);
        Ok(self
            .http
            .json::<RotatedSecretWire>(&req)
            .await?
            .signing_secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_checked_before_sending() {
        assert!(seg("org_3f1c7a52-6a59-4f0e-9d0b-1e2f3a4b5c6d").is_ok());
        assert!(seg("3f1c7a52-6a59-4f0e-9d0b-1e2f3a4b5c6d").is_ok());
        for bad in [
            "",
            "../whoami",
            "org_x?status=archived",
            "a/b",
            "ünï",
            "a b",
        ] {
            assert!(
                matches!(seg(bad), Err(ProviderError::Invalid(_))),
                "{bad:?} accepted"
            );
        }
        assert_eq!(
            org_path("org_1", "/suspend").unwrap(),
            "/v1/organizations/org_1/suspend"
        );
    }
}
