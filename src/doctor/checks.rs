//! The first checks: GitLab itself (`GET /version`), the token
//! (`GET /personal_access_tokens/self`) and each configured project (looked up, then one job).

use chrono::NaiveDate;

use super::report::{Report, Status};
use super::{Seen, Target};
use crate::config::ProjectRef;
use crate::gitlab::meta::{TokenInfo, Version};
use crate::gitlab::{ApiError, GitlabClient};
use crate::model::text::{self, Bounded};

/// A token expiring within this many days is warned about.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

pub(super) const NEW_TOKEN: &str = "create a token with the read_api scope (a personal access token, or a project or group access token with the Reporter role) and put it in GITLAB_TOKEN or gitlab.token_file";

const RATE_LIMITED: &str = "wait for GitLab's rate limit to reset and run the check again; if it recurs, other clients of the token's user use up its limit: lower their rate or gitlab.max_requests_per_minute";

/// What a failed request says about the setup.
#[derive(Debug)]
pub(super) enum Failure {
    /// No answer, or only a proxy's 5xx.
    Unreachable,
    /// 401: the token is unknown, expired or revoked.
    Rejected,
    /// 403 `insufficient_scope`: the token lacks `read_api`.
    Scope,
    /// Another 403: the token's user lacks a role.
    Forbidden,
    NotFound,
    /// 3xx: `gitlab.url` leads elsewhere (redirects are never followed).
    Redirect,
    /// 429: GitLab answered, but refuses requests for now.
    RateLimited,
    Other,
}

pub(super) fn classify(e: &ApiError) -> Failure {
    match e {
        ApiError::Transport { .. } => Failure::Unreachable,
        ApiError::Status { status, .. } if *status >= 500 => Failure::Unreachable,
        ApiError::Status { status: 401, .. } => Failure::Rejected,
        ApiError::Status {
            status: 403,
            message,
            ..
        } if message.starts_with("insufficient_scope") => Failure::Scope,
        ApiError::Status { status: 403, .. } => Failure::Forbidden,
        ApiError::Status { status: 404, .. } => Failure::NotFound,
        ApiError::RateLimited { .. } => Failure::RateLimited,
        ApiError::Status { status, .. } if (300..400).contains(status) => Failure::Redirect,
        _ => Failure::Other,
    }
}

/// `GET /version`. `false`: stop here (GitLab unreachable, the token refused, not GitLab).
pub(super) async fn gitlab(client: &GitlabClient, report: &mut Report, seen: &mut Seen) -> bool {
    let e = match client.version().await {
        Ok((v, rl)) => {
            seen.note(rl);
            report.row("gitlab", Status::Ok, version_text(&v));
            return true;
        }
        Err(e) => e,
    };
    match classify(&e) {
        Failure::Unreachable => {
            report.unreachable = true;
            report.row("gitlab", Status::Fail, format!("unreachable: {e}"));
            report.problem(
                format!("GitLab is unreachable ({e})"),
                "check gitlab.url and that this host reaches it (DNS, proxy, firewall, TLS certificate); a 5xx comes from a proxy in front of a GitLab that is down",
            );
            false
        }
        Failure::Rejected => {
            report.row("gitlab", Status::Ok, "reachable (it refused the token)");
            rejected(report, &e);
            false
        }
        // `/version` needs read_user, read_api or api: the token's own endpoint says which it has.
        Failure::Scope | Failure::Forbidden => {
            report.row(
                "gitlab",
                Status::Warn,
                format!("reachable; version not shown ({e})"),
            );
            true
        }
        Failure::NotFound => {
            report.row("gitlab", Status::Fail, format!("no GitLab API here ({e})"));
            report.problem(
                "gitlab.url does not lead to GitLab's API (/api/v4/version answered 404)",
                "set gitlab.url to the address of GitLab's web interface, without /api/v4",
            );
            false
        }
        Failure::Redirect => {
            report.row("gitlab", Status::Fail, format!("redirected ({e})"));
            report.problem(
                format!("gitlab.url redirects elsewhere ({e}); the exporter never follows a redirect, so that the token goes nowhere else"),
                "set gitlab.url to the address GitLab itself answers on (often https:// rather than http://; open gitlab.url/api/v4/version in a browser to see where it leads)",
            );
            false
        }
        Failure::RateLimited => {
            report.row("gitlab", Status::Fail, format!("reachable, but {e}"));
            report.problem(
                format!("GitLab refuses requests for now ({e})"),
                RATE_LIMITED,
            );
            false
        }
        Failure::Other => {
            report.row("gitlab", Status::Fail, format!("unexpected answer ({e})"));
            report.problem(
                format!("GitLab's /api/v4/version gave no usable answer ({e})"),
                "gitlab.url must lead to GitLab itself, not to a login page or another service in front of it",
            );
            false
        }
    }
}

fn version_text(v: &Version) -> String {
    let version = v.version.as_deref().map_or_else(
        || "reachable (no version in the answer)".to_string(),
        |s| format!("reachable: GitLab {}", Bounded(s)),
    );
    match &v.revision {
        Some(r) => format!("{version} (revision {})", Bounded(r)),
        None => version,
    }
}

