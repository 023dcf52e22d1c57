//! Unit tests of `parent_webhook_controller`.

use super::*;
use crate::api::conditions::{READY, RECONCILING, STALLED};
use crate::reconcile::parent_webhook::{plan as pplan, seen_secret};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use std::collections::BTreeMap;

fn pwh() -> ParentWebhook {
    let mut p = ParentWebhook::new(
        "firehose",
        serde_json::from_value(json!({"url": "https://x", "events": ["test.ping"]})).unwrap(),
    );
    p.metadata.namespace = Some("ns".into());
    p.metadata.uid = Some("uid-1".into());
    p.metadata.resource_version = Some("7".into());
    p
}

fn secret(owner_uid: &str, annotations: &[(&str, &str)], value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                uid: owner_uid.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "signingSecret".to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

#[test]
fn secrets_are_seen_as_the_planner_needs() {
    let p = pwh();
    assert_eq!(seen_secret(None, &p), pplan::SecretSeen::Missing);
    let foreign = secret(
        "someone-else",
        &[(ENDPOINT_ID_ANNOTATION, "ep-1")],
        "whsec_x",
    );
    assert_eq!(seen_secret(Some(&foreign), &p), pplan::SecretSeen::Foreign);
    let ours = secret(
        "uid-1",
        &[
            (ENDPOINT_ID_ANNOTATION, "ep-1"),
            (ROTATED_FOR_ANNOTATION, "v1"),
        ],
        "whsec_x",
    );
    assert_eq!(
        seen_secret(Some(&ours), &p),
        pplan::SecretSeen::Owned {
            endpoint_id: Some("ep-1".into()),
            rotated_for: Some("v1".into())
        }
    );
    let emptied = secret("uid-1", &[(ENDPOINT_ID_ANNOTATION, "ep-1")], "");
    assert_eq!(
        seen_secret(Some(&emptied), &p),
        pplan::SecretSeen::Owned {
            endpoint_id: None,
            rotated_for: None
        },
        "an emptied Secret is repaired"
    );
}

#[test]
fn finalizer_patches_keep_others_and_pin_the_version() {
    let mut p = pwh();
    p.metadata.finalizers = Some(vec!["example.com/keep".into()]);
    assert_eq!(
        finalizer_patch(&p, true),
        json!({"metadata": {"finalizers": ["example.com/keep", PARENT_WEBHOOK_FINALIZER], "resourceVersion": "7"}})
    );
    p.metadata.finalizers = Some(vec![
        PARENT_WEBHOOK_FINALIZER.into(),
        "example.com/keep".into(),
    ]);
    assert!(has_finalizer(&p));
    assert_eq!(
        finalizer_patch(&p, false)["metadata"]["finalizers"],
        json!(["example.com/keep"])
    );
}

#[test]
fn conditions_follow_kstatus() {
    let mut p = pwh();
    p.metadata.generation = Some(3);
    let s = stalled(
        &p,
        "ApiRejected",
        "create the endpoint: 403 FORBIDDEN_SCOPE",
    );
    assert!(s.iter().any(|c| c.type_ == STALLED && c.status));
    assert!(s.iter().all(|c| c.observed_generation == Some(3)));
    let r = reconciling(&p, "Retrying", "x");
    assert!(r.iter().any(|c| c.type_ == RECONCILING && c.status));
    assert!(r.iter().any(|c| c.type_ == READY && !c.status));
}
