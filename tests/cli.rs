//! The real binary: configuration errors (exit code 2, naming the key), `--check-config`, and a
//! full run against the simulator in which the token must never leak.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TOKEN;
use gitlab_sim::{Fault, ProjectSpec, SimClock, Simulator, World, WorldSpec};

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");

const GOOD: &str = r#"
[gitlab]
url = "https://gitlab.example.com"
timeout = "5s"

[server]
listen = "127.0.0.1:0"

[poll]
interval = "30s"
backfill = "1h"
concurrency = 2

[[projects]]
path = "group/subgroup/project"

[[projects]]
id = 42
"#;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let mut f = std::fs::File::create(&path).expect("create config");
    f.write_all(text.as_bytes()).expect("write config");
    path
}

fn run(config: &Path, env: &[(&str, &str)], extra: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config).args(extra);
    cmd.env_remove("GITLAB_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn check(text: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), text);
    run(&path, env, &["--check-config"])
}

#[test]
fn check_config_prints_effective_config_without_token() {
    let out = check(GOOD, &[("GITLAB_TOKEN", TOKEN)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("group/subgroup/project"), "{stdout}");
    assert!(stdout.contains("# gitlab.token is set"), "{stdout}");
    assert!(!stdout.contains("<redacted>"), "{stdout}");
    assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN));
}

