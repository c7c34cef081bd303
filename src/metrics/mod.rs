//! The Prometheus registry: job metrics fed by tracker events, and the exporter's own metrics.
//!
//! Label values are written through `with` so that a label-count mistake is logged, never a
//! panic (`with_label_values` panics). The job metrics live in [`jobs`], restorable.
//!
//! Over 600 lines on purpose: [`Metrics`] is the one handle every layer reports through, and
//! renaming or removing a project touches its job series and its own series together; the
//! metric families themselves live beside it (`jobs`, `own`, `carry`).

pub mod carry;
mod failures;
pub mod flaky;
pub mod gzip;
pub mod jobs;
mod own;
pub mod recent;
pub mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use prometheus::core::{Collector, Metric};
use prometheus::{Encoder, Registry, TextEncoder};
use tracing::error;

use crate::config::MetricsSettings;
use crate::model::JobStatus;
use crate::tracker::Event;

use own::{POLL_ERRORS_HELP, POLLS_HELP};

/// One live render, awaited by every scrape that arrived while it ran.
type SharedRender = tokio::sync::OnceCell<Result<Arc<Page>, String>>;

/// A rendered page, shared by every scrape that serves it: its text, where its histograms
/// begin (the unpersisted families go there, see `Page::around`), and its gzip form once a scrape
/// asked for one.
pub struct Page {
    text: Bytes,
    split: usize,
    gz: tokio::sync::OnceCell<Result<Arc<gzip::Parts>, String>>,
}

/// A page's text as the owner of the chunks sent (see [`Page::around`]).
struct PageText(Arc<Page>);

impl AsRef<[u8]> for PageText {
    fn as_ref(&self) -> &[u8] {
        &self.0.text
    }
}

impl Page {
    fn new(text: Bytes, split: usize) -> Self {
        Self {
            split: split.min(text.len()),
            text,
            gz: tokio::sync::OnceCell::new(),
        }
    }

    /// The page with the never-published families placed before its histograms, so they stay
    /// with the other counters and gauges: `[page before its histograms, unpersisted,
    /// histograms]` (slices of the same bytes, no copy). The slices hold the page itself, so
    /// that a snapshot's page is shared for as long as any scrape is sending it.
    fn around(self: &Arc<Self>, unpersisted: Bytes) -> [Bytes; 3] {
        let at = self.split;
        let whole = Bytes::from_owner(PageText(self.clone()));
        [whole.slice(..at), unpersisted, whole.slice(at..)]
    }

    /// The gzip parts, compressed by the first scrape that asks (off the async workers) and
    /// shared by every other.
    async fn gzip(&self) -> Result<Arc<gzip::Parts>, MetricsError> {
        let text = self.text.clone();
        let at = self.split;
        self.gz
            .get_or_init(|| async move {
                let task = tokio::task::spawn_blocking(move || {
                    gzip::Parts::new(&text[..at], &text[at..], gzip::LEVEL)
                });
                match task.await {
                    Ok(r) => r.map(Arc::new).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("gzip task failed: {e}")),
                }
            })
            .await
            .clone()
            .map_err(|e| MetricsError(prometheus::Error::Msg(e)))
    }
}

/// What a checkpoint published: the exporter's own families and the job series exactly as
/// written, rendered only when a scrape asks. Holding these rather than the rendered page
/// costs a fraction of the page's memory (a job series takes about a quarter of its page
/// text), and a checkpoint every second no longer renders a page nobody reads.
pub struct Snapshot {
    own: Vec<prometheus::proto::MetricFamily>,
    series: BTreeMap<String, jobs::ProjectSeries>,
    /// The page rendered from this snapshot while a scrape still holds it: scrapes close
    /// together share it; once the last is sent it is freed, not kept for the next.
    page: Mutex<std::sync::Weak<Page>>,
}

impl Snapshot {
    pub fn new(
        own: Vec<prometheus::proto::MetricFamily>,
        series: BTreeMap<String, jobs::ProjectSeries>,
    ) -> Self {
        Self {
            own,
            series,
            page: Mutex::new(std::sync::Weak::new()),
        }
    }
}

/// What `/metrics` serves with persistence on: a page, or a snapshot rendered on demand.
#[derive(Clone)]
enum Published {
    Page(Arc<Page>),
    Snapshot(Arc<Snapshot>),
}

/// Where a page is rendered from: live values, or a published snapshot.
#[derive(Clone)]
enum Source {
    Live,
    Snapshot(Arc<Snapshot>),
}

