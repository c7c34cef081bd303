//! The one validation step: a [`Config`] as written becomes [`Settings`], section by section.
//! Every error names the key it is about.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::load::check_token;
use super::{
    API_SUFFIX, Buckets, ByteSize, Config, ConfigError, DiscoveryConfig, DiscoverySettings,
    FailureSettings, FailuresConfig, GitlabConfig, GitlabSettings, GitlabUrl, Group, GroupKey,
    GroupRef, LabelsConfig, LimitsConfig, MAX_LOG_BYTES_LIMIT, MAX_TAIL_BYTES, MIN_TAIL_BYTES,
    MetricsConfig, MetricsSettings, PathFilter, PeerUrl, PollConfig, ProjectEntry, ProjectRef,
    ServerConfig, ServerSettings, Settings, Shard, TOKEN_ENV, WEBHOOK_SECRET_ENV, WebhookConfig,
    WebhookSettings,
};
use crate::failures::{Classifier, UserRule};

impl Config {
    /// Checks every value that deserialisation alone cannot, and returns them typed.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let gitlab = self.gitlab.validate()?;
        let server = self.server.validate()?;
        check_poll(&self.poll)?;
        if let Some(dir) = &self.state.dir
            && dir.as_os_str().is_empty()
        {
            return Err(ConfigError::invalid("state.dir", "is empty"));
        }
        check_limits(&self.limits, self.projects.len())?;
        let shard = Shard::new(self.shard)?;
        check_labels(&self.labels)?;
        let metrics = self.metrics.validate()?;
        let discovery = self.discovery.validate(&self.groups, self.poll.backfill)?;
        let webhook = self.webhook.validate(&server, &self.poll, shard)?;
        let failures = self.failures.validate()?;
        if self.projects.is_empty() && !discovery.enabled() {
            return Err(ConfigError::invalid(
                "projects",
                "no project to watch: add a [[projects]] or [[groups]] entry (`path` or `id`), or set discovery.membership = true",
            ));
        }
        Ok(Settings {
            gitlab,
            server,
            poll: self.poll.clone(),
            metrics,
            state_dir: self.state.dir.clone(),
            labels: self.labels.clone(),
            shard,
            limits: self.limits.clone(),
            discovery,
            projects: projects(&self.projects)?,
            webhook,
            failures,
            summary_interval: super::SUMMARY_INTERVAL,
            effective: self.clone(),
        })
    }
}

impl GitlabConfig {
    /// `[gitlab]` alone (the token resolved already, see [`Config::load`]).
    pub fn validate(&self) -> Result<GitlabSettings, ConfigError> {
        let url = gitlab_url(&self.url)?;
        let token = match &self.token {
            None => {
                return Err(ConfigError::invalid(
                    "gitlab.token",
                    format!("no token: set {TOKEN_ENV} or gitlab.token_file"),
                ));
            }
            Some(t) if t.expose_secret().trim().is_empty() => {
                return Err(ConfigError::invalid("gitlab.token", "is empty"));
            }
            Some(t) => {
                check_token("gitlab.token", t.expose_secret())?;
                t.clone()
            }
        };
        positive("gitlab.timeout", self.timeout)?;
        let rpm = self.max_requests_per_minute;
        if !rpm.is_finite() || rpm <= 0.0 {
            return Err(ConfigError::invalid(
                "gitlab.max_requests_per_minute",
                "must be a positive number (fractions allowed, e.g. 0.5)",
            ));
        }
        if self.max_clock_skew < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "gitlab.max_clock_skew",
                "must be at least 1m (clocks drift)",
            ));
        }
        Ok(GitlabSettings {
            url,
            token,
            timeout: self.timeout,
            max_requests_per_minute: rpm,
            max_clock_skew: self.max_clock_skew,
        })
    }
}

