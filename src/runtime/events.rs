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

/// Reasons that name what a whole pass was about, most telling first.
const PASS_REASONS: &[&str] = &[
    "Recovered",
    "Adopted",
    "Created",
    "DriftCorrected",
    "Archived",
];

/// One Normal Event per pass (issue 18: every Event is an etcd write kept for an hour):
/// the changes of a pass are folded into one Event whose note lists each of them with
/// its own reason (`KeyMinted: minted key …; CreditsAllocated: … txn_…`). Its reason is the
/// most telling one of the pass (`PASS_REASONS`), else the first. Warnings stay separate:
/// each is published once per episode already.
pub fn fold(events: &[OrgEvent]) -> Vec<OrgEvent> {
    let (normal, mut out): (Vec<&OrgEvent>, Vec<OrgEvent>) = (
        events.iter().filter(|e| !e.warning).collect(),
        events.iter().filter(|e| e.warning).cloned().collect(),
    );
    match normal.as_slice() {
        [] => {}
        [one] => out.insert(0, (*one).clone()),
        many => {
            let lead = PASS_REASONS
                .iter()
                .find_map(|r| many.iter().find(|e| e.reason == *r))
                .unwrap_or(&many[0]);
            let note = many
                .iter()
                .map(|e| format!("{}: {}", e.reason, e.note))
                .collect::<Vec<_>>()
                .join("; ");
            out.insert(
                0,
                OrgEvent {
                    warning: false,
                    reason: lead.reason.clone(),
                    note,
                    action: lead.action.clone(),
                },
            );
        }
    }
    out
}

/// Publishes the pass's events, folded (`fold`); a failure is logged, never fatal
/// (events are best effort).
///
/// A fresh `Recorder` per call on purpose: the recorder folds repeats with the same
/// reason into a series and keeps the first note, which would hide e.g. the second
/// `CreditsAllocated` transfer id.
pub async fn publish(
    client: &kube::Client,
    metrics: &Metrics,
    regarding: &ObjectReference,
    events: &[OrgEvent],
) {
    for ev in &fold(events) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(warning: bool, reason: &str, note: &str) -> OrgEvent {
        OrgEvent {
            warning,
            reason: reason.into(),
            note: note.into(),
            action: "Reconcile".into(),
        }
    }

    #[test]
    fn a_pass_is_one_normal_event_naming_every_change_warnings_apart() {
        let folded = fold(&[
            ev(false, "Created", "created org org_1"),
            ev(false, "CreditsAllocated", "allocated 500 credits (txn_1)"),
            ev(false, "KeyMinted", "minted key crm"),
            ev(true, "NoEffect", "x"),
        ]);
        assert_eq!(folded.len(), 2);
        assert_eq!(folded[0].reason, "Created");
        assert!(!folded[0].warning);
        for part in [
            "CreditsAllocated: allocated 500 credits (txn_1)",
            "KeyMinted: minted key crm",
        ] {
            assert!(folded[0].note.contains(part), "{}", folded[0].note);
        }
        assert_eq!(folded[1].reason, "NoEffect");
        // A drift correction names the pass even when it is listed last.
        let folded = fold(&[
            ev(false, "Resumed", "resumed org org_1"),
            ev(false, "DriftCorrected", "restored state"),
        ]);
        assert_eq!(folded[0].reason, "DriftCorrected");
        // One change: as it was.
        assert_eq!(fold(&[ev(false, "KeyMinted", "minted")])[0].note, "minted");
    }
}
