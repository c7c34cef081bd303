//! The exporter assembled: metrics observing the GitLab client, the scheduler, the HTTP state;
//! restored, served and shut down the same way by the binary and by the test harness.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::fleet::runner::{CheckpointError, Scheduler};
use crate::gitlab::{ClientBuildError, ClientObserver, RetryPolicy};
use crate::metrics::{Metrics, MetricsError};
use crate::persist::StateError;
use crate::server::{self, AppState};

#[derive(Debug, Error)]
pub enum AppError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error("state.dir: {0}")]
    State(#[from] StateError),
    #[error("cannot write the first checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("HTTP server: {0}")]
    Serve(#[from] std::io::Error),
    #[error("HTTP server task failed: {0}")]
    Task(String),
}

/// The exporter's parts, wired.
pub struct App {
    pub metrics: Arc<Metrics>,
    pub scheduler: Arc<Scheduler>,
    limits: server::Limits,
}

impl App {
    /// Builds the parts from validated settings; nothing runs yet.
    pub fn new(cfg: &Settings, retry: RetryPolicy) -> Result<Self, AppError> {
        let metrics = Arc::new(Metrics::new(
            &cfg.metrics,
            cfg.limits.max_series,
            &cfg.labels,
        )?);
        let scheduler = Scheduler::new(cfg, metrics.clone(), retry)?;
        Ok(Self {
            metrics,
            scheduler,
            limits: server::Limits::from_config(&cfg.server),
        })
    }

    /// With `state.dir`: restores the checkpoint and writes the first one before anything is
    /// served, so `/metrics` never shows a counter lower than before the restart.
    pub async fn restore(&self, cfg: &Settings) -> Result<(), AppError> {
        let Some(dir) = &cfg.state_dir else {
            return Ok(());
        };
        crate::persist::prepare(dir)?;
        if let Some(cp) = crate::persist::load(dir, cfg.gitlab.url.as_str()) {
            self.scheduler.restore(cp).await;
        }
        self.scheduler.write_checkpoint().await?;
        Ok(())
    }

    /// What the HTTP handlers read.
    pub fn http_state(&self) -> AppState {
        AppState {
            metrics: self.metrics.clone(),
            readiness: self.scheduler.readiness(),
            health: self.scheduler.health(),
        }
    }

    /// Serves HTTP on `listener` until `shutdown` (draining open requests).
    pub fn spawn_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<std::io::Result<()>> {
        tokio::spawn(server::serve_with(
            listener,
            self.http_state(),
            self.limits,
            shutdown,
        ))
    }

    /// Serves and polls until `shutdown`, then stops both (the final checkpoint written).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), AppError> {
        let stop = shutdown.clone();
        let http = self.spawn_http(listener, async move { stop.cancelled().await });
        self.scheduler.clone().run(shutdown).await;
        match http.await {
            Ok(r) => r?,
            Err(e) => return Err(AppError::Task(e.to_string())),
        }
        info!("stopped");
        Ok(())
    }
}

/// The exporter's metrics observe the GitLab client. The impl lives here, above both, so that
/// neither `gitlab` nor `metrics` depends on the other (`tests/layers.rs`).
impl ClientObserver for Metrics {
    fn request(&self, endpoint: &'static str, status: Option<u16>, seconds: f64) {
        // The `code` label: the answer's status, or `error` when none came.
        let code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        Metrics::observe_request(self, endpoint, &code, seconds);
    }

    fn api_error(&self, kind: &'static str) {
        Metrics::api_error(self, kind);
    }

    fn rate_limit_remaining(&self, remaining: f64) {
        Metrics::rate_limit_remaining(self, remaining);
    }

    fn rate_limited(&self, pause: Duration) {
        Metrics::rate_limited(self, pause.as_secs_f64());
    }
}
