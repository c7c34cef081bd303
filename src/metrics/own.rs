//! The exporter's own families (requests to GitLab, polls, the fleet), in three groups that
//! each make and register their own: one constructor per concern instead of one long one.

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

pub(super) const POLLS_HELP: &str = "Poll cycles started, per project.";
pub(super) const POLL_ERRORS_HELP: &str = "Poll cycles that failed, per project.";

/// Registers each collector (a clone: the families share their values).
fn register(
    registry: &Registry,
    collectors: Vec<Box<dyn Collector>>,
) -> Result<(), prometheus::Error> {
    for c in collectors {
        registry.register(c)?;
    }
    Ok(())
}

/// Requests to GitLab and its rate limits.
pub(super) struct Api {
    pub api_requests: IntCounterVec,
    pub api_duration: HistogramVec,
    pub api_errors: IntCounterVec,
    pub rate_limit_remaining: prometheus::Gauge,
    pub rate_limited_seconds: prometheus::Counter,
}

impl Api {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let api_requests = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_api_requests_total",
                "HTTP requests sent to the GitLab API, by endpoint and status code (`error` when no response).",
            ),
            &["endpoint", "code"],
        )?;
        let api_duration = HistogramVec::new(
            HistogramOpts::new(
                "gitlab_jobs_exporter_api_request_duration_seconds",
                "Latency of GitLab API requests.",
            )
            .buckets(vec![0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["endpoint"],
        )?;
        let api_errors = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_api_errors_total",
                "Failed GitLab API requests and bad responses, by kind.",
            ),
            &["kind"],
        )?;
        let rate_limit_remaining = prometheus::Gauge::new(
            "gitlab_jobs_exporter_rate_limit_remaining",
            "Last RateLimit-Remaining header seen from GitLab.",
        )?;
        let rate_limited_seconds = prometheus::Counter::new(
            "gitlab_jobs_exporter_rate_limited_seconds_total",
            "Time all requests to GitLab were paused because GitLab answered 429.",
        )?;
        register(
            registry,
            vec![
                Box::new(api_requests.clone()),
                Box::new(api_duration.clone()),
                Box::new(api_errors.clone()),
                Box::new(rate_limited_seconds.clone()),
            ],
        )?;
        // `rate_limit_remaining` is not registered: it is shown once GitLab sent the header.
        Ok(Self {
            api_requests,
            api_duration,
            api_errors,
            rate_limit_remaining,
            rate_limited_seconds,
        })
    }
}

/// Poll cycles and the jobs they follow, per project.
pub(super) struct Polls {
    pub jobs_active: IntGaugeVec,
    pub oldest_pending: GaugeVec,
    pub polls: IntCounterVec,
    pub poll_errors: IntCounterVec,
    pub last_success: GaugeVec,
    pub tracked_jobs: IntGauge,
    pub project_state: IntGaugeVec,
    pub poll_lag: HistogramVec,
}

impl Polls {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let jobs_active = IntGaugeVec::new(
            Opts::new(
                "gitlab_ci_jobs_active",
                "GitLab CI jobs now in each non-final status.",
            ),
            &["project", "status"],
        )?;
        let oldest_pending = GaugeVec::new(
            Opts::new(
                "gitlab_ci_jobs_oldest_pending_timestamp_seconds",
                "Unix time at which the oldest job now pending started waiting.",
            ),
            &["project"],
        )?;
        let polls = IntCounterVec::new(
            Opts::new("gitlab_jobs_exporter_polls_total", POLLS_HELP),
            &["project"],
        )?;
        let poll_errors = IntCounterVec::new(
            Opts::new("gitlab_jobs_exporter_poll_errors_total", POLL_ERRORS_HELP),
            &["project"],
        )?;
        let last_success = GaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_last_successful_poll_timestamp_seconds",
                "Unix time of the last poll cycle that completed, per project.",
            ),
            &["project"],
        )?;
        let tracked_jobs = IntGauge::new(
            "gitlab_jobs_exporter_tracked_jobs",
            "Non-final jobs being followed, over all projects.",
        )?;
        let project_state = IntGaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_project_state",
                "1 for the state the last poll of the project ended in (ok, failing, unauthorized, forbidden, not_found), 0 for the others.",
            ),
            &["project", "state"],
        )?;
        let poll_lag = HistogramVec::new(
            HistogramOpts::new(
                "gitlab_jobs_exporter_poll_lag_seconds",
                "Freshness: from a job's finished_at in GitLab to the exporter counting it, by what told it (webhook or poll; polls count jobs seen completing after the first poll).",
            )
            .buckets(vec![0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0]),
            &["source"],
        )?;
        register(
            registry,
            vec![
                Box::new(jobs_active.clone()),
                Box::new(oldest_pending.clone()),
                Box::new(polls.clone()),
                Box::new(poll_errors.clone()),
                Box::new(last_success.clone()),
                Box::new(tracked_jobs.clone()),
                Box::new(project_state.clone()),
                Box::new(poll_lag.clone()),
            ],
        )?;
        Ok(Self {
            jobs_active,
            oldest_pending,
            polls,
            poll_errors,
            last_success,
            tracked_jobs,
            project_state,
            poll_lag,
        })
    }
}

