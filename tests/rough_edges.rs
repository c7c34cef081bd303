//! The binary's rough edges a first hour with it finds: `--check-config` prints the complete
//! effective configuration (and takes its own output), `--demo --config` is refused, a
//! duration given as a number says what a duration looks like, `--help` names the
//! environment and the exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");

const CONFIG: &str = r#"
[gitlab]
url = "https://gitlab.example.com"

[shard]
count = 3

[labels]
job = "normalized"
drop = ["runner", "failure_reason"]

[[labels.job_rewrites]]
match = 'deploy-(\w+)'
replace = 'deploy'

[[projects]]
id = 42
"#;

/// The binary with `args`, the token in the environment and nothing else of ours there.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("GITLAB_TOKEN", TOKEN)
        .env_remove("GITLAB_WEBHOOK_SECRET");
    for (k, _) in std::env::vars() {
        if k.starts_with("GITLAB_JOBS_EXPORTER__") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn check_config(path: &Path, hostname: &str) -> String {
    let out = run(
        &[
            "--config",
            path.to_str().expect("utf-8 path"),
            "--check-config",
        ],
        &[("HOSTNAME", hostname)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn check_config_prints_the_complete_configuration_which_checks_again_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, CONFIG).expect("write");
    let first = check_config(&path, "gje-2");
    let before_gitlab = first.split("[gitlab]\n").next().unwrap_or_default();
    assert!(
        first.starts_with("# configuration is valid\n")
            && before_gitlab.lines().all(|l| l.starts_with('#')),
        "no bare key before the first table:\n{first}"
    );
    assert!(!first.contains(TOKEN), "{first}");
    assert!(!first.contains("groups = []"), "{first}");
    assert!(!first.contains("[state]\n"), "no empty [state]:\n{first}");
    let table: toml::Table = first.parse().expect("valid TOML");
    assert_eq!(table["shard"]["index"].as_integer(), Some(2), "{first}");
    assert_eq!(
        table["labels"]["drop"].as_array().map(Vec::len),
        Some(2),
        "{first}"
    );
    assert_eq!(
        table["labels"]["job_rewrites"][0]["replace"].as_str(),
        Some("deploy"),
        "{first}"
    );
    for key in [
        "server",
        "poll",
        "metrics",
        "limits",
        "discovery",
        "webhook",
    ] {
        assert!(table.contains_key(key), "[{key}] shown:\n{first}");
    }
    // Its own output is a configuration that checks again into the same.
    let again_path = dir.path().join("effective.toml");
    std::fs::write(&again_path, &first).expect("write");
    let second = check_config(&again_path, "gje-2");
    let again: toml::Table = second.parse().expect("valid TOML");
    assert_eq!(table, again, "{first}\n---\n{second}");
}

#[test]
fn demo_with_a_config_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, CONFIG).expect("write");
    let out = run(
        &["--demo", "--config", path.to_str().expect("utf-8 path")],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--demo") && stderr.contains("--config"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
}

#[test]
fn a_duration_given_as_a_number_says_what_a_duration_looks_like() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, format!("{CONFIG}\n[poll]\ninterval = 30\n")).expect("write");
    let out = run(
        &[
            "--config",
            path.to_str().expect("utf-8 path"),
            "--check-config",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("poll.interval"), "{stderr}");
    assert!(
        stderr.contains("expected a duration such as \"30s\""),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "said once: {stderr}");
}

#[test]
fn help_names_the_environment_and_the_exit_codes() {
    let out = run(&["--help"], &[]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for needle in [
        "GITLAB_TOKEN",
        "GITLAB_WEBHOOK_SECRET",
        "GITLAB_JOBS_EXPORTER__SECTION__KEY",
        "GITLAB_JOBS_EXPORTER__POLL__INTERVAL",
        "RUST_LOG=gitlab_jobs_exporter=debug",
        "Exit codes:",
        "0  stopped cleanly",
        "1  a runtime failure",
        "2  a configuration or command-line error",
        "3  --check-gitlab",
    ] {
        assert!(help.contains(needle), "{needle} missing:\n{help}");
    }
    assert!(
        !help.contains("summary-interval"),
        "hidden knob shown:\n{help}"
    );
}