impl Source {
    fn same(&self, other: &Source) -> bool {
        match (self, other) {
            (Source::Live, Source::Live) => true,
            (Source::Snapshot(a), Source::Snapshot(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Failure reasons GitLab documents (`shared/gitlab-api-notes.md`): always kept as labels.
pub const KNOWN_FAILURE_REASONS: &[&str] = &[
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "missing_dependency_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
    "forward_deployment_failure",
    "user_blocked",
    "project_deleted",
    "ci_quota_exceeded",
    "pipeline_loop_detected",
    "no_matching_runner",
    "trace_size_exceeded",
    "builds_disabled",
    "environment_creation_failure",
    "deployment_rejected",
    "failed_outdated_deployment_job",
    "job_execution_server_timeout",
    "stuck_pending_with_matching_runners",
    "runner_configuration_error",
    "runner_interrupted",
];
/// Failure reasons outside that list kept verbatim (GitLab adds some in new versions), at most;
/// further ones, and any that does not look like one, are shown as [`OTHER_FAILURE_REASON`].
pub const MAX_NEW_FAILURE_REASONS: usize = 20;
pub const OTHER_FAILURE_REASON: &str = "other";
/// The `status` label of every status outside GitLab's 13.
pub const UNKNOWN_STATUS: &str = "unknown";
/// Distinct raw unknown statuses logged, at most (each once).
const MAX_LOGGED_STATUSES: usize = 32;

/// The exact Content-Type of the text exposition format (Prometheus 3 insists on it).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub struct Metrics {
    registry: Registry,
    /// Job series per project (`path_with_namespace`).
    jobs: Mutex<BTreeMap<String, jobs::ProjectSeries>>,
    /// The exporter's own counters and histograms as saved before a restart.
    base: Mutex<carry::Carry>,
    /// With persistence: the page, or the snapshot it is rendered from, as of the last
    /// checkpoint, so no scrape ever sees a value that a crash could take back. `None`: serve
    /// live values. Shared, never copied, by every scrape.
    published: Mutex<Option<Published>>,
    /// The render in progress, if any, and what it renders: scrapes of the same source that
    /// arrive meanwhile share its page rather than each render (and hold) a page of their own.
    rendering: Mutex<Option<(Source, Arc<SharedRender>)>>,
    /// Metrics about the checkpoint itself: live, never published or carried (a failing
    /// checkpoint write must show even though the published page stays as it was).
    checkpoint_failures: prometheus::IntCounter,
    last_checkpoint: prometheus::Gauge,
    bounds: jobs::Bounds,
    /// The job families' labels under `labels.*`.
    layout: jobs::Layout,
    /// `limits.max_series` per job metric family.
    max_series: usize,
    /// The cap was reached (logged once).
    capped: AtomicBool,
    /// Not every GitLab sends `RateLimit-*`; the gauge is shown only once one arrived.
    api: own::Api,
    cycles: own::Polls,
    fleet: own::Fleet,
    hooks: own::Hooks,
    /// Classifying failed jobs (`failures.rs`).
    failures: failures::Own,
    /// `gitlab_ci_job_flaky_total`'s labels, and the flaky checks' own counters.
    flaky_layout: flaky::Layout,
    flaky: flaky::Own,
    rate_limit_seen: AtomicBool,
    /// Unknown statuses shown per project last time, so they can be removed when gone.
    shown_unknown: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Failure reasons outside [`KNOWN_FAILURE_REASONS`] admitted as labels so far.
    new_reasons: Mutex<BTreeSet<String>>,
    /// Raw unknown statuses already logged.
    logged_statuses: Mutex<BTreeSet<String>>,
    /// Requests to GitLab in the last minute (the status page).
    recent: recent::RecentRequests,
    /// Since start, for the log's summaries (see [`Metrics::totals`]).
    jobs_counted: AtomicU64,
    requests_sent: AtomicU64,
}

/// What the exporter did since start (not carried across restarts): for the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Completed jobs counted (polled or hooked).
    pub jobs_counted: u64,
    /// Requests sent to GitLab (each attempt, whatever the answer).
    pub requests: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// Resolves a labelled child without panicking; logs and returns `None` on a label mismatch.
fn with<T: Metric + Clone>(
    vec: &prometheus::core::MetricVec<impl prometheus::core::MetricVecBuilder<M = T>>,
    labels: &[&str],
) -> Option<T> {
    match vec.get_metric_with_label_values(labels) {
        Ok(m) => Some(m),
        Err(e) => {
            error!(error = %e, labels = %labels.join(","), "metric label mismatch (a bug)");
            None
        }
    }
}

impl Metrics {
    pub fn new(
        cfg: &MetricsSettings,
        max_series: usize,
        labels: &crate::labels::LabelsConfig,
    ) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let api = own::Api::new(&registry)?;
        let cycles = own::Polls::new(&registry)?;
        let fleet = own::Fleet::new(&registry)?;
        let hooks = own::Hooks::new(&registry)?;
        let failures = failures::Own::new(&registry)?;
        let flaky = flaky::Own::new(&registry)?;
        let checkpoint_failures = prometheus::IntCounter::new(
            "gitlab_jobs_exporter_checkpoint_failures_total",
            "Checkpoint writes to state.dir that failed; meanwhile /metrics keeps showing the values of the last checkpoint written.",
        )?;
        let last_checkpoint = prometheus::Gauge::new(
            "gitlab_jobs_exporter_last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint written to state.dir (the time of the values /metrics shows).",
        )?;
        Ok(Self {
            registry,
            jobs: Mutex::new(BTreeMap::new()),
            base: Mutex::new(carry::Carry::new()),
            published: Mutex::new(None),
            rendering: Mutex::new(None),
            checkpoint_failures,
            last_checkpoint,
            max_series,
            capped: AtomicBool::new(false),
            bounds: jobs::Bounds {
                duration: cfg.duration_buckets.as_slice().to_vec(),
                queued: cfg.queued_buckets.as_slice().to_vec(),
            },
            layout: jobs::Layout::new(labels),
            api,
            cycles,
            fleet,
            hooks,
            failures,
            flaky_layout: flaky::Layout::new(labels),
            flaky,
            rate_limit_seen: AtomicBool::new(false),
            shown_unknown: Mutex::new(BTreeMap::new()),
            new_reasons: Mutex::new(BTreeSet::new()),
            logged_statuses: Mutex::new(BTreeSet::new()),
            recent: recent::RecentRequests::default(),
            jobs_counted: AtomicU64::new(0),
            requests_sent: AtomicU64::new(0),
        })
    }

    /// Applies tracker events of one project.
    pub fn apply(&self, project: &str, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let completed = events
            .iter()
            .filter(|e| matches!(e, Event::Completed { .. }))
            .count();
        self.jobs_counted
            .fetch_add(completed as u64, Ordering::Relaxed);
        let events = self.bound_failure_reasons(events);
        let events = &events[..];
        let mut jobs = self.lock_jobs();
        let mut room = jobs::Room {
            max: self.max_series,
            used: series_used(&jobs),
            folded: false,
        };
        jobs.entry(project.to_string()).or_default().apply(
            events,
            &self.bounds,
            &self.layout,
            &mut room,
        );
        if events.iter().any(|e| matches!(e, Event::Flaky { .. })) {
            let used = flaky::used(&jobs);
            if let Some(series) = jobs.get_mut(project) {
                room.folded |= flaky::apply(
                    &mut series.flaky,
                    events,
                    &self.flaky_layout,
                    self.max_series,
                    used,
                );
            }
        }
        if room.folded && !self.capped.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                max_series = self.max_series,
                "a job metric reached limits.max_series; new series are folded into job=\"__other__\" (with job dropped: ref, stage and runner)"
            );
        }
    }

    /// `events` with every failure reason a bounded label value: GitLab's known reasons, and up
    /// to [`MAX_NEW_FAILURE_REASONS`] others that look like one (each logged once), the rest
    /// [`OTHER_FAILURE_REASON`]. A GitLab inventing a reason per job cannot grow the series.
    fn bound_failure_reasons<'e>(&self, events: &'e [Event]) -> std::borrow::Cow<'e, [Event]> {
        let keep = |r: &str| r.is_empty() || KNOWN_FAILURE_REASONS.contains(&r);
        let unusual = |e: &Event| matches!(e, Event::Completed { failure_reason, .. } if !keep(failure_reason));
        if !events.iter().any(unusual) {
            return std::borrow::Cow::Borrowed(events);
        }
        let mut admitted = lock(&self.new_reasons);
        let mut events = events.to_vec();
        for e in &mut events {
            let Event::Completed { failure_reason, .. } = e else {
                continue;
            };
            if keep(failure_reason) || admitted.contains(failure_reason.as_str()) {
                continue;
            }
            let plausible = failure_reason.len() <= 64
                && failure_reason
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if plausible && admitted.len() < MAX_NEW_FAILURE_REASONS {
                tracing::info!(failure_reason = %failure_reason, "a failure reason not in GitLab's documented list; kept as a label");
                admitted.insert(failure_reason.clone());
            } else {
                tracing::warn!(failure_reason = %crate::model::text::Bounded(failure_reason),
                    "an unusual failure reason (or too many new ones); counted as failure_reason=\"other\"");
                *failure_reason = OTHER_FAILURE_REASON.to_string();
            }
        }
        std::borrow::Cow::Owned(events)
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, jobs::ProjectSeries>> {
        lock(&self.jobs)
    }

