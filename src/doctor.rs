//! `--check-gitlab`: connects with the configured client settings and says, in a short table,
//! whether the exporter will work: GitLab reachable and its version; the token valid, its
//! scopes and expiry; each configured project found with its jobs readable; each group listed
//! and how many projects discovery would watch; the `RateLimit-*` headers seen; with
//! `[webhook]`, each watched project's hook and whether GitLab disabled it. Every problem is
//! printed with its fix.
//!
//! Read-only: only GETs, through the exporter's own client (its timeouts, TLS, the token in a
//! sensitive header, no redirects, capped bodies), fewer retries. GitLab's strings are shown
//! bounded and escaped ([`crate::model::text`]); the token is scrubbed from the output.

mod checks;
mod hooks;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::Settings;
use crate::fleet::discovery;
use crate::gitlab::meta::RateLimitSeen;
use crate::gitlab::{ClientBuildError, GitlabClient, ProjectsRequest, RetryPolicy};
use crate::install::HookUrl;
use crate::metrics::{Metrics, MetricsError};
use crate::model::text::Bounded;
pub use checks::EXPIRY_WARNING_DAYS;
use report::{Report, Status};
pub use report::{Verdict, scrub};

/// Exit code: GitLab unreachable.
pub const EXIT_UNREACHABLE: u8 = 1;
/// Exit code: GitLab answered, something is wrong.
pub const EXIT_PROBLEMS: u8 = 3;
/// Discovery is given this long at most (a big instance lists thousands of projects).
const DISCOVERY_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Error)]
pub enum DoctorError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
}

/// What the command was asked.
#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// `--hook-url`: the hook URL to look for (as `--install-webhooks` matches it); without,
    /// any hook sending Job events counts.
    pub hook_url: Option<HookUrl>,
}

pub(crate) use crate::install::Target;

/// The `RateLimit-*` headers seen: the last answer that carried them.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    last: Option<RateLimitSeen>,
}

impl Seen {
    fn note(&mut self, rl: RateLimitSeen) {
        if rl.any() {
            self.last = Some(rl);
        }
    }
}

