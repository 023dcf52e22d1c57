//! Edits first: the work slots of the CustomerOrg controllers are handed out by priority.
//!
//! kube-runtime's controller starts work items in the order they became due, so after a
//! restart, a new install or a bulk import a person's edit ("suspend this customer now")
//! would wait behind thousands of routine checks. The controllers therefore start every due
//! item at once (their own concurrency is unbounded) and each pass waits here for one of
//! `--concurrency` slots before it touches the API server or the provider. A waiting pass
//! is small: the reconcile that follows the slot is boxed only once it has one.
//!
//! A pass is [`Priority::Edit`] when a person or GitOps acted since the operator last
//! looked: the generation moved past the status's `observedGeneration`, the object is being
//! deleted, or its annotations changed since this process's last pass over it. Everything
//! else (new objects, resyncs, start-up checks, provider-triggered re-checks) is
//! [`Priority::Routine`]. Edits go first, but never starve routine work: after
//! [`EDIT_BURST`] edits in a row while routine passes wait, the oldest routine pass goes.
//! kube-rs has no priority queue (controller-runtime made one its default in v0.23); this
//! is the smallest one that fits kube-runtime's controller, hence written here.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::api::CustomerOrg;

/// Edits granted in a row while routine passes wait, before one routine pass goes.
pub const EDIT_BURST: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A person's (or GitOps') change the operator has not acted on yet (a generation past
    /// one it observed, a deletion, an annotation change).
    Edit,
    /// Everything else: new objects, resyncs, start-up and provider-triggered checks.
    Routine,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Edit => "edit",
            Priority::Routine => "routine",
        }
    }
}

/// The gate was closed (shutdown): no slot will be handed out.
#[derive(Debug, thiserror::Error)]
#[error("the work queue is closed (shutting down)")]
pub struct Closed;

#[derive(Default)]
struct Queue {
    free: usize,
    closed: bool,
    /// Edits granted in a row while a routine pass waited.
    streak: usize,
    edits: VecDeque<oneshot::Sender<()>>,
    routine: VecDeque<oneshot::Sender<()>>,
}

impl Queue {
    /// The next waiter to hand a freed slot to, still waiting (dropped waiters are skipped).
    fn next_waiter(&mut self) -> Option<oneshot::Sender<()>> {
        loop {
            let take_routine =
                self.edits.is_empty() || (!self.routine.is_empty() && self.streak >= EDIT_BURST);
            let next = if take_routine {
                self.streak = 0;
                self.routine.pop_front()
            } else {
                if !self.routine.is_empty() {
                    self.streak += 1;
                }
                self.edits.pop_front()
            }?;
            if !next.is_closed() {
                return Some(next);
            }
        }
    }
}

/// `--concurrency` slots, handed out edits first.
pub struct PriorityGate {
    queue: Mutex<Queue>,
    /// A fingerprint of each object's annotations at its last pass (an annotation edit is
    /// an edit; an object not looked at yet in this process is routine).
    annotations: Mutex<HashMap<Box<str>, u64>>,
}

/// One slot; freed (handed to the next waiter) on drop.
pub struct Slot {
    gate: Arc<PriorityGate>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.release();
    }
}

