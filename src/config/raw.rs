//! The configuration as written: serde structs with their defaults. Code may build and adjust
//! one too (`--demo`, tests); [`Config::validate`] turns it into the [`Settings`] the daemon
//! runs on.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::Settings;
use super::labels::LabelsConfig;
use super::size::ByteSize;
use super::{DEFAULT_LISTEN, ProjectRef};

/// The configuration file (and its environment overrides) as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gitlab: GitlabConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub poll: PollConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub labels: LabelsConfig,
    #[serde(default)]
    pub shard: crate::shard::ShardConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub projects: Vec<ProjectEntry>,
    /// Groups whose projects are all watched (found again every `discovery.interval`).
    #[serde(default)]
    pub groups: Vec<GroupRef>,
    /// GitLab's job webhooks as data (polling stays the safety net).
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// Why jobs fail: the class of each failed job's log tail.
    #[serde(default)]
    pub failures: FailuresConfig,
}

/// `[failures]`: each failed job's log read once, and the class its tail gets (issue 14).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailuresConfig {
    /// Off by default: it costs one trace request per failed job.
    #[serde(default)]
    pub classify: bool,
    /// The end of the log that is kept and classified.
    #[serde(default = "default_tail_bytes")]
    pub tail_bytes: ByteSize,
    /// A longer log is not read to its end: class `log_too_large`.
    #[serde(default = "default_max_log_bytes")]
    pub max_log_bytes: ByteSize,
    /// `false`: only `rules` apply.
    #[serde(default = "yes")]
    pub default_rules: bool,
    /// Tried before the default rules, in this order; the first that matches names the class.
    #[serde(default)]
    pub rules: Vec<FailureRule>,
}

impl Default for FailuresConfig {
    fn default() -> Self {
        Self {
            classify: false,
            tail_bytes: default_tail_bytes(),
            max_log_bytes: default_max_log_bytes(),
            default_rules: true,
            rules: Vec::new(),
        }
    }
}

/// A `[[failures.rules]]` entry: a class name and the regex (`match`) that gives it.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FailureRule {
    pub class: String,
    #[serde(rename = "match")]
    pub pattern: String,
}

/// `[webhook]`: `POST /webhook` takes GitLab's Job Hooks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default)]
    pub enabled: bool,
    /// A file holding the secret GitLab sends in `X-Gitlab-Token` (`GITLAB_WEBHOOK_SECRET` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// Its own listener (so `/metrics` need not face GitLab); unset: `server.listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// How often a project whose hooks arrive is still polled.
    #[serde(default = "default_reconcile_interval", with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Where another shard's events go: a URL template with `{shard}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_url: Option<String>,
    /// Events waiting to be applied, at most; beyond it they are dropped (and reconciled by
    /// polling), never refused.
    #[serde(default = "default_webhook_queue")]
    pub queue: usize,
    /// The secret, resolved by [`Config::load`] (never written out).
    #[serde(skip)]
    pub secret: Option<SecretString>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            secret_file: None,
            listen: None,
            reconcile_interval: default_reconcile_interval(),
            peer_url: None,
            queue: default_webhook_queue(),
            secret: None,
        }
    }
}

/// A group whose projects are watched, by full path (`group/subgroup`) or numeric id.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Projects of subgroups too (GitLab's `include_subgroups`).
    #[serde(default = "yes")]
    pub include_subgroups: bool,
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.path, &self.id) {
            (Some(p), _) => write!(f, "group {p}"),
            (None, Some(id)) => write!(f, "group id {id}"),
            (None, None) => f.write_str("<empty group entry>"),
        }
    }
}

