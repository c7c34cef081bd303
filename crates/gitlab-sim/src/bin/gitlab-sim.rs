//! `gitlab-sim`: the simulated GitLab as a process of its own, in real time, for benchmarks that
//! measure an exporter's CPU and memory apart from the simulator's (`scripts/bench.sh`).
//!
//! It serves one group (`--group`, default `bench`) of `--projects` projects, a `--busy-share`
//! of them busy, with pipelines timed so that about `--jobs-per-min` jobs complete per minute
//! (the rate is calibrated on the generated world and printed). `GET /__sim/stats` answers the
//! requests served so far as JSON (itself not counted); SIGTERM or Ctrl-C prints them to stderr
//! and exits. The first line on stdout is `gitlab-sim listening on http://ADDR`.
//!
//! ```text
//! gitlab-sim [--listen 127.0.0.1:0] [--projects 1000] [--busy-share 0.05]
//!            [--jobs-per-min 1100 | --busy-rate PIPELINES_PER_H] [--idle-rate 0.2] [--history 7200] [--duration 1800]
//!            [--job-names 1] [--group bench] [--token bench-token] [--seed 13]
//! ```

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::time::Instant;

use gitlab_sim::{JobPlan, Ms, ProjectSpec, SimClock, Simulator, World, WorldSpec};

const USAGE: &str = "usage: gitlab-sim [--listen ADDR] [--projects N] [--busy-share F] \
[--jobs-per-min F | --busy-rate F] [--idle-rate F] [--history SECS] [--duration SECS] [--job-names K] \
[--group PATH] [--token T] [--seed N]";

/// Jobs per pipeline of the generator, roughly; only the first guess of the calibration.
const JOBS_PER_PIPELINE_GUESS: f64 = 6.5;

#[derive(Debug, Clone)]
struct Args {
    listen: String,
    projects: u64,
    busy_share: f64,
    jobs_per_min: f64,
    idle_rate: f64,
    /// Pipelines per hour of a busy project, instead of calibrating it from `jobs_per_min`.
    busy_rate: Option<f64>,
    history_secs: i64,
    duration_secs: i64,
    job_names: u64,
    group: String,
    token: String,
    seed: u64,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            projects: 1000,
            busy_share: 0.05,
            jobs_per_min: 1100.0,
            idle_rate: 0.2,
            busy_rate: None,
            history_secs: 7200,
            duration_secs: 1800,
            job_names: 1,
            group: "bench".into(),
            token: "bench-token".into(),
            seed: 13,
        }
    }
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args::default();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.into());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--listen" => a.listen = value,
            "--projects" => a.projects = value.parse().map_err(|e| bad(&e))?,
            "--busy-share" => a.busy_share = value.parse().map_err(|e| bad(&e))?,
            "--jobs-per-min" => a.jobs_per_min = value.parse().map_err(|e| bad(&e))?,
            "--idle-rate" => a.idle_rate = value.parse().map_err(|e| bad(&e))?,
            "--busy-rate" => a.busy_rate = Some(value.parse().map_err(|e| bad(&e))?),
            "--history" => a.history_secs = value.parse().map_err(|e| bad(&e))?,
            "--duration" => a.duration_secs = value.parse().map_err(|e| bad(&e))?,
            "--job-names" => a.job_names = value.parse().map_err(|e| bad(&e))?,
            "--group" => a.group = value,
            "--token" => a.token = value,
            "--seed" => a.seed = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    if a.projects == 0 || a.job_names == 0 || !(0.0..=1.0).contains(&a.busy_share) {
        return Err(format!(
            "--projects and --job-names must be ≥ 1, --busy-share in 0..=1\n{USAGE}"
        ));
    }
    Ok(a)
}

/// How many projects are busy (at least one when the share is positive).
fn busy_count(a: &Args) -> u64 {
    let n = (a.projects as f64 * a.busy_share).round() as u64;
    if a.busy_share > 0.0 { n.max(1) } else { 0 }
}

fn generate(a: &Args, now: Ms, busy_rate: f64) -> World {
    let busy = busy_count(a);
    let projects = (1..=a.projects)
        .map(|id| ProjectSpec {
            id,
            path: format!("{}/project-{id}", a.group),
            pipelines_per_hour: if id <= busy { busy_rate } else { a.idle_rate },
        })
        .collect();
    let spec = WorldSpec::new(
        projects,
        now - a.history_secs * 1000,
        now + a.duration_secs * 1000,
    );
    World::generate(&spec, a.seed)
}

/// Jobs of projects `1..=busy` (or the others) completing per minute in `[from, to)`.
fn completions_per_min(world: &World, busy: u64, from: Ms, to: Ms) -> (f64, f64) {
    let (mut b, mut i) = (0u64, 0u64);
    for job in world.jobs() {
        if job
            .completed_at(Ms::MAX)
            .is_some_and(|t| t >= from && t < to)
        {
            if job.project_id <= busy {
                b += 1
            } else {
                i += 1
            }
        }
    }
    let minutes = (to - from) as f64 / 60_000.0;
    (b as f64 / minutes, i as f64 / minutes)
}

