//! An in-process GitLab API that serves scripted CI job histories, for tests, benchmarks and
//! `--demo`.
//!
//! It models what GitLab really does (see `shared/gitlab-api-notes.md`): keyset and offset
//! pagination of `GET /projects/:id/jobs` with GitLab's exact `Link` headers, `scope[]`
//! filtering, `GET /projects/:id/pipelines/:pipeline_id/jobs` (offset pagination, retried jobs
//! hidden unless `include_retried`), live `duration`/`queued_duration`, GitLab's error bodies, and faults on demand
//! (proxy errors, rate limits, broken bodies). Time comes from a [`SimClock`] that tests can
//! move by hand; [`Simulator::ground_truth`] says what a correct exporter should report.
//!
//! For project discovery it serves `GET /groups/:id/projects` (offset pagination) and
//! `GET /projects` (offset or keyset), with groups derived from project paths, and lets tests
//! archive, remove and add projects, or change membership, while it runs.
//!
//! It sends Job Hooks ([`HookSender`]): one event per status change of every job, with
//! `Gitlab::DataBuilder::Build`'s payload and GitLab's headers, through knobs that drop,
//! duplicate, delay and reorder them, driven by a manual clock
//! ([`HookSender::deliver_until`]) or in the background ([`HookSender::spawn`]);
//! [`plan_job_hooks`] lists them without HTTP. It answers the project hooks API
//! (`/projects/:id/hooks`), with knobs for access ([`Simulator::set_hooks_access`]) and
//! disabled hooks ([`Simulator::set_hook_alert`]).
//!
//! Job logs: `GET /projects/:id/jobs/:job_id/trace` serves each job's log as GitLab does (the
//! whole log, `Range` ignored; empty for an erased log or a job that never ran), generated from
//! `(seed, job id)` and streamed (`trace.rs`, `trace_api.rs`). A failed job's tail carries the
//! line of a failure class ([`FAILURE_CLASSES`]) or none; [`GroundTruth::failures`] and
//! [`GroundTruth::flaky`] say what a correct exporter counts. Knobs: per-job logs
//! ([`Simulator::set_log`], [`Simulator::erase_log`], [`Simulator::set_log_size`]), the limits
//! the truth assumes ([`Simulator::set_log_limits`]), faults ([`Simulator::push_trace_fault`],
//! [`Simulator::set_trace_fault`], [`Simulator::set_trace_denied`]), counts
//! ([`Simulator::trace_stats`]) and retries ([`Simulator::retry_job`],
//! [`WorldSpec::with_retries`]).

mod discovery;
pub mod fixtures;
mod generate;
mod hooks;
mod hooks_api;
mod http;
mod render;
mod token_api;
mod trace;
mod trace_api;
mod truth;
mod world;

#[cfg(test)]
mod hooks_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trace_tests;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use generate::{ProjectSpec, WorldSpec};
pub use hooks::{
    DeliveryRecord, HOOK_GITLAB_VERSION, HOOK_TIMEOUT, HookError, HookKnobs, HookPlan,
    HookProjects, HookSender, HookStats, HookTask, JobHookEvent, PlannedDelivery, job_hook_events,
    job_hook_payload, plan_job_hooks,
};
pub use hooks_api::{HookAlertStatus, ProjectHook};
pub use render::{hook_time, http_date, iso, iso_seconds};
pub use token_api::{
    ProjectAccess, SIM_GITLAB_REVISION, SIM_GITLAB_VERSION, TokenKind, TokenRejection, TokenSpec,
};
pub use trace::{
    CLASS_LOG_TOO_LARGE, CLASS_OTHER, CLASS_UNAVAILABLE, FAILURE_CLASSES, LogLimits, LogOverride,
    LogPlan, LogProfile, LogSettings, PlacedLine,
};
pub use trace_api::{TraceFault, TraceStats};
pub use truth::{DurationKey, FailureKey, FlakyKey, GroundTruth, JobKey, QueuedKey, RunnerKey};
pub use world::{
    FINAL_STATUSES, GROUP_ID_BASE, GroupDef, JobPlan, Ms, ProjectDef, RunnerDef, STATUSES, World,
    WorldError, is_final,
};

