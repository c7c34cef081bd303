//! One poll cycle of one project: which GitLab requests to send, and feeding their answers to
//! the project's [`Tracker`](crate::tracker::Tracker).
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

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::config::ProjectRef;
use crate::gitlab::pager::{JobList, Pager};
use crate::gitlab::{ApiError, GitlabClient, JobsPage};
use crate::labels::LabelsConfig;
use crate::metrics::Metrics;
use crate::persist::ProjectCheckpoint;
use crate::project::state::{Fed, Project};
pub use crate::project::state::{NextPoll, ProjectState};
use crate::tracker::Gap;

mod catch_up;
mod classify;
mod fetch;
mod flaky;
mod listings;
mod pages;

use pages::{Step, check_page, next_page, page_time};

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

impl PollError {
    /// The endpoint of the request that failed, if one did.
    pub fn endpoint(&self) -> Option<&'static str> {
        match self {
            Self::Api(e) | Self::CatchUp(e) => Some(e.endpoint()),
            Self::PaginationLoop | Self::Aborted => None,
        }
    }
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
    /// Job logs read for failure classes (also in `requests`).
    pub traces: usize,
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

    /// Classifies failed jobs from their logs (`None`: `[failures] classify = false`).
    pub fn with_failures(
        mut self,
        config: Option<crate::project::followups::ClassifyConfig>,
    ) -> Self {
        self.project_mut().followups.set_config(config);
        self
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
        // The client's own warnings (a retry, a rate limit) name the project through this span.
        let span = tracing::info_span!("poll", project = %self.project().label());
        let result = tracing::Instrument::instrument(cycle.run(), span).await;
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
    let now = Project::local_now();
    match result {
        Ok(()) => p.last_success = Some(now),
        Err(e) => p.last_error = Some((now, crate::model::text::bounded(&e.to_string()))),
    }
    log_outcome(p, result, state, client);
    p.state = state;
    p.denials = match state {
        ProjectState::Unauthorized | ProjectState::Forbidden => p.denials.saturating_add(1),
        ProjectState::NotFound if p.resolved.is_none() => p.denials.saturating_add(1),
        _ => 0,
    };
    // No placeholder label ("id 42") that would change once the path is known: a project
    // configured by id shows its state from its first successful lookup on.
    if !p.label_unknown() {
        metrics.set_project_state(&p.label(), state.as_str(), ProjectState::ALL);
    }
    false
}

/// Each failed cycle's error, logged once (here, not where it happened) with the project and
/// the endpoint. A refusal or a missing project is logged when the state changes, not every
/// cycle: a revoked token must not flood the logs.
fn log_outcome(
    p: &Project,
    result: &Result<(), PollError>,
    state: ProjectState,
    client: &GitlabClient,
) {
    let changed = state != p.state;
    let project = p.label();
    let Err(e) = result else {
        if changed {
            info!(project = %project, "polling works again");
        }
        return;
    };
    let endpoint = e.endpoint();
    match state {
        _ if !changed && state != ProjectState::Failing => {
            debug!(project = %project, endpoint, error = %e, "poll cycle failed again");
        }
        // Never found at all: most likely a wrong path or id, or a wrong gitlab.url.
        ProjectState::NotFound if p.resolved.is_none() => error!(
            project = %project, endpoint, url = %client.project_url(&p.reference.api_id()), error = %e,
            "configured project not found: this URL answered 404 (check the project's path or id, gitlab.url, and that the token's user can see the project); /readyz stays not ready; looking it up again later"),
        ProjectState::NotFound => error!(project = %project, endpoint, error = %e,
            "project not found (deleted, moved, or invisible to the token); no longer polled"),
        ProjectState::Unauthorized | ProjectState::Forbidden => error!(
            project = %project, endpoint, error = %e,
            "GitLab refuses the token (expired, revoked, or missing the read_api scope or Reporter access); backing off, last metrics kept"),
        _ => {
            warn!(project = %project, endpoint, error = %e, "poll cycle failed; will retry next cycle")
        }
    }
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
                debug!(
                    project = %label,
                    requests = self.stats.requests,
                    pages = self.stats.pages,
                    events = self.stats.events,
                    completed = self.stats.completed,
                    "poll cycle done"
                );
            }
            // Logged once, with the project's state (`record_outcome`).
            Err(_) => {
                self.metrics
                    .poll_finished(&label, false, Project::local_now());
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
            // Logged once, with the project's state (`record_outcome`).
            .inspect_err(|_| {
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
            // Its first series: nothing went out before the lookup (hooks wait for it too).
            None if !elsewhere => self.metrics.poll_started(&label),
            None => {}
        }
        Ok(!elsewhere)
    }

    async fn cycle(&mut self) -> Result<(), PollError> {
        let (first_cycle, max_pages) = {
            let mut p = self.lock();
            p.tracker.cycle_started();
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
        // 3. Flaky jobs: every id up to the high-water mark has been read now.
        self.settle_flaky().await;
        if given_up > 0 {
            warn!(project = %self.label, given_up, limit = crate::tracker::MAX_FOLLOWED,
                "too many unfinished jobs to follow; the oldest are no longer followed");
            self.metrics.api_error("followed_limit");
        }
        // 3. Failure classes of failed jobs counted (now or before), a few per cycle.
        self.classify().await;
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
                p.attempts
                    .listed(&page.jobs, page.next().is_ok_and(|n| n.is_none()));
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
}
