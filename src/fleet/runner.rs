//! When each project is polled, and which projects there are.
//!
//! Every watched project has its own task, so a slow or failing project never holds up the
//! others; at most `poll.concurrency` poll at once, and [`Pacer`] spaces each project's cycles
//! (busy ones at `poll.interval`, idle ones backing off to `poll.max_interval`, all within the
//! shared request budget). Projects come from `[[projects]]` (fixed) and from discovery
//! (`[[groups]]`, `discovery.membership`), which runs every `discovery.interval`: new projects
//! start with the backfill window; one no longer found stops being polled at once and keeps its
//! series (and its tracker, should it come back) for `discovery.grace_period`.
//!
//! Which discovered projects are watched is the [`Registry`]'s to say (a pure reconciliation,
//! see [`crate::fleet::registry`]); this module runs the tasks it asks for. Parts (private
//! children): `discover` (carrying out a discovery pass), `checkpoint` (checkpoints and
//! restore), `drivers` (the polling loop without its waits, for tests and benchmarks),
//! `readiness`.

mod checkpoint;
mod discover;
mod drivers;
mod hooks;
mod progress;
mod readiness;
mod view;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

pub use checkpoint::CheckpointError;
pub use discover::DiscoveryStats;
pub use readiness::Readiness;
pub use view::{FleetView, ProjectView};

use crate::config::{DiscoverySettings, Settings};
use crate::fleet::pacing::Pacer;
use crate::fleet::registry::Registry;
use crate::gitlab::{ClientBuildError, GitlabClient, RetryPolicy};
use crate::health::Health;
use crate::labels::LabelsConfig;
use crate::metrics::Metrics;
use crate::model::Activity;
use crate::model::ProjectId;
use crate::project::cycle::{CycleStats, NextPoll, PollError, ProjectPoller, ProjectState};
use crate::project::followups::ClassifyConfig;

/// A project's task key in the runner: pacing, the drivers' schedules and the never-polled
/// counts go by it. Not the project id: a configured project is polled before its id is known
/// (its first lookup finds it), and a task key stays put while discovery moves a project in
/// and out; discovered projects are found from their id through [`Slots::by_id`].
type TaskKey = u64;

/// A watched project.
#[derive(Clone)]
struct Slot {
    poller: SharedPoller,
    /// The project id, for a project found by discovery (its path and sources are in the
    /// registry).
    discovered: Option<ProjectId>,
    /// Stops this project's task (a child of the shutdown token).
    stop: CancellationToken,
    /// No longer polled: not found, or another shard's.
    ended: bool,
    /// Asks its task for a poll soon (a reconciliation: its hooks were dropped, or one may
    /// hide a reset only a poll can see).
    poke: Arc<tokio::sync::Notify>,
}

/// A project's poller: its state behind a short lock, its cycles behind a gate.
type SharedPoller = Arc<ProjectPoller>;

struct Slots {
    next_key: TaskKey,
    /// In the order they came: configured ones first, in configuration order.
    live: BTreeMap<TaskKey, Slot>,
    /// The task keys of the live discovered projects.
    by_id: HashMap<ProjectId, TaskKey>,
    /// The task keys of configured projects, once their id is known (for webhooks).
    configured_by_id: HashMap<ProjectId, TaskKey>,
    /// Discovered projects no longer found, kept for the grace period (since when: registry).
    retired: BTreeMap<ProjectId, SharedPoller>,
    /// The discovered projects and the rules of their coming and going.
    registry: Registry,
    /// Keys of the projects that have completed a poll cycle since start.
    polled_ok: HashSet<TaskKey>,
    /// Keys of found projects whose last cycle was refused (403) or found them gone (404):
    /// `project_state` says so, and they are not what `projects_never_polled` is for.
    refused_or_gone: HashSet<TaskKey>,
    /// The delay each project's task planned before its next cycle (without jitter), for the
    /// status page.
    intervals: HashMap<TaskKey, Duration>,
}

impl Slots {
    fn new(registry: Registry) -> Self {
        Self {
            next_key: 0,
            live: BTreeMap::new(),
            by_id: HashMap::new(),
            configured_by_id: HashMap::new(),
            retired: BTreeMap::new(),
            registry,
            polled_ok: HashSet::new(),
            refused_or_gone: HashSet::new(),
            intervals: HashMap::new(),
        }
    }

    fn insert(&mut self, slot: Slot) -> TaskKey {
        let key = self.next_key;
        self.next_key += 1;
        if let Some(id) = slot.discovered {
            self.by_id.insert(id, key);
        }
        self.live.insert(key, slot);
        key
    }

