//! gitlab-jobs-exporter: counts every GitLab CI job exactly once and serves the figures to Prometheus.
//!
//! Data flows one way:
//! `config` → `scheduler` → `gitlab` (HTTP client) → `tracker` (per-project state machine) →
//! `metrics` → `server` (HTTP).
//!
//! - [`config`]: the configuration file and environment overrides, validated up front.
//! - [`scheduler`]: which projects are watched and when each is polled (bounded concurrency,
//!   jitter), checkpoints.
//! - [`pacing`]: each project's next delay from its activity, within the shared request budget.
//! - [`discovery`]: projects named by `[[groups]]` and `discovery.membership`.
//! - [`poll`]: one poll cycle of one project: which requests to send, fed to the tracker.
//! - [`project_state`]: a project's state apart from the network, locked only for short steps.
//! - [`health`]: what `/healthz` answers (the published page's age, GitLab's pause).
//! - [`model`]: GitLab's jobs and projects as the exporter reads them (plain data, the bottom of
//!   the module graph).
//! - [`gitlab`]: the GitLab API client, its pager (`Link`, `X-Next-Page`) and the observer it
//!   reports requests to (implemented by [`metrics::Metrics`]).
//! - [`tracker`]: what has been counted and which jobs are still followed (pure, no I/O).
//! - [`labels`]: cardinality controls for the `ref` and `job` labels.
//! - [`metrics`]: the Prometheus registry and how tracker events become samples.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz` and the index page.
//! - [`state`]: the checkpoint file (`state.dir`): load, atomic save, corruption handling.
//! - [`shard`]: which projects this replica polls (rendezvous hashing).
//! - [`cli`]: the command line and process wiring; the only place that uses `anyhow`.
//!
//! The in-process GitLab used by tests, benchmarks and `--demo` is its own crate, `gitlab-sim`.

pub mod app;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod gitlab;
pub mod health;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod pacing;
pub mod poll;
pub mod project_state;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod shard;
pub mod state;
pub mod tracker;