/// A pass waiting for a slot. Dropped while waiting (the pass was cancelled), it frees the
/// slot if one was handed over in the meantime; the queue skips it otherwise.
struct Waiting {
    gate: Arc<PriorityGate>,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl PriorityGate {
    pub fn new(slots: usize) -> Arc<PriorityGate> {
        Arc::new(PriorityGate {
            queue: Mutex::new(Queue {
                free: slots.max(1),
                ..Queue::default()
            }),
            annotations: Mutex::new(HashMap::new()),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot at `priority`.
    pub async fn acquire(self: &Arc<Self>, priority: Priority) -> Result<Slot, Closed> {
        let rx = {
            let mut q = self.queue();
            if q.closed {
                return Err(Closed);
            }
            if q.free > 0 && q.edits.is_empty() && q.routine.is_empty() {
                q.free -= 1;
                return Ok(Slot { gate: self.clone() });
            }
            let (tx, rx) = oneshot::channel();
            match priority {
                Priority::Edit => q.edits.push_back(tx),
                Priority::Routine => q.routine.push_back(tx),
            }
            rx
        };
        let mut waiting = Waiting {
            gate: self.clone(),
            rx: Some(rx),
        };
        let handed = match waiting.rx.as_mut() {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        // Disarmed: from here the slot (if any) belongs to the `Slot`.
        waiting.rx = None;
        if handed {
            Ok(Slot { gate: self.clone() })
        } else {
            Err(Closed)
        }
    }

    fn release(&self) {
        let mut q = self.queue();
        while let Some(waiter) = q.next_waiter() {
            if waiter.send(()).is_ok() {
                return;
            }
        }
        q.free += 1;
    }

    /// No slot is handed out any more; every waiter gets `Closed`.
    pub fn close(&self) {
        let mut q = self.queue();
        q.closed = true;
        q.edits.clear();
        q.routine.clear();
    }

    /// Passes waiting for a slot: (edits, routine).
    pub fn waiting(&self) -> (usize, usize) {
        let q = self.queue();
        (q.edits.len(), q.routine.len())
    }

    /// The priority of a pass over `corg` (key `namespace/name`), remembering its
    /// annotations for the next one.
    pub fn priority_of(&self, key: &str, corg: &CustomerOrg) -> Priority {
        let print = fingerprint(corg);
        let before = self
            .annotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.into(), print);
        // A new object's status carries the schema's `observedGeneration: -1` (for
        // kstatus): it has never been observed, so it is new, not edited.
        let generation_moved = match (
            corg.metadata.generation,
            corg.status.as_ref().and_then(|s| s.observed_generation),
        ) {
            (Some(generation), Some(observed)) if observed > 0 => generation > observed,
            _ => false,
        };
        let annotations_changed = before.is_some_and(|b| b != print);
        if generation_moved || annotations_changed || corg.metadata.deletion_timestamp.is_some() {
            Priority::Edit
        } else {
            Priority::Routine
        }
    }

    /// The object is gone: its fingerprint goes too.
    pub fn forget(&self, key: &str) {
        self.annotations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

fn fingerprint(corg: &CustomerOrg) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Some(a) = &corg.metadata.annotations {
        for (k, v) in a {
            k.hash(&mut h);
            v.hash(&mut h);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn order_of(gate: &Arc<PriorityGate>, waiters: &[Priority]) -> Vec<usize> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let first = gate.acquire(Priority::Routine).await.expect("first slot");
        let mut tasks = Vec::new();
        for (i, p) in waiters.iter().copied().enumerate() {
            let g = gate.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let slot = g.acquire(p).await.expect("slot");
                let _ = tx.send(i);
                drop(slot);
            }));
            // Each waiter queues before the next (they queue in this order).
            while gate.waiting().0 + gate.waiting().1 < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(i) = rx.recv().await {
            order.push(i);
        }
        order
    }

    #[tokio::test]
    async fn an_edit_overtakes_the_routine_backlog() {
        let gate = PriorityGate::new(1);
        let mut waiters = vec![Priority::Routine; 20];
        waiters.push(Priority::Edit);
        let order = order_of(&gate, &waiters).await;
        assert_eq!(order[0], 20, "the edit goes first: {order:?}");
        assert_eq!(
            &order[1..],
            (0..20).collect::<Vec<_>>(),
            "then routine, in order"
        );
    }

    #[tokio::test]
    async fn edits_never_starve_routine_work() {
        let gate = PriorityGate::new(1);
        let mut waiters = vec![Priority::Routine];
        waiters.extend(vec![Priority::Edit; 3 * EDIT_BURST]);
        let order = order_of(&gate, &waiters).await;
        let routine_at = order.iter().position(|&i| i == 0).expect("routine ran");
        assert_eq!(
            routine_at, EDIT_BURST,
            "one routine pass after a burst: {order:?}"
        );
    }

    #[tokio::test]
    async fn a_dropped_waiter_does_not_keep_a_slot() {
        let gate = PriorityGate::new(1);
        let held = gate.acquire(Priority::Routine).await.expect("slot");
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(Priority::Edit).await.map(|_| ()) });
        while gate.waiting().0 == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), gate.acquire(Priority::Routine))
            .await
            .expect("the slot came back");
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn closing_refuses_waiters_and_new_passes() {
        let gate = PriorityGate::new(1);
        let held = gate.acquire(Priority::Routine).await.expect("slot");
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.acquire(Priority::Routine).await.is_err() });
        while gate.waiting().1 == 0 {
            tokio::task::yield_now().await;
        }
        gate.close();
        assert!(waiter.await.expect("task"), "a waiter is refused");
        assert!(gate.acquire(Priority::Edit).await.is_err());
        drop(held);
    }

    fn corg(generation: i64, observed: Option<i64>, note: &str) -> CustomerOrg {
        let mut c: CustomerOrg = serde_json::from_value(serde_json::json!({
            "apiVersion": crate::api::API_VERSION, "kind": "CustomerOrg",
            "metadata": {"name": "a", "namespace": "n", "generation": generation,
                         "annotations": {"note": note}},
            "spec": {"providerRef": {"name": "p"}, "displayName": "A", "externalId": "a"}
        }))
        .expect("fixture");
        if let Some(o) = observed {
            c.status = Some(crate::api::CustomerOrgStatus {
                observed_generation: Some(o),
                ..Default::default()
            });
        }
        c
    }

    #[test]
    fn what_counts_as_an_edit() {
        let gate = PriorityGate::new(1);
        assert_eq!(
            gate.priority_of("n/a", &corg(1, None, "x")),
            Priority::Routine,
            "new"
        );
        assert_eq!(
            gate.priority_of("n/a", &corg(1, Some(1), "x")),
            Priority::Routine,
            "resync"
        );
        assert_eq!(
            gate.priority_of("n/a", &corg(2, Some(1), "x")),
            Priority::Edit,
            "spec edit"
        );
        assert_eq!(
            gate.priority_of("n/a", &corg(2, Some(2), "y")),
            Priority::Edit,
            "annotation"
        );
        assert_eq!(
            gate.priority_of("n/a", &corg(2, Some(2), "y")),
            Priority::Routine,
            "same again"
        );
        gate.forget("n/a");
        assert_eq!(
            gate.priority_of("n/a", &corg(2, Some(2), "z")),
            Priority::Routine,
            "unseen"
        );
    }
}
