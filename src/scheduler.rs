//! When each project is polled, and which projects there are.
//!
//! Every watched project has its own task, so a slow or failing project never holds up the
//! others; at most `poll.concurrency` poll at once, and [`Pacer`] spaces each project's cycles
//! (busy ones at `poll.interval`, idle ones backing off to `poll.max_interval`, all within the
//! shared request budget). Projects come from `[[projects]]` (fixed) and from discovery
//! (`[[groups]]`, `discovery.membership`), which runs every `discovery.interval`: new projects
//! start with the backfill window; one no longer found stops being polled at once and keeps its
//! series (and its tracker, should it come back) for `discovery.grace_period`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{DiscoverySettings, Settings};
use crate::discovery;
use crate::gitlab::{ClientBuildError, GitlabClient, RetryPolicy};
use crate::health::Health;
use crate::labels::LabelsConfig;
use crate::metrics::Metrics;
use crate::metrics::carry::capture;
use crate::pacing::{Activity, Pacer};
use crate::poll::{CycleStats, NextPoll, PollError, ProjectPoller, ProjectState};
use crate::state::{self, Checkpoint, ProjectCheckpoint, StateError};
use crate::tracker::secs;

/// How often, at most, a checkpoint is written.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Render(#[from] crate::metrics::MetricsError),
    #[error("checkpoint task failed: {0}")]
    Task(String),
}

/// `/readyz` turns ready once every project known at start (and the first discovery pass's)
/// has completed its first cycle; it then stays ready while projects come and go.
#[derive(Debug)]
pub struct Readiness {
    total: AtomicUsize,
    ready: AtomicUsize,
    latched: AtomicBool,
}

