//! Configuration: a TOML file plus `GITLAB_JOBS_EXPORTER__SECTION__KEY` environment overrides,
//! validated completely before anything starts, so a broken config fails fast and names the key.
//!
//! Two forms: [`Config`] is the configuration as written (serde structs, [`raw`]), which code
//! may also build and adjust (`--demo`, tests); [`Config::validate`] turns it into [`Settings`],
//! the only form the daemon runs on. Settings hold checked types (the GitLab URL, the listen
//! address, compiled filters, project references, the shard), so nothing downstream parses,
//! re-checks or falls back.
//!
//! - [`raw`]: the serde structs and their defaults.
//! - `validate`: raw → [`Settings`], one section at a time; errors name the key.
//! - `load`: reading the file, the environment and the token.
//! - `error`: [`ConfigError`], and syntax errors that never quote a secret.
//! - [`labels`]: the label policy (`[labels]`), checked here and applied by [`crate::labels`].

mod error;
pub mod labels;
mod load;
pub mod raw;
mod render;
pub mod size;
mod validate;

#[cfg(test)]
mod failures_tests;
#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::failures::Classifier;

pub use error::ConfigError;
pub use labels::LabelsConfig;
pub use raw::{
    Config, DiscoveryConfig, FailureRule, FailuresConfig, GitlabConfig, GroupRef, LimitsConfig,
    MetricsConfig, PollConfig, ProjectEntry, ServerConfig, StateConfig, WebhookConfig,
    default_duration_buckets, default_queued_buckets,
};
pub use size::ByteSize;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "GITLAB_JOBS_EXPORTER";
/// Environment variable holding the GitLab token (preferred over the file keys).
pub const TOKEN_ENV: &str = "GITLAB_TOKEN";
/// Environment variable holding the webhook secret (preferred over `webhook.secret_file`).
pub const WEBHOOK_SECRET_ENV: &str = "GITLAB_WEBHOOK_SECRET";
/// Default listen address. 39129 lies outside Prometheus' (exhausted) 9100–9999 allocation range.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:39129";
/// How often the running exporter logs its INFO summary.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(600);
/// Largest token file read: a token is ~50 bytes; this stops `/dev/zero`-like runaways.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// The API prefix the client appends to `gitlab.url`.
const API_SUFFIX: &str = "/api/v4";

/// The validated configuration. Made only by [`Config::validate`] (or [`Config::load`]); each
/// field holds a value that is checked by its type or by that validation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub gitlab: GitlabSettings,
    pub server: ServerSettings,
    pub poll: PollConfig,
    pub metrics: MetricsSettings,
    /// `state.dir`: where the checkpoint lives; `None`: nothing persists.
    pub state_dir: Option<PathBuf>,
    pub labels: LabelsConfig,
    pub shard: Shard,
    pub limits: LimitsConfig,
    pub discovery: DiscoverySettings,
    pub projects: Vec<ProjectRef>,
    /// `[webhook]` when enabled.
    pub webhook: Option<WebhookSettings>,
    /// `[failures]`, the rules compiled (also when `classify` is off: `--classify-log`).
    pub failures: FailureSettings,
    /// How often the INFO summary is logged: [`SUMMARY_INTERVAL`], no configuration key
    /// (tests set it shorter, through the command line's hidden `--summary-interval`).
    pub summary_interval: Duration,
    /// The configuration it was made from, for `--check-config` (printed as written, not as
    /// typed, so the output is a configuration file again).
    effective: Config,
}

impl Settings {
    /// The complete effective configuration as TOML, secrets redacted (for `--check-config`):
    /// `shard.index` as this replica resolves it (from `HOSTNAME` when not configured).
    pub fn to_redacted_toml(&self) -> String {
        self.to_redacted_toml_for(std::env::var("HOSTNAME").ok().as_deref())
    }

    /// [`Settings::to_redacted_toml`] on a host named `hostname`.
    pub fn to_redacted_toml_for(&self, hostname: Option<&str>) -> String {
        let (index, count) = self.shard.resolve(hostname);
        let from = match (self.effective.shard.index, hostname) {
            (Some(_), _) => None,
            (None, Some(h)) if count > 1 => Some(format!(
                "{index} from HOSTNAME={}",
                crate::model::text::Bounded(h)
            )),
            (None, _) if count > 1 => Some(format!("{index} (HOSTNAME has no -N ordinal)")),
            (None, _) => None,
        };
        self.effective.render(&render::Effective {
            shard_index: index,
            shard_index_from: from,
        })
    }

    /// The GitLab token.
    pub fn token(&self) -> SecretString {
        self.gitlab.token.clone()
    }
}

/// `[gitlab]`, checked: a usable URL and a token that fits a header.
#[derive(Debug, Clone)]
pub struct GitlabSettings {
    pub url: GitlabUrl,
    pub token: SecretString,
    pub timeout: Duration,
    /// Positive and finite.
    pub max_requests_per_minute: f64,
    /// At least a minute.
    pub max_clock_skew: Duration,
}