/// Spreads job names over `k` variants (`compile #3`), the same for a job and its retries (same
/// pipeline, same name), so that series counts can be scaled without more projects.
fn spread_names(world: World, k: u64) -> World {
    if k <= 1 {
        return world;
    }
    let jobs: Vec<JobPlan> = (world.jobs().iter().cloned())
        .map(|mut job| {
            let mut h = DefaultHasher::new();
            (job.pipeline_id, &job.name).hash(&mut h);
            job.name = format!("{} #{}", job.name, h.finish() % k);
            job
        })
        .collect();
    // The same ids, timelines and projects as a world that was valid already.
    match World::new(world.projects().to_vec(), jobs) {
        Ok(w) => w,
        Err(e) => unreachable!("renaming jobs keeps a valid world valid: {e}"),
    }
}

/// The world, with the busy rate scaled once so that completions over the first 10 minutes of
/// the run match `--jobs-per-min`.
fn build_world(a: &Args, now: Ms) -> (World, f64, f64) {
    let busy = busy_count(a);
    let window = (now, now + 600_000.min(a.duration_secs.max(60) * 1000));
    if let Some(rate) = a.busy_rate {
        let world = generate(a, now, rate);
        let (b, i) = completions_per_min(&world, busy, window.0, window.1);
        return (spread_names(world, a.job_names), rate, b + i);
    }
    let mut rate = if busy == 0 {
        0.0
    } else {
        a.jobs_per_min * 60.0 / JOBS_PER_PIPELINE_GUESS / busy as f64
    };
    let mut world = generate(a, now, rate);
    let (b, i) = completions_per_min(&world, busy, window.0, window.1);
    if b > 0.0 && a.jobs_per_min > i {
        rate *= (a.jobs_per_min - i) / b;
        world = generate(a, now, rate);
    }
    let (b, i) = completions_per_min(&world, busy, window.0, window.1);
    (spread_names(world, a.job_names), rate, b + i)
}

fn stats_json(sim: &Simulator, started: Instant) -> serde_json::Value {
    let s = sim.requests();
    let by_status: serde_json::Map<String, serde_json::Value> = (s.by_status.iter())
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    serde_json::json!({
        "uptime_secs": started.elapsed().as_secs_f64(),
        "total": s.total,
        "project": s.project,
        "jobs": s.jobs,
        "jobs_scoped": s.jobs_scoped,
        "job": s.job,
        "pipeline_jobs": s.pipeline_jobs,
        "group_projects": s.group_projects,
        "projects_list": s.projects_list,
        "hooks": s.hooks,
        "trace": s.trace,
        "other": s.other,
        "by_status": by_status,
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let now = chrono::Utc::now().timestamp_millis();
    let (world, rate, per_min) = build_world(&args, now);
    let jobs = world.jobs().len();
    let sim = Simulator::new(world, SimClock::Live, args.token.clone());
    let started = Instant::now();
    let stats_sim = sim.clone();
    let app = sim.router().route(
        "/__sim/stats",
        axum::routing::get(move || {
            let v = stats_json(&stats_sim, started);
            async move { axum::Json(v) }
        }),
    );
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gitlab-sim: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map_or(args.listen.clone(), |a| a.to_string());
    sim.set_external_url(&format!("http://{addr}"));
    println!("gitlab-sim listening on http://{addr}");
    println!(
        "world: {} projects in group {:?} ({} busy at {rate:.1} pipelines/h, others {}/h), \
         {jobs} jobs, {per_min:.0} jobs completing per minute over the first 10 minutes",
        args.projects,
        args.group,
        busy_count(&args),
        args.idle_rate
    );
    let _ = std::io::stdout().flush();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await;
    eprintln!("gitlab-sim stats: {}", stats_json(&sim, started));
    if let Err(e) = served {
        eprintln!("gitlab-sim: server failed: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_flags_and_rejects_unknown_ones() {
        let a = args("--projects 20 --busy-share 0.1 --job-names 3").unwrap();
        assert_eq!((a.projects, a.job_names), (20, 3));
        assert_eq!(busy_count(&a), 2);
        assert!(args("--bogus 1").is_err());
        assert!(args("--projects").is_err());
        assert!(args("--projects 0").is_err());
    }

    #[test]
    fn calibrates_the_completion_rate_and_spreads_names() {
        let a = args("--projects 40 --busy-share 0.1 --jobs-per-min 60 --job-names 4").unwrap();
        let (world, _, per_min) = build_world(&a, 1_800_000_000_000);
        assert!((40.0..80.0).contains(&per_min), "{per_min} jobs/min");
        let names: std::collections::BTreeSet<&str> =
            world.jobs().iter().map(|j| j.name.as_str()).collect();
        assert!(names.iter().any(|n| n.ends_with(" #3")), "{names:?}");
    }
}
