//! A watched project's state: everything a poll cycle reads and writes (tracker, health, activity,
//! resolved id and path, endpoint fallbacks, the gauges it reported), apart from the network.
//!
//! It lives behind a `std::sync::Mutex` in [`crate::project::cycle::ProjectPoller`] and is locked only for
//! short, synchronous steps: a cycle plans a request under the lock, sends it without, and
//! applies the answer under the lock again. Tracker and job series change together in one lock
//! scope (`Project::feed`), so whoever takes the lock (the checkpoint, later webhooks) sees a
//! job either counted in both or in neither, never waiting for a request to GitLab.

use std::time::Duration;

use chrono::Utc;
use tracing::{info, warn};

use crate::config::ProjectRef;
use crate::gitlab::JobsPage;
use crate::labels::LabelsConfig;
use crate::metrics::Metrics;
use crate::model::Activity;
use crate::model::JobStatus;
use crate::persist::ProjectCheckpoint;
use crate::project::followups::Followups;
use crate::project::hooks::{HookState, MISSED_AFTER_SECS};
use crate::tracker::attempts::Attempts;
use crate::tracker::{Event, Tracker, secs};

/// When a project is polled next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextPoll {
    /// Gone, or another replica's.
    Never,
    /// A fixed back-off (the token is refused).
    After(Duration),
    /// As the shared budget allows, at the pace this activity asks for.
    Paced(Activity),
    /// Its hooks arrive: only to reconcile, every `webhook.reconcile_interval`.
    Reconcile,
    /// No hook seen yet, and nothing in flight that a hook would not announce (idle, or only
    /// jobs left `pending` unchanged): with webhooks on, its next change sends a hook, so it
    /// backs off up to the reconcile interval; without, it is paced at this activity.
    Quiet(Activity),
}

/// How polling a project went last time, for logs, back-off and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectState {
    Ok,
    /// 5xx, timeouts, broken bodies: retried at the normal interval.
    Failing,
    Unauthorized,
    Forbidden,
    NotFound,
    /// Polled by another replica (`shard`).
    Elsewhere,
}

impl ProjectState {
    pub const ALL: &[&str] = &["ok", "failing", "unauthorized", "forbidden", "not_found"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failing => "failing",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Elsewhere => "elsewhere",
        }
    }
}

/// Waiting for something else (an earlier stage, a person, a time): changes rarely on its own.
pub(crate) fn is_waiting(status: &JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Created | JobStatus::Manual | JobStatus::Scheduled
    )
}

/// What feeding one page did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Fed {
    /// Tracker events (jobs seen for the first time, jobs completed).
    pub events: usize,
    pub completed: usize,
}

/// One project's state (see the module documentation). The cycle logic in [`crate::project::cycle`]
/// reads and writes its fields under the lock; everything else goes through its methods.
#[derive(Debug)]
pub struct Project {
    pub reference: ProjectRef,
    /// Numeric id and `path_with_namespace`, once resolved.
    pub(crate) resolved: Option<(u64, String)>,
    pub(crate) tracker: Tracker,
    /// Failed attempts and successes to decide, for flaky jobs; changes with the tracker.
    pub(crate) attempts: Attempts,
    pub(crate) backfill: Duration,
    /// The GitLab rejected `waiting_for_callback`/`canceling` in `scope[]` (older than 17.x).
    pub(crate) legacy_scopes: bool,
    pub(crate) completed_cycles: u64,
    /// Pages the last listing of waiting jobs took.
    pub(crate) waiting_pages: usize,
    pub(crate) state: ProjectState,
    /// 401/403 answers (or 404s to the first lookup) in a row.
    pub(crate) denials: u32,
    /// Already counted towards `/readyz`.
    pub counted_ready: bool,
    pub(crate) default_branch: Option<String>,
    labels: LabelsConfig,
    /// (this replica's shard, shard count).
    shard: (u32, u32),
    /// Whether the last completed cycle saw activity (kept through failed cycles).
    pub(crate) activity: Activity,
    /// The last completed cycle counted nothing, and its only jobs in flight are `pending`
    /// (a job stuck without a runner keeps a project busy for polling alone).
    pending_only: bool,
    /// Followed jobs counted in `gitlab_jobs_exporter_tracked_jobs` for this project.
    reported_tracked: i64,
    /// Failures in a row of the pipeline-jobs endpoint.
    pub(crate) pipeline_jobs_failures: u32,
    /// The pipeline-jobs endpoint failed too often in a row: not used for this project any
    /// more (until a restart).
    pub(crate) pipeline_jobs_off: bool,
    /// Pages of the job list per cycle, at most, when not the default (tests set less).
    pub(crate) max_pages_per_cycle: Option<usize>,
    /// GitLab's clock when the deep `scheduled` jobs were last re-checked (not checkpointed:
    /// after a restart the first re-check comes a full interval later).
    pub(crate) scheduled_checked: Option<f64>,
    /// Whether its hooks arrive (see [`crate::project::hooks`]).
    pub(crate) hooks: HookState,
    /// For the status page (our clock, unix seconds; since start, not checkpointed): the
    /// last cycle that succeeded, the last one that failed and why (bounded and escaped, see
    /// [`crate::model::text`]), the last hook applied.
    pub(crate) last_success: Option<f64>,
    pub(crate) last_error: Option<(f64, String)>,
    pub(crate) last_hook: Option<f64>,
    /// Failed jobs waiting for their failure class (see [`crate::project::followups`]).
    pub(crate) followups: Followups,
}

