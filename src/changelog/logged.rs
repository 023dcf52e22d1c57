// Over 600 lines: one recording wrapper per Provider verb (the trait is long); each is a few lines.
//! The provider a pass uses, recording every write in the change log: one record per call
//! (whatever its outcome), with the before/after of what it changed. Reads pass through;
//! the orgs, keys and endpoints they return are kept for the "before" of a later write in
//! the same pass, and a ledger read records, as `observed`, the orgops transfers the
//! object's status had not recorded (their answers were lost with a killed process, or
//! they predate this object's tracking of the org).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::{Change, Outcome, Record, Recorder, Subject, emit};
use crate::provider::error::ProviderError;
use crate::provider::*;
use crate::reconcile::plan::{
    ALLOCATED_FROM, ALLOCATED_TO, ALLOCATION_MARKER, APPROVED_GENERATION, GUARDRAILS_CROSSED,
    TRANSFER_KEY, WEBHOOK_MARKER,
};
use crate::reconcile::status::org_state;

/// What this pass read, for the "before" of its writes.
#[derive(Default)]
struct Seen {
    orgs: HashMap<String, Org>,
    keys: HashMap<String, ApiKey>,
    hooks: HashMap<String, WebhookEndpoint>,
}

pub struct Logged {
    inner: Arc<dyn Provider>,
    recorder: Recorder,
    seen: Mutex<Seen>,
}

