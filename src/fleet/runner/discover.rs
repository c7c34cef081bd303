//! Discovery passes carried out: [`crate::fleet::registry::reconcile`] decides what a pass changes;
//! this spawns and stops the tasks, moves series, pauses and forgets pollers accordingly, and
//! records the changes in the registry.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Scheduler, SharedPoller, Slot, Slots, TaskKey};
use crate::fleet::discovery::{self, Pass};
use crate::fleet::registry::{self, Changes};
use crate::model::ProjectId;
use crate::project::cycle::ProjectPoller;
use crate::tracker::secs;

/// What one discovery pass changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DiscoveryStats {
    pub requests: usize,
    pub complete: bool,
    pub found: usize,
    pub added: usize,
    pub revived: usize,
    pub retired: usize,
    /// Retired long enough ago that their series were removed.
    pub removed: usize,
    /// Shown under a new path (renamed or transferred in GitLab).
    pub renamed: usize,
}

/// What a pass asks of the pollers beyond the slots, done outside the slots' lock (waiting
/// for their gates).
#[derive(Default)]
struct Effects {
    to_spawn: Vec<TaskKey>,
    /// Retired this pass: paused behind their gate.
    stopped: Vec<(TaskKey, SharedPoller)>,
    /// Past the grace period: forgotten.
    expired: Vec<SharedPoller>,
    /// Shown under a new path.
    renamed: Vec<(SharedPoller, String)>,
}

impl Scheduler {
    /// One discovery pass: adds new projects, brings back returning ones, retires those no
    /// longer found (only after a complete pass) and removes the series of projects retired
    /// longer than the grace period (the rules: [`registry::reconcile`]).
    pub async fn discover(self: &Arc<Self>) -> DiscoveryStats {
        let pass = discovery::discover(
            &self.client,
            &self.metrics,
            &self.discovery,
            self.max_projects,
        )
        .await;
        self.metrics.discovery_ran(pass.complete);
        let now = secs(Utc::now());
        // Reconciled, carried out on the slots and recorded in one lock scope: a cycle ending
        // meanwhile (marking its project ended) sees either the old or the new set.
        let (changes, effects) = {
            let mut slots = self.slots();
            let changes = registry::reconcile(&slots.registry, &pass, now);
            let effects = self.carry_out(&mut slots, &changes, &pass);
            slots.registry.apply(&changes, now);
            (changes, effects)
        };
        let mut stats = DiscoveryStats {
            requests: pass.requests,
            complete: pass.complete,
            found: changes.listed,
            added: changes.added.len(),
            revived: changes.revived.len(),
            retired: changes.retired.len(),
            removed: changes.expired.len(),
            renamed: 0,
        };
        let to_spawn = self.tell_pollers(effects, &mut stats).await;
        if stats.retired + stats.removed + stats.added + stats.revived > 0 {
            self.dirty.store(true, Ordering::Release);
        }
        self.export_watched();
        let running = self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some((tracker, shutdown)) = running {
            for key in to_spawn {
                self.spawn_project(&tracker, &shutdown, key, Duration::ZERO);
            }
        }
        stats
    }

    /// Carries `changes` out on the slots: tasks to (re)start, slots retired and forgotten,
    /// pollers to rename; what needs the pollers' gates is returned for later.
    fn carry_out(&self, slots: &mut Slots, changes: &Changes, pass: &Pass) -> Effects {
        let mut fx = Effects::default();
        // Still listed although its jobs answered 404 (a transfer under way, say): try again.
        for id in &changes.restarted {
            let key = slots.by_id.get(id).copied();
            if let Some((key, slot)) = key.and_then(|k| Some(k).zip(slots.live.get_mut(&k))) {
                slot.ended = false;
                slot.stop = CancellationToken::new();
                fx.to_spawn.push(key);
            }
        }
        self.admit(slots, changes, pass, &mut fx);
        // Renamed or transferred in GitLab: the poller is told under its lock, later. (Revived
        // ones were told in `admit`.)
        for (id, path) in changes
            .renamed
            .iter()
            .filter(|(id, _)| !changes.revived.contains(id))
        {
            let key = slots.by_id.get(id);
            if let Some(slot) = key.and_then(|k| slots.live.get(k)) {
                fx.renamed.push((slot.poller.clone(), path.clone()));
            }
        }
        for id in &changes.retired {
            if let Some((key, slot)) = slots.remove_discovered(*id) {
                slot.stop.cancel();
                fx.stopped.push((key, slot.poller.clone()));
                slots.retired.insert(*id, slot.poller);
            }
        }
        for id in &changes.expired {
            if let Some(poller) = slots.retired.remove(id) {
                fx.expired.push(poller);
            }
        }
        fx
    }