impl Project {
    pub fn new(
        reference: ProjectRef,
        backfill: Duration,
        labels: LabelsConfig,
        shard: (u32, u32),
    ) -> Self {
        Self {
            reference,
            resolved: None,
            tracker: Tracker::new(),
            attempts: Attempts::default(),
            backfill,
            legacy_scopes: false,
            completed_cycles: 0,
            waiting_pages: 1,
            state: ProjectState::Ok,
            denials: 0,
            counted_ready: false,
            default_branch: None,
            labels,
            shard,
            activity: Activity::Busy,
            pending_only: false,
            reported_tracked: 0,
            pipeline_jobs_failures: 0,
            pipeline_jobs_off: false,
            max_pages_per_cycle: None,
            scheduled_checked: None,
            hooks: HookState::None,
            last_success: None,
            last_error: None,
            last_hook: None,
            followups: Followups::default(),
        }
    }

    /// A project already known by id and path (from discovery): no lookup needed.
    pub fn new_resolved(
        id: u64,
        path: String,
        default_branch: Option<String>,
        backfill: Duration,
        labels: LabelsConfig,
        shard: (u32, u32),
    ) -> Self {
        let reference = ProjectRef::Id(id);
        let mut project = Self::new(reference, backfill, labels, shard);
        project.resolved = Some((id, path));
        project.default_branch = default_branch;
        project
    }

    /// GitLab shows the project under another path now (renamed or transferred): its series
    /// move there, unless another project's series are there already (then it keeps the path
    /// it had, logged). Safe while a cycle runs: the cycle reads the label under the lock at
    /// every step. Returns false when the series could not move (tried again later).
    pub fn rename(&mut self, path: &str, metrics: &Metrics) -> bool {
        let Some((_, old)) = self.resolved.clone() else {
            return true;
        };
        if old == path {
            return true;
        }
        if metrics.rename_project(&old, path, ProjectState::ALL) {
            info!(project = %path, was = %old, "project renamed or moved in GitLab; its series follow");
            if let Some(r) = self.resolved.as_mut() {
                r.1 = path.to_string();
            }
            self.report_active(metrics);
            true
        } else {
            warn!(project = %old, new_path = %path, "project renamed in GitLab, but another project's series use the new path; keeping the old one for now");
            false
        }
    }

    /// Numeric id and path, once known.
    pub fn resolved(&self) -> Option<&(u64, String)> {
        self.resolved.as_ref()
    }

    /// This project's part of a checkpoint: tracker and job series taken together (the caller
    /// holds the state lock, under which both change together).
    pub fn checkpoint(&self, metrics: &Metrics) -> ProjectCheckpoint {
        ProjectCheckpoint {
            resolved: self.resolved.clone(),
            tracker: self.tracker.clone(),
            series: self
                .resolved
                .as_ref()
                .map(|(_, path)| metrics.project_series(path))
                .unwrap_or_default(),
            completed_cycles: self.completed_cycles,
            default_branch: self.default_branch.clone(),
            // The scheduler knows these.
            discovered: false,
            retired_at: None,
            label_policy: self.labels.fingerprint(),
            followups: self.followups.checkpoint(),
            attempts: self.attempts.clone(),
        }
    }

