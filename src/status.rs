//! The status page: `/` (HTML) and `/status.json`, the page an operator opens first.
//!
//! One [`Snapshot`] feeds both: the mode, the GitLab URL (credentials, query and fragment
//! stripped), readiness and why, health, the request budget and pacing, webhooks, and one row
//! per project (failing ones first). It is taken per request in O(projects) from read-only
//! views (the fleet's [`Scheduler::view`], the metrics' job counts): short locks one at a time,
//! none across an `.await`, no cycle waited for. The HTML is plain, self-contained (no external
//! asset, no script: it works air-gapped) and escapes every string (see [`html`]).

pub mod html;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{ProjectRef, Settings};
use crate::fleet::runner::{ProjectView, Readiness, Scheduler};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::project::cycle::ProjectState;
use crate::project::hooks::HookState;

/// Project rows on the HTML page, at most (the rest are counted, and in `/status.json`).
pub const MAX_HTML_ROWS: usize = 500;
/// Project rows in `/status.json`, at most (`limits.max_projects` is 20,000 by default).
pub const MAX_JSON_ROWS: usize = 20_000;
/// Projects named in the readiness reason, at most.
const MAX_NAMED_WAITING: usize = 5;

/// Set once by `--demo`: the status page says the GitLab is the simulator.
static DEMO: AtomicBool = AtomicBool::new(false);

/// The process runs `--demo` (against the built-in simulator).
pub fn mark_demo() {
    DEMO.store(true, Ordering::Relaxed);
}

/// What the status page is made from.
pub struct Status {
    scheduler: Arc<Scheduler>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    health: Arc<Health>,
    gitlab_url: String,
    budget_per_minute: f64,
    webhooks: bool,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("gitlab_url", &self.gitlab_url)
            .finish_non_exhaustive()
    }
}

/// A point in time: unix seconds and the same in UTC, as text.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct When {
    pub unix: f64,
    pub utc: String,
}

