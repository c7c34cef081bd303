//! Configuration: a TOML file plus `GITLAB_JOBS_EXPORTER__SECTION__KEY` environment overrides,
//! validated completely before anything starts, so a broken config fails fast and names the key.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "GITLAB_JOBS_EXPORTER";
/// Environment variable holding the GitLab token (preferred over the file keys).
pub const TOKEN_ENV: &str = "GITLAB_TOKEN";
/// Default listen address. 39129 lies outside Prometheus' (exhausted) 9100–9999 allocation range.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:39129";
/// Largest token file read: a token is ~50 bytes; this stops `/dev/zero`-like runaways.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The API prefix the client appends to `gitlab.url`.
const API_SUFFIX: &str = "/api/v4";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Source(String),
    /// `key` is the dotted path of the offending key, e.g. `poll.interval`.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// The file is no TOML. `key` is the key of the offending line, when it has one; the line
    /// itself is quoted only when it holds no secret.
    #[error("{}TOML syntax error at {at}: {message}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Syntax {
        key: Option<String>,
        at: String,
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

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
    pub labels: crate::labels::LabelsConfig,
    #[serde(default)]
    pub shard: crate::shard::ShardConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    #[serde(default)]
    pub projects: Vec<ProjectRef>,
    /// Groups whose projects are all watched (found again every `discovery.interval`).
    #[serde(default)]
    pub groups: Vec<GroupRef>,
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

impl GroupRef {
    /// The `:id` segment of API paths: the numeric id, or the URL-encoded path.
    pub fn api_id(&self) -> String {
        api_id(self.id, self.path.as_deref())
    }
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

/// Compiled `discovery.include`/`exclude`.
#[derive(Debug, Clone, Default)]
pub struct PathFilter {
    include: Vec<regex::Regex>,
    exclude: Vec<regex::Regex>,
}

impl PathFilter {
    pub fn allows(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(path)))
            && !self.exclude.iter().any(|r| r.is_match(path))
    }
}

impl DiscoveryConfig {
    /// Whether anything is to be discovered.
    pub fn enabled(&self, groups: &[GroupRef]) -> bool {
        self.membership || !groups.is_empty()
    }