    /// Takes up where a checkpoint left off.
    pub fn restore(&mut self, cp: ProjectCheckpoint, metrics: &Metrics) {
        let policy = self.labels.fingerprint();
        let policy_changed = cp.resolved.is_some() && cp.label_policy != policy;
        if let Some((_, path)) = &cp.resolved
            && policy_changed
        {
            // Series under another policy would mix label sets in one family. The tracker is
            // kept, so no job is counted twice; the counters restart (a reset to Prometheus).
            warn!(project = %path, saved = %cp.label_policy, configured = %policy,
                "the label policy changed since the checkpoint; this project's job series restart from zero");
        } else if let Some((_, path)) = &cp.resolved {
            let dropped = metrics.restore_project_series(path, cp.series);
            if dropped > 0 {
                warn!(project = %path, dropped, "histogram buckets changed since the checkpoint; those histograms restart from zero");
            }
        }
        self.resolved = cp.resolved;
        self.tracker = cp.tracker;
        self.attempts = cp.attempts.restored();
        self.completed_cycles = cp.completed_cycles;
        self.default_branch = cp.default_branch;
        if policy_changed {
            // Queued failed jobs carry labels made under the old policy (e.g. a raw branch
            // name where `ref = "kind"` now keeps them out): the series they would join
            // restarted from zero with the jobs counted before, so they go with them.
            if !cp.followups.is_empty() {
                warn!(
                    dropped = cp.followups.len(),
                    "failed jobs waiting for their class were queued under the old label policy; not classified"
                );
            }
        } else {
            self.followups.restore(cp.followups);
        }
        self.followups.sync_gauge(metrics);
        self.sync_tracked(metrics);
        if self.resolved.is_some() {
            self.report_active(metrics);
        }
    }

    /// Sets the active-jobs gauges from the tracker.
    pub(crate) fn report_active(&self, metrics: &Metrics) {
        metrics.set_active(
            &self.label(),
            &self.tracker.active_counts(),
            self.tracker.oldest_pending_since(),
        );
    }

    /// Brings `gitlab_jobs_exporter_tracked_jobs` up to date with this project's followed
    /// jobs. Counted from what was reported before, so a cycle cut short (a retired project, a
    /// shutdown) cannot make the gauge drift.
    pub(crate) fn sync_tracked(&mut self, metrics: &Metrics) {
        let now = self.tracker.followed_len() as i64;
        metrics.add_tracked_jobs(now - self.reported_tracked);
        self.reported_tracked = now;
    }

    /// No longer polled for now (retired by discovery): its jobs are not followed any more and
    /// its gauges would only go stale (a pending job would look stuck), so they are cleared;
    /// its counters stay. A later cycle sets everything again.
    pub fn pause(&mut self, metrics: &Metrics) {
        self.set_hook_state(HookState::None, metrics);
        self.followups.unreport(metrics);
        metrics.add_tracked_jobs(-self.reported_tracked);
        self.reported_tracked = 0;
        metrics.set_active(&self.label(), &Default::default(), None);
    }

    /// Takes this project out of the metrics for good (discovery's grace period is over);
    /// its series stay when another project now shows under the same path.
    pub fn forget(&mut self, metrics: &Metrics, remove_series: bool) {
        self.set_hook_state(HookState::None, metrics);
        self.followups.unreport(metrics);
        metrics.add_tracked_jobs(-self.reported_tracked);
        self.reported_tracked = 0;
        if remove_series {
            metrics.remove_project(&self.label(), ProjectState::ALL);
        }
    }

    /// Configured by id and not looked up yet: no `project` label to export under (the
    /// path is not known; a placeholder would change under the alerts' feet).
    pub fn label_unknown(&self) -> bool {
        self.resolved.is_none() && self.reference.path().is_none()
    }

    /// The `project` label: `path_with_namespace` once known, else the configured path. For
    /// logs only while [`Project::label_unknown`] (`id 42`): never exported then.
    pub fn label(&self) -> String {
        match &self.resolved {
            Some((_, path)) => path.clone(),
            None => self.reference.to_string(),
        }
    }

