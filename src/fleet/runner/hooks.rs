//! Webhook events from the queue applied to their projects (see [`crate::webhook`]): each
//! to the project's state under its short lock, beside any cycle in flight; another shard's
//! forwarded; dropped ones turned into reconciliation polls.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::{Scheduler, Slot};
use crate::model::ProjectId;
use crate::model::hook::JobHook;
use crate::tracker::Seen;
use crate::webhook::forward::Forwarder;
use crate::webhook::{Delivery, HookReceiver, Incoming};

/// `Idempotency-Key`s remembered (GitLab resends an event with the same key).
const KEYS_KEPT: usize = 10_000;

/// Where an event goes.
enum Route {
    Here(Slot),
    /// Another shard's project.
    Shard(u32),
    Unwatched,
}

/// Recently seen `Idempotency-Key`s, oldest first out.
#[derive(Default)]
struct SeenKeys {
    order: VecDeque<String>,
    set: HashSet<String>,
}

impl SeenKeys {
    /// False if `key` was seen already.
    fn insert(&mut self, key: &str) -> bool {
        if self.set.contains(key) {
            return false;
        }
        if self.order.len() == KEYS_KEPT
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(key.to_string());
        self.set.insert(key.to_string());
        true
    }
}

impl Scheduler {
    /// Applies the queue's events until `shutdown` (what is still queued then is left to
    /// the polls after the restart).
    pub async fn apply_hooks(
        self: Arc<Self>,
        mut queue: HookReceiver,
        forwarder: Option<Forwarder>,
        shutdown: CancellationToken,
    ) {
        let mut keys = SeenKeys::default();
        loop {
            let incoming = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                next = queue.next() => match next {
                    Some(i) => i,
                    None => return,
                },
            };
            match incoming {
                Incoming::Hook(d) => self.apply_hook(*d, &mut keys, forwarder.as_ref()),
                Incoming::Reconcile(projects) => {
                    for id in projects {
                        if let Route::Here(slot) = self.route_id(id, None) {
                            slot.poke.notify_one();
                        }
                    }
                }
            }
        }
    }

    fn apply_hook(&self, d: Delivery, keys: &mut SeenKeys, forwarder: Option<&Forwarder>) {
        if let Some(key) = &d.idempotency_key
            && !keys.insert(key)
        {
            self.metrics.webhook_event("job", "duplicate");
            return;
        }
        let result = match self.route(&d.hook) {
            Route::Shard(owner) => match (forwarder, d.body) {
                (Some(f), Some(body)) => {
                    // Counted `forwarded` or `dropped` once the peer answered.
                    f.forward(owner, body, d.idempotency_key, d.received_at);
                    return;
                }
                _ => "unwatched",
            },
            Route::Unwatched => "unwatched",
            Route::Here(slot) => {
                let job = &d.hook.job;
                let (seen, maybe_reset, classify) = {
                    let mut p = slot.poller.project();
                    if p.label_unknown() {
                        // Configured by id, not looked up yet: its `project` label is not
                        // known, and no series goes out under a placeholder. Left to its
                        // first poll (due at once at start), whose backfill counts the job;
                        // no poke, which would defeat a refused lookup's back-off.
                        drop(p);
                        self.metrics.webhook_event("job", "dropped");
                        return;
                    }
                    let known_final = !p.tracker.is_followed(job.id);
                    let seen = p.feed_hook(&d.hook, d.received_at, &self.metrics);
                    let classify = !p.followups.is_empty() && p.followups.config().is_some();
                    (seen, seen == Seen::Stale && known_final, classify)
                };
                self.dirty.store(true, Ordering::Release);
                // A failed job waits for its class: within a poll interval, not a reconcile.
                if seen == Seen::Deferred
                    || classify
                    || (maybe_reset && crate::project::state::is_waiting(&job.status))
                {
                    // Not applied (the tracker waits for a cycle to fold it), or a late
                    // event or GitLab resetting a skipped job (its pipeline was retried):
                    // only a poll can tell.
                    slot.poke.notify_one();
                }
                match seen {
                    Seen::Changed => "applied",
                    Seen::Known => "duplicate",
                    Seen::Stale => "stale",
                    // Left to the polls, as a full queue's.
                    Seen::Deferred => "dropped",
                }
            }
        };
        self.metrics.webhook_event("job", result);
    }

    fn route(&self, hook: &JobHook) -> Route {
        self.route_id(hook.project_id, hook.project_path.as_deref())
    }

    /// The watched project `id` is (or, for a configured project not looked up yet, the one
    /// configured as `path`).
    fn route_id(&self, id: ProjectId, path: Option<&str>) -> Route {
        let (me, count) = self.shard;
        if count > 1 {
            let owner = crate::shard::owner(id, count);
            if owner != me {
                return Route::Shard(owner);
            }
        }
        let slots = self.slots();
        let key = slots
            .by_id
            .get(&id)
            .or_else(|| slots.configured_by_id.get(&id));
        if let Some(slot) = key.and_then(|k| slots.live.get(k)) {
            return if slot.ended {
                Route::Unwatched
            } else {
                Route::Here(slot.clone())
            };
        }
        let Some(path) = path else {
            return Route::Unwatched;
        };
        // Configured by path and not looked up yet: its hooks count from the start.
        let unresolved = slots.live.values().find(|s| {
            s.discovered.is_none() && !s.ended && {
                let p = s.poller.project();
                p.resolved().is_none()
                    && p.reference
                        .path()
                        .is_some_and(|r| r.eq_ignore_ascii_case(path))
            }
        });
        match unresolved {
            Some(slot) => Route::Here(slot.clone()),
            None => Route::Unwatched,
        }
    }
}
