//! API requests per poll cycle, against the cost model (`shared/polling-cost-model.md`): an idle
//! project costs one request, a burst of N new jobs ⌈(N+1)/100⌉, deep followed jobs one listing.
//! Run with `--nocapture` to see the figures next to the naive one-hour-window baseline.

mod common;

use std::time::Duration;

use common::{Harness, assert_matches_truth, by_path};
use gitlab_sim::{JobPlan, Ms, ProjectDef, ProjectSpec, World, WorldSpec};

const SEC: Ms = 1000;
const MIN: Ms = 60 * SEC;
const HOUR: Ms = 60 * MIN;
const T0: Ms = 1_790_000_000_000;

fn success(id: u64, project: u64, created: Ms) -> JobPlan {
    JobPlan::new(
        id,
        project,
        id / 10,
        "build",
        "build",
        &[
            (created, "created"),
            (created + SEC, "pending"),
            (created + 5 * SEC, "running"),
            (created + 65 * SEC, "success"),
        ],
    )
}

/// Project 1 idle (300 old jobs), project 2 the same plus a burst of 100 jobs at T0+3h+1m,
/// project 3 idle but with three manual jobs and one stuck pending job deep in its history.
fn world() -> World {
    let projects = vec![
        ProjectDef::new(1, "cost/idle"),
        ProjectDef::new(2, "cost/burst"),
        ProjectDef::new(3, "cost/deep"),
    ];
    let mut jobs = Vec::new();
    let mut id = 1000;
    for i in 0..300 {
        let t = T0 + i * 36 * SEC; // 100 jobs an hour for three hours
        for project in 1..=3 {
            id += 1;
            let mut job = success(id, project, t);
            if project == 3 && i % 50 == 7 && i < 200 {
                job.timeline.truncate(1);
                job.timeline[0].1 = if i == 57 { "pending" } else { "manual" }.into();
            }
            jobs.push(job);
        }
    }
    let burst_at = T0 + 3 * HOUR + MIN;
    for _ in 0..100 {
        id += 1;
        jobs.push(success(id, 2, burst_at));
    }
    World::new(projects, jobs).expect("valid world")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_cycle_follow_the_cost_model() {
    let projects = vec![
        by_path("cost/idle"),
        by_path("cost/burst"),
        by_path("cost/deep"),
    ];
    let mut h = Harness::start(world(), T0 + 3 * HOUR, projects, Duration::from_secs(3600)).await;
    let first = h.poll().await;
    eprintln!(
        "first cycle (lookup + backfill 1h + listing): {:?}",
        first.iter().map(|s| s.requests).collect::<Vec<_>>()
    );
    // Steady state: nothing new.
    h.sim.advance(Duration::from_secs(30));
    let idle = h.poll().await;
    assert_eq!(idle[0].requests, 1, "idle project: one request");
    assert_eq!(idle[1].requests, 1, "idle project: one request");
    assert_eq!(
        idle[2].requests, 2,
        "idle project whose deep non-final jobs are manual ones and one stuck pending job: \
         the pending one is fetched alone"
    );
    // A burst of 100 new jobs (created, then running): the top page is all new, so the page
    // after it is read to find where the new jobs end.
    h.sim.advance(Duration::from_secs(40));
    let burst = h.poll().await;
    assert_eq!(burst[1].requests, 2, "100 new jobs: ⌈101/100⌉ pages");
    assert_eq!(burst[0].requests, 1);
    // They all complete near the top of the list: one page shows them.
    h.sim.advance(Duration::from_secs(90));
    let done = h.poll().await;
    assert_eq!(
        done[1].requests, 1,
        "100 completions near the top: one page"
    );
    assert_eq!(done[1].completed, 100);
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());

    // The naive baseline re-reads the last hour every cycle: 100 jobs/h → 1 page per project,
    // 200 for the burst project's hour → 2 pages; it also never sees deeper non-final jobs.
    eprintln!(
        "idle: {} request(s)/cycle (naive 1h window: 1); deep non-final: {} (naive: 1, blind to them); \
         burst of 100 new: {} (naive: 2); 100 completions: {} (naive: 2)",
        idle[0].requests, idle[2].requests, burst[1].requests, done[1].requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_project_costs_no_more_than_rereading_an_hour() {
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 5,
            path: "busy/monorepo".into(),
            pipelines_per_hour: 60.0,
        }],
        T0,
        T0 + 4 * HOUR,
    );
    let world = World::generate(&spec, 9);
    let created: Vec<Ms> = world.jobs().iter().map(|j| j.created_at_ms).collect();
    let mut h = Harness::start(
        world,
        T0 + HOUR,
        vec![by_path("busy/monorepo")],
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    let (mut ours, mut naive, mut cycles) = (0usize, 0usize, 0usize);
    let (mut pages, mut scoped, mut singles) = (0usize, 0usize, 0usize);
    for _ in 0..(2 * 120) {
        h.sim.advance(Duration::from_secs(30));
        let now = h.sim.now_ms();
        let st = h.poll().await[0].clone();
        ours += st.requests;
        pages += st.pages;
        scoped += st.scoped_pages;
        singles += st.single_fetches;
        let in_window = created
            .iter()
            .filter(|c| **c > now - HOUR && **c <= now)
            .count();
        naive += in_window.div_ceil(100).max(1);
        cycles += 1;
    }
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    let (ours_avg, naive_avg) = (ours as f64 / cycles as f64, naive as f64 / cycles as f64);
    eprintln!(
        "busy project ({} jobs/h): {ours_avg:.2} requests/cycle vs naive 1h window {naive_avg:.2}",
        created.len() / 4
    );
    eprintln!(
        "per cycle: {:.2} top pages, {:.2} listing pages, {:.2} single fetches",
        pages as f64 / cycles as f64,
        scoped as f64 / cycles as f64,
        singles as f64 / cycles as f64
    );
    // A busy project pays for the completions of jobs deeper than the top page (one fetch
    // each); the naive re-read pays for the whole hour and still misses older jobs. Guard
    // against regressions: one top page per cycle, and no more than the naive cost overall.
    assert_eq!(
        pages, cycles,
        "fewer than 100 new jobs per cycle fit on one page"
    );
    assert!(ours_avg <= naive_avg * 1.1, "{ours_avg} vs {naive_avg}");
}

