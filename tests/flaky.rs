//! Flaky jobs (`gitlab_ci_job_flaky_total`) against the simulator's ground truth over real
//! loopback HTTP: retries of recent pipelines (decided from the job list alone), retries of
//! pipelines older than anything the backfill listed (one lookup each), a restart with a
//! lookup still pending, and what each flaky check costs.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, Scrape, assert_matches_truth, by_id, by_path};
use gitlab_sim::{GroundTruth, JobPlan, Ms, ProjectDef, ProjectSpec, World, WorldSpec};

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const S: Ms = 1000;
/// A whole second, so GitLab's `Date` header and the manual clock agree.
const T0: Ms = 1_790_000_000_000;

type Series = BTreeMap<(String, String, String, String), f64>;

fn flaky_scraped(scrape: &Scrape) -> Series {
    scrape
        .values("gitlab_ci_job_flaky_total")
        .into_iter()
        .map(|(l, v)| {
            let get = |k: &str| l.get(k).cloned().unwrap_or_default();
            ((get("project"), get("ref"), get("stage"), get("job")), v)
        })
        .collect()
}

fn flaky_truth(truth: &GroundTruth) -> Series {
    truth
        .flaky
        .iter()
        .map(|(k, n)| {
            (
                (
                    k.project.clone(),
                    k.ref_.clone(),
                    k.stage.clone(),
                    k.job.clone(),
                ),
                *n as f64,
            )
        })
        .collect()
}

fn own(scrape: &Scrape, name: &str, result: Option<&str>) -> f64 {
    scrape
        .values(name)
        .iter()
        .filter(|(l, _)| result.is_none_or(|r| l.get("result").map(String::as_str) == Some(r)))
        .map(|(_, v)| *v)
        .sum()
}

/// Lookups of failed attempts the simulator answered (pipeline job lists with `scope[]=failed`).
fn lookups_sent(h: &Harness) -> usize {
    h.sim
        .request_log()
        .iter()
        .filter(|r| r.path_and_query.contains("/pipelines/"))
        .filter(|r| r.path_and_query.contains("=failed"))
        .count()
}

