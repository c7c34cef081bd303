//! One poll cycle of one project: which GitLab requests to send, and feeding their answers to
//! the project's [`Tracker`].
//!
//! A cycle reads the job list from the top (newest first) until it reaches jobs it already knows
//! (on a first start: until the backfill window is covered). Followed jobs deeper than that are
//! checked with one `scope[]` listing of the non-final statuses, and only those that left it are
//! fetched: one by one, through their pipeline's job list when that list serves more than one
//! deep job, or, for many at once, by reading on down the job list below the top pages,
//! whichever costs fewest requests (see `fetch_changed`). An idle project thus costs one
//! request per cycle. A cycle stopped by the page cap leaves a gap that the next cycles read
//! (see `catch_up`).
//!
//! Events are applied to the metrics right after the snapshot that caused them, and the tracker
//! only advances its high-water mark when a cycle completes; a cycle that fails part-way leaves
//! nothing half-done: the next cycle re-reads what it needs, and re-reading is idempotent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::config::ProjectRef;
use crate::gitlab::{
    ApiError, GitlabClient, JobStatus, JobsPage, PageRequest, PipelineJobsRequest,
};
use crate::metrics::Metrics;
use crate::pacing::Activity;
use crate::tracker::{Event, Gap, Settling, Tracker, secs};

/// Pages read in one go on a first start, at most (10,000 jobs).
pub const MAX_BACKFILL_PAGES: usize = 100;
/// Pages of the job list read per cycle afterwards, at most (100,000 jobs). A cycle that stops
/// there (catching up after a long downtime) leaves a [`Gap`] with a resume cursor, and the
/// next cycles read on below it with the pages they have left: nothing is skipped.
pub const MAX_PAGES_PER_CYCLE: usize = 1_000;
/// Single-job fetches per cycle, at most; the rest wait for the next cycle.
pub const MAX_SINGLE_FETCHES: usize = 100;
/// Pages of `scope[]` listings per cycle, at most.
pub const MAX_LISTING_PAGES: usize = 100;
/// Deep waiting jobs (created, manual, scheduled) are all re-checked every this many cycles.
pub const COLD_SWEEP_CYCLES: u64 = 10;
/// How long (GitLab seconds) the `created` jobs of a settled pipeline are re-checked before
/// being left to the sweep: GitLab moves them on within seconds unless a blocking manual job
/// holds the pipeline; the re-checks thin out (see `cycle`), so this costs a dozen requests.
pub const SETTLING_PURSUIT_SECS: f64 = 1800.0;
/// How often deep `scheduled` (`when: delayed`) jobs are re-checked, in GitLab time: they run
/// on their own when their time comes, in a pipeline nothing else may touch until then.
pub const SCHEDULED_RECHECK_SECS: f64 = 300.0;
/// Failures in a row of `GET /projects/:id/pipelines/:pipeline_id/jobs` after which a project
/// stops using it (a GitLab, proxy or look-alike that does not serve it): single fetches only.
pub const PIPELINE_JOBS_MAX_FAILURES: u32 = 3;

/// What every request of one cycle's second phase needs.
#[derive(Clone, Copy)]
struct Cx<'a> {
    client: &'a GitlabClient,
    metrics: &'a Metrics,
    api_id: &'a str,
    label: &'a str,
    /// Ids read from the top of the list this cycle.
    lowest: Option<u64>,
    highest: Option<u64>,
    /// GitLab's clock at the first page (unix seconds).
    server_now: f64,
}

impl Cx<'_> {
    /// Whether a job from a second-phase listing is this phase's to feed: below the pages read
    /// from the top (those were fed already) and at most the highest id read (newer ones are
    /// next cycle's, so the high-water mark stays exact).
    fn in_window(&self, id: u64) -> bool {
        self.lowest.is_none_or(|l| id < l) && self.highest.is_none_or(|h| id <= h)
    }
}

/// What the followed jobs of one pipeline are doing.
#[derive(Debug, Default, Clone, Copy)]
struct PipelineSummary {
    /// A job in flight (not waiting).
    busy: bool,
    /// A `created` job.
    created: bool,
    /// A `manual` job (which may hold the pipeline's `created` jobs for good).
    manual: bool,
}

/// One pass over the followed jobs, by pipeline.
fn pipeline_summary(tracker: &Tracker) -> HashMap<u64, PipelineSummary> {
    let mut out: HashMap<u64, PipelineSummary> = HashMap::new();
    for (_, f) in tracker.deep_followed(None) {
        if let Some(p) = f.pipeline_id {
            let s = out.entry(p).or_default();
            s.busy |= !is_waiting(&f.status);
            s.created |= f.status == JobStatus::Created;
            s.manual |= f.status == JobStatus::Manual;
        }
    }
    out
}

/// Waiting for something else (an earlier stage, a person, a time): changes rarely on its own.
fn is_waiting(status: &JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Created | JobStatus::Manual | JobStatus::Scheduled
    )
}

/// Which `scope[]` listing to read.
#[derive(Debug, Clone, Copy)]
enum Listing {
    /// Every non-final status.
    All,
    /// The non-final statuses that move on their own (pending, running, …).
    Busy,
    /// created, manual, scheduled.
    Waiting,
}

impl Listing {
    fn scopes(self, legacy: bool) -> Vec<JobStatus> {
        JobStatus::NON_FINAL
            .into_iter()
            .filter(|s| !(legacy && s.is_recent_scope()))
            .filter(|s| match self {
                Self::All => true,
                Self::Busy => !is_waiting(s),
                Self::Waiting => is_waiting(s),
            })
            .collect()
    }
}

#[derive(Debug, Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("pagination loop: the Link header pointed back to a page already read")]
    PaginationLoop,
    #[error("poll task ended unexpectedly")]
    Aborted,
    /// A request reading into a gap failed for a reason worth retrying (GitLab's load, the
    /// network): the cycle fails, but says nothing about the project itself (a 404 there is
    /// about a cursor, not a deleted project).
    #[error("catching up: {0}")]
    CatchUp(#[source] ApiError),
}

/// How reading into a gap ended this cycle.
enum GapEnd {
    /// Read down to the old high-water mark.
    Closed,
    /// Out of pages for this cycle: the next ones go on.
    Open,
    /// The list loops there (a broken GitLab or proxy).
    Abandoned,
}

/// Where reading on below this cycle's top pages stands (see `fetch_changed`).
struct Reread {
    /// The link to the next page down; `None` when there is none (or reading on is not an
    /// option this cycle).
    next: Option<String>,
    /// The lowest id read from the top so far.
    reached: Option<u64>,
}

