//! When each project is polled: every `poll.interval` with jitter, at most `poll.concurrency`
//! projects at once, each in its own task so a slow or failing project never holds up the others.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::Config;
use crate::gitlab::{ClientBuildError, GitlabClient, RetryPolicy};
use crate::metrics::Metrics;
use crate::metrics::carry::capture;
use crate::poll::{CycleStats, PollError, ProjectPoller, ProjectState};
use crate::state::{self, Checkpoint, StateError};

/// How often, at most, a checkpoint is written.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Render(#[from] crate::metrics::MetricsError),
    #[error("checkpoint task failed: {0}")]
    Task(String),
}

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
    /// Where checkpoints go (`state.dir`), if anywhere.
    state_dir: Option<PathBuf>,
    gitlab_url: String,
    /// A cycle ran since the last checkpoint.
    dirty: AtomicBool,
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
        let shard_count = cfg.shard.count.max(1);
        let shard = (
            cfg.shard
                .resolve_index(std::env::var("HOSTNAME").ok().as_deref())
                .min(shard_count - 1),
            shard_count,
        );
        if shard_count > 1 {
            info!(
                index = shard.0,
                count = shard.1,
                "sharded: polling only this shard's projects"
            );
        }
        let client = GitlabClient::new(&cfg.gitlab, cfg.token(), retry, metrics.clone())?;
        let pollers = cfg
            .projects
            .iter()
            .map(|p| {
                Arc::new(Mutex::new(ProjectPoller::new(
                    p.clone(),
                    cfg.poll.backfill,
                    cfg.labels.clone(),
                    shard,
                )))
            })
            .collect::<Vec<_>>();
        Ok(Arc::new(Self {
            state_dir: cfg.state.dir.clone(),
            gitlab_url: cfg.gitlab.url.clone(),
            dirty: AtomicBool::new(false),
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

    /// Polls one project once (waiting for a concurrency permit); returns when to poll it
    /// next (`None`: never again).
    async fn poll_one(&self, idx: usize) -> (Result<CycleStats, PollError>, Option<Duration>) {
        // The semaphore is never closed, so acquire() cannot fail; treat it as "no limit" if it did.
        let _permit = self.permits.acquire().await.ok();
        let mut poller = self.pollers[idx].lock().await;
        let result = poller.poll(&self.client, &self.metrics).await;
        // Ready once polled, or known to be gone (it would otherwise hold readiness forever).
        let done = result.is_ok()
            || matches!(
                poller.state(),
                ProjectState::NotFound | ProjectState::Elsewhere
            );
        if !poller.counted_ready && done {
            poller.counted_ready = true;
            self.readiness.mark_one();
        }
        self.dirty.store(true, Ordering::Release);
        (result, poller.next_delay(self.interval))
    }

    /// Puts every configured project back where the checkpoint left it (projects no longer
    /// configured are dropped; new ones start with the backfill window).
    pub async fn restore(&self, mut cp: Checkpoint) {
        self.metrics.set_base(std::mem::take(&mut cp.own));
        let mut restored = 0;
        for poller in &self.pollers {
            let mut poller = poller.lock().await;
            if let Some(p) = cp.projects.remove(&poller.reference.to_string()) {
                poller.restore(p, &self.metrics);
                restored += 1;
            }
        }
        info!(
            restored,
            dropped = cp.projects.len(),
            "restored from the checkpoint"
        );
    }

    /// Takes a checkpoint (each project under its poll lock) and the `/metrics` page that
    /// shows exactly its values.
    pub async fn checkpoint(&self) -> Result<(Checkpoint, String), crate::metrics::MetricsError> {
        let mut projects = BTreeMap::new();
        let mut series = BTreeMap::new();
        for poller in &self.pollers {
            let poller = poller.lock().await;
            let cp = poller.checkpoint(&self.metrics);
            if let Some((_, path)) = &cp.resolved {
                series.insert(path.clone(), cp.series.clone());
            }
            projects.insert(poller.reference.to_string(), cp);
        }
        let own = self.metrics.own_families();
        let carried = capture(&own);
        let page = self.metrics.render_with(own, &series)?;
        let cp = Checkpoint {
            version: state::VERSION,
            gitlab_url: self.gitlab_url.clone(),
            projects,
            own: carried,
        };
        Ok((cp, page))
    }

    /// Writes a checkpoint (when `state.dir` is set), then lets `/metrics` show its values:
    /// what a scrape sees is always on disk already, so a crash never takes a value back.
    pub async fn write_checkpoint(&self) -> Result<(), CheckpointError> {
        let Some(dir) = self.state_dir.clone() else {
            return Ok(());
        };
        let (cp, page) = self.checkpoint().await?;
        tokio::task::spawn_blocking(move || state::save(&dir, &cp))
            .await
            .map_err(|e| CheckpointError::Task(e.to_string()))??;
        self.metrics.publish(page);
        Ok(())
    }

    /// Writes a checkpoint whenever a cycle ran, at most once a second, until `shutdown`;
    /// then a last one.
    async fn checkpoint_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            if self.dirty.swap(false, Ordering::AcqRel)
                && let Err(e) = self.write_checkpoint().await
            {
                self.dirty.store(true, Ordering::Release);
                error!(error = %e, "cannot write the checkpoint; /metrics keeps the last saved values");
            }
        }
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
        let writer = self
            .state_dir
            .is_some()
            .then(|| tokio::spawn(self.clone().checkpoint_loop(shutdown.clone())));
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
        if let Some(writer) = writer {
            let _ = writer.await;
            match self.write_checkpoint().await {
                Ok(()) => info!("final checkpoint written"),
                Err(e) => error!(error = %e, "cannot write the final checkpoint"),
            }
        }
        info!("polling stopped");
    }
}
