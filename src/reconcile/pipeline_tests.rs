//! Unit tests of `pipeline`.

use super::observe::{recorded_id, trusted};
use super::*;
use crate::provider::NewApiKey;
use crate::provider::error::test_failure as failure;
use crate::reconcile::plan::{REASON_API_REJECTED, SecretSeen};

fn reason(v: &Verdict) -> &str {
    match v {
        Verdict::Stalled { reason, .. } | Verdict::Waiting { reason, .. } => reason,
        _ => "",
    }
}

#[test]
fn a_cached_secret_stands_in_for_a_read_only_when_it_holds_the_recorded_id() {
    let owned = |id: Option<&str>| SecretSeen::Owned {
        id: id.map(str::to_string),
        rotated_for: Some("r1".into()),
    };
    // Agrees with the status: no read.
    assert_eq!(
        trusted(Some(owned(Some("key_2"))), Some("key_2")),
        Some(owned(Some("key_2")))
    );
    // Behind our own write (the claim, or the previous key): read.
    assert_eq!(trusted(Some(owned(None)), Some("key_2")), None);
    assert_eq!(trusted(Some(owned(Some("key_1"))), Some("key_2")), None);
    // Nothing recorded (a first pass), missing from the cache, or another's: read.
    assert_eq!(trusted(Some(owned(Some("key_2"))), None), None);
    assert_eq!(trusted(None, Some("key_2")), None);
    assert_eq!(trusted(Some(SecretSeen::Foreign), Some("key_2")), None);
}

#[test]
fn the_recorded_id_is_the_status_entry_of_that_secret() {
    let corg: CustomerOrg = serde_json::from_value(serde_json::json!({
        "apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
        "metadata": {"name": "a", "namespace": "ns"},
        "spec": {"displayName": "A", "providerRef": {"name": "p"}},
        "status": {
            "apiKeys": [{"name": "k", "id": "key_1", "prefix": "", "secretName": "a-k", "specHash": ""},
                        {"name": "c", "id": "", "prefix": "", "secretName": "a-c", "specHash": ""}],
            "webhooks": [{"name": "w", "id": "wh_1", "secretName": "a-w", "specHash": ""}],
        },
    }))
    .expect("CustomerOrg");
    assert_eq!(recorded_id(&corg, "a-k"), Some("key_1"));
    assert_eq!(recorded_id(&corg, "a-w"), Some("wh_1"));
    assert_eq!(recorded_id(&corg, "a-c"), None, "no id yet");
    assert_eq!(recorded_id(&corg, "other"), None);
}

#[test]
fn failures_map_to_the_right_stall_and_retry() {
    let (v, retry, ev) =
        provider_failure(&ProviderError::Validation(failure(422, "VALIDATION")), None);
    assert_eq!((reason(&v), retry), (REASON_API_REJECTED, Retry::Slow));
    assert!(ev.is_some_and(|e| e.warning && e.note.contains("not allowed")));

    // A parent top-up fixes this without a spec change: not the generation gate.
    let (v, retry, _) = provider_failure(
        &ProviderError::BillingExhausted(failure(402, "BILLING_EXHAUSTED")),
        None,
    );
    assert_eq!((reason(&v), retry), ("InsufficientCredits", Retry::Slow));

    let (v, retry, _) = provider_failure(
        &ProviderError::Unauthenticated(failure(401, "UNAUTHENTICATED")),
        None,
    );
    assert_eq!((reason(&v), retry), ("ProviderUnauthorized", Retry::Slow));

    let (v, retry, ev) = provider_failure(&ProviderError::Timeout, None);
    assert!(matches!(v, Verdict::Transient { .. }));
    assert_eq!(retry, Retry::Backoff);
    assert!(ev.is_none());
}

/// A mint of key `crm` with `scopes`.
fn mint(scopes: &[&str]) -> Action {
    Action::MintKey {
        name: "crm".into(),
        new: NewApiKey {
            name: "crm".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            env: crate::provider::KeyEnv::Live,
        },
        secret_name: "s".into(),
        spec_hash: String::new(),
        rotation: None,
        claim: true,
        replaces: Vec::new(),
        key: crate::reconcile::idempotency::derive(&["x"]),
    }
}

#[test]
fn a_scope_refusal_on_mint_blames_the_spec_not_the_credentials() {
    let mint = mint(&["billing:write"]);
    let e = ProviderError::ForbiddenScope(failure(403, "FORBIDDEN_SCOPE"));
    let (v, retry, _) = provider_failure(&e, Some(&mint));
    assert_eq!((reason(&v), retry), (REASON_API_REJECTED, Retry::Slow));
    let Verdict::Stalled { message, .. } = v else {
        unreachable!()
    };
    assert!(message.contains("billing:write") && message.contains("spec.apiKeys[crm]"));
    // The same code on an org read is the parent key's problem.
    let (v, _, _) = provider_failure(&e, None);
    assert_eq!(reason(&v), "ProviderUnauthorized");
}

/// Issue 27, item 6: a 409 telling that the original request under the same key is
/// still running (the client tells it from the body's `details.inFlight`) is "later,
/// same key", on every keyed write: never `Stalled ApiRejected` gated until a spec edit.
#[test]
fn an_in_flight_duplicate_is_retried_later_never_a_stall() {
    let mut f = failure(409, "IDEMPOTENCY_CONFLICT");
    f.retry_after = Some(std::time::Duration::from_secs(1));
    let e = ProviderError::InFlight(f);
    let key = crate::reconcile::idempotency::derive(&["x"]);
    let actions = [
        mint(&["content:read"]),
        Action::RotateKey {
            name: "crm".into(),
            key_id: "key_1".into(),
            secret_name: "s".into(),
            spec_hash: String::new(),
            rotation: None,
            recover: true,
            key: key.clone(),
        },
        Action::CreateWebhook {
            name: "hook".into(),
            new: crate::provider::NewWebhook {
                url: "https://x.example".into(),
                events: vec!["post.published".into()],
                metadata: Default::default(),
            },
            secret_name: "s".into(),
            absent: true,
            spec_hash: String::new(),
            key,
        },
    ];
    for action in &actions {
        let (v, retry, ev) = provider_failure(&e, Some(action));
        assert!(
            matches!(v, Verdict::Transient { .. }),
            "{}: {v:?}",
            apply::describe(action)
        );
        assert_eq!(retry, Retry::Backoff);
        assert!(ev.is_none(), "no Warning for a request still running");
    }
    assert!(!e.needs_human() && e.is_retryable());
}

#[test]
fn a_long_retry_after_waits_for_the_window_and_says_when() {
    let mut f = failure(429, "RATE_LIMITED");
    f.retry_after = Some(std::time::Duration::from_secs(7200));
    let (v, retry, ev) = provider_failure(&ProviderError::RateLimited(f), None);
    assert_eq!(reason(&v), "RateLimited");
    assert_eq!(retry, Retry::After(std::time::Duration::from_secs(7200)));
    assert!(ev.is_some_and(|e| e.note.contains("7200s")));
}