    pub fn filter(&self) -> Result<PathFilter, ConfigError> {
        let compile = |key: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, r)| {
                    regex::Regex::new(r).map_err(|e| {
                        ConfigError::invalid(format!("discovery.{key}[{i}]"), e.to_string())
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(PathFilter {
            include: compile("include", &self.include)?,
            exclude: compile("exclude", &self.exclude)?,
        })
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

/// A watched project, by path (`group/sub/project`) or numeric id.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct ProjectRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

impl ProjectRef {
    /// The `:id` segment of API paths: the numeric id, or the URL-encoded path.
    pub fn api_id(&self) -> String {
        api_id(self.id, self.path.as_deref())
    }
}

impl std::fmt::Display for ProjectRef {
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
    256
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
    /// and tests; a file goes through [`Config::load`]).
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
            projects,
            groups: Vec::new(),
        }
    }

    /// Reads `path` (if given) and the environment, then validates. The token is resolved here
    /// too, so a missing or unreadable token file is a config error, not a runtime surprise.
    /// No error carries a secret: secret-keyed lines are never quoted, and whatever a secret
    /// key holds (in the file or the environment) is scrubbed from the message as a last net.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut secrets = env_secrets();
        let result = Self::load_inner(path, &mut secrets);
        result.map_err(|e| e.scrubbed(&secrets))
    }

    fn load_inner(path: Option<&Path>, secrets: &mut Vec<String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            let text = read_bounded(path, MAX_CONFIG_BYTES)
                .map_err(|e| ConfigError::Source(format!("cannot read {}: {e}", path.display())))?;
            let text = String::from_utf8(text).map_err(|e| {
                ConfigError::Source(format!(
                    "{}: not UTF-8 text (byte {})",
                    path.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?;
            let lines = SourceLines::new(&text);
            secrets.extend(lines.secret_values());
            // Parsed here first: the parser's own message quotes the offending source line,
            // which may hold the token.
            if let Err(e) = text.parse::<toml::Table>() {
                return Err(lines.syntax_error(path, &e));
            }
            builder = builder.add_source(config::File::from_str(&text, config::FileFormat::Toml));
        }
        let raw = builder
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| match e {
                // Checked above already; should the two parsers disagree, quote nothing.
                config::ConfigError::FileParse { .. } => {
                    ConfigError::Source("the file is not valid TOML".into())
                }
                e => ConfigError::Source(e.to_string()),
            })?;
        let mut cfg: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
            let key = e.path().to_string();
            let message = if is_secret_key(&key) {
                // serde quotes the value it could not use; this one is not shown.
                "invalid value (not shown: the key may hold a secret)".to_string()
            } else {
                e.into_inner().to_string()
            };
            // A missing section shows up at the root: name the field serde complains about.
            if key == "." {
                ConfigError::invalid("config", message)
            } else {
                ConfigError::invalid(key, message)
            }
        })?;
        if let Some(t) = &cfg.gitlab.token {
            secrets.push(t.expose_secret().to_string());
        }
        cfg.strip_api_suffix();
        cfg.resolve_token(std::env::var(TOKEN_ENV).ok())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// `gitlab.url` given with GitLab's `/api/v4` (as copied from API docs): the client
    /// appends it itself, so every request would go to `/api/v4/api/v4/…` and answer 404.
    fn strip_api_suffix(&mut self) {
        let trimmed = self.gitlab.url.trim_end_matches('/');
        if let Some(base) = trimmed.strip_suffix(API_SUFFIX) {
            let base = base.to_string();
            // Logged before validate() refuses credentials in the URL: never show them.
            tracing::warn!(
                configured = %without_userinfo(&self.gitlab.url),
                using = %without_userinfo(&base),
                "gitlab.url ends with /api/v4, which the exporter appends itself; using the URL without it"
            );
            self.gitlab.url = base;
        }
    }

    /// Token precedence: `GITLAB_TOKEN`, then `gitlab.token_file`, then `gitlab.token`. A
    /// configured token file must be readable even when the environment wins: a broken path is
    /// a deployment mistake worth failing on. Errors name the source, never the token (nor the
    /// file's path: a `*token*` key's value is treated as a secret, as it may be one misplaced).
    fn resolve_token(&mut self, env_token: Option<String>) -> Result<(), ConfigError> {
        let mut from_file = None;
        if let Some(file) = &self.gitlab.token_file {
            let bytes = read_token_file(file).map_err(|e| {
                ConfigError::invalid("gitlab.token_file", format!("cannot read the file: {e}"))
            })?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ConfigError::invalid("gitlab.token_file", "the file is not UTF-8 text")
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(ConfigError::invalid(
                    "gitlab.token_file",
                    "the file is empty",
                ));
            }
            check_token("gitlab.token_file", text)?;
            from_file = Some(text.to_string());
        }
        let env_token = env_token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &env_token {
            check_token(TOKEN_ENV, t)?;
        }
        if let Some(t) = env_token.or(from_file) {
            self.gitlab.token = Some(SecretString::from(t));
        }
        Ok(())
    }

    /// Checks every value that deserialisation alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = url::Url::parse(&self.gitlab.url).map_err(|e| {
            ConfigError::invalid(
                "gitlab.url",
                format!("not a URL ({e}); expected e.g. https://gitlab.example.com"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::invalid(
                "gitlab.url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid(
                "gitlab.url",
                "must not carry a query or fragment",
            ));
        }
        // Credentials in the URL would be printed by --check-config and the start-up log;
        // the token has its own, redacted, places.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(
                "gitlab.url",
                format!(
                    "must not carry credentials (user:password@); give the token in {TOKEN_ENV}, gitlab.token_file or gitlab.token"
                ),
            ));
        }
        if url.path().trim_end_matches('/').ends_with(API_SUFFIX) {
            return Err(ConfigError::invalid(
                "gitlab.url",
                "must not end with /api/v4: it is appended to it (give e.g. https://gitlab.example.com)",
            ));
        }
        match &self.gitlab.token {
            None => {
                return Err(ConfigError::invalid(
                    "gitlab.token",
                    format!("no token: set {TOKEN_ENV} or gitlab.token_file"),
                ));
            }
            Some(t) if t.expose_secret().trim().is_empty() => {
                return Err(ConfigError::invalid("gitlab.token", "is empty"));
            }
            Some(t) => check_token("gitlab.token", t.expose_secret())?,
        }
        if self.gitlab.timeout.is_zero() {
            return Err(ConfigError::invalid(
                "gitlab.timeout",
                "must be greater than zero",
            ));
        }
        let rpm = self.gitlab.max_requests_per_minute;
        if !rpm.is_finite() || rpm <= 0.0 {
            return Err(ConfigError::invalid(
                "gitlab.max_requests_per_minute",
                "must be a positive number (fractions allowed, e.g. 0.5)",
            ));
        }
        self.server.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                "server.listen",
                format!("{e}; expected ADDRESS:PORT, e.g. 0.0.0.0:39129"),
            )
        })?;
        if self.server.max_connections == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if self.server.header_read_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "server.header_read_timeout",
                "must be greater than zero",
            ));
        }
        if self.poll.interval.is_zero() {
            return Err(ConfigError::invalid(
                "poll.interval",
                "must be greater than zero",
            ));
        }
        if self.poll.max_interval < self.poll.interval {
            return Err(ConfigError::invalid(
                "poll.max_interval",
                format!(
                    "must be at least poll.interval ({})",
                    humantime::format_duration(self.poll.interval)
                ),
            ));
        }
        if self.poll.concurrency == 0 {
            return Err(ConfigError::invalid(
                "poll.concurrency",
                "must be at least 1",
            ));
        }
        if let Some(dir) = &self.state.dir
            && dir.as_os_str().is_empty()
        {
            return Err(ConfigError::invalid("state.dir", "is empty"));
        }
        if self.limits.max_series == 0 {
            return Err(ConfigError::invalid(
                "limits.max_series",
                "must be at least 1",
            ));
        }
        if self.gitlab.max_clock_skew < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "gitlab.max_clock_skew",
                "must be at least 1m (clocks drift)",
            ));
        }
        if self.limits.max_projects == 0 {
            return Err(ConfigError::invalid(
                "limits.max_projects",
                "must be at least 1",
            ));
        }
        if self.projects.len() > self.limits.max_projects {
            return Err(ConfigError::invalid(
                "limits.max_projects",
                format!(
                    "is below the {} configured [[projects]]",
                    self.projects.len()
                ),
            ));
        }
        if self.shard.count == 0 {
            return Err(ConfigError::invalid("shard.count", "must be at least 1"));
        }
        if let Some(i) = self.shard.index
            && i >= self.shard.count
        {
            return Err(ConfigError::invalid(
                "shard.index",
                format!("must be below shard.count ({})", self.shard.count),
            ));
        }
        for (i, rule) in self.labels.job_rewrites.iter().enumerate() {
            rule.check_replacement().map_err(|e| {
                ConfigError::invalid(format!("labels.job_rewrites[{i}].replace"), e.to_string())
            })?;
        }
        check_buckets("metrics.duration_buckets", &self.metrics.duration_buckets)?;
        check_buckets("metrics.queued_buckets", &self.metrics.queued_buckets)?;
        if self.projects.is_empty() && !self.discovery.enabled(&self.groups) {
            return Err(ConfigError::invalid(
                "projects",
                "no project to watch: add a [[projects]] or [[groups]] entry (`path` or `id`), or set discovery.membership = true",
            ));
        }
        if self.discovery.interval.is_zero() {
            return Err(ConfigError::invalid(
                "discovery.interval",
                "must be greater than zero",
            ));
        }
        self.discovery.filter()?;
        if self.discovery.enabled(&self.groups) && self.discovery.grace_period < self.poll.backfill
        {
            return Err(ConfigError::invalid(
                "discovery.grace_period",
                format!(
                    "must be at least poll.backfill ({}): a project found again after its grace period starts over with the backfill window, which must not reach jobs counted before it left",
                    humantime::format_duration(self.poll.backfill)
                ),
            ));
        }
        let mut seen_groups = HashSet::new();
        for (i, g) in self.groups.iter().enumerate() {
            let key = format!("groups[{i}]");
            check_entry(
                &key,
                g.path.as_deref(),
                g.id,
                "a group path like group/subgroup",
            )?;
            if !seen_groups.insert((g.path.as_ref().map(|s| s.to_lowercase()), g.id)) {
                return Err(ConfigError::invalid(key, format!("duplicate {g}")));
            }
        }
        let mut seen = HashSet::new();
        for (i, p) in self.projects.iter().enumerate() {
            let key = format!("projects[{i}]");
            check_entry(
                &key,
                p.path.as_deref(),
                p.id,
                "a project path like group/subgroup/project",
            )?;
            // Paths are case-insensitive in GitLab.
            let ident = (p.path.as_ref().map(|s| s.to_lowercase()), p.id);
            if !seen.insert(ident) {
                return Err(ConfigError::invalid(key, format!("duplicate project {p}")));
            }
        }
        Ok(())
    }

    /// The effective configuration as TOML, token redacted (for `--check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The token; validation guarantees it is present.
    pub fn token(&self) -> SecretString {
        self.gitlab
            .token
            .clone()
            .unwrap_or_else(|| SecretString::from(String::new()))
    }
}

