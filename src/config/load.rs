//! Reading the configuration: the file (bounded, checked as TOML before anything quotes it),
//! the environment overrides and the token, then [`Config::validate`].

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::error::{SourceLines, is_secret_key};
use super::{
    API_SUFFIX, Config, ConfigError, ENV_PREFIX, FailureSettings, MAX_CONFIG_BYTES,
    MAX_TOKEN_FILE_BYTES, Settings, TOKEN_ENV, WEBHOOK_SECRET_ENV,
};

impl Config {
    /// Reads `path` (if given) and the environment, then validates. The token is resolved here
    /// too, so a missing or unreadable token file is a config error, not a runtime surprise.
    /// No error carries a secret: secret-keyed lines are never quoted, and whatever a secret
    /// key holds (in the file or the environment) is scrubbed from the message as a last net.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with(path, |_| {})
    }

    /// Like [`Config::load`], with `adjust` applied to the configuration as read before it
    /// is validated (for command-line overrides).
    pub fn load_with(
        path: Option<&Path>,
        adjust: impl FnOnce(&mut Config),
    ) -> Result<Settings, ConfigError> {
        let mut secrets = env_secrets();
        let result = Self::read(path, &mut secrets).and_then(|mut cfg| {
            // Before the secrets are resolved: an adjustment may enable what needs one
            // (`--install-webhooks` needs the webhook secret whether or not `webhook.enabled`).
            adjust(&mut cfg);
            cfg.resolve_secrets(&mut secrets)?;
            cfg.validate()
        });
        result.map_err(|e| e.scrubbed(&secrets))
    }

    /// `[failures]` alone, from `path` and the environment (`--classify-log`): the whole file
    /// must still be a configuration (syntax, known keys), but nothing else is validated and no
    /// token or secret is needed, so rules can be tried where the exporter does not run.
    pub fn load_failures(path: &Path) -> Result<FailureSettings, ConfigError> {
        let mut secrets = env_secrets();
        Self::read(Some(path), &mut secrets)
            .and_then(|cfg| cfg.failures.validate())
            .map_err(|e| e.scrubbed(&secrets))
    }

    /// The file and the environment, deserialised; `secrets` collects every secret value
    /// seen, to scrub from errors.
    fn read(path: Option<&Path>, secrets: &mut Vec<String>) -> Result<Self, ConfigError> {
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
                duration_hint(e.into_inner().to_string())
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
        Ok(cfg)
    }

    /// The token and the webhook secret from the environment and their files; `secrets`
    /// gains the webhook secret, to scrub from errors.
    fn resolve_secrets(&mut self, secrets: &mut Vec<String>) -> Result<(), ConfigError> {
        self.resolve_token(std::env::var(TOKEN_ENV).ok())?;
        self.resolve_webhook_secret(std::env::var(WEBHOOK_SECRET_ENV).ok())?;
        if let Some(s) = &self.webhook.secret {
            secrets.push(s.expose_secret().to_string());
        }
        Ok(())
    }

    /// `gitlab.url` given with GitLab's `/api/v4` (as copied from API docs): the client
    /// appends it itself, so every request would go to `/api/v4/api/v4/…` and answer 404.
    fn strip_api_suffix(&mut self) {
        let trimmed = self.gitlab.url.trim_end_matches('/');
        if let Some(base) = trimmed.strip_suffix(API_SUFFIX) {
            let base = base.to_string();
            // Logged before validation refuses credentials in the URL: never show them.
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
    pub(super) fn resolve_token(&mut self, env_token: Option<String>) -> Result<(), ConfigError> {
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
}

impl Config {
    /// The webhook secret: `GITLAB_WEBHOOK_SECRET`, then `webhook.secret_file` (read only when
    /// webhooks are enabled; a broken path then fails start-up). Errors never show it.
    pub(super) fn resolve_webhook_secret(
        &mut self,
        env_secret: Option<String>,
    ) -> Result<(), ConfigError> {
        if !self.webhook.enabled {
            return Ok(());
        }
        let key = "webhook.secret_file";
        let mut from_file = None;
        if let Some(file) = &self.webhook.secret_file {
            let bytes = read_token_file(file)
                .map_err(|e| ConfigError::invalid(key, format!("cannot read the file: {e}")))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| ConfigError::invalid(key, "the file is not UTF-8 text"))?;
            let text = text.trim();
            if text.is_empty() {
                return Err(ConfigError::invalid(key, "the file is empty"));
            }
            check_token(key, text)?;
            from_file = Some(text.to_string());
        }
        let env_secret = env_secret
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        if let Some(t) = &env_secret {
            check_token(WEBHOOK_SECRET_ENV, t)?;
        }
        if let Some(t) = env_secret.or(from_file) {
            self.webhook.secret = Some(SecretString::from(t));
        }
        Ok(())
    }
}

/// serde's message for a duration key given something else (`interval = 30`, which the
/// environment's parsing may also turn into the string "30"): says what a duration looks like.
fn duration_hint(message: String) -> String {
    // serde's `invalid value: string "30", expected a duration`, to which the `config`
    // crate may add ` for key `poll.interval``.
    let Some((head, _)) = message.split_once(", expected a duration") else {
        return message;
    };
    let got = head
        .strip_prefix("invalid type: ")
        .or_else(|| head.strip_prefix("invalid value: "))
        .unwrap_or(head);
    // A number in the file reaches serde as a string: shown as written.
    let got = got
        .strip_prefix("string ")
        .or_else(|| got.strip_prefix("integer "))
        .unwrap_or(got)
        .trim_matches(|c| c == '"' || c == '`');
    format!(
        "expected a duration such as \"30s\" (a number with its unit: \"30s\", \"5m\", \"1h\"), got {got}"
    )
}

/// Values of secret-keyed environment overrides, and `GITLAB_TOKEN`.
fn env_secrets() -> Vec<String> {
    let prefix = format!("{ENV_PREFIX}__");
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.to_string_lossy();
            let secret = k == TOKEN_ENV
                || k == WEBHOOK_SECRET_ENV
                || (k.starts_with(&prefix) && is_secret_key(&k));
            secret.then(|| v.to_string_lossy().into_owned())
        })
        .collect()
}

/// The token goes into the `PRIVATE-TOKEN` header: one that cannot (a line break, a control
/// character) would fail every request, so it fails here instead. `source` names where it
/// came from; the token itself is never shown.
pub(super) fn check_token(source: &str, token: &str) -> Result<(), ConfigError> {
    if reqwest::header::HeaderValue::from_str(token).is_err() {
        return Err(ConfigError::invalid(
            source,
            format!(
                "the value holds a character not allowed in an HTTP header (a line break, a control or non-ASCII character); it is sent in the {} header",
                if source.contains("WEBHOOK") || source.starts_with("webhook") {
                    "X-Gitlab-Token"
                } else {
                    "PRIVATE-TOKEN"
                }
            ),
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