/// `gitlab.url`: http(s) with a host; no query, fragment, credentials or `/api/v4`.
fn gitlab_url(text: &str) -> Result<GitlabUrl, ConfigError> {
    let invalid = |message: &str| Err(ConfigError::invalid("gitlab.url", message));
    let url = url::Url::parse(text).map_err(|e| {
        ConfigError::invalid(
            "gitlab.url",
            format!("not a URL ({e}); expected e.g. https://gitlab.example.com"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return invalid("must be an http:// or https:// URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return invalid("must not carry a query or fragment");
    }
    // Credentials in the URL would be printed by --check-config and the start-up log;
    // the token has its own, redacted, places.
    if !url.username().is_empty() || url.password().is_some() {
        return invalid(&format!(
            "must not carry credentials (user:password@); give the token in {TOKEN_ENV}, gitlab.token_file or gitlab.token"
        ));
    }
    if url.path().trim_end_matches('/').ends_with(API_SUFFIX) {
        return invalid(
            "must not end with /api/v4: it is appended to it (give e.g. https://gitlab.example.com)",
        );
    }
    let mut api_base = url.clone();
    api_base.set_path(&format!(
        "{}{API_SUFFIX}/",
        url.path().trim_end_matches('/')
    ));
    Ok(GitlabUrl {
        text: text.to_string(),
        api_base,
    })
}

impl ServerConfig {
    pub fn validate(&self) -> Result<ServerSettings, ConfigError> {
        let listen = self.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError::invalid(
                "server.listen",
                format!("{e}; expected ADDRESS:PORT, e.g. 0.0.0.0:39129"),
            )
        })?;
        let max_connections = NonZeroUsize::new(self.max_connections)
            .ok_or_else(|| ConfigError::invalid("server.max_connections", "must be at least 1"))?;
        positive("server.header_read_timeout", self.header_read_timeout)?;
        Ok(ServerSettings {
            listen,
            max_connections,
            header_read_timeout: self.header_read_timeout,
        })
    }
}

impl WebhookConfig {
    /// `[webhook]` (the secret resolved already, see [`Config::load`]); `None` when disabled.
    pub fn validate(
        &self,
        server: &ServerSettings,
        poll: &PollConfig,
        shard: Shard,
    ) -> Result<Option<WebhookSettings>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let secret = match &self.secret {
            Some(s) if !s.expose_secret().trim().is_empty() => s.clone(),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "webhook.secret_file",
                    "the secret is empty",
                ));
            }
            None => {
                return Err(ConfigError::invalid(
                    "webhook.enabled",
                    format!(
                        "webhooks need a secret (GitLab sends it in X-Gitlab-Token): set {WEBHOOK_SECRET_ENV} or webhook.secret_file"
                    ),
                ));
            }
        };
        let listen = match &self.listen {
            None => None,
            Some(text) => {
                let addr = text.parse::<SocketAddr>().map_err(|e| {
                    ConfigError::invalid(
                        "webhook.listen",
                        format!("{e}; expected ADDRESS:PORT, e.g. 0.0.0.0:39130"),
                    )
                })?;
                if addr == server.listen {
                    return Err(ConfigError::invalid(
                        "webhook.listen",
                        "is server.listen: leave it unset to serve /webhook there",
                    ));
                }
                Some(addr)
            }
        };
        if self.reconcile_interval < poll.interval {
            return Err(ConfigError::invalid(
                "webhook.reconcile_interval",
                format!(
                    "must be at least poll.interval ({})",
                    humantime::format_duration(poll.interval)
                ),
            ));
        }
        let peer_url = match &self.peer_url {
            Some(t) => Some(PeerUrl::new(t)?),
            None => None,
        };
        if shard.count() > 1 && peer_url.is_none() {
            tracing::warn!(
                "webhook.peer_url is not set while shard.count > 1: events for other shards' projects are dropped (their polls still count them)"
            );
        }
        let queue = NonZeroUsize::new(self.queue)
            .ok_or_else(|| ConfigError::invalid("webhook.queue", "must be at least 1"))?;
        Ok(Some(WebhookSettings {
            secret,
            listen,
            reconcile_interval: self.reconcile_interval,
            peer_url,
            queue,
        }))
    }
}

impl FailuresConfig {
    /// `[failures]`: the sizes within bounds, the rules compiled (whether or not `classify`
    /// is on: `--classify-log` uses them too). Errors name the key, e.g.
    /// `failures.rules[2].match`.
    pub fn validate(&self) -> Result<FailureSettings, ConfigError> {
        let tail = self.tail_bytes.bytes();
        if !(MIN_TAIL_BYTES..=MAX_TAIL_BYTES).contains(&tail) {
            return Err(ConfigError::invalid(
                "failures.tail_bytes",
                format!(
                    "must be between {} and {} (the end of the log that is classified)",
                    ByteSize(MIN_TAIL_BYTES),
                    ByteSize(MAX_TAIL_BYTES)
                ),
            ));
        }
        let max = self.max_log_bytes.bytes();
        if max < tail {
            return Err(ConfigError::invalid(
                "failures.max_log_bytes",
                format!("must be at least failures.tail_bytes ({})", self.tail_bytes),
            ));
        }
        if max > MAX_LOG_BYTES_LIMIT {
            return Err(ConfigError::invalid(
                "failures.max_log_bytes",
                format!(
                    "must be at most {} (every byte of a log up to it is downloaded)",
                    ByteSize(MAX_LOG_BYTES_LIMIT)
                ),
            ));
        }
        let rules: Vec<UserRule> = self
            .rules
            .iter()
            .map(|r| UserRule {
                class: r.class.clone(),
                pattern: r.pattern.clone(),
            })
            .collect();
        let classifier = Classifier::new(&rules, self.default_rules)
            .map_err(|e| ConfigError::invalid(format!("failures.{}", e.key()), e.to_string()))?;
        Ok(FailureSettings {
            classify: self.classify,
            // At most MAX_TAIL_BYTES (1 MiB), checked above.
            tail_bytes: usize::try_from(tail).unwrap_or(usize::MAX),
            max_log_bytes: max,
            classifier: Arc::new(classifier),
        })
    }
}