    /// The shard that owns this project, when it is not this replica's (known once resolved).
    pub(crate) fn other_shard(&self) -> Option<u32> {
        let (id, _) = self.resolved.as_ref()?;
        let owner = crate::shard::owner(*id, self.shard.1);
        (owner != self.shard.0).then_some(owner)
    }

    /// How the next poll is timed.
    pub fn next_poll(&self, interval: Duration) -> NextPoll {
        match self.state {
            // A configured project never found yet is looked up again (with the back-off
            // below): it may be created, or made visible to the token, later.
            ProjectState::NotFound if self.resolved.is_none() => self.backoff(interval),
            ProjectState::NotFound | ProjectState::Elsewhere => NextPoll::Never,
            ProjectState::Unauthorized | ProjectState::Forbidden => self.backoff(interval),
            // Failed jobs wait for their class: polled at the normal pace, whatever the hooks.
            ProjectState::Ok if self.followups.config().is_some() && !self.followups.is_empty() => {
                NextPoll::Paced(Activity::Busy)
            }
            ProjectState::Ok if self.hooks_suffice() => NextPoll::Reconcile,
            ProjectState::Ok
                if self.hooks == HookState::None
                    && (self.activity == Activity::Idle || self.pending_only) =>
            {
                NextPoll::Quiet(self.activity)
            }
            ProjectState::Ok | ProjectState::Failing => NextPoll::Paced(self.activity),
        }
    }

    /// Hard back-off: 5 min, doubling up to an hour; a fixed token is picked up then.
    fn backoff(&self, interval: Duration) -> NextPoll {
        NextPoll::After(
            Duration::from_secs(300)
                .saturating_mul(2u32.saturating_pow(self.denials.saturating_sub(1).min(8)))
                .min(Duration::from_secs(3600))
                .max(interval),
        )
    }

    /// The first lookup of a configured project answered 404: it holds `/readyz` back (a
    /// wrong path, id or `gitlab.url` must not look like a working exporter).
    pub fn never_found(&self) -> bool {
        self.state == ProjectState::NotFound && self.resolved.is_none()
    }

    pub fn state(&self) -> ProjectState {
        self.state
    }

    /// Failed jobs waiting for their failure class.
    pub fn pending_classifications(&self) -> usize {
        self.followups.len()
    }

    /// A completed cycle: its activity (for pacing) and gauges.
    pub(crate) fn cycle_completed(&mut self, events: usize, metrics: &Metrics) {
        self.completed_cycles += 1;
        let counts = self.tracker.active_counts();
        let mut in_flight = counts.iter().filter(|(s, n)| **n > 0 && !is_waiting(s));
        let pending_only = in_flight.clone().all(|(s, _)| *s == JobStatus::Pending);
        let in_flight = in_flight.next().is_some();
        // Unread gaps too: catching up should not wait for idle back-off; nor should
        // pipelines left to look up for flaky jobs.
        let catching_up = !self.tracker.gaps().is_empty() || self.attempts.has_lookups();
        let changed = catching_up || events > 0;
        self.activity = if in_flight || changed {
            Activity::Busy
        } else {
            Activity::Idle
        };
        self.pending_only = in_flight && pending_only && !changed;
        self.report_active(metrics);
    }

    /// Feeds a page's jobs to the tracker and their events to the metrics, in one step: under
    /// the state lock, so a checkpoint never sees one without the other.
    pub(crate) fn feed(&mut self, page: &JobsPage, server_now: f64, metrics: &Metrics) -> Fed {
        let label = self.label();
        if page.bad_items > 0 {
            warn!(project = %label, items = page.bad_items, "skipped list items that are not valid jobs");
            for _ in 0..page.bad_items {
                metrics.api_error("bad_job");
            }
        }
        let mut events = Vec::new();
        // The job each event is about (for the failure classes' queue).
        let mut origin = Vec::new();
        let mut flaky = Vec::new();
        for job in &page.jobs {
            let before = events.len();
            self.tracker.observe(job, server_now, &mut events);
            origin.resize(events.len(), job.id);
            self.observe_attempt(job, &events[before..], false, &mut flaky, metrics);
        }
        let mut fed = Fed {
            events: events.len(),
            completed: 0,
        };
        // Freshness, once past the backfill (whose jobs finished long before by design).
        let fresh = !self.tracker.is_first_cycle();
        let mut missed = 0;
        for e in &events {
            if let Event::Completed { finished_at, .. } = e {
                fed.completed += 1;
                if fresh && let Some(t) = finished_at {
                    metrics.observe_lag("poll", server_now - t);
                    missed += u64::from(server_now - t > MISSED_AFTER_SECS);
                }
            }
        }
        self.polled_completions(missed, metrics);
        events.append(&mut flaky);
        self.publish(&label, events, &origin, metrics);
        fed
    }