/// What a cycle did, for logs, tests and benchmarks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CycleStats {
    pub requests: usize,
    pub pages: usize,
    pub scoped_pages: usize,
    pub single_fetches: usize,
    /// Pages of pipeline job lists read instead of single fetches.
    pub pipeline_pages: usize,
    /// Pages read to catch up on ids an earlier capped cycle left unread (also in `pages`).
    pub catch_up_pages: usize,
    /// Pages read on below the top pages to learn many changed deep jobs at once.
    pub reread_pages: usize,
    pub completed: usize,
    /// Tracker events (jobs seen for the first time, jobs completed).
    pub events: usize,
}

/// A watched project and its tracker.
#[derive(Debug)]
pub struct ProjectPoller {
    pub reference: ProjectRef,
    /// Numeric id and `path_with_namespace`, once resolved.
    resolved: Option<(u64, String)>,
    tracker: Tracker,
    backfill: Duration,
    /// The GitLab rejected `waiting_for_callback`/`canceling` in `scope[]` (older than 17.x).
    legacy_scopes: bool,
    completed_cycles: u64,
    /// Pages the last listing of waiting jobs took.
    waiting_pages: usize,
    state: ProjectState,
    /// 401/403 answers (or 404s to the first lookup) in a row.
    denials: u32,
    /// Already counted towards `/readyz`.
    pub counted_ready: bool,
    default_branch: Option<String>,
    labels: crate::labels::LabelsConfig,
    /// (this replica's shard, shard count).
    shard: (u32, u32),
    /// Whether the last completed cycle saw activity (kept through failed cycles).
    activity: Activity,
    /// Followed jobs counted in `gitlab_jobs_exporter_tracked_jobs` for this project.
    reported_tracked: i64,
    /// Failures in a row of the pipeline-jobs endpoint.
    pipeline_jobs_failures: u32,
    /// The pipeline-jobs endpoint failed `PIPELINE_JOBS_MAX_FAILURES` times in a row: not used
    /// for this project any more (until a restart).
    pipeline_jobs_off: bool,
    /// Pages of the job list per cycle, at most (`MAX_PAGES_PER_CYCLE`; tests set less).
    max_pages_per_cycle: usize,
    /// GitLab's clock when the deep `scheduled` jobs were last re-checked (not checkpointed:
    /// after a restart the first re-check comes `SCHEDULED_RECHECK_SECS` later).
    scheduled_checked: Option<f64>,
}

/// When a project is polled next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextPoll {
    /// Gone, or another replica's.
    Never,
    /// A fixed back-off (the token is refused).
    After(Duration),
    /// As the shared budget allows, at the pace this activity asks for.
    Paced(Activity),
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

    fn after(result: &Result<(), PollError>) -> Self {
        match result {
            Ok(()) => Self::Ok,
            Err(PollError::Api(e)) => match e.status() {
                Some(401) => Self::Unauthorized,
                Some(403) => Self::Forbidden,
                Some(404) => Self::NotFound,
                _ => Self::Failing,
            },
            Err(_) => Self::Failing,
        }
    }
}

impl ProjectPoller {
    pub fn new(
        reference: ProjectRef,
        backfill: Duration,
        labels: crate::labels::LabelsConfig,
        shard: (u32, u32),
    ) -> Self {
        Self {
            reference,
            resolved: None,
            tracker: Tracker::new(),
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
            reported_tracked: 0,
            pipeline_jobs_failures: 0,
            pipeline_jobs_off: false,
            max_pages_per_cycle: MAX_PAGES_PER_CYCLE,
            scheduled_checked: None,
        }
    }

    /// Caps the pages of the job list read per cycle (after the first) at `pages` (at least 1)
    /// instead of `MAX_PAGES_PER_CYCLE`.
    pub fn set_max_pages_per_cycle(&mut self, pages: usize) {
        self.max_pages_per_cycle = pages.max(1);
    }

    /// A project already known by id and path (from discovery): no lookup needed.
    pub fn new_resolved(
        id: u64,
        path: String,
        default_branch: Option<String>,
        backfill: Duration,
        labels: crate::labels::LabelsConfig,
        shard: (u32, u32),
    ) -> Self {
        let reference = ProjectRef::Id(id);
        let mut poller = Self::new(reference, backfill, labels, shard);
        poller.resolved = Some((id, path));
        poller.default_branch = default_branch;
        poller
    }

    /// GitLab shows the project under another path now (renamed or transferred): its series
    /// move there, unless another project's series are there already (then it keeps the path
    /// it had, logged).
    pub fn rename(&mut self, path: &str, metrics: &Metrics) {
        let Some((_, old)) = self.resolved.clone() else {
            return;
        };
        if old == path {
            return;
        }
        if metrics.rename_project(&old, path, ProjectState::ALL) {
            info!(project = %path, was = %old, "project renamed or moved in GitLab; its series follow");
            if let Some(r) = self.resolved.as_mut() {
                r.1 = path.to_string();
            }
            metrics.set_active(
                path,
                &self.tracker.active_counts(),
                self.tracker.oldest_pending_since(),
            );
        } else {
            warn!(project = %old, new_path = %path, "project renamed in GitLab, but another project's series use the new path; keeping the old one");
        }
    }

    /// Numeric id and path, once known.
    pub fn resolved(&self) -> Option<&(u64, String)> {
        self.resolved.as_ref()
    }

    /// This project's part of a checkpoint: tracker and job series taken together (the caller
    /// holds the poll lock, so no cycle is half-way).
    pub fn checkpoint(&self, metrics: &Metrics) -> crate::state::ProjectCheckpoint {
        crate::state::ProjectCheckpoint {
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
        }
    }

    /// Takes up where a checkpoint left off.
    pub fn restore(&mut self, cp: crate::state::ProjectCheckpoint, metrics: &Metrics) {
        let policy = self.labels.fingerprint();
        if let Some((_, path)) = &cp.resolved
            && cp.label_policy != policy
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
        self.completed_cycles = cp.completed_cycles;
        self.default_branch = cp.default_branch;
        self.sync_tracked(metrics);
        if let Some((_, path)) = &self.resolved {
            metrics.set_active(
                path,
                &self.tracker.active_counts(),
                self.tracker.oldest_pending_since(),
            );
        }
    }

    /// Brings `gitlab_jobs_exporter_tracked_jobs` up to date with this project's followed
    /// jobs. Counted from what was reported before, so a cycle cut short (a retired project, a
    /// shutdown) cannot make the gauge drift.
    fn sync_tracked(&mut self, metrics: &Metrics) {
        let now = self.tracker.followed_len() as i64;
        metrics.add_tracked_jobs(now - self.reported_tracked);
        self.reported_tracked = now;
    }