#[test]
fn environment_overrides_keys() {
    let out = check(
        GOOD,
        &[
            ("GITLAB_TOKEN", TOKEN),
            ("GITLAB_JOBS_EXPORTER__POLL__INTERVAL", "15s"),
            ("GITLAB_JOBS_EXPORTER__POLL__CONCURRENCY", "7"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("interval = \"15s\""), "{stdout}");
    assert!(stdout.contains("concurrency = 7"), "{stdout}");
}

#[test]
fn token_file_is_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, format!("{TOKEN}\n")).expect("write token");
    let text = GOOD.replace(
        "timeout = \"5s\"",
        &format!(
            "timeout = \"5s\"\ntoken_file = {:?}",
            token_path.display().to_string()
        ),
    );
    let out = check(&text, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_bad_key_fails_fast_with_exit_code_2_naming_it() {
    let no_projects = GOOD
        .split("[[projects]]")
        .next()
        .unwrap_or_default()
        .to_string();
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            GOOD.replace("interval = \"30s\"", "intervall = \"30s\""),
            vec![],
            "poll.intervall",
        ),
        (
            GOOD.replace("interval = \"30s\"", "interval = \"soon\""),
            vec![],
            "poll.interval",
        ),
        (
            GOOD.replace("interval = \"30s\"", "interval = \"0s\""),
            vec![],
            "poll.interval",
        ),
        (
            GOOD.replace("backfill = \"1h\"", "backfill = \"an hour\""),
            vec![],
            "poll.backfill",
        ),
        (
            GOOD.replace("concurrency = 2", "concurrency = 0"),
            vec![],
            "poll.concurrency",
        ),
        (
            GOOD.replace("timeout = \"5s\"", "timeout = \"5 parsecs\""),
            vec![],
            "gitlab.timeout",
        ),
        (
            GOOD.replace("url = \"https://gitlab.example.com\"", ""),
            vec![],
            "gitlab",
        ),
        (
            GOOD.replace("https://gitlab.example.com", "gitlab.example.com"),
            vec![],
            "gitlab.url",
        ),
        (
            GOOD.replace("listen = \"127.0.0.1:0\"", "listen = \"everywhere\""),
            vec![],
            "server.listen",
        ),
        (no_projects, vec![], "projects"),
        (
            GOOD.replace("id = 42", "path = \"group/subgroup/project\""),
            vec![],
            "projects[1]",
        ),
        (
            GOOD.replace("id = 42", "id = 42\npath = \"a/b\""),
            vec![],
            "projects[1]",
        ),
        (
            GOOD.replace("id = 42", "id = \"forty-two\""),
            vec![],
            "projects[1].id",
        ),
        (
            GOOD.replace(
                "timeout = \"5s\"",
                "timeout = \"5s\"\ntoken_file = \"/nonexistent/token\"",
            ),
            vec![],
            "gitlab.token_file",
        ),
        (
            GOOD.to_string(),
            vec![("GITLAB_JOBS_EXPORTER__POLL__INTERVAL", "bogus")],
            "poll.interval",
        ),
        (GOOD.replace("[server]", "[sever]"), vec![], "sever"),
    ];
    for (text, mut env, key) in cases {
        env.push(("GITLAB_TOKEN", TOKEN));
        let out = check(&text, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "error should name {key}: {stderr}");
        assert!(!stderr.contains(TOKEN));
    }
    // No token at all.
    let out = check(GOOD, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GITLAB_TOKEN"));
}

#[test]
fn version_flag() {
    let out = Command::new(BIN).arg("--version").output().expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Polls `url` until it answers 200 or the deadline passes.
async fn wait_ok(client: &reqwest::Client, url: &str, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_run_never_leaks_the_token_and_stops_cleanly_on_sigterm() {
    let now = chrono::Utc::now().timestamp_millis();
    let spec = WorldSpec::new(
        vec![
            ProjectSpec {
                id: 7,
                path: "acme/platform/api".into(),
                pipelines_per_hour: 20.0,
            },
            ProjectSpec {
                id: 8,
                path: "acme/web/frontend".into(),
                pipelines_per_hour: 10.0,
            },
        ],
        now - 3 * 3_600_000,
        now,
    );
    let sim = Simulator::new(World::generate(&spec, 5), SimClock::Live, TOKEN.to_string());
    // Error paths log too: make sure they do not leak either.
    sim.push_fault(Fault::ServerError(502));
    sim.push_fault(Fault::MalformedJson);
    sim.push_fault(Fault::RateLimitedJson);
    let handle = sim.spawn().await.expect("simulator");

    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[gitlab]\nurl = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[poll]\ninterval = \"1s\"\n[[projects]]\npath = \"acme/platform/api\"\n[[projects]]\nid = 8\n",
            handle.base_url
        ),
    );
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("GITLAB_TOKEN", TOKEN)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::hand_over(&mut cmd, &listener);
    let child = cmd.spawn().expect("exporter starts");
    // Drain both pipes while it runs, so every log line is kept and checked.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let mut child = child;
    let stderr_reader = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let stdout_reader = drain(child.stdout.take().map(|p| Box::new(p) as _));
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_ok(&client, &format!("{base}/readyz"), Duration::from_secs(60)).await;

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    let content_type = metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let metrics = metrics.text().await.expect("body");
    let index = client
        .get(format!("{base}/"))
        .send()
        .await
        .expect("index")
        .text()
        .await
        .expect("body");
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz")
        .status();

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("exporter exits");
    let stderr = stderr_reader.join().expect("stderr read");
    let stdout = stdout_reader.join().expect("stdout read");

    assert!(ready, "exporter became ready; log:\n{stderr}");
    assert_eq!(
        exit.code(),
        Some(0),
        "clean exit on SIGTERM; log:\n{stderr}"
    );
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(metrics.contains("gitlab_ci_jobs_total{"), "{metrics}");
    assert!(
        metrics.contains("project=\"acme/web/frontend\""),
        "a project given by id is shown by its path"
    );
    assert!(index.contains("href=\"metrics\""));
    assert!(health.is_success());
    assert!(
        stderr.contains("poll cycle failed") || stderr.contains("retrying"),
        "faults were logged"
    );
    for (what, text) in [
        ("stderr", &*stderr),
        ("stdout", &*stdout),
        ("/metrics", &*metrics),
    ] {
        assert!(!text.contains(TOKEN), "token leaked into {what}");
        assert!(
            !text.contains("TEST-SECRET"),
            "part of the token leaked into {what}"
        );
    }
    // Every request carried the token in a header, never in the URL.
    let log = sim.request_log();
    assert!(!log.is_empty());
    assert!(log.iter().all(|r| !r.path_and_query.contains(TOKEN)));
    handle.shutdown().await;
}

/// `LISTEN_FDS` set but no socket at fd 3 (here /dev/null): the exporter does not quietly
/// serve elsewhere; it fails (exit 1) and says why.
#[test]
fn socket_activation_without_a_socket_fails_clearly() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), GOOD);
    let not_a_socket = std::fs::File::open("/dev/null").expect("/dev/null");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&path)
        .env("GITLAB_TOKEN", TOKEN)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID");
    // SAFETY: only dup2 (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(not_a_socket.as_raw_fd(), 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let out = cmd.output().expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("LISTEN_FDS is set but fd 3 is no listening TCP socket"),
        "{stderr}"
    );
}