fn last_status(j: &JobPlan) -> &str {
    j.timeline.last().map_or("", |e| e.1.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_passes_equal_the_truth_for_recent_and_old_pipelines() {
    let projects = vec![
        ProjectSpec {
            id: 11,
            path: "acme/api".into(),
            pipelines_per_hour: 12.0,
        },
        ProjectSpec {
            id: 12,
            path: "acme/web".into(),
            pipelines_per_hour: 8.0,
        },
    ];
    let world = World::generate(&WorldSpec::new(projects, T0, T0 + 8 * HOUR), 5);
    let pick = |from: Ms, to: Ms, status: &str, n: usize| -> Vec<u64> {
        let mut seen = std::collections::BTreeSet::new();
        world
            .jobs()
            .iter()
            .filter(|j| (from..to).contains(&j.created_at_ms) && last_status(j) == status)
            // One per pipeline and name, so each retry is its own case.
            .filter(|j| seen.insert((j.pipeline_id, j.name.clone())))
            .map(|j| j.id)
            .take(n)
            .collect()
    };
    // The history's first pipelines: never listed by the exporter.
    let old_failed = pick(T0, T0 + 15 * MIN, "failed", 3);
    let old_passed = pick(T0, T0 + 15 * MIN, "success", 1);
    // Its last ones, which the backfill lists.
    let recent_failed = pick(T0 + 440 * MIN, T0 + 470 * MIN, "failed", 6);
    assert_eq!(
        (old_failed.len(), old_passed.len(), recent_failed.len()),
        (3, 1, 6),
        "the history has the cases"
    );
    let old_pipelines: std::collections::BTreeSet<u64> = world
        .jobs()
        .iter()
        .filter(|j| old_failed.contains(&j.id) || old_passed.contains(&j.id))
        .map(|j| j.pipeline_id)
        .collect();
    // Retries are created after every job of the history (ids grow with creation time).
    let newest = world
        .jobs()
        .iter()
        .map(|j| j.created_at_ms)
        .max()
        .unwrap_or(T0);
    let start = (T0 + 2 * HOUR + 10 * MIN).max(newest + MIN) / S * S;
    let mut h = Harness::start(
        world,
        start,
        vec![by_path("acme/api"), by_id(12)],
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    assert_eq!(lookups_sent(&h), 0, "nothing to decide yet");

    // Retries, in creation order: most pass; one recent one fails again and its second retry
    // passes (flaky, once); an old success retried passes again (not flaky).
    let mut at = h.sim.now_ms() + S;
    let mut second = Vec::new();
    for (i, id) in old_failed
        .iter()
        .chain(&old_passed)
        .chain(&recent_failed)
        .enumerate()
    {
        let outcome = if i == 5 { "failed" } else { "success" };
        let new = h.sim.retry_job(*id, at, outcome).expect("retry");
        if outcome == "failed" {
            second.push(new);
        }
        at += 10 * S;
    }
    // The failed retry is retried once it has failed (2 min after it started).
    at += 3 * MIN;
    for id in second {
        h.sim.retry_job(id, at, "success").expect("second retry");
    }
    for _ in 0..24 {
        h.sim.advance(Duration::from_secs(30));
        h.poll().await;
    }
    h.settle().await;
    let truth = h.truth();
    let scrape = h.scrape().await;
    assert_matches_truth(&scrape, &truth);
    let expected = flaky_truth(&truth);
    // Every failed attempt retried here passed once (the history has retries of its own).
    assert!(
        expected.values().sum::<f64>() >= (old_failed.len() + recent_failed.len()) as f64,
        "{expected:?}"
    );
    assert_eq!(flaky_scraped(&scrape), expected);
    // One lookup per old pipeline with a pass to decide (3 flaky, 1 not); none for recent
    // ones.
    let lookups = lookups_sent(&h);
    assert_eq!(lookups, old_pipelines.len());
    let name = "gitlab_jobs_exporter_flaky_lookups_total";
    assert_eq!(own(&scrape, name, Some("decided")), lookups as f64);
    eprintln!(
        "flaky passes {}, lookups {lookups}, successes counted {}",
        expected.values().sum::<f64>(),
        truth.jobs_with_status("success")
    );
    assert_eq!(
        own(&scrape, "gitlab_jobs_exporter_flaky_undecided_total", None),
        0.0
    );
    // Polling on changes nothing.
    for _ in 0..3 {
        h.sim.advance(Duration::from_secs(60));
        h.poll().await;
    }
    assert_eq!(flaky_scraped(&h.scrape().await), expected);
    assert_eq!(lookups_sent(&h), lookups);
    h.stop().await;
}

/// Project 7: an old pipeline (1) whose `rspec` failed at T0, 150 jobs of other old
/// pipelines, then 150 jobs four hours later: the backfill stops at a page of old jobs and
/// never lists pipeline 1.
fn old_pipeline_world() -> World {
    let mut jobs = vec![JobPlan::new(
        1,
        7,
        1,
        "rspec",
        "test",
        &[(T0, "created"), (T0 + S, "running"), (T0 + MIN, "failed")],
    )];
    for i in 0..300u64 {
        let at = T0 + if i < 150 { 10 * MIN } else { 4 * HOUR } + i as Ms * 10 * S;
        jobs.push(JobPlan::new(
            2 + i,
            7,
            2 + i / 3,
            "build",
            "build",
            &[(at, "created"), (at + S, "running"), (at + MIN, "success")],
        ));
    }
    World::new(vec![ProjectDef::new(7, "g/old")], jobs).expect("world")
}

/// One project polled by hand, restorable from a checkpoint (a restart).
struct Lone {
    poller: gitlab_jobs_exporter::project::cycle::ProjectPoller,
    client: gitlab_jobs_exporter::gitlab::GitlabClient,
    metrics: std::sync::Arc<gitlab_jobs_exporter::metrics::Metrics>,
}

impl Lone {
    fn new(base_url: &str, checkpoint: Option<&str>) -> Self {
        use gitlab_jobs_exporter::metrics::Metrics;
        use gitlab_jobs_exporter::project::cycle::ProjectPoller;
        let cfg = common::config(base_url, vec![by_id(7)], Duration::from_secs(3600))
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
        let mut poller = ProjectPoller::new(by_id(7), cfg.poll.backfill, cfg.labels, (0, 1));
        if let Some(json) = checkpoint {
            poller.restore(serde_json::from_str(json).expect("checkpoint"), &metrics);
        }
        Self {
            poller,
            client,
            metrics,
        }
    }

    async fn poll(&mut self) {
        (self.poller.poll(&self.client, &self.metrics).await).expect("poll cycle succeeds");
    }

    fn checkpoint(&self) -> String {
        serde_json::to_string(&self.poller.checkpoint(&self.metrics)).expect("checkpoint")
    }

    fn scrape(&self) -> Scrape {
        Scrape::parse(&self.metrics.render().expect("render"))
    }
}

fn flaky_total(scrape: &Scrape) -> f64 {
    flaky_scraped(scrape).values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_pending_across_a_restart_counts_once() {
    use gitlab_sim::{SimClock, Simulator};
    let start = T0 + 5 * HOUR;
    let sim = Simulator::new(
        old_pipeline_world(),
        SimClock::manual(start),
        common::TOKEN.to_string(),
    );
    let server = sim.spawn().await.expect("simulator");
    let mut p = Lone::new(&server.base_url, None);
    p.poll().await;
    // Yesterday's pipeline retried today; the lookup that would decide it fails for now.
    sim.retry_job(1, start + S, "success").expect("retry");
    sim.set_pipeline_jobs_answer(Some(502));
    sim.advance(Duration::from_secs(3 * 60));
    p.poll().await;
    let scrape = p.scrape();
    assert_eq!(flaky_total(&scrape), 0.0);
    let name = "gitlab_jobs_exporter_flaky_lookups_total";
    assert_eq!(own(&scrape, name, Some("error")), 1.0);
    let saved = p.checkpoint();
    assert!(saved.contains("\"attempts\""), "{saved}");

    // A new process on the checkpoint; the endpoint answers again.
    sim.set_pipeline_jobs_answer(None);
    let mut p = Lone::new(&server.base_url, Some(&saved));
    sim.advance(Duration::from_secs(30));
    p.poll().await;
    let scrape = p.scrape();
    assert_eq!(
        flaky_scraped(&scrape),
        BTreeMap::from([(
            (
                "g/old".to_string(),
                "main".to_string(),
                "test".to_string(),
                "rspec".to_string()
            ),
            1.0
        )])
    );
    assert_eq!(own(&scrape, name, Some("decided")), 1.0);
    let truth = sim.ground_truth(start - HOUR);
    assert_eq!(flaky_scraped(&scrape), flaky_truth(&truth));
    // Observed again (later cycles, the same pages): never counted twice.
    for _ in 0..3 {
        sim.advance(Duration::from_secs(30));
        p.poll().await;
    }
    assert_eq!(flaky_total(&p.scrape()), 1.0);
    assert_eq!(
        own(&p.scrape(), name, None),
        1.0,
        "one lookup after the restart"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_that_keep_failing_give_up_as_not_flaky_and_say_so() {
    use gitlab_sim::{SimClock, Simulator};
    let start = T0 + 5 * HOUR;
    let sim = Simulator::new(
        old_pipeline_world(),
        SimClock::manual(start),
        common::TOKEN.to_string(),
    );
    let server = sim.spawn().await.expect("simulator");
    let mut p = Lone::new(&server.base_url, None);
    p.poll().await;
    sim.retry_job(1, start + S, "success").expect("retry");
    sim.set_pipeline_jobs_answer(Some(503));
    for _ in 0..5 {
        sim.advance(Duration::from_secs(60));
        p.poll().await;
    }
    let scrape = p.scrape();
    assert_eq!(flaky_total(&scrape), 0.0);
    let name = "gitlab_jobs_exporter_flaky_lookups_total";
    assert_eq!(
        own(&scrape, name, Some("error")),
        3.0,
        "three tries, then given up"
    );
    assert_eq!(
        own(&scrape, "gitlab_jobs_exporter_flaky_undecided_total", None),
        1.0
    );
    server.shutdown().await;
}

/// Sends every hook due by now and waits until the exporter has dealt with all sent so far.
async fn deliver(h: &Harness, hooks: &gitlab_sim::HookSender) {
    hooks.deliver_due().await;
    let sent = hooks.stats().sent as f64;
    common::until(
        "every hook delivered is applied",
        Duration::from_secs(20),
        || async { (h.hooks_handled().await >= sent).then_some(()) },
    )
    .await;
}

/// With Job Hooks: a retry whose failed attempt a hook reported is flaky at once (no poll, no
/// lookup); a first attempt (`retries_count` 0) costs nothing; a retry of a pipeline older
/// than the backfill waits for the next poll, which looks it up once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_tell_flaky_passes_and_first_attempts() {
    let start = T0 + 5 * HOUR;
    let mut h = Harness::start_with(
        old_pipeline_world(),
        start,
        vec![by_id(7)],
        Duration::from_secs(3600),
        common::with_webhooks,
    )
    .await;
    h.poll().await;
    let hooks = gitlab_sim::HookSender::new(
        &h.sim,
        &format!("{}/webhook", h.metrics_url),
        common::HOOK_SECRET,
        gitlab_sim::HookKnobs::default(),
    )
    .expect("hook sender");
    // A new pipeline 900: `lint` passes at once; `rspec` fails, is retried and passes.
    let at = start + S;
    let plan = |id: u64, name: &str, end: &str| {
        JobPlan::new(
            id,
            7,
            900,
            name,
            "test",
            &[(at, "created"), (at + S, "running"), (at + MIN, end)],
        )
    };
    h.sim
        .add_jobs(vec![
            plan(1000, "lint", "success"),
            plan(1001, "rspec", "failed"),
        ])
        .expect("jobs");
    let retry = h
        .sim
        .retry_job(1001, at + 2 * MIN, "success")
        .expect("retry");
    // Yesterday's pipeline 1 retried too.
    h.sim
        .retry_job(1, at + 2 * MIN + S, "success")
        .expect("old retry");
    for _ in 0..10 {
        h.sim.advance(Duration::from_secs(30));
        deliver(&h, &hooks).await;
    }
    let scrape = h.scrape().await;
    let key = |job: &str| {
        (
            "g/old".to_string(),
            "main".to_string(),
            "test".to_string(),
            job.to_string(),
        )
    };
    assert_eq!(
        flaky_scraped(&scrape),
        BTreeMap::from([(key("rspec"), 1.0)]),
        "the retry {retry} is flaky from its hook alone; the old one waits for a poll"
    );
    assert_eq!(lookups_sent(&h), 0);
    h.poll().await;
    let scrape = h.scrape().await;
    assert_eq!(
        flaky_scraped(&scrape),
        BTreeMap::from([(key("rspec"), 2.0)])
    );
    assert_eq!(flaky_scraped(&scrape), flaky_truth(&h.truth()));
    assert_eq!(lookups_sent(&h), 1, "only the old pipeline is looked up");
    assert_matches_truth(&scrape, &h.truth());
    h.stop().await;
}

/// The simulator's own retries: chains (a retry that fails is retried again, up to four
/// attempts) all through an 8-hour history, and late retries of each project's earliest
/// pipelines at its end, long after any backfill. Polled every 30 s from the sixth hour on:
/// every flaky pass equals the truth, and only the late retries cost a lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_retry_chains_and_late_retries_equal_the_truth() {
    let projects = vec![
        ProjectSpec {
            id: 11,
            path: "acme/api".into(),
            pipelines_per_hour: 12.0,
        },
        ProjectSpec {
            id: 12,
            path: "acme/web".into(),
            pipelines_per_hour: 8.0,
        },
    ];
    let spec = WorldSpec::new(projects, T0, T0 + 8 * HOUR).with_retries(3);
    let mut h = Harness::start(
        World::generate(&spec, 9),
        T0 + 6 * HOUR,
        vec![by_path("acme/api"), by_path("acme/web")],
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    for i in 1..=300 {
        h.sim.advance(Duration::from_secs(30));
        h.poll().await;
        if i % 60 == 0 {
            let scrape = h.scrape().await;
            assert_eq!(flaky_scraped(&scrape), flaky_truth(&h.truth()), "cycle {i}");
        }
    }
    h.settle().await;
    let truth = h.truth();
    let scrape = h.scrape().await;
    assert_matches_truth(&scrape, &truth);
    let expected = flaky_truth(&truth);
    assert_eq!(flaky_scraped(&scrape), expected);
    let flaky: f64 = expected.values().sum();
    assert!(flaky >= 6.0, "chains and late retries pass: {expected:?}");
    let lookups = lookups_sent(&h);
    assert!((1..=6).contains(&lookups), "only late retries: {lookups}");
    assert_eq!(
        own(&scrape, "gitlab_jobs_exporter_flaky_undecided_total", None),
        0.0
    );
    eprintln!(
        "retry chains: flaky passes {flaky}, lookups {lookups}, successes counted {}, requests {}",
        truth.jobs_with_status("success"),
        h.sim.requests().total
    );
    h.stop().await;
}