    /// A copy of one project's job series (for a checkpoint).
    pub fn project_series(&self, project: &str) -> jobs::ProjectSeries {
        self.lock_jobs().get(project).cloned().unwrap_or_default()
    }

    /// Puts back a project's job series from a checkpoint; histograms whose buckets no longer
    /// match the configuration are dropped (and reported).
    pub fn restore_project_series(&self, project: &str, mut series: jobs::ProjectSeries) -> usize {
        let dropped = series.drop_mismatched(&self.bounds, &self.layout)
            + flaky::restored(&mut series.flaky, &self.flaky_layout);
        series.label(&self.layout);
        self.lock_jobs().insert(project.to_string(), series);
        dropped
    }

    /// Sets the active gauges of one project: every known non-final status (0 when none), plus
    /// `status="unknown"` for all statuses outside GitLab's 13 together while there are some
    /// (each raw value logged once), so the label values stay bounded.
    pub fn set_active(
        &self,
        project: &str,
        counts: &BTreeMap<JobStatus, u64>,
        oldest_pending: Option<f64>,
    ) {
        for s in JobStatus::NON_FINAL {
            if let Some(g) = with(&self.cycles.jobs_active, &[project, s.as_str()]) {
                g.set(counts.get(&s).copied().unwrap_or(0) as i64);
            }
        }
        let mut unknown_jobs = 0;
        for (s, n) in counts {
            if let JobStatus::Unknown(raw) = s {
                unknown_jobs += n;
                self.log_unknown_status(raw);
            }
        }
        let unknown: BTreeSet<String> = (unknown_jobs > 0)
            .then(|| UNKNOWN_STATUS.to_string())
            .into_iter()
            .collect();
        for s in &unknown {
            if let Some(g) = with(&self.cycles.jobs_active, &[project, s]) {
                g.set(unknown_jobs as i64);
            }
        }
        let mut shown = self
            .shown_unknown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = shown.insert(project.to_string(), unknown.clone());
        for gone in before.unwrap_or_default().difference(&unknown) {
            let _ = self
                .cycles
                .jobs_active
                .remove_label_values(&[project, gone]);
        }
        match oldest_pending {
            Some(t) => {
                if let Some(g) = with(&self.cycles.oldest_pending, &[project]) {
                    g.set(t);
                }
            }
            None => {
                let _ = self.cycles.oldest_pending.remove_label_values(&[project]);
            }
        }
    }

