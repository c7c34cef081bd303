//! With `[webhook]` enabled: each watched project's hook, matched as `--install-webhooks`
//! matches it ([`crate::install::decide`], by URL) when `--hook-url` is given, else any hook
//! sending Job events; and whether GitLab has disabled it ([`crate::install::disabled_note`]).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::checks::{Failure, classify};
use super::report::{Report, Status};
use super::{DoctorOptions, Target};
use crate::config::Settings;
use crate::gitlab::GitlabClient;
use crate::gitlab::hooks::{HookList, ProjectHook};
use crate::gitlab::pager::{PageError, Pager};
use crate::install::{self, Action};
use crate::model::text::{self, Bounded};

/// Projects whose hooks are checked at most (each costs a request or more).
const MAX_CHECKED: usize = 100;
/// Hook pages read per project at most (as `--install-webhooks`).
const MAX_HOOK_PAGES: usize = 20;

/// One project's row and findings.
struct HookCheck {
    status: Status,
    detail: String,
    problems: Vec<(String, String)>,
    warning: Option<(String, String)>,
}

pub(super) async fn check(
    client: &Arc<GitlabClient>,
    settings: &Settings,
    opts: &DoctorOptions,
    targets: &[Target],
    report: &mut Report,
) {
    let permits = Arc::new(Semaphore::new(settings.poll.concurrency.max(1)));
    let opts = Arc::new(opts.clone());
    let tasks: Vec<_> = targets
        .iter()
        .take(MAX_CHECKED)
        .cloned()
        .map(|t| {
            let (client, permits, opts) = (client.clone(), permits.clone(), opts.clone());
            tokio::spawn(async move {
                // Never closed, so acquiring only fails if it were: then run unthrottled.
                let _permit = permits.acquire_owned().await.ok();
                let found = list_hooks(&client, &t.id.to_string()).await;
                (text::bounded(&t.path), judge(&t, found, &opts))
            })
        })
        .collect();
    for task in tasks {
        let Ok((path, c)) = task.await else {
            report.row("hook", Status::Fail, "the check failed (task panicked)");
            continue;
        };
        report.row(format!("hook {path}"), c.status, c.detail);
        for (what, fix) in c.problems {
            report.problem(what, fix);
        }
        if let Some((what, fix)) = c.warning {
            report.warning(what, fix);
        }
    }
    if targets.len() > MAX_CHECKED {
        report.warning(
            format!(
                "hooks of {} more project(s) not checked",
                targets.len() - MAX_CHECKED
            ),
            "gitlab-jobs-exporter --install-webhooks URL checks and fixes every project's hook",
        );
    }
}

async fn list_hooks(client: &GitlabClient, project: &str) -> Result<Vec<ProjectHook>, PageError> {
    let mut pages = Pager::new(HookList { client, project }, MAX_HOOK_PAGES);
    let mut hooks = Vec::new();
    while let Some(page) = pages.next().await? {
        hooks.extend(page.hooks);
    }
    Ok(hooks)
}

fn install_hint(opts: &DoctorOptions) -> String {
    let url = opts.hook_url.as_ref().map_or("URL", |u| u.as_str());
    format!(
        "run gitlab-jobs-exporter --config FILE --install-webhooks {url} (the exporter's public address of POST /webhook)"
    )
}

fn judge(
    t: &Target,
    found: Result<Vec<ProjectHook>, PageError>,
    opts: &DoctorOptions,
) -> HookCheck {
    let path = text::bounded(&t.path);
    let hooks = match found {
        Ok(hooks) => hooks,
        Err(e) => return unlisted(&path, &e),
    };
    let mut c = HookCheck {
        status: Status::Ok,
        detail: String::new(),
        problems: Vec::new(),
        warning: None,
    };
    let hook = match &opts.hook_url {
        Some(url) => {
            let d = install::decide(&hooks, url, false);
            if let Action::Update { why, .. } = &d.action {
                c.problems.push((
                    format!(
                        "{path}: the hook at {} needs an update ({})",
                        url.as_str(),
                        why.join(", ")
                    ),
                    install_hint(opts),
                ));
            }
            d.hook
        }
        None => hooks
            .iter()
            .filter(|h| h.job_events == Some(true))
            .min_by_key(|h| h.id),
    };
    let Some(hook) = hook else {
        let what = match &opts.hook_url {
            Some(url) => format!("no hook sends to {}", url.as_str()),
            None => "no hook sends Job events".to_string(),
        };
        c.status = Status::Fail;
        c.detail = what.clone();
        c.problems
            .push((format!("{path}: {what}"), install_hint(opts)));
        return c;
    };
    c.detail = format!("hook {} to {}", hook.id, Bounded(&hook.url));
    if opts.hook_url.is_none() {
        c.detail
            .push_str(" (URL not compared: give --hook-url URL)");
    }
    if let Some(note) = install::disabled_note(hook) {
        c.detail.push_str("; disabled by GitLab");
        c.problems.push((format!("{path}: hook {}", hook.id), note));
    }
    if !c.problems.is_empty() {
        c.status = Status::Fail;
    }
    c
}

/// The hooks could not be listed: 403 (no Maintainer role) only prevents this check.
fn unlisted(path: &str, e: &PageError) -> HookCheck {
    let api = match e {
        PageError::Api(e) | PageError::Link(e) => Some(e),
        _ => None,
    };
    match api.map(classify) {
        Some(Failure::Forbidden) => HookCheck {
            status: Status::Warn,
            detail: format!("hooks not visible ({e})"),
            problems: Vec::new(),
            warning: Some((
                format!("{path}: hooks not checked (listing them needs the Maintainer role; polling does not)"),
                "look at the project's Settings → Webhooks, or run this check with a Maintainer's token".to_string(),
            )),
        },
        _ => HookCheck {
            status: Status::Fail,
            detail: format!("hooks not listed ({e})"),
            problems: vec![(
                format!("{path}: its hooks could not be listed ({e})"),
                "run the check again; if it persists, look at GitLab's logs for this request".to_string(),
            )],
            warning: None,
        },
    }
}