/// The simulator's notion of now.
#[derive(Debug, Clone)]
pub enum SimClock {
    /// The real wall clock.
    Live,
    /// A clock that only moves when told; clones share it.
    Manual(Arc<AtomicI64>),
}

impl SimClock {
    pub fn manual(start_ms: Ms) -> Self {
        Self::Manual(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn now_ms(&self) -> Ms {
        match self {
            Self::Live => chrono::Utc::now().timestamp_millis(),
            Self::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward; no-op for the live clock.
    pub fn advance(&self, by: Duration) {
        if let Self::Manual(t) = self {
            t.fetch_add(
                i64::try_from(by.as_millis()).unwrap_or(i64::MAX),
                Ordering::SeqCst,
            );
        }
    }

    /// Sets a manual clock; no-op for the live clock.
    pub fn set_ms(&self, ms: Ms) {
        if let Self::Manual(t) = self {
            t.store(ms, Ordering::SeqCst);
        }
    }
}

/// A misbehaviour to answer one request with, instead of the normal answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A proxy's HTML error page with this status (502, 503, 504, …).
    ServerError(u16),
    /// GitLab's per-endpoint limit: 429 JSON, no `Retry-After`.
    RateLimitedJson,
    /// Rack::Attack's instance throttle: 429 `text/plain` with `Retry-After` and `RateLimit-*`.
    RateLimitedText { retry_after_secs: u64 },
    /// 200 `application/json` with a truncated body.
    MalformedJson,
    /// 200 `text/html`: a proxy's login page.
    HtmlOk,
    /// 200 with the first bytes of a body, then the connection is cut (a reset mid-response).
    ConnectionReset,
    /// 401 `{"message":"401 Unauthorized"}`.
    Unauthorized,
    /// 401 `{"error":"invalid_token",…}`.
    ExpiredToken,
    /// 403 `{"message":"403 Forbidden"}`.
    Forbidden,
    /// Waits this long in real time, then answers normally.
    Delay(Duration),
    /// Any answer, byte for byte (a hostile or broken server): status, headers with raw values
    /// (a `date` given here replaces the simulated clock's) and body.
    Raw {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
}

/// A standing misbehaviour of a hostile GitLab, applied to every matching request until
/// [`Simulator::clear_hostile`] (faults queued with [`Simulator::push_fault`] still come first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hostile {
    /// Project listings (`GET /groups/:id/projects`, `GET /projects`) answer `per_page` made-up
    /// projects per page whatever was asked (ids from [`FLOOD_ID_BASE`], paths `flood/p<id>`),
    /// and every page links to a next one: an endless chain of new pages.
    ProjectFlood { per_page: usize },
    /// Listings (jobs, scoped or not, pipeline jobs, group projects, projects) answer with this
    /// raw `Link` header instead of GitLab's; `None` drops it.
    ListLink(Option<Vec<u8>>),
    /// Job listings get these raw items (any bytes: invalid UTF-8, lone surrogates, deep
    /// nesting) appended to their JSON array.
    JobsExtraItems(Vec<Vec<u8>>),
    /// Job listings validate `scope[]` as a GitLab that predates `waiting_for_callback` and
    /// `canceling` does: either status answers 400.
    ScopesBefore17,
}

/// The first id of [`Hostile::ProjectFlood`]'s made-up projects.
pub const FLOOD_ID_BASE: u64 = 1_000_000_000;

/// Which API endpoint a request addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /projects/:id`
    Project,
    /// `GET /projects/:id/jobs` without `scope`
    Jobs,
    /// `GET /projects/:id/jobs` with `scope` or `scope[]`
    JobsScoped,
    /// `GET /projects/:id/jobs/:job_id`
    Job,
    /// `GET /projects/:id/pipelines/:pipeline_id/jobs`
    PipelineJobs,
    /// `GET /groups/:id/projects`
    GroupProjects,
    /// `GET /projects`
    ProjectsList,
    /// `/projects/:id/hooks` and `/projects/:id/hooks/:hook_id`, any method
    Hooks,
    /// `GET /projects/:id/jobs/:job_id/trace`
    Trace,
    Other,
}

/// Request counts since the last reset (faulted requests included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub total: u64,
    pub project: u64,
    pub jobs: u64,
    pub jobs_scoped: u64,
    pub job: u64,
    pub pipeline_jobs: u64,
    pub group_projects: u64,
    pub projects_list: u64,
    pub hooks: u64,
    pub trace: u64,
    pub other: u64,
    pub by_status: BTreeMap<u16, u64>,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Real time the answer was made (for checks such as "nothing inside a Retry-After window").
    pub wall: std::time::Instant,
    pub method: String,
    pub path_and_query: String,
    pub status: u16,
    pub endpoint: Endpoint,
    /// Simulated time of the answer.
    pub at_ms: Ms,
    /// Where credentials came from: `PRIVATE-TOKEN`, `Authorization` or `private_token` (query).
    pub auth: Option<&'static str>,
    pub token_ok: bool,
}

/// How many requests [`Simulator::request_log`] keeps (the oldest are dropped).
pub const REQUEST_LOG_CAPACITY: usize = 10_000;

struct Inner {
    /// Replaced copy-on-write by the mutators, so a request answers from one consistent snapshot.
    world: Mutex<Arc<World>>,
    clock: SimClock,
    token: String,
    external_url: Mutex<String>,
    faults: Mutex<VecDeque<Fault>>,
    stats: Mutex<RequestStats>,
    log: Mutex<VecDeque<LoggedRequest>>,
    /// GitLab's per-user limit on the project jobs endpoint, in requests per (real) minute,
    /// with the times of the requests in the current window.
    jobs_limit: Mutex<Option<(u32, VecDeque<std::time::Instant>)>>,
    /// When set, every `GET /projects/:id/pipelines/:pipeline_id/jobs` answers this status.
    pipeline_jobs_answer: Mutex<Option<u16>>,
    hostile: Mutex<Vec<Hostile>>,
    hooks: Mutex<hooks_api::HookStore>,
    /// `--check-gitlab`'s endpoints and the token's knobs (`token_api`).
    tokens: Mutex<token_api::TokenStore>,
    /// The trace endpoint's queued faults and counts.
    traces: Mutex<trace_api::TraceStore>,
}

/// The simulated GitLab; clones share everything.
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked, so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Simulator {
    pub fn new(world: World, clock: SimClock, token: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                world: Mutex::new(Arc::new(world)),
                clock,
                token,
                external_url: Mutex::new("https://gitlab.example.com".to_owned()),
                faults: Mutex::default(),
                stats: Mutex::default(),
                log: Mutex::default(),
                jobs_limit: Mutex::default(),
                pipeline_jobs_answer: Mutex::default(),
                hostile: Mutex::default(),
                hooks: Mutex::default(),
                tokens: Mutex::default(),
                traces: Mutex::default(),
            }),
        }
    }

    /// A snapshot of the world; later mutations do not change it.
    pub fn world(&self) -> Arc<World> {
        Arc::clone(&lock(&self.inner.world))
    }

    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut World) -> Result<T, WorldError>,
    ) -> Result<T, WorldError> {
        let mut world = lock(&self.inner.world);
        // Clones the world only while a request still holds the old snapshot.
        f(Arc::make_mut(&mut world))
    }

    /// Archives or unarchives a project (what `archived` filters on and the JSON shows).
    pub fn set_archived(&self, project_id: u64, archived: bool) -> Result<(), WorldError> {
        self.mutate(|w| w.set_archived(project_id, archived))
    }

    /// Renames or transfers a project: same id, jobs and history, a new path.
    pub fn rename_project(&self, project_id: u64, path: &str) -> Result<(), WorldError> {
        self.mutate(|w| w.rename_project(project_id, path))
    }

    /// Makes the token's user a member of the project or not (`membership=true`).
    pub fn set_member(&self, project_id: u64, member: bool) -> Result<(), WorldError> {
        self.mutate(|w| w.set_member(project_id, member))
    }

    /// Deletes a project and its jobs: its endpoints answer 404 and lists leave it out.
    pub fn remove_project(&self, project_id: u64) -> Result<ProjectDef, WorldError> {
        self.mutate(|w| w.remove_project(project_id))
    }

    /// Adds a project with no jobs; new namespaces become groups with the next free ids.
    pub fn add_project(&self, project: ProjectDef) -> Result<(), WorldError> {
        self.mutate(|w| w.add_project(project))
    }

    /// Adds jobs to existing projects (see [`World::add_jobs`] for the checks).
    pub fn add_jobs(&self, jobs: Vec<JobPlan>) -> Result<(), WorldError> {
        self.mutate(|w| w.add_jobs(jobs))
    }

    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    pub fn now_ms(&self) -> Ms {
        self.inner.clock.now_ms()
    }

    /// Moves a manual clock forward (no-op for a live one).
    pub fn advance(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    pub fn project_by_id(&self, id: u64) -> Option<ProjectDef> {
        self.world().project(id).cloned()
    }

    /// GitLab's configured external URL, used in `Link` headers and `web_url`s.
    pub fn external_url(&self) -> String {
        lock(&self.inner.external_url).clone()
    }

    pub fn set_external_url(&self, url: &str) {
        *lock(&self.inner.external_url) = url.trim_end_matches('/').to_owned();
    }

    /// Queues a fault; each request answers with the first queued fault, if any.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.inner.faults).push_back(fault);
    }

    /// Adds a standing misbehaviour (see [`Hostile`]).
    pub fn add_hostile(&self, hostile: Hostile) {
        lock(&self.inner.hostile).push(hostile);
    }

    pub fn clear_hostile(&self) {
        lock(&self.inner.hostile).clear();
    }

    pub(crate) fn hostile(&self) -> Vec<Hostile> {
        lock(&self.inner.hostile).clone()
    }

    pub fn pending_faults(&self) -> usize {
        lock(&self.inner.faults).len()
    }

    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    fn pop_fault(&self) -> Option<Fault> {
        lock(&self.inner.faults).pop_front()
    }

    pub fn requests(&self) -> RequestStats {
        lock(&self.inner.stats).clone()
    }

    pub fn reset_requests(&self) {
        *lock(&self.inner.stats) = RequestStats::default();
        {
            let mut traces = lock(&self.inner.traces);
            traces.stats = TraceStats::default();
            traces.bytes.store(0, Ordering::Relaxed);
        }
        lock(&self.inner.log).clear();
    }

    /// The latest requests, oldest first (at most [`REQUEST_LOG_CAPACITY`]).
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    fn record(
        &self,
        method: &str,
        path_and_query: String,
        status: u16,
        at_ms: Ms,
        o: http::Outcome,
    ) {
        tracing::debug!(method, path = %path_and_query, status, "simulator request");
        {
            let mut s = lock(&self.inner.stats);
            s.total += 1;
            *s.by_status.entry(status).or_default() += 1;
            *match o.endpoint {
                Endpoint::Project => &mut s.project,
                Endpoint::Jobs => &mut s.jobs,
                Endpoint::JobsScoped => &mut s.jobs_scoped,
                Endpoint::Job => &mut s.job,
                Endpoint::PipelineJobs => &mut s.pipeline_jobs,
                Endpoint::GroupProjects => &mut s.group_projects,
                Endpoint::ProjectsList => &mut s.projects_list,
                Endpoint::Hooks => &mut s.hooks,
                Endpoint::Trace => &mut s.trace,
                Endpoint::Other => &mut s.other,
            } += 1;
        }
        let mut log = lock(&self.inner.log);
        if log.len() == REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        let (method, endpoint, auth, token_ok) =
            (method.to_owned(), o.endpoint, o.auth, o.token_ok);
        log.push_back(LoggedRequest {
            wall: std::time::Instant::now(),
            method,
            path_and_query,
            status,
            endpoint,
            at_ms,
            auth,
            token_ok,
        });
    }

    /// Enforces GitLab's per-user limit on `GET /projects/:id/jobs` (600/min on GitLab 16.5+):
    /// over it, 429 JSON without `Retry-After`, as GitLab answers. `None` lifts it.
    pub fn set_jobs_rate_limit(&self, per_minute: Option<u32>) {
        *lock(&self.inner.jobs_limit) = per_minute.map(|n| (n, VecDeque::new()));
    }

    /// Counts a jobs-endpoint request against the limit; `false` when it is over.
    pub(crate) fn admit_jobs_request(&self) -> bool {
        let mut guard = lock(&self.inner.jobs_limit);
        let Some((limit, window)) = guard.as_mut() else {
            return true;
        };
        let now = std::time::Instant::now();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            window.pop_front();
        }
        if window.len() >= *limit as usize {
            return false;
        }
        window.push_back(now);
        true
    }

    /// Makes `GET /projects/:id/pipelines/:pipeline_id/jobs` answer `status` every time, as a
    /// GitLab (or look-alike) that does not serve it would: 404 is Grape's unknown-route answer
    /// `{"error":"404 Not Found"}`, anything else a proxy's HTML error page. `None` serves it.
    pub fn set_pipeline_jobs_answer(&self, status: Option<u16>) {
        *lock(&self.inner.pipeline_jobs_answer) = status;
    }

    pub(crate) fn pipeline_jobs_answer(&self) -> Option<u16> {
        *lock(&self.inner.pipeline_jobs_answer)
    }

    /// The project's hooks, ascending id (tokens included, unlike the API).
    pub fn project_hooks(&self, project_id: u64) -> Vec<ProjectHook> {
        lock(&self.inner.hooks).of_project(project_id)
    }

    /// Whether the token may manage the project's hooks (Maintainer); without, the hooks API
    /// answers 403. Allowed by default.
    pub fn set_hooks_access(&self, project_id: u64, allowed: bool) {
        lock(&self.inner.hooks).set_access(project_id, allowed);
    }

    pub(crate) fn hooks_allowed(&self, project_id: u64) -> bool {
        lock(&self.inner.hooks).allowed(project_id)
    }

    /// Registers a hook as if made in the UI (job events on, push events off); returns its id.
    pub fn add_project_hook(
        &self,
        project_id: u64,
        url: &str,
        token: Option<&str>,
    ) -> Result<u64, WorldError> {
        if self.world().project(project_id).is_none() {
            return Err(WorldError::NoSuchProject(project_id));
        }
        let mut hook = ProjectHook::new(project_id, url, self.now_ms());
        hook.token = token.map(str::to_owned);
        hook.job_events = true;
        hook.push_events = false;
        Ok(lock(&self.inner.hooks).insert(hook))
    }

    /// Sets a hook's alert state, as GitLab's auto-disabling would: `TemporarilyDisabled`
    /// until `disabled_until`, or `Disabled` for good. `false` for an unknown hook.
    pub fn set_hook_alert(
        &self,
        hook_id: u64,
        status: HookAlertStatus,
        disabled_until: Option<Ms>,
    ) -> bool {
        lock(&self.inner.hooks).set_alert(hook_id, status, disabled_until)
    }

    /// The configured token as `GET /personal_access_tokens/self` describes it (its scopes
    /// are enforced: without `api` or `read_api`, other endpoints answer 403).
    pub fn set_token_spec(&self, spec: TokenSpec) {
        lock(&self.inner.tokens).spec = spec;
    }

    /// Makes every request with the configured token answer 401 as GitLab does for `why`;
    /// `None` accepts it again.
    pub fn set_token_rejected(&self, why: Option<TokenRejection>) {
        lock(&self.inner.tokens).rejected = why;
    }

    /// Restricts what the token may do with a project; `None` lifts it.
    pub fn set_project_access(&self, project_id: u64, access: Option<ProjectAccess>) {
        let mut store = lock(&self.inner.tokens);
        match access {
            Some(a) => drop(store.projects.insert(project_id, a)),
            None => drop(store.projects.remove(&project_id)),
        }
    }

    /// Sends GitLab.com's `RateLimit-*` headers on every answer, counting requests against
    /// `limit` (never reset: a test's run is short); `None` sends none.
    pub fn set_rate_limit_headers(&self, limit: Option<u32>) {
        lock(&self.inner.tokens).rate_limit = limit.map(|l| (l, 0));
    }

    pub(crate) fn token_store(&self) -> MutexGuard<'_, token_api::TokenStore> {
        lock(&self.inner.tokens)
    }

    pub(crate) fn hook_store(&self) -> MutexGuard<'_, hooks_api::HookStore> {
        lock(&self.inner.hooks)
    }

    /// Queues a fault for the trace endpoint only: each trace request answers with the first
    /// queued one (after any general fault of [`Simulator::push_fault`]).
    pub fn push_trace_fault(&self, fault: TraceFault) {
        lock(&self.inner.traces).faults.push_back(fault);
    }

    pub(crate) fn pop_trace_fault(&self) -> Option<TraceFault> {
        lock(&self.inner.traces).faults.pop_front()
    }

    /// Makes every trace request for `job_id` answer `fault` (`None`: serve it). A fault that
    /// never lets the log be read makes the job's true class `unavailable`.
    pub fn set_trace_fault(&self, job_id: u64, fault: Option<TraceFault>) {
        let _ = self.mutate(|w| {
            let standing = &mut w.logs_mut().standing;
            match fault {
                Some(f) => drop(standing.insert(job_id, f)),
                None => drop(standing.remove(&job_id)),
            }
            Ok(())
        });
    }

    /// Whether the token may read the project's logs (`authorize_read_build_trace!`); denied:
    /// every trace answers 403 and the project's failed jobs are `unavailable`.
    pub fn set_trace_denied(&self, project_id: u64, denied: bool) {
        let _ = self.mutate(|w| {
            let set = &mut w.logs_mut().denied;
            if denied {
                set.insert(project_id);
            } else {
                set.remove(&project_id);
            }
            Ok(())
        });
    }

    /// Changes a job's generated log (its size, class lines, or erases it). Class names must
    /// be one of [`FAILURE_CLASSES`] or `other`.
    pub fn set_log(&self, job_id: u64, change: LogOverride) -> Result<(), WorldError> {
        let classes = [&change.class, &change.decoy, &change.far];
        for name in classes.into_iter().flatten() {
            if name != CLASS_OTHER && trace::class_name(name).is_none() {
                return Err(WorldError::UnknownClass(name.clone()));
            }
        }
        self.mutate(|w| {
            w.job(job_id).ok_or(WorldError::NoSuchJob(job_id))?;
            w.logs_mut().overrides.insert(job_id, change);
            Ok(())
        })
    }

    /// Erases a job's log: its trace answers 200 with an empty body (class `unavailable`).
    pub fn erase_log(&self, job_id: u64) -> Result<(), WorldError> {
        let mut change = self.world().logs().overrides.get(&job_id).cloned();
        let change = change.get_or_insert_with(LogOverride::default);
        change.erased = true;
        self.set_log(job_id, change.clone())
    }

    /// Makes a job's log `bytes` long (for a log above `max_log_bytes`).
    pub fn set_log_size(&self, job_id: u64, bytes: u64) -> Result<(), WorldError> {
        let mut change = self.world().logs().overrides.get(&job_id).cloned();
        let change = change.get_or_insert_with(LogOverride::default);
        change.size = Some(bytes);
        self.set_log(job_id, change.clone())
    }

    /// What the exporter reads of logs, for the ground truth's classes (its `tail_bytes`
    /// and `max_log_bytes`; the exporter's defaults unless set).
    pub fn set_log_limits(&self, limits: LogLimits) {
        let _ = self.mutate(|w| {
            w.logs_mut().limits = limits;
            Ok(())
        });
    }

    /// How logs are generated (sizes, share of decoy and far class lines).
    pub fn set_log_profile(&self, profile: LogProfile) {
        let _ = self.mutate(|w| {
            w.logs_mut().profile = profile;
            Ok(())
        });
    }

    /// The plan of a job's log (size, class lines), `None` for an unknown job.
    pub fn log_plan(&self, job_id: u64) -> Option<LogPlan> {
        self.world().log_plan(job_id)
    }

    /// The class a correct exporter gives a failed job now (see [`World::failure_class`]);
    /// `None` for an unknown job or one that is not failed.
    pub fn failure_class(&self, job_id: u64) -> Option<&'static str> {
        let world = self.world();
        world.job(job_id).and_then(|job| world.failure_class(job))
    }

    /// A job's whole log, as the trace endpoint serves it (in memory: for tests).
    pub fn log_bytes(&self, job_id: u64) -> Option<Vec<u8>> {
        self.log_plan(job_id).map(|p| p.bytes())
    }

    /// Trace requests served since the last [`Simulator::reset_requests`].
    pub fn trace_stats(&self) -> TraceStats {
        let traces = lock(&self.inner.traces);
        let mut stats = traces.stats.clone();
        stats.bytes_sent = traces.bytes.load(Ordering::Relaxed);
        stats
    }

    pub(crate) fn note_trace(&self, job_id: Option<u64>, status: u16) {
        let mut traces = lock(&self.inner.traces);
        let stats = &mut traces.stats;
        stats.requests += 1;
        *stats.by_status.entry(status).or_default() += 1;
        if let Some(id) = job_id {
            *stats.by_job.entry(id).or_default() += 1;
        }
    }

    pub(crate) fn trace_bytes_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&lock(&self.inner.traces).bytes)
    }

    /// Retries a job at `at_ms` (see [`World::retry_job`]); the new job's id.
    pub fn retry_job(&self, job_id: u64, at_ms: Ms, outcome: &str) -> Result<u64, WorldError> {
        self.mutate(|w| w.retry_job(job_id, at_ms, outcome))
    }

    /// What a correct exporter reports now, if it ignores jobs completed before `cutoff_ms`.
    pub fn ground_truth(&self, cutoff_ms: Ms) -> GroundTruth {
        self.world().ground_truth(self.now_ms(), cutoff_ms)
    }

    /// The truth for an exporter whose first poll was at `first_poll_ms` (see
    /// [`World::ground_truth_since`]).
    pub fn ground_truth_since(&self, cutoff_ms: Ms, first_poll_ms: Ms) -> GroundTruth {
        self.world()
            .ground_truth_since(self.now_ms(), cutoff_ms, Some(first_poll_ms))
    }

    /// The HTTP service, to mount or serve elsewhere.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(http::handle)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves on a fresh port of 127.0.0.1 in a background task.
    pub async fn spawn(&self) -> std::io::Result<SimHandle> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sim = self.clone();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = sim.serve(listener, shutdown).await {
                tracing::warn!(error = %e, "simulator server failed");
            }
        });
        Ok(SimHandle {
            addr,
            base_url: format!("http://{addr}"),
            stop: Some(stop),
            task: Some(task),
        })
    }
}

/// A running server; stops on [`SimHandle::shutdown`] or when dropped.
#[derive(Debug)]
pub struct SimHandle {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimHandle {
    /// Stops accepting, lets open requests finish (for up to 5 s) and waits for the server.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