    fn log_unknown_status(&self, raw: &str) {
        let mut logged = lock(&self.logged_statuses);
        if logged.len() < MAX_LOGGED_STATUSES && logged.insert(raw.to_string()) {
            tracing::warn!(status = %crate::model::text::Bounded(raw),
                "a job status outside GitLab's 13 known ones; shown as status=\"unknown\"");
        }
    }

    /// What the exporter did since start.
    pub fn totals(&self) -> Totals {
        Totals {
            jobs_counted: self.jobs_counted.load(Ordering::Relaxed),
            requests: self.requests_sent.load(Ordering::Relaxed),
        }
    }

    pub fn observe_request(&self, endpoint: &str, code: &str, seconds: f64) {
        self.recent.record_at(std::time::Instant::now());
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        if let Some(c) = with(&self.api.api_requests, &[endpoint, code]) {
            c.inc();
        }
        if let Some(h) = with(&self.api.api_duration, &[endpoint]) {
            h.observe(seconds);
        }
    }

    pub fn api_error(&self, kind: &str) {
        if let Some(c) = with(&self.api.api_errors, &[kind]) {
            c.inc();
        }
    }

    /// Requests to GitLab in the last minute, and the seconds that covers (under a minute
    /// just after start).
    pub fn requests_last_minute(&self) -> (u64, u64) {
        let now = std::time::Instant::now();
        (
            self.recent.last_minute_at(now),
            self.recent.window_secs_at(now),
        )
    }

    /// The last `RateLimit-Remaining` GitLab sent, if any.
    pub fn last_rate_limit_remaining(&self) -> Option<f64> {
        self.rate_limit_seen
            .load(Ordering::Relaxed)
            .then(|| self.api.rate_limit_remaining.get())
    }

    /// Jobs counted per project label (`gitlab_ci_jobs_total` summed, restored counts
    /// included): O(series), under the jobs lock.
    pub fn jobs_counted(&self) -> std::collections::HashMap<String, u64> {
        self.lock_jobs()
            .iter()
            .map(|(project, s)| (project.clone(), s.total.values().sum()))
            .collect()
    }

    pub fn rate_limit_remaining(&self, remaining: f64) {
        self.api.rate_limit_remaining.set(remaining);
        self.rate_limit_seen.store(true, Ordering::Relaxed);
    }

    /// Freshness of a job counted; `source`: `webhook` or `poll`.
    pub fn observe_lag(&self, source: &str, seconds: f64) {
        if seconds.is_finite()
            && let Some(h) = with(&self.cycles.poll_lag, &[source])
        {
            h.observe(seconds.max(0.0));
        }
    }

