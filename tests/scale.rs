//! Scale benchmark, on demand (not in CI): 1,000 projects (5% busy, 25% occasional, 70% idle),
//! ~20,000 jobs/hour, 20 simulated minutes paced as the daemon paces them within GitLab's
//! default budget, exporter and simulator in one process on loopback. Prints the figures
//! recorded in BENCHMARKS.md.
//!
//! `cargo test --release --test scale -- --ignored --nocapture`

mod common;

use std::time::{Duration, Instant};

use common::{Harness, assert_matches_truth, by_id};
use gitlab_jobs_exporter::config::MetricsSettings;
use gitlab_jobs_exporter::metrics::Metrics;
use gitlab_jobs_exporter::model::JobStatus;
use gitlab_jobs_exporter::tracker::{Event, JobLabels};
use gitlab_sim::{Ms, ProjectSpec, World, WorldSpec};

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
    let m = Metrics::new(&MetricsSettings::default(), usize::MAX, &Default::default())
        .expect("metrics");
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
    // The simulated clock runs far faster than real time, so the real-time throttle stays off
    // (harness) and the pacer plans against GitLab's default budget instead.
    const BUDGET: f64 = 300.0;
    h.scheduler.set_pacing_budget(BUDGET);
    let busy_ids: std::collections::HashSet<u64> =
        (1..=1000u64).filter(|id| id % 100 <= 4).collect();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut due = std::collections::BTreeMap::new();
    let mut elapsed = Duration::ZERO;
    h.cutoff_ms = Some(h.sim.now_ms() - HOUR);
    h.first_poll_ms = Some(h.sim.now_ms());
    let first: usize = h
        .scheduler
        .poll_due(elapsed, &mut due)
        .await
        .iter()
        .map(|s| s.requests)
        .sum();
    let first_wall = wall0.elapsed();
    // Top-page polls of busy projects (simulated ms), for their freshness.
    let mut busy_polls: std::collections::HashMap<u64, Vec<Ms>> = Default::default();
    let record_polls = |h: &Harness, polls: &mut std::collections::HashMap<u64, Vec<Ms>>| {
        for r in h.sim.request_log() {
            let Some(rest) = r.path_and_query.strip_prefix("/api/v4/projects/") else {
                continue;
            };
            let Some((id, tail)) = rest.split_once('/') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            // The first page of the plain list: one per cycle.
            if busy_ids.contains(&id)
                && tail.starts_with("jobs?")
                && !tail.contains("scope")
                && !tail.contains("id_after")
                && !tail.contains("id_before")
                && !tail.contains("cursor")
            {
                polls.entry(id).or_default().push(r.at_ms);
            }
        }
        h.sim.reset_requests();
    };
    record_polls(&h, &mut busy_polls);
    // Warm-up: let idle projects settle into their back-off before measuring.
    let step = Duration::from_secs(5);
    let warmup = Duration::from_secs(5 * 60);
    let measured = Duration::from_secs(15 * 60);
    let mut requests = 0usize;
    let (mut cycles, mut pages, mut scoped, mut singles) = (0usize, 0usize, 0usize, 0usize);
    let mut pipeline_pages = 0usize;
    let mut naive = 0usize;
    let mut completed = 0usize;
    let mut naive_samples = 0usize;
    let measure_from = h.sim.now_ms() + warmup.as_millis() as Ms;
    while elapsed < warmup + measured {
        h.sim.advance(step);
        elapsed += step;
        let stats = h.scheduler.poll_due(elapsed, &mut due).await;
        record_polls(&h, &mut busy_polls);
        let now = h.sim.now_ms();
        if now <= measure_from {
            continue;
        }
        requests += stats.iter().map(|s| s.requests).sum::<usize>();
        cycles += stats.len();
        pages += stats.iter().map(|s| s.pages).sum::<usize>();
        scoped += stats.iter().map(|s| s.scoped_pages).sum::<usize>();
        singles += stats.iter().map(|s| s.single_fetches).sum::<usize>();
        pipeline_pages += stats.iter().map(|s| s.pipeline_pages).sum::<usize>();
        completed += stats.iter().map(|s| s.completed).sum::<usize>();
        // What re-reading each project's last hour every 30 s would cost, sampled every 30 s.
        if (now - measure_from) % 30_000 == 0 {
            naive_samples += 1;
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
    }
    let end_ms = h.sim.now_ms();
    let minutes = measured.as_secs_f64() / 60.0;
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed();
    let pace = h.scrape().await;
    let gauge = |name: &str, activity: &str| {
        pace.values(name)
            .iter()
            .find(|(l, _)| activity.is_empty() || l["activity"] == activity)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    let (busy_n, idle_n) = (
        gauge("gitlab_jobs_exporter_paced_projects", "busy"),
        gauge("gitlab_jobs_exporter_paced_projects", "idle"),
    );
    let (busy_stretch, idle_stretch) = (
        gauge("gitlab_jobs_exporter_poll_interval_stretch_ratio", "busy"),
        gauge("gitlab_jobs_exporter_poll_interval_stretch_ratio", "idle"),
    );
    let demand = gauge("gitlab_jobs_exporter_request_demand_ratio", "");

    // Freshness of busy projects: a job finishing at t is counted by its project's first cycle
    // after t (every cycle reads all that changed: top pages, listing, single fetches).
    let world = h.sim.world();
    let mut lags: Vec<f64> = Vec::new();
    for job in world
        .jobs()
        .iter()
        .filter(|j| busy_ids.contains(&j.project_id))
    {
        let Some(done) = job.finished_at(end_ms) else {
            continue;
        };
        if done <= measure_from || done > end_ms {
            continue;
        }
        let polls = busy_polls
            .get(&job.project_id)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if let Some(seen) = polls.iter().find(|t| **t >= done) {
            lags.push((seen - done) as f64 / 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        lags.get(((lags.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };

    h.settle().await;
    let scrape = h.scrape().await;
    let truth = h.truth();
    assert_matches_truth(&scrape, &truth);
    let peak_rss_mib = proc_field("/proc/self/status", "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let lower = 1000.0 * 2.0 + completed as f64 / minutes / 100.0;
    println!("## scale benchmark");
    println!(
        "projects 1000 (50 busy, 250 occasional, 700 idle), {jobs_per_hour} jobs/h; poll.interval 30 s, poll.max_interval 10 min, budget {BUDGET}/min; {} min warm-up, {minutes} min measured, 5 s scheduling steps",
        warmup.as_secs() / 60
    );
    println!(
        "first cycle (lookup + backfill + listing, all projects at once): {first} requests = {:.1} min of the budget; {:.1} s wall",
        first as f64 / BUDGET,
        first_wall.as_secs_f64()
    );
    println!(
        "steady state: {:.0} requests/min; budget {BUDGET}/min; naive 1-hour re-read every 30 s {:.0}/min; lower bound at a fixed 30 s interval {:.0}/min",
        requests as f64 / minutes,
        naive as f64 / naive_samples.max(1) as f64 * 2.0,
        lower
    );
    println!(
        "measured window: {cycles} cycles; requests by kind: {pages} list pages, {scoped} scope[] listing pages, {singles} single-job fetches, {pipeline_pages} pipeline job-list pages"
    );
    println!(
        "pacing at the end: {busy_n} busy / {idle_n} idle projects; stretch busy {busy_stretch:.2}, idle {idle_stretch:.2}; demand/budget {demand:.2}"
    );
    println!(
        "freshness, busy projects ({} jobs): p50 {:.0} s, p95 {:.0} s, max {:.0} s",
        lags.len(),
        pct(0.5),
        pct(0.95),
        lags.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "exactness: {} jobs counted, equal to ground truth",
        truth.total_jobs()
    );
    println!(
        "peak RSS {peak_rss_mib:.0} MiB (exporter and simulator in one process); CPU {:.2} s for {completed} jobs = {:.3} s per 1,000 jobs; wall {:.0} s",
        cpu,
        cpu / (completed.max(1) as f64 / 1000.0),
        wall.as_secs_f64()
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
