//! The first reconcile of an object in this process (a restart, a new leader) that finds
//! it converged at its generation makes no provider call: its first verification is
//! deferred by a random share of the resync interval, so a restart does not verify every
//! object at once (rule 5: one GET per object per resync, spread).
//!
//! While deferred, a trigger for exactly the same object (same resourceVersion) with the
//! same owned Secrets (same resourceVersions, still ours, same ids) only re-schedules
//! the deferred time: these are the start-up list events of Secrets and providers. Any
//! other trigger (a spec, annotation or status edit, a changed or deleted Secret, a
//! change of its provider via `cancel`) does the full pass at once.
use crate::api::conditions::READY;
use crate::api::{CustomerOrg, ROTATE_KEYS_ANNOTATION};
use crate::reconcile::secrets::{KEY_ID_ANNOTATION, WEBHOOK_ID_ANNOTATION};
use kube::ResourceExt;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A deferral this close to its due time is due (timer granularity).
const DUE_TOLERANCE: Duration = Duration::from_millis(50);

/// An owned Secret as the object's status expects it, and the version seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    pub name: String,
    pub resource_version: String,
}

/// What the status says an owned Secret must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedSecret<'a> {
    pub name: &'a str,
    /// Annotation that must carry `id` (`orgops.dev/key-id` or `orgops.dev/webhook-id`).
    pub id_annotation: &'static str,
    pub id: &'a str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// The OrgProvider it uses: only that provider's changes end the deferral.
    provider: String,
    resource_version: String,
    secrets: Vec<SecretVersion>,
    due: Instant,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Reconciled in this process: every trigger does the work.
    Seen,
    Deferred(Deferred),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Do the full pass.
    Reconcile,
    /// First sight of a converged object: no provider call, defer the first look.
    Defer,
    /// Still deferred and nothing changed: look again in this long.
    Wait(Duration),
}

/// Ready=True at the current generation, not deleting, no rotation pending.
pub fn converged(corg: &CustomerOrg) -> bool {
    let Some(status) = corg.status.as_ref() else {
        return false;
    };
    let generation = corg.metadata.generation;
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.status == "True" && c.observed_generation == generation);
    let rotation_pending = corg
        .annotations()
        .get(ROTATE_KEYS_ANNOTATION)
        .is_some_and(|v| status.keys_rotated_for.as_deref() != Some(v.as_str()));
    generation.is_some()
        && status.observed_generation == generation
        && ready
        && corg.metadata.deletion_timestamp.is_none()
        && !rotation_pending
}

/// The owned Secrets the status names, with the id each must point at.
pub fn expected_secrets(corg: &CustomerOrg) -> Vec<ExpectedSecret<'_>> {
    let Some(status) = corg.status.as_ref() else {
        return Vec::new();
    };
    let keys = status.api_keys.iter().map(|k| ExpectedSecret {
        name: &k.secret_name,
        id_annotation: KEY_ID_ANNOTATION,
        id: &k.id,
    });
    let hooks = status.webhooks.iter().map(|w| ExpectedSecret {
        name: &w.secret_name,
        id_annotation: WEBHOOK_ID_ANNOTATION,
        id: &w.id,
    });
    keys.chain(hooks).collect()
}

/// Pure: what to do with a trigger. `secrets`: the expected Secrets' versions, None when
/// one is missing or not as the status expects.
pub fn decide(
    previous: Option<&Entry>,
    corg: &CustomerOrg,
    secrets: Option<&[SecretVersion]>,
    now: Instant,
) -> Decision {
    match previous {
        Some(Entry::Seen) => Decision::Reconcile,
        None if converged(corg) && secrets.is_some() => Decision::Defer,
        None => Decision::Reconcile,
        Some(Entry::Deferred(d)) => {
            let left = d.due.saturating_duration_since(now);
            let same = corg.metadata.resource_version.as_deref()
                == Some(d.resource_version.as_str())
                && secrets == Some(d.secrets.as_slice());
            if same && left > DUE_TOLERANCE {
                Decision::Wait(left)
            } else {
                Decision::Reconcile
            }
        }
    }
}

/// Per object in this process: seen, or deferred until when.
#[derive(Debug)]
pub struct FirstSeen<K> {
    entries: Mutex<HashMap<K, Entry>>,
}

