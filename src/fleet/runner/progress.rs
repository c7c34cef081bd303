//! The log lines that tell an operator what the exporter is doing without reading metrics:
//! each project's first cycle, the moment `/readyz` turns ready, and a summary every
//! [`crate::config::SUMMARY_INTERVAL`] (jobs counted, requests against the budget, projects
//! failing). Every line carries its numbers as structured fields too.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Scheduler;
use crate::metrics::Totals;
use crate::project::cycle::{CycleStats, ProjectState};

impl Scheduler {
    /// A project completed its first cycle since start (`label`; `stats`: that cycle's).
    pub(super) fn first_cycle_done(&self, label: &str, stats: &CycleStats) {
        self.backfill_jobs
            .fetch_add(stats.completed as u64, Ordering::Relaxed);
        info!(
            project = %label,
            jobs_counted = stats.completed,
            requests = stats.requests,
            "first poll cycle done"
        );
    }

    /// Logs the ready line the first time `/readyz` is ready.
    pub(super) fn announce_if_ready(&self) {
        if !self.readiness.is_ready() || self.ready_announced.swap(true, Ordering::AcqRel) {
            return;
        }
        let projects = self.watched();
        let jobs = self.backfill_jobs.load(Ordering::Relaxed);
        let next = humantime::format_duration(self.interval);
        info!(
            projects,
            jobs_counted = jobs,
            next_poll = %next,
            "ready: {projects} project{}, {jobs} jobs counted in the backfill, next poll in {next}",
            if projects == 1 { "" } else { "s" }
        );
    }

    /// Logs a summary every `every` until `shutdown`.
    pub(super) async fn summary_loop(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        let mut before = self.metrics.totals();
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = self.metrics.totals();
            let elapsed = since.elapsed();
            self.summarise(before, now, elapsed);
            (before, since) = (now, tokio::time::Instant::now());
        }
    }

    fn summarise(&self, before: Totals, now: Totals, elapsed: Duration) {
        let minutes = elapsed.as_secs_f64().max(1.0) / 60.0;
        let jobs = now.jobs_counted.saturating_sub(before.jobs_counted);
        let rpm = (now.requests.saturating_sub(before.requests) as f64 / minutes).round() as u64;
        let budget = self.max_requests_per_minute.round() as u64;
        let (projects, failing, named) = self.failing_projects();
        let period = humantime::format_duration(Duration::from_secs(elapsed.as_secs()));
        info!(
            jobs_counted = jobs,
            requests_per_minute = rpm,
            budget_per_minute = budget,
            projects,
            failing,
            // Absent when none fails.
            failing_projects = (!named.is_empty()).then(|| named.join(",")).as_deref(),
            "summary of the last {period}: {jobs} jobs counted, {rpm} requests/min of a budget of {budget}, {failing} of {projects} projects failing"
        );
    }

    /// How many projects are polled here, how many of them failed their last cycle, and the
    /// labels of the first ten of those.
    fn failing_projects(&self) -> (usize, usize, Vec<String>) {
        let pollers: Vec<_> = self
            .slots()
            .live
            .values()
            .filter(|s| !s.ended)
            .map(|s| s.poller.clone())
            .collect();
        let mut polled = 0;
        let mut failing = Vec::new();
        for poller in pollers {
            let p = poller.project();
            match p.state() {
                ProjectState::Elsewhere => continue,
                ProjectState::Ok => {}
                _ => failing.push(p.label()),
            }
            polled += 1;
        }
        failing.sort();
        let count = failing.len();
        failing.truncate(10);
        (polled, count, failing)
    }
}