/// README's first command: `--demo` needs no GitLab and no configuration, finds the demo
/// group's projects by discovery and serves their jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_without_gitlab_and_discovers_its_projects() {
    let (listener, port) = common::loopback_listener();
    let mut cmd = Command::new(BIN);
    cmd.args(["--demo", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("GITLAB_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::hand_over(&mut cmd, &listener);
    let mut child = cmd.spawn().expect("demo starts");
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = wait_ok(&client, &format!("{base}/readyz"), Duration::from_secs(60)).await;
    // The simulated GitLab sends Job Hooks as its jobs change: some are applied.
    let hooked = |page: &str| {
        page.lines().any(|l| {
            l.starts_with("gitlab_jobs_exporter_webhook_events_total{")
                && l.contains("result=\"applied\"")
        })
    };
    // Failed jobs' logs are read and classified (the demo turns `[failures] classify` on).
    let classified = |page: &str| {
        page.lines()
            .any(|l| l.starts_with("gitlab_ci_job_failures_total{"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut metrics = String::new();
    while tokio::time::Instant::now() < deadline {
        metrics = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if hooked(&metrics) && classified(&metrics) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the demo became ready");
    assert!(hooked(&metrics), "the demo's hooks are applied: {metrics}");
    assert!(
        classified(&metrics),
        "the demo classifies failed jobs: {metrics}"
    );
    assert!(
        metrics.contains("gitlab_jobs_exporter_watched_projects 5"),
        "the demo group's five projects are discovered: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gitlab_ci_jobs_total{")
                && l.contains("project=\"acme/platform/api\"")),
        "jobs counted: {metrics}"
    );
}

/// Until a discovery pass has answered completely the set of projects is unknown: `/readyz`
/// says so (503) while `/healthz` is fine, and the log names the failing group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_complete_discovery_pass() {
    let (_sim, handle) = live_acme_api(5.0).await;
    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[gitlab]\nurl = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[[groups]]\npath = \"acme\"\n[[groups]]\npath = \"no-such-group\"\n",
            handle.base_url
        ),
    );
    // Wait (on the log, not the clock) for the first pass to end incomplete.
    let (mut child, rx) = spawn_with_log_lines(&config, &listener);
    let mut log = String::new();
    let incomplete = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let done = line.contains("project discovery incomplete");
                log.push_str(&line);
                log.push('\n');
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let status = |path: &'static str| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    let ready = status("/readyz").await;
    let health = status("/healthz").await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(incomplete, "an incomplete pass is logged:\n{log}");
    assert!(
        log.contains("no-such-group"),
        "the log names the group:\n{log}"
    );
    assert_eq!(ready, 503, "not ready before a complete pass");
    assert_eq!(health, 200);
    handle.shutdown().await;
}

/// A broken configuration file holding the token, in every shape a parser quotes: the error
/// (on stderr and in the log, text or JSON, with or without `--check-config`) names the key
/// and never shows the secret.
#[test]
fn config_errors_never_show_a_secret() {
    const SECRET: &str = "glpat-SECRETVALUE123";
    let head = "[gitlab]\nurl = \"https://gitlab.example.com\"\n";
    let tail = "\n[[projects]]\nid = 42\n";
    let files = [
        format!("{head}token = \"{SECRET}\n{tail}"),
        format!("{head}token = \"{SECRET}\"\ntoken = \"{SECRET}\"{tail}"),
        format!("{head}token = \"{SECRET}\\x\"{tail}"),
        format!("{head}token = \"\"\"\n{SECRET}\\q\n\"\"\"{tail}"),
        format!("{head}token = \"\"\"{SECRET}\n{tail}"),
        format!("{head}api_token = '{SECRET}{tail}"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for text in &files {
        let path = write_config(dir.path(), text);
        for format in ["text", "json"] {
            for check in [true, false] {
                let mut args = vec!["--log-format", format];
                if check {
                    args.push("--check-config");
                }
                let out = run(&path, &[], &args);
                let stdout = String::from_utf8_lossy(&out.stdout);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(2), "{stderr}\nfor\n{text}");
                assert!(
                    !stdout.contains("SECRETVALUE") && !stderr.contains("SECRETVALUE"),
                    "secret shown ({format}, check {check}):\n{stdout}{stderr}\nfor\n{text}"
                );
                assert!(stderr.contains("token"), "key named: {stderr}");
            }
        }
    }
    // Bad values for token keys in the environment: a token that is no header value, and a
    // token where a token file's path belongs.
    let path = write_config(dir.path(), GOOD);
    for (env, key) in [
        ("GITLAB_JOBS_EXPORTER__GITLAB__TOKEN", "gitlab.token"),
        (
            "GITLAB_JOBS_EXPORTER__GITLAB__TOKEN_FILE",
            "gitlab.token_file",
        ),
        ("GITLAB_TOKEN", "GITLAB_TOKEN"),
    ] {
        for format in ["text", "json"] {
            let value = format!("{SECRET}\nx");
            let out = run(
                &path,
                &[(env, value.as_str())],
                &["--log-format", format, "--check-config"],
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{env}: {stderr}");
            assert!(stderr.contains(key), "{env}: {key} not named: {stderr}");
            assert!(
                !stdout.contains("SECRETVALUE") && !stderr.contains("SECRETVALUE"),
                "{env} shown ({format}):\n{stdout}{stderr}"
            );
        }
    }
}

/// `--check-config | head -1`: the reader is gone before the output is written. That is no
/// panic (exit code 101): the configuration was checked.
#[test]
fn a_closed_stdout_or_stderr_is_no_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let closed = || {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        writer
    };
    let path = write_config(dir.path(), GOOD);
    for format in ["text", "json"] {
        let status = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--check-config", "--log-format", format])
            .env("GITLAB_TOKEN", TOKEN)
            .stdout(closed())
            .stderr(closed())
            .status()
            .expect("runs");
        assert_eq!(status.code(), Some(0), "valid configuration ({format})");
        // A configuration error with stderr closed still exits 2.
        let status = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["--check-config", "--log-format", format])
            .env_remove("GITLAB_TOKEN")
            .stdout(closed())
            .stderr(closed())
            .status()
            .expect("runs");
        assert_eq!(status.code(), Some(2), "configuration error ({format})");
    }
}

#[test]
fn url_credentials_are_refused_and_never_shown() {
    // As given, with the `/api/v4` that is stripped (and logged) first, and on a line the
    // TOML parser rejects (an unclosed string: the line would be quoted).
    for url in [
        "https://deploy:hunter2pass@gitlab.example.com\"",
        "https://deploy:hunter2pass@gitlab.example.com/api/v4/\"",
        "https://deploy:hunter2pass@gitlab.example.com",
    ] {
        let text = GOOD.replace("https://gitlab.example.com\"", url);
        let out = check(&text, &[("GITLAB_TOKEN", TOKEN)]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
        assert!(stderr.contains("gitlab.url"), "{stderr}");
        assert!(
            !stdout.contains("hunter2") && !stderr.contains("hunter2"),
            "{url}: {stdout}{stderr}"
        );
    }
}

#[test]
fn a_url_ending_with_api_v4_is_used_without_it() {
    let text = GOOD.replace(
        "https://gitlab.example.com",
        "https://gitlab.example.com/api/v4/",
    );
    let out = check(&text, &[("GITLAB_TOKEN", TOKEN)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("url = \"https://gitlab.example.com\"\n"),
        "{stdout}"
    );
    assert!(stderr.contains("/api/v4"), "the change is logged: {stderr}");
}

/// `gitlab.url` copied with its `/api/v4`, and a configured project that does not exist: the
/// URL is used without the suffix (jobs are counted), and the missing project keeps `/readyz`
/// at 503 while the log names the URL that answered 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_project_never_found_keeps_readyz_unready_and_names_the_url() {
    let (_sim, handle) = live_acme_api(20.0).await;
    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &format!(
            "[gitlab]\nurl = \"{}/api/v4\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n[[projects]]\npath = \"acme/api\"\n[[projects]]\npath = \"acme/missing\"\n",
            handle.base_url.trim_end_matches('/')
        ),
    );
    let (mut child, rx) = spawn_with_log_lines(&config, &listener);
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    // Wait (on the log) for the missing project's 404, then (on /readyz) for the other
    // project's first cycle.
    let mut log = String::new();
    let mut not_found = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("/projects/acme%2Fmissing") {
            not_found = true;
            break;
        }
    }
    let mut readyz = (0, String::new());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            readyz = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if readyz.1.contains("1 of 2") || readyz.0 == 200 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = match client.get(format!("{base}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let _ = child.kill();
    let _ = child.wait();
    // The reader ends at EOF, now that the exporter is gone.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        log.push_str(&line);
        log.push('\n');
    }
    handle.shutdown().await;
    assert!(not_found, "the log names the URL that answered 404:\n{log}");
    assert!(!log.contains("/api/v4/api/v4"), "{log}");
    assert!(log.contains("/api/v4/projects/acme%2Fmissing"), "{log}");
    assert_eq!(readyz.0, 503, "not ready: {}\n{log}", readyz.1);
    assert!(readyz.1.contains("1 of 2"), "{}", readyz.1);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gitlab_ci_jobs_total{") && l.contains("project=\"acme/api\"")),
        "jobs counted: {metrics}\n{log}"
    );
}