/// Project 4 at T0+16m: `waves` pipelines (50, 51, …) of three long jobs each, started at T0 and
/// deep under 150 newer jobs by then. Wave `w` ends around T0+20m+w min: its third job fails at
/// :40 and is retried at :45 (the retry lands on the top page), the other two end at :50, so
/// all three leave the busy listing in the same 30 s cycle, and the failed one is a retried job.
fn deep_waves_world(waves: u64) -> World {
    let mut jobs = Vec::new();
    let mut retries = Vec::new();
    for w in 0..waves {
        let base = 1001 + w * 3;
        let created = T0 + w as Ms * 10 * SEC;
        let end = T0 + 20 * MIN + w as Ms * MIN;
        for (k, name) in ["compile", "e2e", "flaky"].into_iter().enumerate() {
            let (at, status) = match k {
                0 => (end - 10 * SEC, "success"),
                1 => (end - 10 * SEC, "canceled"),
                _ => (end - 20 * SEC, "failed"),
            };
            let timeline = [
                (created, "created"),
                (created + SEC, "pending"),
                (created + 5 * SEC, "running"),
                (at, status),
            ];
            jobs.push(JobPlan::new(
                base + k as u64,
                4,
                50 + w,
                name,
                "test",
                &timeline,
            ));
        }
        let retry_at = end - 15 * SEC;
        retries.push(JobPlan::new(
            1300 + w,
            4,
            50 + w,
            "flaky",
            "test",
            &[
                (retry_at, "created"),
                (retry_at + SEC, "pending"),
                (retry_at + 2 * SEC, "running"),
                (retry_at + 3 * SEC, "success"),
            ],
        ));
    }
    for i in 0..150 {
        jobs.push(success(1100 + i, 4, T0 + MIN + i as Ms * 5 * SEC));
    }
    jobs.extend(retries);
    World::new(vec![ProjectDef::new(4, "cost/deep-pipelines")], jobs).expect("valid world")
}