impl Readiness {
    pub fn new(total: usize) -> Self {
        Self {
            total: AtomicUsize::new(total),
            ready: AtomicUsize::new(0),
            latched: AtomicBool::new(false),
        }
    }
    pub fn is_ready(&self) -> bool {
        if self.latched.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.ready.load(Ordering::Acquire) >= self.total.load(Ordering::Acquire);
        if ready {
            self.latched.store(true, Ordering::Release);
        }
        ready
    }
    /// (projects done with their first cycle, projects in all)
    pub fn progress(&self) -> (usize, usize) {
        (
            self.ready.load(Ordering::Acquire),
            self.total.load(Ordering::Acquire),
        )
    }
    fn add(&self, n: usize) {
        self.total.fetch_add(n, Ordering::AcqRel);
    }
    fn mark_one(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }
    /// A project that will not be polled any more (counted ready or not).
    fn forget(&self, counted: bool) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if counted {
            self.ready.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A watched project.
#[derive(Clone)]
struct Slot {
    poller: SharedPoller,
    /// The project id, for a project found by discovery.
    discovered: Option<u64>,
    /// The discovery sources that listed it last (empty: not known yet, e.g. restored).
    sources: BTreeSet<usize>,
    /// The path discovery last listed it under (empty for configured projects).
    path: String,
    /// Stops this project's task (a child of the shutdown token).
    stop: CancellationToken,
    /// No longer polled: not found, or another shard's.
    ended: bool,
}

/// A project's poller: its state behind a short lock, its cycles behind a gate.
type SharedPoller = Arc<ProjectPoller>;

/// A discovered project no longer found, kept for the grace period.
struct Retired {
    poller: SharedPoller,
    since_unix: f64,
}

#[derive(Default)]
struct Slots {
    next_key: u64,
    live: BTreeMap<u64, Slot>,
    /// By project id.
    retired: BTreeMap<u64, Retired>,
    /// Configured projects' ids and lower-cased paths: discovery leaves them to their entries.
    configured_ids: HashSet<u64>,
    configured_paths: HashSet<String>,
    /// Keys of the projects that have completed a poll cycle since start.
    polled_ok: HashSet<u64>,
    /// Keys of found projects whose last cycle was refused (403) or found them gone (404):
    /// `project_state` says so, and they are not what `projects_never_polled` is for.
    refused_or_gone: HashSet<u64>,
}

impl Slots {
    fn insert(&mut self, slot: Slot) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.live.insert(key, slot);
        key
    }
}

/// What a discovery pass changes beyond the slots, applied outside their lock.
#[derive(Default)]
struct Changes {
    to_spawn: Vec<u64>,
    /// Retired this pass: paused behind their gate.
    stopped: Vec<(u64, SharedPoller)>,
    /// Past the grace period: forgotten.
    expired: Vec<SharedPoller>,
    /// Shown under a new path.
    renamed: Vec<(SharedPoller, String)>,
}

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

pub struct Scheduler {
    /// Where checkpoints go (`state.dir`), if anywhere.
    state_dir: Option<PathBuf>,
    gitlab_url: String,
    /// A cycle ran since the last checkpoint.
    dirty: AtomicBool,
    client: GitlabClient,
    metrics: Arc<Metrics>,
    slots: std::sync::Mutex<Slots>,
    permits: Arc<Semaphore>,
    interval: Duration,
    pacer: Pacer,
    readiness: Arc<Readiness>,
    health: Arc<Health>,
    backfill: Duration,
    labels: LabelsConfig,
    shard: (u32, u32),
    discovery: DiscoverySettings,
    /// `limits.max_projects`, less the configured projects: what discovery may add.
    max_projects: usize,
    /// Set while `run` runs: where new projects' tasks are spawned.
    tasks: std::sync::Mutex<Option<(TaskTracker, CancellationToken)>>,
}

impl Scheduler {
    pub fn new(
        cfg: &Settings,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
    ) -> Result<Arc<Self>, ClientBuildError> {
        let shard = cfg.shard.resolve(std::env::var("HOSTNAME").ok().as_deref());
        if shard.1 > 1 {
            info!(
                index = shard.0,
                count = shard.1,
                "sharded: polling only this shard's projects"
            );
        }
        let client = GitlabClient::new(&cfg.gitlab, cfg.token(), retry, metrics.clone())?;
        let mut slots = Slots::default();
        for p in &cfg.projects {
            if let Some(id) = p.id() {
                slots.configured_ids.insert(id);
            }
            if let Some(path) = p.path() {
                slots.configured_paths.insert(path.to_lowercase());
            }
            slots.insert(Slot {
                poller: Arc::new(ProjectPoller::new(
                    p.clone(),
                    cfg.poll.backfill,
                    cfg.labels.clone(),
                    shard,
                )),
                discovered: None,
                sources: BTreeSet::new(),
                path: String::new(),
                stop: CancellationToken::new(),
                ended: false,
            });
        }
        let discovering = cfg.discovery.enabled();
        // The first discovery pass holds readiness like a project does.
        let readiness = Readiness::new(slots.live.len() + usize::from(discovering));
        let scheduler = Arc::new(Self {
            state_dir: cfg.state_dir.clone(),
            gitlab_url: cfg.gitlab.url.to_string(),
            dirty: AtomicBool::new(false),
            client,
            metrics,
            slots: std::sync::Mutex::new(slots),
            permits: Arc::new(Semaphore::new(cfg.poll.concurrency)),
            interval: cfg.poll.interval,
            pacer: Pacer::new(
                cfg.poll.interval,
                cfg.poll.max_interval,
                cfg.gitlab.max_requests_per_minute,
            ),
            readiness: Arc::new(readiness),
            health: Arc::new(Health::new(cfg.poll.interval)),
            backfill: cfg.poll.backfill,
            labels: cfg.labels.clone(),
            shard,
            discovery: cfg.discovery.clone(),
            max_projects: cfg.limits.max_projects.saturating_sub(cfg.projects.len()),
            tasks: std::sync::Mutex::new(None),
        });
        // From the start: every project is one not polled yet.
        scheduler.export_watched();
        Ok(scheduler)
    }

    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    /// What `/healthz` answers from.
    pub fn health(&self) -> Arc<Health> {
        self.health.clone()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // Plain maps of handles: still consistent if a holder panicked.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Paces against `requests_per_minute` instead of `gitlab.max_requests_per_minute`, for
    /// benchmarks and tests on a simulated clock (the real-time throttle is off there).
    pub fn set_pacing_budget(&self, requests_per_minute: f64) {
        self.pacer.set_budget(requests_per_minute);
    }

    /// How many projects are polled now (not those found gone or left to another shard).
    pub fn watched(&self) -> usize {
        self.slots().live.values().filter(|s| !s.ended).count()
    }

    /// Exports how many projects are watched, and how many have not completed a poll cycle
    /// since start (a GitLab unreachable from the start shows there, whatever the projects'
    /// labels). A configured project found missing at its first lookup stays among the
    /// latter, as does one refused before its lookup (a bad token); one another shard owns
    /// does not (its lookup succeeded), nor one no longer polled, nor one found and then
    /// refused or gone (CI disabled, deleted while the exporter was down): those show in
    /// `project_state`, and would otherwise hold the alert up for good.
    fn export_watched(&self) {
        let (watched, never_polled) = {
            let slots = self.slots();
            let watched = slots.live.values().filter(|s| !s.ended).count();
            let never_polled = slots
                .live
                .iter()
                .filter(|(key, slot)| {
                    !slot.ended
                        && !slots.polled_ok.contains(key)
                        && !slots.refused_or_gone.contains(key)
                })
                .count();
            (watched, never_polled)
        };
        self.metrics.set_watched(watched);
        self.metrics.set_never_polled(never_polled);
    }

    /// Polls one project once (waiting for a concurrency permit); returns when to poll it
    /// next (`None`: never again, or no such project any more).
    async fn poll_one(&self, key: u64) -> (Result<CycleStats, PollError>, Option<Duration>) {
        let Some(slot) = self.slots().live.get(&key).cloned() else {
            return (Err(PollError::Aborted), None);
        };
        // The semaphore is never closed, so acquire() cannot fail; treat it as "no limit" if it did.
        let _permit = self.permits.acquire().await.ok();
        // Kept through the bookkeeping below: discovery retires a project under its gate, so
        // a cycle that was running has paced itself (and is un-paced there) by then.
        let gate = slot.poller.gate().await;
        let result = slot
            .poller
            .poll_gated(&gate, &self.client, &self.metrics)
            .await;
        let next = self.after_poll(key, &slot, &result);
        let next = self.schedule(key, next, &result);
        drop(gate);
        self.export_pace();
        (result, next)
    }

    /// Readiness, configured ids and the watched counts after a cycle; returns how the
    /// project wants to be polled next.
    fn after_poll(
        &self,
        key: u64,
        slot: &Slot,
        result: &Result<CycleStats, PollError>,
    ) -> NextPoll {
        let (next, resolved_id, refused_or_gone, newly_ready) = {
            let mut p = slot.poller.project();
            // Ready once polled, or known to be gone (it would otherwise hold readiness
            // forever). Refused (401/403) counts too: a project the token cannot read must not
            // keep the whole exporter unready (it is logged and exported as such). A
            // configured project never found at all does not: that is a wrong path or
            // gitlab.url, not an exporter at work.
            let done = result.is_ok()
                || (matches!(
                    p.state(),
                    ProjectState::NotFound
                        | ProjectState::Elsewhere
                        | ProjectState::Forbidden
                        | ProjectState::Unauthorized
                ) && !p.never_found());
            let newly_ready = !p.counted_ready && done;
            p.counted_ready |= done;
            let refused_or_gone = p.resolved().is_some()
                && matches!(
                    p.state(),
                    ProjectState::Forbidden | ProjectState::NotFound | ProjectState::Elsewhere
                );
            let id = p.resolved().map(|(id, _)| *id);
            (p.next_poll(self.interval), id, refused_or_gone, newly_ready)
        };
        if newly_ready {
            self.readiness.mark_one();
        }
        if slot.discovered.is_none()
            && let Some(id) = resolved_id
        {
            self.slots().configured_ids.insert(id);
        }
        self.dirty.store(true, Ordering::Release);
        let changed = {
            let mut slots = self.slots();
            let polled = result.is_ok() && slots.polled_ok.insert(key);
            let refusal = if refused_or_gone {
                slots.refused_or_gone.insert(key)
            } else {
                slots.refused_or_gone.remove(&key)
            };
            polled || refusal
        };
        if changed {
            self.export_watched();
        }
        next
    }

    /// Paces the project's next cycle; `None`: not polled again.
    fn schedule(
        &self,
        key: u64,
        next: NextPoll,
        result: &Result<CycleStats, PollError>,
    ) -> Option<Duration> {
        if !self.slots().live.contains_key(&key) {
            // Retired by discovery while this cycle ran: no longer paced.
            self.pacer.remove(key);
            return None;
        }
        let requests = result.as_ref().map_or(1, |s| s.requests);
        match next {
            NextPoll::Never => {
                self.pacer.remove(key);
                if let Some(s) = self.slots().live.get_mut(&key) {
                    s.ended = true;
                }
                self.export_watched();
                None
            }
            NextPoll::After(d) => {
                self.pacer.remove(key);
                Some(d)
            }
            NextPoll::Paced(activity) => Some(self.pacer.after_cycle(key, requests, activity)),
        }
    }

    fn export_pace(&self) {
        let snap = self.pacer.snapshot();
        self.metrics.set_pace(
            &[
                (
                    Activity::Busy.as_str(),
                    snap.busy_projects,
                    snap.stretch.busy,
                ),
                (
                    Activity::Idle.as_str(),
                    snap.idle_projects,
                    snap.stretch.idle,
                ),
            ],
            snap.demand_per_second / snap.budget_per_second.max(f64::MIN_POSITIVE),
        );
    }

    /// Puts every project back where the checkpoint left it. Configured projects take their
    /// entries; with discovery on, the other entries come back as discovered projects (the
    /// next complete discovery pass retires those no longer found); without it they are
    /// dropped. New projects start with the backfill window.
    pub async fn restore(&self, mut cp: Checkpoint) {
        self.metrics.set_base(std::mem::take(&mut cp.own));
        // Lower-cased paths that restored or configured projects show.
        let mut in_use: HashSet<String> = self.slots().configured_paths.clone();
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
            let configured = {
                let slots = self.slots();
                slots.configured_ids.contains(&id)
                    || slots.configured_paths.contains(&path.to_lowercase())
            };
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
        let configured: Vec<Slot> = self.slots().live.values().cloned().collect();
        let mut restored = 0;
        for slot in configured {
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
                self.slots().configured_ids.insert(id);
                in_use.insert(path.to_lowercase());
            }
        }
        restored
    }