/// A config for the real binary against a GitLab that never answers (nothing listens at
/// `gitlab`: keep the returned socket while the exporter runs), serving on `port`.
fn unreachable_gitlab_config(
    dir: &Path,
    port: u16,
    extra: &str,
) -> (std::path::PathBuf, socket2::Socket) {
    let (reserved, gitlab) = common::refused_port();
    let config = write_config(
        dir,
        &format!(
            "[gitlab]\nurl = \"http://127.0.0.1:{gitlab}\"\ntimeout = \"2s\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n[poll]\ninterval = \"1s\"\n[[projects]]\npath = \"acme/api\"\n[[projects]]\nid = 42\n"
        ),
    );
    (config, reserved)
}

/// Spawns the binary serving on `listener`, optionally under a file descriptor limit, its
/// stderr in a file.
fn spawn_exporter(
    config: &Path,
    listener: &std::net::TcpListener,
    nofile: Option<u32>,
    log: &Path,
) -> std::process::Child {
    let log = std::fs::File::create(log).expect("log file");
    let mut cmd = match nofile {
        // `exec` keeps the pid: signals reach the exporter itself.
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.arg("--config")
        .arg(config)
        .env("GITLAB_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    common::hand_over(&mut cmd, listener);
    cmd.spawn().expect("exporter starts")
}

/// Sends SIGTERM and waits (generously, polling) for the exit status.
fn terminate(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(exit) = child.try_wait().expect("wait") {
            return Some(exit);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A client that sends half a request head and goes quiet must not keep the exporter alive
/// after SIGTERM (it used to hang for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_while_a_client_holds_a_half_sent_request_head() {
    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _gitlab) = unreachable_gitlab_config(dir.path(), port, "");
    let log = dir.path().join("log");
    let mut child = spawn_exporter(&config, &listener, None, &log);
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_ok(&client, &format!("{base}/healthz"), Duration::from_secs(60)).await,
        "exporter serves"
    );
    let mut quiet = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    quiet
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("half a head");
    // Connections are accepted in order: once a later one is answered, the quiet one is
    // being served (its half head read or waiting to be).
    assert!(wait_ok(&client, &format!("{base}/healthz"), Duration::from_secs(60)).await);
    let exit = terminate(&mut child);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        exit.and_then(|e| e.code()),
        Some(0),
        "exits 0 after SIGTERM; log:\n{log}"
    );
    drop(quiet);
}

