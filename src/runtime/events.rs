//! Publishing Events (events.k8s.io) about CustomerOrgs.
use super::metrics::{KubeWrite, Metrics};
use crate::reconcile::OrgEvent;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

pub const REPORTER: &str = "orgops";

pub fn reporter() -> Reporter {
    Reporter {
        controller: REPORTER.to_string(),
        instance: std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()),
    }
}

/// Publishes each event; a failure is logged, never fatal (events are best effort).
///
/// A fresh `Recorder` per call on purpose: the recorder folds repeats with the same
/// reason into a series and keeps the first note, which would hide e.g. the second
/// `CreditsAllocated` transfer id. Each external change gets its own Event instead.
pub async fn publish(
    client: &kube::Client,
    metrics: &Metrics,
    regarding: &ObjectReference,
    events: &[OrgEvent],
) {
    for ev in events {
        let recorder = Recorder::new(client.clone(), reporter());
        let event = Event {
            type_: if ev.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: ev.reason.clone(),
            note: Some(truncate(&ev.note, 1000)),
            action: if ev.action.is_empty() {
                ev.reason.clone()
            } else {
                ev.action.clone()
            },
            secondary: None,
        };
        match recorder.publish(&event, regarding).await {
            Ok(()) => metrics.kube_write(KubeWrite::Event),
            Err(err) => warn!(reason = %ev.reason, error = %err, "cannot publish Event"),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
