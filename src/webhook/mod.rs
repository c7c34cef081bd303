//! GitLab's webhooks in: `POST /webhook` checks the secret, decodes the Job Hook and puts it
//! on a bounded queue; the fleet (`crate::fleet::runner`) takes it from there and applies it
//! to the project's state, or forwards it to the shard that owns the project.
//!
//! Answering fast and always 2xx to a valid, authenticated event is the point: GitLab waits
//! 10 s, counts a timeout or any non-2xx as a failure, and disables a hook after 4 failures in
//! a row. So nothing here waits for the state: a full queue drops the event (counted) and asks
//! for a reconciliation poll of its project instead of answering 5xx.
//!
//! - [`endpoint`]: the HTTP handler.
//! - [`forward`]: sending another shard's events to it.

pub mod endpoint;
pub mod forward;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::model::hook::JobHook;

/// Largest body taken (GitLab's Job Hooks are a few KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Marks an event one replica forwarded to another: never forwarded again (replicas that
/// disagree on `shard.count` must not pass it around forever).
pub const FORWARDED_HEADER: &str = "x-gitlab-jobs-exporter-forwarded";
/// Projects remembered for a reconciliation poll after their events were dropped, at most.
const MAX_OVERFLOW: usize = 10_000;

/// An accepted Job Hook on its way to the fleet.
#[derive(Debug)]
pub struct Delivery {
    pub hook: JobHook,
    /// GitLab's `Idempotency-Key` (17.4+: the same on every resend of one event).
    pub idempotency_key: Option<String>,
    /// Our clock when it arrived, unix seconds.
    pub received_at: f64,
    /// The body as GitLab sent it, to forward to another shard; `None` for an event another
    /// replica forwarded here already.
    pub body: Option<Bytes>,
}

/// What the fleet takes from the queue.
#[derive(Debug)]
pub enum Incoming {
    Hook(Box<Delivery>),
    /// Projects whose events were dropped (the queue was full): poll them soon.
    Reconcile(Vec<u64>),
}

/// The queue's sending end (the endpoint's).
#[derive(Clone)]
pub struct HookSender {
    tx: mpsc::Sender<Incoming>,
    shared: Arc<Shared>,
}

/// The queue's receiving end (the fleet's).
pub struct HookReceiver {
    rx: mpsc::Receiver<Incoming>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    overflow: Mutex<BTreeSet<u64>>,
    wake: Notify,
}

/// A queue of `capacity` events.
pub fn queue(capacity: usize) -> (HookSender, HookReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    (
        HookSender {
            tx,
            shared: shared.clone(),
        },
        HookReceiver { rx, shared },
    )
}

/// Whether an event was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    Yes,
    /// Full (or closed): dropped, its project noted for a reconciliation poll.
    Dropped,
}

impl HookSender {
    pub fn send(&self, delivery: Delivery) -> Queued {
        let project = delivery.hook.project_id;
        match self.tx.try_send(Incoming::Hook(Box::new(delivery))) {
            Ok(()) => Queued::Yes,
            Err(_) => {
                let mut overflow = lock(&self.shared.overflow);
                if overflow.len() < MAX_OVERFLOW {
                    overflow.insert(project);
                }
                drop(overflow);
                self.shared.wake.notify_one();
                Queued::Dropped
            }
        }
    }
}

impl HookReceiver {
    /// The next event, or the projects to reconcile; `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            let overflow: Vec<u64> = std::mem::take(&mut *lock(&self.shared.overflow))
                .into_iter()
                .collect();
            if !overflow.is_empty() {
                return Some(Incoming::Reconcile(overflow));
            }
            tokio::select! {
                biased;
                item = self.rx.recv() => return item,
                _ = self.shared.wake.notified() => {}
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A set of ids: still consistent if a holder panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