/// GitLab's webhooks.
pub(super) struct Hooks {
    pub events: IntCounterVec,
    pub missed: IntCounterVec,
    pub projects: IntGaugeVec,
    pub last_received: GaugeVec,
}

impl Hooks {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_webhook_events_total",
                "Webhook deliveries received, by event (job, pipeline, other) and what became of them (applied, duplicate, stale, unwatched, forwarded, dropped, rejected, malformed, ignored).",
            ),
            &["event", "result"],
        )?;
        let missed = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_webhook_missed_total",
                "Job completions a poll found that no hook had reported, per project that has received hooks.",
            ),
            &["project"],
        )?;
        let projects = IntGaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_webhook_projects",
                "Projects that have received hooks: receiving (polled every webhook.reconcile_interval) or silent (a poll found what hooks missed: polled normally until hooks come again).",
            ),
            &["state"],
        )?;
        let last_received = GaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_webhook_last_received_timestamp_seconds",
                "Unix time of the last hook received for the project.",
            ),
            &["project"],
        )?;
        register(
            registry,
            vec![
                Box::new(events.clone()),
                Box::new(missed.clone()),
                Box::new(projects.clone()),
                Box::new(last_received.clone()),
            ],
        )?;
        for state in ["receiving", "silent"] {
            projects.with_label_values(&[state]).set(0);
        }
        Ok(Self {
            events,
            missed,
            projects,
            last_received,
        })
    }
}

/// The watched projects, pacing, discovery and series counts.
pub(super) struct Fleet {
    pub series: IntGaugeVec,
    pub watched: IntGauge,
    pub never_polled: IntGauge,
    pub paced: IntGaugeVec,
    pub stretch: GaugeVec,
    pub demand: prometheus::Gauge,
    pub discovery_runs: IntCounterVec,
    pub project_limit: IntGauge,
}

impl Fleet {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let series = IntGaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_series",
                "Series of each job metric family (capped by limits.max_series).",
            ),
            &["metric"],
        )?;
        let watched = IntGauge::new(
            "gitlab_jobs_exporter_watched_projects",
            "Projects this replica polls (configured and discovered).",
        )?;
        let never_polled = IntGauge::new(
            "gitlab_jobs_exporter_projects_never_polled",
            "Watched projects without a successful poll cycle since the exporter started, including those configured by id whose path (their project label) is not known yet.",
        )?;
        let paced = IntGaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_paced_projects",
                "Projects by activity in their last cycle: busy ones are polled at poll.interval, idle ones back off to poll.max_interval.",
            ),
            &["activity"],
        )?;
        let stretch = GaugeVec::new(
            Opts::new(
                "gitlab_jobs_exporter_poll_interval_stretch_ratio",
                "How much the request budget stretches poll intervals, by activity (1: every project at its target interval).",
            ),
            &["activity"],
        )?;
        let demand = prometheus::Gauge::new(
            "gitlab_jobs_exporter_request_demand_ratio",
            "Requests all projects need at their target intervals over gitlab.max_requests_per_minute (above 0.9: intervals are stretched).",
        )?;
        let discovery_runs = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_discovery_runs_total",
                "Project discovery passes, by result (complete, or incomplete: nothing was removed).",
            ),
            &["result"],
        )?;
        let project_limit = IntGauge::new(
            "gitlab_jobs_exporter_project_limit_reached",
            "1 when the last discovery pass found more projects than limits.max_projects (the rest are not watched), else 0.",
        )?;
        register(
            registry,
            vec![
                Box::new(series.clone()),
                Box::new(watched.clone()),
                Box::new(never_polled.clone()),
                Box::new(paced.clone()),
                Box::new(stretch.clone()),
                Box::new(demand.clone()),
                Box::new(discovery_runs.clone()),
                Box::new(project_limit.clone()),
                Box::new(build_info()?),
                Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            ],
        )?;
        Ok(Self {
            series,
            watched,
            never_polled,
            paced,
            stretch,
            demand,
            discovery_runs,
            project_limit,
        })
    }
}

/// `gitlab_jobs_exporter_build_info`, always 1.
fn build_info() -> Result<IntGaugeVec, prometheus::Error> {
    let build_info = IntGaugeVec::new(
        Opts::new(
            "gitlab_jobs_exporter_build_info",
            "Build information; the value is always 1.",
        ),
        &["version"],
    )?;
    if let Some(g) = super::with(&build_info, &[env!("CARGO_PKG_VERSION")]) {
        g.set(1);
    }
    Ok(build_info)
}