/// Shortest value scrubbed from error messages: real tokens are far longer, and scrubbing
/// short common words (`true`, `1h`) would only mangle messages.
const MIN_SCRUBBED: usize = 6;

impl ConfigError {
    /// The error with every occurrence of `secrets` replaced.
    fn scrubbed(self, secrets: &[String]) -> Self {
        let mut secrets: Vec<&str> = secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| s.len() >= MIN_SCRUBBED)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let scrub = |mut text: String| {
            for secret in &secrets {
                if text.contains(secret) {
                    text = text.replace(secret, "<redacted>");
                }
            }
            text
        };
        match self {
            Self::Source(s) => Self::Source(scrub(s)),
            Self::Invalid { key, message } => Self::Invalid {
                key: scrub(key),
                message: scrub(message),
            },
            Self::Syntax { key, at, message } => Self::Syntax {
                key: key.map(scrub),
                at: scrub(at),
                message: scrub(message),
            },
        }
    }
}

/// Keys whose values are (or may be) secrets: `token`, `token_file`, `*_secret`, `*password*`.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

const SECRET_WORDS: [&str; 3] = ["token", "secret", "password"];

/// Values of secret-keyed environment overrides, and `GITLAB_TOKEN`.
fn env_secrets() -> Vec<String> {
    let prefix = format!("{ENV_PREFIX}__");
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.to_string_lossy();
            let secret = k == TOKEN_ENV || (k.starts_with(&prefix) && is_secret_key(&k));
            secret.then(|| v.to_string_lossy().into_owned())
        })
        .collect()
}