    /// A discovered project from the checkpoint: watched again, or retired as it was.
    fn restore_discovered(&self, id: u64, path: String, p: ProjectCheckpoint) {
        let retired_at = p.retired_at;
        let mut poller = ProjectPoller::new_resolved(
            id,
            path.clone(),
            p.default_branch.clone(),
            self.backfill,
            self.labels.clone(),
            self.shard,
        );
        poller.restore(p, &self.metrics);
        if retired_at.is_some() {
            // Restored with its gauges: clear them again, it is not polled.
            poller.project_mut().pause(&self.metrics);
        }
        let poller = Arc::new(poller);
        let mut slots = self.slots();
        match retired_at {
            Some(since_unix) => {
                slots.retired.insert(id, Retired { poller, since_unix });
            }
            None => {
                slots.insert(Slot {
                    poller,
                    discovered: Some(id),
                    sources: BTreeSet::new(),
                    path,
                    stop: CancellationToken::new(),
                    ended: false,
                });
                self.readiness.add(1);
            }
        }
    }

    /// Takes a checkpoint (each project under its short state lock, never waiting for a
    /// cycle) and the `/metrics` page that shows exactly its values. CPU work (copies,
    /// rendering): run it off the async workers.
    pub fn checkpoint(&self) -> Result<(Checkpoint, String), crate::metrics::MetricsError> {
        let entries: Vec<(SharedPoller, bool, Option<f64>)> = {
            let slots = self.slots();
            (slots.live.values())
                .map(|s| (s.poller.clone(), s.discovered.is_some(), None))
                .chain(
                    (slots.retired.values()).map(|r| (r.poller.clone(), true, Some(r.since_unix))),
                )
                .collect()
        };
        let mut projects = BTreeMap::new();
        let mut series = BTreeMap::new();
        for (poller, discovered, retired_at) in entries {
            let (key, mut cp) = {
                let p = poller.project();
                (p.reference.to_string(), p.checkpoint(&self.metrics))
            };
            cp.discovered = discovered;
            cp.retired_at = retired_at;
            if let Some((_, path)) = &cp.resolved {
                series.insert(path.clone(), cp.series.clone());
            }
            projects.insert(key, cp);
        }
        let own = self.metrics.own_families();
        let carried = capture(&own);
        let page = self.metrics.render_with(own, &series)?;
        let cp = Checkpoint {
            version: state::VERSION,
            gitlab_url: self.gitlab_url.clone(),
            projects,
            own: carried,
        };
        Ok((cp, page))
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
            let (cp, page) = me.checkpoint()?;
            state::save(&dir, &cp)?;
            Ok::<_, CheckpointError>(page)
        })
        .await
        .map_err(|e| CheckpointError::Task(e.to_string()))
        .and_then(|r| r);
        match result {
            Ok(page) => {
                self.metrics.publish(page, secs(Utc::now()));
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
    async fn checkpoint_loop(self: Arc<Self>, shutdown: CancellationToken) {
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

    /// One discovery pass: adds new projects, brings back returning ones, retires those no
    /// longer found (only after a complete pass) and removes the series of projects retired
    /// longer than the grace period.
    pub async fn discover(self: &Arc<Self>) -> DiscoveryStats {
        let mut pass = discovery::discover(
            &self.client,
            &self.metrics,
            &self.discovery,
            self.max_projects,
        )
        .await;
        self.metrics.discovery_ran(pass.complete);
        let now = secs(Utc::now());
        let mut stats = DiscoveryStats {
            requests: pass.requests,
            complete: pass.complete,
            ..DiscoveryStats::default()
        };
        let changes = {
            let mut slots = self.slots();
            let mine = self.mine(&slots, std::mem::take(&mut pass.projects));
            stats.found = mine.len();
            let mut changes = Changes::default();
            self.admit(&mut slots, &mine, &mut stats, &mut changes);
            self.retire(&mut slots, &mine, &pass, now, &mut stats, &mut changes);
            self.expire(&mut slots, now, &mut stats, &mut changes);
            changes
        };
        let to_spawn = self.apply(changes, &mut stats).await;
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

    /// The projects of a pass this replica watches: not configured ones (left to their
    /// entries), not another shard's.
    fn mine(
        &self,
        slots: &Slots,
        found: BTreeMap<u64, discovery::Found>,
    ) -> BTreeMap<u64, discovery::Found> {
        found
            .into_iter()
            .filter(|(id, f)| {
                !slots.configured_ids.contains(id)
                    && !slots.configured_paths.contains(&f.path.to_lowercase())
                    && crate::shard::owner(*id, self.shard.1) == self.shard.0
            })
            .collect()
    }

    /// Watches the projects of `mine` not watched yet (new, or back from retirement), polls
    /// again those still listed after their jobs answered 404, and notes new paths and sources.
    fn admit(
        &self,
        slots: &mut Slots,
        mine: &BTreeMap<u64, discovery::Found>,
        stats: &mut DiscoveryStats,
        changes: &mut Changes,
    ) {
        let live_ids: HashSet<u64> = slots.live.values().filter_map(|s| s.discovered).collect();
        // Still listed although its jobs answered 404 (a transfer under way, say): try again.
        for (key, slot) in slots.live.iter_mut() {
            if slot.ended && slot.discovered.is_some_and(|id| mine.contains_key(&id)) {
                slot.ended = false;
                slot.stop = CancellationToken::new();
                changes.to_spawn.push(*key);
            }
        }
        for (id, found) in mine.iter().filter(|(id, _)| !live_ids.contains(id)) {
            let poller = match slots.retired.remove(id) {
                Some(r) => {
                    info!(project = %found.path, "project found again; polling resumes where it stopped");
                    stats.revived += 1;
                    // Perhaps under another path (moved out of a group and back elsewhere).
                    changes.renamed.push((r.poller.clone(), found.path.clone()));
                    r.poller
                }
                None => {
                    info!(project = %found.path, id, "project discovered; watching it from the backfill window");
                    stats.added += 1;
                    Arc::new(ProjectPoller::new_resolved(
                        *id,
                        found.path.clone(),
                        found.default_branch.clone(),
                        self.backfill,
                        self.labels.clone(),
                        self.shard,
                    ))
                }
            };
            // Counted (afresh, for a revived one: pause() reset its flag) towards readiness.
            self.readiness.add(1);
            let key = slots.insert(Slot {
                poller,
                discovered: Some(*id),
                sources: found.sources.clone(),
                path: found.path.clone(),
                stop: CancellationToken::new(),
                ended: false,
            });
            changes.to_spawn.push(key);
        }
        for slot in slots.live.values_mut() {
            let Some(found) = slot.discovered.and_then(|id| mine.get(&id)) else {
                continue;
            };
            // Renamed or transferred in GitLab: the poller is told under its lock, later.
            if found.path != slot.path {
                changes
                    .renamed
                    .push((slot.poller.clone(), found.path.clone()));
                slot.path = found.path.clone();
            }
            // Remember who lists each project (see `retire`).
            slot.sources = found.sources.clone();
        }
    }

    /// Stops polling the discovered projects the pass did not list, when every source that
    /// listed them answered (all of them, when that is not known); kept for the grace period.
    fn retire(
        &self,
        slots: &mut Slots,
        mine: &BTreeMap<u64, discovery::Found>,
        pass: &discovery::Pass,
        now: f64,
        stats: &mut DiscoveryStats,
        changes: &mut Changes,
    ) {
        let gone: Vec<(u64, u64)> = slots
            .live
            .iter()
            .filter_map(|(k, s)| s.discovered.map(|id| (*k, id, s)))
            .filter(|(_, id, _)| !mine.contains_key(id))
            .filter(|(_, _, s)| {
                pass.complete
                    || (!s.sources.is_empty() && s.sources.iter().all(|i| !pass.failed.contains(i)))
            })
            .map(|(k, id, _)| (k, id))
            .collect();
        for (key, id) in gone {
            if let Some(slot) = slots.live.remove(&key) {
                slots.refused_or_gone.remove(&key);
                slot.stop.cancel();
                changes.stopped.push((key, slot.poller.clone()));
                slots.retired.insert(
                    id,
                    Retired {
                        poller: slot.poller,
                        since_unix: now,
                    },
                );
                stats.retired += 1;
            }
        }
    }

    /// Takes the projects retired longer than the grace period out of the retired set.
    fn expire(
        &self,
        slots: &mut Slots,
        now: f64,
        stats: &mut DiscoveryStats,
        changes: &mut Changes,
    ) {
        let grace = self.discovery.grace_period.as_secs_f64();
        let old: Vec<u64> = slots
            .retired
            .iter()
            .filter(|(_, r)| now - r.since_unix >= grace)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            if let Some(r) = slots.retired.remove(&id) {
                changes.expired.push(r.poller);
                stats.removed += 1;
            }
        }
    }

    /// Tells the pollers what a pass changed for them (outside the slots' lock); returns the
    /// keys whose tasks are to be spawned.
    async fn apply(&self, changes: Changes, stats: &mut DiscoveryStats) -> Vec<u64> {
        for (poller, path) in changes.renamed {
            // The state lock only: a running cycle takes the label under it at every step.
            let mut p = poller.project();
            if p.resolved().is_some_and(|(_, old)| *old != path) {
                p.rename(&path, &self.metrics);
                stats.renamed += 1;
            }
        }
        for (key, poller) in changes.stopped {
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
        if !changes.expired.is_empty() {
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
            for poller in changes.expired {
                let _gate = poller.gate().await;
                let mut p = poller.project();
                let label = p.label();
                let remove = !in_use.contains(&label.to_lowercase());
                p.forget(&self.metrics, remove);
                info!(project = %label, series_removed = remove, "grace period over; the project is forgotten");
            }
        }
        changes.to_spawn
    }

    /// Rediscovers every `discovery.interval` until `shutdown` (the first pass is `run`'s).
    async fn discovery_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
                info!(?stats, "project discovery done");
                failures = 0;
                if !ready {
                    ready = true;
                    self.readiness.mark_one();
                }
            } else {
                failures = failures.saturating_add(1);
                warn!(
                    ?stats,
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

    /// Polls every watched project once, concurrently within the limit; results in key order.
    /// Used by tests and benchmarks to drive cycles deterministically.
    pub async fn poll_all_once(self: &Arc<Self>) -> Vec<Result<CycleStats, PollError>> {
        let keys: Vec<u64> = self.slots().live.keys().copied().collect();
        self.poll_keys(&keys)
            .await
            .into_iter()
            .map(|(_, r, _)| r)
            .collect()
    }

    async fn poll_keys(
        self: &Arc<Self>,
        keys: &[u64],
    ) -> Vec<(u64, Result<CycleStats, PollError>, Option<Duration>)> {
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
        due: &mut BTreeMap<u64, Duration>,
    ) -> Vec<CycleStats> {
        let keys: Vec<u64> = self
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

    fn spawn_project(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        key: u64,
        first_delay: Duration,
    ) {
        let Some(stop) = self.slots().live.get(&key).map(|s| s.stop.clone()) else {
            return;
        };
        let me = self.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut delay = first_delay;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                let started = tokio::time::Instant::now();
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = stop.cancelled() => return,
                    (_, next) = me.poll_one(key) => next,
                };
                let Some(next) = next else {
                    return; // the project is gone; logged and exported by the poller
                };
                // ±10% jitter keeps projects from falling into lock-step.
                let period = next.mul_f64(0.9 + fastrand::f64() * 0.2);
                delay = period.saturating_sub(started.elapsed());
            }
        });
    }

    /// Polls every project forever, each on its own schedule, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let discovering = self.discovery.enabled();
        info!(
            projects = self.watched(),
            discovery = discovering,
            interval = %humantime::format_duration(self.interval),
            max_interval = %humantime::format_duration(self.pacer.max_interval()),
            "polling started"
        );
        let tracker = TaskTracker::new();
        *self
            .tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((tracker.clone(), shutdown.clone()));
        let writer = self
            .state_dir
            .is_some()
            .then(|| tokio::spawn(self.clone().checkpoint_loop(shutdown.clone())));
        let keys: Vec<u64> = self.slots().live.keys().copied().collect();
        for key in keys {
            // Spread the first polls over a tenth of the interval so they do not burst.
            let delay = self.interval.mul_f64(fastrand::f64() * 0.1);
            self.spawn_project(&tracker, &shutdown, key, delay);
        }
        self.export_watched();
        if discovering {
            tracker.spawn(self.clone().discovery_loop(shutdown.clone()));
        }
        shutdown.cancelled().await;
        tracker.close();
        tracker.wait().await;
        if let Some(writer) = writer {
            let _ = writer.await;
            match self.write_checkpoint().await {
                Ok(()) => info!("final checkpoint written"),
                Err(e) => error!(error = %e, "cannot write the final checkpoint"),
            }
        }
        info!("polling stopped");
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("watched", &self.watched())
            .finish_non_exhaustive()
    }
}
