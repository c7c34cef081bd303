//! `--check-gitlab`: the real binary against the simulator, one test per outcome: healthy
//! (0), the token lacking access or rejected (3), a project not found or its jobs refused (3),
//! GitLab unreachable (1), a configuration error (2), hooks missing or disabled (3), a token
//! GitLab does not describe (0, warned), a hostile `/version` (bounded). The token never
//! appears in stdout or stderr.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gitlab_sim::{
    Fault, HookAlertStatus, ProjectAccess, ProjectSpec, SimClock, SimHandle, Simulator, TokenKind,
    TokenRejection, TokenSpec, World, WorldSpec,
};

use common::TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");
const HOOK_URL: &str = "https://exporter.example.com/webhook";
const HOOK_SECRET: &str = "whsec-doctor-NEVER-SHOWN";

/// `solo/app` (10), and in group `acme`: `acme/api` (1), `acme/web` (2), `acme/tools/cli` (3).
async fn start_sim() -> (Simulator, SimHandle) {
    let now = chrono::Utc::now().timestamp_millis();
    let project = |id, path: &str| ProjectSpec {
        id,
        path: path.into(),
        pipelines_per_hour: 6.0,
    };
    let spec = WorldSpec::new(
        vec![
            project(1, "acme/api"),
            project(2, "acme/web"),
            project(3, "acme/tools/cli"),
            project(10, "solo/app"),
        ],
        now - 3_600_000,
        now,
    );
    let sim = Simulator::new(World::generate(&spec, 3), SimClock::Live, TOKEN.to_string());
    let handle = sim.spawn().await.expect("simulator");
    (sim, handle)
}

/// A configuration: `solo/app` by path, `acme/api` by id, the group `acme`, and `extra`.
fn config(dir: &Path, base: &str, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[gitlab]\nurl = {base:?}\ntimeout = \"5s\"\n\n[[projects]]\npath = \"solo/app\"\n\n[[projects]]\nid = 1\n\n[[groups]]\npath = \"acme\"\n{extra}"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The binary with `--check-gitlab` (off the runtime's threads: the simulator answers on
/// them), checked for the token and the webhook secret in its output.
async fn check(config: &Path, extra: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("--check-gitlab")
        .args(extra)
        .env("GITLAB_TOKEN", TOKEN)
        .env("GITLAB_WEBHOOK_SECRET", HOOK_SECRET)
        .env_remove("RUST_LOG")
        .env_remove("HOSTNAME");
    let out: Output = tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
        .await
        .expect("join");
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    for secret in [TOKEN, HOOK_SECRET] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "a secret was printed:\n{}\n{}",
            run.stdout,
            run.stderr
        );
    }
    // Shown when a test fails (and copied into docs/check-gitlab.md).
    eprintln!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        run.stdout, run.stderr
    );
    run
}