/// Idle connections cannot exhaust the exporter's file descriptors for good: with only 64
/// allowed and 80 idle clients, a scrape still gets through (idle connections are closed
/// after server.header_read_timeout; they used to stay open forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_exhaust_file_descriptors() {
    let (served, exit, log) = scrape_through_an_idle_crowd("").await;
    assert!(served, "a scrape gets through the idle crowd; log:\n{log}");
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "log:\n{log}");
}

/// With server.max_connections below the descriptor limit, a crowd of idle clients waits in
/// the backlog: the exporter never runs out of descriptors (never fails to accept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_keeps_descriptors_in_bounds() {
    let (served, exit, log) =
        scrape_through_an_idle_crowd("max_connections = 16\nheader_read_timeout = \"1s\"").await;
    assert!(served, "a scrape gets through; log:\n{log}");
    assert!(
        !log.contains("cannot accept connections"),
        "never out of descriptors; log:\n{log}"
    );
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "log:\n{log}");
}

/// The exporter (with `server_extra` in `[server]`) limited to 64 file descriptors, 80 idle
/// clients connected: whether a fresh scrape got through, how the process exited on SIGTERM,
/// and its log.
async fn scrape_through_an_idle_crowd(
    server_extra: &str,
) -> (bool, Option<std::process::ExitStatus>, String) {
    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _gitlab) = unreachable_gitlab_config(dir.path(), port, server_extra);
    let log = dir.path().join("log");
    let mut child = spawn_exporter(&config, &listener, Some(64), &log);
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(wait_ok(&client, &format!("{base}/healthz"), Duration::from_secs(60)).await);
    let idle: Vec<_> = (0..80)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let served = wait_ok(&fresh, &format!("{base}/metrics"), Duration::from_secs(90)).await;
    let exit = terminate(&mut child);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    drop(idle);
    (served, exit, log)
}

