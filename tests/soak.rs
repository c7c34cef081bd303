//! Soak run, on demand (not in CI): the real binary, default request budget, against a busy
//! simulated GitLab that enforces GitLab's 600/min jobs-endpoint limit, for `SOAK_SECS`
//! (default 600) seconds. Asserts the RSS bound ([`RSS_BOUND_KIB`]); reports RSS over time
//! and the 429s received.
//!
//! `SOAK_SECS=600 cargo test --test soak -- --ignored --nocapture`

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TOKEN;
use gitlab_sim::{ProjectSpec, SimClock, Simulator, World, WorldSpec};

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");

/// The most resident memory the exporter may use here: about twice the highest figure measured
/// (46 MiB in BENCHMARKS.md's 240 s run; 44.6 MiB, at 120 s, in a 120 s run of this test). A leak
/// of state or series crosses it within minutes; allocator noise does not.
const RSS_BOUND_KIB: u64 = 96 * 1024;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 10-minute soak run; run on demand"]
async fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let now = chrono::Utc::now().timestamp_millis();
    // 40 projects: 4 busy, 10 occasional, 26 idle.
    let projects = (1..=40)
        .map(|id| ProjectSpec {
            id,
            path: format!("soak/group-{}/project-{id}", id % 4),
            pipelines_per_hour: match id {
                1..=4 => 60.0,
                5..=14 => 6.0,
                _ => 0.3,
            },
        })
        .collect();
    let world = World::generate(
        &WorldSpec::new(projects, now - 3_600_000, now + (secs as i64 + 600) * 1000),
        99,
    );
    let jobs = world.jobs().len();
    let sim = Simulator::new(world, SimClock::Live, TOKEN.to_string());
    sim.set_jobs_rate_limit(Some(600));
    let handle = sim.spawn().await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, port) = common::loopback_listener();
    let mut cfg = format!(
        "[gitlab]\nurl = {:?}\n[server]\nlisten = \"127.0.0.1:{port}\"\n[poll]\ninterval = \"10s\"\n[state]\ndir = {:?}\n",
        handle.base_url,
        dir.path().join("state").display().to_string()
    );
    // Found by discovery (the daemon's discovery task, in real time).
    cfg.push_str("[[groups]]\npath = \"soak\"\n");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, cfg).expect("config");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .env("GITLAB_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::hand_over(&mut cmd, &listener);
    let mut child = cmd.spawn().expect("exporter");
    let pid = child.id();
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let rss = rss_kib(pid).expect("the exporter runs (its /proc status is readable)");
        samples.push((started.elapsed().as_secs(), rss));
    }
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    let _ = child.kill();
    let _ = child.wait();
    let stats = sim.requests();
    let minutes = secs as f64 / 60.0;
    println!(
        "soak: {secs} s, {jobs} jobs in the world, 40 projects found by discovery, interval 10s, budget 300/min"
    );
    println!("RSS (KiB) over time: {samples:?}");
    println!(
        "requests: {} total, {:.1}/min; 429s: {}",
        stats.total,
        stats.total as f64 / minutes,
        stats.by_status.get(&429).copied().unwrap_or(0)
    );
    println!("/metrics: {} bytes", metrics.len());
    let pacing: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("gitlab_jobs_exporter_watched_projects")
                || l.starts_with("gitlab_jobs_exporter_paced_projects")
                || l.starts_with("gitlab_jobs_exporter_poll_interval_stretch_ratio")
                || l.starts_with("gitlab_jobs_exporter_request_demand_ratio")
                || l.starts_with("gitlab_jobs_exporter_discovery_runs_total")
        })
        .collect();
    println!("pacing and discovery at the end: {pacing:#?}");
    assert!(
        metrics.contains("gitlab_jobs_exporter_watched_projects 40"),
        "discovery found the 40 projects"
    );
    assert!(!samples.is_empty());
    let peak = samples.iter().map(|(_, kib)| *kib).max().unwrap_or(0);
    assert!(
        peak <= RSS_BOUND_KIB,
        "RSS peaked at {peak} KiB, above the bound of {RSS_BOUND_KIB} KiB: {samples:?}"
    );
    handle.shutdown().await;
}