/// `gitlab.url`: an http(s) URL with a host, no credentials, query, fragment or `/api/v4`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitlabUrl {
    /// As configured: the checkpoint records it, so it must not change form between versions.
    text: String,
    /// `<url>/api/v4/`, always with a trailing slash so `join` appends.
    api_base: url::Url,
}

impl GitlabUrl {
    /// The URL as configured (less a trailing `/api/v4`, see [`Config::load`]).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The API's base, `<url>/api/v4/`.
    pub fn api_base(&self) -> &url::Url {
        &self.api_base
    }
}

impl fmt::Display for GitlabUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq<str> for GitlabUrl {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for GitlabUrl {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

/// `[server]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// An IP address and port: `server.listen` takes no host names (nothing resolves them).
    pub listen: SocketAddr,
    pub max_connections: NonZeroUsize,
    /// Greater than zero.
    pub header_read_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        let raw = ServerConfig::default();
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: raw.header_read_timeout,
        }
    }
}

/// `[webhook]`, checked (present only when enabled).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Not blank, fits a header (it is compared with `X-Gitlab-Token` and sent to peers).
    pub secret: SecretString,
    /// Its own listener; `None`: served beside `/metrics`. Never `server.listen` itself.
    pub listen: Option<SocketAddr>,
    /// At least `poll.interval`.
    pub reconcile_interval: Duration,
    /// Where another shard's events go (only with `shard.count > 1`).
    pub peer_url: Option<PeerUrl>,
    pub queue: NonZeroUsize,
}

/// `[failures]`, checked: sizes within bounds, the rules compiled.
#[derive(Debug, Clone)]
pub struct FailureSettings {
    /// Read each failed job's log and count its class.
    pub classify: bool,
    /// Within [`MIN_TAIL_BYTES`]..=[`MAX_TAIL_BYTES`].
    pub tail_bytes: usize,
    /// At least `tail_bytes`, at most [`MAX_LOG_BYTES_LIMIT`].
    pub max_log_bytes: u64,
    /// The user's rules, then (unless `default_rules = false`) the defaults.
    pub classifier: Arc<Classifier>,
}

impl Default for FailureSettings {
    /// `[failures]` left out: classification off, the default sizes and rules.
    fn default() -> Self {
        let raw = FailuresConfig::default();
        Self {
            classify: raw.classify,
            // 64 KiB (`default_tail_bytes`) fits any usize.
            tail_bytes: usize::try_from(raw.tail_bytes.bytes()).unwrap_or(64 * 1024),
            max_log_bytes: raw.max_log_bytes.bytes(),
            classifier: Arc::new(Classifier::with_defaults()),
        }
    }
}

/// Bounds of `failures.tail_bytes`: a tail shorter than a kibibyte misses the lines that say
/// why (they come before the runner's closing lines); one longer than a mebibyte only costs
/// memory and regex time per failed job.
pub const MIN_TAIL_BYTES: u64 = 1024;
pub const MAX_TAIL_BYTES: u64 = 1024 * 1024;
/// Upper bound of `failures.max_log_bytes`: every byte up to it is downloaded.
pub const MAX_LOG_BYTES_LIMIT: u64 = 1024 * 1024 * 1024;

/// `webhook.peer_url`: an http(s) URL template holding `{shard}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUrl(String);

impl PeerUrl {
    const PLACEHOLDER: &str = "{shard}";

    pub fn new(template: &str) -> Result<Self, ConfigError> {
        let key = "webhook.peer_url";
        if !template.contains(Self::PLACEHOLDER) {
            return Err(ConfigError::invalid(
                key,
                "must contain {shard} (e.g. http://gitlab-jobs-exporter-{shard}.gitlab-jobs-exporter:39130/webhook)",
            ));
        }
        let sample = template.replace(Self::PLACEHOLDER, "0");
        let url = url::Url::parse(&sample).map_err(|e| {
            ConfigError::invalid(key, format!("not a URL once {{shard}} is filled in ({e})"))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::invalid(
                key,
                "must be an http:// or https:// URL with a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(key, "must not carry credentials"));
        }
        Ok(Self(template.to_string()))
    }

    /// The URL of shard `shard`'s webhook.
    pub fn for_shard(&self, shard: u32) -> String {
        self.0.replace(Self::PLACEHOLDER, &shard.to_string())
    }
}

/// The port of [`DEFAULT_LISTEN`].
const DEFAULT_PORT: u16 = 39129;
/// `server.max_connections` unless configured. (Evaluated at compile time: no run-time panic.)
pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(256).unwrap();

/// `[metrics]`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    pub duration_buckets: Buckets,
    pub queued_buckets: Buckets,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self {
            duration_buckets: Buckets(default_duration_buckets()),
            queued_buckets: Buckets(default_queued_buckets()),
        }
    }
}