/// GitLab unreachable from the very first start: the poll counters of a project configured
/// by path appear at once, a project configured by id gets no placeholder label, and the
/// never-polled gauge (which the ProjectsNeverPolled alert watches) counts both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_gitlab_from_the_start_shows_in_the_metrics() {
    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _gitlab) = unreachable_gitlab_config(dir.path(), port, "");
    let log = dir.path().join("log");
    let mut child = spawn_exporter(&config, &listener, None, &log);
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    // Wait (on the page, not the clock) for the first failed lookups to be counted.
    let start = Instant::now();
    let mut page = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(&url).send().await {
            page = r.text().await.unwrap_or_default();
            if sample(
                &page,
                "gitlab_jobs_exporter_poll_errors_total{project=\"acme/api\"}",
            )
            .is_some_and(|v| v >= 1.0)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = terminate(&mut child);
    let errors = sample(
        &page,
        "gitlab_jobs_exporter_poll_errors_total{project=\"acme/api\"}",
    );
    let polls = sample(
        &page,
        "gitlab_jobs_exporter_polls_total{project=\"acme/api\"}",
    );
    assert!(errors.is_some_and(|e| e >= 1.0), "{page}");
    assert!(polls >= errors, "{page}");
    assert!(
        page.contains("gitlab_jobs_exporter_projects_never_polled 2"),
        "{page}"
    );
    assert!(!page.contains("id 42"), "no placeholder label: {page}");
    assert!(
        !page.contains("gitlab_jobs_exporter_last_successful_poll_timestamp_seconds{"),
        "{page}"
    );
    assert_eq!(exit.and_then(|e| e.code()), Some(0));
}