/// The token goes into the `PRIVATE-TOKEN` header: one that cannot (a line break, a control
/// character) would fail every request, so it fails here instead. `source` names where it
/// came from; the token itself is never shown.
fn check_token(source: &str, token: &str) -> Result<(), ConfigError> {
    if reqwest::header::HeaderValue::from_str(token).is_err() {
        return Err(ConfigError::invalid(
            source,
            "the token holds a character not allowed in an HTTP header (a line break, a control or non-ASCII character); it is sent in the PRIVATE-TOKEN header",
        ));
    }
    Ok(())
}

/// Reads at most `max` bytes of `path`; more is an error.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

/// A token file: a regular file (a FIFO would block start-up forever, a device like
/// `/dev/zero` never end), of at most [`MAX_TOKEN_FILE_BYTES`]. Symlinks are followed (as
/// Kubernetes mounts Secrets).
fn read_token_file(path: &Path) -> std::io::Result<Vec<u8>> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    read_bounded(path, MAX_TOKEN_FILE_BYTES)
}

/// A configuration file's lines, with those that hold a secret marked, for syntax errors.
struct SourceLines<'a> {
    /// (byte offset of the line's start, the line without its line break)
    lines: Vec<(usize, &'a str)>,
    /// Per line: it holds a secret (a secret key's assignment, or the inside of a multi-line
    /// string one opened).
    secret: Vec<bool>,
    /// Per line: the line whose key it belongs to (itself, or where its multi-line string
    /// opened).
    owner: Vec<usize>,
}

impl<'a> SourceLines<'a> {
    fn new(text: &'a str) -> Self {
        let mut lines = Vec::new();
        let mut offset = 0;
        for raw in text.split_inclusive('\n') {
            lines.push((offset, raw.trim_end_matches(['\n', '\r'])));
            offset += raw.len();
        }
        let mut secret = Vec::with_capacity(lines.len());
        let mut owner = Vec::with_capacity(lines.len());
        // An open multi-line string: (its delimiter, its line, whether its key is secret).
        let mut open: Option<(&str, usize, bool)> = None;
        for (i, (_, line)) in lines.iter().enumerate() {
            if let Some((delim, from, is_secret)) = open {
                secret.push(is_secret);
                owner.push(from);
                if line.matches(delim).count() % 2 == 1 {
                    open = None;
                }
                continue;
            }
            let value_at = secret_assignment(line);
            secret.push(value_at.is_some() || has_userinfo(line));
            owner.push(i);
            // Where the value starts: after a secret key's `=`, or after the first `=`.
            let Some(at) = value_at.or_else(|| line.find('=').map(|e| e + 1)) else {
                continue;
            };
            let value = &line[at..];
            for delim in ["\"\"\"", "'''"] {
                if value.matches(delim).count() % 2 == 1 {
                    open = Some((delim, i, value_at.is_some()));
                    break;
                }
            }
        }
        Self {
            lines,
            secret,
            owner,
        }
    }

    /// Pieces of the secret lines' values, to scrub from any message.
    fn secret_values(&self) -> Vec<String> {
        let mut values = Vec::new();
        for (i, (_, line)) in self.lines.iter().enumerate() {
            if !self.secret[i] {
                continue;
            }
            let value = match secret_assignment(line) {
                Some(at) if self.owner[i] == i => &line[at..],
                _ => line,
            };
            values.extend(
                value
                    .split(|c: char| c.is_whitespace() || "\"',{}[]\\".contains(c))
                    .filter(|piece| piece.len() >= MIN_SCRUBBED)
                    .map(str::to_string),
            );
        }
        values
    }

    /// A syntax error naming the file, line, column and (when the line has one) the key; the
    /// line is quoted unless it holds a secret. The parser's own rendering is not used: it
    /// quotes the source line whatever it holds.
    fn syntax_error(&self, path: &Path, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let index = self
            .lines
            .iter()
            .rposition(|(start, _)| *start <= offset)
            .unwrap_or(0);
        let (start, line) = self.lines.get(index).copied().unwrap_or((0, ""));
        let column = line
            .get(..offset.saturating_sub(start).min(line.len()))
            .map_or(1, |before| before.chars().count() + 1);
        let mut message: String = e
            .message()
            .trim()
            .lines()
            .collect::<Vec<_>>()
            .join("; ")
            .chars()
            .take(300)
            .collect();
        if self.secret.get(index).copied().unwrap_or(false) {
            message.push_str(" (the line is not shown: it holds a secret)");
        } else {
            let shown: String = line.trim().chars().take(200).collect();
            message.push_str(&format!(" in {shown:?}"));
        }
        ConfigError::Syntax {
            key: self.key_of(self.owner.get(index).copied().unwrap_or(index)),
            at: format!("{}:{}:{column}", path.display(), index + 1),
            message,
        }
    }

