//! CPU and memory of the exporter's polling, on demand (not in CI): the real binary in its own
//! process, 1,000 projects found through a group (5% busy), a generous budget, against a live
//! simulator in this process. Prints CPU-s per 1,000 API requests (whole run and after the
//! first cycle) and the exporter's peak RSS; with `COST_PERF=FILE` it also records a `perf`
//! profile of the exporter (`perf report -i FILE --stdio --no-children`).
//!
//! `cargo test --release --test cost_cpu -- --ignored --nocapture` (`COST_SECS`, default 90;
//! `COST_BIN` to measure another build of the binary)

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TOKEN;
use gitlab_sim::{ProjectSpec, SimClock, Simulator, World, WorldSpec};

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");

/// The binary measured: `COST_BIN` (a saved build, to compare two side by side), else this one.
fn bin() -> String {
    std::env::var("COST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// utime + stime of `pid` in seconds (`/proc/PID/stat` fields 14 and 15, in clock ticks).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / hz)
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn world(now: i64, secs: u64) -> World {
    let projects = (1..=1000)
        .map(|id| ProjectSpec {
            id,
            path: format!("cost/group-{}/project-{id}", id / 50),
            pipelines_per_hour: match id % 100 {
                0..=4 => 40.0,
                5..=29 => 4.0,
                _ => 0.1,
            },
        })
        .collect();
    World::generate(
        &WorldSpec::new(projects, now - 3_600_000, now + (secs as i64 + 600) * 1000),
        2026,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 90-second measurement; run on demand, in release"]
async fn cpu_per_request_and_peak_rss() {
    let secs: u64 = std::env::var("COST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let now = chrono::Utc::now().timestamp_millis();
    let world = world(now, secs);
    let sim = Simulator::new(world, SimClock::Live, TOKEN.to_string());
    let handle = sim.spawn().await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, port) = common::loopback_listener();
    // A short backfill (~1,700 jobs): the polling is measured, not a /metrics page of an
    // hour of 1,000 projects' jobs rendered at every checkpoint.
    let backfill = std::env::var("COST_BACKFILL").unwrap_or_else(|_| "5m".into());
    let cfg = format!(
        "[gitlab]\nurl = {:?}\nmax_requests_per_minute = 6000\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
         [poll]\ninterval = \"10s\"\nbackfill = {backfill:?}\n[state]\ndir = {:?}\n[[groups]]\npath = \"cost\"\n",
        handle.base_url,
        dir.path().join("state").display().to_string()
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, cfg).expect("config");
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(&config)
        .env("GITLAB_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::hand_over(&mut cmd, &listener);
    let mut child = cmd.spawn().expect("exporter");
    let pid = child.id();
    let perf = std::env::var("COST_PERF").ok().map(|out| {
        Command::new("perf")
            .args([
                "record",
                "-F",
                "997",
                "-g",
                "-o",
                &out,
                "-p",
                &pid.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf")
    });
    let started = Instant::now();
    // The first cycle (discovery, backfill) is over well before this; steady state after.
    let warm = Duration::from_secs(secs / 3);
    tokio::time::sleep(warm).await;
    let cpu_warm = cpu_seconds(pid).expect("exporter runs");
    let req_warm = sim.requests().total;
    let rss_warm = status_kib(pid, "VmRSS:").unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(secs).saturating_sub(started.elapsed())).await;
    let cpu_end = cpu_seconds(pid).expect("exporter runs");
    let req_end = sim.requests().total;
    let hwm = status_kib(pid, "VmHWM:").unwrap_or(0);
    let rss_end = status_kib(pid, "VmRSS:").unwrap_or(0);
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    if let Some(mut perf) = perf {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
        let _ = perf.wait();
    }
    let _ = child.kill();
    let _ = child.wait();
    let steady_req = req_end - req_warm;
    println!(
        "cost: {secs} s, 1,000 projects by discovery, interval 10s, backfill {backfill}, budget 6000/min"
    );
    println!(
        "whole run: {req_end} requests, CPU {cpu_end:.2} s = {:.3} CPU-s per 1,000 requests",
        cpu_end * 1000.0 / req_end.max(1) as f64
    );
    println!(
        "after {} s: {steady_req} requests, CPU {:.2} s = {:.3} CPU-s per 1,000 requests",
        warm.as_secs(),
        cpu_end - cpu_warm,
        (cpu_end - cpu_warm) * 1000.0 / steady_req.max(1) as f64
    );
    println!(
        "RSS: peak {:.1} MiB, {:.1} MiB at {} s, {:.1} MiB at the end; /metrics {} bytes",
        hwm as f64 / 1024.0,
        rss_warm as f64 / 1024.0,
        warm.as_secs(),
        rss_end as f64 / 1024.0,
        metrics.len()
    );
    assert!(
        metrics.contains("gitlab_jobs_exporter_watched_projects 1000"),
        "discovery found the 1,000 projects"
    );
    assert!(req_end > 1000, "the exporter polled ({req_end} requests)");
    handle.shutdown().await;
}