/// The value of the sample `series` (name and labels as written) on a page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A checkpoint write that keeps failing is logged once when it starts failing and once when
/// it works again (not every second), and counted on /metrics meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checkpoint_writes_are_logged_once_per_change() {
    let (listener, port) = common::loopback_listener();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    // A GitLab that answers, so cycles (and checkpoints) come every second.
    let (_sim, handle) = live_acme_api(5.0).await;
    let config = write_config(
        dir.path(),
        &format!(
            "[gitlab]\nurl = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[state]\ndir = {:?}\n[poll]\ninterval = \"1s\"\nmax_interval = \"1s\"\n[[projects]]\npath = \"acme/api\"\n",
            handle.base_url,
            state.display().to_string()
        ),
    );
    let log = dir.path().join("log");
    let mut child = spawn_exporter(&config, &listener, None, &log);
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert!(wait_ok(&client, &url, Duration::from_secs(60)).await);
    // A directory where the temp file goes: every write fails from now on.
    let blocker = state.join("checkpoint.json.tmp");
    std::fs::create_dir(&blocker).expect("blocker");
    // Wait (on the page, not the clock) for a few failures to be counted.
    let mut failed = false;
    let start = Instant::now();
    while !failed && start.elapsed() < Duration::from_secs(60) {
        if let Ok(r) = client.get(&url).send().await {
            let page = r.text().await.unwrap_or_default();
            failed = sample(&page, "gitlab_jobs_exporter_checkpoint_failures_total")
                .is_some_and(|n| n >= 3.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::remove_dir(&blocker).expect("unblock");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let start = Instant::now();
    while !log_text().contains("checkpoint written again")
        && start.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exit = terminate(&mut child);
    let text = log_text();
    assert!(failed, "failures counted on /metrics; log:\n{text}");
    assert_eq!(
        text.matches("cannot write the checkpoint").count(),
        1,
        "logged once; log:\n{text}"
    );
    assert!(text.contains("checkpoint written again"), "log:\n{text}");
    assert_eq!(exit.and_then(|e| e.code()), Some(0), "log:\n{text}");
    handle.shutdown().await;
}

/// A simulator on the live clock serving one project, `acme/api` (id 7), with an hour of
/// history at `pipelines_per_hour`.
async fn live_acme_api(pipelines_per_hour: f64) -> (Simulator, gitlab_sim::SimHandle) {
    let now = chrono::Utc::now().timestamp_millis();
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 7,
            path: "acme/api".into(),
            pipelines_per_hour,
        }],
        now - 3_600_000,
        now,
    );
    let sim = Simulator::new(World::generate(&spec, 3), SimClock::Live, TOKEN.to_string());
    let handle = sim.spawn().await.expect("simulator");
    (sim, handle)
}