/// The token row and problem for a 401.
pub(super) fn rejected(report: &mut Report, e: &ApiError) {
    report.row("token", Status::Fail, format!("rejected ({e})"));
    report.problem(
        "GitLab rejected the token (HTTP 401: unknown, expired or revoked)",
        NEW_TOKEN,
    );
}

/// `GET /personal_access_tokens/self`. `false`: the token was rejected (stop here).
pub(super) async fn token(client: &GitlabClient, report: &mut Report, seen: &mut Seen) -> bool {
    let e = match client.token_self().await {
        Ok((info, rl)) => {
            seen.note(rl);
            token_info(report, &info, chrono::Utc::now().date_naive());
            return true;
        }
        Err(e) => e,
    };
    if let Failure::Rejected = classify(&e) {
        rejected(report, &e);
        return false;
    }
    // Project and group access tokens are described too; a CI job token or an OAuth token is
    // not (400), and GitLab before 15.5 has no such endpoint (404).
    report.row(
        "token",
        Status::Warn,
        format!("accepted; GitLab did not describe it ({e})"),
    );
    report.warning(
        "the token's scopes and expiry are unknown: GitLab describes only personal, project and group access tokens (GitLab 15.5 and later)",
        "the project checks below show what it can read; to have scopes and expiry checked, use an access token with read_api",
    );
    true
}

/// The token row, and its problems: no `read_api`, inactive, expired or expiring.
pub(super) fn token_info(report: &mut Report, info: &TokenInfo, today: NaiveDate) {
    let scopes: Vec<String> = info
        .scopes
        .iter()
        .flatten()
        .take(20)
        .map(|s| text::bounded(s))
        .collect();
    let name = info
        .name
        .as_deref()
        .map_or_else(String::new, |n| format!("\"{}\", ", Bounded(n)));
    let expiry = expiry(info.expires_at.as_deref(), today);
    let mut status = Status::Ok;
    let reads = scopes.iter().any(|s| s == "read_api" || s == "api");
    if !reads {
        status = Status::Fail;
        report.problem(
            format!(
                "token lacks read_api (its scopes: {})",
                if scopes.is_empty() {
                    "none".to_string()
                } else {
                    scopes.join(", ")
                }
            ),
            NEW_TOKEN,
        );
    }
    if info.revoked == Some(true) || info.active == Some(false) {
        status = Status::Fail;
        report.problem("the token is not active (revoked or expired)", NEW_TOKEN);
    }
    match expiry {
        Expiry::Expired(_) => {
            status = Status::Fail;
            report.problem("the token has expired", NEW_TOKEN);
        }
        Expiry::Soon(ref date, days) => {
            if status == Status::Ok {
                status = Status::Warn;
            }
            report.warning(
                format!("the token expires on {date} (in {days} day(s))"),
                "create a new token with read_api and replace GITLAB_TOKEN or gitlab.token_file before then",
            );
        }
        Expiry::Never | Expiry::Later(..) | Expiry::Unreadable(_) => {}
    }
    let scopes = if scopes.is_empty() {
        "no scopes".to_string()
    } else {
        format!("scopes {}", scopes.join(", "))
    };
    report.row("token", status, format!("{name}{scopes}; {expiry}"));
}

#[derive(Debug)]
enum Expiry {
    Never,
    Later(String, i64),
    Soon(String, i64),
    Expired(String),
    Unreadable(String),
}

/// GitLab's `expires_at` (`YYYY-MM-DD`; a token expires at the start of that day, UTC).
fn expiry(expires_at: Option<&str>, today: NaiveDate) -> Expiry {
    let Some(raw) = expires_at else {
        return Expiry::Never;
    };
    let date = raw
        .get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let Some(date) = date else {
        return Expiry::Unreadable(text::bounded(raw));
    };
    let days = (date - today).num_days();
    let shown = date.format("%Y-%m-%d").to_string();
    if days <= 0 {
        Expiry::Expired(shown)
    } else if days <= EXPIRY_WARNING_DAYS {
        Expiry::Soon(shown, days)
    } else {
        Expiry::Later(shown, days)
    }
}

impl std::fmt::Display for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Never => f.write_str("never expires"),
            Self::Later(d, n) | Self::Soon(d, n) => write!(f, "expires {d} (in {n} days)"),
            Self::Expired(d) => write!(f, "expired {d}"),
            Self::Unreadable(raw) => write!(f, "expires \"{raw}\" (not a date)"),
        }
    }
}

/// One configured project: looked up, then one job read. `Some` when found.
pub(super) async fn project(
    client: &GitlabClient,
    r: &ProjectRef,
) -> (ProjectCheck, Option<Target>) {
    let check = format!("project {}", Bounded(&r.to_string()));
    let p = match client.project(&r.api_id()).await {
        Ok(p) => p,
        Err(e) => return (ProjectCheck::failed(check, &e, &r.to_string(), false), None),
    };
    let target = Target {
        id: p.id,
        path: p.path_with_namespace,
    };
    let path = text::bounded(&target.path);
    let found = format!("found: {path} (id {})", target.id);
    let out = match client.jobs_probe(&target.id.to_string()).await {
        Ok((probe, rl)) => ProjectCheck {
            check,
            status: Status::Ok,
            detail: match probe.latest {
                Some(id) => format!("{found}; jobs readable (latest job {id})"),
                None => format!("{found}; jobs readable (no jobs yet)"),
            },
            problem: None,
            seen: Some(rl),
        },
        Err(e) => {
            let mut c = ProjectCheck::failed(check, &e, &path, true);
            c.detail = format!("{found}; {}", c.detail);
            c
        }
    };
    (out, Some(target))
}

