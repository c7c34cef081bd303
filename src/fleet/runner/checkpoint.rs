//! The scheduler's side of checkpoints: taking one from every project (live and retired),
//! writing it with the page `/metrics` then shows, the loop that does so, and restoring from
//! one at start.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{Scheduler, SharedPoller, Slot};
use crate::fleet::registry::{Entry, EntryState};
use crate::metrics::Snapshot;
use crate::metrics::carry::capture;
use crate::metrics::jobs::ProjectSeries;
use crate::model::ProjectId;
use crate::persist::{self, Checkpoint, ProjectCheckpoint, StateError};
use crate::project::cycle::{ProjectPoller, ProjectState};
use crate::tracker::secs;

/// How often, at most, a checkpoint is written.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Render(#[from] crate::metrics::MetricsError),
    #[error("checkpoint task failed: {0}")]
    Task(String),
}

/// The job series of a checkpoint by path, borrowed: in the order the projects were taken, a
/// later project of the same path winning.
fn by_path<'c>(cp: &'c Checkpoint, order: &[String]) -> BTreeMap<&'c str, &'c ProjectSeries> {
    let mut series = BTreeMap::new();
    for p in order.iter().filter_map(|k| cp.projects.get(k)) {
        if let Some((_, path)) = &p.resolved {
            series.insert(path.as_str(), &p.series);
        }
    }
    series
}

/// [`by_path`], the series moved out of the checkpoint.
fn take_by_path(cp: &mut Checkpoint, order: &[String]) -> BTreeMap<String, ProjectSeries> {
    let mut series = BTreeMap::new();
    let mut taken = HashSet::new();
    for key in order {
        // A key taken twice is the same entry: its series are already moved.
        if !taken.insert(key.as_str()) {
            continue;
        }
        if let Some(p) = cp.projects.get_mut(key)
            && let Some((_, path)) = &p.resolved
        {
            series.insert(path.clone(), std::mem::take(&mut p.series));
        }
    }
    series
}

impl Scheduler {
    /// Puts every project back where the checkpoint left it. Configured projects take their
    /// entries; with discovery on, the other entries come back as discovered projects (the
    /// next complete discovery pass retires those no longer found); without it they are
    /// dropped. New projects start with the backfill window.
    pub async fn restore(&self, mut cp: Checkpoint) {
        self.metrics.set_base(std::mem::take(&mut cp.own));
        // Lower-cased paths that restored or configured projects show.
        let mut in_use: HashSet<String> = self.slots().registry.configured_paths().clone();
        let mut restored = self.restore_configured(&mut cp, &mut in_use);
        let discovering = self.discovery.enabled();
        let mut dropped = Vec::new();
        let mut seen_ids = HashSet::new();
        for (key, p) in std::mem::take(&mut cp.projects) {
            let Some((id, path)) = p.resolved.clone() else {
                dropped.push(key);
                continue;
            };
            let owned = crate::shard::owner(id, self.shard.1) == self.shard.0;
            let configured = self.slots().registry.is_configured(id, &path);
            // One poller per project id, whatever the checkpoint holds.
            if !discovering || !owned || configured || !seen_ids.insert(id) {
                dropped.push(path);
                continue;
            }
            in_use.insert(path.to_lowercase());
            self.restore_discovered(id, path, p);
            restored += 1;
        }
        // What nothing shows any more must not linger through its carried counters.
        for label in &dropped {
            if !in_use.contains(&label.to_lowercase()) {
                self.metrics.remove_project(label, ProjectState::ALL);
            }
        }
        info!(
            restored,
            dropped = dropped.len(),
            "restored from the checkpoint"
        );
    }

    /// Configured projects take their own entries, else the same project's entry from
    /// discovery (same id or path), so its tracker carries over and nothing is counted twice.
    /// Returns how many were restored.
    fn restore_configured(&self, cp: &mut Checkpoint, in_use: &mut HashSet<String>) -> usize {
        let configured: Vec<(super::TaskKey, Slot)> = self
            .slots()
            .live
            .iter()
            .map(|(k, s)| (*k, s.clone()))
            .collect();
        let mut restored = 0;
        for (task, slot) in configured {
            let mut poller = slot.poller.project();
            let reference = poller.reference.clone();
            let key = if cp.projects.contains_key(&reference.to_string()) {
                Some(reference.to_string())
            } else {
                cp.projects
                    .iter()
                    .find(|(_, e)| {
                        e.resolved.as_ref().is_some_and(|(id, path)| {
                            reference.id() == Some(*id)
                                || reference
                                    .path()
                                    .is_some_and(|p| p.eq_ignore_ascii_case(path))
                        })
                    })
                    .map(|(k, _)| k.clone())
            };
            if let Some(p) = key.and_then(|k| cp.projects.remove(&k)) {
                poller.restore(p, &self.metrics);
                restored += 1;
            }
            let resolved = poller.resolved().cloned();
            // Never the slots' lock under a project's.
            drop(poller);
            // Known before its first poll: discovery must leave it to its entry.
            if let Some((id, path)) = resolved {
                let mut slots = self.slots();
                slots.registry.add_configured_id(id);
                slots.configured_by_id.insert(id, task);
                drop(slots);
                in_use.insert(path.to_lowercase());
            }
        }
        restored
    }