impl<K: Eq + Hash> Default for FirstSeen<K> {
    fn default() -> Self {
        FirstSeen {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> FirstSeen<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides and records: a deferral gets a due time `delay` from now; a full pass
    /// marks the object seen. Returns None for a full pass, else how long to wait.
    pub fn check(
        &self,
        key: &K,
        corg: &CustomerOrg,
        secrets: Option<Vec<SecretVersion>>,
        delay: impl FnOnce() -> Duration,
    ) -> Option<Duration> {
        let now = Instant::now();
        let mut entries = self.lock();
        match decide(entries.get(key), corg, secrets.as_deref(), now) {
            Decision::Reconcile => {
                entries.insert(key.clone(), Entry::Seen);
                None
            }
            Decision::Wait(left) => Some(left),
            Decision::Defer => {
                let delay = delay();
                let deferred = Deferred {
                    provider: corg.spec.provider_ref.name.clone(),
                    resource_version: corg.metadata.resource_version.clone().unwrap_or_default(),
                    secrets: secrets.unwrap_or_default(),
                    due: now + delay,
                };
                entries.insert(key.clone(), Entry::Deferred(deferred));
                Some(delay)
            }
        }
    }

    /// Whether `key` waits for a deferred first look (then it needs the Secret versions).
    pub fn is_new_or_deferred(&self, key: &K) -> bool {
        !matches!(self.lock().get(key), Some(Entry::Seen))
    }

    /// `provider` changed (None: any may have): the deferred objects using it do their
    /// full pass on their next trigger.
    pub fn cancel(&self, provider: Option<&str>) {
        self.lock().values_mut().for_each(|e| {
            if let Entry::Deferred(d) = e
                && provider.is_none_or(|p| p == d.provider)
            {
                *e = Entry::Seen;
            }
        });
    }

    /// The object is going away.
    pub fn forget(&self, key: &K) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ApiKeyStatus, CustomerOrgStatus, WebhookStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    const RESYNC: Duration = Duration::from_secs(600);

    fn converged_org() -> CustomerOrg {
        let mut corg: CustomerOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "CustomerOrg",
            "metadata": {"name": "acme", "namespace": "ns", "generation": 3, "resourceVersion": "100"},
            "spec": {"displayName": "Acme", "providerRef": {"name": "layers"}},
        }))
        .expect("a valid CustomerOrg");
        corg.status = Some(CustomerOrgStatus {
            org_id: Some("org_1".into()),
            observed_generation: Some(3),
            api_keys: vec![ApiKeyStatus {
                name: "backend".into(),
                id: "key_1".into(),
                secret_name: "acme-backend".into(),
                ..Default::default()
            }],
            webhooks: vec![WebhookStatus {
                name: "billing".into(),
                id: "we_1".into(),
                secret_name: "acme-billing".into(),
                ..Default::default()
            }],
            conditions: vec![Condition {
                type_: READY.into(),
                status: "True".into(),
                reason: "Reconciled".into(),
                message: String::new(),
                observed_generation: Some(3),
                last_transition_time: crate::api::conditions::now(),
            }],
            ..Default::default()
        });
        corg
    }

    fn secrets() -> Vec<SecretVersion> {
        ["acme-backend", "acme-billing"]
            .iter()
            .map(|n| SecretVersion {
                name: n.to_string(),
                resource_version: "7".into(),
            })
            .collect()
    }

    fn deferred(due_in: Duration, now: Instant) -> Entry {
        Entry::Deferred(Deferred {
            provider: "layers".into(),
            resource_version: "100".into(),
            secrets: secrets(),
            due: now + due_in,
        })
    }

    #[test]
    fn first_sight_of_a_converged_object_with_its_secrets_is_deferred() {
        let corg = converged_org();
        let now = Instant::now();
        assert_eq!(decide(None, &corg, Some(&secrets()), now), Decision::Defer);
        assert_eq!(
            decide(Some(&Entry::Seen), &corg, Some(&secrets()), now),
            Decision::Reconcile,
            "seen in this process: every trigger works as before"
        );
        assert_eq!(
            decide(None, &corg, None, now),
            Decision::Reconcile,
            "a missing Secret is repaired at once"
        );
    }

    #[test]
    fn objects_not_converged_at_their_generation_are_reconciled_at_once() {
        let now = Instant::now();
        let s = secrets();
        let mut edited = converged_org();
        edited.metadata.generation = Some(4);
        assert_eq!(decide(None, &edited, Some(&s), now), Decision::Reconcile);

        let mut rotating = converged_org();
        rotating
            .annotations_mut()
            .insert(ROTATE_KEYS_ANNOTATION.into(), "2026-11".into());
        assert_eq!(decide(None, &rotating, Some(&s), now), Decision::Reconcile);
        if let Some(st) = rotating.status.as_mut() {
            st.keys_rotated_for = Some("2026-11".into());
        }
        assert_eq!(decide(None, &rotating, Some(&s), now), Decision::Defer);

        let mut deleting = converged_org();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(decide(None, &deleting, Some(&s), now), Decision::Reconcile);

        let mut not_ready = converged_org();
        if let Some(st) = not_ready.status.as_mut() {
            st.conditions[0].status = "False".into();
        }
        assert_eq!(decide(None, &not_ready, Some(&s), now), Decision::Reconcile);

        let mut fresh = converged_org();
        fresh.status = None;
        assert_eq!(decide(None, &fresh, Some(&[]), now), Decision::Reconcile);
    }

    #[test]
    fn a_deferred_object_waits_only_while_nothing_changed() {
        let corg = converged_org();
        let now = Instant::now();
        let entry = deferred(Duration::from_secs(30), now);
        let s = secrets();
        match decide(Some(&entry), &corg, Some(&s), now) {
            Decision::Wait(left) => assert_eq!(left, Duration::from_secs(30)),
            other => panic!("expected a wait, got {other:?}"),
        }
        let mut changed = corg.clone();
        changed.metadata.resource_version = Some("101".into());
        assert_eq!(
            decide(Some(&entry), &changed, Some(&s), now),
            Decision::Reconcile
        );
        let mut other_secret = secrets();
        other_secret[1].resource_version = "8".into();
        assert_eq!(
            decide(Some(&entry), &corg, Some(&other_secret), now),
            Decision::Reconcile,
            "a changed Secret"
        );
        assert_eq!(
            decide(Some(&entry), &corg, None, now),
            Decision::Reconcile,
            "a deleted Secret"
        );
        let due = deferred(Duration::ZERO, now);
        assert_eq!(
            decide(Some(&due), &corg, Some(&s), now),
            Decision::Reconcile,
            "the deferred first look"
        );
    }

    #[test]
    fn check_records_deferrals_and_a_change_of_their_provider_ends_them() {
        let fs = FirstSeen::default();
        let corg = converged_org();
        let delay = fs.check(&"a", &corg, Some(secrets()), || Duration::from_secs(42));
        assert_eq!(delay, Some(Duration::from_secs(42)));
        assert!(fs.is_new_or_deferred(&"a"));
        let again = fs.check(&"a", &corg, Some(secrets()), || RESYNC);
        assert!(again.is_some_and(|d| d <= Duration::from_secs(42)));
        fs.cancel(Some("other-provider"));
        assert!(
            fs.check(&"a", &corg, Some(secrets()), || RESYNC).is_some(),
            "another provider's change is no news"
        );
        fs.cancel(Some("layers"));
        assert_eq!(fs.check(&"a", &corg, Some(secrets()), || RESYNC), None);
        assert!(!fs.is_new_or_deferred(&"a"));
        assert_eq!(fs.check(&"a", &corg, Some(secrets()), || RESYNC), None);
        fs.forget(&"a");
        assert!(fs.is_new_or_deferred(&"a"));
        fs.check(&"a", &corg, Some(secrets()), || RESYNC);
        fs.cancel(None);
        assert!(!fs.is_new_or_deferred(&"a"));
    }

    #[test]
    fn expected_secrets_name_keys_and_webhooks_with_their_ids() {
        let corg = converged_org();
        let names: Vec<_> = expected_secrets(&corg)
            .iter()
            .map(|e| (e.name, e.id_annotation, e.id))
            .collect();
        assert_eq!(
            names,
            vec![
                ("acme-backend", "orgops.dev/key-id", "key_1"),
                ("acme-billing", "orgops.dev/webhook-id", "we_1")
            ]
        );
    }
}
