//! Scale benchmark, on demand (not in CI): 1,000 projects (5% busy, 25% occasional, 70% idle),
//! ~20,000 jobs/hour, paced as the daemon paces them within GitLab's default budget, exporter
//! and simulator in one process on loopback. One run drives, on the same world and the same
//! simulated steps, a polling-only exporter and exporters that also receive Job Hooks (one per
//! `webhook.reconcile_interval` measured), each against its own simulator (so requests are
//! told apart), each checked against the ground truth. Prints the figures recorded in
//! BENCHMARKS.md ("Scale" and "Webhooks").
//!
//! `cargo test --test scale -- --ignored --nocapture`

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{HOOK_SECRET, Harness, assert_matches_truth, by_id, until, with_webhooks};
use gitlab_jobs_exporter::config::MetricsSettings;
use gitlab_jobs_exporter::metrics::Metrics;
use gitlab_jobs_exporter::model::JobStatus;
use gitlab_jobs_exporter::project::cycle::CycleStats;
use gitlab_jobs_exporter::tracker::{Event, JobLabels};
use gitlab_sim::{HookKnobs, HookProjects, HookSender, Ms, ProjectSpec, World, WorldSpec};

const T0: Ms = 1_790_000_000_000;
const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
/// The simulated clock runs far faster than real time, so the real-time throttle stays off
/// (harness) and the pacer plans against GitLab's default budget instead.
const BUDGET: f64 = 300.0;
/// Scheduling steps of simulated time (`Scheduler::poll_due`: the daemon's pacing, no jitter).
const STEP: Duration = Duration::from_secs(5);
/// Hooks are sent as the simulated clock passes their due time, at this resolution.
const HOOK_TICK: Duration = Duration::from_millis(250);
/// Every this many steps (one simulated minute) the run waits until the exporter has applied
/// every hook sent: a check costs a `/metrics` render of the whole page, too slow for every
/// step. Counts do not depend on it (a hook's observation is dated by its `Date`, the
/// simulated time it was sent); only which of a hook and a poll counts a job first might.
const SYNC_EVERY: usize = 12;
/// Lets idle projects settle into their back-off (30 s doubling to 10 min takes 16 min, and
/// the first cycle's backlog stretches delays up to 4× at first), and projects with jobs in
/// flight receive their first hook.
fn warmup() -> Duration {
    Duration::from_secs(60 * env_minutes("SCALE_WARMUP_MINUTES", 40))
}

fn env_minutes(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(default)
}
/// The measured window: an hour (`SCALE_MINUTES` for a shorter try), long enough for a
/// 1-hour `webhook.reconcile_interval` to come round once.
fn measured() -> Duration {
    Duration::from_secs(60 * env_minutes("SCALE_MINUTES", 60))
}
/// The exporters with hooks measured: `webhook.reconcile_interval` and, where set,
/// `poll.max_interval` (how long a quiet project that sends no hook waits; default 10 min).
const HOOKED: [(Duration, Option<Duration>); 3] = [
    (Duration::from_secs(600), None),
    (Duration::from_secs(3600), None),
    (Duration::from_secs(3600), Some(Duration::from_secs(3600))),
];
/// Hooks are late by up to this (so also reordered); none dropped or repeated.
const HOOK_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Class {
    Busy,
    Occasional,
    Idle,
}

impl Class {
    fn of(id: u64) -> Self {
        match id % 100 {
            0..=4 => Self::Busy,        // 5%
            5..=29 => Self::Occasional, // 25%
            _ => Self::Idle,            // 70%
        }
    }

    fn pipelines_per_hour(self) -> f64 {
        match self {
            Self::Busy => 40.0,
            Self::Occasional => 4.0,
            Self::Idle => 0.1,
        }
    }
}

fn scale_world() -> World {
    let projects: Vec<ProjectSpec> = (1..=1000)
        .map(|id| ProjectSpec {
            id,
            path: format!("scale/group-{}/project-{id}", id / 50),
            pipelines_per_hour: Class::of(id).pipelines_per_hour(),
        })
        .collect();
    World::generate(&WorldSpec::new(projects, T0, T0 + 3 * HOUR), 2026)
}

