//! What the binary says on stderr as it runs: each project's first cycle, the moment it is
//! ready, a summary every `--summary-interval` (10 minutes unless a test asks otherwise), the
//! URL to open in `--demo`; structured fields, never a `Debug`-printed struct; and the error
//! that ends the process printed once.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TOKEN;
use gitlab_sim::{ProjectSpec, SimClock, Simulator, World, WorldSpec};
use tokio::sync::mpsc::UnboundedReceiver;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");
/// How long a line may take to come: generous, for a loaded machine (no timing is asserted).
const WAIT: Duration = Duration::from_secs(60);

/// The binary with `args` (info logs, text), its stderr lines sent to the receiver as they
/// come (and kept by the caller for the final checks).
fn spawn(args: &[&str]) -> (Child, UnboundedReceiver<String>) {
    use std::io::BufRead;
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("GITLAB_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .env_remove("GITLAB_WEBHOOK_SECRET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("exporter starts");
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
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

/// Waits for the first line satisfying `want`; every line read is appended to `seen`.
async fn line(
    rx: &mut UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(l) = rx.recv().await {
            seen.push(l.clone());
            if want(&l) {
                return Some(l);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(l)) => l,
        _ => panic!("no {what} line; stderr so far:\n{}", seen.join("\n")),
    }
}

/// SIGTERM, then the rest of stderr into `seen`; the exit code.
async fn stop(mut child: Child, rx: &mut UnboundedReceiver<String>, seen: &mut Vec<String>) -> i32 {
    let pid = child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    // The reader ends when the process closes stderr, that is when it exits.
    let rest = tokio::time::timeout(WAIT, async {
        while let Some(l) = rx.recv().await {
            seen.push(l);
        }
    })
    .await;
    if rest.is_err() {
        let _ = child.kill();
    }
    let exit = child.wait().expect("wait");
    exit.code().unwrap_or(-1)
}

/// A struct printed with `{:?}` in a log line: `Name { field: ...`.
fn debug_struct(line: &str) -> bool {
    line.match_indices(" { ").any(|(i, _)| {
        let before = &line[..i];
        let name = before
            .rsplit(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or("");
        let after = &line[i + 3..];
        let field = after.split(':').next().unwrap_or("");
        name.starts_with(|c: char| c.is_ascii_uppercase())
            && !field.is_empty()
            && field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

#[test]
fn debug_struct_spots_what_it_should() {
    assert!(debug_struct(
        "INFO project discovery done stats=DiscoveryStats { requests: 1, complete: true }"
    ));
    assert!(!debug_struct(
        "INFO ready: 1 project, 3 jobs counted projects=1"
    ));
    assert!(!debug_struct("WARN matrix job build: [linux, arm] { x }"));
}

async fn live_sim() -> (Simulator, gitlab_sim::SimHandle) {
    let now = chrono::Utc::now().timestamp_millis();
    let spec = WorldSpec::new(
        vec![
            ProjectSpec {
                id: 7,
                path: "acme/api".into(),
                pipelines_per_hour: 20.0,
            },
            ProjectSpec {
                id: 8,
                path: "acme/web".into(),
                pipelines_per_hour: 10.0,
            },
        ],
        now - 3_600_000,
        now,
    );
    let sim = Simulator::new(World::generate(&spec, 5), SimClock::Live, TOKEN.to_string());
    let handle = sim.spawn().await.expect("simulator");
    (sim, handle)
}

fn write_config(dir: &Path, base_url: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        "[gitlab]\nurl = {base_url:?}\n[server]\nlisten = \"127.0.0.1:0\"\n[poll]\ninterval = \"1s\"\nmax_interval = \"2s\"\n[[projects]]\npath = \"acme/api\"\n[[projects]]\nid = 8\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A run against the simulator says, in this order: each project's first cycle, ready (with
/// the backfill's count), and a summary; no line dumps a struct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_logs_first_cycles_ready_and_summaries() {
    let (_sim, handle) = live_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &handle.base_url);
    let (child, mut rx) = spawn(&[
        "--config",
        config.to_str().expect("utf-8 path"),
        "--summary-interval",
        "2s",
    ]);
    let mut seen = Vec::new();
    let first = line(&mut rx, &mut seen, "first cycle", |l| {
        l.contains("first poll cycle done")
    })
    .await;
    assert!(first.contains("project=acme/"), "{first}");
    assert!(first.contains("jobs_counted="), "{first}");
    let ready = line(&mut rx, &mut seen, "ready", |l| l.contains("ready: ")).await;
    assert!(
        ready.contains("ready: 2 projects, ")
            && ready.contains(" jobs counted in the backfill, next poll in 1s"),
        "{ready}"
    );
    assert!(
        ready.contains("projects=2") && ready.contains("jobs_counted="),
        "{ready}"
    );
    // Both projects' first cycles came before it: the one configured by id under its path.
    for project in ["acme/api", "acme/web"] {
        assert!(
            seen.iter().any(|l| l.contains("first poll cycle done")
                && l.contains(&format!("project={project}"))),
            "{project}:\n{}",
            seen.join("\n")
        );
    }
    let summary = line(&mut rx, &mut seen, "summary", |l| {
        l.contains("summary of the last")
    })
    .await;
    for field in [
        "jobs_counted=",
        "requests_per_minute=",
        "budget_per_minute=300",
        "failing=0",
    ] {
        assert!(summary.contains(field), "{field}: {summary}");
    }
    let code = stop(child, &mut rx, &mut seen).await;
    assert_eq!(code, 0, "{}", seen.join("\n"));
    let dumps: Vec<&String> = seen.iter().filter(|l| debug_struct(l)).collect();
    assert!(dumps.is_empty(), "Debug-printed structs: {dumps:#?}");
    assert!(!seen.iter().any(|l| l.contains(TOKEN)));
    handle.shutdown().await;
}

/// `--demo` says which URL to open: the address it bound (a port picked by the kernel here),
/// which answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_the_url_to_open() {
    let (child, mut rx) = spawn(&["--demo", "--listen", "127.0.0.1:0"]);
    let mut seen = Vec::new();
    let open = line(&mut rx, &mut seen, "demo URL", |l| {
        l.contains("demo: open http://")
    })
    .await;
    let url = open
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("a URL")
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{open}"
    );
    assert!(
        !url.ends_with(":0/"),
        "the bound port, not the configured 0: {open}"
    );
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::new();
    let metrics = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(r) = client.get(format!("{url}metrics")).send().await
                && r.status().is_success()
            {
                return r.text().await.unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the URL answers");
    assert!(
        metrics.contains("gitlab_jobs_exporter_watched_projects"),
        "{metrics}"
    );
    let _ = stop(child, &mut rx, &mut seen).await;
    let dumps: Vec<&String> = seen.iter().filter(|l| debug_struct(l)).collect();
    assert!(dumps.is_empty(), "Debug-printed structs: {dumps:#?}");
}

/// The error that ends the process is printed once: as a plain line with text logs, as one
/// log record with JSON logs (no plain line in the JSON stream).
#[test]
fn a_fatal_error_is_printed_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[gitlab]\nurl = \"https://gitlab.example.com\"\n[server]\nlisten = \"{addr}\"\n[[projects]]\nid = 1\n"
        ),
    )
    .expect("write");
    for format in ["text", "json"] {
        let out = Command::new(BIN)
            .args([
                "--config",
                path.to_str().expect("utf-8"),
                "--log-format",
                format,
            ])
            .env("GITLAB_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let mentions: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&format!("cannot listen on {addr}")))
            .collect();
        assert_eq!(mentions.len(), 1, "{format}: {stderr}");
        if format == "json" {
            for l in stderr.lines() {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            }
        }
    }
    drop(taken);
}