    /// No longer polled for now (retired by discovery): its jobs are not followed any more and
    /// its gauges would only go stale (a pending job would look stuck), so they are cleared;
    /// its counters stay. A later cycle sets everything again.
    pub fn pause(&mut self, metrics: &Metrics) {
        metrics.add_tracked_jobs(-self.reported_tracked);
        self.reported_tracked = 0;
        metrics.set_active(&self.label(), &Default::default(), None);
    }

    /// Takes this project out of the metrics for good (discovery's grace period is over);
    /// its series stay when another project now shows under the same path.
    pub fn forget(&mut self, metrics: &Metrics, remove_series: bool) {
        metrics.add_tracked_jobs(-self.reported_tracked);
        self.reported_tracked = 0;
        if remove_series {
            metrics.remove_project(&self.label(), ProjectState::ALL);
        }
    }

    /// The `project` label: `path_with_namespace` once known.
    pub fn label(&self) -> String {
        match &self.resolved {
            Some((_, path)) => path.clone(),
            None => self.reference.to_string(),
        }
    }

    /// Runs one cycle, recording metrics; errors are logged and counted, never fatal.
    pub async fn poll(
        &mut self,
        client: &GitlabClient,
        metrics: &Metrics,
    ) -> Result<CycleStats, PollError> {
        let mut stats = CycleStats::default();
        let result = self.poll_inner(client, metrics, &mut stats).await;
        if let Some(owner) = self.other_shard() {
            // Another replica's project: no requests beyond the lookup, no series here.
            info!(project = %self.label(), owner, "project belongs to another shard");
            self.state = ProjectState::Elsewhere;
            return Ok(stats);
        }
        let state = ProjectState::after(&result);
        if state != self.state {
            // Logged once per change, not once per cycle: a revoked token must not flood logs.
            match (&result, state) {
                (Ok(()), _) => info!(project = %self.label(), "polling works again"),
                // Never found at all: most likely a wrong path or id, or a wrong gitlab.url.
                (Err(e), ProjectState::NotFound) if self.resolved.is_none() => error!(
                    project = %self.label(), url = %client.project_url(&self.reference.api_id()), error = %e,
                    "configured project not found: this URL answered 404 (check the project's path or id, gitlab.url, and that the token's user can see the project); /readyz stays not ready; looking it up again later"),
                (Err(e), ProjectState::NotFound) => error!(project = %self.label(), error = %e,
                    "project not found (deleted, moved, or invisible to the token); no longer polled"),
                (Err(e), ProjectState::Unauthorized | ProjectState::Forbidden) => error!(
                    project = %self.label(), error = %e,
                    "GitLab refuses the token (expired, revoked, or missing the read_api scope or Reporter access); backing off, last metrics kept"),
                (Err(_), _) => {}
            }
            self.state = state;
        }
        self.denials = match state {
            ProjectState::Unauthorized | ProjectState::Forbidden => self.denials.saturating_add(1),
            ProjectState::NotFound if self.resolved.is_none() => self.denials.saturating_add(1),
            _ => 0,
        };
        // No placeholder label ("id 42") that would change once the path is known: a project
        // configured by id shows its state from its first successful lookup on.
        if self.resolved.is_some() || self.reference.path().is_some() {
            metrics.set_project_state(&self.label(), state.as_str(), ProjectState::ALL);
        }
        result.map(|()| stats)
    }