/// `(project id, rest)` of a request to `/api/v4/projects/:id/…`.
fn project_request(path_and_query: &str) -> Option<(u64, &str)> {
    let rest = path_and_query.strip_prefix("/api/v4/projects/")?;
    let (id, tail) = rest.split_once('/')?;
    Some((id.parse().ok()?, tail))
}

/// The first page of the plain job list: one per cycle.
fn is_top_page(tail: &str) -> bool {
    tail.starts_with("jobs?")
        && !tail.contains("scope")
        && !tail.contains("id_after")
        && !tail.contains("id_before")
        && !tail.contains("cursor")
}

/// What a measured window cost one exporter.
#[derive(Debug, Default)]
struct Window {
    /// Every API request its simulator answered.
    logged: usize,
    by_project: HashMap<u64, usize>,
    /// Top pages (cycles) by project.
    cycles_by_project: HashMap<u64, usize>,
    cycles: usize,
    requests: usize,
    pages: usize,
    scoped: usize,
    singles: usize,
    pipeline_pages: usize,
    completed: usize,
    cpu: f64,
}

impl Window {
    fn add(&mut self, stats: &[CycleStats]) {
        self.cycles += stats.len();
        for s in stats {
            self.requests += s.requests;
            self.pages += s.pages;
            self.scoped += s.scoped_pages;
            self.singles += s.single_fetches;
            self.pipeline_pages += s.pipeline_pages;
            self.completed += s.completed;
        }
    }
}

/// One exporter against its own simulator (same world, same steps as the others).
struct Run {
    name: String,
    h: Harness,
    hooks: Option<HookSender>,
    reconcile: Option<Duration>,
    due: BTreeMap<u64, Duration>,
    /// Top-page polls (simulated ms) by project: a cycle counts whatever completed before it.
    polls: HashMap<u64, Vec<Ms>>,
    first: usize,
    first_wall: Duration,
    m: Window,
}