    /// Takes a discovered project's slot out of the live ones.
    fn remove_discovered(&mut self, id: ProjectId) -> Option<(TaskKey, Slot)> {
        let key = self.by_id.remove(&id)?;
        self.polled_ok.remove(&key);
        self.refused_or_gone.remove(&key);
        self.intervals.remove(&key);
        self.live.remove(&key).map(|slot| (key, slot))
    }
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
    /// `webhook.reconcile_interval`; `None` without webhooks.
    reconcile_interval: Option<Duration>,
    pacer: Pacer,
    readiness: Arc<Readiness>,
    health: Arc<Health>,
    backfill: Duration,
    labels: LabelsConfig,
    /// `[failures]` when failed jobs are classified.
    failures: Option<ClassifyConfig>,
    shard: (u32, u32),
    discovery: DiscoverySettings,
    /// `limits.max_projects`, less the configured projects: what discovery may add.
    max_projects: usize,
    /// Set while `run` runs: where new projects' tasks are spawned.
    tasks: std::sync::Mutex<Option<(TaskTracker, CancellationToken)>>,
    /// `gitlab.max_requests_per_minute`, for the summary.
    max_requests_per_minute: f64,
    /// How often the summary is logged.
    summary_interval: Duration,
    /// Jobs counted by the projects' first cycles since start (for the ready line).
    backfill_jobs: AtomicU64,
    /// The ready line was logged.
    ready_announced: AtomicBool,
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
        let registry = Registry::new(
            cfg.projects.iter().filter_map(|p| p.id()).collect(),
            cfg.projects
                .iter()
                .filter_map(|p| p.path().map(str::to_string)),
            shard,
            cfg.discovery.grace_period.as_secs_f64(),
        );
        let mut slots = Slots::new(registry);
        let failures = ClassifyConfig::from_settings(cfg);
        for p in &cfg.projects {
            let key = slots.insert(Slot {
                poller: Arc::new(
                    ProjectPoller::new(p.clone(), cfg.poll.backfill, cfg.labels.clone(), shard)
                        .with_failures(failures.clone()),
                ),
                discovered: None,
                stop: CancellationToken::new(),
                ended: false,
                poke: Default::default(),
            });
            // Known by id from the start: its hooks find it (and wait for its lookup, which
            // gives the label they are counted under).
            if let Some(id) = p.id() {
                slots.configured_by_id.insert(id, key);
            }
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
            reconcile_interval: cfg.webhook.as_ref().map(|w| w.reconcile_interval),
            pacer: Pacer::new(
                cfg.poll.interval,
                cfg.poll.max_interval,
                cfg.gitlab.max_requests_per_minute,
            ),
            readiness: Arc::new(readiness),
            // The loop publishes once per poll interval but at most once per tick: a poll
            // interval under a tick must not make a page one tick old look stale.
            health: Arc::new(Health::new(
                cfg.poll.interval.max(checkpoint::CHECKPOINT_EVERY),
            )),
            backfill: cfg.poll.backfill,
            labels: cfg.labels.clone(),
            failures,
            shard,
            discovery: cfg.discovery.clone(),
            max_projects: cfg.limits.max_projects.saturating_sub(cfg.projects.len()),
            tasks: std::sync::Mutex::new(None),
            max_requests_per_minute: cfg.gitlab.max_requests_per_minute,
            summary_interval: cfg.summary_interval,
            backfill_jobs: AtomicU64::new(0),
            ready_announced: AtomicBool::new(false),
        });
        // From the start: every project is one not polled yet.
        scheduler.export_watched();
        Ok(scheduler)
    }

    /// This replica's `(shard, shard count)`.
    pub fn shard(&self) -> (u32, u32) {
        self.shard
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

    /// Polls one project once (waiting for a concurrency permit) and decides when to poll it
    /// next (`None`: never again, or no such project any more): the one step of the polling
    /// loop, shared by the spawned tasks ([`Scheduler::run`]) and the test drivers
    /// (`drivers`), which differ only in who waits for that time.
    async fn poll_one(&self, key: TaskKey) -> (Result<CycleStats, PollError>, Option<Duration>) {
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
        {
            let mut slots = self.slots();
            match next {
                Some(d) if slots.live.contains_key(&key) => slots.intervals.insert(key, d),
                _ => slots.intervals.remove(&key),
            };
        }
        drop(gate);
        self.export_pace();
        (result, next)
    }

    /// Readiness, configured ids and the watched counts after a cycle; returns how the
    /// project wants to be polled next.
    fn after_poll(
        &self,
        key: TaskKey,
        slot: &Slot,
        result: &Result<CycleStats, PollError>,
    ) -> NextPoll {
        let (next, resolved_id, refused_or_gone, newly_ready, label) = {
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
            // Only a cycle of this replica's counts as a first cycle.
            let label = (p.state() != ProjectState::Elsewhere).then(|| p.label());
            (
                p.next_poll(self.interval),
                id,
                refused_or_gone,
                newly_ready,
                label,
            )
        };
        if slot.discovered.is_none()
            && let Some(id) = resolved_id
        {
            let mut slots = self.slots();
            slots.registry.add_configured_id(id);
            slots.configured_by_id.insert(id, key);
        }
        self.dirty.store(true, Ordering::Release);
        let (changed, first) = {
            let mut slots = self.slots();
            let polled = result.is_ok() && slots.polled_ok.insert(key);
            let refusal = if refused_or_gone {
                slots.refused_or_gone.insert(key)
            } else {
                slots.refused_or_gone.remove(&key)
            };
            (polled || refusal, polled)
        };
        if first && let (Ok(stats), Some(label)) = (result, &label) {
            self.first_cycle_done(label, stats);
        }
        if changed {
            self.export_watched();
        }
        if newly_ready {
            self.readiness.mark_one();
            self.announce_if_ready();
        }
        next
    }

    /// Paces the project's next cycle; `None`: not polled again.
    fn schedule(
        &self,
        key: TaskKey,
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
                let mut slots = self.slots();
                let discovered = slots.live.get_mut(&key).and_then(|s| {
                    s.ended = true;
                    s.discovered
                });
                // A later pass that still lists it tries again.
                if let Some(id) = discovered {
                    slots.registry.mark_ended(id);
                }
                drop(slots);
                self.export_watched();
                None
            }
            NextPoll::After(d) => {
                self.pacer.remove(key);
                Some(d)
            }
            NextPoll::Paced(activity) => Some(self.pacer.after_cycle(key, requests, activity)),
            NextPoll::Quiet(activity) => Some(match self.reconcile_interval {
                Some(r) => self.pacer.after_quiet(key, requests, r),
                None => self.pacer.after_cycle(key, requests, activity),
            }),
            NextPoll::Reconcile => Some(match self.reconcile_interval {
                Some(r) => self.pacer.after_reconcile(key, requests, r),
                // Unreachable in practice: without webhooks no project receives hooks.
                None => self.pacer.after_cycle(key, requests, Activity::Idle),
            }),
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

    /// Spawns a project's task: waits, [`Scheduler::poll_one`], waits what it says (with
    /// jitter, less the cycle's own time), until the project is stopped or shut down.
    fn spawn_project(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        key: TaskKey,
        first_delay: Duration,
    ) {
        let Some((stop, poke)) = self
            .slots()
            .live
            .get(&key)
            .map(|s| (s.stop.clone(), s.poke.clone()))
        else {
            return;
        };
        let me = self.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let mut wake = tokio::time::Instant::now() + first_delay;
            let mut last_start: Option<tokio::time::Instant> = None;
            loop {
                // Biased: a project stopped (retired) never starts one more cycle.
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = poke.notified() => {
                        // A reconciliation soon, but never sooner than `poll.interval` after
                        // the last cycle began: pokes cannot make a project poll in a loop.
                        let soon = last_start.map_or_else(tokio::time::Instant::now, |s| s + me.interval);
                        wake = wake.min(soon);
                        continue;
                    }
                }
                let started = tokio::time::Instant::now();
                last_start = Some(started);
                let next = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = stop.cancelled() => return,
                    (_, next) = me.poll_one(key) => next,
                };
                let Some(next) = next else {
                    return; // the project is gone; logged and exported by the poller
                };
                // ±10% jitter keeps projects from falling into lock-step.
                let period = next.mul_f64(0.9 + fastrand::f64() * 0.2);
                wake = started + period;
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
        let keys: Vec<TaskKey> = self.slots().live.keys().copied().collect();
        for key in keys {
            // Spread the first polls over a tenth of the interval so they do not burst.
            let delay = self.interval.mul_f64(fastrand::f64() * 0.1);
            self.spawn_project(&tracker, &shutdown, key, delay);
        }
        self.export_watched();
        if discovering {
            tracker.spawn(self.clone().discovery_loop(shutdown.clone()));
        }
        tracker.spawn(
            self.clone()
                .summary_loop(self.summary_interval, shutdown.clone()),
        );
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