/// How `[[groups]]` and `membership` find projects.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Every project the token's user is a member of.
    #[serde(default)]
    pub membership: bool,
    /// Regexes on `path_with_namespace`: a discovered project is watched only if one matches
    /// (none given: all).
    #[serde(default)]
    pub include: Vec<String>,
    /// Regexes on `path_with_namespace`: a discovered project matching one is left out.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Watch archived projects too (they run no new jobs).
    #[serde(default)]
    pub archived: bool,
    #[serde(default = "default_discovery_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// How long a project that is no longer found keeps its series (and its place, should it
    /// come back) before they are removed.
    #[serde(default = "default_grace_period", with = "humantime_serde")]
    pub grace_period: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            membership: false,
            include: Vec::new(),
            exclude: Vec::new(),
            archived: false,
            interval: default_discovery_interval(),
            grace_period: default_grace_period(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Where the checkpoint lives; unset: nothing persists (backfill on every start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GitlabConfig {
    /// Base URL of the GitLab instance; `/api/v4` is appended.
    pub url: String,
    /// Inline token: discouraged (it ends up in config management); prefer `GITLAB_TOKEN` or a file.
    #[serde(default, serialize_with = "redact")]
    pub token: Option<SecretString>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// One budget for every request of the process; half GitLab's 600/min jobs-endpoint limit.
    #[serde(default = "default_max_rpm")]
    pub max_requests_per_minute: f64,
    /// A `Date` header further than this from the local clock is ignored (the local clock is
    /// used): a server clock in year 9999 would make every job too old to count.
    #[serde(default = "default_max_clock_skew", with = "humantime_serde")]
    pub max_clock_skew: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Connections served at once; more wait in the listen backlog. Bounds the file
    /// descriptors and memory a crowd of clients (or a hostile one) can take.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request head, and how long an idle keep-alive
    /// connection stays open: a client that goes quiet cannot hold a connection (or a
    /// shutdown) forever.
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_backfill", with = "humantime_serde")]
    pub backfill: Duration,
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Idle projects back off gradually up to this (see `pacing`).
    #[serde(default = "default_max_interval", with = "humantime_serde")]
    pub max_interval: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            max_interval: default_max_interval(),
            backfill: default_backfill(),
            concurrency: default_concurrency(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Upper bounds (seconds) of `gitlab_ci_job_duration_seconds`.
    #[serde(default = "default_duration_buckets")]
    pub duration_buckets: Vec<f64>,
    /// Upper bounds (seconds) of `gitlab_ci_job_queued_duration_seconds`.
    #[serde(default = "default_queued_buckets")]
    pub queued_buckets: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Series per job metric family, at most; beyond it new series fold into `job="__other__"`.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
    /// Projects watched at most (configured and discovered); discovery stops adding beyond it.
    #[serde(default = "default_max_projects")]
    pub max_projects: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_series: default_max_series(),
            max_projects: default_max_projects(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            duration_buckets: default_duration_buckets(),
            queued_buckets: default_queued_buckets(),
        }
    }
}

/// A `[[projects]]` entry: a path (`group/sub/project`) or a numeric id (validation wants
/// exactly one; see [`ProjectRef`] for the checked form).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProjectEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

impl From<ProjectRef> for ProjectEntry {
    fn from(p: ProjectRef) -> Self {
        match p {
            ProjectRef::Id(id) => Self {
                id: Some(id),
                path: None,
            },
            ProjectRef::Path(path) => Self {
                path: Some(path),
                id: None,
            },
        }
    }
}

impl std::fmt::Display for ProjectEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.path, &self.id) {
            (Some(p), _) => f.write_str(p),
            (None, Some(id)) => write!(f, "id {id}"),
            (None, None) => f.write_str("<empty project entry>"),
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_clock_skew() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_max_series() -> usize {
    20_000
}
fn default_max_projects() -> usize {
    20_000
}
fn default_max_rpm() -> f64 {
    300.0
}
fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_max_connections() -> usize {
    super::DEFAULT_MAX_CONNECTIONS.get()
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_max_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_discovery_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_grace_period() -> Duration {
    Duration::from_secs(3600)
}
fn yes() -> bool {
    true
}
fn default_reconcile_interval() -> Duration {
    Duration::from_secs(600)
}
fn default_webhook_queue() -> usize {
    10_000
}
fn default_tail_bytes() -> ByteSize {
    ByteSize::kib(64)
}
fn default_max_log_bytes() -> ByteSize {
    ByteSize::mib(32)
}
fn default_backfill() -> Duration {
    Duration::from_secs(3600)
}
fn default_concurrency() -> usize {
    4
}
/// CI jobs last seconds to hours.
pub fn default_duration_buckets() -> Vec<f64> {
    vec![
        5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0,
        14400.0,
    ]
}
/// Queue times are usually seconds, sometimes an hour when runners are short.
pub fn default_queued_buckets() -> Vec<f64> {
    vec![
        1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
    ]
}

fn redact<S: serde::Serializer>(token: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match token {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

impl Config {
    /// Defaults for everything but where GitLab is, the token and the projects (for `--demo`
    /// and tests; a file goes through [`Config::load`]). Validate it before use.
    pub fn new(url: impl Into<String>, token: SecretString, projects: Vec<ProjectRef>) -> Self {
        Self {
            gitlab: GitlabConfig {
                url: url.into(),
                token: Some(token),
                token_file: None,
                timeout: default_timeout(),
                max_requests_per_minute: default_max_rpm(),
                max_clock_skew: default_max_clock_skew(),
            },
            server: ServerConfig::default(),
            poll: PollConfig::default(),
            metrics: MetricsConfig::default(),
            state: StateConfig::default(),
            labels: Default::default(),
            shard: Default::default(),
            limits: LimitsConfig::default(),
            discovery: DiscoveryConfig::default(),
            projects: projects.into_iter().map(ProjectEntry::from).collect(),
            groups: Vec::new(),
            webhook: WebhookConfig::default(),
            failures: FailuresConfig::default(),
        }
    }
}
