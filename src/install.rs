//! `--install-webhooks URL`: a project hook sending Job events to `URL`, with the webhook
//! secret as its token, on every watched project, created or brought in line.
//!
//! Watched means what any replica may watch: the configured `[[projects]]` and one discovery
//! pass over `[[groups]]`/membership, for all shards (GitLab posts to one URL; the replica that
//! receives an event forwards it to the owner).
//!
//! Idempotent, matched by URL: a project without a hook at `URL` gets one (`created`); a hook
//! at `URL` without Job events or SSL verification is updated (`updated`); one already right is
//! left alone (`unchanged`). GitLab never shows a hook's token, so `unchanged` cannot vouch for
//! it: after changing the secret, `--update-token` sends it to every existing hook too. An
//! update changes only those fields (and the token): the other events the hook has stay.

use std::io::Write;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::{ProjectRef, Settings};
use crate::fleet::discovery;
use crate::gitlab::hooks::{AlertStatus, HookList, HookParams, ProjectHook};
use crate::gitlab::pager::{PageError, Pager};
use crate::gitlab::{ApiError, ClientBuildError, GitlabClient, RetryPolicy};
use crate::metrics::{Metrics, MetricsError};
use crate::model::text;

/// Hook pages read per project at most (GitLab's default limit is 100 hooks per project).
const MAX_HOOK_PAGES: usize = 20;

#[derive(Debug, Error)]
pub enum InstallError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// The hook URL given on the command line: http(s), with a host, no credentials, no fragment.
/// Its errors never quote it (it may hold a password).
#[derive(Debug, Clone)]
pub struct HookUrl {
    /// As given (trimmed): GitLab stores what it is sent.
    text: String,
    parsed: url::Url,
}

impl HookUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let parsed = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err("must be an http:// or https:// URL with a host".into());
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "must not carry credentials: GitLab authenticates with the webhook secret (X-Gitlab-Token)"
                    .into(),
            );
        }
        if parsed.fragment().is_some() {
            return Err("must not have a #fragment".into());
        }
        Ok(Self {
            text: text.to_string(),
            parsed,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Plain http: GitLab would send the secret unencrypted.
    pub fn is_plain_http(&self) -> bool {
        self.parsed.scheme() == "http"
    }

    /// The same address as `other` (a hook's URL as GitLab lists it), up to URL normalisation
    /// (host case, default port, an empty path).
    pub fn matches(&self, other: &str) -> bool {
        other == self.text || url::Url::parse(other).is_ok_and(|u| u == self.parsed)
    }
}

/// What the command was asked to do.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub url: HookUrl,
    pub secret: SecretString,
    /// Send the token to existing hooks whose fields are already right (after a secret change).
    pub update_token: bool,
}

/// What to do with one project's hooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// PUT this hook; `why` says what differed (for the report).
    Update {
        hook_id: u64,
        why: Vec<&'static str>,
    },
    Keep {
        hook_id: u64,
    },
}

/// [`decide`]'s answer: the action, the hook at the URL it acts on, and how many more hooks
/// share that URL (each delivers every event once more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'a> {
    pub action: Action,
    pub hook: Option<&'a ProjectHook>,
    pub duplicates: usize,
}

/// The pure part: given a project's hooks, what to do. The first hook at `url` (lowest id) is
/// the one kept in line; an update is due when it lacks Job events or SSL verification, or
/// when `update_token` asks to set the token regardless.
pub fn decide<'a>(existing: &'a [ProjectHook], url: &HookUrl, update_token: bool) -> Decision<'a> {
    let mut at_url: Vec<&ProjectHook> = existing.iter().filter(|h| url.matches(&h.url)).collect();
    at_url.sort_by_key(|h| h.id);
    let Some(&hook) = at_url.first() else {
        return Decision {
            action: Action::Create,
            hook: None,
            duplicates: 0,
        };
    };
    let mut why = Vec::new();
    if hook.job_events != Some(true) {
        why.push("job events were off");
    }
    if hook.enable_ssl_verification != Some(true) {
        why.push("SSL verification was off");
    }
    if update_token {
        why.push("token set");
    }
    let action = if why.is_empty() {
        Action::Keep { hook_id: hook.id }
    } else {
        Action::Update {
            hook_id: hook.id,
            why,
        }
    };
    Decision {
        action,
        hook: Some(hook),
        duplicates: at_url.len() - 1,
    }
}

