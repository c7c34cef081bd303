//! The exporter against the simulator over real loopback HTTP: after scripted histories with
//! hundreds of jobs per project, every counter and histogram equals the ground truth exactly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, assert_matches_truth, by_id, by_path};
use gitlab_sim::{Fault, Ms, ProjectSpec, World, WorldSpec};

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const S: Ms = 1000;
/// A whole second, so GitLab's `Date` header and the manual clock agree.
const T0: Ms = 1_790_000_000_000;

fn world(seed: u64) -> World {
    let projects = vec![
        ProjectSpec {
            id: 11,
            path: "acme/platform/api".into(),
            pipelines_per_hour: 14.0,
        },
        ProjectSpec {
            id: 12,
            path: "acme/web/frontend".into(),
            pipelines_per_hour: 9.0,
        },
        ProjectSpec {
            id: 13,
            path: "tools/cli".into(),
            pipelines_per_hour: 4.0,
        },
    ];
    World::generate(&WorldSpec::new(projects, T0, T0 + 4 * HOUR), seed)
}

fn projects() -> Vec<gitlab_jobs_exporter::config::ProjectRef> {
    // One by path with subgroups, one by id (shown by its path), one plain path.
    vec![
        by_path("acme/platform/api"),
        by_id(12),
        by_path("tools/cli"),
    ]
}

/// Advances the clock in the given steps, polling after each, and checks the truth every
/// `check_every` cycles (a multiple of the manual-job sweep period, so deep manual jobs were just
/// swept) and at the end, once the exporter has settled.
async fn run_history(h: &mut Harness, steps: &[(Ms, usize)], check_every: usize) {
    let mut cycles = 0;
    for &(step, count) in steps {
        for _ in 0..count {
            h.sim.advance(Duration::from_millis(step as u64));
            h.poll().await;
            cycles += 1;
            if cycles % check_every == 0 {
                assert_matches_truth(&h.scrape().await, &h.truth());
            }
        }
    }
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_mid_history_counts_every_job_once() {
    started_mid_history(1).await;
}

/// Seed 7 has skipped jobs created before the backfill cutoff and skipped after the first poll:
/// seen waiting, then skipped, so counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_skipped_after_the_first_poll_count_even_if_created_before_the_window() {
    started_mid_history(7).await;
}

