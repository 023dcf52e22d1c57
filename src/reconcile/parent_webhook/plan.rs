//! The pure planner of a `ParentWebhook`: from what is wanted and what was observed (the
//! endpoint at the API, the Secret in the cluster) to the ordered actions that converge them.
//! No I/O here; [`super`] observes and applies it through the engine
//! (`reconcile::engine`); `runtime::parent_webhook_controller` writes the status.

use std::collections::BTreeMap;

use crate::api::{PARENT_WEBHOOK_MARKER, ParentWebhook};
use crate::provider::IdempotencyKey;
use crate::provider::layers::parent_webhooks::{
    NewParentEndpoint, ParentEndpoint, ParentEndpointPatch,
};
use crate::reconcile::idempotency;

/// The endpoint as the spec wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub uid: String,
    pub url: String,
    /// Sorted, without duplicates.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `active` or `paused`.
    pub status: &'static str,
    /// `all_children` or `own`.
    pub scope: &'static str,
    /// `<namespace>/<name>`, written to the endpoint's metadata.
    pub marker: String,
    pub secret_name: String,
    /// The `orgops.dev/rotate-secret` annotation's value.
    pub rotate_for: Option<String>,
}

impl Desired {
    pub fn of(pwh: &ParentWebhook) -> Desired {
        let mut events = pwh.spec.events.clone();
        events.sort();
        events.dedup();
        Desired {
            uid: pwh.metadata.uid.clone().unwrap_or_default(),
            url: pwh.spec.url.clone(),
            events,
            description: pwh.spec.description.clone().filter(|d| !d.is_empty()),
            status: if pwh.spec.enabled { "active" } else { "paused" },
            scope: pwh.spec.scope.api_value(),
            marker: pwh.marker(),
            secret_name: pwh.secret_name(),
            rotate_for: pwh
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::api::ROTATE_SECRET_ANNOTATION))
                .cloned(),
        }
    }

    pub fn new_endpoint(&self) -> NewParentEndpoint {
        NewParentEndpoint {
            url: self.url.clone(),
            events: self.events.clone(),
            description: self.description.clone(),
            scope: self.scope.to_string(),
            metadata: BTreeMap::from([(PARENT_WEBHOOK_MARKER.to_string(), self.marker.clone())]),
        }
    }

    /// Same object, same body: the same key, so a lost response replays the first create.
    pub fn create_key(&self) -> IdempotencyKey {
        let body = self.new_endpoint().body().to_string();
        idempotency::derive(&["parent-webhook/create", &self.uid, &body])
    }
}

/// The Secret named by the spec, from this ParentWebhook's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSeen {
    Missing,
    /// Exists and another owner (or nobody) controls it: never overwritten.
    Foreign,
    Owned {
        endpoint_id: Option<String>,
        rotated_for: Option<String>,
    },
}

/// What one pass observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub endpoint: Option<ParentEndpoint>,
    pub secret: SecretSeen,
    /// An owned Secret of an earlier `secretName` (from status), to remove once the
    /// signing secret is in the new one.
    pub old_secret: Option<String>,
    /// `status.secretRotatedFor`: with the Secret's own record, what says a rotate-secret
    /// value was applied already (the Secret may be the thing that was lost).
    pub status_rotated_for: Option<String>,
}

