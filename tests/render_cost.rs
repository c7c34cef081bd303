//! What rendering `/metrics` costs at 1k, 10k and 100k job series (each a counter and two
//! histograms, as a completed job that ran makes): time, MB/s, page size plain and gzip
//! (levels 1 and 6), and the heap the render takes beyond what was there before, for the
//! renderer in use and for the `prometheus` crate's encoder from protobuf families (how the
//! page was rendered before). A measurement, not run by default:
//! `cargo test --release --test render_cost -- --ignored --nocapture --test-threads=1` (the heap
//! counter is process-wide: tests running side by side would count each other's allocations).
//! Also bytes per job series under the levers (fewer buckets, fewer labels).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use gitlab_jobs_exporter::config::labels::{Droppable, LabelsConfig, RunnerMode};
use gitlab_jobs_exporter::config::{Buckets, MetricsSettings};
use gitlab_jobs_exporter::metrics::jobs::{self, Bounds, ProjectSeries, Room};
use gitlab_jobs_exporter::metrics::{Metrics, gzip};
use gitlab_jobs_exporter::model::{JobRunner, JobStatus};
use gitlab_jobs_exporter::tracker::{Event, JobLabels};
use prometheus::Encoder;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The old and the new block may both exist while the data is copied.
        grew(new_size);
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result, the seconds it took, the peak heap above the heap before
/// it, and the heap it left allocated.
fn measure<T>(f: impl FnOnce() -> T) -> (T, f64, usize, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let out = f();
    let secs = start.elapsed().as_secs_f64();
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    (out, secs, PEAK.load(Ordering::Relaxed) - base, kept)
}

fn rank(f: &prometheus::proto::MetricFamily) -> u8 {
    use prometheus::proto::MetricType;
    match f.get_field_type() {
        MetricType::HISTOGRAM | MetricType::SUMMARY => 3,
        _ if f.name() == "gitlab_ci_jobs_total" => 0,
        _ if f.name().starts_with("gitlab_ci_") => 1,
        _ => 2,
    }
}

/// The page as it was rendered before: every series copied into protobuf families, then the
/// encoder, then a copy into a `String`.
fn encoder_page(
    mut families: Vec<prometheus::proto::MetricFamily>,
    jobs: &BTreeMap<String, ProjectSeries>,
    bounds: &Bounds,
) -> String {
    families.extend(jobs::families(jobs.iter(), bounds, &Default::default()));
    families.sort_by(|a, b| (rank(a), a.name()).cmp(&(rank(b), b.name())));
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut buf)
        .expect("encode");
    String::from_utf8_lossy(&buf).into_owned()
}

fn job_series(n: usize, bounds: &Bounds) -> BTreeMap<String, ProjectSeries> {
    let per_project = 100;
    let mut room = Room {
        max: usize::MAX,
        used: [0; 3],
        folded: false,
    };
    let mut jobs = BTreeMap::new();
    for p in 0..n.div_ceil(per_project) {
        let mut events = Vec::new();
        for j in 0..per_project.min(n - p * per_project) {
            let labels = JobLabels {
                ref_: format!("branch-{}", j % 10),
                stage: "test".into(),
                name: format!("rspec-{}", j / 10),
                tag: false,
                runner: None,
            };
            events.push(Event::Started {
                labels: labels.clone(),
                queued_duration: j as f64 / 3.0,
            });
            events.push(Event::Completed {
                labels,
                status: JobStatus::Success,
                failure_reason: String::new(),
                duration: Some(j as f64 * 7.25),
                finished_at: None,
            });
        }
        let mut series = ProjectSeries::default();
        series.apply(&events, bounds, &Default::default(), &mut room);
        jobs.insert(format!("scale/group-{}/project-{p}", p / 50), series);
    }
    jobs
}