    /// A webhook delivery and what became of it.
    pub fn webhook_event(&self, event: &str, result: &str) {
        if let Some(c) = with(&self.hooks.events, &[event, result]) {
            c.inc();
        }
    }

    pub fn webhook_missed(&self, project: &str, completions: u64) {
        if let Some(c) = with(&self.hooks.missed, &[project]) {
            c.inc_by(completions);
        }
    }

    /// A hook came for `project` at `now_unix`.
    pub fn webhook_received(&self, project: &str, now_unix: f64) {
        if let Some(g) = with(&self.hooks.last_received, &[project]) {
            g.set(now_unix);
        }
        // Shown from the first hook on, so increase() sees the first miss.
        let _ = with(&self.hooks.missed, &[project]);
    }

    /// A project moved between webhook states (`receiving`, `silent`; `None`: none).
    pub fn webhook_project_state(&self, from: Option<&str>, to: Option<&str>) {
        if from == to {
            return;
        }
        if let Some(g) = from.and_then(|s| with(&self.hooks.projects, &[s])) {
            g.dec();
        }
        if let Some(g) = to.and_then(|s| with(&self.hooks.projects, &[s])) {
            g.inc();
        }
    }

    pub fn set_project_state(&self, project: &str, state: &str, all: &[&str]) {
        for s in all {
            if let Some(g) = with(&self.cycles.project_state, &[project, s]) {
                g.set(i64::from(*s == state));
            }
        }
    }

    pub fn rate_limited(&self, seconds: f64) {
        self.api.rate_limited_seconds.inc_by(seconds.max(0.0));
    }

    pub fn poll_started(&self, project: &str) {
        if let Some(c) = with(&self.cycles.polls, &[project]) {
            c.inc();
        }
        // Make the error series exist from the start, so rate() sees the first error.
        let _ = with(&self.cycles.poll_errors, &[project]);
    }

    pub fn poll_finished(&self, project: &str, ok: bool, now_unix: f64) {
        if ok {
            if let Some(g) = with(&self.cycles.last_success, &[project]) {
                g.set(now_unix);
            }
        } else if let Some(c) = with(&self.cycles.poll_errors, &[project]) {
            c.inc();
        }
    }

    pub fn set_watched(&self, projects: usize) {
        self.fleet.watched.set(projects as i64);
    }

    pub fn set_never_polled(&self, projects: usize) {
        self.fleet.never_polled.set(projects as i64);
    }

    /// Removes a project's poll counters and state (shown under its configured path before
    /// its lookup showed it to be another shard's).
    pub fn forget_polls(&self, project: &str, states: &[&str]) {
        let _ = self.cycles.polls.remove_label_values(&[project]);
        let _ = self.cycles.poll_errors.remove_label_values(&[project]);
        self.remove_project_gauges(project, states);
    }

    /// `(activity, projects, stretch)` per activity, and demand over budget.
    pub fn set_pace(&self, by_activity: &[(&str, usize, f64)], demand_ratio: f64) {
        for (activity, projects, stretch) in by_activity {
            if let Some(g) = with(&self.fleet.paced, &[activity]) {
                g.set(*projects as i64);
            }
            if let Some(g) = with(&self.fleet.stretch, &[activity]) {
                g.set(*stretch);
            }
        }
        self.fleet.demand.set(demand_ratio);
    }

    pub fn discovery_ran(&self, complete: bool) {
        let result = if complete { "complete" } else { "incomplete" };
        if let Some(c) = with(&self.fleet.discovery_runs, &[result]) {
            c.inc();
        }
    }

    pub fn set_project_limit_reached(&self, reached: bool) {
        self.fleet.project_limit.set(i64::from(reached));
    }

    /// Moves a project's series to its new path (renamed or transferred in GitLab): the job
    /// series and the carried own counters continue under `new`; the gauges under `old` go
    /// (the next cycle sets them under `new`). Returns false, changing nothing, when `new`
    /// already has job series (another project showed there).
    pub fn rename_project(&self, old: &str, new: &str, states: &[&str]) -> bool {
        {
            let mut jobs = self.lock_jobs();
            if jobs.contains_key(new) {
                return false;
            }
            if let Some(series) = jobs.remove(old) {
                jobs.insert(new.to_string(), series);
            }
        }
        for family in lock(&self.base).values_mut() {
            let moved: Vec<_> = family
                .series
                .keys()
                .filter(|labels| labels.iter().any(|(k, v)| k == "project" && v == old))
                .cloned()
                .collect();
            for labels in moved {
                if let Some(value) = family.series.remove(&labels) {
                    let renamed = labels
                        .into_iter()
                        .map(|(k, v)| {
                            let v = if k == "project" { new.to_string() } else { v };
                            (k, v)
                        })
                        .collect();
                    family.series.insert(renamed, value);
                }
            }
        }
        // The live own counters restart under the new label; their totals so far become its
        // carried base, so nothing goes down.
        for (vec, name, help) in [
            (
                &self.cycles.polls,
                "gitlab_jobs_exporter_polls_total",
                POLLS_HELP,
            ),
            (
                &self.cycles.poll_errors,
                "gitlab_jobs_exporter_poll_errors_total",
                POLL_ERRORS_HELP,
            ),
        ] {
            if let Ok(c) = vec.get_metric_with_label_values(&[old]) {
                let value = c.get() as f64;
                let mut base = lock(&self.base);
                let family = base.entry(name.to_string()).or_default();
                family.help = help.to_string();
                let entry = family
                    .series
                    .entry(vec![("project".to_string(), new.to_string())])
                    .or_default();
                entry.value += value;
            }
        }
        self.remove_project_gauges(old, states);
        let _ = self.cycles.polls.remove_label_values(&[old]);
        let _ = self.cycles.poll_errors.remove_label_values(&[old]);
        true
    }