/// Why the signing secret is rotated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotateCause {
    /// The Secret is missing or holds another endpoint's secret (lost, renamed, adopted).
    SecretLost,
    /// A new `orgops.dev/rotate-secret` value.
    Annotation(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the endpoint, then write its signing secret at once.
    Create {
        new: NewParentEndpoint,
        key: IdempotencyKey,
    },
    /// Rotate, then write the new signing secret at once.
    Rotate {
        cause: RotateCause,
        key: IdempotencyKey,
    },
    /// Correct drift.
    Patch(ParentEndpointPatch),
    /// Delete the Secret of an earlier `secretName`.
    DeleteOldSecret(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing can be done without a person; no API call.
    Stall {
        reason: &'static str,
        message: String,
    },
    /// In order; empty when converged.
    Act(Vec<Action>),
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let mut b = b.to_vec();
    b.sort();
    b.dedup();
    a == b.as_slice()
}

/// The fields of `ep` that differ from `want`. `auto_paused` counts as paused; a scope the
/// API does not echo is left alone.
pub fn drift(want: &Desired, ep: &ParentEndpoint) -> ParentEndpointPatch {
    let mut patch = ParentEndpointPatch::default();
    if ep.url != want.url {
        patch.url = Some(want.url.clone());
    }
    if !same_set(&want.events, &ep.events) {
        patch.events = Some(want.events.clone());
    }
    let current = ep.description.as_deref().filter(|d| !d.is_empty());
    if current != want.description.as_deref() {
        patch.description = Some(want.description.clone());
    }
    let active = ep.status == "active";
    if active != (want.status == "active") {
        patch.status = Some(want.status.to_string());
    }
    if ep.scope.as_deref().is_some_and(|s| s != want.scope) {
        patch.scope = Some(want.scope.to_string());
    }
    if ep.metadata.get(PARENT_WEBHOOK_MARKER) != Some(&want.marker) {
        patch.metadata = Some(BTreeMap::from([(
            PARENT_WEBHOOK_MARKER.to_string(),
            want.marker.clone(),
        )]));
    }
    patch
}

/// Converges the endpoint. The signing secret is always written right after it is shown
/// (create, rotate), before any other action.
pub fn plan(want: &Desired, seen: &Observed) -> Plan {
    if seen.secret == SecretSeen::Foreign {
        return Plan::Stall {
            reason: "SecretConflict",
            message: format!(
                "Secret {:?} exists and is not owned by this ParentWebhook; delete it or set spec.secretName",
                want.secret_name
            ),
        };
    }
    let mut actions = Vec::new();
    match &seen.endpoint {
        None => {
            let new = want.new_endpoint();
            let key = want.create_key();
            actions.push(Action::Create { new, key });
            // A new endpoint is active; a disabled one is paused right after.
            if want.status != "active" {
                actions.push(Action::Patch(ParentEndpointPatch {
                    status: Some(want.status.to_string()),
                    ..Default::default()
                }));
            }
        }
        Some(ep) => {
            let (holds_this, rotated_for) = match &seen.secret {
                SecretSeen::Owned {
                    endpoint_id,
                    rotated_for,
                } => (endpoint_id.as_deref() == Some(ep.id.as_str()), rotated_for),
                _ => (false, &None),
            };
            let pending = want.rotate_for.as_ref().filter(|v| {
                rotated_for.as_ref() != Some(*v) && seen.status_rotated_for.as_ref() != Some(*v)
            });
            // A pending annotation uses its own key, also when the Secret is lost too: a
            // replay after a failed Secret write returns the same (current) secret.
            if let Some(v) = pending {
                let key = idempotency::derive(&["parent-webhook/rotate", &want.uid, &ep.id, v]);
                actions.push(Action::Rotate {
                    cause: if holds_this {
                        RotateCause::Annotation(v.clone())
                    } else {
                        RotateCause::SecretLost
                    },
                    key,
                });
            } else if !holds_this {
                // Keyed by the endpoint's last change: the client's retries replay, and a
                // later loss (after which updatedAt moved) rotates afresh.
                let updated = ep.updated_at.as_deref().unwrap_or_default();
                let key = idempotency::derive(&[
                    "parent-webhook/rotate-lost",
                    &want.uid,
                    &ep.id,
                    updated,
                ]);
                actions.push(Action::Rotate {
                    cause: RotateCause::SecretLost,
                    key,
                });
            }
            let patch = drift(want, ep);
            if !patch.is_empty() {
                actions.push(Action::Patch(patch));
            }
        }
    }
    if let Some(old) = &seen.old_secret
        && *old != want.secret_name
    {
        actions.push(Action::DeleteOldSecret(old.clone()));
    }
    Plan::Act(actions)
}

/// Among the parent's endpoints, the ones this ParentWebhook's marker names (oldest first as
/// listed); more than one only if someone copied the marker.
pub fn marked<'a>(endpoints: &'a [ParentEndpoint], marker: &str) -> Vec<&'a ParentEndpoint> {
    endpoints
        .iter()
        .filter(|e| e.metadata.get(PARENT_WEBHOOK_MARKER).map(String::as_str) == Some(marker))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pwh(extra: serde_json::Value) -> ParentWebhook {
        let mut spec = json!({"url": "https://hooks.example.com/f", "events": ["post.published", "job.failed"]});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let mut p = ParentWebhook::new("firehose", serde_json::from_value(spec).unwrap());
        p.metadata.namespace = Some("partner".into());
        p.metadata.uid = Some("uid-1".into());
        p
    }

    fn endpoint(url: &str) -> ParentEndpoint {
        serde_json::from_value(json!({
            "id": "ep-1", "url": url, "status": "active", "scope": "all_children",
            "events": ["job.failed", "post.published"], "description": null,
            "metadata": {"orgops.dev/parent-webhook": "partner/firehose"},
            "updatedAt": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    fn owned(id: &str, rotated_for: Option<&str>) -> SecretSeen {
        SecretSeen::Owned {
            endpoint_id: Some(id.into()),
            rotated_for: rotated_for.map(String::from),
        }
    }

    fn seen(endpoint: Option<ParentEndpoint>, secret: SecretSeen) -> Observed {
        Observed {
            endpoint,
            secret,
            old_secret: None,
            status_rotated_for: None,
        }
    }

    #[test]
    fn nothing_there_creates_with_the_marker_and_a_stable_key() {
        let want = Desired::of(&pwh(json!({})));
        let Plan::Act(actions) = plan(&want, &seen(None, SecretSeen::Missing)) else {
            panic!("stalled")
        };
        let [Action::Create { new, key }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(new.scope, "all_children");
        assert_eq!(new.events, ["job.failed", "post.published"]);
        assert_eq!(new.metadata[PARENT_WEBHOOK_MARKER], "partner/firehose");
        assert_eq!(*key, want.create_key(), "a retry replays the same create");
        let other = Desired::of(&pwh(json!({"url": "https://other.example.com"})));
        assert_ne!(other.create_key(), want.create_key());
    }

    #[test]
    fn a_disabled_webhook_is_paused_right_after_create() {
        let want = Desired::of(&pwh(json!({"enabled": false})));
        let Plan::Act(actions) = plan(&want, &seen(None, SecretSeen::Missing)) else {
            panic!()
        };
        assert!(matches!(actions[0], Action::Create { .. }));
        assert_eq!(
            actions[1],
            Action::Patch(ParentEndpointPatch {
                status: Some("paused".into()),
                ..Default::default()
            })
        );
    }

    #[test]
    fn converged_means_no_action() {
        let want = Desired::of(&pwh(json!({})));
        let s = seen(
            Some(endpoint("https://hooks.example.com/f")),
            owned("ep-1", None),
        );
        assert_eq!(plan(&want, &s), Plan::Act(vec![]));
    }

    #[test]
    fn drift_in_every_field_is_one_patch() {
        let want = Desired::of(&pwh(
            json!({"description": "all customers", "scope": "allChildren"}),
        ));
        let mut ep = endpoint("https://evil.example.com");
        ep.events = vec!["test.ping".into()];
        ep.status = "auto_paused".into();
        ep.scope = Some("own".into());
        ep.metadata.clear();
        let Plan::Act(actions) = plan(&want, &seen(Some(ep), owned("ep-1", None))) else {
            panic!()
        };
        let [Action::Patch(p)] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!(
            p.fields(),
            [
                "url",
                "events",
                "description",
                "status",
                "scope",
                "metadata"
            ]
        );
        assert_eq!(p.scope.as_deref(), Some("all_children"));
        assert_eq!(p.status.as_deref(), Some("active"));
        assert_eq!(p.description, Some(Some("all customers".into())));
    }

    #[test]
    fn description_removed_from_spec_is_cleared_and_unechoed_scope_is_left() {
        let want = Desired::of(&pwh(json!({"scope": "own"})));
        let mut ep = endpoint("https://hooks.example.com/f");
        ep.description = Some("old".into());
        ep.scope = None;
        let p = drift(&want, &ep);
        assert_eq!(p.description, Some(None));
        assert_eq!(p.scope, None);
        assert_eq!(p.fields(), ["description"]);
    }

    #[test]
    fn a_lost_or_foreign_endpoint_secret_is_rotated_before_the_patch() {
        let want = Desired::of(&pwh(json!({"url": "https://new.example.com"})));
        for secret in [SecretSeen::Missing, owned("ep-old", None)] {
            let s = seen(Some(endpoint("https://hooks.example.com/f")), secret);
            let Plan::Act(actions) = plan(&want, &s) else {
                panic!()
            };
            assert!(
                matches!(
                    &actions[0],
                    Action::Rotate {
                        cause: RotateCause::SecretLost,
                        ..
                    }
                ),
                "{actions:?}"
            );
            assert!(matches!(&actions[1], Action::Patch(p) if p.fields() == ["url"]));
        }
    }

    #[test]
    fn lost_secret_keys_follow_the_endpoint_version() {
        let want = Desired::of(&pwh(json!({})));
        let key_at = |updated: &str| {
            let mut ep = endpoint("https://hooks.example.com/f");
            ep.updated_at = Some(updated.into());
            match plan(&want, &seen(Some(ep), SecretSeen::Missing)) {
                Plan::Act(a) => match &a[0] {
                    Action::Rotate { key, .. } => key.clone(),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(key_at("t1"), key_at("t1"), "client retries replay");
        assert_ne!(key_at("t1"), key_at("t2"), "a later loss rotates afresh");
    }

    #[test]
    fn each_annotation_value_rotates_once() {
        let mut p = pwh(json!({}));
        p.metadata.annotations = Some(BTreeMap::from([(
            crate::api::ROTATE_SECRET_ANNOTATION.to_string(),
            "2026-01".to_string(),
        )]));
        let want = Desired::of(&p);
        let ep = endpoint("https://hooks.example.com/f");
        let Plan::Act(a) = plan(&want, &seen(Some(ep.clone()), owned("ep-1", None))) else {
            panic!()
        };
        assert!(
            matches!(&a[..], [Action::Rotate { cause: RotateCause::Annotation(v), .. }] if v == "2026-01")
        );
        let done = seen(Some(ep.clone()), owned("ep-1", Some("2026-01")));
        assert_eq!(plan(&want, &done), Plan::Act(vec![]));
        // Secret lost while the value is pending: one rotation, with the annotation's key.
        let Plan::Act(b) = plan(&want, &seen(Some(ep), SecretSeen::Missing)) else {
            panic!()
        };
        match (&a[0], &b[..]) {
            (Action::Rotate { key: k1, .. }, [Action::Rotate { key: k2, cause }]) => {
                assert_eq!(k1, k2);
                assert_eq!(*cause, RotateCause::SecretLost);
            }
            other => panic!("{other:?}"),
        }
        // Lost after the value was applied (status says so): a fresh rotation, not a
        // replay of the annotation's (possibly outdated) response.
        let mut lost = seen(
            Some(endpoint("https://hooks.example.com/f")),
            SecretSeen::Missing,
        );
        lost.status_rotated_for = Some("2026-01".into());
        let Plan::Act(c) = plan(&want, &lost) else {
            panic!()
        };
        match (&a[0], &c[..]) {
            (Action::Rotate { key: k1, .. }, [Action::Rotate { key: k3, .. }]) => {
                assert_ne!(k1, k3)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_foreign_secret_stalls_before_any_call() {
        let want = Desired::of(&pwh(json!({})));
        for endpoint in [None, Some(endpoint("https://hooks.example.com/f"))] {
            match plan(&want, &seen(endpoint, SecretSeen::Foreign)) {
                Plan::Stall { reason, message } => {
                    assert_eq!(reason, "SecretConflict");
                    assert!(message.contains("firehose-signing-secret"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_renamed_secret_gets_a_fresh_secret_then_the_old_one_goes() {
        let want = Desired::of(&pwh(json!({"secretName": "new-name"})));
        let s = Observed {
            endpoint: Some(endpoint("https://hooks.example.com/f")),
            secret: SecretSeen::Missing,
            old_secret: Some("firehose-signing-secret".into()),
            status_rotated_for: None,
        };
        let Plan::Act(a) = plan(&want, &s) else {
            panic!()
        };
        assert!(matches!(a[0], Action::Rotate { .. }));
        assert_eq!(
            a[1],
            Action::DeleteOldSecret("firehose-signing-secret".into())
        );
    }

    #[test]
    fn only_marked_endpoints_are_adopted() {
        let mut other = endpoint("https://x");
        other.id = "ep-2".into();
        other
            .metadata
            .insert(PARENT_WEBHOOK_MARKER.into(), "partner/other".into());
        let mine = endpoint("https://y");
        let all = [other, mine];
        let found = marked(&all, "partner/firehose");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "ep-1");
    }
}