#[test]
#[ignore = "a measurement; run by hand"]
fn render_cost_at_1k_10k_100k_job_series() {
    let settings = MetricsSettings::default();
    let bounds = Bounds {
        duration: settings.duration_buckets.as_slice().to_vec(),
        queued: settings.queued_buckets.as_slice().to_vec(),
    };
    let m = Metrics::new(&settings, usize::MAX, &Default::default()).expect("metrics");
    println!("| job series | renderer | render ms | MB/s | page MB | peak extra heap (× page) |");
    println!("|---|---|---|---|---|---|");
    for n in [1_000, 10_000, 100_000] {
        let (jobs, .., held) = measure(|| job_series(n, &bounds));
        let (plain, .., unlabelled) = measure(|| {
            serde_json::from_str::<BTreeMap<String, ProjectSeries>>(
                &serde_json::to_string(&jobs).expect("json"),
            )
            .expect("json")
        });
        let mut best = [(f64::MAX, 0, 0); 2];
        let keep = |best: &mut (f64, usize, usize), t: f64, peak: usize, len: usize| {
            if t < best.0 {
                *best = (t, peak, len);
            }
        };
        // The same own families for both (the process gauges move between two gathers).
        let own = m.own_families();
        for _ in 0..3 {
            let (old, t, peak, _) = measure(|| encoder_page(own.clone(), &jobs, &bounds));
            keep(&mut best[0], t, peak, old.len());
            drop(old);
            let (new, t, peak, _) = measure(|| m.render_with(own.clone(), &jobs).expect("page"));
            keep(&mut best[1], t, peak, new.len());
            assert!(
                new == encoder_page(own.clone(), &jobs, &bounds),
                "pages differ"
            );
        }
        for ((t, peak, len), name) in best.iter().zip(["encoder (before)", "direct (after)"]) {
            println!(
                "| {n} | {name} | {:.1} | {:.0} | {:.1} | {:.1} MB ({:.2}) |",
                t * 1e3,
                *len as f64 / 1e6 / t,
                *len as f64 / 1e6,
                *peak as f64 / 1e6,
                *peak as f64 / *len as f64
            );
        }
        let page = m.render_with(m.own_families(), &jobs).expect("page");
        let at = page
            .find("# HELP gitlab_ci_job_duration_seconds ")
            .expect("split");
        for level in [1, 6] {
            let (parts, t, ..) =
                measure(|| gzip::Parts::new(&page.as_bytes()[..at], &page.as_bytes()[at..], level));
            let size = parts.expect("gzip").len();
            println!(
                "  gzip level {level}: {:.2} MB ({:.1}× smaller) in {:.1} ms ({:.0} MB/s)",
                size as f64 / 1e6,
                page.len() as f64 / size as f64,
                t * 1e3,
                page.len() as f64 / 1e6 / t
            );
        }
        let series = jobs
            .values()
            .map(|s| s.total.len() + s.duration.len() + s.queued.len())
            .sum::<usize>();
        println!(
            "  series held: {:.0} B per job series (counter + 2 histograms), of which label blocks {:.0} B ({series} series)",
            held as f64 / n as f64,
            held.saturating_sub(unlabelled) as f64 / n as f64,
        );
        drop(plain);
    }
}

/// A world of `n` job series, each a counter and two histograms, under `layout` (every job has
/// a runner, so `labels.runner` shows).
fn job_series_under(
    n: usize,
    bounds: &Bounds,
    layout: &jobs::Layout,
) -> BTreeMap<String, ProjectSeries> {
    let per_project = 100;
    let mut room = Room {
        max: usize::MAX,
        used: [0; 3],
        folded: false,
    };
    let mut jobs = BTreeMap::new();
    for p in 0..n.div_ceil(per_project) {
        let mut events = Vec::new();
        for j in 0..per_project.min(n - p * per_project) {
            let labels = JobLabels {
                ref_: format!("branch-{}", j % 10),
                stage: "test".into(),
                name: format!("rspec-{}", j / 10),
                tag: false,
                runner: Some(JobRunner {
                    description: format!("shared-runner-{}", j % 4),
                    runner_type: "instance_type".into(),
                }),
            };
            events.push(Event::Started {
                labels: labels.clone(),
                queued_duration: j as f64 / 3.0,
            });
            events.push(Event::Completed {
                labels,
                status: JobStatus::Success,
                failure_reason: String::new(),
                duration: Some(j as f64 * 7.25),
                finished_at: None,
            });
        }
        let mut series = ProjectSeries::default();
        series.apply(&events, bounds, layout, &mut room);
        jobs.insert(format!("scale/group-{}/project-{p}", p / 50), series);
    }
    jobs
}