    /// The dotted key a `key = value` line sets, under the table header above it.
    fn key_of(&self, index: usize) -> Option<String> {
        let (_, line) = self.lines.get(index)?;
        let (lhs, _) = line.split_once('=')?;
        let key = bare_key(lhs)?;
        let table = self.lines[..index]
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, _)| self.owner[*i] == *i)
            .map(|(_, (_, l))| l.trim())
            .find(|l| l.starts_with('['))
            .and_then(|l| bare_key(l.trim_start_matches('[').split(']').next().unwrap_or("")));
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        })
    }
}

/// A (possibly dotted or quoted) key as plain dotted text, if it looks like one.
fn bare_key(text: &str) -> Option<String> {
    let text = text.trim();
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
    ok.then(|| {
        text.split('.')
            .map(|part| part.trim().trim_matches(['"', '\'']))
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// `url` without its `user:password@` part (for a log line); an unparsable URL is not shown.
fn without_userinfo(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            // Both fail only for URLs that cannot have credentials, which is fine.
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

/// Whether `line` holds a URL with credentials (`scheme://user:password@host`): such a line
/// is not quoted either.
fn has_userinfo(line: &str) -> bool {
    line.match_indices("://").any(|(i, sep)| {
        line[i + sep.len()..]
            .split(|c: char| c.is_whitespace() || "/\"'?#".contains(c))
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}

/// Where the value of a secret key's assignment starts in `line` (just after its `=`): a
/// key containing `token`, `secret` or `password`, anywhere in the line (inline tables too).
fn secret_assignment(line: &str) -> Option<usize> {
    let lower = line.to_ascii_lowercase();
    SECRET_WORDS
        .iter()
        .flat_map(|word| lower.match_indices(word).map(|(i, w)| i + w.len()))
        .filter_map(|end| {
            let rest = lower[end..]
                .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "_-\"'".contains(c))
                .trim_start();
            rest.starts_with('=').then(|| line.len() - rest.len() + 1)
        })
        .min()
}

/// The `:id` segment of API paths: the numeric id, or the URL-encoded path. validate()
/// rejects entries with neither; an empty segment then is harmless rather than a panic.
fn api_id(id: Option<u64>, path: Option<&str>) -> String {
    match (id, path) {
        (Some(id), _) => id.to_string(),
        (None, Some(path)) => url::form_urlencoded::byte_serialize(path.as_bytes()).collect(),
        (None, None) => String::new(),
    }
}

/// A `[[projects]]` or `[[groups]]` entry: exactly one of a well-formed `path` (`what` says
/// what it should look like) and a positive `id`.
fn check_entry(
    key: &str,
    path: Option<&str>,
    id: Option<u64>,
    what: &str,
) -> Result<(), ConfigError> {
    match (path, id) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(key, "give `path` or `id`, not both")),
        (None, None) => Err(ConfigError::invalid(key, "needs `path` or `id`")),
        (Some(path), None) => {
            let trimmed = path.trim_matches('/');
            if trimmed.is_empty() || trimmed != path || path.contains("//") {
                Err(ConfigError::invalid(
                    format!("{key}.path"),
                    format!("{path:?} is not {what}"),
                ))
            } else {
                Ok(())
            }
        }
        (None, Some(0)) => Err(ConfigError::invalid(
            format!("{key}.id"),
            "must be positive",
        )),
        (None, Some(_)) => Ok(()),
    }
}

fn check_buckets(key: &str, buckets: &[f64]) -> Result<(), ConfigError> {
    if buckets.is_empty() {
        return Err(ConfigError::invalid(key, "needs at least one bucket"));
    }
    if buckets.iter().any(|b| !b.is_finite() || *b <= 0.0) {
        return Err(ConfigError::invalid(
            key,
            "buckets must be positive, finite seconds",
        ));
    }
    if buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(ConfigError::invalid(
            key,
            "buckets must be strictly increasing",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Config, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .build()
            .map_err(|e| ConfigError::Source(e.to_string()))?;
        let mut cfg: Config = serde_path_to_error::deserialize(raw)
            .map_err(|e| ConfigError::invalid(e.path().to_string(), e.into_inner().to_string()))?;
        cfg.resolve_token(Some("glpat-secret".into()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    const GOOD: &str = r#"
        [gitlab]
        url = "https://gitlab.example.com"
        [poll]
        interval = "15s"
        [[projects]]
        path = "group/sub/project"
        [[projects]]
        id = 42
    "#;

    fn key_of(err: ConfigError) -> String {
        match err {
            ConfigError::Invalid { key, .. } => key,
            ConfigError::Source(s) => panic!("expected a key error, got source error {s}"),
            e @ ConfigError::Syntax { .. } => panic!("expected a key error, got {e}"),
        }
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.poll.interval, Duration::from_secs(15));
        assert_eq!(cfg.poll.backfill, Duration::from_secs(3600));
        assert_eq!(cfg.poll.concurrency, 4);
        assert_eq!(cfg.gitlab.timeout, Duration::from_secs(10));
        assert_eq!(cfg.server.listen, DEFAULT_LISTEN);
        assert_eq!(cfg.projects[0].api_id(), "group%2Fsub%2Fproject");
        assert_eq!(cfg.projects[1].api_id(), "42");
    }

    #[test]
    fn hostile_gitlab_limits_have_defaults_and_are_checked() {
        let cfg = parse(GOOD).unwrap();
        assert_eq!(cfg.limits.max_projects, 20_000);
        assert_eq!(cfg.gitlab.max_clock_skew, Duration::from_secs(86_400));
        let with = |extra: &str| parse(&format!("{extra}\n{GOOD}"));
        let cfg = with("[limits]\nmax_projects = 2").unwrap();
        assert_eq!(cfg.limits.max_projects, 2);
        for (extra, key) in [
            ("[limits]\nmax_projects = 0", "limits.max_projects"),
            // Fewer than the two [[projects]] of GOOD.
            ("[limits]\nmax_projects = 1", "limits.max_projects"),
        ] {
            assert_eq!(key_of(with(extra).unwrap_err()), key, "{extra}");
        }
        let skew = GOOD.replace(
            "url = \"https://gitlab.example.com\"",
            "url = \"https://gitlab.example.com\"\nmax_clock_skew = \"1s\"",
        );
        assert_eq!(key_of(parse(&skew).unwrap_err()), "gitlab.max_clock_skew");
    }

    #[test]
    fn redacted_toml_hides_token() {
        let cfg = parse(GOOD).unwrap();
        let text = cfg.to_redacted_toml();
        assert!(!text.contains("glpat-secret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
        assert!(!format!("{cfg:?}").contains("glpat-secret"));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                GOOD.replace("interval = \"15s\"", "interval = \"fast\""),
                "poll.interval",
            ),
            (
                GOOD.replace("interval = \"15s\"", "interval = \"0s\""),
                "poll.interval",
            ),
            (
                GOOD.replace("interval = \"15s\"", "intervall = \"15s\""),
                "poll.intervall",
            ),
            (
                GOOD.replace("interval = \"15s\"", "concurrency = 0"),
                "poll.concurrency",
            ),
            (
                GOOD.replace("https://gitlab.example.com", "gitlab.example.com"),
                "gitlab.url",
            ),
            (
                GOOD.replace("url = \"https://gitlab.example.com\"", ""),
                "gitlab",
            ),
            (
                GOOD.replace("id = 42", "path = \"Group/Sub/Project\""),
                "projects[1]",
            ),
            (
                GOOD.replace("id = 42", "id = 42\npath = \"a/b\""),
                "projects[1]",
            ),
            (
                format!("{GOOD}\n[server]\nlisten = \"nowhere\""),
                "server.listen",
            ),
            (
                format!("{GOOD}\n[server]\nmax_connections = 0"),
                "server.max_connections",
            ),
            (
                format!("{GOOD}\n[server]\nheader_read_timeout = \"0s\""),
                "server.header_read_timeout",
            ),
            (
                format!("{GOOD}\n[metrics]\nduration_buckets = [5.0, 1.0]"),
                "metrics.duration_buckets",
            ),
            (
                GOOD.replace(
                    "interval = \"15s\"",
                    "interval = \"15s\"\nmax_interval = \"10s\"",
                ),
                "poll.max_interval",
            ),
            (
                format!("{GOOD}\n[discovery]\nexclude = [\"ok\", \"(unclosed\"]"),
                "discovery.exclude[1]",
            ),
            (
                format!("{GOOD}\n[[groups]]\npath = \"a\"\n[discovery]\ngrace_period = \"10m\""),
                "discovery.grace_period",
            ),
            (
                format!("{GOOD}\n[[groups]]\npath = \"a\"\n[[groups]]\npath = \"/b\""),
                "groups[1].path",
            ),
            (
                format!("{GOOD}\n[[groups]]\nid = 3\ninclude_subgroups = \"maybe\""),
                "groups[0].include_subgroups",
            ),
            (
                format!("{GOOD}\n[labels]\nrunner = \"host\""),
                "labels.runner",
            ),
            (
                format!(
                    "{GOOD}\n[labels]\njob_rewrites = [{{ match = 'ok', replace = 'x' }}, {{ match = 'rspec (', replace = 'rspec' }}]"
                ),
                "labels.job_rewrites[1].match",
            ),
            (
                format!(
                    "{GOOD}\n[labels]\njob_rewrites = [{{ match = 'a(b)', replace = '$1_x' }}]"
                ),
                "labels.job_rewrites[0].replace",
            ),
            (
                format!("{GOOD}\n[labels]\njob_rewrites = [{{ match = 'a', replacement = 'b' }}]"),
                "labels.job_rewrites[0].replacement",
            ),
            (
                format!("{GOOD}\n[labels]\ndrop = [\"ref\", \"status\"]"),
                "labels.drop[1]",
            ),
            (
                format!("{GOOD}\n[labels]\ndrop = [\"project\"]"),
                "labels.drop[0]",
            ),
            (
                format!("{GOOD}\n[labels]\ndrop = [\"branch\"]"),
                "labels.drop[0]",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).expect_err(key);
            let msg = err.to_string();
            assert_eq!(key_of(err), key, "{msg}");
        }
        let no_projects = GOOD.split("[[projects]]").next().unwrap_or_default();
        assert_eq!(key_of(parse(no_projects).unwrap_err()), "projects");
    }

    #[test]
    fn discovery_alone_is_enough_and_filters_apply() {
        let no_projects = GOOD.split("[[projects]]").next().unwrap_or_default();
        let cfg = parse(&format!(
            "{no_projects}\n[discovery]\nmembership = true\ninclude = [\"^platform/\"]\nexclude = [\"/sandbox-\"]"
        ))
        .unwrap();
        assert_eq!(cfg.discovery.interval, Duration::from_secs(600));
        assert_eq!(cfg.poll.max_interval, Duration::from_secs(600));
        let f = cfg.discovery.filter().unwrap();
        assert!(f.allows("platform/api"));
        assert!(!f.allows("platform/sandbox-1"));
        assert!(!f.allows("other/api"));
        let cfg = parse(&format!("{no_projects}\n[[groups]]\npath = \"platform\"")).unwrap();
        assert!(cfg.groups[0].include_subgroups, "subgroups by default");
        assert_eq!(cfg.groups[0].api_id(), "platform");
    }

    #[test]
    fn label_policy_parses() {
        let cfg = parse(&format!(
            r#"{GOOD}
            [labels]
            runner = "type"
            drop = ["ref", "failure_reason"]
            [[labels.job_rewrites]]
            match = 'rspec (\w+)'
            replace = 'rspec-${{1}}'
            [[labels.job_rewrites]]
            match = 'deploy-.*'
            replace = 'deploy'
            "#
        ))
        .unwrap();
        let l = &cfg.labels;
        assert_eq!(l.runner, crate::labels::RunnerMode::Type);
        assert_eq!(l.rewrite_job("rspec unit").as_deref(), Some("rspec-unit"));
        assert_eq!(l.rewrite_job("deploy-eu").as_deref(), Some("deploy"));
        assert!(!l.keeps("ref") && !l.keeps("failure_reason") && l.keeps("runner"));
        // The effective configuration round-trips (what --check-config prints).
        let text = cfg.to_redacted_toml();
        assert!(
            text.contains("drop = [") && text.contains("rspec (\\w+)"),
            "{text}"
        );
    }

    #[test]
    fn undroppable_labels_are_named_in_the_error() {
        let err = parse(&format!("{GOOD}\n[labels]\ndrop = [\"status\"]")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("labels.drop[0]") && msg.contains("status"),
            "{msg}"
        );
        let err = parse(&format!("{GOOD}\n[labels]\ndrop = [\"host\"]")).unwrap_err();
        assert!(err.to_string().contains("droppable: ref"), "{err}");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  glpat-from-file\n").unwrap();
        let mut cfg = parse(GOOD).unwrap();
        cfg.gitlab.token = None;
        cfg.gitlab.token_file = Some(file.clone());
        cfg.resolve_token(None).unwrap();
        assert_eq!(cfg.token().expose_secret(), "glpat-from-file");
        cfg.gitlab.token_file = Some(dir.path().join("missing"));
        assert_eq!(
            key_of(cfg.resolve_token(None).unwrap_err()),
            "gitlab.token_file"
        );
    }

    /// Loads `text` as a configuration file, as the binary does.
    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path))
    }

    const HEAD: &str = "[gitlab]\nurl = \"https://gitlab.example.com\"\n";
    const TAIL: &str = "\n[[projects]]\nid = 42\n";

    #[test]
    fn syntax_errors_never_show_a_secret_and_name_the_key() {
        let s = "glpat-SECRETVALUE123";
        let cases = [
            (format!("{HEAD}token = \"{s}\n{TAIL}"), Some("gitlab.token")),
            (format!("{HEAD}token = '{s}\n{TAIL}"), Some("gitlab.token")),
            (
                format!("{HEAD}token = \"{s}\"\ntoken = \"{s}-2\"{TAIL}"),
                Some("gitlab.token"),
            ),
            (
                format!("{HEAD}token = \"{s}\\q\"{TAIL}"),
                Some("gitlab.token"),
            ),
            (format!("{HEAD}token = \"\"\"\n{s}\n{TAIL}"), None),
            (
                format!("{HEAD}token = \"\"\"\nglpat-\n{s}\\q\n\"\"\"{TAIL}"),
                Some("gitlab.token"),
            ),
            (
                format!("gitlab = {{ url = \"https://gitlab.example.com\", token = \"{s} }}{TAIL}"),
                None,
            ),
            (
                format!("{HEAD}token = \"{s}\"\n[server]\nwebhook_secret = \"{s}2{TAIL}"),
                Some("server.webhook_secret"),
            ),
            (
                format!("{HEAD}token_file = \"/run/{s}{TAIL}"),
                Some("gitlab.token_file"),
            ),
        ];
        for (text, key) in cases {
            let err = load_text(&text).expect_err(&text).to_string();
            assert!(
                !err.contains("SECRETVALUE"),
                "secret shown: {err}\nfor\n{text}"
            );
            if let Some(key) = key {
                assert!(err.contains(key), "{key} not named: {err}\nfor\n{text}");
            }
        }
        // Other lines are still quoted, with the line number: the error stays useful.
        let err = load_text(&format!(
            "{HEAD}token = \"{s}\"\n[poll]\ninterval = 30s{TAIL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(!err.contains("SECRETVALUE"), "{err}");
        assert!(
            err.contains("poll.interval") && err.contains(":5:") && err.contains("interval = 30s"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_key_of_the_wrong_type_is_not_shown() {
        for value in [
            "[\"glpat-SECRETVALUE123\"]",
            "{ x = \"glpat-SECRETVALUE123\" }",
        ] {
            let err = load_text(&format!("{HEAD}token = {value}{TAIL}"))
                .unwrap_err()
                .to_string();
            assert!(
                !err.contains("SECRETVALUE") && err.contains("gitlab.token"),
                "{err}"
            );
        }
    }

    #[test]
    fn token_file_must_be_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let with_file =
            |file: &Path| format!("{HEAD}token_file = {:?}{TAIL}", file.display().to_string());
        let big = dir.path().join("big");
        std::fs::write(&big, "a".repeat(100 * 1024)).unwrap();
        let err = load_text(&with_file(&big)).unwrap_err().to_string();
        assert!(
            err.contains("gitlab.token_file") && err.contains("larger"),
            "{err}"
        );
        // A FIFO would block start-up until something writes to it.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let text = with_file(&fifo);
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(load_text(&text).map(|_| ()).map_err(|e| e.to_string()));
            });
            let result = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("reading a FIFO token file does not block");
            let err = result.unwrap_err();
            assert!(err.contains("not a regular file"), "{err}");
        }
        // A device that never ends.
        if Path::new("/dev/zero").exists() {
            let err = load_text(&with_file(Path::new("/dev/zero")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("gitlab.token_file"), "{err}");
        }
    }

    #[test]
    fn a_token_that_is_no_header_value_is_rejected_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "glpat-SECRETVALUE123\nglpat-other\n").unwrap();
        let err = load_text(&format!(
            "{HEAD}token_file = {:?}{TAIL}",
            file.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gitlab.token_file") && !err.contains("SECRETVALUE"),
            "{err}"
        );
        let err = load_text(&format!("{HEAD}token = \"glpat-SECRETVALUE123\\nx\"{TAIL}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gitlab.token") && !err.contains("SECRETVALUE"),
            "{err}"
        );
        let mut cfg = parse(GOOD).unwrap();
        let err = cfg
            .resolve_token(Some("glpat-SECRETVALUE123\r\nx".into()))
            .and_then(|()| cfg.validate())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(TOKEN_ENV) && !err.contains("SECRETVALUE"),
            "{err}"
        );
    }

    #[test]
    fn credentials_in_the_url_are_rejected_unshown() {
        for url in [
            "https://user:hunter2pass@gitlab.example.com",
            "https://hunter2pass@gitlab.example.com",
        ] {
            let err = load_text(&format!(
                "[gitlab]\nurl = \"{url}\"\ntoken = \"glpat-x\"{TAIL}"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("gitlab.url") && !err.contains("hunter2"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_trailing_api_v4_is_stripped() {
        for (given, used) in [
            (
                "https://gitlab.example.com/api/v4",
                "https://gitlab.example.com",
            ),
            (
                "https://gitlab.example.com/api/v4/",
                "https://gitlab.example.com",
            ),
            (
                "https://example.com/gitlab/api/v4",
                "https://example.com/gitlab",
            ),
            ("https://example.com/api/v4x", "https://example.com/api/v4x"),
        ] {
            let cfg = load_text(&format!(
                "[gitlab]\nurl = \"{given}\"\ntoken = \"glpat-x\"{TAIL}"
            ))
            .unwrap();
            assert_eq!(cfg.gitlab.url, used);
        }
        // Built in code, it is refused rather than silently doubled.
        let cfg = Config::new(
            "https://gitlab.example.com/api/v4",
            SecretString::from("glpat-x"),
            vec![ProjectRef {
                path: None,
                id: Some(1),
            }],
        );
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("gitlab.url")
        );
    }
}