    /// Flaky jobs: notes `job` (a failed attempt is remembered) and, when `events` (what
    /// observing it caused) count it as a success, decides now or leaves it to
    /// [`Attempts::settle`]. `first_attempt`: a Job Hook said `retries_count` 0.
    pub(crate) fn observe_attempt(
        &mut self,
        job: &crate::model::Job,
        events: &[Event],
        first_attempt: bool,
        flaky: &mut Vec<Event>,
        metrics: &Metrics,
    ) {
        self.attempts.observe(job);
        for e in events {
            if let Event::Completed {
                labels,
                status: JobStatus::Success,
                ..
            } = e
            {
                let mut given_up = 0;
                if let Some(labels) =
                    self.attempts
                        .success(job, labels.clone(), first_attempt, &mut given_up)
                {
                    flaky.push(Event::Flaky { labels });
                }
                if given_up > 0 {
                    metrics.flaky_undecided(given_up);
                }
            }
        }
    }

    /// Tracker events to the job series, under the label policy (polls' and hooks' alike);
    /// failed jobs (`origin[i]`: the id of `events[i]`'s job) queued for their class, in the
    /// same step.
    pub(crate) fn publish(
        &mut self,
        label: &str,
        mut events: Vec<Event>,
        origin: &[u64],
        metrics: &Metrics,
    ) {
        self.labels
            .apply(&mut events, self.default_branch.as_deref());
        metrics.apply(label, &events);
        self.followups.enqueue(label, &events, origin, metrics);
    }

    /// GitLab's clock, or ours when it sent no `Date`.
    pub(crate) fn now_or(page: &JobsPage, fallback: f64) -> f64 {
        page.server_time.map(secs).unwrap_or(fallback)
    }