/// How one project ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Updated(Vec<&'static str>),
    Unchanged,
    /// 403: hooks need the Maintainer role.
    Denied,
    NotFound,
    Failed(String),
}

impl Outcome {
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Created | Self::Updated(_) | Self::Unchanged)
    }

    /// From a failed request; `secret` is scrubbed from GitLab's message as a last net.
    fn of_error(e: &ApiError, secret: &SecretString) -> Self {
        match e.status() {
            Some(403) => Self::Denied,
            Some(404) => Self::NotFound,
            _ => Self::Failed(scrub(&e.to_string(), secret)),
        }
    }

    fn of_page_error(e: &PageError, secret: &SecretString) -> Self {
        match e {
            PageError::Api(e) => Self::of_error(e, secret),
            other => Self::Failed(scrub(&other.to_string(), secret)),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created => f.write_str("created"),
            Self::Updated(why) if why.is_empty() => f.write_str("updated"),
            Self::Updated(why) => write!(f, "updated ({})", why.join(", ")),
            Self::Unchanged => f.write_str("unchanged"),
            Self::Denied => f.write_str("denied (needs the Maintainer role)"),
            Self::NotFound => f.write_str("not found"),
            Self::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

fn scrub(message: &str, secret: &SecretString) -> String {
    let s = secret.expose_secret();
    if s.is_empty() {
        return message.to_string();
    }
    message.replace(s, "<redacted>")
}

/// One line of the report: `<path> (id N): <outcome>[; note]…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `path_with_namespace`, or the configured reference when the project was not found.
    pub project: String,
    pub id: Option<u64>,
    pub outcome: Outcome,
    pub notes: Vec<String>,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.project)?;
        if let Some(id) = self.id {
            write!(f, " (id {id})")?;
        }
        write!(f, ": {}", self.outcome)?;
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// What GitLab says about delivering to `hook`, when it has stopped.
pub fn disabled_note(hook: &ProjectHook) -> Option<String> {
    const REENABLE: &str = "a successful delivery re-enables it (send a test Job event from the project's Settings → Webhooks once the URL answers); updating the hook does not";
    match hook.alert_status? {
        AlertStatus::TemporarilyDisabled => Some(match &hook.disabled_until {
            Some(until) => format!(
                "GitLab has disabled this hook after failed deliveries until {}: it tries again then, or {REENABLE}",
                text::Bounded(until)
            ),
            None => format!(
                "GitLab has disabled this hook for a while after failed deliveries: {REENABLE}"
            ),
        }),
        AlertStatus::Disabled => Some(format!(
            "GitLab has disabled this hook for good after repeated failed deliveries: {REENABLE}"
        )),
        AlertStatus::Executable | AlertStatus::Other => None,
    }
}

/// The totals, and whether every project succeeded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Projects not done (denied, not found, failed).
    pub failed: usize,
    /// Discovery sources that could not be listed to their end (their projects may be missing).
    pub incomplete_sources: usize,
}

impl Summary {
    pub fn success(&self) -> bool {
        self.failed == 0 && self.incomplete_sources == 0
    }

    fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated(_) => self.updated += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Denied | Outcome::NotFound | Outcome::Failed(_) => self.failed += 1,
        }
    }
}

/// A watched project, resolved (also `--check-gitlab`'s).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub id: u64,
    pub path: String,
}