    fn remove_project_gauges(&self, project: &str, states: &[&str]) {
        let mut statuses: Vec<String> = JobStatus::NON_FINAL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        if let Some(unknown) = lock(&self.shown_unknown).remove(project) {
            statuses.extend(unknown);
        }
        for s in &statuses {
            let _ = self.cycles.jobs_active.remove_label_values(&[project, s]);
        }
        let _ = self.cycles.oldest_pending.remove_label_values(&[project]);
        let _ = self.cycles.last_success.remove_label_values(&[project]);
        let _ = self.hooks.last_received.remove_label_values(&[project]);
        for s in states {
            let _ = self.cycles.project_state.remove_label_values(&[project, s]);
        }
    }

    /// Removes every series of a project that is no longer watched (its grace period is
    /// over), including the carried base of its own counters.
    pub fn remove_project(&self, project: &str, states: &[&str]) {
        self.lock_jobs().remove(project);
        self.remove_project_gauges(project, states);
        let _ = self.cycles.polls.remove_label_values(&[project]);
        let _ = self.cycles.poll_errors.remove_label_values(&[project]);
        let _ = self.hooks.missed.remove_label_values(&[project]);
        for family in lock(&self.base).values_mut() {
            family
                .series
                .retain(|labels, _| !labels.iter().any(|(k, v)| k == "project" && v == project));
        }
    }

    pub fn add_tracked_jobs(&self, delta: i64) {
        self.cycles.tracked_jobs.add(delta);
    }

