//! Test and benchmark drivers: the polling loop without its waits.
//!
//! They run the very step the spawned tasks run ([`Scheduler::poll_one`]: one cycle, then
//! the pacing decision of when next), so what differs is only who waits: a task sleeps on the
//! tokio clock, with jitter; a driver returns once the step is done and leaves the waiting to
//! its caller (the test moves the simulator's clock by hand).
//!
//! Why tests do not drive [`Scheduler::run`] itself (yet): its waits are real-time sleeps
//! with random jitter and a random spread of the first polls, and it has no signal for "every
//! cycle due by now is done". A test would have to sleep to synchronise, which the house rules
//! forbid, and its counts would depend on timing. Tokio's paused clock does not fix that: it
//! auto-advances whenever the runtime is idle, which includes a cycle waiting on the
//! simulator's socket, so timeouts and pacing would jump ahead mid-request. Driving `run`
//! needs its waits behind a clock the test owns (one that also tells when every task is
//! waiting); until then the drivers keep cycles deterministic, and
//! `tests/rate_limit_pause.rs` runs the real loop where only conditions are awaited.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Scheduler, TaskKey};
use crate::project::cycle::{CycleStats, PollError};

impl Scheduler {
    /// Polls every watched project once, concurrently within the limit; results in key order.
    /// Used by tests and benchmarks to drive cycles deterministically.
    pub async fn poll_all_once(self: &Arc<Self>) -> Vec<Result<CycleStats, PollError>> {
        let keys: Vec<TaskKey> = self.slots().live.keys().copied().collect();
        self.poll_keys(&keys)
            .await
            .into_iter()
            .map(|(_, r, _)| r)
            .collect()
    }

    /// Runs [`Scheduler::poll_one`] for each key concurrently (within `poll.concurrency`);
    /// results in the order of `keys`.
    async fn poll_keys(
        self: &Arc<Self>,
        keys: &[TaskKey],
    ) -> Vec<(TaskKey, Result<CycleStats, PollError>, Option<Duration>)> {
        let mut set = JoinSet::new();
        for (i, key) in keys.iter().enumerate() {
            let me = self.clone();
            let key = *key;
            set.spawn(async move {
                let (r, next) = me.poll_one(key).await;
                (i, key, r, next)
            });
        }
        let mut results: Vec<Option<_>> = keys.iter().map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((i, key, r, next)) = joined {
                results[i] = Some((key, r, next));
            }
        }
        results
            .into_iter()
            .zip(keys)
            .map(|(r, key)| r.unwrap_or((*key, Err(PollError::Aborted), None)))
            .collect()
    }

    /// A deterministic stand-in for [`Scheduler::run`] on a simulated clock, for benchmarks:
    /// polls the projects due at `now` (time since start; all are due at zero) and schedules
    /// each one's next cycle as `run` would, without jitter.
    pub async fn poll_due(
        self: &Arc<Self>,
        now: Duration,
        due: &mut BTreeMap<TaskKey, Duration>,
    ) -> Vec<CycleStats> {
        let keys: Vec<TaskKey> = self
            .slots()
            .live
            .keys()
            .copied()
            .filter(|k| due.get(k).is_none_or(|t| *t <= now))
            .collect();
        let mut stats = Vec::new();
        for (key, result, next) in self.poll_keys(&keys).await {
            match next {
                Some(d) => due.insert(key, now + d),
                None => due.insert(key, Duration::MAX),
            };
            if let Ok(s) = result {
                stats.push(s);
            }
        }
        stats
    }
}