    /// Watches the projects added or revived by a pass, in id order (new ones from the
    /// backfill window, returning ones where they stopped).
    fn admit(&self, slots: &mut Slots, changes: &Changes, pass: &Pass, fx: &mut Effects) {
        let coming: BTreeSet<ProjectId> = (changes.added.iter().map(|f| f.id))
            .chain(changes.revived.iter().copied())
            .collect();
        for found in coming.iter().filter_map(|id| pass.projects.get(id)) {
            let id = found.id;
            let poller = match slots.retired.remove(&id) {
                Some(poller) => {
                    info!(project = %found.path, "project found again; polling resumes where it stopped");
                    // Perhaps under another path (moved out of a group and back elsewhere).
                    fx.renamed.push((poller.clone(), found.path.clone()));
                    poller
                }
                None => {
                    info!(project = %found.path, id, "project discovered; watching it from the backfill window");
                    Arc::new(
                        ProjectPoller::new_resolved(
                            id,
                            found.path.clone(),
                            found.default_branch.clone(),
                            self.backfill,
                            self.labels.clone(),
                            self.shard,
                        )
                        .with_failures(self.failures.clone()),
                    )
                }
            };
            // Counted (afresh, for a revived one: pause() reset its flag) towards readiness.
            self.readiness.add(1);
            let key = slots.insert(Slot {
                poller,
                discovered: Some(id),
                stop: CancellationToken::new(),
                ended: false,
                poke: Default::default(),
            });
            fx.to_spawn.push(key);
        }
    }

    /// Tells the pollers what a pass changed for them (outside the slots' lock); returns the
    /// keys whose tasks are to be spawned.
    async fn tell_pollers(&self, fx: Effects, stats: &mut DiscoveryStats) -> Vec<TaskKey> {
        for (poller, path) in fx.renamed {
            // The state lock only: a running cycle takes the label under it at every step.
            let mut p = poller.project();
            let Some((id, old)) = p.resolved().cloned().filter(|(_, old)| *old != path) else {
                continue;
            };
            stats.renamed += 1;
            if !p.rename(&path, &self.metrics) {
                // Refused (another project's series are there, e.g. a retired one's): the
                // registry keeps the old path so a later pass tries again once they are gone.
                drop(p);
                self.slots().registry.keep_path(id, &old);
            }
        }
        for (key, poller) in fx.stopped {
            // Behind the gate: a cycle that was running has paced itself by now.
            let _gate = poller.gate().await;
            self.pacer.remove(key);
            let mut p = poller.project();
            info!(project = %p.label(), grace = %humantime::format_duration(self.discovery.grace_period),
                "project no longer found by discovery; not polled any more, counters kept for the grace period");
            self.readiness.forget(p.counted_ready);
            p.counted_ready = false;
            p.pause(&self.metrics);
        }
        if !fx.expired.is_empty() {
            // A path can be taken over (a project deleted, another created in its place):
            // the series then belong to the project that shows under it now.
            let live: Vec<SharedPoller> = self
                .slots()
                .live
                .values()
                .map(|s| s.poller.clone())
                .collect();
            let in_use: HashSet<String> = (live.iter())
                .map(|p| p.project().label().to_lowercase())
                .collect();
            for poller in fx.expired {
                let _gate = poller.gate().await;
                let mut p = poller.project();
                let label = p.label();
                let remove = !in_use.contains(&label.to_lowercase());
                p.forget(&self.metrics, remove);
                info!(project = %label, series_removed = remove, "grace period over; the project is forgotten");
            }
        }
        fx.to_spawn
    }

    /// Rediscovers every `discovery.interval` until `shutdown` (the first pass is `run`'s).
    pub(super) async fn discovery_loop(self: Arc<Self>, shutdown: CancellationToken) {
        // Readiness waits for the first complete pass: until then the set of projects is
        // not known (a GitLab outage at start, or a group entry that does not exist).
        let mut ready = false;
        let mut failures = 0u32;
        loop {
            let stats = tokio::select! {
                _ = shutdown.cancelled() => return,
                stats = self.discover() => stats,
            };
            if stats.complete {
                info!(
                    found = stats.found,
                    added = stats.added,
                    revived = stats.revived,
                    retired = stats.retired,
                    removed = stats.removed,
                    renamed = stats.renamed,
                    requests = stats.requests,
                    "project discovery done"
                );
                failures = 0;
                if !ready {
                    ready = true;
                    self.readiness.mark_discovered();
                    self.announce_if_ready();
                }
            } else {
                failures = failures.saturating_add(1);
                // The failed sources' errors are logged already, each once.
                info!(
                    found = stats.found,
                    added = stats.added,
                    requests = stats.requests,
                    "project discovery incomplete: projects it missed are added, none removed; trying again soon"
                );
            }
            // An incomplete pass is retried sooner: 30 s, doubling up to the interval.
            let wait = if stats.complete {
                self.discovery.interval
            } else {
                Duration::from_secs(30)
                    .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
                    .min(self.discovery.interval)
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