    /// Our clock, unix seconds.
    pub(crate) fn local_now() -> f64 {
        secs(Utc::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Droppable, RunnerMode};

    fn project(labels: &LabelsConfig) -> Project {
        Project::new(
            ProjectRef::Path("g/p".into()),
            Duration::from_secs(3600),
            labels.clone(),
            (0, 1),
        )
    }

    fn job() -> crate::model::Job {
        serde_json::from_value(serde_json::json!({
            "id": 9, "status": "success", "stage": "test", "name": "rspec", "ref": "main",
            "started_at": "2026-01-01T10:00:00.000Z", "finished_at": "2026-01-01T10:01:00.000Z",
            "duration": 60.0, "queued_duration": 2.0,
            "runner": {"id": 1, "description": "docker-1", "runner_type": "instance_type"},
        }))
        .unwrap()
    }

    /// A checkpoint of project g/p that counted `job()` under `labels`.
    fn checkpoint(labels: &LabelsConfig) -> ProjectCheckpoint {
        let metrics = Metrics::new(
            &crate::config::MetricsSettings::default(),
            usize::MAX,
            labels,
        )
        .unwrap();
        let mut p = project(labels);
        p.resolved = Some((1, "g/p".into()));
        let mut events = Vec::new();
        p.tracker.observe(&job(), 0.0, &mut events);
        p.tracker.complete_cycle(Some(9), Some(9));
        labels.apply(&mut events, None);
        metrics.apply("g/p", &events);
        p.checkpoint(&metrics)
    }

    fn restored(cp: ProjectCheckpoint, labels: &LabelsConfig) -> (Project, Metrics) {
        let metrics = Metrics::new(
            &crate::config::MetricsSettings::default(),
            usize::MAX,
            labels,
        )
        .unwrap();
        let mut p = project(labels);
        p.restore(cp, &metrics);
        (p, metrics)
    }

    #[test]
    fn series_restored_under_another_label_policy_restart_but_jobs_stay_counted() {
        let old = LabelsConfig::default();
        let new = LabelsConfig {
            runner: RunnerMode::Type,
            drop: vec![Droppable::Ref],
            ..Default::default()
        };
        let cp = checkpoint(&old);
        assert_eq!(cp.series.total.len(), 1);

        // Same policy: the series come back.
        let (_, m) = restored(cp.clone(), &old);
        assert_eq!(m.project_series("g/p"), cp.series);

        // Another policy: no series, but the tracker still knows the job was counted.
        let (mut p, m) = restored(cp.clone(), &new);
        assert_eq!(m.project_series("g/p"), Default::default());
        let mut events = Vec::new();
        p.tracker.observe(&job(), 0.0, &mut events);
        assert!(events.is_empty(), "counted twice: {events:?}");
        // The next checkpoint records the new policy with only new-layout series.
        let next = p.checkpoint(&m);
        assert_eq!(next.label_policy, new.fingerprint());
        let page = m.render().unwrap();
        assert!(!page.contains("gitlab_ci_jobs_total{"), "{page}");
    }

    #[test]
    fn checkpoints_without_a_policy_are_the_default_policy() {
        let cp = checkpoint(&LabelsConfig::default());
        let mut json = serde_json::to_value(&cp).unwrap();
        json.as_object_mut().unwrap().remove("label_policy");
        let old: ProjectCheckpoint = serde_json::from_value(json).unwrap();
        assert_eq!(old, cp);
        let (_, m) = restored(old.clone(), &LabelsConfig::default());
        assert_eq!(m.project_series("g/p"), cp.series);
        let kind = LabelsConfig {
            ref_: crate::labels::RefMode::Kind,
            ..Default::default()
        };
        let (_, m) = restored(old, &kind);
        assert_eq!(m.project_series("g/p"), Default::default());
    }

    /// A failed job queued for its class under one label policy is not counted under labels
    /// made by it after a restart with another (a raw branch name where `ref = "kind"`).
    #[test]
    fn queued_classes_do_not_outlive_a_label_policy_change() {
        use crate::project::followups::{ClassifyConfig, Outcome};
        let on = || {
            Some(ClassifyConfig {
                classifier: std::sync::Arc::new(crate::failures::Classifier::with_defaults()),
                tail_bytes: 1024,
                max_log_bytes: 4096,
            })
        };
        let raw = LabelsConfig::default();
        let kind = LabelsConfig {
            ref_: crate::labels::RefMode::Kind,
            ..Default::default()
        };
        let failed: crate::model::Job = serde_json::from_value(serde_json::json!({
            "id": 9, "status": "failed", "stage": "test", "name": "rspec",
            "ref": "feature/customer-acme-secret", "failure_reason": "script_failure",
            "started_at": "2026-01-01T10:00:00.000Z", "finished_at": "2026-01-01T10:01:00.000Z",
            "duration": 60.0, "queued_duration": 2.0,
        }))
        .unwrap();
        let settings = crate::config::MetricsSettings::default();
        let m_old = Metrics::new(&settings, usize::MAX, &raw).unwrap();
        let mut p = project(&raw);
        p.resolved = Some((1, "g/p".into()));
        p.followups.set_config(on());
        let mut events = Vec::new();
        p.tracker.observe(&failed, 0.0, &mut events);
        assert!(!events.is_empty());
        let origin = vec![9; events.len()];
        p.publish("g/p", events, &origin, &m_old);
        assert_eq!(p.followups.len(), 1);
        let cp = p.checkpoint(&m_old);

        // Same policy: the queue comes back.
        let m_same = Metrics::new(&settings, usize::MAX, &raw).unwrap();
        let mut same = project(&raw);
        same.followups.set_config(on());
        same.restore(cp.clone(), &m_same);
        assert_eq!(same.followups.len(), 1);

        let m = Metrics::new(&settings, usize::MAX, &kind).unwrap();
        let mut p = project(&kind);
        p.followups.set_config(on());
        p.restore(cp, &m);
        assert_eq!(p.followups.len(), 0);
        p.followups
            .settle("g/p", 9, Outcome::Class("oom".into(), "classified"), &m);
        let page = m.render().unwrap();
        assert!(!page.contains("feature/customer-acme-secret"), "{page}");
    }
}