/// One project's row and problem.
#[derive(Debug)]
pub(super) struct ProjectCheck {
    pub check: String,
    pub status: Status,
    pub detail: String,
    pub problem: Option<(String, String)>,
    pub seen: Option<crate::gitlab::meta::RateLimitSeen>,
}

impl ProjectCheck {
    fn failed(check: String, e: &ApiError, name: &str, jobs: bool) -> Self {
        let name = text::bounded(name);
        let what = if jobs {
            "jobs endpoint refused"
        } else {
            "not readable"
        };
        let (detail, problem, fix) = match classify(e) {
            Failure::NotFound if !jobs => (
                format!("not found ({e})"),
                format!("project {name} not found"),
                "check its path or id in [[projects]]; GitLab also answers 404 for a private project the token's user is no member of: add the user with the Reporter role".to_string(),
            ),
            Failure::Scope => (
                format!("{what} ({e})"),
                format!("project {name} refused (insufficient_scope)"),
                NEW_TOKEN.to_string(),
            ),
            Failure::Forbidden | Failure::NotFound => (
                format!("{what} ({e})"),
                format!("project {name}: the token may not read its jobs"),
                format!("give the token's user at least the Reporter role on {name} (a Guest cannot read jobs), and check that CI/CD is enabled in the project's settings"),
            ),
            Failure::Rejected => (
                format!("{what} ({e})"),
                format!("project {name} refused (HTTP 401)"),
                NEW_TOKEN.to_string(),
            ),
            Failure::RateLimited => (
                format!("{what} ({e})"),
                format!("project {name}: GitLab refused the request for now ({e})"),
                RATE_LIMITED.to_string(),
            ),
            Failure::Unreachable | Failure::Redirect | Failure::Other => (
                format!("{what} ({e})"),
                format!("project {name}: GitLab's answer could not be used ({e})"),
                "run the check again; if it persists, look at GitLab's logs for this request".to_string(),
            ),
        };
        Self {
            check,
            status: Status::Fail,
            detail,
            problem: Some((problem, fix)),
            seen: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn info(scopes: &[&str], expires_at: Option<&str>) -> TokenInfo {
        TokenInfo {
            name: Some("exporter".into()),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            expires_at: expires_at.map(str::to_string),
            active: Some(true),
            revoked: Some(false),
        }
    }

    #[test]
    fn a_token_without_read_api_is_a_problem_with_its_fix() {
        let mut r = Report::default();
        token_info(&mut r, &info(&["read_user"], None), day("2026-12-02"));
        assert_eq!(r.problems.len(), 1);
        assert_eq!(
            r.problems[0].what,
            "token lacks read_api (its scopes: read_user)"
        );
        assert!(
            r.problems[0]
                .fix
                .starts_with("create a token with the read_api scope")
        );
        assert_eq!(r.rows[0].status, Status::Fail);
        let mut r = Report::default();
        token_info(&mut r, &info(&["api"], None), day("2026-12-02"));
        assert!(r.problems.is_empty() && r.warnings.is_empty());
        assert_eq!(r.rows[0].detail, "\"exporter\", scopes api; never expires");
    }

    #[test]
    fn expiry_within_14_days_warns_and_a_past_one_fails() {
        let today = day("2026-12-02");
        let mut r = Report::default();
        token_info(&mut r, &info(&["read_api"], Some("2026-12-12")), today);
        assert!(r.problems.is_empty());
        assert_eq!(
            r.warnings[0].what,
            "the token expires on 2026-12-12 (in 10 day(s))"
        );
        assert_eq!(r.rows[0].status, Status::Warn);
        let mut r = Report::default();
        token_info(&mut r, &info(&["read_api"], Some("2027-03-01")), today);
        assert!(r.warnings.is_empty() && r.problems.is_empty());
        assert!(
            r.rows[0]
                .detail
                .ends_with("expires 2027-03-01 (in 89 days)"),
            "{}",
            r.rows[0].detail
        );
        let mut r = Report::default();
        token_info(&mut r, &info(&["read_api"], Some("2026-12-02")), today);
        assert_eq!(r.problems[0].what, "the token has expired");
    }

    #[test]
    fn hostile_token_fields_are_bounded_and_escaped() {
        let mut r = Report::default();
        let mut t = info(&["read_api"], Some("\u{1b}[2Jsoon"));
        t.name = Some(format!("x\n{}", "y".repeat(1_000_000)));
        token_info(&mut r, &t, day("2026-12-02"));
        let d = &r.rows[0].detail;
        assert!(d.len() < 600 && !d.chars().any(text::needs_escape), "{d}");
    }
}