impl When {
    pub fn at(unix: f64) -> Self {
        let utc = DateTime::<Utc>::from_timestamp_millis((unix * 1000.0) as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        Self { unix, utc }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub version: &'static str,
    /// `demo` (the built-in simulator) or `gitlab`.
    pub mode: &'static str,
    pub gitlab_url: String,
    pub generated: When,
    pub ready: ReadyStatus,
    pub health: HealthStatus,
    pub budget: Budget,
    pub webhooks: Webhooks,
    /// Every watched project (also those not listed in `projects`).
    pub projects_total: usize,
    /// Projects per state (keys as in [`RowState`]).
    pub projects_by_state: BTreeMap<&'static str, usize>,
    /// Failing first, then by name; at most the page's cap.
    pub projects: Vec<ProjectRow>,
    /// Projects left out of `projects` by the cap.
    pub projects_not_shown: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReadyStatus {
    pub ready: bool,
    /// Why (or why not), in a sentence.
    pub reason: String,
    /// Projects (and the first discovery pass) done with their first poll, of all.
    pub done: usize,
    pub total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthStatus {
    pub healthy: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Budget {
    /// `gitlab.max_requests_per_minute`.
    pub requests_per_minute: f64,
    /// Requests sent in the last `window_seconds` (a minute, less just after start).
    pub requests_last_minute: u64,
    pub window_seconds: u64,
    /// What polling every project at its target interval would take.
    pub demand_per_minute: f64,
    /// Delays are multiplied by these to fit the budget (1: not stretched).
    pub stretch_busy: f64,
    pub stretch_idle: f64,
    pub busy_projects: usize,
    pub idle_projects: usize,
    pub poll_interval_seconds: f64,
    pub max_interval_seconds: f64,
    /// `RateLimit-Remaining` as GitLab last sent it.
    pub rate_limit_remaining: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Webhooks {
    pub enabled: bool,
    pub receiving: usize,
    pub silent: usize,
    /// Polled only every `reconcile_interval_seconds` while their hooks arrive.
    pub reconcile_interval_seconds: Option<f64>,
    pub last_received: Option<When>,
}

/// A project's state on the page, most urgent first.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum RowState {
    Failing,
    Unauthorized,
    Forbidden,
    NotFound,
    /// Not polled since start yet (restored from a checkpoint).
    Starting,
    /// On its first cycle ever: reading the backfill window.
    Backfilling,
    /// Hooks arrived, then a poll found what they missed: polled normally.
    HooksSilent,
    /// Hooks arrive: polled only to reconcile.
    ReceivingHooks,
    Ok,
    /// Another shard's project.
    Elsewhere,
}

impl RowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failing => "failing",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Starting => "starting",
            Self::Backfilling => "backfilling",
            Self::HooksSilent => "hooks_silent",
            Self::ReceivingHooks => "receiving_hooks",
            Self::Ok => "ok",
            Self::Elsewhere => "elsewhere",
        }
    }

    /// As the HTML page says it.
    pub fn text(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::HooksSilent => "hooks silent",
            Self::ReceivingHooks => "receiving hooks",
            Self::Elsewhere => "another shard's",
            s => s.as_str(),
        }
    }

    /// Something an operator should look at.
    pub fn is_problem(self) -> bool {
        self <= Self::NotFound
    }

    fn of(p: &ProjectView) -> Self {
        match p.state {
            ProjectState::Failing => Self::Failing,
            ProjectState::Unauthorized => Self::Unauthorized,
            ProjectState::Forbidden => Self::Forbidden,
            ProjectState::NotFound => Self::NotFound,
            ProjectState::Elsewhere => Self::Elsewhere,
            ProjectState::Ok if p.backfilling => Self::Backfilling,
            ProjectState::Ok if p.last_success.is_none() => Self::Starting,
            ProjectState::Ok => match p.hooks {
                HookState::Receiving => Self::ReceivingHooks,
                HookState::Silent => Self::HooksSilent,
                HookState::None => Self::Ok,
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectRow {
    /// `path_with_namespace`, or before the lookup the project as configured
    /// (`project id 42`): never a made-up path.
    pub name: String,
    pub path: Option<String>,
    pub id: Option<u64>,
    pub discovered: bool,
    pub state: RowState,
    /// Since start (our clock).
    pub last_success: Option<When>,
    /// `gitlab_ci_jobs_total` of the project, restored counts included.
    pub jobs_counted: u64,
    /// The delay planned before its next poll.
    pub interval_seconds: Option<f64>,
    pub last_error: Option<LastError>,
    pub last_hook: Option<When>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: When,
    /// Bounded (200 bytes) with control characters escaped.
    pub message: String,
}

/// `url` without user info, query and fragment (they may hold credentials); an unparsable
/// URL is not shown at all.
pub fn strip_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            // Only fails for URLs that cannot have user info (`mailto:`): none to strip then.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(not a valid URL)".to_string(),
    }
}

impl Status {
    pub fn new(cfg: &Settings, scheduler: Arc<Scheduler>, metrics: Arc<Metrics>) -> Self {
        Self {
            readiness: scheduler.readiness(),
            health: scheduler.health(),
            scheduler,
            metrics,
            gitlab_url: strip_credentials(cfg.gitlab.url.as_str()),
            budget_per_minute: cfg.gitlab.max_requests_per_minute,
            webhooks: cfg.webhook.is_some(),
        }
    }

    /// The status now, with at most `max_rows` project rows.
    pub fn snapshot(&self, max_rows: usize) -> Snapshot {
        let fleet = self.scheduler.view();
        let jobs = self.metrics.jobs_counted();
        let mut rows: Vec<ProjectRow> = fleet.projects.iter().map(|p| row(p, &jobs)).collect();
        rows.sort_by(|a, b| a.state.cmp(&b.state).then_with(|| a.name.cmp(&b.name)));
        let mut by_state = BTreeMap::new();
        for r in &rows {
            *by_state.entry(r.state.as_str()).or_insert(0) += 1;
        }
        let ready = self.ready(&fleet.projects, fleet.discovery);
        let webhooks = self.webhooks(&rows, fleet.reconcile_interval.map(|d| d.as_secs_f64()));
        let (used, window) = self.metrics.requests_last_minute();
        let pace = fleet.pace;
        let budget = Budget {
            requests_per_minute: self.budget_per_minute,
            requests_last_minute: used,
            window_seconds: window,
            demand_per_minute: pace.demand_per_second * 60.0,
            stretch_busy: pace.stretch.busy,
            stretch_idle: pace.stretch.idle,
            busy_projects: pace.busy_projects,
            idle_projects: pace.idle_projects,
            poll_interval_seconds: fleet.interval.as_secs_f64(),
            max_interval_seconds: fleet.max_interval.as_secs_f64(),
            rate_limit_remaining: self.metrics.last_rate_limit_remaining(),
        };
        let health = match self.health.check() {
            Ok(()) => HealthStatus {
                healthy: true,
                reason: None,
            },
            Err(reason) => HealthStatus {
                healthy: false,
                reason: Some(reason),
            },
        };
        let total = rows.len();
        rows.truncate(max_rows);
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            mode: if DEMO.load(Ordering::Relaxed) {
                "demo"
            } else {
                "gitlab"
            },
            gitlab_url: self.gitlab_url.clone(),
            generated: When::at(Utc::now().timestamp_millis() as f64 / 1000.0),
            ready,
            health,
            budget,
            webhooks,
            projects_total: total,
            projects_by_state: by_state,
            projects_not_shown: total - rows.len(),
            projects: rows,
        }
    }

    fn webhooks(&self, rows: &[ProjectRow], reconcile: Option<f64>) -> Webhooks {
        let count = |s: RowState| rows.iter().filter(|r| r.state == s).count();
        let last = rows
            .iter()
            .filter_map(|r| r.last_hook.as_ref())
            .max_by(|a, b| a.unix.total_cmp(&b.unix))
            .cloned();
        Webhooks {
            enabled: self.webhooks,
            receiving: count(RowState::ReceivingHooks),
            silent: count(RowState::HooksSilent),
            reconcile_interval_seconds: reconcile.filter(|_| self.webhooks),
            last_received: last,
        }
    }

    /// Readiness as `/readyz` answers it, and why: what it still waits for.
    fn ready(&self, projects: &[ProjectView], discovery: bool) -> ReadyStatus {
        let (done, total) = self.readiness.progress();
        let ready = self.readiness.is_ready();
        let reason = if ready {
            "ready: every project has completed its first poll (or was refused or found gone)"
                .to_string()
        } else {
            let mut why = vec![format!("{done} of {total} polled")];
            if discovery && !self.readiness.discovery_done() {
                why.push("the first complete discovery pass has not finished".into());
            }
            let waiting: Vec<&ProjectView> = projects
                .iter()
                .filter(|p| !p.counted_ready && !p.ended)
                .collect();
            for p in waiting.iter().take(MAX_NAMED_WAITING) {
                let state = RowState::of(p).text();
                why.push(match &p.last_error {
                    Some((_, e)) if RowState::of(p).is_problem() => {
                        format!("{} is {state} ({e})", name(p))
                    }
                    _ => format!("{} is {state}", name(p)),
                });
            }
            if waiting.len() > MAX_NAMED_WAITING {
                why.push(format!(
                    "and {} more projects",
                    waiting.len() - MAX_NAMED_WAITING
                ));
            }
            format!("not ready: {}", why.join("; "))
        };
        ReadyStatus {
            ready,
            reason,
            done,
            total,
        }
    }
}

/// The project's path, or before its lookup the project as configured.
fn name(p: &ProjectView) -> String {
    match (&p.resolved, &p.reference) {
        (Some((_, path)), _) => path.clone(),
        (None, ProjectRef::Path(path)) => path.clone(),
        (None, ProjectRef::Id(id)) => format!("project id {id}"),
    }
}

fn row(p: &ProjectView, jobs: &std::collections::HashMap<String, u64>) -> ProjectRow {
    let path = p.resolved.as_ref().map(|(_, path)| path.clone());
    // The job series' label: the path, also before the lookup of a project configured by it.
    let label = path.as_deref().or(p.reference.path());
    ProjectRow {
        name: name(p),
        jobs_counted: label.and_then(|l| jobs.get(l)).copied().unwrap_or(0),
        id: p.resolved.as_ref().map(|(id, _)| *id).or(p.reference.id()),
        path,
        discovered: p.discovered,
        state: RowState::of(p),
        last_success: p.last_success.map(When::at),
        interval_seconds: p.interval.map(|d| d.as_secs_f64()),
        last_error: p.last_error.as_ref().map(|(at, message)| LastError {
            at: When::at(*at),
            message: message.clone(),
        }),
        last_hook: p.last_hook.map(When::at),
    }
}

#[cfg(test)]
mod tests;