/// Adds the projects a discovery pass found that `targets` (the configured ones) does not
/// hold yet, sorted by path.
pub(crate) fn add_discovered(
    targets: &mut Vec<Target>,
    found: impl IntoIterator<Item = discovery::Found>,
) {
    let mut found: Vec<Target> = found
        .into_iter()
        .filter(|f| !targets.iter().any(|t| t.id == f.id))
        .map(|f| Target {
            id: f.id,
            path: f.path,
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    targets.extend(found);
}

/// Runs the command: one line per project on `out`, in order (configured projects first, then
/// discovered ones by path), then the totals.
pub async fn run(
    settings: &Settings,
    opts: &InstallOptions,
    out: &mut (dyn Write + Send),
) -> Result<Summary, InstallError> {
    let metrics = Arc::new(Metrics::new(
        &settings.metrics,
        settings.limits.max_series,
        &settings.labels,
    )?);
    let client = Arc::new(GitlabClient::new(
        &settings.gitlab,
        settings.token(),
        RetryPolicy::default(),
        metrics.clone(),
    )?);
    let mut summary = Summary::default();
    let targets = watched(&client, &metrics, settings, opts, out, &mut summary).await?;
    tracing::info!(
        projects = targets.len(),
        url = opts.url.as_str(),
        "installing webhooks"
    );
    let permits = Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
    let opts = Arc::new(opts.clone());
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|target| {
            let (client, opts, permits) = (client.clone(), opts.clone(), permits.clone());
            tokio::spawn(async move {
                // Never closed, so acquiring only fails if it were: then run unthrottled.
                let _permit = permits.acquire_owned().await.ok();
                install_one(&client, &target, &opts).await
            })
        })
        .collect();
    // Awaited in order, so the report's order does not depend on timing.
    for task in tasks {
        let line = match task.await {
            Ok(line) => line,
            Err(e) => Line {
                project: "(a project)".into(),
                id: None,
                outcome: Outcome::Failed(format!("task failed: {e}")),
                notes: Vec::new(),
            },
        };
        summary.count(&line.outcome);
        writeln!(out, "{line}")?;
    }
    write_totals(out, &summary, &opts)?;
    Ok(summary)
}

/// The configured projects (each looked up: its id and path) and one discovery pass. A
/// configured project that cannot be looked up gets its report line here.
async fn watched(
    client: &GitlabClient,
    metrics: &Metrics,
    settings: &Settings,
    opts: &InstallOptions,
    out: &mut (dyn Write + Send),
    summary: &mut Summary,
) -> Result<Vec<Target>, InstallError> {
    let mut targets: Vec<Target> = Vec::new();
    for r in &settings.projects {
        match client.project(&r.api_id()).await {
            Ok(p) => {
                if !targets.iter().any(|t| t.id == p.id) {
                    targets.push(Target {
                        id: p.id,
                        path: p.path_with_namespace,
                    });
                }
            }
            Err(e) => {
                let line = unresolved(r, &e, &opts.secret);
                summary.count(&line.outcome);
                writeln!(out, "{line}")?;
            }
        }
    }
    if settings.discovery.enabled() {
        let pass = discovery::discover(
            client,
            metrics,
            &settings.discovery,
            settings.limits.max_projects,
        )
        .await;
        for index in &pass.failed {
            let name = settings
                .discovery
                .groups
                .get(*index)
                .map_or_else(|| "membership".to_string(), ToString::to_string);
            writeln!(
                out,
                "discovery: {name} could not be listed to its end (see the log): its projects may be missing"
            )?;
            summary.incomplete_sources += 1;
        }
        if pass.capped {
            writeln!(
                out,
                "discovery: more projects than limits.max_projects; only the first are watched, and only they get a hook"
            )?;
        }
        add_discovered(&mut targets, pass.projects.into_values());
    }
    Ok(targets)
}

fn unresolved(r: &ProjectRef, e: &ApiError, secret: &SecretString) -> Line {
    Line {
        project: r.to_string(),
        id: r.id(),
        outcome: Outcome::of_error(e, secret),
        notes: Vec::new(),
    }
}

/// One project: its hooks listed, then created, updated or left alone.
async fn install_one(client: &GitlabClient, target: &Target, opts: &InstallOptions) -> Line {
    let mut line = Line {
        project: target.path.clone(),
        id: Some(target.id),
        outcome: Outcome::Unchanged,
        notes: Vec::new(),
    };
    let api_id = target.id.to_string();
    let (hooks, bad_items) = match list_hooks(client, &api_id).await {
        Ok(found) => found,
        Err(e) => {
            line.outcome = Outcome::of_page_error(&e, &opts.secret);
            return line;
        }
    };
    let decision = decide(&hooks, &opts.url, opts.update_token);
    let params = |push_events| HookParams {
        url: opts.url.as_str(),
        token: &opts.secret,
        job_events: true,
        enable_ssl_verification: true,
        push_events,
    };
    let state = match &decision.action {
        Action::Create if bad_items > 0 => {
            line.outcome = Outcome::Failed(format!(
                "GitLab listed {bad_items} hook(s) that could not be read; none created, as one of them may be this one"
            ));
            return line;
        }
        // GitLab's default for push_events is true: a new hook says false.
        Action::Create => client.create_hook(&api_id, &params(Some(false))).await,
        // Only our fields: the events the hook already has stay as they are.
        Action::Update { hook_id, .. } => {
            client.update_hook(&api_id, *hook_id, &params(None)).await
        }
        Action::Keep { .. } => Ok(decision.hook.cloned()),
    };
    match state {
        Ok(written) => {
            line.outcome = match decision.action {
                Action::Create => Outcome::Created,
                Action::Update { why, .. } => Outcome::Updated(why),
                Action::Keep { .. } => Outcome::Unchanged,
            };
            // The state after the write; the hook as listed when the answer was unreadable.
            if let Some(note) = written.as_ref().or(decision.hook).and_then(disabled_note) {
                line.notes.push(note);
            }
        }
        Err(e) => line.outcome = Outcome::of_error(&e, &opts.secret),
    }
    if decision.duplicates > 0 {
        line.notes.push(format!(
            "{} more hook(s) with this URL: each event arrives once per hook (counted once all the same); delete the extra ones under Settings → Webhooks",
            decision.duplicates
        ));
    }
    line
}

/// Every hook of the project (all pages), and how many listed items were not readable hooks.
async fn list_hooks(
    client: &GitlabClient,
    project: &str,
) -> Result<(Vec<ProjectHook>, usize), PageError> {
    let mut pages = Pager::new(HookList { client, project }, MAX_HOOK_PAGES);
    let (mut hooks, mut bad) = (Vec::new(), 0);
    while let Some(page) = pages.next().await? {
        hooks.extend(page.hooks);
        bad += page.bad_items;
    }
    Ok((hooks, bad))
}

fn write_totals(
    out: &mut (dyn Write + Send),
    s: &Summary,
    opts: &InstallOptions,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{} created, {} updated, {} unchanged, {} not done",
        s.created, s.updated, s.unchanged, s.failed
    )?;
    if s.unchanged > 0 && !opts.update_token {
        writeln!(
            out,
            "note: GitLab never shows a hook's token, so unchanged hooks keep theirs; after changing the webhook secret, run again with --update-token"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://exporter.example.com/webhook";

    fn hook(id: u64, url: &str, job_events: Option<bool>, ssl: Option<bool>) -> ProjectHook {
        ProjectHook {
            id,
            url: url.into(),
            job_events,
            push_events: Some(false),
            pipeline_events: None,
            enable_ssl_verification: ssl,
            alert_status: None,
            disabled_until: None,
        }
    }

    fn url() -> HookUrl {
        HookUrl::parse(URL).unwrap()
    }

    #[test]
    fn no_hook_at_the_url_means_create() {
        let others = [hook(
            1,
            "https://elsewhere.example/hook",
            Some(true),
            Some(true),
        )];
        let d = decide(&others, &url(), false);
        assert_eq!(d.action, Action::Create);
        assert_eq!((d.hook, d.duplicates), (None, 0));
        assert_eq!(decide(&[], &url(), true).action, Action::Create);
    }

    #[test]
    fn a_hook_already_right_is_kept_unless_the_token_is_to_be_set() {
        let hooks = [hook(7, URL, Some(true), Some(true))];
        let d = decide(&hooks, &url(), false);
        assert_eq!(d.action, Action::Keep { hook_id: 7 });
        assert_eq!(d.hook, Some(&hooks[0]));
        assert_eq!(
            decide(&hooks, &url(), true).action,
            Action::Update {
                hook_id: 7,
                why: vec!["token set"]
            }
        );
    }

    #[test]
    fn a_hook_without_job_events_or_ssl_verification_is_updated() {
        let hooks = [hook(3, URL, Some(false), None)];
        assert_eq!(
            decide(&hooks, &url(), false).action,
            Action::Update {
                hook_id: 3,
                why: vec!["job events were off", "SSL verification was off"]
            }
        );
        let hooks = [hook(3, URL, None, Some(true))];
        assert_eq!(
            decide(&hooks, &url(), false).action,
            Action::Update {
                hook_id: 3,
                why: vec!["job events were off"]
            }
        );
    }

    #[test]
    fn the_url_matches_up_to_normalisation_and_the_lowest_id_wins() {
        let hooks = [
            hook(
                9,
                "https://EXPORTER.example.com:443/webhook",
                Some(true),
                Some(true),
            ),
            hook(4, URL, Some(false), Some(true)),
            hook(
                5,
                "https://exporter.example.com/webhook/",
                Some(false),
                Some(true),
            ),
        ];
        let d = decide(&hooks, &url(), false);
        assert_eq!(d.duplicates, 1, "the trailing slash is another URL");
        assert_eq!(
            d.action,
            Action::Update {
                hook_id: 4,
                why: vec!["job events were off"]
            }
        );
    }

    #[test]
    fn hook_urls_are_checked_without_quoting_them() {
        assert!(HookUrl::parse(URL).is_ok());
        assert!(
            HookUrl::parse(" http://10.0.0.1:39130/webhook ")
                .unwrap()
                .is_plain_http()
        );
        for bad in [
            "exporter.example.com/webhook",
            "ftp://exporter.example.com/webhook",
            "https://user:hunter2@exporter.example.com/webhook",
            "https://exporter.example.com/webhook#x",
            "",
        ] {
            let err = HookUrl::parse(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn lines_and_notes_read_as_documented() {
        let mut h = hook(1, URL, Some(true), Some(true));
        assert_eq!(disabled_note(&h), None);
        h.alert_status = Some(AlertStatus::TemporarilyDisabled);
        h.disabled_until = Some("2026-12-02T13:00:00Z".into());
        let note = disabled_note(&h).unwrap();
        assert!(note.contains("until 2026-12-02T13:00:00Z"), "{note}");
        h.alert_status = Some(AlertStatus::Disabled);
        assert!(disabled_note(&h).unwrap().contains("for good"));
        let line = Line {
            project: "acme/api".into(),
            id: Some(12),
            outcome: Outcome::Updated(vec!["job events were off"]),
            notes: vec!["n".into()],
        };
        assert_eq!(
            line.to_string(),
            "acme/api (id 12): updated (job events were off); n"
        );
        assert!(Outcome::Unchanged.succeeded() && !Outcome::Denied.succeeded());
    }

    #[test]
    fn errors_map_to_outcomes_and_lose_the_secret() {
        let secret = SecretString::from("whsec-XYZ".to_string());
        let status = |status, message: &str| ApiError::Status {
            endpoint: "hooks",
            status,
            message: message.into(),
        };
        assert_eq!(
            Outcome::of_error(&status(403, "403 Forbidden"), &secret),
            Outcome::Denied
        );
        assert_eq!(
            Outcome::of_error(&status(404, "x"), &secret),
            Outcome::NotFound
        );
        let Outcome::Failed(reason) =
            Outcome::of_error(&status(422, "token whsec-XYZ is bad"), &secret)
        else {
            panic!("a 422 is a failure");
        };
        assert!(
            reason.contains("HTTP 422") && !reason.contains("whsec-XYZ"),
            "{reason}"
        );
    }
}