/// Runs every check; the report says how it went ([`Report::verdict`]).
pub async fn run(settings: &Settings, opts: &DoctorOptions) -> Result<Report, DoctorError> {
    let metrics = Arc::new(Metrics::new(
        &settings.metrics,
        settings.limits.max_series,
        &settings.labels,
    )?);
    // One retry, quickly: a doctor should answer in seconds, not wait out a long outage.
    let retry = RetryPolicy {
        retries: 1,
        min_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(1),
        // A rate limit is reported, not waited out (GitLab may ask for minutes).
        max_pause: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let client = Arc::new(GitlabClient::new(
        &settings.gitlab,
        settings.token(),
        retry,
        metrics.clone(),
    )?);
    let mut report = Report {
        gitlab_url: Bounded(settings.gitlab.url.as_str()).to_string(),
        ..Report::default()
    };
    let mut seen = Seen::default();
    if !checks::gitlab(&client, &mut report, &mut seen).await
        || !checks::token(&client, &mut report, &mut seen).await
    {
        return Ok(report);
    }
    let mut targets = configured(&client, settings, &mut report, &mut seen).await;
    watched(&client, &metrics, settings, &mut report, &mut targets).await;
    rate_limit(settings, &mut report, &seen);
    if settings.webhook.is_some() {
        hooks::check(&client, settings, opts, &targets, &mut report).await;
    }
    Ok(report)
}

/// Each configured project, in order (looked up concurrently within `poll.concurrency`).
async fn configured(
    client: &Arc<GitlabClient>,
    settings: &Settings,
    report: &mut Report,
    seen: &mut Seen,
) -> Vec<Target> {
    let permits = Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
    let tasks: Vec<_> = settings
        .projects
        .iter()
        .cloned()
        .map(|r| {
            let (client, permits) = (client.clone(), permits.clone());
            tokio::spawn(async move {
                // Never closed, so acquiring only fails if it were: then run unthrottled.
                let _permit = permits.acquire_owned().await.ok();
                checks::project(&client, &r).await
            })
        })
        .collect();
    let mut targets = Vec::new();
    for task in tasks {
        let Ok((check, target)) = task.await else {
            report.row("project", Status::Fail, "the check failed (task panicked)");
            report.problem("a project check failed", "run the check again");
            continue;
        };
        report.row(check.check, check.status, check.detail);
        if let Some((what, fix)) = check.problem {
            report.problem(what, fix);
        }
        if let Some(rl) = check.seen {
            seen.note(rl);
        }
        targets.extend(target.filter(|t| !targets.iter().any(|o: &Target| o.id == t.id)));
    }
    targets
}

/// `[[groups]]` and membership: one discovery pass (the exporter's own), how many projects
/// each source lists and how many would be watched. A failed source is asked once more for
/// its first page, for the reason.
async fn watched(
    client: &GitlabClient,
    metrics: &Metrics,
    settings: &Settings,
    report: &mut Report,
    targets: &mut Vec<Target>,
) {
    let cfg = &settings.discovery;
    let configured = targets.len();
    if cfg.enabled() {
        let pass = discovery::discover(client, metrics, cfg, settings.limits.max_projects);
        let Ok(pass) = tokio::time::timeout(DISCOVERY_DEADLINE, pass).await else {
            report.row("discovery", Status::Fail, "did not finish within 2 minutes");
            report.problem(
                "project discovery did not finish within 2 minutes",
                "GitLab answers slowly or lists very many projects: narrow [[groups]] or discovery.include",
            );
            return;
        };
        source_rows(client, cfg, &pass, report).await;
        if pass.capped {
            report.warning(
                format!(
                    "discovery found more projects than limits.max_projects ({})",
                    settings.limits.max_projects
                ),
                "raise limits.max_projects or narrow [[groups]] / discovery.include",
            );
        }
        crate::install::add_discovered(targets, pass.projects.into_values());
    }
    total_row(settings, report, targets, configured);
}

/// One row per discovery source: how many projects it lists, or why it could not.
async fn source_rows(
    client: &GitlabClient,
    cfg: &crate::config::DiscoverySettings,
    pass: &discovery::Pass,
    report: &mut Report,
) {
    let names: Vec<String> = cfg.groups.iter().map(ToString::to_string).collect();
    let sources = names
        .iter()
        .cloned()
        .chain(cfg.membership.then(|| "membership".to_string()));
    for (index, name) in sources.enumerate() {
        let listed = pass
            .projects
            .values()
            .filter(|f| f.sources.contains(&index))
            .count();
        if pass.failed.contains(&index) {
            source_failed(client, cfg, index, &name, report).await;
        } else if listed == 0 {
            report.row(
                Bounded(&name).to_string(),
                Status::Warn,
                "lists no projects (after discovery.include/exclude)",
            );
            report.warning(
                format!("{} lists no projects", Bounded(&name)),
                "check the group's path, that the token's user is a member with the Reporter role, and discovery.include/exclude",
            );
        } else {
            report.row(
                Bounded(&name).to_string(),
                Status::Ok,
                format!("{listed} project(s) listed"),
            );
        }
    }
}

/// How many projects would be watched (and by this replica, when sharded).
fn total_row(settings: &Settings, report: &mut Report, targets: &[Target], configured: usize) {
    let total = targets.len();
    let mut detail = format!(
        "{total} project(s) ({configured} configured, {} discovered)",
        total - configured
    );
    let (index, count) = settings
        .shard
        .resolve(std::env::var("HOSTNAME").ok().as_deref());
    if count > 1 {
        let mine = targets
            .iter()
            .filter(|t| crate::shard::owner(t.id, count) == index)
            .count();
        detail.push_str(&format!(
            "; this replica (shard {index} of {count}) polls {mine}"
        ));
    }
    let status = if total == 0 { Status::Fail } else { Status::Ok };
    report.row("watched", status, detail);
    if total == 0 {
        report.problem(
            "no project would be watched",
            "fix the [[projects]] and [[groups]] problems above, or add projects the token can read",
        );
    }
}

/// A discovery source that could not be listed: its first page asked once more, for why.
async fn source_failed(
    client: &GitlabClient,
    cfg: &crate::config::DiscoverySettings,
    index: usize,
    name: &str,
    report: &mut Report,
) {
    let name = Bounded(name).to_string();
    let first = match cfg.groups.get(index) {
        Some(g) => {
            let api_id = g.api_id();
            client
                .projects_page(ProjectsRequest::Group {
                    group: &api_id,
                    include_subgroups: g.include_subgroups,
                    with_archived: cfg.archived,
                })
                .await
        }
        None => {
            client
                .projects_page(ProjectsRequest::Membership {
                    with_archived: cfg.archived,
                })
                .await
        }
    };
    let why = first
        .err()
        .map_or_else(|| "a later page failed".to_string(), |e| e.to_string());
    report.row(
        name.clone(),
        Status::Fail,
        format!("could not be listed ({why})"),
    );
    let fix = if why.contains("HTTP 404") {
        "check its path or id in [[groups]]; GitLab also answers 404 for a private group the token's user is no member of"
    } else if why.contains("insufficient_scope") {
        checks::NEW_TOKEN
    } else {
        "run the check again; if it persists, look at GitLab's logs for this request"
    };
    report.problem(format!("{name} could not be listed"), fix);
}

/// The `RateLimit-*` headers seen, against `gitlab.max_requests_per_minute`.
fn rate_limit(settings: &Settings, report: &mut Report, seen: &Seen) {
    let budget = settings.gitlab.max_requests_per_minute;
    let Some(rl) = &seen.last else {
        report.row(
            "rate limit",
            Status::Ok,
            format!("no RateLimit-* headers seen (GitLab sends them only where limits are set); budget {budget}/min (gitlab.max_requests_per_minute)"),
        );
        return;
    };
    let num = |v: Option<f64>| v.map_or_else(|| "?".to_string(), |v| format!("{v}"));
    let mut detail = format!(
        "RateLimit-Limit {}, RateLimit-Remaining {}",
        num(rl.limit),
        num(rl.remaining)
    );
    if let Some(reset) = rl.reset_in {
        detail.push_str(&format!(", reset in {}s", reset.as_secs()));
    }
    if let Some(name) = &rl.name {
        detail.push_str(&format!(" ({name})"));
    }
    detail.push_str(&format!("; budget {budget}/min"));
    let mut status = Status::Ok;
    if let Some(limit) = rl.limit.filter(|l| budget > *l) {
        status = Status::Warn;
        report.warning(
            format!("gitlab.max_requests_per_minute ({budget}) is above GitLab's RateLimit-Limit ({limit})"),
            format!("lower gitlab.max_requests_per_minute below {limit} (other clients of the same user share it)"),
        );
    }
    if rl.remaining.is_some_and(|r| r < 1.0) {
        status = Status::Warn;
        report.warning(
            "GitLab's rate-limit window is used up right now (RateLimit-Remaining 0)",
            "the exporter pauses until the reset; if this persists, lower gitlab.max_requests_per_minute",
        );
    }
    report.row("rate limit", status, detail);
}
