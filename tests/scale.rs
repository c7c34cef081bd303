//! Scale benchmark, on demand (not in CI): 1,000 projects (5% busy, 25% occasional, 70% idle),
//! ~20,000 jobs/hour, 10+ simulated minutes at a 30 s interval, exporter and simulator in one
//! process on loopback. Prints the figures recorded in BENCHMARKS.md.
//!
//! `cargo test --release --test scale -- --ignored --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::{Harness, assert_matches_truth, by_id};
use gitlab_jobs_exporter::config::MetricsConfig;
use gitlab_jobs_exporter::gitlab::JobStatus;
use gitlab_jobs_exporter::metrics::Metrics;
use gitlab_jobs_exporter::simulator::{Ms, ProjectSpec, World, WorldSpec};
use gitlab_jobs_exporter::tracker::{Event, JobLabels};

const T0: Ms = 1_790_000_000_000;
const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;

fn proc_field(file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn render_figures(series: usize) -> (f64, usize) {
    let m =
        Metrics::new(&MetricsConfig::default(), usize::MAX, &Default::default()).expect("metrics");
    let per_project = 100;
    let mut events = Vec::new();
    for p in 0..series.div_ceil(per_project) {
        events.clear();
        for j in 0..per_project {
            events.push(Event::Completed {
                labels: JobLabels {
                    ref_: format!("branch-{}", j % 10),
                    stage: "test".into(),
                    name: format!("job-{}", j / 10),
                    tag: false,
                    runner: None,
                },
                status: JobStatus::Success,
                failure_reason: String::new(),
                duration: Some(j as f64),
                finished_at: None,
            });
        }
        m.apply(&format!("group/project-{p}"), &events);
    }
    let start = Instant::now();
    let page = m.render().expect("render");
    (start.elapsed().as_secs_f64(), page.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a scale benchmark; run on demand"]
async fn scale() {
    let projects: Vec<ProjectSpec> = (1..=1000)
        .map(|id| ProjectSpec {
            id,
            path: format!("scale/group-{}/project-{id}", id / 50),
            pipelines_per_hour: match id % 100 {
                0..=4 => 40.0, // busy: 5%
                5..=29 => 4.0, // occasional: 25%
                _ => 0.1,      // idle: 70%
            },
        })
        .collect();
    let busy: Vec<String> = projects
        .iter()
        .filter(|p| p.pipelines_per_hour >= 40.0)
        .map(|p| p.path.clone())
        .collect();
    let gen_start = Instant::now();
    let world = World::generate(&WorldSpec::new(projects, T0, T0 + 3 * HOUR), 2026);
    let created: Vec<(u64, Ms)> = world
        .jobs()
        .iter()
        .map(|j| (j.project_id, j.created_at_ms))
        .collect();
    let jobs_per_hour = created.len() / 3;
    eprintln!(
        "world: {} jobs ({jobs_per_hour}/h) in {:?}",
        created.len(),
        gen_start.elapsed()
    );

    let refs = (1..=1000).map(by_id).collect();
    let mut h = Harness::start_with(world, T0 + HOUR, refs, Duration::from_secs(3600), |cfg| {
        cfg.poll.concurrency = 8;
    })
    .await;
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let first: usize = h.poll().await.iter().map(|s| s.requests).sum();
    let first_wall = wall0.elapsed();
    let cycles = 24; // 12 simulated minutes at 30 s
    let mut requests = 0usize;
    let mut naive = 0usize;
    let mut completed = 0usize;
    for _ in 0..cycles {
        h.sim.advance(Duration::from_secs(30));
        let now = h.sim.now_ms();
        let stats = h.poll().await;
        requests += stats.iter().map(|s| s.requests).sum::<usize>();
        completed += stats.iter().map(|s| s.completed).sum::<usize>();
        let mut per_project = std::collections::HashMap::<u64, usize>::new();
        for (p, c) in &created {
            if *c > now - HOUR && *c <= now {
                *per_project.entry(*p).or_default() += 1;
            }
        }
        naive += (1..=1000u64)
            .map(|p| {
                per_project
                    .get(&p)
                    .copied()
                    .unwrap_or(0)
                    .div_ceil(100)
                    .max(1)
            })
            .sum::<usize>();
    }
    let minutes = cycles as f64 * 0.5;
    let cpu = cpu_seconds() - cpu0;
    h.settle().await;
    let scrape = h.scrape().await;
    let truth = h.truth();
    assert_matches_truth(&scrape, &truth);
    let lag = scrape.histograms("gitlab_jobs_exporter_poll_lag_seconds");
    let lag = lag.values().next().cloned().unwrap_or_default();
    let quantile = |q: f64| {
        let target = q * lag.count;
        lag.buckets
            .iter()
            .find(|(_, c)| *c >= target)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    let busy_active: usize = truth
        .active
        .iter()
        .filter(|((p, _), _)| busy.contains(p))
        .map(|(_, n)| *n as usize)
        .sum();
    let peak_rss_mib = proc_field("/proc/self/status", "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    println!("## scale benchmark");
    println!(
        "projects 1000 (50 busy, 250 occasional, 700 idle), {jobs_per_hour} jobs/h, {cycles} cycles of 30 s ({minutes} simulated minutes)"
    );
    println!(
        "first cycle (lookup + backfill + listing): {first} requests, {:.1} s wall",
        first_wall.as_secs_f64()
    );
    println!(
        "steady state: {:.0} requests/min; budget 300/min; naive 1-hour re-read {:.0}/min; lower bound {:.0}/min",
        requests as f64 / minutes,
        naive as f64 / minutes,
        (1000.0 * 2.0) + completed as f64 / minutes / 100.0
    );
    println!(
        "freshness (all projects, bucket upper bounds): p50 <= {} s, p95 <= {} s, max <= {} s over {} jobs; busy projects' jobs still active at the end: {busy_active}",
        quantile(0.5),
        quantile(0.95),
        quantile(1.0),
        lag.count
    );
    println!(
        "exactness: {} jobs counted, equal to ground truth",
        truth.total_jobs()
    );
    println!(
        "peak RSS {peak_rss_mib:.0} MiB (exporter and simulator in one process); CPU {:.2} s for {completed} jobs = {:.3} s per 1,000 jobs",
        cpu,
        cpu / (completed.max(1) as f64 / 1000.0)
    );
    for series in [10_000, 100_000] {
        let (secs, bytes) = render_figures(series);
        println!(
            "/metrics with {series} job series: render {:.1} ms, {:.1} MiB",
            secs * 1000.0,
            bytes as f64 / 1_048_576.0
        );
    }
    h.stop().await;
}