async fn started_mid_history(seed: u64) {
    let world = world(seed);
    let jobs = world.jobs().len();
    assert!(jobs > 600, "a few hundred jobs per project: {jobs}");
    let mut h = Harness::start(world, T0 + 90 * MIN, projects(), Duration::from_secs(3600)).await;
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    h.poll().await;
    let (status, _, _) = h.get("/readyz").await;
    assert_eq!(status, 200);
    assert_matches_truth(&h.scrape().await, &h.truth());
    // Skipped jobs have no finished_at in GitLab, so no freshness either.
    let with_finish = |t: &gitlab_sim::GroundTruth| t.total_jobs() - t.jobs_with_status("skipped");
    let backfilled = with_finish(&h.truth());
    // 30 s cycles through the history, a 50-minute gap (a multi-page burst), then past the end
    // until everything that can finish has finished.
    run_history(
        &mut h,
        &[(30_000, 120), (50 * MIN, 1), (30_000, 199), (5 * MIN, 40)],
        20,
    )
    .await;
    let truth = h.truth();
    assert!(truth.total_jobs() > 400, "{}", truth.total_jobs());
    for status in ["success", "failed", "canceled", "skipped"] {
        assert!(truth.jobs_with_status(status) > 0, "history has {status}");
    }
    assert!(truth.total_active() > 0, "stuck and manual jobs remain");
    // Freshness is observed once for every job counted after the backfill.
    let lag = h
        .scrape()
        .await
        .histograms("gitlab_jobs_exporter_poll_lag_seconds");
    let lag_count: f64 = lag.values().map(|h| h.count).sum();
    assert_eq!(lag_count, (with_finish(&truth) - backfilled) as f64);
    // The history exercised every request kind of the polling plan.
    let req = h.sim.requests();
    assert!(
        req.jobs_scoped > 0 && req.job > 0 && req.project == 3,
        "{req:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_start_with_long_backfill_reads_many_pages() {
    let mut h = Harness::start(
        world(2),
        T0 + 5 * HOUR,
        projects(),
        Duration::from_secs(24 * 3600),
    )
    .await;
    let stats = h.poll().await;
    assert!(
        stats.iter().any(|s| s.pages >= 3),
        "several pages per project: {stats:?}"
    );
    assert_matches_truth(&h.scrape().await, &h.truth());
    run_history(&mut h, &[(MIN, 30), (10 * MIN, 12)], 10).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_without_losing_or_double_counting() {
    let mut h = Harness::start(
        world(3),
        T0 + 2 * HOUR,
        projects(),
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    let faults = [
        Fault::ServerError(502),
        Fault::ServerError(503),
        Fault::RateLimitedJson,
        Fault::RateLimitedText {
            retry_after_secs: 1,
        },
        Fault::MalformedJson,
        Fault::HtmlOk,
        Fault::ServerError(504),
    ];
    for (i, f) in faults.iter().cycle().take(60).enumerate() {
        h.sim.advance(Duration::from_secs(45));
        if i % 3 == 0 {
            h.sim.push_fault(f.clone());
        }
        h.poll().await;
    }
    assert_eq!(h.sim.pending_faults(), 0);
    h.settle().await;
    let scrape = h.scrape().await;
    assert_matches_truth(&scrape, &h.truth());
    let errors = scrape.values("gitlab_jobs_exporter_api_errors_total");
    let total_errors: f64 = errors.values().sum();
    assert_eq!(total_errors, 20.0, "every fault counted once: {errors:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cycle_is_redone_without_double_counting() {
    // One project at a time, so the faults below all hit the first project polled.
    let mut h = Harness::start_with(
        world(4),
        T0 + 2 * HOUR,
        projects(),
        Duration::from_secs(3600),
        |cfg| cfg.poll.concurrency = 1,
    )
    .await;
    h.poll().await;
    // More consecutive 5xx than the retry budget (4 retries): one project's cycle fails.
    h.sim.advance(Duration::from_secs(40 * 60));
    for _ in 0..6 {
        h.sim.push_fault(Fault::ServerError(500));
    }
    let results = h.scheduler.poll_all_once().await;
    assert!(results.iter().any(|r| r.is_err()), "one cycle failed");
    h.sim.clear_faults();
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    let scrape = h.scrape().await;
    let poll_errors: f64 = scrape
        .values("gitlab_jobs_exporter_poll_errors_total")
        .values()
        .sum();
    assert_eq!(poll_errors, 1.0);
    h.stop().await;
}

/// Starts 90 minutes into the history (1-hour backfill), polls every minute for two hours,
/// then settles.
async fn two_settled_hours(
    world: World,
    tweak: impl FnOnce(&mut gitlab_jobs_exporter::config::Config),
) -> Harness {
    let mut h = Harness::start_with(
        world,
        T0 + 90 * MIN,
        projects(),
        Duration::from_secs(3600),
        tweak,
    )
    .await;
    h.poll().await;
    for _ in 0..120 {
        h.sim.advance(Duration::from_secs(60));
        h.poll().await;
    }
    h.settle().await;
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folded_labels_keep_every_count() {
    use gitlab_jobs_exporter::labels::{JobMode, RefMode};
    let h = two_settled_hours(world(5), |cfg| {
        cfg.labels.ref_ = RefMode::Kind;
        cfg.labels.job = JobMode::Normalized;
    })
    .await;
    let scrape = h.scrape().await;
    let truth = h.truth();
    let totals = scrape.values("gitlab_ci_jobs_total");
    assert_eq!(totals.values().sum::<f64>(), truth.total_jobs() as f64);
    let kinds = ["default_branch", "branch", "tag", "merge_request"];
    for labels in totals.keys() {
        assert!(kinds.contains(&labels["ref"].as_str()), "{labels:?}");
        assert!(!labels["job"].contains('/'), "{labels:?}");
    }
    for kind in kinds {
        assert!(totals.keys().any(|l| l["ref"] == kind), "some {kind} jobs");
    }
    let raw_series = truth.jobs_total.len();
    assert!(
        totals.len() < raw_series,
        "fewer series: {} vs {raw_series}",
        totals.len()
    );
    let durations = scrape.histograms("gitlab_ci_job_duration_seconds");
    assert_eq!(
        durations.values().map(|h| h.count).sum::<f64>(),
        truth.duration_count() as f64
    );
    h.stop().await;
}

/// `labels.runner = "type"`, job rewrites and `labels.drop = ["ref"]`: the ref label is gone,
/// every runner value is the one GitLab shows, and every folded sum equals the ground truth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_rewrites_and_dropped_ref_keep_every_count() {
    use gitlab_jobs_exporter::labels::{Droppable, JobRewrite, LabelsConfig, RunnerMode};
    let policy = LabelsConfig {
        runner: RunnerMode::Type,
        job_rewrites: vec![
            JobRewrite::new(r"rspec \d+/\d+", "rspec").expect("valid"),
            // The first matching rule wins: production keeps a name of its own.
            JobRewrite::new("deploy-production", "deploy-prod").expect("valid"),
            JobRewrite::new(r"deploy-(\w+)", "deploy").expect("valid"),
        ],
        drop: vec![Droppable::Ref],
        ..Default::default()
    };
    let p = policy.clone();
    let h = two_settled_hours(world(6), |cfg| cfg.labels = p).await;
    let scrape = h.scrape().await;
    let truth = h.truth();
    type Key = Vec<String>;
    fn fold<K>(
        m: impl IntoIterator<Item = (K, f64)>,
        key: impl Fn(&K) -> Key,
    ) -> BTreeMap<Key, f64> {
        let mut out = BTreeMap::new();
        for (k, v) in m {
            *out.entry(key(&k)).or_default() += v;
        }
        out.retain(|_, v| *v != 0.0);
        out
    }
    let job = |name: &str| policy.rewrite_job(name).unwrap_or_else(|| name.to_string());
    let get = |l: &common::Labels, n: &str| {
        l.get(n)
            .cloned()
            .unwrap_or_else(|| panic!("no {n} in {l:?}"))
    };

    // The counter: no ref label, a runner label on every series.
    let totals = scrape.values("gitlab_ci_jobs_total");
    assert!(!totals.is_empty());
    for l in totals.keys() {
        assert!(!l.contains_key("ref"), "{l:?}");
        assert!(
            ["", "instance_type", "group_type", "project_type"]
                .contains(&get(l, "runner").as_str()),
            "{l:?}"
        );
        assert!(
            !get(l, "job").starts_with("rspec ") && get(l, "job") != "deploy-staging",
            "{l:?}"
        );
    }
    assert_eq!(totals.values().sum::<f64>(), truth.total_jobs() as f64);
    // Per (project, stage, rewritten job, status, failure_reason): summed over refs and runners.
    let got = fold(totals.clone(), |l| {
        ["project", "stage", "job", "status", "failure_reason"]
            .map(|n| get(l, n))
            .to_vec()
    });
    let want = fold(truth.jobs_total.iter().map(|(k, n)| (k, *n as f64)), |k| {
        vec![
            k.project.clone(),
            k.stage.clone(),
            job(&k.job),
            k.status.clone(),
            k.failure_reason.clone(),
        ]
    });
    assert_eq!(got, want);
    // Per (project, runner type, status): the runner GitLab shows for each job.
    let got = fold(totals.clone(), |l| {
        ["project", "runner", "status"].map(|n| get(l, n)).to_vec()
    });
    let want = fold(
        truth.jobs_by_runner.iter().map(|(k, n)| (k, *n as f64)),
        |k| vec![k.project.clone(), k.runner_type.clone(), k.status.clone()],
    );
    assert_eq!(got, want);
    for kind in ["", "instance_type", "group_type", "project_type"] {
        assert!(
            totals.keys().any(|l| l["runner"] == kind),
            "some jobs with runner={kind:?}"
        );
    }
    for status in ["success", "failed"] {
        assert!(
            totals
                .keys()
                .any(|l| l["status"] == status && !l["runner"].is_empty()),
            "{status} jobs ran somewhere"
        );
    }
    assert!(
        totals
            .iter()
            .filter(|(l, _)| l["status"] == "skipped")
            .all(|(l, _)| l["runner"].is_empty()),
        "skipped jobs never had a runner"
    );
    assert!(
        totals.keys().any(|l| l["job"] == "deploy-prod")
            && totals.keys().any(|l| l["job"] == "deploy")
    );

    // The histograms: same labels, every observation kept.
    let durations = scrape.histograms("gitlab_ci_job_duration_seconds");
    let got = fold(durations.iter().map(|(l, h)| (l, h.count)), |l| {
        assert!(!l.contains_key("ref") && l.contains_key("runner"), "{l:?}");
        ["project", "stage", "job", "status"]
            .map(|n| get(l, n))
            .to_vec()
    });
    let want = fold(
        truth.duration.iter().map(|(k, v)| (k, v.len() as f64)),
        |k| {
            vec![
                k.project.clone(),
                k.stage.clone(),
                job(&k.job),
                k.status.clone(),
            ]
        },
    );
    assert_eq!(got, want);
    assert!(
        durations.keys().all(|l| !l["runner"].is_empty()),
        "a job that ran had a runner"
    );
    let queued = scrape.histograms("gitlab_ci_job_queued_duration_seconds");
    let got = fold(queued.iter().map(|(l, h)| (l, h.count)), |l| {
        assert!(!l.contains_key("ref") && l.contains_key("runner"), "{l:?}");
        ["project", "stage", "job"].map(|n| get(l, n)).to_vec()
    });
    let want = fold(truth.queued.iter().map(|(k, v)| (k, v.len() as f64)), |k| {
        vec![k.project.clone(), k.stage.clone(), job(&k.job)]
    });
    assert_eq!(got, want);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_the_projects_without_overlap() {
    let specs: Vec<ProjectSpec> = (61..=68)
        .map(|id| ProjectSpec {
            id,
            path: format!("fleet/project-{id}"),
            pipelines_per_hour: 3.0,
        })
        .collect();
    let world = || World::generate(&WorldSpec::new(specs.clone(), T0, T0 + 2 * HOUR), 8);
    let refs: Vec<_> = (61..=68).map(by_id).collect();
    let mut seen = std::collections::BTreeMap::new();
    let mut total = 0.0;
    let mut truth_total = 0;
    for index in 0..2 {
        let mut h = Harness::start_with(
            world(),
            T0 + 3 * HOUR,
            refs.clone(),
            Duration::from_secs(6 * 3600),
            |cfg| {
                cfg.shard.index = Some(index);
                cfg.shard.count = 2;
            },
        )
        .await;
        h.poll().await;
        let (status, _, _) = h.get("/readyz").await;
        assert_eq!(
            status, 200,
            "projects of the other shard do not hold readiness"
        );
        let totals = h.scrape().await.values("gitlab_ci_jobs_total");
        for labels in totals.keys() {
            let owner = seen.entry(labels["project"].clone()).or_insert(index);
            assert_eq!(*owner, index, "{} polled by both shards", labels["project"]);
        }
        total += totals.values().sum::<f64>();
        truth_total = h.truth().total_jobs();
        h.stop().await;
    }
    assert!(seen.values().any(|i| *i == 0) && seen.values().any(|i| *i == 1));
    assert_eq!(
        total, truth_total as f64,
        "together the shards count every job once"
    );
}

fn discovery_world() -> World {
    let specs = [
        (21, "acme/platform/api", 10.0),
        (22, "acme/web/frontend", 6.0),
        (23, "acme/web/legacy-site", 3.0),
        (24, "acme/archive/old", 2.0),
        (25, "tools/cli", 4.0),
        (26, "elsewhere/not-mine", 4.0),
    ];
    let projects = specs
        .iter()
        .map(|(id, path, rate)| ProjectSpec {
            id: *id,
            path: (*path).into(),
            pipelines_per_hour: *rate,
        })
        .collect();
    World::generate(&WorldSpec::new(projects, T0, T0 + 3 * HOUR), 5)
}

fn discover_acme_and_membership(cfg: &mut gitlab_jobs_exporter::config::Config) {
    cfg.groups.push(gitlab_jobs_exporter::config::GroupRef {
        path: Some("acme".into()),
        id: None,
        include_subgroups: true,
    });
    cfg.discovery.membership = true;
    cfg.discovery.exclude = vec!["legacy".into()];
}

/// A harness discovering the `acme` group and the memberships, with project 24 archived and
/// the user no member of 26: 21, 22 and 25 are to be watched (23 is excluded by name).
async fn start_discovering(
    tweak: impl FnOnce(&mut gitlab_jobs_exporter::config::Config),
) -> Harness {
    start_discovering_with(tweak, |_| {}).await
}

/// [`start_discovering`], with the validated settings adjusted too.
async fn start_discovering_with(
    tweak: impl FnOnce(&mut gitlab_jobs_exporter::config::Config),
    adjust: impl FnOnce(&mut gitlab_jobs_exporter::config::Settings),
) -> Harness {
    let h = Harness::start_with_settings(
        discovery_world(),
        T0 + HOUR,
        Vec::new(),
        Duration::from_secs(3600),
        |cfg| {
            discover_acme_and_membership(cfg);
            tweak(cfg);
        },
        adjust,
    )
    .await;
    h.sim.set_archived(24, true).expect("project 24");
    h.sim.set_member(26, false).expect("project 26");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_projects_are_counted_exactly_through_leaving_and_returning() {
    let mut h = start_discovering(|_| {}).await;
    let watched = ["acme/platform/api", "acme/web/frontend", "tools/cli"];

    let stats = h.scheduler.discover().await;
    assert!(stats.complete, "{stats:?}");
    assert_eq!(
        (stats.found, stats.added),
        (3, 3),
        "archived, excluded and non-member projects are left out: {stats:?}"
    );
    assert_eq!(h.scheduler.watched(), 3);
    // Known from the lists: no per-project lookup is needed.
    h.sim.reset_requests();
    h.poll().await;
    assert_eq!(h.sim.requests().project, 0, "no GET /projects/:id");
    for _ in 0..5 {
        h.sim.advance(Duration::from_secs(60));
        h.poll().await;
    }
    assert_matches_truth(&h.scrape().await, &h.truth_for(&watched));

    // tools/cli leaves (membership revoked): no longer polled, series kept for the grace period.
    h.sim.set_member(25, false).expect("project 25");
    let stats = h.scheduler.discover().await;
    assert_eq!((stats.retired, stats.removed), (1, 0), "{stats:?}");
    assert_eq!(h.scheduler.watched(), 2);
    let scrape = h.scrape().await;
    let before = scrape.values("gitlab_ci_jobs_total");
    assert!(before.keys().any(|l| l["project"] == "tools/cli"));
    // Its gauges are cleared: nobody polls it, a pending job would otherwise look stuck.
    assert!(
        scrape
            .values("gitlab_ci_jobs_active")
            .iter()
            .all(|(l, v)| l["project"] != "tools/cli" || *v == 0.0)
    );
    assert!(
        !scrape
            .values("gitlab_ci_jobs_oldest_pending_timestamp_seconds")
            .keys()
            .any(|l| l["project"] == "tools/cli")
    );
    let logged = h.sim.request_log().len();
    for _ in 0..10 {
        h.sim.advance(Duration::from_secs(60));
        h.poll().await;
    }
    let log = h.sim.request_log();
    assert!(
        !log[logged..]
            .iter()
            .any(|r| r.path_and_query.contains("/projects/25/")),
        "a retired project is not polled"
    );

    // It comes back within the grace period: polling resumes where it stopped, so the jobs
    // that completed meanwhile are counted once, and nothing is counted twice.
    h.sim.set_member(25, true).expect("project 25");
    let stats = h.scheduler.discover().await;
    assert_eq!((stats.revived, stats.added), (1, 0), "{stats:?}");
    h.sim.advance(Duration::from_secs(60));
    h.poll().await;
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth_for(&watched));

    // A new project in the group shows up on the next pass.
    h.sim
        .add_project(gitlab_sim::ProjectDef::new(27, "acme/new-service"))
        .expect("new project");
    let stats = h.scheduler.discover().await;
    assert_eq!(stats.added, 1, "{stats:?}");
    h.poll().await;
    let state = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_project_state");
    assert!(
        state
            .iter()
            .any(|(l, v)| l["project"] == "acme/new-service" && l["state"] == "ok" && *v == 1.0),
        "{state:?}"
    );

    // A project renamed in GitLab: its series follow it, counts unchanged, none left behind.
    let polls_of = |s: &common::Scrape, project: &str| {
        s.values("gitlab_jobs_exporter_polls_total")
            .into_iter()
            .find(|(l, _)| l["project"] == project)
            .map_or(0.0, |(_, v)| v)
    };
    let polls_before = polls_of(&h.scrape().await, "acme/web/frontend");
    h.sim
        .rename_project(22, "acme/apps/frontend")
        .expect("rename");
    let stats = h.scheduler.discover().await;
    assert_eq!(stats.renamed, 1, "{stats:?}");
    h.sim.advance(Duration::from_secs(60));
    h.settle().await;
    let scrape = h.scrape().await;
    for family in [
        "gitlab_ci_jobs_total",
        "gitlab_jobs_exporter_project_state",
        "gitlab_jobs_exporter_polls_total",
    ] {
        assert!(
            !scrape
                .values(family)
                .keys()
                .any(|l| l["project"] == "acme/web/frontend"),
            "{family} left under the old path"
        );
    }
    let polls_after = polls_of(&scrape, "acme/apps/frontend");
    assert!(polls_after > polls_before, "{polls_before} → {polls_after}");
    assert_matches_truth(
        &scrape,
        &h.truth_for(&["acme/platform/api", "acme/apps/frontend", "tools/cli"]),
    );
    h.stop().await;
}

/// The `gitlab_ci_jobs_total` series of `project` on a scrape.
fn job_series(s: &common::Scrape, project: &str) -> usize {
    s.values("gitlab_ci_jobs_total")
        .keys()
        .filter(|l| l["project"] == project)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_removes_series_after_the_grace_period_and_never_after_a_failed_pass() {
    // Below poll.backfill, which validation refuses: here the series are to go at once.
    let mut h =
        start_discovering_with(|_| {}, |cfg| cfg.discovery.grace_period = Duration::ZERO).await;
    assert_eq!(h.scheduler.discover().await.added, 3);
    h.poll().await;
    assert!(job_series(&h.scrape().await, "acme/web/frontend") > 0);

    // A pass that fails part-way (the group listing answers 500 every time) removes nothing,
    // even though the project is gone from the lists.
    h.sim.set_archived(22, true).expect("project 22");
    for _ in 0..8 {
        h.sim.push_fault(gitlab_sim::Fault::ServerError(500));
    }
    let stats = h.scheduler.discover().await;
    assert!(!stats.complete, "{stats:?}");
    assert_eq!(stats.retired, 0, "{stats:?}");
    assert_eq!(h.scheduler.watched(), 3);
    h.sim.clear_faults();

    // A complete pass retires it; with no grace period its series go at once.
    let stats = h.scheduler.discover().await;
    assert_eq!((stats.retired, stats.removed), (1, 1), "{stats:?}");
    let scrape = h.scrape().await;
    assert_eq!(job_series(&scrape, "acme/web/frontend"), 0);
    assert!(
        !scrape
            .values("gitlab_jobs_exporter_project_state")
            .keys()
            .any(|l| l["project"] == "acme/web/frontend"),
        "its own series are removed too"
    );
    assert!(
        job_series(&scrape, "acme/platform/api") > 0,
        "the others stay"
    );

    // One failing source holds back only the projects it listed: tools/cli, listed by the
    // membership alone, is retired while the group listing fails.
    h.sim.set_member(25, false).expect("project 25");
    for _ in 0..5 {
        h.sim.push_fault(gitlab_sim::Fault::ServerError(500));
    }
    let stats = h.scheduler.discover().await;
    assert!(!stats.complete, "{stats:?}");
    assert_eq!(stats.retired, 1, "{stats:?}");
    h.sim.clear_faults();

    // A path taken over by another project (deleted, another created under its name): the
    // old one's series are not removed from under the new one.
    h.sim.remove_project(21).expect("project 21");
    h.sim
        .add_project(gitlab_sim::ProjectDef::new(28, "acme/platform/api"))
        .expect("new project");
    let stats = h.scheduler.discover().await;
    assert_eq!(
        (stats.added, stats.retired, stats.removed),
        (1, 1, 1),
        "{stats:?}"
    );
    assert!(
        job_series(&h.scrape().await, "acme/platform/api") > 0,
        "the counters under the path stay"
    );
    h.poll().await;
    assert!(
        h.scrape()
            .await
            .values("gitlab_jobs_exporter_project_state")
            .iter()
            .any(|(l, v)| l["project"] == "acme/platform/api" && l["state"] == "ok" && *v == 1.0),
        "the new project shows under the path"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_projects_are_polled_less_and_the_budget_stretches_them_first() {
    let mut specs = vec![ProjectSpec {
        id: 31,
        path: "pace/busy".into(),
        pipelines_per_hour: 60.0,
    }];
    specs.extend((32..=41).map(|id| ProjectSpec {
        id,
        path: format!("pace/idle-{id}"),
        pipelines_per_hour: 0.0,
    }));
    let world = World::generate(&WorldSpec::new(specs, T0, T0 + 3 * HOUR), 9);
    let refs = (31..=41).map(by_id).collect();
    let mut h = Harness::start(world, T0 + HOUR, refs, Duration::from_secs(3600)).await;
    h.cutoff_ms = Some(T0);
    h.first_poll_ms = Some(T0 + HOUR);
    let polls = |s: &common::Scrape, project: &str| {
        s.values("gitlab_jobs_exporter_polls_total")
            .iter()
            .find(|(l, _)| l["project"] == project)
            .map_or(0.0, |(_, v)| *v)
    };
    // Ten simulated minutes in 10 s steps, scheduled as `run` would (no jitter).
    let mut due = std::collections::BTreeMap::new();
    let step = Duration::from_secs(10);
    let mut elapsed = Duration::ZERO;
    h.scheduler.poll_due(elapsed, &mut due).await;
    for _ in 0..60 {
        h.sim.advance(step);
        elapsed += step;
        h.scheduler.poll_due(elapsed, &mut due).await;
    }
    let scrape = h.scrape().await;
    let busy = polls(&scrape, "pace/busy");
    let idle = polls(&scrape, "pace/idle-32");
    // Busy: every 30 s. Idle: at 0, 30, 60, 120, 240 and 480 s (waiting about as long as it
    // has been quiet).
    assert!(busy >= 18.0, "busy project polled {busy} times");
    assert_eq!(idle, 6.0, "idle project polled {idle} times");
    let stretch = scrape.values("gitlab_jobs_exporter_poll_interval_stretch_ratio");
    assert!(stretch.values().all(|v| *v == 1.0), "{stretch:?}");

    // Half the budget the projects need at their targets: idle projects are stretched first
    // (at least as much as the busy one), the busy one is still polled more often, and nothing
    // is lost.
    let demand = scrape.values("gitlab_jobs_exporter_request_demand_ratio");
    let needed_per_minute = demand.values().next().copied().unwrap_or_default() * 1e9;
    assert!(needed_per_minute > 0.0, "{demand:?}");
    h.scheduler.set_pacing_budget(needed_per_minute / 2.0);
    for _ in 0..60 {
        h.sim.advance(step);
        elapsed += step;
        h.scheduler.poll_due(elapsed, &mut due).await;
    }
    let scrape = h.scrape().await;
    let stretch = scrape.values("gitlab_jobs_exporter_poll_interval_stretch_ratio");
    let of = |activity: &str| {
        stretch
            .iter()
            .find(|(l, _)| l["activity"] == activity)
            .map_or(0.0, |(_, v)| *v)
    };
    assert!(of("idle") > 1.0 && of("idle") >= of("busy"), "{stretch:?}");
    let demand = scrape.values("gitlab_jobs_exporter_request_demand_ratio");
    assert!(demand.values().all(|v| *v > 0.9), "{demand:?}");
    let (busy_now, idle_now) = (
        polls(&scrape, "pace/busy") - busy,
        polls(&scrape, "pace/idle-32") - idle,
    );
    assert!(busy_now > idle_now, "busy {busy_now}, idle {idle_now}");
    assert!(
        idle_now <= 1.0,
        "idle projects wait longer than poll.max_interval: {idle_now}"
    );
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_and_retired_projects_survive_a_restart() {
    use gitlab_jobs_exporter::fleet::runner::Scheduler;
    use gitlab_jobs_exporter::metrics::Metrics;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().to_path_buf();
    let mut h = start_discovering(|cfg| cfg.state.dir = Some(state_dir.clone())).await;
    assert_eq!(h.scheduler.discover().await.added, 3);
    for _ in 0..3 {
        h.poll().await;
        h.sim.advance(Duration::from_secs(60));
    }
    h.sim.set_member(25, false).expect("project 25");
    assert_eq!(h.scheduler.discover().await.retired, 1);
    h.scheduler.write_checkpoint().await.expect("checkpoint");

    // A new process on the same state.dir, before any discovery pass: the live discovered
    // projects are back (and polled), the retired one waits for its grace period.
    // ...now listing one of them explicitly: it takes over the discovered entry (and tracker).
    let mut cfg = common::config(
        &h.base_url,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
    );
    discover_acme_and_membership(&mut cfg);
    cfg.state.dir = Some(state_dir.clone());
    let cfg = cfg.validate().expect("valid configuration");
    let metrics =
        Arc::new(Metrics::new(&cfg.metrics, cfg.limits.max_series, &cfg.labels).expect("metrics"));
    let again = Scheduler::new(&cfg, metrics.clone(), common::fast_retry()).expect("scheduler");
    let cp = gitlab_jobs_exporter::persist::load(&state_dir, cfg.gitlab.url.as_str())
        .expect("checkpoint");
    again.restore(cp).await;
    assert_eq!(
        again.watched(),
        2,
        "api (configured) and frontend (discovered)"
    );
    let restored = common::Scrape::parse(&metrics.render().expect("render"));
    assert!(
        restored
            .values("gitlab_ci_jobs_total")
            .keys()
            .any(|l| l["project"] == "tools/cli"),
        "the retired project's series are kept through the restart"
    );

    // It returns: resumed from its tracker, so nothing is counted twice.
    h.sim.set_member(25, true).expect("project 25");
    let stats = again.discover().await;
    assert_eq!((stats.revived, stats.added), (1, 0), "{stats:?}");
    assert_eq!(again.watched(), 3, "nothing twice");
    h.sim.advance(Duration::from_secs(120));
    for _ in 0..gitlab_jobs_exporter::project::cycle::COLD_SWEEP_CYCLES + 1 {
        for r in again.poll_all_once().await {
            r.expect("poll cycle succeeds");
        }
    }
    let scrape = common::Scrape::parse(&metrics.render().expect("render"));
    assert_matches_truth(
        &scrape,
        &h.truth_for(&["acme/platform/api", "acme/web/frontend", "tools/cli"]),
    );
    h.stop().await;
}

/// Issue 9, item 1: a pipeline of six jobs created together, five of which run and finish
/// within 10 s while the sixth (`integration 2/2`, after `integration 1/2` failed) stays
/// `created` and is skipped 4 s after the last of them finished (in project `late/skip`), or
/// goes `waiting_for_resource` 2 s after and is skipped 2 s later (`late/resource`). 120 newer
/// jobs, done by then, put the pipeline below the top page.
fn lone_late_skip_world(t: Ms) -> World {
    use gitlab_sim::{JobPlan, ProjectDef};
    let mut jobs: Vec<(Ms, usize, JobPlan)> = Vec::new();
    for (project, offset) in [(1u64, 0), (2, 300)] {
        let t = t + offset;
        let pipeline = 100 + project;
        let ran = |name: &str, end: Ms, status: &str| {
            let mut j = JobPlan::new(
                0,
                project,
                pipeline,
                name,
                "test",
                &[
                    (t, "created"),
                    (t + S / 2, "pending"),
                    (t + S, "running"),
                    (t + end, status),
                ],
            );
            if status == "failed" {
                j.failure_reason = Some("script_failure".into());
            }
            j
        };
        let last = if project == 1 {
            vec![(t, "created"), (t + 14 * S, "skipped")]
        } else {
            vec![
                (t, "created"),
                (t + 12 * S, "waiting_for_resource"),
                (t + 14 * S, "skipped"),
            ]
        };
        let pipeline_jobs = [
            ran("build", 4 * S, "success"),
            ran("lint", 5 * S, "success"),
            ran("rspec 1/2", 7 * S, "success"),
            ran("rspec 2/2", 8 * S, "success"),
            ran("integration 1/2", 10 * S, "failed"),
            JobPlan::new(0, project, pipeline, "integration 2/2", "test", &last),
        ];
        for (i, j) in pipeline_jobs.into_iter().enumerate() {
            jobs.push((j.created_at_ms, i, j));
        }
        for i in 0..120 {
            let c = t + S + i;
            let j = JobPlan::new(
                0,
                project,
                pipeline + 10,
                &format!("filler {i}"),
                "build",
                &[
                    (c, "created"),
                    (c + S / 10, "pending"),
                    (c + S / 2, "running"),
                    (c + 3 * S, "success"),
                ],
            );
            jobs.push((c, 100 + i as usize, j));
        }
    }
    jobs.sort_by_key(|(c, order, j)| (*c, j.project_id, *order));
    let jobs = (jobs.into_iter().enumerate())
        .map(|(i, (_, _, mut j))| {
            j.id = 1001 + i as u64;
            j
        })
        .collect();
    let projects = vec![
        ProjectDef::new(1, "late/skip"),
        ProjectDef::new(2, "late/resource"),
    ];
    World::new(projects, jobs).expect("valid world")
}

/// Drives the scheduler as `run` would (no jitter), in 1 s steps of simulated time, until
/// `until`; returns the time reached.
async fn run_paced(
    h: &Harness,
    due: &mut BTreeMap<u64, Duration>,
    elapsed: &mut Duration,
    until: Ms,
) {
    while h.sim.now_ms() < until {
        h.sim.advance(Duration::from_secs(1));
        *elapsed += Duration::from_secs(1);
        h.scheduler.poll_due(*elapsed, due).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_job_skipped_alone_after_its_pipeline_settled_is_counted() {
    let start = T0 - 30_000;
    let mut h = Harness::start_with(
        lone_late_skip_world(T0),
        start,
        vec![by_path("late/skip"), by_path("late/resource")],
        Duration::from_secs(3600),
        |cfg| cfg.poll.interval = Duration::from_secs(1),
    )
    .await;
    // The default budget, planned on the simulated clock.
    h.scheduler.set_pacing_budget(300.0);
    h.cutoff_ms = Some(start - HOUR);
    h.first_poll_ms = Some(start);
    let (mut due, mut elapsed) = (BTreeMap::new(), Duration::ZERO);
    h.scheduler.poll_due(elapsed, &mut due).await;
    // 150 s after the last sibling finished (T0 + 10 s); noting when both skips are counted.
    let mut counted_at = None;
    while h.sim.now_ms() < T0 + 160_000 {
        run_paced(&h, &mut due, &mut elapsed, h.sim.now_ms() + 1000).await;
        if counted_at.is_some() {
            continue;
        }
        let skipped: f64 = (h.scrape().await.values("gitlab_ci_jobs_total").iter())
            .filter(|(l, _)| l["status"] == "skipped")
            .map(|(_, v)| v)
            .sum();
        if skipped == 2.0 {
            counted_at = Some(h.sim.now_ms() - T0 - 14_000);
        }
    }
    eprintln!("lone late skips counted {counted_at:?} ms after they happened");
    let truth = h.truth();
    assert_eq!(truth.jobs_with_status("skipped"), 2);
    let scrape = h.scrape().await;
    let skipped: f64 = (scrape.values("gitlab_ci_jobs_total").iter())
        .filter(|(l, _)| l["status"] == "skipped")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(skipped, 2.0, "both lone late skips counted");
    assert_matches_truth(&scrape, &truth);
    h.stop().await;
}

/// Issue 9, item 3: project 7 has 50 jobs when the exporter first polls it at `T0`; 1,000
/// more are created during a downtime (the last 20 still running when it comes back, done
/// about 12 minutes later), and 30 more arrive while it catches up.
fn downtime_world() -> World {
    use gitlab_sim::{JobPlan, ProjectDef};
    let mut jobs = Vec::new();
    let mut add = |created: Ms, run: Ms, status: &str| {
        let id = 1001 + jobs.len() as u64;
        let mut j = JobPlan::new(
            id,
            7,
            id / 10,
            &format!("job {}", id % 7),
            "test",
            &[
                (created, "created"),
                (created + S, "pending"),
                (created + 2 * S, "running"),
                (created + run, status),
            ],
        );
        if status == "failed" {
            j.failure_reason = Some("script_failure".into());
        }
        jobs.push(j);
    };
    for i in 0..50 {
        add(T0 - HOUR + i * 10 * S, 30 * S, "success");
    }
    for i in 0..1000 {
        let status = if i % 9 == 0 { "failed" } else { "success" };
        let run = if i >= 980 { 80 * MIN } else { 30 * S };
        add(T0 + MIN + i * 3 * S, run, status);
    }
    for i in 0..30 {
        add(T0 + 2 * HOUR + i * 5 * S, 20 * S, "success");
    }
    World::new(vec![ProjectDef::new(7, "catch/up")], jobs).expect("valid world")
}

/// A poller of one project on its own (as the scheduler would run it).
struct LonePoller {
    poller: gitlab_jobs_exporter::project::cycle::ProjectPoller,
    client: gitlab_jobs_exporter::gitlab::GitlabClient,
    metrics: std::sync::Arc<gitlab_jobs_exporter::metrics::Metrics>,
}

impl LonePoller {
    /// Project 7, capped at 3 pages.
    fn new(base_url: &str, checkpoint: Option<&str>) -> Self {
        let mut p = Self::of(base_url, 7, checkpoint);
        p.poller.set_max_pages_per_cycle(3);
        p
    }

    /// Project `id`, with the default page cap.
    fn of(base_url: &str, id: u64, checkpoint: Option<&str>) -> Self {
        use gitlab_jobs_exporter::metrics::Metrics;
        use gitlab_jobs_exporter::project::cycle::ProjectPoller;
        let cfg = common::config(base_url, vec![by_id(id)], Duration::from_secs(3600))
            .validate()
            .expect("valid configuration");
        let metrics = std::sync::Arc::new(
            Metrics::new(&cfg.metrics, cfg.limits.max_series, &cfg.labels).expect("metrics"),
        );
        let client = gitlab_jobs_exporter::gitlab::GitlabClient::new(
            &cfg.gitlab,
            cfg.token(),
            common::fast_retry(),
            metrics.clone(),
        )
        .expect("client");
        let mut poller = ProjectPoller::new(by_id(id), cfg.poll.backfill, cfg.labels, (0, 1));
        if let Some(json) = checkpoint {
            poller.restore(serde_json::from_str(json).expect("checkpoint"), &metrics);
        }
        Self {
            poller,
            client,
            metrics,
        }
    }

    async fn poll(&mut self) -> gitlab_jobs_exporter::project::cycle::CycleStats {
        (self.poller.poll(&self.client, &self.metrics).await).expect("poll cycle succeeds")
    }

    fn checkpoint(&self) -> String {
        serde_json::to_string(&self.poller.checkpoint(&self.metrics)).expect("checkpoint")
    }

    fn scrape(&self) -> common::Scrape {
        common::Scrape::parse(&self.metrics.render().expect("render"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_cycle_after_downtime_catches_up_below_its_last_page() {
    use gitlab_sim::{SimClock, Simulator};
    let sim = Simulator::new(
        downtime_world(),
        SimClock::manual(T0),
        common::TOKEN.to_string(),
    );
    let server = sim.spawn().await.expect("simulator");
    let (cutoff, first_poll) = (T0 - HOUR, T0);
    let mut p = LonePoller::new(&server.base_url, None);
    p.poll().await;
    let saved = p.checkpoint();

    // Down for 2 hours: 1,000 jobs (10 pages) to catch up, 3 pages per cycle. Restarted on
    // the checkpoint.
    sim.advance(Duration::from_secs(2 * 3600 - 60));
    let mut p = LonePoller::new(&server.base_url, Some(&saved));
    let first = p.poll().await;
    assert_eq!(first.pages, 3, "{first:?}");
    let scrape = p.scrape();
    assert!(
        !common::matches_truth(&scrape, &sim.ground_truth_since(cutoff, first_poll)),
        "not caught up yet"
    );
    let limit = scrape.values("gitlab_jobs_exporter_api_errors_total");
    assert!(
        limit
            .iter()
            .any(|(l, v)| l["kind"] == "page_limit" && *v == 1.0),
        "the capped cycle is counted: {limit:?}"
    );
    // The cursor survives a restart too.
    let saved = p.checkpoint();
    let mut p = LonePoller::new(&server.base_url, Some(&saved));
    let mut catch_up = first.catch_up_pages;
    for _ in 0..6 {
        sim.advance(Duration::from_secs(30));
        let st = p.poll().await;
        assert!(st.pages <= 3, "{st:?}");
        catch_up += st.catch_up_pages;
    }
    assert!(
        catch_up >= 7,
        "the 7 pages below the first 3 were read: {catch_up}"
    );
    assert_matches_truth(&p.scrape(), &sim.ground_truth_since(cutoff, first_poll));
    // The last running jobs finish; nothing is counted twice.
    sim.advance(Duration::from_secs(15 * 60));
    for _ in 0..=gitlab_jobs_exporter::project::cycle::COLD_SWEEP_CYCLES {
        p.poll().await;
    }
    assert_matches_truth(&p.scrape(), &sim.ground_truth_since(cutoff, first_poll));
    server.shutdown().await;
}

/// A catch-up cursor GitLab refuses (an upgrade since the checkpoint, a tampered file): the
/// catch-up reads down from the top instead, and still misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_catch_up_cursor_reads_down_from_the_top_instead() {
    use gitlab_sim::{SimClock, Simulator};
    let sim = Simulator::new(
        downtime_world(),
        SimClock::manual(T0),
        common::TOKEN.to_string(),
    );
    let server = sim.spawn().await.expect("simulator");
    let (cutoff, first_poll) = (T0 - HOUR, T0);
    let mut p = LonePoller::new(&server.base_url, None);
    p.poll().await;
    let saved = p.checkpoint();
    sim.advance(Duration::from_secs(2 * 3600 - 60));
    let mut p = LonePoller::new(&server.base_url, Some(&saved));
    assert_eq!(p.poll().await.pages, 3);
    let mut cp: serde_json::Value = serde_json::from_str(&p.checkpoint()).expect("json");
    let gaps = cp["tracker"]["gaps"].as_array_mut().expect("a gap");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    gaps[0]["next"] =
        "projects/7/jobs?cursor=bm90LWEtY3Vyc29y&pagination=keyset&per_page=100".into();
    let mut p = LonePoller::new(&server.base_url, Some(&cp.to_string()));
    let truth = || sim.ground_truth_since(cutoff, first_poll);
    let mut cycles = 0;
    while !common::matches_truth(&p.scrape(), &truth()) {
        assert!(cycles < 12, "caught up within 12 cycles");
        p.poll().await;
        cycles += 1;
    }
    let errors = p.scrape().values("gitlab_jobs_exporter_api_errors_total");
    assert!(
        errors
            .iter()
            .any(|(l, v)| l["kind"] == "catch_up_cursor" && *v == 1.0),
        "{errors:?}"
    );
    server.shutdown().await;
}

fn skipped(scrape: &common::Scrape) -> f64 {
    (scrape.values("gitlab_ci_jobs_total").iter())
        .filter(|(l, _)| l["status"] == "skipped")
        .map(|(_, v)| v)
        .sum()
}

/// Serves `sim` behind a fake GitLab answer: `refuse(query)` gives the status to answer a
/// request with instead of the simulator's (`None`: the simulator answers). Returns the base URL.
async fn serve_refusing(
    sim: &gitlab_sim::Simulator,
    refuse: impl Fn(&str) -> Option<axum::http::StatusCode> + Clone + Send + Sync + 'static,
) -> String {
    let app = sim.router().layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let refuse = refuse.clone();
            async move {
                let status = refuse(req.uri().query().unwrap_or(""));
                match status {
                    Some(status) => axum::response::IntoResponse::into_response((
                        status,
                        [("content-type", "application/json")],
                        format!(r#"{{"message":"{}"}}"#, status.as_u16()),
                    )),
                    None => next.run(req).await,
                }
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// Issue 9, item 1: the exporter starts (or a project is discovered) 2 s after the pipeline
/// settled: the first cycle's full listing shows the sixth job `created` in a settled
/// pipeline, and that pipeline is pursued from then on (not left to the cold sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_job_in_a_pipeline_settled_just_before_the_first_poll_is_counted() {
    let start = T0 + 12 * S;
    let mut h = Harness::start_with(
        lone_late_skip_world(T0),
        start,
        vec![by_path("late/skip"), by_path("late/resource")],
        Duration::from_secs(3600),
        |cfg| cfg.poll.interval = Duration::from_secs(1),
    )
    .await;
    h.scheduler.set_pacing_budget(300.0);
    h.cutoff_ms = Some(start - HOUR);
    h.first_poll_ms = Some(start);
    let (mut due, mut elapsed) = (BTreeMap::new(), Duration::ZERO);
    h.scheduler.poll_due(elapsed, &mut due).await;
    run_paced(&h, &mut due, &mut elapsed, T0 + 164_000).await;
    assert_eq!(h.truth().jobs_with_status("skipped"), 2);
    let scrape = h.scrape().await;
    assert_eq!(
        skipped(&scrape),
        2.0,
        "both skips counted 150 s after they happened"
    );
    assert_matches_truth(&scrape, &h.truth());
    h.stop().await;
}

/// Issue 9, item 1: the pipeline is seen settled (its pursuit starts), the exporter stops
/// right after and restarts on its checkpoint 40 minutes later, after the pursuit window:
/// the expired pursuit is checked once more before it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pursuit_expiring_during_a_downtime_is_checked_once_more() {
    use gitlab_sim::{SimClock, Simulator};
    let sim = Simulator::new(
        lone_late_skip_world(T0),
        SimClock::manual(T0 + S),
        common::TOKEN.to_string(),
    );
    let server = sim.spawn().await.expect("simulator");
    let mut p = LonePoller::of(&server.base_url, 1, None);
    p.poll().await; // t+1 s: the pipeline runs
    for _ in 0..11 {
        sim.advance(Duration::from_secs(1));
        p.poll().await; // up to t+12 s: the last sibling finished, the pipeline settled
    }
    let saved = p.checkpoint();
    assert!(saved.contains("settling"), "pursuit started: {saved}");
    assert_eq!(skipped(&p.scrape()), 0.0, "not skipped yet at t+12 s");
    sim.advance(Duration::from_secs(40 * 60));
    let mut p = LonePoller::of(&server.base_url, 1, Some(&saved));
    // A few cycles after the restart, before the next cold sweep.
    for _ in 0..3 {
        sim.advance(Duration::from_secs(1));
        p.poll().await;
    }
    assert_eq!(
        skipped(&p.scrape()),
        1.0,
        "the skip that happened during the downtime is counted"
    );
    let cp: serde_json::Value = serde_json::from_str(&p.checkpoint()).expect("json");
    let settling = &cp["tracker"]["settling"];
    assert!(
        settling.is_null() || settling.as_object().is_some_and(|m| m.is_empty()),
        "the expired pursuit is dropped after its last check: {settling}"
    );
    server.shutdown().await;
}

/// Issue 9, item 3: mid catch-up, after a cursor page was read, GitLab (or a proxy) answers
/// 400 once to the next cursor: the catch-up reads down from the top again and the rest of
/// the gap is still read (not taken for a loop and abandoned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_cursor_mid_catch_up_still_reads_the_rest_of_the_gap() {
    use gitlab_sim::{SimClock, Simulator};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let sim = Simulator::new(
        downtime_world(),
        SimClock::manual(T0),
        common::TOKEN.to_string(),
    );
    // Counts cursor requests down while armed (> 0); answers 400 to the one reaching 0.
    let arm = Arc::new(AtomicI64::new(-1));
    let a = arm.clone();
    let base = serve_refusing(&sim, move |q| {
        (q.contains("cursor=")
            && a.load(Ordering::SeqCst) > 0
            && a.fetch_sub(1, Ordering::SeqCst) == 1)
            .then_some(axum::http::StatusCode::BAD_REQUEST)
    })
    .await;
    let (cutoff, first_poll) = (T0 - HOUR, T0);
    let mut p = LonePoller::of(&base, 7, None);
    p.poller.set_max_pages_per_cycle(5);
    p.poll().await;
    sim.advance(Duration::from_secs(2 * 3600 - 60));
    let st = p.poll().await; // capped: a gap of ~700 jobs with a cursor
    assert_eq!(st.pages, 5, "{st:?}");
    // Next cycle: the top page, one catch-up page, then a 400 on the cursor after it.
    arm.store(2, Ordering::SeqCst);
    for _ in 0..13 {
        sim.advance(Duration::from_secs(10));
        p.poll().await;
    }
    assert_eq!(arm.load(Ordering::SeqCst), 0, "the 400 was answered");
    let scrape = p.scrape();
    let errors = scrape.values("gitlab_jobs_exporter_api_errors_total");
    assert!(
        !errors
            .iter()
            .any(|(l, _)| l["kind"] == "catch_up_abandoned"),
        "{errors:?}"
    );
    assert_matches_truth(&scrape, &sim.ground_truth_since(cutoff, first_poll));
}

/// Issue 9, item 3: GitLab answers 404 to a stored catch-up cursor (any refusal but a 400):
/// the catch-up reads down from the top instead; the project is never taken for deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_on_a_catch_up_cursor_never_stops_polling_the_project() {
    use gitlab_jobs_exporter::project::cycle::{NextPoll, ProjectState};
    use gitlab_sim::{SimClock, Simulator};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let sim = Simulator::new(
        downtime_world(),
        SimClock::manual(T0),
        common::TOKEN.to_string(),
    );
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    let base = serve_refusing(&sim, move |q| {
        (a.load(Ordering::SeqCst) && q.contains("cursor="))
            .then_some(axum::http::StatusCode::NOT_FOUND)
    })
    .await;
    let (cutoff, first_poll) = (T0 - HOUR, T0);
    let mut p = LonePoller::new(&base, None);
    p.poll().await;
    sim.advance(Duration::from_secs(2 * 3600 - 60));
    let st = p.poll().await; // capped: a gap with a cursor
    assert_eq!(st.pages, 3, "{st:?}");
    armed.store(true, Ordering::SeqCst);
    sim.advance(Duration::from_secs(10));
    let r = p.poller.poll(&p.client, &p.metrics).await;
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(p.poller.state(), ProjectState::Ok);
    assert_ne!(p.poller.next_poll(Duration::from_secs(30)), NextPoll::Never);
    let errors = p.scrape().values("gitlab_jobs_exporter_api_errors_total");
    assert!(
        errors.iter().any(|(l, _)| l["kind"] == "catch_up_cursor"),
        "{errors:?}"
    );
    // Cursors work again: the gap is read to its end.
    armed.store(false, Ordering::SeqCst);
    for _ in 0..10 {
        sim.advance(Duration::from_secs(10));
        p.poll().await;
    }
    assert_matches_truth(&p.scrape(), &sim.ground_truth_since(cutoff, first_poll));
}

/// Issue 9, item 1: a `when: delayed` job (`scheduled`, runs 10 min later, for 1 min) in a
/// pipeline that settled, with 120 newer jobs above it, is counted within minutes of
/// finishing, not at the cold sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_deep_in_a_quiet_project_is_counted_within_minutes() {
    use gitlab_sim::{JobPlan, ProjectDef};
    let t = T0;
    let mut jobs = vec![
        JobPlan::new(
            1001,
            1,
            101,
            "build",
            "build",
            &[
                (t, "created"),
                (t + S, "pending"),
                (t + 2 * S, "running"),
                (t + 5 * S, "success"),
            ],
        ),
        JobPlan::new(
            1002,
            1,
            101,
            "deploy",
            "deploy",
            &[
                (t, "created"),
                (t + 6 * S, "scheduled"),
                (t + 10 * MIN, "pending"),
                (t + 10 * MIN + S, "running"),
                (t + 11 * MIN, "success"),
            ],
        ),
    ];
    for i in 0..120u64 {
        let c = t + 20 * S + i as Ms;
        jobs.push(JobPlan::new(
            1003 + i,
            1,
            111,
            &format!("filler {i}"),
            "build",
            &[
                (c, "created"),
                (c + S, "pending"),
                (c + 2 * S, "running"),
                (c + 3 * S, "success"),
            ],
        ));
    }
    let world = World::new(vec![ProjectDef::new(1, "late/delayed")], jobs).expect("world");
    let h = Harness::start_with(
        world,
        t - 30 * S,
        vec![by_path("late/delayed")],
        Duration::from_secs(3600),
        |_| {},
    )
    .await;
    h.scheduler.set_pacing_budget(300.0);
    let (mut due, mut elapsed) = (BTreeMap::new(), Duration::ZERO);
    h.scheduler.poll_due(elapsed, &mut due).await;
    let mut at = None;
    while h.sim.now_ms() < t + HOUR {
        h.sim.advance(Duration::from_secs(5));
        elapsed += Duration::from_secs(5);
        h.scheduler.poll_due(elapsed, &mut due).await;
        let n: f64 = h
            .scrape()
            .await
            .values("gitlab_ci_jobs_total")
            .values()
            .sum();
        if n == 122.0 {
            at = Some((h.sim.now_ms() - t - 11 * MIN) / 1000);
            break;
        }
    }
    // Re-checked every 5 minutes of GitLab time (then at the next poll of an idle project),
    // not only at the cold sweep (which counted it 1,530 s after it finished).
    assert!(
        at.is_some_and(|s| s < 450),
        "counted within 7.5 min of finishing: {at:?} s"
    );
    h.stop().await;
}

/// A rename refused because the new path still holds a retired project's series (deleted,
/// another project moved into its path) is tried again on a later pass: once those series
/// are gone, the project's own follow it, rather than staying under its old path until a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rename_is_tried_again_once_the_path_is_free() {
    // Below poll.backfill, which validation refuses: here the series are to go at once.
    let mut h =
        start_discovering_with(|_| {}, |cfg| cfg.discovery.grace_period = Duration::ZERO).await;
    assert_eq!(h.scheduler.discover().await.added, 3);
    h.poll().await;
    let scrape = h.scrape().await;
    assert!(job_series(&scrape, "acme/platform/api") > 0);
    assert!(job_series(&scrape, "acme/web/frontend") > 0);

    // acme/platform/api is deleted and acme/web/frontend moves into its path, in one pass:
    // the rename comes before the old project's series are removed, so it is refused.
    h.sim.remove_project(21).expect("project 21");
    h.sim
        .rename_project(22, "acme/platform/api")
        .expect("rename");
    let stats = h.scheduler.discover().await;
    assert_eq!((stats.retired, stats.removed), (1, 1), "{stats:?}");
    // The path is free now: the next pass moves the series there.
    h.scheduler.discover().await;
    h.sim.advance(Duration::from_secs(60));
    h.poll().await;
    let scrape = h.scrape().await;
    assert_eq!(
        job_series(&scrape, "acme/web/frontend"),
        0,
        "series left under the old path"
    );
    assert!(job_series(&scrape, "acme/platform/api") > 0);
    h.stop().await;
}

/// `/healthz` on an idle exporter polling more often than the checkpoint loop ticks (once a
/// second): a page one tick (and a slow write) old is the loop at work, not a stale page.
#[tokio::test(start_paused = true)]
async fn a_short_poll_interval_does_not_make_an_idle_exporter_unhealthy() {
    let mut cfg = common::config(
        "http://127.0.0.1:9",
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
    );
    cfg.poll.interval = Duration::from_millis(200);
    let cfg = cfg.validate().expect("valid configuration");
    let metrics = std::sync::Arc::new(
        gitlab_jobs_exporter::metrics::Metrics::new(
            &cfg.metrics,
            cfg.limits.max_series,
            &cfg.labels,
        )
        .expect("metrics"),
    );
    let scheduler =
        gitlab_jobs_exporter::fleet::runner::Scheduler::new(&cfg, metrics, common::fast_retry())
            .expect("scheduler");
    let health = scheduler.health();
    health.published();
    // The loop's next page comes one tick later, plus the write.
    tokio::time::advance(Duration::from_millis(1500)).await;
    assert_eq!(health.check(), Ok(()));
}