    /// A discovered project from the checkpoint: watched again, or retired as it was.
    fn restore_discovered(&self, id: ProjectId, path: String, p: ProjectCheckpoint) {
        let retired_at = p.retired_at;
        let mut poller = ProjectPoller::new_resolved(
            id,
            path.clone(),
            p.default_branch.clone(),
            self.backfill,
            self.labels.clone(),
            self.shard,
        )
        .with_failures(self.failures.clone());
        poller.restore(p, &self.metrics);
        if retired_at.is_some() {
            // Restored with its gauges: clear them again, it is not polled.
            poller.project_mut().pause(&self.metrics);
        }
        let poller = Arc::new(poller);
        let mut slots = self.slots();
        // Its sources are not known until the next pass lists it (see `reconcile`).
        let entry = |state| Entry {
            path,
            sources: Default::default(),
            state,
        };
        match retired_at {
            Some(since) => {
                slots.retired.insert(id, poller);
                slots
                    .registry
                    .insert(id, entry(EntryState::Retired { since }));
            }
            None => {
                slots.insert(Slot {
                    poller,
                    discovered: Some(id),
                    stop: CancellationToken::new(),
                    ended: false,
                    poke: Default::default(),
                });
                slots
                    .registry
                    .insert(id, entry(EntryState::Live { ended: false }));
                self.readiness.add(1);
            }
        }
    }

    /// Takes a checkpoint (each project under its short state lock, never waiting for a
    /// cycle) and the `/metrics` page that shows exactly its values. CPU work (copies,
    /// rendering): run it off the async workers.
    pub fn checkpoint(&self) -> Result<(Checkpoint, String), crate::metrics::MetricsError> {
        let (cp, own, order) = self.take_checkpoint();
        let series = by_path(&cp, &order);
        let page = self.metrics.render_projects(own, &series)?;
        Ok((cp, page))
    }

    /// A checkpoint, the own families as it saved them, and the order its projects were
    /// taken in (see [`by_path`]).
    fn take_checkpoint(
        &self,
    ) -> (
        Checkpoint,
        Vec<prometheus::proto::MetricFamily>,
        Vec<String>,
    ) {
        let entries: Vec<(SharedPoller, bool, Option<f64>)> = {
            let slots = self.slots();
            let since = |id| match slots.registry.get(id).map(|e| e.state) {
                Some(EntryState::Retired { since }) => Some(since),
                // Not in the registry as retired: a broken invariant; saved as retired now,
                // so its grace period starts again rather than never ending.
                _ => Some(crate::tracker::secs(Utc::now())),
            };
            (slots.live.values())
                .map(|s| (s.poller.clone(), s.discovered.is_some(), None))
                .chain((slots.retired.iter()).map(|(id, p)| (p.clone(), true, since(*id))))
                .collect()
        };
        let mut projects = BTreeMap::new();
        let mut order = Vec::with_capacity(entries.len());
        for (poller, discovered, retired_at) in entries {
            let (key, mut cp) = {
                let p = poller.project();
                (p.reference.to_string(), p.checkpoint(&self.metrics))
            };
            cp.discovered = discovered;
            cp.retired_at = retired_at;
            order.push(key.clone());
            projects.insert(key, cp);
        }
        let own = self.metrics.own_families();
        let carried = capture(&own);
        let cp = Checkpoint {
            version: persist::VERSION,
            gitlab_url: self.gitlab_url.clone(),
            projects,
            own: carried,
        };
        (cp, own, order)
    }

    /// Writes a checkpoint (when `state.dir` is set), then lets `/metrics` show its values:
    /// what a scrape sees is always on disk already, so a crash never takes a value back.
    /// Taken, rendered and written on a blocking thread. A failure is counted in
    /// `gitlab_jobs_exporter_checkpoint_failures_total`.
    pub async fn write_checkpoint(self: &Arc<Self>) -> Result<(), CheckpointError> {
        let Some(dir) = self.state_dir.clone() else {
            return Ok(());
        };
        let me = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let (mut cp, own, order) = me.take_checkpoint();
            persist::save(&dir, &cp)?;
            // The page is rendered from what was just saved when a scrape asks, not now: the
            // series move out of the checkpoint (no copy), the rest of it is dropped.
            let series = take_by_path(&mut cp, &order);
            Ok::<_, CheckpointError>(Snapshot::new(own, series))
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))
        .and_then(|r| r);
        match result {
            Ok(snapshot) => {
                self.metrics.publish_snapshot(snapshot, secs(Utc::now()));
                self.health.published();
                Ok(())
            }
            Err(e) => {
                self.metrics.checkpoint_failed();
                Err(e)
            }
        }
    }

    /// Writes a checkpoint when something changed (a cycle ran, GitLab's pause grew), at most
    /// once a second, and at least once per poll interval (the page's age is what `/healthz`
    /// checks; it also refreshes the process metrics), until `shutdown`.
    /// Failures are logged when they start and when they end, not every second.
    pub(super) async fn checkpoint_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing_since: Option<u64> = None;
        let mut written = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            // The pause served so far, into the page about to be written.
            let (served, paused_until) = self.client.count_rate_limited();
            self.health.paused_until(paused_until);
            let changed = self.dirty.swap(false, Ordering::AcqRel) || !served.is_zero();
            if !changed && written.elapsed() < self.interval {
                continue;
            }
            match self.write_checkpoint().await {
                Ok(()) => {
                    written = tokio::time::Instant::now();
                    if let Some(before) = failing_since.take() {
                        info!(
                            failed = self.metrics.checkpoint_failures().saturating_sub(before),
                            "checkpoint written again; /metrics shows current values"
                        );
                    }
                }
                Err(e) => {
                    self.dirty.store(true, Ordering::Release);
                    if failing_since.is_none() {
                        failing_since = Some(self.metrics.checkpoint_failures().saturating_sub(1));
                        error!(error = %e, "cannot write the checkpoint; /metrics keeps the last saved values until it works again (see gitlab_jobs_exporter_checkpoint_failures_total)");
                    } else {
                        tracing::debug!(error = %e, "cannot write the checkpoint (still)");
                    }
                }
            }
        }
    }
}