/// The table row of `check` (its first column), if any.
fn row<'a>(run: &'a Run, check: &str) -> Option<&'a str> {
    run.stdout.lines().find(|l| {
        l.strip_prefix(check)
            .is_some_and(|rest| rest.starts_with("  "))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_and_names_each_project_and_the_version() {
    let (sim, handle) = start_sim().await;
    sim.set_rate_limit_headers(Some(2000));
    sim.set_token_spec(TokenSpec {
        expires_at: Some(in_days(90)),
        ..TokenSpec::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(&config(dir.path(), &handle.base_url, ""), &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let gitlab = row(&run, "gitlab").expect("gitlab row");
    assert!(
        gitlab.contains("ok") && gitlab.contains("GitLab 17.5.2"),
        "{gitlab}"
    );
    let token = row(&run, "token").expect("token row");
    assert!(
        token.contains("scopes read_api") && token.contains("(in 90 days)"),
        "{token}"
    );
    for (check, found) in [
        ("project solo/app", "found: solo/app (id 10)"),
        ("project id 1", "found: acme/api (id 1)"),
    ] {
        let r = row(&run, check).unwrap_or_else(|| panic!("{check}: {}", run.stdout));
        assert!(r.contains(found) && r.contains("jobs readable"), "{r}");
    }
    assert!(
        row(&run, "group acme").is_some_and(|r| r.contains("3 project(s) listed")),
        "{}",
        run.stdout
    );
    let watched = row(&run, "watched").expect("watched row");
    assert!(
        watched.contains("4 project(s) (2 configured, 2 discovered)"),
        "{watched}"
    );
    let rl = row(&run, "rate limit").expect("rate limit row");
    assert!(rl.contains("RateLimit-Limit 2000"), "{rl}");
    assert!(
        run.stdout.trim_end().ends_with("all checks passed"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("problems:"), "{}", run.stdout);
}

fn in_days(days: i64) -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(days as u64))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_lacking_read_api_is_a_problem_with_its_fix() {
    let (sim, handle) = start_sim().await;
    sim.set_token_spec(TokenSpec {
        scopes: vec!["read_user".into()],
        ..TokenSpec::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(&config(dir.path(), &handle.base_url, ""), &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(
        row(&run, "token").is_some_and(|r| r.contains("FAIL")),
        "{}",
        run.stdout
    );
    // One cause, one line: the projects and the group it fails are named on it.
    assert!(
        run.stdout.contains(
            "\n  token lacks read_api (its scopes: read_user) (also: project solo/app refused (insufficient_scope); project id 1 refused (insufficient_scope); group acme could not be listed): create a token with the read_api scope"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.trim_end().ends_with("problem(s) found"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_stops_the_check_with_its_fix() {
    let (sim, handle) = start_sim().await;
    sim.set_token_rejected(Some(TokenRejection::Expired));
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(&config(dir.path(), &handle.base_url, ""), &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    let token = row(&run, "token").expect("token row");
    assert!(
        token.contains("FAIL") && token.contains("Token is expired"),
        "{token}"
    );
    assert!(
        run.stdout.contains(
            "GitLab rejected the token (HTTP 401: unknown, expired or revoked): create a token"
        ),
        "{}",
        run.stdout
    );
    assert!(
        row(&run, "project solo/app").is_none(),
        "nothing more is asked: {}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_not_found_or_with_refused_jobs_is_a_problem() {
    let (sim, handle) = start_sim().await;
    sim.set_project_access(10, Some(ProjectAccess::NotFound));
    sim.set_project_access(1, Some(ProjectAccess::NoJobs));
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = "\n[[groups]]\npath = \"nope\"\n";
    let run = check(&config(dir.path(), &handle.base_url, extra), &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    let solo = row(&run, "project solo/app").expect("row");
    assert!(
        solo.contains("FAIL") && solo.contains("not found"),
        "{solo}"
    );
    assert!(
        run.stdout
            .contains("\n  project solo/app not found: check its path or id in [[projects]]"),
        "{}",
        run.stdout
    );
    let api = row(&run, "project id 1").expect("row");
    assert!(
        api.contains("FAIL") && api.contains("found: acme/api (id 1)") && api.contains("HTTP 403"),
        "{api}"
    );
    assert!(
        run.stdout.contains("project acme/api: the token may not read its jobs: give the token's user at least the Reporter role"),
        "{}",
        run.stdout
    );
    let group = row(&run, "group nope").expect("row");
    assert!(
        group.contains("FAIL") && group.contains("HTTP 404"),
        "{group}"
    );
    assert!(
        run.stdout
            .contains("\n  group nope could not be listed: check its path or id in [[groups]]"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gitlab_exits_1() {
    let (_socket, port) = common::refused_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(
        &config(dir.path(), &format!("http://127.0.0.1:{port}"), ""),
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        row(&run, "gitlab").is_some_and(|r| r.contains("FAIL") && r.contains("unreachable")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\n  GitLab is unreachable ("),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("check gitlab.url and that this host reaches it"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.trim_end().ends_with("GitLab is unreachable"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[gitlab]\nurl = \"ftp://gitlab.example.com\"\n[[projects]]\nid = 1\n",
    )
    .expect("write");
    let run = check(&path, &[]).await;
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("configuration error") && run.stderr.contains("gitlab.url"),
        "{}",
        run.stderr
    );
    let (_socket, port) = common::refused_port();
    let good = config(dir.path(), &format!("http://127.0.0.1:{port}"), "");
    let run = check(&good, &["--hook-url", "not a url"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_missing_or_disabled_are_problems() {
    let (sim, handle) = start_sim().await;
    // solo/app: ours; acme/api: ours, disabled by GitLab; acme/web: another URL only;
    // acme/tools/cli: ours, but its hooks are not visible (no Maintainer).
    let ours = sim
        .add_project_hook(10, HOOK_URL, Some(HOOK_SECRET))
        .expect("hook");
    let disabled = sim
        .add_project_hook(1, HOOK_URL, Some(HOOK_SECRET))
        .expect("hook");
    sim.set_hook_alert(disabled, HookAlertStatus::Disabled, None);
    sim.add_project_hook(2, "https://elsewhere.example.com/hook", None)
        .expect("hook");
    sim.add_project_hook(3, HOOK_URL, None).expect("hook");
    sim.set_hooks_access(3, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        dir.path(),
        &handle.base_url,
        "\n[webhook]\nenabled = true\n",
    );
    let run = check(&cfg, &["--hook-url", HOOK_URL]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    let solo = row(&run, "hook solo/app").expect("row");
    assert!(
        solo.contains("ok") && solo.contains(&format!("hook {ours} to {HOOK_URL}")),
        "{solo}"
    );
    let api = row(&run, "hook acme/api").expect("row");
    assert!(
        api.contains("FAIL") && api.contains("disabled by GitLab"),
        "{api}"
    );
    assert!(
        run.stdout.contains(&format!(
            "\n  acme/api: hook {disabled}: GitLab has disabled this hook for good"
        )),
        "{}",
        run.stdout
    );
    let web = row(&run, "hook acme/web").expect("row");
    assert!(
        web.contains("FAIL") && web.contains(&format!("no hook sends to {HOOK_URL}")),
        "{web}"
    );
    assert!(
        run.stdout.contains(&format!("\n  acme/web: no hook sends to {HOOK_URL}: run gitlab-jobs-exporter --config FILE --install-webhooks {HOOK_URL}")),
        "{}",
        run.stdout
    );
    let cli = row(&run, "hook acme/tools/cli").expect("row");
    assert!(cli.contains("warn") && cli.contains("HTTP 403"), "{cli}");
    assert!(
        run.stdout
            .contains("hooks not checked (listing them needs the Maintainer role"),
        "{}",
        run.stdout
    );
    // Without --hook-url any hook sending Job events counts (acme/web's other one too), and
    // the row says the URL was not compared; the disabled hook is still a problem.
    let run = check(&cfg, &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    let web = row(&run, "hook acme/web").expect("row");
    assert!(
        web.contains("ok")
            && web.contains("elsewhere.example.com")
            && web.contains("URL not compared"),
        "{web}"
    );
    assert!(
        row(&run, "hook acme/api").is_some_and(|r| r.contains("FAIL")),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_gitlab_does_not_describe_or_soon_expiring_is_a_warning() {
    let (sim, handle) = start_sim().await;
    sim.set_token_spec(TokenSpec {
        kind: TokenKind::Other,
        ..TokenSpec::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &handle.base_url, "");
    let run = check(&cfg, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let token = row(&run, "token").expect("row");
    assert!(
        token.contains("warn") && token.contains("HTTP 400"),
        "{token}"
    );
    assert!(
        run.stdout
            .contains("the token's scopes and expiry are unknown"),
        "{}",
        run.stdout
    );
    sim.set_token_spec(TokenSpec {
        expires_at: Some(in_days(5)),
        ..TokenSpec::default()
    });
    let run = check(&cfg, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!(
            "the token expires on {} (in 5 day(s)): create a new token",
            in_days(5)
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .trim_end()
            .ends_with("all checks passed, 1 warning(s)"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_version_answer_is_bounded_and_escaped() {
    let (sim, handle) = start_sim().await;
    let huge = format!(
        "{{\"version\":\"17.0\\u001b[2J\\nFAKE LINE{}\",\"revision\":\"{TOKEN}\"}}",
        "A".repeat(4 << 20)
    );
    sim.push_fault(Fault::Raw {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: huge.into_bytes(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(&config(dir.path(), &handle.base_url, ""), &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let gitlab = row(&run, "gitlab").expect("row");
    assert!(
        gitlab.contains("GitLab 17.0\\u{1b}[2J\\nFAKE LINE"),
        "{gitlab}"
    );
    assert!(gitlab.len() < 1000, "{} bytes", gitlab.len());
    assert!(!run.stdout.contains('\u{1b}') && !run.stdout.lines().any(|l| l.starts_with("FAKE")));
    assert!(run.stdout.len() < 20_000, "{} bytes", run.stdout.len());
}

/// GitLab rate-limiting the token (429, twice: the retry too): exit 3 with a fix about the
/// rate limit, not one about a login page in front of GitLab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_gitlab_is_a_problem_about_the_rate_limit() {
    let (sim, handle) = start_sim().await;
    for _ in 0..2 {
        sim.push_fault(Fault::Raw {
            status: 429,
            // GitLab may ask for minutes: the check reports it rather than wait it out.
            headers: vec![("retry-after".into(), b"600".to_vec())],
            body: b"Retry later".to_vec(),
        });
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(&config(dir.path(), &handle.base_url, ""), &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    let gitlab = row(&run, "gitlab").expect("row");
    assert!(gitlab.contains("rate limited (HTTP 429)"), "{gitlab}");
    assert!(!run.stdout.contains("login page"), "{}", run.stdout);
    assert!(run.stdout.contains("rate limit"), "{}", run.stdout);
}

/// `/api/v4/version` redirected (http:// to https://, or a login page): exit 3, and the fix
/// says that gitlab.url redirects (the exporter never follows a redirect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_says_gitlab_url_redirects() {
    let (sim, handle) = start_sim().await;
    // Not retried: one answer is all the check sees.
    sim.push_fault(Fault::Raw {
        status: 301,
        headers: vec![("location".into(), b"https://gitlab.example.com/".to_vec())],
        body: Vec::new(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let run = check(&config(dir.path(), &handle.base_url, ""), &[]).await;
    assert_eq!(run.code, Some(3), "{}", run.stdout);
    assert!(run.stdout.contains("redirect"), "{}", run.stdout);
}
