//! gitlab-jobs-exporter: counts every GitLab CI job exactly once and serves the figures to Prometheus.
//!
//! Modules from the bottom of the import graph up (each uses only those above it in this list;
//! `tests/layers.rs` fails on a cycle):
//!
//! - [`model`]: GitLab's jobs and projects as the exporter reads them (plain data, no I/O).
//! - [`failures`]: why a job failed: the class of its log's tail (pure: ordered regex rules,
//!   escapes stripped, a bounded tail buffer).
//! - [`shard`]: which projects this replica polls (rendezvous hashing).
//! - [`config`]: the configuration file and environment, validated once into typed `Settings`.
//! - [`tracker`]: what has been counted and which jobs are still followed (pure, no I/O).
//! - [`labels`]: cardinality controls for the `ref`, `job` and `runner` labels.
//! - [`metrics`]: the Prometheus registry and how tracker events become samples.
//! - [`gitlab`]: the GitLab API client, its pager (`Link`, `X-Next-Page`), throttle, and the
//!   observer trait it reports requests through.
//! - [`persist`]: the checkpoint file (`state.dir`): load, atomic save, corruption handling.
//! - [`project`]: one watched project: its state (short locks only) and its poll cycle.
//! - [`health`]: what `/healthz` answers (the published page's age, GitLab's pause).
//! - [`webhook`]: `POST /webhook` (GitLab's Job Hooks): secret, bounded queue, forwarding
//!   to another shard.
//! - [`fleet`]: every watched project: discovery, the pure registry, pacing, the runner
//!   (tasks, checkpoints, readiness).
//! - [`status`]: the status page (`/` and `/status.json`): readiness and why, budget, pacing,
//!   webhooks, one row per project, from read-only views of the fleet and the metrics.
//! - [`server`]: `/metrics`, `/healthz`, `/readyz`, `/` and `/status.json`.
//! - [`app`]: the parts wired (metrics observe the client), served and shut down; the binary
//!   and the test harness start the exporter through it.
//! - [`install`]: `--install-webhooks`: a project hook on every watched project, created or
//!   brought in line (idempotent, matched by URL).
//! - [`doctor`]: `--check-gitlab`: whether the configuration will work against GitLab (version,
//!   token, projects, groups, rate limits, hooks), each problem with its fix.
//! - [`cli`]: the command line, logging, signals, exit codes; the only place using `anyhow`.
//!
//! The in-process GitLab used by tests, benchmarks and `--demo` is its own crate, `gitlab-sim`.

pub mod app;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod failures;
pub mod fleet;
pub mod gitlab;
pub mod health;
pub mod install;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod persist;
pub mod project;
pub mod server;
pub mod shard;
pub mod status;
pub mod tracker;
pub mod webhook;