    /// The shard that owns this project, when it is not this replica's (known once resolved).
    fn other_shard(&self) -> Option<u32> {
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

    async fn poll_inner(
        &mut self,
        client: &GitlabClient,
        metrics: &Metrics,
        stats: &mut CycleStats,
    ) -> Result<(), PollError> {
        // Configured by path, a project's label is known before its lookup: the lookup counts
        // as its poll, so a GitLab unreachable from the start shows in polls_total and
        // poll_errors_total at once. Configured by id, no per-project series before the real
        // path is known (a placeholder label would change under the alerts' feet);
        // gitlab_jobs_exporter_projects_never_polled covers those.
        let mut counted = None;
        if self.resolved.is_none() {
            if let Some(path) = self.reference.path() {
                metrics.poll_started(path);
                counted = Some(path.to_string());
            }
            let p = client
                .project(&self.reference.api_id())
                .await
                .inspect_err(|e| {
                    warn!(project = %self.reference, error = %e, "cannot look up project");
                    if let Some(path) = &counted {
                        metrics.poll_finished(path, false, secs(Utc::now()));
                    }
                })?;
            stats.requests += 1;
            info!(project = %p.path_with_namespace, id = p.id, "watching project");
            self.resolved = Some((p.id, p.path_with_namespace));
            self.default_branch = p.default_branch;
            if let Some(path) = &counted {
                let label = self.label();
                if self.other_shard().is_some() {
                    metrics.forget_polls(path, ProjectState::ALL);
                } else if *path != label {
                    // GitLab spells it differently (case): the counts continue under its path.
                    metrics.rename_project(path, &label, ProjectState::ALL);
                }
            }
        }
        if self.other_shard().is_some() {
            return Ok(());
        }
        if counted.is_none() {
            metrics.poll_started(&self.label());
        }
        let result = self.cycle(client, metrics, stats).await;
        let label = self.label();
        self.sync_tracked(metrics);
        match &result {
            Ok(()) => {
                self.completed_cycles += 1;
                let in_flight = self
                    .tracker
                    .active_counts()
                    .iter()
                    .any(|(s, n)| *n > 0 && !is_waiting(s));
                // Unread gaps too: catching up should not wait for idle back-off.
                let catching_up = !self.tracker.gaps().is_empty();
                self.activity = if in_flight || catching_up || stats.events > 0 {
                    Activity::Busy
                } else {
                    Activity::Idle
                };
                metrics.set_active(
                    &label,
                    &self.tracker.active_counts(),
                    self.tracker.oldest_pending_since(),
                );
                metrics.poll_finished(&label, true, secs(Utc::now()));
                debug!(project = %label, ?stats, "poll cycle done");
            }
            Err(e) => {
                metrics.poll_finished(&label, false, secs(Utc::now()));
                warn!(project = %label, error = %e, "poll cycle failed; will retry next cycle");
            }
        }
        result
    }

    async fn cycle(
        &mut self,
        client: &GitlabClient,
        metrics: &Metrics,
        stats: &mut CycleStats,
    ) -> Result<(), PollError> {
        // poll() resolves the project before calling this.
        let Some((id, label)) = self.resolved.clone() else {
            return Ok(());
        };
        let api_id = id.to_string();
        let first_cycle = self.tracker.is_first_cycle();
        // Pipelines a failed cycle saw change are kept (not taken here): that cycle may have
        // learnt a pipeline settled and failed before re-checking its waiting jobs, and the
        // next cycle, seeing the same statuses again, would not notice the change a second time.
        let max_pages = if first_cycle {
            MAX_BACKFILL_PAGES
        } else {
            self.max_pages_per_cycle
        };
        // Where a top read stopped at the cap resumes (the link to the page after its last).
        let mut capped: Option<String> = None;
        // The link to the page below the last one read from the top.
        let mut below_top: Option<String>;

        // 1. From the top until known territory (or the backfill window) is reached.
        let mut lowest: Option<u64> = None;
        let mut highest: Option<u64> = None;
        let mut visited = HashSet::new();
        let mut next: Option<String> = None;
        let mut server_now = None;
        loop {
            let req = match &next {
                None => PageRequest::First {
                    project: &api_id,
                    scopes: &[],
                },
                Some(rel) => PageRequest::Next(rel),
            };
            let mut page = client.jobs_page(req).await?;
            stats.requests += 1;
            stats.pages += 1;
            check_page(&page, lowest, &label, metrics)?;
            let now = *server_now.get_or_insert_with(|| page_time(&page));
            if first_cycle {
                self.tracker
                    .begin_first_cycle(now, self.backfill.as_secs_f64());
            }
            self.feed(&page, now, &label, metrics, stats);
            for j in &page.jobs {
                lowest = Some(lowest.map_or(j.id, |l| l.min(j.id)));
                highest = Some(highest.map_or(j.id, |h| h.max(j.id)));
            }
            below_top = page.next().ok().flatten().map(str::to_string);
            // An unusable `Link` fails the cycle only when the page after is needed.
            let wanted = if self.tracker.wants_page_after(&page.jobs) {
                page.take_next()?
            } else {
                None
            };
            match wanted {
                Some(n) => {
                    if stats.pages >= max_pages {
                        if first_cycle {
                            // The backfill window is a best effort by design: older is history.
                            warn!(project = %label, pages = stats.pages, "page limit reached on the first cycle; older jobs are left out");
                            metrics.api_error("page_limit");
                        } else {
                            capped = Some(n);
                        }
                        break;
                    }
                    if !visited.insert(n.clone()) {
                        return Err(link_loop(metrics));
                    }
                    next = Some(n);
                }
                _ => break,
            }
        }
        let server_now = server_now.unwrap_or_else(|| secs(Utc::now()));
        let cx = Cx {
            client,
            metrics,
            api_id: &api_id,
            label: &label,
            lowest,
            highest,
            server_now,
        };

        // 1b. Stretches earlier capped cycles left unread, with the pages this cycle has left.
        let mut gaps = if first_cycle {
            Vec::new()
        } else {
            self.catch_up(&cx, max_pages.saturating_sub(stats.pages), stats)
                .await?
        };
        let capped_cycle = capped.is_some();
        if let (Some(next), Some(top), Some(bottom)) = (capped, lowest, self.tracker.high_water()) {
            // Everything between the lowest id read and the old high-water mark is unread.
            warn!(project = %label, pages = stats.pages, unread_below = top, down_to = bottom,
                "page limit reached this cycle; the older new jobs are read in the next cycles");
            metrics.api_error("page_limit");
            gaps.push(Gap {
                top,
                bottom,
                next: Some(next),
                pages: 0,
            });
        }

        // 2. Followed jobs below what was read. Busy ones (pending, running, …) every cycle: one
        // listing of those statuses, then single fetches for the jobs that left it. Waiting ones
        // (created, manual, scheduled) pile up in real projects (a manual deploy in every
        // pipeline, never played) and mostly change when something else in their pipeline does:
        // they are fetched when their pipeline showed a change this cycle (`created` ones also
        // at thinning intervals while that pipeline stays settled, see `pursue`), and all of
        // them are swept every `COLD_SWEEP_CYCLES` cycles. A played manual job usually shows
        // up in the busy listing (pending, running) well before that.
        if first_cycle {
            // Learn the whole non-final population, however old.
            self.list(&cx, Listing::All, stats).await?;
            // That listing gave every waiting job's state: nothing to re-check this cycle. But
            // a pipeline that settled just before may still have `created` jobs GitLab moves on
            // in the next seconds: those are pursued from now on, as if seen settling. Not the
            // ones a manual job holds (they may stay `created` for good, the sweep covers them).
            let touched = self.tracker.take_touched();
            let pipelines = pipeline_summary(&self.tracker);
            let map = self.tracker.settling_mut();
            for p in touched {
                if pipelines
                    .get(&p)
                    .is_some_and(|s| s.created && !s.busy && !s.manual)
                {
                    map.insert(
                        p,
                        Settling {
                            since: server_now,
                            next_check: server_now,
                            // The full listing just gave their state.
                            last_check: server_now,
                        },
                    );
                }
            }
        } else {
            let hot: Vec<u64> = self
                .tracker
                .deep_followed(lowest)
                .filter(|(_, f)| !is_waiting(&f.status))
                .map(|(id, _)| id)
                .collect();
            let to_fetch = match hot.len() {
                0 => Vec::new(),
                1 => hot,
                _ => {
                    let listed = self.list(&cx, Listing::Busy, stats).await?;
                    hot.into_iter().filter(|id| !listed.contains(id)).collect()
                }
            };
            // Ids whose current state a pipeline job list already gave this cycle.
            let mut seen = HashSet::new();
            // Reading on below the top pages sees every deep job at once: an option for many
            // changed jobs, unless unread gaps lie below (their depth is unknown).
            let mut reread = Reread {
                next: below_top.filter(|_| !capped_cycle && self.tracker.gaps().is_empty()),
                reached: lowest,
            };
            self.fetch_changed(&cx, to_fetch, stats, &mut seen, &mut reread)
                .await?;

            let sweep = self.completed_cycles.is_multiple_of(COLD_SWEEP_CYCLES);
            // A waiting job moves when the running part of its pipeline is over (next stage,
            // skipped after a failure, canceled with it): re-check those pipelines only.
            // Kept until the re-checks below succeeded: a failing listing or fetch must not
            // lose the change (the next cycle would see the same statuses and no change).
            let touched = self.tracker.touched().clone();
            let pipelines = pipeline_summary(&self.tracker);
            let settled: HashSet<u64> = (touched.iter().copied())
                .filter(|p| !pipelines.get(p).is_some_and(|s| s.busy))
                .collect();
            // GitLab moves those jobs on seconds after, not always within this cycle: `created`
            // ones left in a settled pipeline are re-checked until they move (see `pursue`).
            let pursued = self.pursue(&settled, &pipelines, server_now);
            let scheduled_due = self
                .scheduled_checked
                .is_some_and(|t| server_now - t >= SCHEDULED_RECHECK_SECS);
            let cold: Vec<u64> = self
                .tracker
                .deep_followed(lowest)
                .filter(|(id, f)| is_waiting(&f.status) && !seen.contains(id))
                .filter(|(_, f)| {
                    sweep
                        || (scheduled_due && f.status == JobStatus::Scheduled)
                        || f.pipeline_id.is_some_and(|p| {
                            settled.contains(&p)
                                || (f.status == JobStatus::Created && pursued.contains(&p))
                        })
                })
                .map(|(id, _)| id)
                .collect();
            // One listing serves them all when that is cheaper than fetching each.
            let to_fetch = if cold.len() > 1 && (sweep || cold.len() > self.waiting_pages) {
                let before = stats.scoped_pages;
                let listed = self.list(&cx, Listing::Waiting, stats).await?;
                self.waiting_pages = (stats.scoped_pages - before).max(1);
                cold.into_iter().filter(|id| !listed.contains(id)).collect()
            } else {
                cold
            };
            self.fetch_changed(&cx, to_fetch, stats, &mut seen, &mut reread)
                .await?;
            self.tracker.untouch(&touched);
            if sweep || scheduled_due || self.scheduled_checked.is_none() {
                self.scheduled_checked = Some(server_now);
            }
            // Checked: the next re-check of each comes later and later (about every half of
            // the time the pipeline has been settled), so one held by a manual job costs a
            // few requests, not one per cycle.
            for p in pursued {
                if let Some(s) = self.tracker.settling_mut().get_mut(&p) {
                    s.next_check = server_now + (server_now - s.since).max(0.0) / 2.0;
                    s.last_check = server_now;
                }
            }
        }

        self.tracker.set_gaps(gaps);
        let given_up = self.tracker.complete_cycle(lowest, highest);
        if given_up > 0 {
            warn!(project = %label, given_up, limit = crate::tracker::MAX_FOLLOWED,
                "too many unfinished jobs to follow; the oldest are no longer followed");
            metrics.api_error("followed_limit");
        }
        Ok(())
    }

    /// Reads on into the gaps earlier capped cycles left (highest first), at most `budget`
    /// pages, feeding the jobs inside them. Returns the gaps as they are after this cycle
    /// (for [`Tracker::set_gaps`] once the cycle completes).
    async fn catch_up(
        &mut self,
        cx: &Cx<'_>,
        mut budget: usize,
        stats: &mut CycleStats,
    ) -> Result<Vec<Gap>, PollError> {
        let Cx {
            client,
            metrics,
            api_id,
            label,
            ..
        } = *cx;
        let mut left = Vec::new();
        for mut gap in self.tracker.gaps().to_vec() {
            let mut visited = HashSet::new();
            let mut prev_min: Option<u64> = None;
            let end = loop {
                if budget == 0 {
                    break GapEnd::Open;
                }
                let req = match &gap.next {
                    Some(rel) => PageRequest::Next(rel),
                    None => PageRequest::First {
                        project: api_id,
                        scopes: &[],
                    },
                };
                let page = match client.jobs_page(req).await {
                    Ok(page) => page,
                    // A cursor this GitLab no longer takes (an upgrade since the checkpoint, a
                    // proxy, a tampered file): read from the top instead, pages above the gap
                    // cost but stay harmless.
                    Err(e) if gap.next.is_some() && cursor_refused(&e) => {
                        stats.requests += 1;
                        warn!(project = %label, error = %e, "GitLab refused the catch-up cursor; reading down from the top instead");
                        metrics.api_error("catch_up_cursor");
                        gap.next = None;
                        // The top page is above the ones read so far: no loop.
                        prev_min = None;
                        visited.clear();
                        budget -= 1;
                        continue;
                    }
                    Err(e) => return Err(PollError::CatchUp(e)),
                };
                stats.requests += 1;
                stats.pages += 1;
                stats.catch_up_pages += 1;
                budget -= 1;
                gap.pages += 1;
                if check_page(&page, prev_min, label, metrics).is_err() {
                    break GapEnd::Abandoned;
                }
                let mut page = page;
                let Some(min) = page.jobs.iter().map(|j| j.id).min() else {
                    break GapEnd::Closed;
                };
                prev_min = Some(min);
                page.jobs.retain(|j| gap.contains(j.id));
                let now = page.server_time.map(secs).unwrap_or(cx.server_now);
                self.feed(&page, now, label, metrics, stats);
                gap.top = gap.top.min(min.max(gap.bottom));
                // Every id above the old mark read (ids are global: usually one more page).
                if min <= gap.bottom.saturating_add(1) {
                    break GapEnd::Closed;
                }
                // An unusable `Link` on a page inside the gap: like a refused cursor.
                let next = match page.take_next() {
                    Ok(next) => next,
                    Err(e) => {
                        warn!(project = %label, error = %e, "unusable link while catching up; reading down from the top instead");
                        metrics.api_error("catch_up_cursor");
                        gap.next = None;
                        prev_min = None;
                        visited.clear();
                        continue;
                    }
                };
                match next {
                    None => break GapEnd::Closed,
                    Some(n) => {
                        if !visited.insert(n.clone()) {
                            break GapEnd::Abandoned;
                        }
                        gap.next = Some(n);
                    }
                }
            };
            match end {
                GapEnd::Closed => {
                    info!(project = %label, pages = gap.pages, down_to = gap.bottom, "caught up on the jobs a capped cycle left unread");
                }
                GapEnd::Open => {
                    if gap.pages > 0 {
                        info!(project = %label, pages = gap.pages, unread_below = gap.top, down_to = gap.bottom, "catching up on the jobs a capped cycle left unread");
                    }
                    left.push(gap);
                }
                GapEnd::Abandoned => {
                    // Failing every cycle on it would stop the project's counting altogether.
                    error!(project = %label, unread_below = gap.top, down_to = gap.bottom,
                        "the job list loops while catching up; giving up on the rest of this stretch, jobs in it may be missed");
                    metrics.api_error("catch_up_abandoned");
                }
            }
        }
        Ok(left)
    }

    /// Keeps the settled pipelines with `created` jobs left (new ones from `settled`) for
    /// `SETTLING_PURSUIT_SECS`, and returns those whose re-check is due. A pipeline leaves
    /// when it has no followed `created` job any more, or a job in flight again (it settles
    /// anew later), or once it was checked after its window ended (an entry past its window is
    /// due at once: a downtime may have skipped its last re-checks).
    fn pursue(
        &mut self,
        settled: &HashSet<u64>,
        pipelines: &HashMap<u64, PipelineSummary>,
        server_now: f64,
    ) -> HashSet<u64> {
        let map = self.tracker.settling_mut();
        for p in settled {
            if pipelines.get(p).is_some_and(|s| s.created) {
                // Settled anew (a job moved since): its pursuit starts over.
                map.insert(
                    *p,
                    Settling {
                        since: server_now,
                        next_check: server_now,
                        // Checked this cycle (a settled pipeline's waiting jobs are).
                        last_check: server_now,
                    },
                );
            }
        }
        map.retain(|p, s| {
            pipelines.get(p).is_some_and(|x| x.created && !x.busy)
                && s.last_check <= s.since + SETTLING_PURSUIT_SECS
        });
        map.iter()
            .filter(|(_, s)| {
                s.next_check <= server_now || server_now - s.since > SETTLING_PURSUIT_SECS
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Pages through a `scope[]` listing, feeding jobs below `lowest` (the ones above were just
    /// read) and at most `highest` (newer ones are next cycle's). Returns the ids listed.
    async fn list(
        &mut self,
        cx: &Cx<'_>,
        listing: Listing,
        stats: &mut CycleStats,
    ) -> Result<HashSet<u64>, PollError> {
        let Cx {
            client,
            metrics,
            api_id,
            label,
            ..
        } = *cx;
        let mut seen = HashSet::new();
        let mut visited = HashSet::new();
        let mut next: Option<String> = None;
        let mut listed_min: Option<u64> = None;
        loop {
            let scopes = listing.scopes(self.legacy_scopes);
            let req = match &next {
                None => PageRequest::First {
                    project: api_id,
                    scopes: &scopes,
                },
                Some(rel) => PageRequest::Next(rel),
            };
            let page = match client.jobs_page(req).await {
                Err(ApiError::Status { status: 400, .. })
                    if next.is_none() && !self.legacy_scopes =>
                {
                    stats.requests += 1;
                    warn!(project = %label, "GitLab rejected the newer statuses in scope[]; using the older list");
                    self.legacy_scopes = true;
                    continue;
                }
                r => r?,
            };
            stats.requests += 1;
            stats.scoped_pages += 1;
            check_page(&page, listed_min, label, metrics)?;
            listed_min = page.jobs.iter().map(|j| j.id).min().or(listed_min);
            let mut page = page;
            seen.extend(page.jobs.iter().map(|j| j.id));
            self.feed_window(cx, &mut page, stats);
            match page.take_next()? {
                Some(_) if stats.scoped_pages >= MAX_LISTING_PAGES => {
                    warn!(project = %label, pages = stats.scoped_pages, "listing too long; the rest waits for the next cycle");
                    metrics.api_error("page_limit");
                    return Ok(seen);
                }
                Some(n) => {
                    if !visited.insert(n.clone()) {
                        return Err(link_loop(metrics));
                    }
                    next = Some(n);
                }
                None => return Ok(seen),
            }
        }
    }

    /// Learns the current state of deep followed jobs that no listing showed this cycle (at most
    /// `MAX_SINGLE_FETCHES`, oldest first).
    ///
    /// Why per pipeline: deep jobs that change together usually belong to one pipeline (its
    /// stage finished, it was canceled, a retry ended it), and one request for the pipeline's
    /// job list (`include_retried=true`, 100 per page) returns them all, where single fetches
    /// cost one request each. So jobs sharing a pipeline with another job to fetch (or with
    /// another deep followed job, which the list then refreshes for free) are read that way,
    /// the rest one by one. The endpoint is optional for correctness: any failure of it (404,
    /// 5xx after retries, a body that does not decode) falls back to single fetches of those
    /// jobs in the same cycle, a job its list does not show is fetched singly too (never
    /// dropped), and a project where it fails `PIPELINE_JOBS_MAX_FAILURES` times in a row
    /// stops using it. What the list shows is fed like any listing, restricted as in `list`.
    ///
    /// Why read on: a burst of deep changes (hundreds of jobs ending at once, or no pipeline
    /// job lists to use) would cost a request per pipeline or per job, minutes of budget;
    /// the project's own job list, read on from where the top pages stopped down to the oldest
    /// of them, shows them all at ⌈depth/100⌉ requests. It is chosen when it costs fewer
    /// requests than the other ways at best (`reread_pages`); anything it did not show is
    /// learnt those ways.
    async fn fetch_changed(
        &mut self,
        cx: &Cx<'_>,
        mut ids: Vec<u64>,
        stats: &mut CycleStats,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        ids.retain(|id| self.tracker.is_followed(*id) && !seen.contains(id));
        ids.sort_unstable();
        if let Some(pages) = self.reread_pages(&ids, reread) {
            // Cheaper than the requests below would be: one page shows a hundred jobs.
            debug!(project = %cx.label, jobs = ids.len(), pages, "reading on below the top pages instead of fetching each changed job");
            self.reread(cx, ids[0], pages + 1, stats, seen, reread)
                .await?;
            ids.retain(|id| self.tracker.is_followed(*id) && !seen.contains(id));
        }
        if ids.len() > MAX_SINGLE_FETCHES {
            warn!(project = %cx.label, pending = ids.len(), "many followed jobs changed at once; fetching the rest next cycle");
            ids.truncate(MAX_SINGLE_FETCHES);
        }
        let mut singles = Vec::new();
        let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            let pipeline = self.tracker.followed(id).and_then(|f| f.pipeline_id);
            match pipeline {
                Some(p) if !self.pipeline_jobs_off => groups.entry(p).or_default().push(id),
                _ => singles.push(id),
            }
        }
        // Deep followed jobs per pipeline: a lone job to fetch is worth its pipeline's list
        // (same cost) when that list also refreshes other deep jobs of the pipeline.
        let mut deep: HashMap<u64, usize> = HashMap::new();
        if groups.values().any(|g| g.len() == 1) {
            for (_, f) in self.tracker.deep_followed(cx.lowest) {
                if let Some(p) = f.pipeline_id.filter(|p| groups.contains_key(p)) {
                    *deep.entry(p).or_default() += 1;
                }
            }
        }
        for (pipeline, group) in groups {
            let worth = group.len() >= 2 || deep.get(&pipeline).is_some_and(|n| *n >= 2);
            if !worth || self.pipeline_jobs_off {
                singles.extend(group);
                continue;
            }
            match self.read_pipeline(cx, pipeline, &group, stats, seen).await {
                Ok(missing) => {
                    self.pipeline_jobs_failures = 0;
                    if !missing.is_empty() {
                        debug!(project = %cx.label, pipeline, ?missing, "jobs missing from their pipeline's job list; fetching them singly");
                    }
                    singles.extend(missing);
                }
                Err(e) => {
                    let rest: Vec<u64> =
                        group.into_iter().filter(|id| !seen.contains(id)).collect();
                    warn!(project = %cx.label, pipeline, error = %e, jobs = rest.len(),
                        "cannot read the pipeline's job list; fetching its jobs singly");
                    let asked = rest.len();
                    let gone = self.fetch_each(cx, rest, stats).await?;
                    // A deleted pipeline answers 404 and so do its jobs: not the endpoint's fault.
                    let pipeline_gone = asked > 0
                        && gone == asked
                        && matches!(&e, PollError::Api(a) if a.status() == Some(404));
                    if counts_against_endpoint(&e) && !pipeline_gone {
                        self.pipeline_jobs_failed(cx.label, cx.metrics);
                    }
                }
            }
        }
        singles.sort_unstable();
        self.fetch_each(cx, singles, stats).await?;
        Ok(())
    }

    /// The pages it takes to read on from where `reread` stands down to the oldest of `ids`
    /// (ascending), if that is cheaper than learning them the other ways: at least one
    /// request per pipeline (their job lists) or per job (single fetches). The depth is the
    /// number of this project's jobs known between the two ids (every id above `floor` that
    /// was read is remembered); below `floor` the id distance stands in, an overestimate as
    /// ids are global.
    fn reread_pages(&self, ids: &[u64], reread: &Reread) -> Option<usize> {
        let (&oldest, reached) = (ids.first()?, reread.reached?);
        if reread.next.is_none() || ids.len() < 2 || oldest >= reached {
            return None;
        }
        let depth = self
            .tracker
            .known_between(oldest, reached)
            .unwrap_or((reached - oldest) as usize);
        let pages = depth.max(1).div_ceil(crate::gitlab::PER_PAGE as usize);
        let others = if self.pipeline_jobs_off {
            ids.len()
        } else {
            let mut pipelines = HashSet::new();
            let mut without = 0;
            for id in ids {
                match self.tracker.followed(*id).and_then(|f| f.pipeline_id) {
                    Some(p) => {
                        pipelines.insert(p);
                    }
                    None => without += 1,
                }
            }
            pipelines.len() + without
        };
        (pages < others && pages <= MAX_LISTING_PAGES).then_some(pages)
    }

    /// Reads on down the job list from where `reread` stands until `down_to` is reached (or
    /// `max_pages` were read), feeding what it shows ([`Cx::in_window`]) and noting it in
    /// `seen`.
    async fn reread(
        &mut self,
        cx: &Cx<'_>,
        down_to: u64,
        max_pages: usize,
        stats: &mut CycleStats,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        for _ in 0..max_pages {
            if reread.reached.is_some_and(|r| r <= down_to) {
                break;
            }
            let Some(next) = reread.next.take() else {
                break;
            };
            let mut page = cx.client.jobs_page(PageRequest::Next(&next)).await?;
            stats.requests += 1;
            stats.reread_pages += 1;
            if check_page(&page, reread.reached, cx.label, cx.metrics).is_err() {
                // A page that does not go down: no reading on this cycle, the other ways
                // (pipeline job lists, single fetches) serve.
                return Ok(());
            }
            let Some(min) = page.jobs.iter().map(|j| j.id).min() else {
                break;
            };
            reread.reached = Some(min);
            // An unusable `Link` ends reading on: the other ways serve the rest.
            reread.next = page.take_next().ok().flatten();
            seen.extend(page.jobs.iter().map(|j| j.id));
            self.feed_window(cx, &mut page, stats);
        }
        Ok(())
    }

    fn pipeline_jobs_failed(&mut self, label: &str, metrics: &Metrics) {
        self.pipeline_jobs_failures += 1;
        if self.pipeline_jobs_failures >= PIPELINE_JOBS_MAX_FAILURES && !self.pipeline_jobs_off {
            self.pipeline_jobs_off = true;
            metrics.api_error("pipeline_jobs_disabled");
            warn!(project = %label, failures = self.pipeline_jobs_failures,
                "the pipeline jobs endpoint keeps failing; this project now fetches changed jobs one by one");
        }
    }

    /// Reads one pipeline's job list, feeding what it shows (below `lowest`, at most
    /// `highest`, as `list` does: jobs above were read this cycle, newer ones are next
    /// cycle's). Returns the `wanted` jobs it did not show, for single fetches. Stops paging
    /// when fewer than two wanted jobs remain (a page then costs as much as fetching them) or
    /// after as many pages as jobs wanted (a pipeline of thousands of jobs).
    async fn read_pipeline(
        &mut self,
        cx: &Cx<'_>,
        pipeline: u64,
        wanted: &[u64],
        stats: &mut CycleStats,
        seen: &mut HashSet<u64>,
    ) -> Result<Vec<u64>, PollError> {
        let Cx {
            client,
            metrics,
            api_id,
            label,
            ..
        } = *cx;
        let mut missing: std::collections::BTreeSet<u64> = wanted.iter().copied().collect();
        let mut visited = HashSet::new();
        let mut next: Option<String> = None;
        let mut pages = 0;
        loop {
            let req = match &next {
                None => PipelineJobsRequest::First {
                    project: api_id,
                    pipeline,
                },
                Some(rel) => PipelineJobsRequest::Next(rel),
            };
            let mut page = client.pipeline_jobs_page(req).await?;
            stats.requests += 1;
            stats.pipeline_pages += 1;
            // Offset pages may overlap (a job created between two requests shifts the rest down
            // by one): harmless, as observing a job twice is, so only the page itself is checked.
            check_page(&page, None, label, metrics)?;
            pages += 1;
            self.feed_window(cx, &mut page, stats);
            for j in &page.jobs {
                missing.remove(&j.id);
                seen.insert(j.id);
            }
            match page.take_next()? {
                // Never more pages than jobs wanted: at worst about twice the single fetches.
                Some(n) if missing.len() >= 2 && pages < wanted.len() => {
                    if !visited.insert(n.clone()) {
                        return Err(link_loop(metrics));
                    }
                    next = Some(n);
                }
                _ => return Ok(missing.into_iter().collect()),
            }
        }
    }

    /// Fetches followed jobs one by one (at most `MAX_SINGLE_FETCHES`, oldest first). Returns
    /// how many were gone (404).
    async fn fetch_each(
        &mut self,
        cx: &Cx<'_>,
        mut ids: Vec<u64>,
        stats: &mut CycleStats,
    ) -> Result<usize, PollError> {
        let Cx {
            client,
            metrics,
            api_id,
            label,
            server_now,
            ..
        } = *cx;
        ids.retain(|id| self.tracker.is_followed(*id));
        if ids.len() > MAX_SINGLE_FETCHES {
            warn!(project = %label, pending = ids.len(), "many followed jobs changed at once; fetching the rest next cycle");
            ids.truncate(MAX_SINGLE_FETCHES);
        }
        let mut gone = 0;
        for job_id in ids {
            let job = match client.job(api_id, job_id).await {
                // Counted (bad_job); still followed, so a GitLab that mends it is counted.
                Err(e @ ApiError::BadItem { .. }) => {
                    warn!(project = %label, job_id, error = %e, "a followed job does not decode; skipped this cycle");
                    continue;
                }
                r => r?,
            };
            stats.requests += 1;
            stats.single_fetches += 1;
            match job {
                Some(job) => {
                    let page = JobsPage::of_jobs(vec![job]);
                    self.feed(&page, server_now, label, metrics, stats);
                }
                None => {
                    info!(project = %label, job_id, "followed job no longer exists (pipeline deleted?); dropping it");
                    self.tracker.forget(job_id);
                    gone += 1;
                }
            }
        }
        Ok(gone)
    }

    /// Feeds the jobs of a second-phase listing that are this phase's ([`Cx::in_window`]),
    /// at the page's own time; `page` keeps just those.
    fn feed_window(&mut self, cx: &Cx<'_>, page: &mut JobsPage, stats: &mut CycleStats) {
        page.jobs.retain(|j| cx.in_window(j.id));
        let now = page.server_time.map(secs).unwrap_or(cx.server_now);
        self.feed(page, now, cx.label, cx.metrics, stats);
    }

    fn feed(
        &mut self,
        page: &JobsPage,
        server_now: f64,
        label: &str,
        metrics: &Metrics,
        stats: &mut CycleStats,
    ) {
        if page.bad_items > 0 {
            warn!(project = %label, items = page.bad_items, "skipped list items that are not valid jobs");
            for _ in 0..page.bad_items {
                metrics.api_error("bad_job");
            }
        }
        let mut events = Vec::new();
        for job in &page.jobs {
            self.tracker.observe(job, server_now, &mut events);
        }
        stats.events += events.len();
        // Freshness, once past the backfill (whose jobs finished long before by design).
        let fresh = !self.tracker.is_first_cycle();
        for e in &events {
            if let Event::Completed { finished_at, .. } = e {
                stats.completed += 1;
                if fresh && let Some(t) = finished_at {
                    metrics.observe_lag(server_now - t);
                }
            }
        }
        self.labels
            .apply(&mut events, self.default_branch.as_deref());
        metrics.apply(label, &events);
    }
}

/// Sanity checks on a page that follows one whose lowest id was `previous_min`: GitLab lists by
/// id descending, at most `PER_PAGE` jobs. Oddities are logged and counted; a page that does
/// not move below the previous one is a pagination loop (an error, so the cycle ends).
fn check_page(
    page: &JobsPage,
    previous_min: Option<u64>,
    label: &str,
    metrics: &Metrics,
) -> Result<(), PollError> {
    if page.jobs.len() > crate::gitlab::PER_PAGE as usize {
        warn!(project = %label, jobs = page.jobs.len(), "page longer than asked");
        metrics.api_error("page_too_long");
    }
    if page.jobs.windows(2).any(|w| w[0].id <= w[1].id) {
        warn!(project = %label, "page not in descending id order");
        metrics.api_error("ids_out_of_order");
    }
    if let Some(prev) = previous_min
        && page.jobs.iter().any(|j| j.id >= prev)
    {
        metrics.api_error("pagination_loop");
        return Err(PollError::PaginationLoop);
    }
    Ok(())
}

/// A `Link` that leads back to a page already read this listing: counted, and the cycle ends.
fn link_loop(metrics: &Metrics) -> PollError {
    metrics.api_error("pagination_loop");
    PollError::PaginationLoop
}

/// Whether a failed request for a catch-up cursor says the cursor is no good (refused, or an
/// answer that is no page of jobs), rather than that GitLab or the network is having a bad
/// time (worth asking again later) or that the token lost its rights.
fn cursor_refused(e: &ApiError) -> bool {
    match e {
        ApiError::Status { status, .. } => {
            (400..500).contains(status) && !matches!(status, 401 | 403 | 429)
        }
        ApiError::Link { .. }
        | ApiError::Decode { .. }
        | ApiError::BadItem { .. }
        | ApiError::TooLong { .. } => true,
        ApiError::RateLimited { .. } | ApiError::Transport { .. } => false,
    }
}

/// Whether a failed pipeline-jobs request says something about the endpoint itself (rather than
/// about GitLab's load or the network, which single fetches would meet too).
fn counts_against_endpoint(e: &PollError) -> bool {
    match e {
        PollError::Api(ApiError::RateLimited { .. } | ApiError::Transport { .. }) => false,
        PollError::Api(_) | PollError::PaginationLoop => true,
        PollError::Aborted | PollError::CatchUp(_) => false,
    }
}

fn page_time(page: &JobsPage) -> f64 {
    page.server_time
        .map(secs)
        .unwrap_or_else(|| secs(Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsSettings;
    use crate::labels::{Droppable, LabelsConfig, RunnerMode};

    fn poller(labels: &LabelsConfig) -> ProjectPoller {
        ProjectPoller::new(
            ProjectRef::Path("g/p".into()),
            Duration::from_secs(3600),
            labels.clone(),
            (0, 1),
        )
    }

    fn job() -> crate::gitlab::Job {
        serde_json::from_value(serde_json::json!({
            "id": 9, "status": "success", "stage": "test", "name": "rspec", "ref": "main",
            "started_at": "2026-01-01T10:00:00.000Z", "finished_at": "2026-01-01T10:01:00.000Z",
            "duration": 60.0, "queued_duration": 2.0,
            "runner": {"id": 1, "description": "docker-1", "runner_type": "instance_type"},
        }))
        .unwrap()
    }

    /// A checkpoint of project g/p that counted `job()` under `labels`.
    fn checkpoint(labels: &LabelsConfig) -> crate::state::ProjectCheckpoint {
        let metrics = Metrics::new(&MetricsSettings::default(), usize::MAX, labels).unwrap();
        let mut p = poller(labels);
        p.resolved = Some((1, "g/p".into()));
        let mut events = Vec::new();
        p.tracker.observe(&job(), 0.0, &mut events);
        p.tracker.complete_cycle(Some(9), Some(9));
        labels.apply(&mut events, None);
        metrics.apply("g/p", &events);
        p.checkpoint(&metrics)
    }

    fn restored(
        cp: crate::state::ProjectCheckpoint,
        labels: &LabelsConfig,
    ) -> (ProjectPoller, Metrics) {
        let metrics = Metrics::new(&MetricsSettings::default(), usize::MAX, labels).unwrap();
        let mut p = poller(labels);
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
        let old: crate::state::ProjectCheckpoint = serde_json::from_value(json).unwrap();
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
}