/// Bytes per job series (a counter and two histograms, as a job that ran makes) under the two
/// levers an operator has: fewer histogram buckets (`[metrics]`) and fewer labels (`[labels]`):
/// page text, gzip on the wire, heap held, checkpoint JSON. Each job series stays one series
/// here; dropping a label also merges series (how many depends on the jobs).
#[test]
#[ignore = "a measurement; run by hand"]
fn bytes_per_job_series_under_the_levers() {
    let n = 10_000;
    let buckets = |d: usize, q: usize| MetricsSettings {
        duration_buckets: Buckets::new(
            "d",
            MetricsSettings::default().duration_buckets.as_slice()[..d].to_vec(),
        )
        .expect("buckets"),
        queued_buckets: Buckets::new(
            "q",
            MetricsSettings::default().queued_buckets.as_slice()[..q].to_vec(),
        )
        .expect("buckets"),
    };
    let policy = |runner: RunnerMode, drop: &[Droppable]| LabelsConfig {
        runner,
        drop: drop.to_vec(),
        ..Default::default()
    };
    let variants = [
        (
            "default: 14 + 12 buckets, no runner label",
            MetricsSettings::default(),
            LabelsConfig::default(),
        ),
        ("8 + 6 buckets", buckets(8, 6), LabelsConfig::default()),
        ("4 + 3 buckets", buckets(4, 3), LabelsConfig::default()),
        (
            "labels.runner = \"description\"",
            MetricsSettings::default(),
            policy(RunnerMode::Description, &[]),
        ),
        (
            "labels.drop = [\"ref\"]",
            MetricsSettings::default(),
            policy(RunnerMode::None, &[Droppable::Ref]),
        ),
        (
            "labels.drop = [\"ref\", \"stage\", \"failure_reason\"]",
            MetricsSettings::default(),
            policy(
                RunnerMode::None,
                &[Droppable::Ref, Droppable::Stage, Droppable::FailureReason],
            ),
        ),
        (
            "8 + 6 buckets and labels.drop = [\"ref\"]",
            buckets(8, 6),
            policy(RunnerMode::None, &[Droppable::Ref]),
        ),
    ];
    println!(
        "{n} jobs of distinct (ref, job), 100 per project; bytes per job series (counter + 2 histograms)"
    );
    println!("| lever | job series | page text | gzip (level 1) | heap held | checkpoint JSON |");
    println!("|---|---|---|---|---|---|");
    for (name, settings, labels) in variants {
        let bounds = Bounds {
            duration: settings.duration_buckets.as_slice().to_vec(),
            queued: settings.queued_buckets.as_slice().to_vec(),
        };
        let layout = jobs::Layout::new(&labels);
        let m = Metrics::new(&settings, usize::MAX, &labels).expect("metrics");
        let (series, .., held) = measure(|| job_series_under(n, &bounds, &layout));
        let count = series.values().map(|s| s.total.len()).sum::<usize>();
        let empty = m
            .render_with(m.own_families(), &BTreeMap::new())
            .expect("page");
        let page = m.render_with(m.own_families(), &series).expect("page");
        let at = page
            .find("# HELP gitlab_ci_job_duration_seconds ")
            .expect("split");
        let gz = gzip::Parts::new(&page.as_bytes()[..at], &page.as_bytes()[at..], gzip::LEVEL)
            .expect("gzip")
            .len();
        let json = serde_json::to_vec(&series).expect("json").len();
        let per = |b: usize| b as f64 / count as f64;
        println!(
            "| {name} | {count} | {:.0} B | {:.0} B | {:.0} B | {:.0} B |",
            per(page.len().saturating_sub(empty.len())),
            per(gz),
            per(held),
            per(json)
        );
        assert!(count > 0 && page.len() > empty.len());
    }
}
