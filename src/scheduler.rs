//! When each project is polled: every `poll.interval` with jitter, at most `poll.concurrency`
//! projects at once, each in its own task so a slow or failing project never holds up the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::gitlab::{ClientBuildError, GitlabClient, RetryPolicy};
use crate::metrics::Metrics;
use crate::poll::{CycleStats, PollError, ProjectPoller, ProjectState};

/// `/readyz` turns ready once every project has completed its first cycle.
#[derive(Debug)]
pub struct Readiness {
    total: usize,
    ready: AtomicUsize,
}

impl Readiness {
    pub fn new(total: usize) -> Self {
        Self {
            total,
            ready: AtomicUsize::new(0),
        }
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) >= self.total
    }
    /// (projects done with their first cycle, projects in all)
    pub fn progress(&self) -> (usize, usize) {
        (self.ready.load(Ordering::Acquire), self.total)
    }
    fn mark_one(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }
}

pub struct Scheduler {
    client: GitlabClient,
    metrics: Arc<Metrics>,
    pollers: Vec<Arc<Mutex<ProjectPoller>>>,
    permits: Arc<Semaphore>,
    interval: Duration,
    readiness: Arc<Readiness>,
}

impl Scheduler {
    pub fn new(
        cfg: &Config,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
    ) -> Result<Arc<Self>, ClientBuildError> {
        let client = GitlabClient::new(&cfg.gitlab, cfg.token(), retry, metrics.clone())?;
        let pollers = cfg
            .projects
            .iter()
            .map(|p| Arc::new(Mutex::new(ProjectPoller::new(p.clone(), cfg.poll.backfill))))
            .collect::<Vec<_>>();
        Ok(Arc::new(Self {
            client,
            metrics,
            readiness: Arc::new(Readiness::new(pollers.len())),
            pollers,
            permits: Arc::new(Semaphore::new(cfg.poll.concurrency)),
            interval: cfg.poll.interval,
        }))
    }

    pub fn readiness(&self) -> Arc<Readiness> {
        self.readiness.clone()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Polls one project once (waiting for a concurrency permit).
    /// Polls one project once (waiting for a concurrency permit); returns when to poll it
    /// next (`None`: never again).
    async fn poll_one(&self, idx: usize) -> (Result<CycleStats, PollError>, Option<Duration>) {
        // The semaphore is never closed, so acquire() cannot fail; treat it as "no limit" if it did.
        let _permit = self.permits.acquire().await.ok();
        let mut poller = self.pollers[idx].lock().await;
        let result = poller.poll(&self.client, &self.metrics).await;
        // Ready once polled, or known to be gone (it would otherwise hold readiness forever).
        if !poller.counted_ready && (result.is_ok() || poller.state() == ProjectState::NotFound) {
            poller.counted_ready = true;
            self.readiness.mark_one();
        }
        (result, poller.next_delay(self.interval))
    }

    /// Polls every project once, concurrently within the limit; results in project order.
    /// Used by tests and benchmarks to drive cycles deterministically.
    pub async fn poll_all_once(self: &Arc<Self>) -> Vec<Result<CycleStats, PollError>> {
        let mut set = JoinSet::new();
        for idx in 0..self.pollers.len() {
            let me = self.clone();
            set.spawn(async move { (idx, me.poll_one(idx).await.0) });
        }
        let mut results: Vec<Option<Result<CycleStats, PollError>>> =
            (0..self.pollers.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            if let Ok((idx, r)) = joined {
                results[idx] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(PollError::Aborted)))
            .collect()
    }

    /// Polls every project forever, each on its own jittered schedule, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        info!(
            projects = self.pollers.len(),
            interval = %humantime::format_duration(self.interval),
            "polling started"
        );
        let mut set = JoinSet::new();
        for idx in 0..self.pollers.len() {
            let me = self.clone();
            let stop = shutdown.clone();
            set.spawn(async move {
                // Spread the first polls over a tenth of the interval so they do not burst.
                let mut delay = me.interval.mul_f64(fastrand::f64() * 0.1);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    let started = tokio::time::Instant::now();
                    let next = tokio::select! {
                        _ = stop.cancelled() => return,
                        (_, next) = me.poll_one(idx) => next,
                    };
                    let Some(next) = next else {
                        return; // the project is gone; logged and exported by the poller
                    };
                    // ±10% jitter keeps projects from falling into lock-step.
                    let period = next.mul_f64(0.9 + fastrand::f64() * 0.2);
                    delay = period.saturating_sub(started.elapsed());
                }
            });
        }
        while set.join_next().await.is_some() {}
        info!("polling stopped");
    }
}
