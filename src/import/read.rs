//! Reading the provider for an import: one listing of every live org, then, per org not
//! owned yet, what the spec and the report need (the org with its summary or users, the
//! allocation ledger, keys, endpoints), `concurrency` orgs at a time. Every request goes
//! through the provider's own client, so its rate limiter (sized from the tier) paces them;
//! the provider is wrapped read-only, so none of them can be a write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::{StreamExt, stream};

use crate::provider::error::ProviderError;
use crate::provider::{ApiKey, LedgerAllocation, Org, Provider, WebhookEndpoint};

/// What was read for one org.
#[derive(Clone, Debug)]
pub struct Observed {
    pub org: Org,
    /// Allocation events of the child's ledger (providers with a ledger).
    pub allocations: Option<Vec<LedgerAllocation>>,
    /// Every key of the child, revoked ones included (providers with child keys).
    pub keys: Option<Vec<ApiKey>>,
    /// Webhook endpoints inside the child (providers with webhooks).
    pub webhooks: Option<Vec<WebhookEndpoint>>,
}

/// One org that could not be read: which read, and the provider's answer.
#[derive(Debug)]
pub struct Failed {
    pub org_id: String,
    pub step: &'static str,
    pub error: ProviderError,
}

/// An org listed but gone (404) by the time it was read.
pub enum Outcome {
    Read(Box<Observed>),
    Gone(String),
}

/// Reads every org of `orgs` (as listed) in full, `concurrency` at a time, printing
/// progress to stderr every 1,000 orgs; results in the order of `orgs`.
pub async fn details(
    provider: &dyn Provider,
    orgs: Vec<Org>,
    concurrency: usize,
) -> Vec<Result<Outcome, Failed>> {
    let total = orgs.len();
    let done = AtomicUsize::new(0);
    let started = Instant::now();
    let mut results: BTreeMap<usize, Result<Outcome, Failed>> =
        stream::iter(orgs.into_iter().enumerate())
            .map(|(i, org)| {
                let done = &done;
                async move {
                    let result = one(provider, org).await;
                    let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_multiple_of(1000) && n < total {
                        eprintln!(
                            "  ... read {n}/{total} orgs in {:.0}s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                    (i, result)
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    (0..total).filter_map(|i| results.remove(&i)).collect()
}

/// `read`'s answer when `wanted` (a capability the provider has), else `None` unread.
async fn when<T>(
    wanted: bool,
    read: impl std::future::Future<Output = crate::provider::ProviderResult<T>>,
    fail: impl FnOnce(ProviderError) -> Failed,
) -> Result<Option<T>, Failed> {
    if !wanted {
        return Ok(None);
    }
    read.await.map(Some).map_err(fail)
}

async fn one(provider: &dyn Provider, listed: Org) -> Result<Outcome, Failed> {
    let caps = provider.capabilities();
    let id = listed.id.clone();
    let fail = |step: &'static str| {
        let org_id = id.clone();
        move |error| Failed {
            org_id,
            step,
            error,
        }
    };
    // Listing rows carry no summary (credit config) and no users: read the org for them.
    let org = if (caps.credit_config || caps.users) && listed.summary.is_none() {
        match provider
            .get_org(&id)
            .await
            .map_err(fail("reading the org"))?
        {
            Some(org) => org,
            None => return Ok(Outcome::Gone(id)),
        }
    } else {
        listed
    };
    let allocations = when(
        caps.allocation_ledger,
        provider.list_allocations(&id),
        fail("listing its ledger's allocations"),
    )
    .await?;
    let keys = when(
        caps.child_api_keys,
        provider.list_keys(&id),
        fail("listing its API keys"),
    )
    .await?;
    let webhooks = when(
        caps.webhooks,
        provider.list_webhooks(&id),
        fail("listing its webhook endpoints"),
    )
    .await?;
    Ok(Outcome::Read(Box::new(Observed {
        org,
        allocations,
        keys,
        webhooks,
    })))
}