impl Logged {
    pub fn new(inner: Arc<dyn Provider>, subject: Subject) -> Logged {
        let vendor = inner.vendor();
        Logged {
            inner,
            recorder: Recorder { subject, vendor },
            seen: Mutex::new(Seen::default()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn saw_orgs<'a>(&self, orgs: impl IntoIterator<Item = &'a Org>) {
        let mut seen = self.seen();
        for o in orgs {
            seen.orgs.insert(o.id.clone(), o.clone());
        }
    }

    fn org(&self, id: &str) -> Option<Org> {
        self.seen().orgs.get(id).cloned()
    }

    /// One write, recorded: `describe` adds what the answer (or the call) says.
    async fn write<T>(
        &self,
        call: &str,
        org_id: Option<&str>,
        key: Option<&IdempotencyKey>,
        fut: impl std::future::Future<Output = ProviderResult<T>>,
        describe: impl FnOnce(&mut Record, Result<&T, &ProviderError>),
    ) -> ProviderResult<T> {
        self.recorder
            .write(call, fut, |r, result| {
                r.org_id = org_id.map(str::to_string);
                r.idempotency_key = key.map(|k| k.as_str().to_string());
                describe(r, result);
            })
            .await
    }

    /// The user `user_id` of org `org_id` as this pass read it, and how to name it (its
    /// email, else its id).
    fn user(&self, org_id: &str, user_id: &str) -> (Option<OrgUser>, String) {
        let before = self.org(org_id).and_then(|o| {
            o.users
                .into_iter()
                .find(|u| u.id.as_deref() == Some(user_id))
        });
        let who = before
            .as_ref()
            .map_or(user_id.to_string(), |u| u.email.clone());
        (before, who)
    }

    /// The state change of a suspend, resume or archive.
    fn state_change(&self, org_id: &str, after: &str) -> Change {
        let before = self.org(org_id).map(|o| org_state(o.status));
        Change::new("state", before, after)
    }

    /// Marked transfers on the ledger beyond what the object's status recorded.
    fn observed(&self, org_id: &str, rows: &[LedgerAllocation]) {
        let recorded = self.recorder.subject.recorded_allocated.unwrap_or(0);
        for row in rows {
            let Some(meta) = &row.metadata else { continue };
            if meta.get(ALLOCATION_MARKER).map(String::as_str) != Some("true") {
                continue;
            }
            let sum = |k: &str| meta.get(k).and_then(|v| v.parse::<i64>().ok());
            let (Some(from), Some(to)) = (sum(ALLOCATED_FROM), sum(ALLOCATED_TO)) else {
                continue;
            };
            if to <= recorded {
                continue;
            }
            let mut r =
                self.recorder
                    .subject
                    .record(self.recorder.vendor, "transfer", Outcome::Observed);
            r.org_id = Some(org_id.to_string());
            r.idempotency_key = meta.get(TRANSFER_KEY).cloned();
            r.result
                .insert("eventId".into(), row.event_id.clone().into());
            r.result.insert("credits".into(), row.credits.into());
            if let Some(txn) = meta.get("transferId") {
                r.result.insert("transferId".into(), txn.clone().into());
            }
            if let Some(at) = &row.created {
                r.result.insert("ledgerTime".into(), at.clone().into());
            }
            if let Some(g) = meta.get(APPROVED_GENERATION).and_then(|g| g.parse().ok()) {
                r.approval = Some(g);
                r.guardrails = meta
                    .get(GUARDRAILS_CROSSED)
                    .map(|c| c.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
            }
            r.changes.push(Change::new("credits.allocated", from, to));
            emit(&r);
        }
    }
}

fn key_view(k: &ApiKey) -> Value {
    json!({"id": k.id, "prefix": k.prefix, "scopes": k.scopes, "env": k.env, "status": match k.status {
        KeyStatus::Active => "active",
        KeyStatus::Revoked => "revoked",
    }})
}

fn config_changes(before: Option<&CreditConfig>, after: &CreditConfig) -> Vec<Change> {
    let refill =
        |c: Option<&CreditConfig>, f: fn(&Refill) -> u64| c.and_then(|c| c.refill.as_ref()).map(f);
    let mut out = Vec::new();
    let cap_before = before.and_then(|c| c.monthly_cap);
    if before.is_none() || cap_before != after.monthly_cap {
        out.push(Change::new(
            "credits.monthlyCap",
            cap_before,
            after.monthly_cap,
        ));
    }
    for (field, f) in [
        (
            "credits.autoRefill.threshold",
            (|r: &Refill| r.threshold) as fn(&Refill) -> u64,
        ),
        ("credits.autoRefill.amount", |r: &Refill| r.amount),
    ] {
        let (b, a) = (refill(before, f), refill(Some(after), f));
        if before.is_none() || b != a {
            out.push(Change::new(field, b, a));
        }
    }
    out
}

#[async_trait]
impl Provider for Logged {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn vendor(&self) -> &'static str {
        self.inner.vendor()
    }
    async fn whoami(&self) -> ProviderResult<Identity> {
        self.inner.whoami().await
    }
    async fn get_org(&self, org_id: &str) -> ProviderResult<Option<Org>> {
        let org = self.inner.get_org(org_id).await?;
        self.saw_orgs(org.iter());
        Ok(org)
    }
    async fn find_orgs_by_external_id(&self, external_id: &str) -> ProviderResult<Vec<Org>> {
        let orgs = self.inner.find_orgs_by_external_id(external_id).await?;
        self.saw_orgs(&orgs);
        Ok(orgs)
    }
    async fn find_orgs_by_owner(&self, owner: &str) -> ProviderResult<Vec<Org>> {
        let orgs = self.inner.find_orgs_by_owner(owner).await?;
        self.saw_orgs(&orgs);
        Ok(orgs)
    }
    async fn find_orgs_by_metadata(&self, key: &str, value: &str) -> ProviderResult<Vec<Org>> {
        let orgs = self.inner.find_orgs_by_metadata(key, value).await?;
        self.saw_orgs(&orgs);
        Ok(orgs)
    }
    async fn find_orgs_by_name(&self, name: &str) -> ProviderResult<Vec<Org>> {
        let orgs = self.inner.find_orgs_by_name(name).await?;
        self.saw_orgs(&orgs);
        Ok(orgs)
    }
    async fn list_orgs(&self) -> ProviderResult<Vec<Org>> {
        self.inner.list_orgs().await
    }
    async fn create_org(&self, new: &NewOrg, key: &IdempotencyKey) -> ProviderResult<Org> {
        let org = self
            .write(
                "create",
                None,
                Some(key),
                self.inner.create_org(new, key),
                |r, res| {
                    r.changes.push(Change::new("name", Value::Null, &new.name));
                    if new.billing_email.is_some() {
                        r.changes.push(Change::new(
                            "billingEmail",
                            Value::Null,
                            &new.billing_email,
                        ));
                    }
                    for (k, v) in &new.metadata {
                        r.changes
                            .push(Change::new(format!("metadata.{k}"), Value::Null, v));
                    }
                    if let Ok(org) = res {
                        r.org_id = Some(org.id.clone());
                        r.result.insert("orgId".into(), org.id.clone().into());
                    }
                },
            )
            .await?;
        self.saw_orgs([&org]);
        Ok(org)
    }
    async fn migrate_projects(
        &self,
        projects: &[String],
        name: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<Migrated> {
        let migrated = self
            .write(
                "migrate",
                None,
                Some(key),
                self.inner.migrate_projects(projects, name, key),
                |r, res| {
                    r.changes
                        .push(Change::new("projects", Value::Null, projects));
                    if let Ok(m) = res {
                        r.org_id = Some(m.org.id.clone());
                        r.result.insert("orgId".into(), m.org.id.clone().into());
                        r.result.insert("projectIds".into(), json!(m.project_ids));
                    }
                },
            )
            .await?;
        self.saw_orgs([&migrated.org]);
        Ok(migrated)
    }
    async fn update_org(&self, org_id: &str, patch: &OrgPatch) -> ProviderResult<Org> {
        let before = self.org(org_id);
        let org = self
            .write(
                "update",
                Some(org_id),
                None,
                self.inner.update_org(org_id, patch),
                |r, _| {
                    if let Some(name) = &patch.name {
                        r.changes
                            .push(Change::new("name", before.as_ref().map(|o| &o.name), name));
                    }
                    if let Some(email) = &patch.billing_email {
                        r.changes.push(Change::new(
                            "billingEmail",
                            before.as_ref().and_then(|o| o.billing_email.clone()),
                            email,
                        ));
                    }
                    for (k, v) in patch.metadata.iter().flatten() {
                        let was = before.as_ref().and_then(|o| o.metadata.get(k));
                        let now = (!v.is_empty()).then_some(v);
                        r.changes
                            .push(Change::new(format!("metadata.{k}"), was, now));
                    }
                },
            )
            .await?;
        self.saw_orgs([&org]);
        Ok(org)
    }
    async fn suspend_org(&self, org: &Owned) -> ProviderResult<Org> {
        self.suspend_org_with(org, &SuspendReason::default()).await
    }
    async fn suspend_org_with(&self, org: &Owned, why: &SuspendReason) -> ProviderResult<Org> {
        let org_id = org.org_id();
        let change = self.state_change(org_id, "suspended");
        let org = self
            .write(
                "suspend",
                Some(org_id),
                None,
                self.inner.suspend_org_with(org, why),
                |r, _| r.changes.push(change),
            )
            .await?;
        self.saw_orgs([&org]);
        Ok(org)
    }
    async fn update_user(
        &self,
        org_id: &str,
        user_id: &str,
        name: Option<&str>,
        role: &str,
    ) -> ProviderResult<Org> {
        let (before, who) = self.user(org_id, user_id);
        let org = self
            .write(
                "user-update",
                Some(org_id),
                None,
                self.inner.update_user(org_id, user_id, name, role),
                |r, _| {
                    r.result.insert("userId".into(), user_id.into());
                    r.changes.push(Change::new(
                        format!("users[{who}].role"),
                        before.as_ref().map(|u| &u.role),
                        role,
                    ));
                    if let Some(n) = name {
                        r.changes.push(Change::new(
                            format!("users[{who}].name"),
                            before.as_ref().and_then(|u| u.name.clone()),
                            n,
                        ));
                    }
                },
            )
            .await?;
        self.saw_orgs([&org]);
        Ok(org)
    }
    async fn remove_user(&self, org: &Owned, user_id: &str) -> ProviderResult<Org> {
        let org_id = org.org_id();
        let (before, who) = self.user(org_id, user_id);
        let org = self
            .write(
                "user-remove",
                Some(org_id),
                None,
                self.inner.remove_user(org, user_id),
                |r, _| {
                    r.result.insert("userId".into(), user_id.into());
                    r.changes.push(Change::new(
                        format!("users[{who}]"),
                        before.as_ref().map(|u| &u.role),
                        Value::Null,
                    ));
                },
            )
            .await?;
        self.saw_orgs([&org]);
        Ok(org)
    }
    async fn resume_org(&self, org_id: &str) -> ProviderResult<Org> {
        let change = self.state_change(org_id, "active");
        let org = self
            .write(
                "resume",
                Some(org_id),
                None,
                self.inner.resume_org(org_id),
                |r, _| r.changes.push(change),
            )
            .await?;
        self.saw_orgs([&org]);
        Ok(org)
    }
    async fn archive_org(&self, org: &Owned) -> ProviderResult<ArchiveResult> {
        let org_id = org.org_id();
        let change = self.state_change(org_id, "archived");
        self.write(
            "archive",
            Some(org_id),
            None,
            self.inner.archive_org(org),
            |r, res| {
                r.changes.push(change);
                if let Ok(a) = res {
                    r.result
                        .insert("reclaimedCredits".into(), a.reclaimed_credits.into());
                    r.result
                        .insert("revokedApiKeys".into(), a.revoked_api_keys.into());
                }
            },
        )
        .await
    }
    async fn get_credit_config(&self, org_id: &str) -> ProviderResult<CreditConfig> {
        self.inner.get_credit_config(org_id).await
    }
    async fn set_credit_config(
        &self,
        org_id: &str,
        config: &CreditConfig,
    ) -> ProviderResult<CreditConfig> {
        let before = self
            .org(org_id)
            .and_then(|o| o.summary.map(|s| s.credit_config));
        self.write(
            "credit-config",
            Some(org_id),
            None,
            self.inner.set_credit_config(org_id, config),
            |r, _| r.changes = config_changes(before.as_ref(), config),
        )
        .await
    }
    async fn allocate_credits(
        &self,
        org_id: &str,
        credits: u64,
        metadata: &BTreeMap<String, String>,
        key: &IdempotencyKey,
    ) -> ProviderResult<Transfer> {
        let subject = &self.recorder.subject;
        let approval = subject.approval;
        let crossed = crate::reconcile::credit_guard::approved_crossings(key);
        let sum = |k: &str| metadata.get(k).and_then(|v| v.parse::<i64>().ok());
        let (from, to) = (sum(ALLOCATED_FROM), sum(ALLOCATED_TO));
        self.write(
            "transfer",
            Some(org_id),
            Some(key),
            self.inner.allocate_credits(org_id, credits, metadata, key),
            |r, res| {
                r.result.insert("credits".into(), credits.into());
                if let (Some(from), Some(to)) = (from, to) {
                    r.changes.push(Change::new("credits.allocated", from, to));
                }
                if let Ok(t) = res {
                    r.result.insert("transferId".into(), t.id.clone().into());
                    r.result.insert("credits".into(), t.credits.into());
                    r.result.insert("replayed".into(), t.replayed.into());
                    r.result.insert("childBalance".into(), t.balance.into());
                }
                if !crossed.is_empty() {
                    r.guardrails = crossed;
                    r.approval = approval;
                }
            },
        )
        .await
    }
    async fn list_allocations(&self, org_id: &str) -> ProviderResult<Vec<LedgerAllocation>> {
        let rows = self.inner.list_allocations(org_id).await?;
        self.observed(org_id, &rows);
        Ok(rows)
    }
    async fn parent_balance(&self) -> ProviderResult<i64> {
        self.inner.parent_balance().await
    }
    async fn mint_key(
        &self,
        org_id: &str,
        new: &NewApiKey,
        key: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        self.write(
            "mint",
            Some(org_id),
            Some(key),
            self.inner.mint_key(org_id, new, key),
            |r, res| {
                let after = match res {
                    Ok(m) => {
                        r.result.insert("keyId".into(), m.key.id.clone().into());
                        key_view(&m.key)
                    }
                    Err(_) => json!({"scopes": new.scopes, "env": new.env}),
                };
                r.changes.push(Change::new(
                    format!("apiKeys[{}]", new.name),
                    Value::Null,
                    after,
                ));
            },
        )
        .await
    }
    async fn list_keys(&self, org_id: &str) -> ProviderResult<Vec<ApiKey>> {
        let keys = self.inner.list_keys(org_id).await?;
        let mut seen = self.seen();
        for k in &keys {
            seen.keys.insert(k.id.clone(), k.clone());
        }
        Ok(keys)
    }
    async fn rotate_key(
        &self,
        org_id: &str,
        key_id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<MintedKey> {
        let before = self.seen().keys.get(key_id).cloned();
        self.write(
            "rotate",
            Some(org_id),
            Some(key),
            self.inner.rotate_key(org_id, key_id, key),
            |r, res| {
                r.result.insert("previousKeyId".into(), key_id.into());
                let name = before.as_ref().map(|k| k.name.clone());
                let after = match res {
                    Ok(m) => {
                        r.result.insert("keyId".into(), m.key.id.clone().into());
                        Some(m.key.id.clone())
                    }
                    Err(_) => None,
                };
                let name = name
                    .or_else(|| res.ok().map(|m| m.key.name.clone()))
                    .unwrap_or_else(|| key_id.to_string());
                r.changes
                    .push(Change::new(format!("apiKeys[{name}].id"), key_id, after));
            },
        )
        .await
    }
    async fn revoke_key(&self, org: &Owned, key_id: &str) -> ProviderResult<()> {
        let org_id = org.org_id();
        let before = self.seen().keys.get(key_id).cloned();
        self.write(
            "revoke",
            Some(org_id),
            None,
            self.inner.revoke_key(org, key_id),
            |r, _| {
                r.result.insert("keyId".into(), key_id.into());
                let name = before.as_ref().map_or(key_id, |k| k.name.as_str());
                r.changes.push(Change::new(
                    format!("apiKeys[{name}].status"),
                    "active",
                    "revoked",
                ));
            },
        )
        .await
    }
    async fn list_webhooks(&self, org_id: &str) -> ProviderResult<Vec<WebhookEndpoint>> {
        let hooks = self.inner.list_webhooks(org_id).await?;
        let mut seen = self.seen();
        for h in &hooks {
            seen.hooks.insert(h.id.clone(), h.clone());
        }
        Ok(hooks)
    }
    async fn create_webhook(
        &self,
        org_id: &str,
        new: &NewWebhook,
        key: &IdempotencyKey,
    ) -> ProviderResult<CreatedWebhook> {
        let name = new
            .metadata
            .get(WEBHOOK_MARKER)
            .cloned()
            .unwrap_or_default();
        self.write(
            "webhook-create",
            Some(org_id),
            Some(key),
            self.inner.create_webhook(org_id, new, key),
            |r, res| {
                let mut after = json!({"url": new.url, "events": new.events});
                if let Ok(c) = res {
                    r.result
                        .insert("endpointId".into(), c.endpoint.id.clone().into());
                    after["id"] = c.endpoint.id.clone().into();
                }
                r.changes
                    .push(Change::new(format!("webhooks[{name}]"), Value::Null, after));
            },
        )
        .await
    }
    async fn update_webhook(
        &self,
        org_id: &str,
        endpoint_id: &str,
        patch: &WebhookPatch,
    ) -> ProviderResult<WebhookEndpoint> {
        let before = self.seen().hooks.get(endpoint_id).cloned();
        let name = before
            .as_ref()
            .and_then(|h| h.metadata.get(WEBHOOK_MARKER).cloned())
            .unwrap_or_else(|| endpoint_id.to_string());
        self.write(
            "webhook-update",
            Some(org_id),
            None,
            self.inner.update_webhook(org_id, endpoint_id, patch),
            |r, _| {
                r.result.insert("endpointId".into(), endpoint_id.into());
                if let Some(url) = &patch.url {
                    r.changes.push(Change::new(
                        format!("webhooks[{name}].url"),
                        before.as_ref().map(|h| &h.url),
                        url,
                    ));
                }
                if let Some(events) = &patch.events {
                    r.changes.push(Change::new(
                        format!("webhooks[{name}].events"),
                        before.as_ref().map(|h| &h.events),
                        events,
                    ));
                }
                if let Some(m) = &patch.metadata {
                    r.changes.push(Change::new(
                        format!("webhooks[{name}].metadata"),
                        before.as_ref().map(|h| &h.metadata),
                        m,
                    ));
                }
            },
        )
        .await
    }
    async fn delete_webhook(&self, org: &Owned, endpoint_id: &str) -> ProviderResult<()> {
        let org_id = org.org_id();
        let before = self.seen().hooks.get(endpoint_id).cloned();
        self.write(
            "webhook-delete",
            Some(org_id),
            None,
            self.inner.delete_webhook(org, endpoint_id),
            |r, _| {
                r.result.insert("endpointId".into(), endpoint_id.into());
                let name = before
                    .as_ref()
                    .and_then(|h| h.metadata.get(WEBHOOK_MARKER).cloned())
                    .unwrap_or_else(|| endpoint_id.to_string());
                r.changes.push(Change::new(
                    format!("webhooks[{name}]"),
                    before
                        .as_ref()
                        .map(|h| json!({"id": h.id, "url": h.url, "events": h.events})),
                    Value::Null,
                ));
            },
        )
        .await
    }
    async fn rotate_webhook_secret(
        &self,
        org_id: &str,
        endpoint_id: &str,
        key: &IdempotencyKey,
    ) -> ProviderResult<Secret> {
        self.write(
            "webhook-rotate-secret",
            Some(org_id),
            Some(key),
            self.inner.rotate_webhook_secret(org_id, endpoint_id, key),
            |r, _| {
                r.result.insert("endpointId".into(), endpoint_id.into());
                // The secret itself is never recorded: only that it changed.
                r.changes.push(Change::new(
                    format!("webhooks[{endpoint_id}].signingSecret"),
                    Value::Null,
                    "rotated",
                ));
            },
        )
        .await
    }
}