/// Polls every 30 s from T0+16m to T0+26m; returns the stats of the cycle at T0+20m.
async fn run_deep_waves(h: &mut Harness) -> gitlab_jobs_exporter::project::cycle::CycleStats {
    h.poll().await;
    let mut at_20 = None;
    while h.sim.now_ms() < T0 + 26 * MIN {
        h.sim.advance(Duration::from_secs(30));
        let st = h.poll().await.remove(0);
        if h.sim.now_ms() == T0 + 20 * MIN {
            at_20 = Some(st);
        }
    }
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    at_20.expect("a cycle at T0+20m")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_jobs_of_one_pipeline_are_read_with_one_request() {
    let mut h = Harness::start(
        deep_waves_world(1),
        T0 + 16 * MIN,
        vec![by_path("cost/deep-pipelines")],
        Duration::from_secs(3600),
    )
    .await;
    let st = run_deep_waves(&mut h).await;
    // Top page, busy listing (the three jobs left it), then pipeline 50's job list: 3 requests
    // where single fetches cost 2 + 3. The failed job is retried by then: only
    // `include_retried=true` shows it, so nothing is left for a single fetch.
    assert_eq!(
        (
            st.requests,
            st.pages,
            st.scoped_pages,
            st.pipeline_pages,
            st.single_fetches
        ),
        (3, 1, 1, 1, 0),
        "{st:?}"
    );
    assert_eq!(st.completed, 4, "the three deep jobs and the retry: {st:?}");
    eprintln!(
        "three deep jobs of one pipeline completing in one cycle: {} requests (single fetches: 5)",
        st.requests
    );
    let log = h.sim.request_log();
    let pipeline: Vec<_> = log
        .iter()
        .filter(|r| r.path_and_query.contains("/pipelines/"))
        .map(|r| (r.path_and_query.as_str(), r.status))
        .collect();
    assert!(
        pipeline.contains(&(
            "/api/v4/projects/4/pipelines/50/jobs?include_retried=true&per_page=100",
            200
        )),
        "{pipeline:?}"
    );
    h.stop().await;
}

/// The pipeline jobs endpoint answering 404 (a GitLab look-alike without it) or 500 (after
/// retries): the jobs are fetched singly in the same cycle, counts stay exact, and after three
/// failures in a row the project stops asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_jobs_failing_falls_back_to_single_fetches() {
    for (status, attempts) in [
        (404u16, 1u64),
        (500, 1 + common::fast_retry().retries as u64),
    ] {
        let mut h = Harness::start(
            deep_waves_world(5),
            T0 + 16 * MIN,
            vec![by_path("cost/deep-pipelines")],
            Duration::from_secs(3600),
        )
        .await;
        h.sim.set_pipeline_jobs_answer(Some(status));
        let st = run_deep_waves(&mut h).await;
        assert_eq!(
            (st.pipeline_pages, st.single_fetches, st.completed),
            (0, 3, 4),
            "{status}: {st:?}"
        );
        let req = h.sim.requests();
        assert_eq!(
            req.pipeline_jobs,
            3 * attempts,
            "{status}: three failing waves, then no more asking: {req:?}"
        );
        assert_eq!(req.by_status.get(&status), Some(&(3 * attempts)), "{req:?}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_more_than_a_hundred_jobs_is_read_page_by_page() {
    // Pipeline 70: its two oldest jobs run until T0+20m; 118 more ended at T0+2m.
    let mut jobs = Vec::new();
    for id in 1001..=1120u64 {
        let end = if id <= 1002 { 20 * MIN } else { 2 * MIN };
        let timeline = [
            (T0, "created"),
            (T0 + SEC, "pending"),
            (T0 + 5 * SEC, "running"),
            (T0 + end, "success"),
        ];
        jobs.push(JobPlan::new(
            id,
            6,
            70,
            &format!("job-{id}"),
            "test",
            &timeline,
        ));
    }
    let world = World::new(vec![ProjectDef::new(6, "cost/big-pipeline")], jobs).expect("world");
    let mut h = Harness::start(
        world,
        T0 + 16 * MIN,
        vec![by_path("cost/big-pipeline")],
        Duration::from_secs(3600),
    )
    .await;
    let st = run_deep_waves(&mut h).await;
    // Page 1 of the pipeline's list holds its 100 newest jobs; the two wanted are on page 2.
    assert_eq!(
        (
            st.requests,
            st.pipeline_pages,
            st.single_fetches,
            st.completed
        ),
        (4, 2, 0, 2),
        "{st:?}"
    );
    let pages: Vec<String> = (h.sim.request_log().into_iter())
        .filter(|r| r.path_and_query.contains("/pipelines/"))
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages[1].contains("page=2"), "{pages:?}");
    h.stop().await;
}

/// Issue 9, item 2: projects 1–3 each run 140 jobs (14 pipelines of 10) from T0, buried under
/// 110 newer short jobs from T0+10s; all 140 end at T0+5m, within 30 ms across projects.
fn deep_burst_world() -> World {
    let mut jobs: Vec<(Ms, u64, JobPlan)> = Vec::new();
    for project in 1..=3u64 {
        let t = T0 + project as Ms * 10;
        for i in 0..140u64 {
            let mut j = JobPlan::new(
                0,
                project,
                project * 100 + i / 10,
                &format!("rspec {}/10", i % 10 + 1),
                "test",
                &[
                    (t, "created"),
                    (t + SEC, "pending"),
                    (t + 2 * SEC, "running"),
                    (t + 5 * MIN, if i % 7 == 0 { "failed" } else { "success" }),
                ],
            );
            if i % 7 == 0 {
                j.failure_reason = Some("script_failure".into());
            }
            jobs.push((t, i, j));
        }
        for i in 0..110u64 {
            let c = t + 10 * SEC + i as Ms * 100;
            let mut j = success(0, project, c);
            j.pipeline_id = project * 100 + 50;
            j.timeline = vec![
                (c, "created".into()),
                (c + 100, "pending".into()),
                (c + 500, "running".into()),
                (c + 5 * SEC, "success".into()),
            ];
            jobs.push((c, 1000 + i, j));
        }
    }
    jobs.sort_by_key(|(c, order, j)| (*c, j.project_id, *order));
    let jobs = (jobs.into_iter().enumerate())
        .map(|(i, (_, _, mut j))| {
            j.id = 10_001 + i as u64;
            j
        })
        .collect();
    let projects = (1..=3)
        .map(|p| ProjectDef::new(p, &format!("burst/project-{p}")))
        .collect();
    World::new(projects, jobs).expect("valid world")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_deep_completions_is_read_with_a_few_pages() {
    use std::collections::BTreeMap;
    let start = T0 - 30 * SEC;
    let projects = (1..=3)
        .map(|p| by_path(&format!("burst/project-{p}")))
        .collect();
    let mut h = Harness::start_with(
        deep_burst_world(),
        start,
        projects,
        Duration::from_secs(3600),
        |cfg| cfg.poll.interval = Duration::from_secs(1),
    )
    .await;
    // No pipeline job lists (a look-alike), and the default budget planned on the sim clock.
    h.sim.set_pipeline_jobs_answer(Some(404));
    h.scheduler.set_pacing_budget(300.0);
    h.cutoff_ms = Some(start - HOUR);
    h.first_poll_ms = Some(start);
    let (mut due, mut elapsed) = (BTreeMap::new(), Duration::ZERO);
    h.scheduler.poll_due(elapsed, &mut due).await;
    let end = T0 + 5 * MIN + 30;
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut converged = None;
    while h.sim.now_ms() < end + 2 * MIN {
        h.sim.advance(Duration::from_secs(1));
        elapsed += Duration::from_secs(1);
        let stats = h.scheduler.poll_due(elapsed, &mut due).await;
        let now = h.sim.now_ms();
        let requests: Vec<usize> = stats.iter().map(|s| s.requests).collect();
        if now > end - 10 * SEC && now <= end {
            before.extend(requests);
        } else if now > end && converged.is_none() {
            after.extend(stats.iter().map(|s| (s.requests, s.reread_pages)));
            if common::matches_truth(&h.scrape().await, &h.truth()) {
                converged = Some(now - end);
            }
        }
    }
    eprintln!(
        "3 projects, 140 deep jobs each ending at once, no pipeline job lists: \
         requests per project cycle before the end {before:?}, after (requests, re-read pages) \
         {after:?}; counts exact {} s after the last job ended",
        converged.map_or(-1.0, |ms| ms as f64 / 1000.0)
    );
    let converged = converged.expect("counts and gauges converge");
    assert!(
        converged <= 5 * SEC,
        "exact {} s after the burst",
        converged / 1000
    );
    assert!(
        after.iter().all(|(r, _)| *r <= 5),
        "no cycle pays per job: {after:?}"
    );
    assert_eq!(h.sim.requests().job, 0, "no single fetches");
    assert_matches_truth(&h.scrape().await, &h.truth());
    h.stop().await;
}

/// A pipeline held by a blocking manual job keeps a `created` job forever: it is re-checked
/// ever less often while the pipeline is young, then only by the sweep, never every cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_held_by_a_manual_job_costs_a_few_rechecks() {
    use std::collections::BTreeMap;
    let t = T0;
    let mut jobs = vec![
        JobPlan::new(
            1001,
            8,
            80,
            "build",
            "build",
            &[
                (t, "created"),
                (t + SEC, "pending"),
                (t + 2 * SEC, "running"),
                (t + 5 * SEC, "success"),
            ],
        ),
        JobPlan::new(
            1002,
            8,
            80,
            "approve",
            "gate",
            &[(t, "created"), (t + 6 * SEC, "manual")],
        ),
        JobPlan::new(1003, 8, 80, "deploy", "deploy", &[(t, "created")]),
    ];
    for i in 0..120 {
        let mut j = success(1004 + i, 8, t + SEC + i as Ms * 10);
        j.pipeline_id = 81;
        jobs.push(j);
    }
    let world = World::new(vec![ProjectDef::new(8, "cost/held")], jobs).expect("world");
    let start = T0 - 30 * SEC;
    let mut h = Harness::start_with(
        world,
        start,
        vec![by_path("cost/held")],
        Duration::from_secs(3600),
        |cfg| cfg.poll.interval = Duration::from_secs(1),
    )
    .await;
    h.scheduler.set_pacing_budget(300.0);
    h.cutoff_ms = Some(start - HOUR);
    h.first_poll_ms = Some(start);
    let (mut due, mut elapsed) = (BTreeMap::new(), Duration::ZERO);
    h.scheduler.poll_due(elapsed, &mut due).await;
    let mut cycles = 0;
    while h.sim.now_ms() < T0 + 40 * MIN {
        h.sim.advance(Duration::from_secs(1));
        elapsed += Duration::from_secs(1);
        cycles += h.scheduler.poll_due(elapsed, &mut due).await.len();
    }
    let rechecks = (h.sim.request_log().iter())
        .filter(|r| r.path_and_query.contains("/jobs/1003") || r.path_and_query.contains("created"))
        .count();
    eprintln!(
        "a pipeline held by a manual job for 40 min: {rechecks} re-checks of its created job in {cycles} cycles"
    );
    assert!(
        (3..=25).contains(&rechecks),
        "{rechecks} re-checks in {cycles} cycles"
    );
    assert_matches_truth(&h.scrape().await, &h.truth());
    h.stop().await;
}