/// The exporter on `config` serving on `listener` (token from the environment,
/// `RUST_LOG=info`), with its log lines sent to the receiver as they come.
fn spawn_with_log_lines(
    config: &Path,
    listener: &std::net::TcpListener,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .env("GITLAB_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    common::hand_over(&mut cmd, listener);
    let mut child = cmd.spawn().expect("exporter starts");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `--classify-log FILE [--config FILE]`: the class and the rule on stdout, exit 0; the user's
/// rules first; no token needed; a bad rule exits 2 naming it; a log past `max_log_bytes` is
/// `log_too_large`; nothing of the log is printed.
#[test]
fn classify_log_prints_the_class_and_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("job.log");
    let secret = "SECRET-in-the-log-4711";
    std::fs::write(
        &log,
        format!(
            "\x1b[0Ksection_start:1700000000:step_script\r\x1b[0K$ export TOKEN={secret}\n\
             psql: could not connect to server: Connection refused\n\
             /bin/sh: line 3:   12 Killed   npm test\n\
             \x1b[31;1mERROR: Job failed: exit code 137\x1b[0;m\n"
        ),
    )
    .expect("write log");
    let classify = |config: Option<&Path>, file: &Path| {
        let mut cmd = Command::new(BIN);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--classify-log")
            .arg(file)
            .env_remove("GITLAB_TOKEN");
        let out = cmd.output().expect("binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
        (out.status.code(), stdout, stderr)
    };
    // The default rules, without a configuration.
    let (code, stdout, stderr) = classify(None, &log);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("class: oom\nrule: default rule 0 (oom): "),
        "{stdout}"
    );
    // The user's rules come first; the rest of the file needs no token.
    let rules = "\n[failures]\ntail_bytes = \"1KiB\"\nmax_log_bytes = \"2KiB\"\n\
                 [[failures.rules]]\nclass = \"flaky_db\"\nmatch = \"could not connect to server\"\n";
    let config = write_config(dir.path(), &format!("{GOOD}{rules}"));
    let (code, stdout, stderr) = classify(Some(&config), &log);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout,
        "class: flaky_db\nrule: failures.rules[0] (flaky_db): could not connect to server\n"
    );
    // Past max_log_bytes: not read to its end.
    let big = dir.path().join("big.log");
    std::fs::write(&big, "x".repeat(3000) + "\nOOMKilled\n").expect("write");
    let (code, stdout, _) = classify(Some(&config), &big);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("class: log_too_large\nrule: none\n"),
        "{stdout}"
    );
    // Nothing matched.
    let plain = dir.path().join("plain.log");
    std::fs::write(&plain, "make: *** [all] Error 2\n").expect("write");
    let (_, stdout, _) = classify(None, &plain);
    assert_eq!(stdout, "class: other\nrule: none\n");
    // A bad rule is a configuration error naming it.
    let bad = write_config(
        dir.path(),
        &format!("{GOOD}\n[[failures.rules]]\nclass = \"x\"\nmatch = \"(unclosed\"\n"),
    );
    let (code, stdout, stderr) = classify(Some(&bad), &log);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("failures.rules[0].match"), "{stderr}");
    // `-`: standard input.
    let mut child = Command::new(BIN)
        .args(["--classify-log", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"npm ERR! code ERESOLVE\n")
        .expect("write stdin");
    let out = child.wait_with_output().expect("exits");
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("class: dependency\nrule: default rule 18 (dependency): "),
        "{stdout}"
    );
    // A log that cannot be read is no configuration error.
    let (code, _, stderr) = classify(None, &dir.path().join("missing.log"));
    assert_eq!(code, Some(1), "{stderr}");
}

/// `[failures]` keys are overridden from the environment like any other, sizes included.
#[test]
fn failures_keys_have_environment_overrides() {
    let out = check(
        GOOD,
        &[
            ("GITLAB_TOKEN", TOKEN),
            ("GITLAB_JOBS_EXPORTER__FAILURES__CLASSIFY", "true"),
            ("GITLAB_JOBS_EXPORTER__FAILURES__TAIL_BYTES", "16KiB"),
            ("GITLAB_JOBS_EXPORTER__FAILURES__MAX_LOG_BYTES", "5000000"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[failures]\nclassify = true\n"), "{stdout}");
    assert!(stdout.contains("tail_bytes = \"16KiB\""), "{stdout}");
    assert!(stdout.contains("max_log_bytes = 5000000"), "{stdout}");
    let out = check(
        GOOD,
        &[
            ("GITLAB_TOKEN", TOKEN),
            ("GITLAB_JOBS_EXPORTER__FAILURES__TAIL_BYTES", "lots"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failures.tail_bytes"), "{stderr}");
}