/// Job events the exporter has dealt with (applied or not), refusals aside. Read from the
/// page's text: parsing a 1,000-project page at every step would dominate the run.
async fn hooks_handled(h: &Harness) -> f64 {
    let (status, _, page) = h.get("/metrics").await;
    assert_eq!(status, 200);
    page.lines()
        .filter_map(|l| l.strip_prefix("gitlab_jobs_exporter_webhook_events_total{"))
        .filter(|l| l.contains("event=\"job\""))
        .filter(|l| !l.contains("result=\"rejected\"") && !l.contains("result=\"malformed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the exporter has dealt with every hook sent so far.
async fn applied(h: &Harness, hooks: &HookSender) {
    let sent = hooks.stats().sent as f64;
    until(
        "every hook sent is applied",
        Duration::from_secs(60),
        || async { (hooks_handled(h).await >= sent).then_some(()) },
    )
    .await;
}

impl Run {
    /// Starts the exporter (with hooks when `reconcile` is set) and runs its first cycle.
    async fn start(world: World, hooked: Option<(Duration, Option<Duration>)>) -> Self {
        let reconcile = hooked.map(|(r, _)| r);
        let max_interval = hooked.and_then(|(_, m)| m);
        let refs = (1..=1000).map(by_id).collect();
        let mut h = Harness::start_with(world, T0 + HOUR, refs, Duration::from_secs(3600), |cfg| {
            cfg.poll.concurrency = 8;
            // 100 simulated minutes of this world make ~40k job series: more than the
            // default cap (20,000 per family), which would fold the rest into `__other__`.
            cfg.limits.max_series = 1_000_000;
            if let Some(r) = reconcile {
                with_webhooks(cfg);
                cfg.webhook.reconcile_interval = r;
            }
            if let Some(m) = max_interval {
                cfg.poll.max_interval = m;
            }
        })
        .await;
        h.scheduler.set_pacing_budget(BUDGET);
        h.cutoff_ms = Some(h.sim.now_ms() - HOUR);
        h.first_poll_ms = Some(h.sim.now_ms());
        let wall = Instant::now();
        let mut due = BTreeMap::new();
        let stats = h.scheduler.poll_due(Duration::ZERO, &mut due).await;
        let first = stats.iter().map(|s| s.requests).sum();
        let first_wall = wall.elapsed();
        // Hooks for every change from now on (GitLab sends them whether or not a poll ran).
        let hooks = reconcile.map(|_| {
            let knobs = HookKnobs {
                max_delay: HOOK_DELAY,
                seed: 2026,
                ..HookKnobs::default()
            };
            let url = format!("{}/webhook", h.metrics_url);
            HookSender::new(&h.sim, &url, HOOK_SECRET, knobs).expect("hook sender")
        });
        let name = match (reconcile, max_interval) {
            (None, _) => "polling only".to_string(),
            (Some(r), None) => format!("hooks, reconcile {}", humantime::format_duration(r)),
            (Some(r), Some(m)) => format!(
                "hooks, reconcile {}, poll.max_interval {}",
                humantime::format_duration(r),
                humantime::format_duration(m)
            ),
        };
        let mut run = Self {
            name,
            h,
            hooks,
            reconcile,
            due,
            polls: HashMap::new(),
            first,
            first_wall,
            m: Window::default(),
        };
        run.record(&[], false);
        run
    }

    /// One scheduling step: the clock moves `STEP` (hooks sent as it passes their due time,
    /// and applied), then every project due polls.
    async fn step(&mut self, elapsed: Duration, measuring: bool, sync: bool) {
        let cpu0 = cpu_seconds();
        match &self.hooks {
            None => self.h.sim.advance(STEP),
            Some(hooks) => {
                for _ in 0..STEP.as_millis() / HOOK_TICK.as_millis() {
                    self.h.sim.advance(HOOK_TICK);
                    hooks.deliver_due().await;
                }
                if sync {
                    applied(&self.h, hooks).await;
                }
            }
        }
        let stats = self.h.scheduler.poll_due(elapsed, &mut self.due).await;
        self.record(&stats, measuring);
        if measuring {
            self.m.cpu += cpu_seconds() - cpu0;
        }
    }

    fn record(&mut self, stats: &[CycleStats], measuring: bool) {
        let log = self.h.sim.request_log();
        self.h.sim.reset_requests();
        for r in &log {
            let Some((id, tail)) = project_request(&r.path_and_query) else {
                continue;
            };
            let top = is_top_page(tail);
            if top {
                self.polls.entry(id).or_default().push(r.at_ms);
            }
            if measuring {
                *self.m.by_project.entry(id).or_default() += 1;
                if top {
                    *self.m.cycles_by_project.entry(id).or_default() += 1;
                }
            }
        }
        if measuring {
            self.m.logged += log.len();
            self.m.add(stats);
        }
    }
}

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

impl Run {
    /// Projects that sent no hook all run yet were polled faster than every 5 min: what
    /// their jobs not final at the end are waiting in (nothing changes, so nothing is sent).
    fn print_never_hooked(&self, minutes: f64) {
        let Some(hooks) = &self.hooks else { return };
        let ever: HashSet<u64> = hooks.deliveries().iter().map(|d| d.project_id).collect();
        let frequent: HashSet<u64> = (1..=1000u64)
            .filter(|id| !ever.contains(id))
            .filter(|id| {
                let c = self.m.cycles_by_project.get(id).copied().unwrap_or(0);
                c as f64 / (minutes / 60.0) > 12.0
            })
            .collect();
        let (world, end) = (self.h.sim.world(), self.h.sim.now_ms());
        let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
        for job in world
            .jobs()
            .iter()
            .filter(|j| frequent.contains(&j.project_id))
        {
            if let Some(s) = job.status_at(end).filter(|s| !gitlab_sim::is_final(s)) {
                *waiting.entry(s.to_string()).or_default() += 1;
            }
        }
        let requests: usize = frequent
            .iter()
            .filter_map(|id| self.m.by_project.get(id))
            .sum();
        println!(
            "  never hooked, polled more than 12×/h: {} projects, {:.1} requests/min; their jobs not final at the end: {waiting:?}",
            frequent.len(),
            requests as f64 / minutes
        );
    }
}

/// Finished → counted, for the jobs of a window.
#[derive(Debug, Default)]
struct Fresh {
    lags: Vec<f64>,
    by_hook: usize,
    by_poll: usize,
    /// Finished in the window, not counted by its end.
    uncounted: usize,
}

impl Fresh {
    fn pct(&self, q: f64) -> f64 {
        self.lags
            .get(((self.lags.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn line(&self) -> String {
        format!(
            "{} jobs: p50 {:.1} s, p95 {:.1} s, max {:.1} s (counted by a hook {}, by a poll {}; not counted by the end {})",
            self.lags.len(),
            self.pct(0.5),
            self.pct(0.95),
            self.lags.last().copied().unwrap_or(f64::NAN),
            self.by_hook,
            self.by_poll,
            self.uncounted
        )
    }
}

impl Run {
    /// When each job's completion hook was answered (simulated ms; the test waits until
    /// every hook sent is applied before the clock moves on).
    fn hook_counted(&self) -> HashMap<u64, Ms> {
        let mut out: HashMap<u64, Ms> = HashMap::new();
        for d in self.hooks.iter().flat_map(HookSender::deliveries) {
            if matches!(d.status.as_str(), "success" | "failed" | "canceled") {
                let t = out.entry(d.job_id).or_insert(d.sent_at_ms);
                *t = (*t).min(d.sent_at_ms);
            }
        }
        out
    }

    /// A job finishing at t is counted by its project's first cycle at or after t (every
    /// cycle reads all that changed), or by the hook of its completion, whichever comes first.
    fn freshness(
        &self,
        hooked: &HashMap<u64, Ms>,
        (from, to): (Ms, Ms),
        keep: impl Fn(u64) -> bool,
    ) -> Fresh {
        let world = self.h.sim.world();
        let mut f = Fresh::default();
        for job in world.jobs().iter().filter(|j| keep(j.project_id)) {
            let Some(done) = job.finished_at(to) else {
                continue;
            };
            if done <= from || done > to {
                continue;
            }
            let poll = self
                .polls
                .get(&job.project_id)
                .and_then(|p| p.iter().find(|t| **t >= done))
                .copied();
            let counted = match (hooked.get(&job.id).copied(), poll) {
                (Some(h), Some(p)) if p < h => (p, false),
                (Some(h), _) => (h, true),
                (None, Some(p)) => (p, false),
                (None, None) => {
                    f.uncounted += 1;
                    continue;
                }
            };
            if counted.1 {
                f.by_hook += 1;
            } else {
                f.by_poll += 1;
            }
            f.lags.push((counted.0 - done) as f64 / 1000.0);
        }
        f.lags.sort_by(f64::total_cmp);
        f
    }

    /// Requests and cycles by class of project, split by whether the project had received a
    /// hook before the window (so was reconciling).
    fn print_breakdown(&self, minutes: f64, measure_from: Ms) {
        let receiving: HashSet<u64> = self
            .hooks
            .iter()
            .flat_map(HookSender::deliveries)
            .filter(|d| d.sent_at_ms <= measure_from)
            .map(|d| d.project_id)
            .collect();
        for class in [Class::Busy, Class::Occasional, Class::Idle] {
            for hooked in [true, false] {
                let ids: Vec<u64> = (1..=1000u64)
                    .filter(|id| Class::of(*id) == class && receiving.contains(id) == hooked)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                let sum =
                    |m: &HashMap<u64, usize>| ids.iter().filter_map(|id| m.get(id)).sum::<usize>();
                let max_cycles = ids
                    .iter()
                    .map(|id| self.m.cycles_by_project.get(id).copied().unwrap_or(0))
                    .max()
                    .unwrap_or(0);
                let (requests, cycles) = (sum(&self.m.by_project), sum(&self.m.cycles_by_project));
                let state = match (hooked, self.reconcile) {
                    (true, Some(r)) => format!(
                        "receiving hooks (reconcile pace {:.1}/h)",
                        3600.0 / r.as_secs_f64()
                    ),
                    _ => "no hook before the window".to_string(),
                };
                println!(
                    "  {class:?} {state}: {} projects, {:.1} requests/min, {:.2} cycles per project per hour (max {max_cycles} in the window), {:.2} requests per cycle",
                    ids.len(),
                    requests as f64 / minutes,
                    cycles as f64 / ids.len() as f64 / (minutes / 60.0),
                    requests as f64 / cycles.max(1) as f64,
                );
            }
        }
        self.print_never_hooked(minutes);
    }
}

/// The exporter's own view at the end: pacing and webhook state.
async fn print_exporter_view(h: &Harness) {
    let s = h.scrape().await;
    let by = |name: &str, key: &str, value: &str| {
        s.values(name)
            .iter()
            .filter(|(l, _)| value.is_empty() || l.get(key).map(String::as_str) == Some(value))
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    println!(
        "  pacing at the end: {} busy / {} idle projects; stretch busy {:.2}, idle {:.2}; demand/budget {:.2}",
        by("gitlab_jobs_exporter_paced_projects", "activity", "busy"),
        by("gitlab_jobs_exporter_paced_projects", "activity", "idle"),
        by(
            "gitlab_jobs_exporter_poll_interval_stretch_ratio",
            "activity",
            "busy"
        ),
        by(
            "gitlab_jobs_exporter_poll_interval_stretch_ratio",
            "activity",
            "idle"
        ),
        by("gitlab_jobs_exporter_request_demand_ratio", "", ""),
    );
    let lag = s.histograms("gitlab_jobs_exporter_poll_lag_seconds");
    for source in ["webhook", "poll"] {
        let Some((_, hist)) = lag
            .iter()
            .find(|(l, _)| l.get("source").map(String::as_str) == Some(source))
        else {
            continue;
        };
        let within = |le: f64| {
            hist.buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(f64::NAN, |(_, c)| c / hist.count.max(1.0))
        };
        println!(
            "  exporter's poll_lag_seconds{{source=\"{source}\"}} (whole run): {} jobs, {:.1}% ≤ 1 s, {:.1}% ≤ 2.5 s, {:.1}% ≤ 60 s",
            hist.count,
            100.0 * within(1.0),
            100.0 * within(2.5),
            100.0 * within(60.0)
        );
    }
    if s.values("gitlab_jobs_exporter_webhook_projects").is_empty() {
        return;
    }
    println!(
        "  webhook projects: {} receiving, {} silent; missed (webhook_missed_total) {}",
        by(
            "gitlab_jobs_exporter_webhook_projects",
            "state",
            "receiving"
        ),
        by("gitlab_jobs_exporter_webhook_projects", "state", "silent"),
        by("gitlab_jobs_exporter_webhook_missed_total", "", ""),
    );
}

impl Run {
    /// Prints the run's figures; returns its row of the summary table.
    async fn print(&self, measure_from: Ms, end_ms: Ms, base: usize) -> String {
        let minutes = measured().as_secs_f64() / 60.0;
        let m = &self.m;
        println!("## {}", self.name);
        println!(
            "  first cycle: {} requests ({:.1} s wall)",
            self.first,
            self.first_wall.as_secs_f64()
        );
        println!(
            "  steady state: {:.1} API requests/min ({} in {minutes} min; cycles reported {}); {} cycles, {:.2} requests per cycle",
            m.logged as f64 / minutes,
            m.logged,
            m.requests,
            m.cycles,
            m.requests as f64 / m.cycles.max(1) as f64
        );
        println!(
            "  requests by kind: {} list pages, {} scope[] listing pages, {} single-job fetches, {} pipeline job-list pages",
            m.pages, m.scoped, m.singles, m.pipeline_pages
        );
        self.print_breakdown(minutes, measure_from);
        let hooked = self.hook_counted();
        let window = (measure_from, end_ms);
        let busy = self.freshness(&hooked, window, |p| Class::of(p) == Class::Busy);
        let all = self.freshness(&hooked, window, |_| true);
        println!("  freshness, busy projects, {}", busy.line());
        println!("  freshness, all projects, {}", all.line());
        if let Some(hooks) = &self.hooks {
            println!("  hooks: {:?}", hooks.stats());
        }
        print_exporter_view(&self.h).await;
        println!(
            "  CPU in the window (exporter + its simulator + hook sender): {:.1} s",
            m.cpu
        );
        let f = |x: &Fresh| {
            format!(
                "{:.1} / {:.1} / {:.1} s",
                x.pct(0.5),
                x.pct(0.95),
                x.lags.last().copied().unwrap_or(f64::NAN)
            )
        };
        format!(
            "| {} | {:.0} | {:.1}× | {} | {} |",
            self.name,
            m.logged as f64 / minutes,
            base as f64 / m.logged.max(1) as f64,
            f(&busy),
            f(&all)
        )
    }
}

/// Polling-only figures of the "Scale" section: what naive polling would cost.
fn print_polling_bounds(world: &World, run: &Run, measure_from: Ms) {
    let minutes = measured().as_secs_f64() / 60.0;
    let created: Vec<(u64, Ms)> = world
        .jobs()
        .iter()
        .map(|j| (j.project_id, j.created_at_ms))
        .collect();
    // Re-reading each project's last hour every 30 s, sampled every 30 s.
    let (mut naive, mut samples) = (0usize, 0usize);
    let mut now = measure_from + 30_000;
    while now <= measure_from + measured().as_millis() as Ms {
        samples += 1;
        let mut per_project = HashMap::<u64, usize>::new();
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
        now += 30_000;
    }
    let lower = 1000.0 * 2.0 + run.m.completed as f64 / minutes / 100.0;
    println!(
        "  first cycle = {:.1} min of the budget; naive 1-hour re-read every 30 s {:.0}/min; lower bound at a fixed 30 s interval {lower:.0}/min",
        run.first as f64 / BUDGET,
        naive as f64 / samples.max(1) as f64 * 2.0,
    );
}

/// Whether everything but `gitlab_ci_jobs_active` and the oldest-pending gauge equals the
/// truth (the check's order: counters, histograms, then the gauges).
fn matches_but_active(scrape: &common::Scrape, truth: &gitlab_sim::GroundTruth) -> bool {
    let mut t = truth.clone();
    t.active = scrape
        .values("gitlab_ci_jobs_active")
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .map(|(l, v)| ((l["project"].clone(), l["status"].clone()), v as u64))
        .collect();
    t.oldest_pending.clear();
    let mut s = common::Scrape::parse(&scrape.text);
    s.samples
        .retain(|x| x.metric != "gitlab_ci_jobs_oldest_pending_timestamp_seconds");
    common::matches_truth(&s, &t)
}

/// Every hooked exporter, before any settling poll: the hooks still on their way for
/// changes up to `end_ms` are sent (and no later change), then each is compared with the
/// truth at `end_ms`.
async fn hooked_exact_at(runs: &mut [Run], end_ms: Ms) {
    for run in runs.iter_mut() {
        let Some(hooks) = &run.hooks else { continue };
        hooks.set_projects(HookProjects::Only(BTreeSet::new()));
        run.h.sim.advance(HOOK_DELAY);
        hooks.deliver_due().await;
        applied(&run.h, hooks).await;
        let stats = hooks.stats();
        assert_eq!(stats.failed, 0, "{stats:?}");
        assert!(stats.by_status.keys().all(|s| *s == 200), "{stats:?}");
        let (cutoff, first) = (run.h.cutoff_ms.expect("set"), run.h.first_poll_ms);
        let truth = run.h.sim.world().ground_truth_since(end_ms, cutoff, first);
        let scrape = run.h.scrape().await;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_matches_truth(&scrape, &truth)
        }));
        std::panic::set_hook(hook);
        let why = match &outcome {
            Ok(()) => String::new(),
            Err(_) if matches_but_active(&scrape, &truth) => {
                let got: BTreeMap<(String, String), f64> = scrape
                    .values("gitlab_ci_jobs_active")
                    .into_iter()
                    .map(|(l, v)| ((l["project"].clone(), l["status"].clone()), v))
                    .collect();
                let keys: BTreeSet<&(String, String)> =
                    truth.active.keys().chain(got.keys()).collect();
                let diff: Vec<String> = keys
                    .into_iter()
                    .filter_map(|k| {
                        let want = truth.active.get(k).copied().unwrap_or(0) as f64;
                        let have = got.get(k).copied().unwrap_or(0.0);
                        (want != have).then(|| format!("{} {}: {have} (truth {want})", k.0, k.1))
                    })
                    .collect();
                format!("(counters and histograms equal; gitlab_ci_jobs_active differs: {diff:?})")
            }
            Err(e) => e
                .downcast_ref::<String>()
                .map_or("?", String::as_str)
                .chars()
                .take(1500)
                .collect(),
        };
        println!(
            "{}: equal to the truth at the end of the window before any settling poll: {} {why}",
            run.name,
            outcome.is_ok()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a scale benchmark; run on demand"]
async fn scale() {
    let gen_start = Instant::now();
    let world = scale_world();
    let jobs_per_hour = world.jobs().len() / 3;
    eprintln!(
        "world: {} jobs ({jobs_per_hour}/h) in {:?}",
        world.jobs().len(),
        gen_start.elapsed()
    );
    let mut runs = vec![Run::start(world.clone(), None).await];
    for hooked in HOOKED {
        runs.push(Run::start(world.clone(), Some(hooked)).await);
    }
    let wall0 = Instant::now();
    let start_ms = T0 + HOUR;
    let measure_from = start_ms + warmup().as_millis() as Ms;
    let mut elapsed = Duration::ZERO;
    let mut steps = 0;
    while elapsed < warmup() + measured() {
        elapsed += STEP;
        steps += 1;
        let measuring = start_ms + elapsed.as_millis() as Ms > measure_from;
        for run in &mut runs {
            run.step(elapsed, measuring, steps % SYNC_EVERY == 0).await;
        }
    }
    let end_ms = start_ms + elapsed.as_millis() as Ms;
    let wall = wall0.elapsed();
    println!("## scale benchmark");
    println!(
        "projects 1000 (50 busy, 250 occasional, 700 idle), {jobs_per_hour} jobs/h; poll.interval 30 s, poll.max_interval 10 min, budget {BUDGET}/min; {} min warm-up, {} min measured, {} s scheduling steps; hooks sent every {} ms of simulated time, late by up to {} ms, none dropped or repeated",
        warmup().as_secs() / 60,
        measured().as_secs() / 60,
        STEP.as_secs(),
        HOOK_TICK.as_millis(),
        HOOK_DELAY.as_millis()
    );
    let mut table = vec![
        "| exporter | requests/min | fewer than polling only | freshness busy p50 / p95 / max | freshness all p50 / p95 / max |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    for run in &runs {
        table.push(run.print(measure_from, end_ms, runs[0].m.logged).await);
        if run.hooks.is_none() {
            print_polling_bounds(&world, run, measure_from);
        }
    }
    println!("{}", table.join("\n"));
    hooked_exact_at(&mut runs, end_ms).await;
    for run in &mut runs {
        run.h.settle().await;
        assert_matches_truth(&run.h.scrape().await, &run.h.truth());
        println!(
            "{}: after settling, {} jobs counted, equal to the ground truth",
            run.name,
            run.h.truth().total_jobs()
        );
        print_exporter_view(&run.h).await;
    }
    let peak_rss_mib = proc_field("/proc/self/status", "VmHWM:").unwrap_or(0) as f64 / 1024.0;
    println!(
        "peak RSS {peak_rss_mib:.0} MiB ({} exporters and simulators in one process); wall {:.0} s",
        runs.len(),
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
    for run in runs {
        run.h.stop().await;
    }
}
