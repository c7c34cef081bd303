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
//! The project's state ([`Project`]) is never locked across a request: each step plans from it
//! under a short lock, sends its request with no lock held, and applies the answer under a short
//! lock again. Events are applied to the metrics together with the snapshot that caused them
//! (one lock scope), and the tracker only advances its high-water mark when a cycle completes;
//! a cycle that fails (or is looked at by a checkpoint) part-way leaves nothing half-done: the
//! next cycle re-reads what it needs, and re-reading is idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::config::ProjectRef;
use crate::gitlab::pager::{JobList, PageError, PageSource, Pager, PipelineJobList};
use crate::gitlab::{ApiError, GitlabClient, JobStatus, JobsPage};
use crate::labels::LabelsConfig;
use crate::metrics::Metrics;
use crate::persist::ProjectCheckpoint;
use crate::project::state::{Fed, Project, is_waiting};
pub use crate::project::state::{NextPoll, ProjectState};
use crate::tracker::{Gap, Settling, Tracker};

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
/// holds the pipeline; the re-checks thin out (see `pursue`), so this costs a dozen requests.
pub const SETTLING_PURSUIT_SECS: f64 = 1800.0;
/// How often deep `scheduled` (`when: delayed`) jobs are re-checked, in GitLab time: they run
/// on their own when their time comes, in a pipeline nothing else may touch until then.
pub const SCHEDULED_RECHECK_SECS: f64 = 300.0;
/// Failures in a row of `GET /projects/:id/pipelines/:pipeline_id/jobs` after which a project
/// stops using it (a GitLab, proxy or look-alike that does not serve it): single fetches only.
pub const PIPELINE_JOBS_MAX_FAILURES: u32 = 3;

/// Locks a project's state. A panic while it was held is a bug; the state it left is still
/// the one the next cycle can mend (as after a failed request), so carrying on beats stopping
/// every later checkpoint.
fn lock(project: &Mutex<Project>) -> MutexGuard<'_, Project> {
    project
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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