/// Histogram bucket bounds in seconds: at least one, positive, finite, strictly increasing.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets(Vec<f64>);

impl Buckets {
    /// `key` names the setting in the error.
    pub fn new(key: &str, bounds: Vec<f64>) -> Result<Self, ConfigError> {
        if bounds.is_empty() {
            return Err(ConfigError::invalid(key, "needs at least one bucket"));
        }
        if bounds.iter().any(|b| !b.is_finite() || *b <= 0.0) {
            return Err(ConfigError::invalid(
                key,
                "buckets must be positive, finite seconds",
            ));
        }
        if bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err(ConfigError::invalid(
                key,
                "buckets must be strictly increasing",
            ));
        }
        Ok(Self(bounds))
    }

    pub fn as_slice(&self) -> &[f64] {
        &self.0
    }
}

/// `[shard]`, checked: `count` at least 1, a configured `index` below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: Option<u32>,
    count: u32,
}

impl Shard {
    pub fn new(cfg: crate::shard::ShardConfig) -> Result<Self, ConfigError> {
        if cfg.count == 0 {
            return Err(ConfigError::invalid("shard.count", "must be at least 1"));
        }
        if let Some(i) = cfg.index
            && i >= cfg.count
        {
            return Err(ConfigError::invalid(
                "shard.index",
                format!("must be below shard.count ({})", cfg.count),
            ));
        }
        Ok(Self {
            index: cfg.index,
            count: cfg.count,
        })
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// This replica's `(index, count)`: the configured index, else the StatefulSet ordinal in
    /// `hostname` (see [`crate::shard::ShardConfig::resolve_index`]). The hostname is no
    /// configuration: an ordinal beyond the count is taken as the last shard.
    pub fn resolve(&self, hostname: Option<&str>) -> (u32, u32) {
        let cfg = crate::shard::ShardConfig {
            index: self.index,
            count: self.count,
        };
        // count >= 1 by construction.
        (cfg.resolve_index(hostname).min(self.count - 1), self.count)
    }
}

/// `[discovery]` and `[[groups]]`, checked.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    pub membership: bool,
    pub groups: Vec<Group>,
    /// `discovery.include`/`exclude`, compiled.
    pub filter: PathFilter,
    pub archived: bool,
    /// Greater than zero.
    pub interval: Duration,
    /// At least `poll.backfill` when discovery is enabled.
    pub grace_period: Duration,
}

impl DiscoverySettings {
    /// Whether anything is to be discovered.
    pub fn enabled(&self) -> bool {
        self.membership || !self.groups.is_empty()
    }
}

/// Compiled `discovery.include`/`exclude`: made only from valid regexes, so a filter in use is
/// always the configured one (there is no "filter failed, watch everything" case).
#[derive(Debug, Clone)]
pub struct PathFilter {
    include: Vec<regex::Regex>,
    exclude: Vec<regex::Regex>,
}

impl PathFilter {
    /// Compiles the regexes; an error names the key (`discovery.include[1]`).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, ConfigError> {
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
        Ok(Self {
            include: compile("include", include)?,
            exclude: compile("exclude", exclude)?,
        })
    }

    pub fn allows(&self, path: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(path)))
            && !self.exclude.iter().any(|r| r.is_match(path))
    }
}

/// A watched project, by numeric id or by path (`group/sub/project`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProjectRef {
    Id(u64),
    Path(String),
}

impl ProjectRef {
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::Id(id) => Some(*id),
            Self::Path(_) => None,
        }
    }

    pub fn path(&self) -> Option<&str> {
        match self {
            Self::Id(_) => None,
            Self::Path(p) => Some(p),
        }
    }

    /// The `:id` segment of API paths: the numeric id, or the URL-encoded path.
    pub fn api_id(&self) -> String {
        match self {
            Self::Id(id) => id.to_string(),
            Self::Path(p) => url::form_urlencoded::byte_serialize(p.as_bytes()).collect(),
        }
    }
}

/// The path, or `id N`: also the project's key in checkpoints, so its form is fixed.
impl fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Path(p) => f.write_str(p),
            Self::Id(id) => write!(f, "id {id}"),
        }
    }
}

/// A group whose projects are watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub key: GroupKey,
    /// Projects of subgroups too (GitLab's `include_subgroups`).
    pub include_subgroups: bool,
}

/// A group, by numeric id or full path (`group/subgroup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKey {
    Id(u64),
    Path(String),
}

impl Group {
    /// The `:id` segment of API paths: the numeric id, or the URL-encoded path.
    pub fn api_id(&self) -> String {
        match &self.key {
            GroupKey::Id(id) => id.to_string(),
            GroupKey::Path(p) => url::form_urlencoded::byte_serialize(p.as_bytes()).collect(),
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            GroupKey::Path(p) => write!(f, "group {p}"),
            GroupKey::Id(id) => write!(f, "group id {id}"),
        }
    }
}