    /// The exporter's own families, live values plus the carried base.
    pub fn own_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let (used, flaky_used, failures_used) = {
            let jobs = self.lock_jobs();
            let failures: usize = jobs.values().map(|s| s.failures.len()).sum();
            (series_used(&jobs), flaky::used(&jobs), failures)
        };
        for (name, n) in [jobs::JOBS_TOTAL, jobs::DURATION, jobs::QUEUED]
            .iter()
            .zip(used)
            .chain([
                (&flaky::FLAKY_TOTAL, flaky_used),
                (&failures::FAILURES_TOTAL, failures_used),
            ])
        {
            if let Some(g) = with(&self.fleet.series, &[name]) {
                g.set(n as i64);
            }
        }
        let mut families = self.registry.gather();
        // Registered lazily: the gauge appears once GitLab has sent the header at least once.
        if self.rate_limit_seen.load(Ordering::Relaxed) {
            families.extend(self.api.rate_limit_remaining.collect());
        }
        carry::add_base(&mut families, &lock(&self.base));
        families
    }

    /// Sets the base of the own counters and histograms (from a checkpoint).
    pub fn set_base(&self, mut base: carry::Carry) {
        // Before webhooks, the freshness histogram had no `source` label (and fewer buckets):
        // those series restart rather than mix two label sets in one family.
        if let Some(lag) = base.get_mut("gitlab_jobs_exporter_poll_lag_seconds") {
            lag.series
                .retain(|labels, _| labels.iter().any(|(k, _)| k == "source"));
        }
        *lock(&self.base) = base;
    }

    /// The `/metrics` page: as of the last checkpoint when persistence is on, else live.
    pub fn render(&self) -> Result<String, MetricsError> {
        let published = lock(&self.published).clone();
        let page = match published {
            Some(Published::Page(page)) => page,
            Some(Published::Snapshot(s)) => Arc::new(self.render_source(&Source::Snapshot(s))?),
            None => Arc::new(self.render_live()?),
        };
        Ok(page
            .around(self.render_unpersisted()?)
            .iter()
            .map(|b| String::from_utf8_lossy(b))
            .collect())
    }

    /// The `/metrics` page in shared chunks (concatenated, they are [`Metrics::render`]).
    /// Scrapes arriving while a live render runs share its bytes: a burst of scrapes of a
    /// large page costs one render and one copy of the page, not one per scrape.
    pub async fn scrape(self: &Arc<Self>) -> Result<[Bytes; 3], MetricsError> {
        let page = self.page().await?;
        Ok(page.around(self.render_unpersisted()?))
    }

    /// The `/metrics` body as sent: the page's chunks, or, with `gzip`, one gzip member in
    /// chunks (the page compressed once and shared by every scrape of it).
    pub async fn scrape_as(self: &Arc<Self>, gzip: bool) -> Result<Vec<Bytes>, MetricsError> {
        let page = self.page().await?;
        let unpersisted = self.render_unpersisted()?;
        if !gzip {
            return Ok(page.around(unpersisted).into());
        }
        let parts = page.gzip().await?;
        parts
            .around(&unpersisted, gzip::LEVEL)
            .map(Vec::from)
            .map_err(|e| MetricsError(prometheus::Error::Msg(e.to_string())))
    }

    /// The published page (rendered from the published snapshot if no scrape holds it
    /// already), or a live one; shared by concurrent scrapes.
    async fn page(self: &Arc<Self>) -> Result<Arc<Page>, MetricsError> {
        // Bound first: the guard must be gone before the await.
        let published = lock(&self.published).clone();
        match published {
            Some(Published::Page(page)) => Ok(page),
            Some(Published::Snapshot(s)) => {
                let held = lock(&s.page).upgrade();
                if let Some(page) = held {
                    return Ok(page);
                }
                let page = self.shared_render(Source::Snapshot(s.clone())).await?;
                *lock(&s.page) = Arc::downgrade(&page);
                Ok(page)
            }
            None => self.shared_render(Source::Live).await,
        }
    }

    async fn shared_render(self: &Arc<Self>, source: Source) -> Result<Arc<Page>, MetricsError> {
        let cell = {
            let mut rendering = lock(&self.rendering);
            match rendering.as_ref() {
                Some((running, cell)) if running.same(&source) => cell.clone(),
                // Nothing running, or another source's render: this one starts its own.
                _ => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    *rendering = Some((source.clone(), cell.clone()));
                    cell
                }
            }
        };
        let metrics = self.clone();
        let result = cell
            .get_or_init(|| async move {
                // Rendering a large page is CPU work: off the async workers.
                match tokio::task::spawn_blocking(move || metrics.render_source(&source)).await {
                    Ok(r) => r.map(Arc::new).map_err(|e| e.to_string()),
                    Err(e) => Err(format!("render task failed: {e}")),
                }
            })
            .await
            .clone();
        // Done: the next scrape renders afresh (unless another already did this).
        let mut rendering = lock(&self.rendering);
        if rendering
            .as_ref()
            .is_some_and(|(_, c)| Arc::ptr_eq(c, &cell))
        {
            *rendering = None;
        }
        drop(rendering);
        result.map_err(|e| MetricsError(prometheus::Error::Msg(e)))
    }

    /// The page from live values.
    fn render_live(&self) -> Result<Page, MetricsError> {
        // Own families first: gathering them takes the jobs lock too.
        let own = self.own_families();
        // Render under the lock rather than copy every series per scrape.
        let (text, split) = self.write_page(&own, &*self.lock_jobs())?;
        Ok(Page::new(Bytes::from(text), split))
    }

    fn render_source(&self, source: &Source) -> Result<Page, MetricsError> {
        match source {
            Source::Live => self.render_live(),
            Source::Snapshot(s) => {
                let (text, split) = self.write_page(&s.own, &s.series)?;
                Ok(Page::new(Bytes::from(text), split))
            }
        }
    }

    /// The metrics that are never published from a checkpoint (see `checkpoint_failures`).
    fn render_unpersisted(&self) -> Result<Bytes, MetricsError> {
        let mut families = self.checkpoint_failures.collect();
        if self.last_checkpoint.get() > 0.0 {
            families.extend(self.last_checkpoint.collect());
        }
        let mut buf = Vec::new();
        TextEncoder::new().encode(&families, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// A checkpoint write failed.
    pub fn checkpoint_failed(&self) {
        self.checkpoint_failures.inc();
    }

    /// How many checkpoint writes failed since start.
    pub fn checkpoint_failures(&self) -> u64 {
        self.checkpoint_failures.get()
    }

    /// Renders the given own families and job series.
    pub fn render_with(
        &self,
        families: Vec<prometheus::proto::MetricFamily>,
        jobs: &BTreeMap<String, jobs::ProjectSeries>,
    ) -> Result<String, MetricsError> {
        self.render_projects(families, jobs)
    }

    /// [`Metrics::render_with`] for job series held elsewhere (a checkpoint's, borrowed).
    pub fn render_projects(
        &self,
        families: Vec<prometheus::proto::MetricFamily>,
        jobs: &impl text::Projects,
    ) -> Result<String, MetricsError> {
        let (text, _) = self.write_page(&families, jobs)?;
        String::from_utf8(text).map_err(|e| MetricsError(prometheus::Error::Msg(e.to_string())))
    }

    /// The page's text and where its first histogram family begins. What a reader looks for
    /// first: the job counter, then the gauges and counters; the hundreds of histogram bucket
    /// lines last (families sorted by [`rank`], then name). The own families go through the
    /// `prometheus` crate's encoder; the job families are written straight from their series
    /// ([`text`]) into one buffer sized beforehand, so rendering holds about one page.
    fn write_page(
        &self,
        families: &[prometheus::proto::MetricFamily],
        jobs: &impl text::Projects,
    ) -> Result<(Vec<u8>, usize), MetricsError> {
        enum Part {
            Own(Vec<u8>),
            Job(text::Family),
        }
        let mut parts = Vec::with_capacity(families.len() + 3);
        let failures = failures::family(jobs, &self.layout);
        for f in families.iter().chain(failures.as_ref()) {
            let mut text = Vec::new();
            TextEncoder::new().encode(std::slice::from_ref(f), &mut text)?;
            let histogram = f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM;
            parts.push((rank(f), f.name().to_string(), histogram, Part::Own(text)));
        }
        for f in text::Family::ALL {
            if !f.is_empty(jobs) {
                let rank = if f.is_histogram() { 3 } else { 0 };
                parts.push((rank, f.name().to_string(), f.is_histogram(), Part::Job(f)));
            }
        }
        if let Some(t) = flaky::render(jobs, &self.flaky_layout) {
            // Ranked as `rank` ranks the other gitlab_ci_ counters.
            parts.push((1, flaky::FLAKY_TOTAL.to_string(), false, Part::Own(t)));
        }
        parts.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut len = text::Len::default();
        for (.., part) in &parts {
            match part {
                Part::Own(t) => len.0 += t.len(),
                Part::Job(f) => f.write(&mut len, jobs, &self.bounds, &self.layout),
            }
        }
        let mut page = Vec::with_capacity(len.0);
        let mut split = None;
        for (_, _, histogram, part) in parts {
            if histogram && split.is_none() {
                split = Some(page.len());
            }
            match part {
                Part::Own(t) => page.extend_from_slice(&t),
                Part::Job(f) => f.write(&mut page, jobs, &self.bounds, &self.layout),
            }
        }
        let split = split.unwrap_or(page.len());
        Ok((page, split))
    }

    /// From now on `/metrics` serves `page` (rendered from a checkpoint just written at
    /// `written_unix`).
    pub fn publish(&self, page: String, written_unix: f64) {
        let text = Bytes::from(page);
        let split = histograms_start(&text);
        *lock(&self.published) = Some(Published::Page(Arc::new(Page::new(text, split))));
        self.last_checkpoint.set(written_unix);
    }

    /// From now on `/metrics` serves the page of `snapshot` (the own families and job series
    /// of a checkpoint just written at `written_unix`), rendered when a scrape asks.
    pub fn publish_snapshot(&self, snapshot: Snapshot, written_unix: f64) {
        *lock(&self.published) = Some(Published::Snapshot(Arc::new(snapshot)));
        self.last_checkpoint.set(written_unix);
    }
}

/// Where a family goes on the page (see [`Metrics::render_with`]).
fn rank(family: &prometheus::proto::MetricFamily) -> u8 {
    use prometheus::proto::MetricType;
    match family.get_field_type() {
        MetricType::HISTOGRAM | MetricType::SUMMARY => 3,
        _ if family.name() == "gitlab_ci_jobs_total" => 0,
        _ if family.name().starts_with("gitlab_ci_") => 1,
        _ => 2,
    }
}

/// Where the first histogram family (its `# HELP` line) begins in a page rendered by
/// [`Metrics::render_with`]; the page's length when it has none.
fn histograms_start(page: &[u8]) -> usize {
    let mut offset = 0;
    let mut help = None;
    for line in page.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"# HELP ") {
            help = Some(offset);
        } else if line.starts_with(b"# TYPE ") && line.trim_ascii_end().ends_with(b" histogram") {
            return help.unwrap_or(offset);
        } else if !line.starts_with(b"#") {
            help = None;
        }
        offset += line.len();
    }
    page.len()
}

/// Series per job family (counter, duration, queued) over all projects.
fn series_used(jobs: &BTreeMap<String, jobs::ProjectSeries>) -> [usize; 3] {
    jobs.values().fold([0; 3], |[t, d, q], s| {
        [t + s.total.len(), d + s.duration.len(), q + s.queued.len()]
    })
}

/// Locks a mutex whose data stays valid even if a holder panicked (plain values only).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