fn check_poll(poll: &PollConfig) -> Result<(), ConfigError> {
    positive("poll.interval", poll.interval)?;
    if poll.max_interval < poll.interval {
        return Err(ConfigError::invalid(
            "poll.max_interval",
            format!(
                "must be at least poll.interval ({})",
                humantime::format_duration(poll.interval)
            ),
        ));
    }
    at_least_one("poll.concurrency", poll.concurrency)
}

/// `configured` is the number of `[[projects]]`.
fn check_limits(limits: &LimitsConfig, configured: usize) -> Result<(), ConfigError> {
    at_least_one("limits.max_series", limits.max_series)?;
    at_least_one("limits.max_projects", limits.max_projects)?;
    if configured > limits.max_projects {
        return Err(ConfigError::invalid(
            "limits.max_projects",
            format!("is below the {configured} configured [[projects]]"),
        ));
    }
    Ok(())
}

/// What deserialisation leaves unchecked: that each replacement names only existing groups.
fn check_labels(labels: &LabelsConfig) -> Result<(), ConfigError> {
    for (i, rule) in labels.job_rewrites.iter().enumerate() {
        rule.check_replacement().map_err(|e| {
            ConfigError::invalid(format!("labels.job_rewrites[{i}].replace"), e.to_string())
        })?;
    }
    Ok(())
}

impl MetricsConfig {
    pub fn validate(&self) -> Result<MetricsSettings, ConfigError> {
        Ok(MetricsSettings {
            duration_buckets: Buckets::new(
                "metrics.duration_buckets",
                self.duration_buckets.clone(),
            )?,
            queued_buckets: Buckets::new("metrics.queued_buckets", self.queued_buckets.clone())?,
        })
    }
}

impl DiscoveryConfig {
    /// `[discovery]` with the `[[groups]]` it lists; `backfill` is `poll.backfill`.
    pub fn validate(
        &self,
        groups: &[GroupRef],
        backfill: Duration,
    ) -> Result<DiscoverySettings, ConfigError> {
        positive("discovery.interval", self.interval)?;
        let filter = PathFilter::new(&self.include, &self.exclude)?;
        let enabled = self.membership || !groups.is_empty();
        if enabled && self.grace_period < backfill {
            return Err(ConfigError::invalid(
                "discovery.grace_period",
                format!(
                    "must be at least poll.backfill ({}): a project found again after its grace period starts over with the backfill window, which must not reach jobs counted before it left",
                    humantime::format_duration(backfill)
                ),
            ));
        }
        Ok(DiscoverySettings {
            membership: self.membership,
            groups: self::groups(groups)?,
            filter,
            archived: self.archived,
            interval: self.interval,
            grace_period: self.grace_period,
        })
    }
}

fn groups(entries: &[GroupRef]) -> Result<Vec<Group>, ConfigError> {
    let mut seen = HashSet::new();
    let mut groups = Vec::with_capacity(entries.len());
    for (i, g) in entries.iter().enumerate() {
        let key = format!("groups[{i}]");
        let entry = check_entry(
            &key,
            g.path.as_deref(),
            g.id,
            "a group path like group/subgroup",
        )?;
        // Paths are case-insensitive in GitLab.
        if !seen.insert((g.path.as_ref().map(|s| s.to_lowercase()), g.id)) {
            return Err(ConfigError::invalid(key, format!("duplicate {g}")));
        }
        let key = match entry {
            ProjectRef::Id(id) => GroupKey::Id(id),
            ProjectRef::Path(path) => GroupKey::Path(path),
        };
        groups.push(Group {
            key,
            include_subgroups: g.include_subgroups,
        });
    }
    Ok(groups)
}

fn projects(entries: &[ProjectEntry]) -> Result<Vec<ProjectRef>, ConfigError> {
    let mut seen = HashSet::new();
    let mut projects = Vec::with_capacity(entries.len());
    for (i, p) in entries.iter().enumerate() {
        let key = format!("projects[{i}]");
        let project = check_entry(
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
        projects.push(project);
    }
    Ok(projects)
}

/// A `[[projects]]` or `[[groups]]` entry: exactly one of a well-formed `path` (`what` says
/// what it should look like) and a positive `id`.
fn check_entry(
    key: &str,
    path: Option<&str>,
    id: Option<u64>,
    what: &str,
) -> Result<ProjectRef, ConfigError> {
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
                Ok(ProjectRef::Path(path.to_string()))
            }
        }
        (None, Some(0)) => Err(ConfigError::invalid(
            format!("{key}.id"),
            "must be positive",
        )),
        (None, Some(id)) => Ok(ProjectRef::Id(id)),
    }
}

fn positive(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(key, "must be greater than zero"));
    }
    Ok(())
}

fn at_least_one(key: &str, n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::invalid(key, "must be at least 1"));
    }
    Ok(())
}
