//! The exporter assembled: metrics observing the GitLab client, the scheduler, the HTTP state;
//! restored, served and shut down the same way by the binary and by the test harness.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{Settings, WebhookSettings};
use crate::fleet::runner::{CheckpointError, Scheduler};
use crate::gitlab::{ClientBuildError, ClientObserver, RetryPolicy};
use crate::metrics::{Metrics, MetricsError};
use crate::persist::StateError;
use crate::server::{self, AppState};
use crate::status::Status;
use crate::webhook::HookReceiver;
use crate::webhook::endpoint::WebhookState;
use crate::webhook::forward::Forwarder;

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
    #[error("webhook forwarding: {0}")]
    Forwarder(String),
}

/// The exporter's parts, wired.
pub struct App {
    pub metrics: Arc<Metrics>,
    pub scheduler: Arc<Scheduler>,
    status: Arc<Status>,
    limits: server::Limits,
    hooks: Option<Hooks>,
}

/// Webhooks, when enabled: the endpoint's state and the queue's far end (taken once, by
/// [`App::spawn_hooks`]).
struct Hooks {
    endpoint: WebhookState,
    listen: Option<SocketAddr>,
    applier: std::sync::Mutex<Option<(HookReceiver, Option<Forwarder>)>>,
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
        let hooks = match &cfg.webhook {
            Some(w) => Some(Self::hooks(
                w,
                scheduler.shard(),
                &metrics,
                cfg.gitlab.max_clock_skew,
            )?),
            None => None,
        };
        Ok(Self {
            status: Arc::new(Status::new(cfg, scheduler.clone(), metrics.clone())),
            metrics,
            scheduler,
            limits: server::Limits::from_config(&cfg.server),
            hooks,
        })
    }

    fn hooks(
        w: &WebhookSettings,
        (shard, count): (u32, u32),
        metrics: &Arc<Metrics>,
        max_clock_skew: Duration,
    ) -> Result<Hooks, AppError> {
        let (sender, receiver) = crate::webhook::queue(w.queue.get());
        let sharded = count > 1;
        let forwarder = match (&w.peer_url, sharded) {
            (Some(peer), true) => Some(
                Forwarder::new(peer.clone(), w.secret.clone(), shard, metrics.clone())
                    .map_err(|e| AppError::Forwarder(e.to_string()))?,
            ),
            _ => None,
        };
        Ok(Hooks {
            endpoint: WebhookState::new(
                w.secret.clone(),
                sender,
                metrics.clone(),
                sharded,
                max_clock_skew,
            ),
            listen: w.listen,
            applier: std::sync::Mutex::new(Some((receiver, forwarder))),
        })
    }

    /// Applies webhook events until `shutdown` (nothing without webhooks; once only).
    pub fn spawn_hooks(&self, shutdown: CancellationToken) {
        let taken = self.hooks.as_ref().and_then(|h| {
            h.applier
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        });
        if let Some((queue, forwarder)) = taken {
            tokio::spawn(
                self.scheduler
                    .clone()
                    .apply_hooks(queue, forwarder, shutdown),
            );
        }
    }

    /// `webhook.listen`: where `/webhook` is served on its own, if anywhere.
    pub fn webhook_listen(&self) -> Option<SocketAddr> {
        self.hooks.as_ref().and_then(|h| h.listen)
    }

    /// Serves only `/webhook` on `listener` until `shutdown`.
    pub fn spawn_webhook_http(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<std::io::Result<()>>> {
        let hooks = self.hooks.as_ref()?;
        let router = crate::webhook::endpoint::router(hooks.endpoint.clone());
        Some(tokio::spawn(server::serve_router(
            listener,
            router,
            self.limits,
            shutdown,
        )))
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
            status: self.status.clone(),
            // Beside `/metrics` unless it has a listener of its own.
            webhook: self
                .hooks
                .as_ref()
                .filter(|h| h.listen.is_none())
                .map(|h| h.endpoint.clone()),
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
    /// `hook_listener`: for `/webhook` alone (see [`App::webhook_listen`]).
    pub async fn run(
        self,
        listener: TcpListener,
        hook_listener: Option<TcpListener>,
        shutdown: CancellationToken,
    ) -> Result<(), AppError> {
        let stop = shutdown.clone();
        let http = self.spawn_http(listener, async move { stop.cancelled().await });
        let stop = shutdown.clone();
        let hook_http = hook_listener
            .and_then(|l| self.spawn_webhook_http(l, async move { stop.cancelled().await }));
        self.spawn_hooks(shutdown.clone());
        self.scheduler.clone().run(shutdown).await;
        for task in std::iter::once(http).chain(hook_http) {
            match task.await {
                Ok(r) => r?,
                Err(e) => return Err(AppError::Task(e.to_string())),
            }
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