/// The project's state after a cycle that ended so.
fn state_after(result: &Result<(), PollError>) -> ProjectState {
    match result {
        Ok(()) => ProjectState::Ok,
        Err(PollError::Api(e)) => match e.status() {
            Some(401) => ProjectState::Unauthorized,
            Some(403) => ProjectState::Forbidden,
            Some(404) => ProjectState::NotFound,
            _ => ProjectState::Failing,
        },
        Err(_) => ProjectState::Failing,
    }
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

/// How reading from the top ended.
struct Top {
    /// Where a read stopped at the page cap resumes (the link to the page after its last).
    capped: Option<String>,
    /// The link to the page below the last one read.
    below: Option<String>,
}

/// The waiting jobs a cycle re-checks, planned under one lock (see `follow_waiting`).
struct WaitingPlan {
    sweep: bool,
    scheduled_due: bool,
    /// Pipelines seen changing, untouched once their waiting jobs were re-checked.
    touched: BTreeSet<u64>,
    /// Settled pipelines whose `created` jobs are due for a re-check.
    pursued: HashSet<u64>,
    /// Waiting jobs to re-check.
    cold: Vec<u64>,
    /// Pages the last listing of waiting jobs took.
    waiting_pages: usize,
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

impl CycleStats {
    fn add(&mut self, fed: Fed) {
        self.events += fed.events;
        self.completed += fed.completed;
    }
}

/// A watched project: its state, locked only for short steps, and the gate its cycles hold.
#[derive(Debug)]
pub struct ProjectPoller {
    project: Mutex<Project>,
    /// Held by a cycle from start to end, requests included: cycles of one project never
    /// overlap, and discovery's pause and forget wait for the one running. Never taken by
    /// checkpoints or `/metrics`, which only need the state.
    gate: tokio::sync::Mutex<()>,
}

/// Proof that the holder runs the project's only cycle (see [`ProjectPoller::gate`]).
pub struct CycleGate<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl ProjectPoller {
    pub fn new(
        reference: ProjectRef,
        backfill: Duration,
        labels: LabelsConfig,
        shard: (u32, u32),
    ) -> Self {
        Self::of(Project::new(reference, backfill, labels, shard))
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
        Self::of(Project::new_resolved(
            id,
            path,
            default_branch,
            backfill,
            labels,
            shard,
        ))
    }

    fn of(project: Project) -> Self {
        Self {
            project: Mutex::new(project),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    pub fn project_mut(&mut self) -> &mut Project {
        self.project
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Caps the pages of the job list read per cycle (after the first) at `pages` (at least 1)
    /// instead of `MAX_PAGES_PER_CYCLE`.
    pub fn set_max_pages_per_cycle(&mut self, pages: usize) {
        self.project_mut().max_pages_per_cycle = Some(pages.max(1));
    }

    /// The project's state, locked: keep the guard for a few statements, never across an
    /// `.await` (the guard is not `Send`, so a spawned task holding it does not compile).
    pub fn project(&self) -> MutexGuard<'_, Project> {
        lock(&self.project)
    }

    /// Takes up where a checkpoint left off.
    pub fn restore(&mut self, cp: ProjectCheckpoint, metrics: &Metrics) {
        self.project_mut().restore(cp, metrics);
    }

    /// This project's part of a checkpoint (under the state lock, never waiting for a cycle).
    pub fn checkpoint(&self, metrics: &Metrics) -> ProjectCheckpoint {
        self.project().checkpoint(metrics)
    }

    /// How polling it went last time.
    pub fn state(&self) -> ProjectState {
        self.project().state()
    }

    /// How the next poll is timed.
    pub fn next_poll(&self, interval: Duration) -> NextPoll {
        self.project().next_poll(interval)
    }

    /// Waits for the running cycle, if any, to end, and keeps the next from starting while
    /// the gate is held.
    pub async fn gate(&self) -> CycleGate<'_> {
        CycleGate {
            _held: self.gate.lock().await,
        }
    }

    /// Runs one cycle, recording metrics; errors are logged and counted, never fatal.
    pub async fn poll(
        &self,
        client: &GitlabClient,
        metrics: &Metrics,
    ) -> Result<CycleStats, PollError> {
        let gate = self.gate().await;
        self.poll_gated(&gate, client, metrics).await
    }

    /// [`ProjectPoller::poll`] for a holder of the gate.
    pub async fn poll_gated(
        &self,
        _gate: &CycleGate<'_>,
        client: &GitlabClient,
        metrics: &Metrics,
    ) -> Result<CycleStats, PollError> {
        let mut cycle = Cycle {
            project: &self.project,
            client,
            metrics,
            api_id: String::new(),
            label: String::new(),
            lowest: None,
            highest: None,
            server_now: 0.0,
            stats: CycleStats::default(),
        };
        let result = cycle.run().await;
        let stats = cycle.stats;
        if record_outcome(&mut self.project(), &result, client, metrics) {
            return Ok(stats);
        }
        result.map(|()| stats)
    }
}

/// Sets the project's state after a cycle, logging changes; `true` when the project turned
/// out to be another shard's (which is no failure).
fn record_outcome(
    p: &mut Project,
    result: &Result<(), PollError>,
    client: &GitlabClient,
    metrics: &Metrics,
) -> bool {
    if let Some(owner) = p.other_shard() {
        // Another replica's project: no requests beyond the lookup, no series here.
        info!(project = %p.label(), owner, "project belongs to another shard");
        p.state = ProjectState::Elsewhere;
        return true;
    }
    let state = state_after(result);
    if state != p.state {
        // Logged once per change, not once per cycle: a revoked token must not flood logs.
        match (result, state) {
            (Ok(()), _) => info!(project = %p.label(), "polling works again"),
            // Never found at all: most likely a wrong path or id, or a wrong gitlab.url.
            (Err(e), ProjectState::NotFound) if p.resolved.is_none() => error!(
                project = %p.label(), url = %client.project_url(&p.reference.api_id()), error = %e,
                "configured project not found: this URL answered 404 (check the project's path or id, gitlab.url, and that the token's user can see the project); /readyz stays not ready; looking it up again later"),
            (Err(e), ProjectState::NotFound) => error!(project = %p.label(), error = %e,
                "project not found (deleted, moved, or invisible to the token); no longer polled"),
            (Err(e), ProjectState::Unauthorized | ProjectState::Forbidden) => error!(
                project = %p.label(), error = %e,
                "GitLab refuses the token (expired, revoked, or missing the read_api scope or Reporter access); backing off, last metrics kept"),
            (Err(_), _) => {}
        }
        p.state = state;
    }
    p.denials = match state {
        ProjectState::Unauthorized | ProjectState::Forbidden => p.denials.saturating_add(1),
        ProjectState::NotFound if p.resolved.is_none() => p.denials.saturating_add(1),
        _ => 0,
    };
    // No placeholder label ("id 42") that would change once the path is known: a project
    // configured by id shows its state from its first successful lookup on.
    if p.resolved.is_some() || p.reference.path().is_some() {
        metrics.set_project_state(&p.label(), state.as_str(), ProjectState::ALL);
    }
    false
}

/// One cycle in progress: what its requests need, and what it has read so far. Holds the
/// project's state only by reference: every access locks it for one synchronous step.
struct Cycle<'a> {
    project: &'a Mutex<Project>,
    client: &'a GitlabClient,
    metrics: &'a Metrics,
    api_id: String,
    /// The project's label when the cycle started, for logs (metrics take the label under the
    /// lock at each step: a rename may come in between).
    label: String,
    /// Ids read from the top of the list this cycle.
    lowest: Option<u64>,
    highest: Option<u64>,
    /// GitLab's clock at the first page (unix seconds).
    server_now: f64,
    stats: CycleStats,
}

impl<'a> Cycle<'a> {
    /// The project's state, for one synchronous step (never across an `.await`).
    fn lock(&self) -> MutexGuard<'a, Project> {
        lock(self.project)
    }

    /// Whether a job from a second-phase listing is this phase's to feed: below the pages read
    /// from the top (those were fed already) and at most the highest id read (newer ones are
    /// next cycle's, so the high-water mark stays exact).
    fn in_window(&self, id: u64) -> bool {
        self.lowest.is_none_or(|l| id < l) && self.highest.is_none_or(|h| id <= h)
    }

    /// Feeds a page at `now`: tracker and metrics in one lock scope.
    fn feed(&mut self, page: &JobsPage, now: f64) {
        let fed = self.lock().feed(page, now, self.metrics);
        self.stats.add(fed);
    }

    /// Feeds the jobs of a second-phase listing that are this phase's ([`Cycle::in_window`]),
    /// at the page's own time; `page` keeps just those.
    fn feed_window(&mut self, page: &mut JobsPage) {
        page.jobs.retain(|j| self.in_window(j.id));
        let now = Project::now_or(page, self.server_now);
        self.feed(page, now);
    }

    /// The lookup (when needed), the cycle, and its bookkeeping.
    async fn run(&mut self) -> Result<(), PollError> {
        if !self.resolve().await? {
            return Ok(());
        }
        let result = self.cycle().await;
        let mut p = self.lock();
        let label = p.label();
        p.sync_tracked(self.metrics);
        match &result {
            Ok(()) => {
                p.cycle_completed(self.stats.events, self.metrics);
                self.metrics
                    .poll_finished(&label, true, Project::local_now());
                debug!(project = %label, stats = ?self.stats, "poll cycle done");
            }
            Err(e) => {
                self.metrics
                    .poll_finished(&label, false, Project::local_now());
                warn!(project = %label, error = %e, "poll cycle failed; will retry next cycle");
            }
        }
        result
    }

    /// Looks the project up unless it is known; counts the poll as started. `false`: another
    /// shard's project, not polled here.
    ///
    /// Configured by path, a project's label is known before its lookup: the lookup counts
    /// as its poll, so a GitLab unreachable from the start shows in polls_total and
    /// poll_errors_total at once. Configured by id, no per-project series before the real
    /// path is known (a placeholder label would change under the alerts' feet);
    /// gitlab_jobs_exporter_projects_never_polled covers those.
    async fn resolve(&mut self) -> Result<bool, PollError> {
        let (reference, counted) = {
            let p = self.lock();
            if p.resolved.is_some() {
                if p.other_shard().is_some() {
                    return Ok(false);
                }
                self.metrics.poll_started(&p.label());
                return Ok(true);
            }
            (p.reference.clone(), p.reference.path().map(str::to_string))
        };
        if let Some(path) = &counted {
            self.metrics.poll_started(path);
        }
        let found = self
            .client
            .project(&reference.api_id())
            .await
            .inspect_err(|e| {
                warn!(project = %reference, error = %e, "cannot look up project");
                if let Some(path) = &counted {
                    self.metrics
                        .poll_finished(path, false, Project::local_now());
                }
            })?;
        self.stats.requests += 1;
        info!(project = %found.path_with_namespace, id = found.id, "watching project");
        let mut p = self.lock();
        p.resolved = Some((found.id, found.path_with_namespace));
        p.default_branch = found.default_branch;
        let label = p.label();
        let elsewhere = p.other_shard().is_some();
        match &counted {
            Some(path) if elsewhere => self.metrics.forget_polls(path, ProjectState::ALL),
            // GitLab spells it differently (case): the counts continue under its path.
            Some(path) if *path != label => {
                self.metrics.rename_project(path, &label, ProjectState::ALL);
            }
            Some(_) => {}
            None if !elsewhere => self.metrics.poll_started(&label),
            None => {}
        }
        Ok(!elsewhere)
    }

    async fn cycle(&mut self) -> Result<(), PollError> {
        let (first_cycle, max_pages) = {
            let p = self.lock();
            // run() resolves the project before calling this.
            let Some((id, label)) = p.resolved.clone() else {
                return Ok(());
            };
            self.api_id = id.to_string();
            self.label = label;
            let first = p.tracker.is_first_cycle();
            let max = if first {
                MAX_BACKFILL_PAGES
            } else {
                p.max_pages_per_cycle.unwrap_or(MAX_PAGES_PER_CYCLE)
            };
            (first, max)
        };
        // Pipelines a failed cycle saw change are kept (not taken here): that cycle may have
        // learnt a pipeline settled and failed before re-checking its waiting jobs, and the
        // next cycle, seeing the same statuses again, would not notice the change a second time.

        // 1. From the top until known territory (or the backfill window) is reached.
        let top = self.read_top(first_cycle, max_pages).await?;
        // 1b. Stretches earlier capped cycles left unread, with the pages this cycle has left.
        let mut gaps = if first_cycle {
            Vec::new()
        } else {
            self.catch_up(max_pages.saturating_sub(self.stats.pages))
                .await?
        };
        let capped_cycle = top.capped.is_some();
        gaps.extend(self.capped_gap(top.capped));

        // 2. Followed jobs below what was read (see `follow_up`).
        if first_cycle {
            self.first_listing().await?;
        } else {
            self.follow_up(top.below.filter(|_| !capped_cycle)).await?;
        }

        let given_up = {
            let mut p = self.lock();
            p.tracker.set_gaps(gaps);
            p.tracker.complete_cycle(self.lowest, self.highest)
        };
        if given_up > 0 {
            warn!(project = %self.label, given_up, limit = crate::tracker::MAX_FOLLOWED,
                "too many unfinished jobs to follow; the oldest are no longer followed");
            self.metrics.api_error("followed_limit");
        }
        Ok(())
    }

    /// Reads from the top until known territory (or the backfill window) is reached, at most
    /// `max_pages`; notes the ids read and GitLab's clock.
    async fn read_top(&mut self, first_cycle: bool, max_pages: usize) -> Result<Top, PollError> {
        let mut top = Top {
            capped: None,
            below: None,
        };
        let mut server_now = None;
        let api_id = self.api_id.clone();
        let list = JobList::all(self.client, &api_id);
        let mut pager = Pager::new(list, max_pages);
        loop {
            let page = match next_page(&mut pager, self.metrics).await? {
                Step::Page(page) => page,
                Step::End => break,
                Step::Capped(resume) => {
                    if first_cycle {
                        // The backfill window is a best effort by design: older is history.
                        warn!(project = %self.label, pages = self.stats.pages, "page limit reached on the first cycle; older jobs are left out");
                        self.metrics.api_error("page_limit");
                    } else {
                        top.capped = resume;
                    }
                    break;
                }
            };
            self.stats.requests += 1;
            self.stats.pages += 1;
            check_page(&page, self.lowest, &self.label, self.metrics)?;
            let now = *server_now.get_or_insert_with(|| page_time(&page));
            let wants_more = {
                let mut p = self.lock();
                if first_cycle {
                    let backfill = p.backfill.as_secs_f64();
                    p.tracker.begin_first_cycle(now, backfill);
                }
                let fed = p.feed(&page, now, self.metrics);
                self.stats.add(fed);
                p.tracker.wants_page_after(&page.jobs)
            };
            for j in &page.jobs {
                self.lowest = Some(self.lowest.map_or(j.id, |l| l.min(j.id)));
                self.highest = Some(self.highest.map_or(j.id, |h| h.max(j.id)));
            }
            top.below = page.next().ok().flatten().map(str::to_string);
            // Going on checks the `Link` (an unusable one fails the cycle only when the page
            // after is needed), the page cap, and links that lead back.
            if !wants_more {
                break;
            }
        }
        self.server_now = server_now.unwrap_or_else(Project::local_now);
        Ok(top)
    }

    /// The gap a read stopped at the page cap leaves: everything between the lowest id read
    /// and the old high-water mark is unread.
    fn capped_gap(&self, capped: Option<String>) -> Option<Gap> {
        let (next, top) = (capped?, self.lowest?);
        let bottom = self.lock().tracker.high_water()?;
        warn!(project = %self.label, pages = self.stats.pages, unread_below = top, down_to = bottom,
            "page limit reached this cycle; the older new jobs are read in the next cycles");
        self.metrics.api_error("page_limit");
        Some(Gap {
            top,
            bottom,
            next: Some(next),
            pages: 0,
        })
    }

    /// The first cycle learns the whole non-final population, however old.
    async fn first_listing(&mut self) -> Result<(), PollError> {
        self.list(Listing::All).await?;
        // That listing gave every waiting job's state: nothing to re-check this cycle. But
        // a pipeline that settled just before may still have `created` jobs GitLab moves on
        // in the next seconds: those are pursued from now on, as if seen settling. Not the
        // ones a manual job holds (they may stay `created` for good, the sweep covers them).
        let server_now = self.server_now;
        let mut p = self.lock();
        let touched = p.tracker.take_touched();
        let pipelines = pipeline_summary(&p.tracker);
        let map = p.tracker.settling_mut();
        for pipeline in touched {
            if pipelines
                .get(&pipeline)
                .is_some_and(|s| s.created && !s.busy && !s.manual)
            {
                map.insert(
                    pipeline,
                    Settling {
                        since: server_now,
                        next_check: server_now,
                        // The full listing just gave their state.
                        last_check: server_now,
                    },
                );
            }
        }
        Ok(())
    }

    /// Followed jobs below what was read. Busy ones (pending, running, …) every cycle: one
    /// listing of those statuses, then single fetches for the jobs that left it. Waiting ones
    /// (created, manual, scheduled) pile up in real projects (a manual deploy in every
    /// pipeline, never played) and mostly change when something else in their pipeline does:
    /// they are fetched when their pipeline showed a change this cycle (`created` ones also
    /// at thinning intervals while that pipeline stays settled, see `pursue`), and all of
    /// them are swept every `COLD_SWEEP_CYCLES` cycles. A played manual job usually shows
    /// up in the busy listing (pending, running) well before that.
    async fn follow_up(&mut self, below_top: Option<String>) -> Result<(), PollError> {
        let (hot, below_top) = {
            let p = self.lock();
            let hot: Vec<u64> = p
                .tracker
                .deep_followed(self.lowest)
                .filter(|(_, f)| !is_waiting(&f.status))
                .map(|(id, _)| id)
                .collect();
            // Not with unread gaps below (their depth is unknown).
            (hot, below_top.filter(|_| p.tracker.gaps().is_empty()))
        };
        let to_fetch = match hot.len() {
            0 => Vec::new(),
            1 => hot,
            _ => {
                let listed = self.list(Listing::Busy).await?;
                hot.into_iter().filter(|id| !listed.contains(id)).collect()
            }
        };
        // Ids whose current state a pipeline job list already gave this cycle.
        let mut seen = HashSet::new();
        // Reading on below the top pages sees every deep job at once: an option for many
        // changed jobs.
        let mut reread = Reread {
            next: below_top,
            reached: self.lowest,
        };
        self.fetch_changed(to_fetch, &mut seen, &mut reread).await?;
        self.follow_waiting(&mut seen, &mut reread).await
    }

    /// Which waiting jobs to re-check this cycle (see `follow_up`).
    fn plan_waiting(&self, seen: &HashSet<u64>) -> WaitingPlan {
        let server_now = self.server_now;
        let mut p = self.lock();
        let sweep = p.completed_cycles.is_multiple_of(COLD_SWEEP_CYCLES);
        // A waiting job moves when the running part of its pipeline is over (next stage,
        // skipped after a failure, canceled with it): re-check those pipelines only.
        // Kept until the re-checks succeeded: a failing listing or fetch must not lose the
        // change (the next cycle would see the same statuses and no change).
        let touched = p.tracker.touched().clone();
        let pipelines = pipeline_summary(&p.tracker);
        let settled: HashSet<u64> = (touched.iter().copied())
            .filter(|p| !pipelines.get(p).is_some_and(|s| s.busy))
            .collect();
        // GitLab moves those jobs on seconds after, not always within this cycle: `created`
        // ones left in a settled pipeline are re-checked until they move (see `pursue`).
        let pursued = pursue(&mut p.tracker, &settled, &pipelines, server_now);
        let scheduled_due = p
            .scheduled_checked
            .is_some_and(|t| server_now - t >= SCHEDULED_RECHECK_SECS);
        let cold: Vec<u64> = p
            .tracker
            .deep_followed(self.lowest)
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
        WaitingPlan {
            sweep,
            scheduled_due,
            touched,
            pursued,
            cold,
            waiting_pages: p.waiting_pages,
        }
    }

    /// Re-checks the waiting jobs `plan_waiting` picks.
    async fn follow_waiting(
        &mut self,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        let plan = self.plan_waiting(seen);
        let cold = plan.cold;
        // One listing serves them all when that is cheaper than fetching each.
        let to_fetch = if cold.len() > 1 && (plan.sweep || cold.len() > plan.waiting_pages) {
            let before = self.stats.scoped_pages;
            let listed = self.list(Listing::Waiting).await?;
            self.lock().waiting_pages = (self.stats.scoped_pages - before).max(1);
            cold.into_iter().filter(|id| !listed.contains(id)).collect()
        } else {
            cold
        };
        self.fetch_changed(to_fetch, seen, reread).await?;
        let server_now = self.server_now;
        let mut p = self.lock();
        p.tracker.untouch(&plan.touched);
        if plan.sweep || plan.scheduled_due || p.scheduled_checked.is_none() {
            p.scheduled_checked = Some(server_now);
        }
        // Checked: the next re-check of each comes later and later (about every half of
        // the time the pipeline has been settled), so one held by a manual job costs a
        // few requests, not one per cycle.
        for pipeline in plan.pursued {
            if let Some(s) = p.tracker.settling_mut().get_mut(&pipeline) {
                s.next_check = server_now + (server_now - s.since).max(0.0) / 2.0;
                s.last_check = server_now;
            }
        }
        Ok(())
    }

    /// Reads on into the gaps earlier capped cycles left (highest first), at most `budget`
    /// pages, feeding the jobs inside them. Returns the gaps as they are after this cycle
    /// (for [`Tracker::set_gaps`] once the cycle completes).
    async fn catch_up(&mut self, mut budget: usize) -> Result<Vec<Gap>, PollError> {
        let label = self.label.clone();
        let mut left = Vec::new();
        let gaps = self.lock().tracker.gaps().to_vec();
        for mut gap in gaps {
            match self.read_gap(&mut gap, &mut budget).await? {
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
                    self.metrics.api_error("catch_up_abandoned");
                }
            }
        }
        Ok(left)
    }

    /// Reads one gap on with the pages of `budget` left.
    async fn read_gap(&mut self, gap: &mut Gap, budget: &mut usize) -> Result<GapEnd, PollError> {
        let api_id = self.api_id.clone();
        let list = JobList::all(self.client, &api_id);
        let mut pager = Pager::resume(list, gap.next.clone(), *budget);
        let end = self.read_gap_pages(gap, &mut pager).await;
        *budget = budget.saturating_sub(pager.pages());
        end
    }

    /// [`Cycle::read_gap`]'s pages, from `pager` (which starts at the gap's cursor).
    async fn read_gap_pages<S: PageSource<Page = JobsPage>>(
        &mut self,
        gap: &mut Gap,
        pager: &mut Pager<S>,
    ) -> Result<GapEnd, PollError> {
        let mut prev_min: Option<u64> = None;
        loop {
            let mut page = match pager.next().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(GapEnd::Closed),
                Err(PageError::Capped { resume, .. }) => {
                    gap.next = resume;
                    return Ok(GapEnd::Open);
                }
                Err(PageError::Loop) => return Ok(GapEnd::Abandoned),
                // An unusable `Link` on a page inside the gap: like a refused cursor.
                Err(PageError::Link(e)) => {
                    warn!(project = %self.label, error = %e, "unusable link while catching up; reading down from the top instead");
                    self.metrics.api_error("catch_up_cursor");
                    pager.restart();
                    prev_min = None;
                    continue;
                }
                // A cursor this GitLab no longer takes (an upgrade since the checkpoint, a
                // proxy, a tampered file): read from the top instead, pages above the gap
                // cost but stay harmless.
                Err(PageError::Api(e)) if pager.cursor().is_some() && cursor_refused(&e) => {
                    self.stats.requests += 1;
                    warn!(project = %self.label, error = %e, "GitLab refused the catch-up cursor; reading down from the top instead");
                    self.metrics.api_error("catch_up_cursor");
                    // The top page is above the ones read so far: no loop.
                    pager.restart();
                    prev_min = None;
                    continue;
                }
                Err(PageError::Api(e)) => return Err(PollError::CatchUp(e)),
            };
            self.stats.requests += 1;
            self.stats.pages += 1;
            self.stats.catch_up_pages += 1;
            gap.pages += 1;
            if check_page(&page, prev_min, &self.label, self.metrics).is_err() {
                return Ok(GapEnd::Abandoned);
            }
            let Some(min) = page.jobs.iter().map(|j| j.id).min() else {
                return Ok(GapEnd::Closed);
            };
            prev_min = Some(min);
            page.jobs.retain(|j| gap.contains(j.id));
            let now = Project::now_or(&page, self.server_now);
            self.feed(&page, now);
            gap.top = gap.top.min(min.max(gap.bottom));
            // Every id above the old mark read (ids are global: usually one more page).
            if min <= gap.bottom.saturating_add(1) {
                return Ok(GapEnd::Closed);
            }
        }
    }

    /// Pages through a `scope[]` listing, feeding jobs below `lowest` (the ones above were just
    /// read) and at most `highest` (newer ones are next cycle's). Returns the ids listed.
    async fn list(&mut self, listing: Listing) -> Result<HashSet<u64>, PollError> {
        let mut seen = HashSet::new();
        let mut listed_min: Option<u64> = None;
        let api_id = self.api_id.clone();
        // The cap counts every scoped page of the cycle; the first page is always read.
        let budget = MAX_LISTING_PAGES
            .saturating_sub(self.stats.scoped_pages)
            .max(1);
        let mut legacy = self.lock().legacy_scopes;
        let mut scopes = listing.scopes(legacy);
        let mut pager = Pager::new(
            JobList {
                client: self.client,
                project: &api_id,
                scopes: &scopes,
            },
            budget,
        );
        loop {
            let mut page = match next_page(&mut pager, self.metrics).await {
                Ok(Step::Page(page)) => page,
                Ok(Step::End) => return Ok(seen),
                Ok(Step::Capped(_)) => {
                    warn!(project = %self.label, pages = self.stats.scoped_pages, "listing too long; the rest waits for the next cycle");
                    self.metrics.api_error("page_limit");
                    return Ok(seen);
                }
                Err(PollError::Api(ApiError::Status { status: 400, .. }))
                    if pager.cursor().is_none() && !legacy =>
                {
                    self.stats.requests += 1;
                    warn!(project = %self.label, "GitLab rejected the newer statuses in scope[]; using the older list");
                    self.lock().legacy_scopes = true;
                    legacy = true;
                    // A new listing: the refused request does not count against its cap.
                    scopes = listing.scopes(legacy);
                    pager = Pager::new(
                        JobList {
                            client: self.client,
                            project: &api_id,
                            scopes: &scopes,
                        },
                        budget,
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.stats.requests += 1;
            self.stats.scoped_pages += 1;
            check_page(&page, listed_min, &self.label, self.metrics)?;
            listed_min = page.jobs.iter().map(|j| j.id).min().or(listed_min);
            seen.extend(page.jobs.iter().map(|j| j.id));
            self.feed_window(&mut page);
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
        mut ids: Vec<u64>,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        let pages = {
            let p = self.lock();
            ids.retain(|id| p.tracker.is_followed(*id) && !seen.contains(id));
            ids.sort_unstable();
            reread_pages(&p, &ids, reread)
        };
        if let Some(pages) = pages {
            // Cheaper than the requests below would be: one page shows a hundred jobs.
            debug!(project = %self.label, jobs = ids.len(), pages, "reading on below the top pages instead of fetching each changed job");
            self.reread(ids[0], pages + 1, seen, reread).await?;
            let p = self.lock();
            ids.retain(|id| p.tracker.is_followed(*id) && !seen.contains(id));
        }
        if ids.len() > MAX_SINGLE_FETCHES {
            warn!(project = %self.label, pending = ids.len(), "many followed jobs changed at once; fetching the rest next cycle");
            ids.truncate(MAX_SINGLE_FETCHES);
        }
        let (mut singles, groups) = self.by_pipeline(ids);
        for (pipeline, group) in groups {
            if self.lock().pipeline_jobs_off {
                singles.extend(group);
                continue;
            }
            match self.read_pipeline(pipeline, &group, seen).await {
                Ok(missing) => {
                    self.lock().pipeline_jobs_failures = 0;
                    if !missing.is_empty() {
                        debug!(project = %self.label, pipeline, ?missing, "jobs missing from their pipeline's job list; fetching them singly");
                    }
                    singles.extend(missing);
                }
                Err(e) => self.pipeline_failed(pipeline, group, seen, e).await?,
            }
        }
        singles.sort_unstable();
        self.fetch_each(singles).await?;
        Ok(())
    }

    /// Splits `ids` into jobs to fetch singly and, by pipeline, jobs worth their pipeline's job
    /// list: two or more of them, or a lone one whose list also refreshes other deep followed
    /// jobs of the pipeline (same cost).
    fn by_pipeline(&self, ids: Vec<u64>) -> (Vec<u64>, BTreeMap<u64, Vec<u64>>) {
        let p = self.lock();
        let mut singles = Vec::new();
        let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            match p.tracker.followed(id).and_then(|f| f.pipeline_id) {
                Some(pipeline) if !p.pipeline_jobs_off => {
                    groups.entry(pipeline).or_default().push(id)
                }
                _ => singles.push(id),
            }
        }
        let mut deep: HashMap<u64, usize> = HashMap::new();
        if groups.values().any(|g| g.len() == 1) {
            for (_, f) in p.tracker.deep_followed(self.lowest) {
                if let Some(pipeline) = f.pipeline_id.filter(|x| groups.contains_key(x)) {
                    *deep.entry(pipeline).or_default() += 1;
                }
            }
        }
        groups.retain(|pipeline, group| {
            let worth = group.len() >= 2 || deep.get(pipeline).is_some_and(|n| *n >= 2);
            if !worth {
                singles.append(group);
            }
            worth
        });
        (singles, groups)
    }

    /// A pipeline's job list failed: its jobs are fetched singly, and the endpoint is blamed
    /// when the failure says something about it.
    async fn pipeline_failed(
        &mut self,
        pipeline: u64,
        group: Vec<u64>,
        seen: &HashSet<u64>,
        e: PollError,
    ) -> Result<(), PollError> {
        let rest: Vec<u64> = group.into_iter().filter(|id| !seen.contains(id)).collect();
        warn!(project = %self.label, pipeline, error = %e, jobs = rest.len(),
            "cannot read the pipeline's job list; fetching its jobs singly");
        let asked = rest.len();
        let gone = self.fetch_each(rest).await?;
        // A deleted pipeline answers 404 and so do its jobs: not the endpoint's fault.
        let pipeline_gone = asked > 0
            && gone == asked
            && matches!(&e, PollError::Api(a) if a.status() == Some(404));
        if counts_against_endpoint(&e) && !pipeline_gone {
            let mut p = self.lock();
            p.pipeline_jobs_failures += 1;
            if p.pipeline_jobs_failures >= PIPELINE_JOBS_MAX_FAILURES && !p.pipeline_jobs_off {
                p.pipeline_jobs_off = true;
                self.metrics.api_error("pipeline_jobs_disabled");
                warn!(project = %self.label, failures = p.pipeline_jobs_failures,
                    "the pipeline jobs endpoint keeps failing; this project now fetches changed jobs one by one");
            }
        }
        Ok(())
    }

    /// Reads on down the job list from where `reread` stands until `down_to` is reached (or
    /// `max_pages` were read), feeding what it shows ([`Cycle::in_window`]) and noting it in
    /// `seen`.
    async fn reread(
        &mut self,
        down_to: u64,
        max_pages: usize,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        let api_id = self.api_id.clone();
        let list = JobList::all(self.client, &api_id);
        let mut pager = Pager::resume(list, reread.next.clone(), max_pages);
        while reread.reached.is_none_or(|r| r > down_to) && reread.next.is_some() {
            let mut page = match pager.next().await {
                Ok(Some(page)) => page,
                // The cap: the next call goes on from `reread.next`. An unusable `Link` has
                // left `reread.next` empty: the other ways serve the rest.
                Ok(None) | Err(PageError::Capped { .. } | PageError::Link(_)) => break,
                // A link back to a page read on this call: counted as a page that does not
                // go down is (below), and reading on ends, without asking for it again.
                Err(PageError::Loop) => {
                    self.metrics.api_error("pagination_loop");
                    reread.next = None;
                    break;
                }
                Err(PageError::Api(e)) => return Err(e.into()),
            };
            reread.next = None;
            self.stats.requests += 1;
            self.stats.reread_pages += 1;
            if check_page(&page, reread.reached, &self.label, self.metrics).is_err() {
                // A page that does not go down: no reading on this cycle, the other ways
                // (pipeline job lists, single fetches) serve.
                return Ok(());
            }
            let Some(min) = page.jobs.iter().map(|j| j.id).min() else {
                break;
            };
            reread.reached = Some(min);
            // An unusable `Link` ends reading on: the other ways serve the rest.
            reread.next = page.next().ok().flatten().map(str::to_string);
            seen.extend(page.jobs.iter().map(|j| j.id));
            self.feed_window(&mut page);
        }
        Ok(())
    }

    /// Reads one pipeline's job list, feeding what it shows (below `lowest`, at most
    /// `highest`, as `list` does: jobs above were read this cycle, newer ones are next
    /// cycle's). Returns the `wanted` jobs it did not show, for single fetches. Stops paging
    /// when fewer than two wanted jobs remain (a page then costs as much as fetching them) or
    /// after as many pages as jobs wanted (a pipeline of thousands of jobs).
    async fn read_pipeline(
        &mut self,
        pipeline: u64,
        wanted: &[u64],
        seen: &mut HashSet<u64>,
    ) -> Result<Vec<u64>, PollError> {
        let mut missing: BTreeSet<u64> = wanted.iter().copied().collect();
        let api_id = self.api_id.clone();
        let list = PipelineJobList {
            client: self.client,
            project: &api_id,
            pipeline,
        };
        // Never more pages than jobs wanted: at worst about twice the single fetches.
        let mut pager = Pager::new(list, wanted.len());
        loop {
            let mut page = match next_page(&mut pager, self.metrics).await? {
                Step::Page(page) => page,
                Step::End | Step::Capped(_) => break,
            };
            self.stats.requests += 1;
            self.stats.pipeline_pages += 1;
            // Offset pages may overlap (a job created between two requests shifts the rest down
            // by one): harmless, as observing a job twice is, so only the page itself is checked.
            check_page(&page, None, &self.label, self.metrics)?;
            self.feed_window(&mut page);
            for j in &page.jobs {
                missing.remove(&j.id);
                seen.insert(j.id);
            }
            // An unusable `Link` fails the read even when no more pages are wanted.
            page.next()?;
            if missing.len() < 2 {
                break;
            }
        }
        Ok(missing.into_iter().collect())
    }

    /// Fetches followed jobs one by one (at most `MAX_SINGLE_FETCHES`, oldest first). Returns
    /// how many were gone (404).
    async fn fetch_each(&mut self, mut ids: Vec<u64>) -> Result<usize, PollError> {
        {
            let p = self.lock();
            ids.retain(|id| p.tracker.is_followed(*id));
        }
        if ids.len() > MAX_SINGLE_FETCHES {
            warn!(project = %self.label, pending = ids.len(), "many followed jobs changed at once; fetching the rest next cycle");
            ids.truncate(MAX_SINGLE_FETCHES);
        }
        let mut gone = 0;
        for job_id in ids {
            let job = match self.client.job(&self.api_id, job_id).await {
                // Counted (bad_job); still followed, so a GitLab that mends it is counted.
                Err(e @ ApiError::BadItem { .. }) => {
                    warn!(project = %self.label, job_id, error = %e, "a followed job does not decode; skipped this cycle");
                    continue;
                }
                r => r?,
            };
            self.stats.requests += 1;
            self.stats.single_fetches += 1;
            match job {
                Some(job) => {
                    let page = JobsPage::of_jobs(vec![job]);
                    self.feed(&page, self.server_now);
                }
                None => {
                    info!(project = %self.label, job_id, "followed job no longer exists (pipeline deleted?); dropping it");
                    self.lock().tracker.forget(job_id);
                    gone += 1;
                }
            }
        }
        Ok(gone)
    }
}

/// Keeps the settled pipelines with `created` jobs left (new ones from `settled`) for
/// `SETTLING_PURSUIT_SECS`, and returns those whose re-check is due. A pipeline leaves
/// when it has no followed `created` job any more, or a job in flight again (it settles
/// anew later), or once it was checked after its window ended (an entry past its window is
/// due at once: a downtime may have skipped its last re-checks).
fn pursue(
    tracker: &mut Tracker,
    settled: &HashSet<u64>,
    pipelines: &HashMap<u64, PipelineSummary>,
    server_now: f64,
) -> HashSet<u64> {
    let map = tracker.settling_mut();
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
        .filter(|(_, s)| s.next_check <= server_now || server_now - s.since > SETTLING_PURSUIT_SECS)
        .map(|(p, _)| *p)
        .collect()
}

/// The pages it takes to read on from where `reread` stands down to the oldest of `ids`
/// (ascending), if that is cheaper than learning them the other ways: at least one
/// request per pipeline (their job lists) or per job (single fetches). The depth is the
/// number of this project's jobs known between the two ids (every id above `floor` that
/// was read is remembered); below `floor` the id distance stands in, an overestimate as
/// ids are global.
fn reread_pages(p: &Project, ids: &[u64], reread: &Reread) -> Option<usize> {
    let (&oldest, reached) = (ids.first()?, reread.reached?);
    if reread.next.is_none() || ids.len() < 2 || oldest >= reached {
        return None;
    }
    let depth = p
        .tracker
        .known_between(oldest, reached)
        .unwrap_or((reached - oldest) as usize);
    let pages = depth.max(1).div_ceil(crate::gitlab::PER_PAGE as usize);
    let others = if p.pipeline_jobs_off {
        ids.len()
    } else {
        let mut pipelines = HashSet::new();
        let mut without = 0;
        for id in ids {
            match p.tracker.followed(*id).and_then(|f| f.pipeline_id) {
                Some(pipeline) => {
                    pipelines.insert(pipeline);
                }
                None => without += 1,
            }
        }
        pipelines.len() + without
    };
    (pages < others && pages <= MAX_LISTING_PAGES).then_some(pages)
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

/// Where a listing stands after asking its pager for a page (see [`next_page`]).
enum Step<P> {
    Page(P),
    /// The last page was read.
    End,
    /// The page cap was reached with more to read: where to resume.
    Capped(Option<String>),
}

/// The next page from `pager`, for a caller that stops at the last page or at the cap and
/// fails on anything else: a failed request or an unusable `Link` as it is, a `Link` leading
/// back to a page already read counted as a pagination loop.
async fn next_page<S: PageSource>(
    pager: &mut Pager<S>,
    metrics: &Metrics,
) -> Result<Step<S::Page>, PollError> {
    match pager.next().await {
        Ok(Some(page)) => Ok(Step::Page(page)),
        Ok(None) => Ok(Step::End),
        Err(PageError::Capped { resume, .. }) => Ok(Step::Capped(resume)),
        Err(PageError::Api(e) | PageError::Link(e)) => Err(PollError::Api(e)),
        Err(PageError::Loop) => Err(link_loop(metrics)),
    }
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
    Project::now_or(page, Project::local_now())
}
