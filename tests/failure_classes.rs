//! Failure classes against the simulator's ground truth, over real loopback HTTP: every failed
//! job counted in `gitlab_ci_jobs_total` is counted once in `gitlab_ci_job_failures_total`
//! under the class its log's tail gives, across restarts (the checkpoint's queue) and faults
//! on the trace endpoint; a log over `max_log_bytes` is `log_too_large`, one that cannot be
//! read (404, 403, erased) `unavailable`; with classifying off no log is ever requested.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Labels, Scrape, by_id};
use gitlab_jobs_exporter::failures::Classifier;
use gitlab_jobs_exporter::gitlab::GitlabClient;
use gitlab_jobs_exporter::metrics::Metrics;
use gitlab_jobs_exporter::project::cycle::ProjectPoller;
use gitlab_jobs_exporter::project::followups::ClassifyConfig;
use gitlab_sim::{
    Fault, GroundTruth, LogLimits, Ms, ProjectSpec, SimClock, SimHandle, Simulator, TraceFault,
    World, WorldSpec,
};

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
/// A whole second, so GitLab's `Date` header and the manual clock agree.
const T0: Ms = 1_790_000_000_000;
const IDS: [u64; 2] = [21, 22];
const TAIL: usize = 64 * 1024;
const MAX_LOG: u64 = 4 * 1024 * 1024;

fn world(seed: u64) -> World {
    let projects = vec![
        ProjectSpec {
            id: 21,
            path: "acme/api".into(),
            pipelines_per_hour: 10.0,
        },
        ProjectSpec {
            id: 22,
            path: "acme/web".into(),
            pipelines_per_hour: 6.0,
        },
    ];
    World::generate(&WorldSpec::new(projects, T0, T0 + 3 * HOUR), seed)
}

fn classify() -> ClassifyConfig {
    ClassifyConfig {
        classifier: Arc::new(Classifier::with_defaults()),
        tail_bytes: TAIL,
        max_log_bytes: MAX_LOG,
    }
}

/// The simulator and the exporter's pollers, driven cycle by cycle (as the scheduler would).
struct Rig {
    sim: Simulator,
    _handle: SimHandle,
    base_url: String,
    client: GitlabClient,
    metrics: Arc<Metrics>,
    pollers: Vec<ProjectPoller>,
    classify: Option<ClassifyConfig>,
    cutoff_ms: Option<Ms>,
    first_poll_ms: Option<Ms>,
}

impl Rig {
    async fn start(world: World, at: Ms, classify: Option<ClassifyConfig>) -> Self {
        let sim = Simulator::new(world, SimClock::manual(at), common::TOKEN.to_string());
        sim.set_log_limits(LogLimits {
            tail_bytes: TAIL as u64,
            max_log_bytes: MAX_LOG,
        });
        let handle = sim.spawn().await.expect("simulator starts");
        let base_url = handle.base_url.clone();
        let (client, metrics) = Self::exporter(&base_url);
        let mut rig = Self {
            sim,
            _handle: handle,
            base_url,
            client,
            metrics,
            pollers: Vec::new(),
            classify,
            cutoff_ms: None,
            first_poll_ms: None,
        };
        rig.pollers = rig.fresh_pollers(None);
        rig
    }

    fn exporter(base_url: &str) -> (GitlabClient, Arc<Metrics>) {
        let cfg = common::config(base_url, IDS.map(by_id).to_vec(), Duration::from_secs(3600))
            .validate()
            .expect("valid configuration");
        let metrics = Arc::new(
            Metrics::new(&cfg.metrics, cfg.limits.max_series, &cfg.labels).expect("metrics"),
        );
        let client = GitlabClient::new(
            &cfg.gitlab,
            cfg.token(),
            common::fast_retry(),
            metrics.clone(),
        )
        .expect("client");
        (client, metrics)
    }

    fn fresh_pollers(&self, checkpoint: Option<&[String]>) -> Vec<ProjectPoller> {
        IDS.iter()
            .enumerate()
            .map(|(i, id)| {
                let mut p = ProjectPoller::new(
                    by_id(*id),
                    Duration::from_secs(3600),
                    Default::default(),
                    (0, 1),
                )
                .with_failures(self.classify.clone());
                if let Some(cp) = checkpoint {
                    p.restore(
                        serde_json::from_str(&cp[i]).expect("checkpoint"),
                        &self.metrics,
                    );
                }
                p
            })
            .collect()
    }

    async fn poll(&mut self) {
        if self.cutoff_ms.is_none() {
            let now = self.sim.now_ms();
            self.cutoff_ms = Some(now - now.rem_euclid(1000) - HOUR);
            self.first_poll_ms = Some(now);
        }
        for p in &self.pollers {
            p.poll(&self.client, &self.metrics)
                .await
                .expect("poll cycle succeeds");
        }
    }

    /// Polls without moving the clock until nothing is left to classify (and the deep
    /// manual jobs were swept).
    async fn settle(&mut self) {
        for _ in 0..200 {
            self.poll().await;
            if self.pending() == 0 {
                break;
            }
        }
        for _ in 0..gitlab_jobs_exporter::project::cycle::COLD_SWEEP_CYCLES {
            self.poll().await;
        }
    }

    /// Failed jobs waiting for their class, over all projects.
    fn pending(&self) -> usize {
        self.pollers
            .iter()
            .map(|p| p.project().pending_classifications())
            .sum()
    }

    /// A restart: the checkpoint (as JSON) into a new exporter.
    fn restart(&mut self) {
        let saved: Vec<String> = self
            .pollers
            .iter()
            .map(|p| serde_json::to_string(&p.checkpoint(&self.metrics)).expect("encode"))
            .collect();
        let (client, metrics) = Self::exporter(&self.base_url);
        self.client = client;
        self.metrics = metrics;
        self.pollers = self.fresh_pollers(Some(&saved));
    }

    fn truth(&self) -> GroundTruth {
        self.sim.ground_truth_since(
            self.cutoff_ms.expect("polled"),
            self.first_poll_ms.expect("polled"),
        )
    }

    fn scrape(&self) -> Scrape {
        Scrape::parse(&self.metrics.render().expect("render"))
    }

    async fn run(&mut self, steps: usize) {
        for _ in 0..steps {
            self.sim.advance(Duration::from_secs(90));
            self.poll().await;
        }
    }
}

fn failures_of(truth: &GroundTruth) -> BTreeMap<Labels, f64> {
    truth
        .failures
        .iter()
        .map(|(k, n)| {
            let labels = [
                ("project", &k.project),
                ("ref", &k.ref_),
                ("stage", &k.stage),
                ("job", &k.job),
                ("failure_reason", &k.failure_reason),
                ("class", &k.class),
            ]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.clone()))
            .collect();
            (labels, *n as f64)
        })
        .collect()
}

/// Every (project, ref, stage, job, failure_reason, class) count equals the truth, and every
/// failed job counted has its class.
fn assert_classes_match(scrape: &Scrape, truth: &GroundTruth) {
    common::assert_matches_truth(scrape, truth);
    let got: BTreeMap<Labels, f64> = scrape
        .values("gitlab_ci_job_failures_total")
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    let want = failures_of(truth);
    assert!(!want.is_empty(), "the world has failed jobs");
    if got != want {
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(v))
            .collect();
        panic!("failure classes differ from the truth\nmissing: {missing:#?}\nextra: {extra:#?}");
    }
    let failed: f64 = scrape
        .values("gitlab_ci_jobs_total")
        .iter()
        .filter(|(k, _)| k.get("status").is_some_and(|s| s == "failed"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        got.values().sum::<f64>(),
        failed,
        "every failed job classified once"
    );
}

/// Failed jobs of the watched projects completed inside the window, by id.
fn failed_jobs(rig: &Rig) -> Vec<u64> {
    let cutoff = rig.cutoff_ms.unwrap_or(0);
    let now = rig.sim.now_ms();
    rig.sim
        .world()
        .jobs()
        .iter()
        .filter(|j| IDS.contains(&j.project_id))
        .filter(|j| j.status_at(now) == Some("failed"))
        .filter(|j| j.finished_at(now).is_some_and(|f| f >= cutoff))
        .map(|j| j.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_class_count_equals_the_truth_across_a_restart() {
    let mut rig = Rig::start(world(31), T0 + HOUR, Some(classify())).await;
    rig.poll().await;
    rig.run(10).await;
    // Failures whose logs cannot be read this cycle (403: the token may not, for now): they
    // wait, each tried once.
    rig.sim.advance(Duration::from_secs(40 * 60));
    let before = rig.sim.trace_stats().requests;
    for id in IDS {
        rig.sim.set_trace_denied(id, true);
    }
    rig.poll().await;
    for id in IDS {
        rig.sim.set_trace_denied(id, false);
    }
    let refused = rig.sim.trace_stats().requests - before;
    let pending = rig.pending();
    assert!(pending > 0, "jobs wait for their class at the restart");
    rig.restart();
    assert_eq!(rig.pending(), pending, "the queue survives the restart");
    rig.run(20).await;
    rig.settle().await;
    let truth = rig.truth();
    assert_classes_match(&rig.scrape(), &truth);
    let classes = truth.failures_by_class();
    assert!(
        classes.len() >= 3,
        "several classes in the world: {classes:?}"
    );
    let traces = rig.sim.trace_stats();
    let failed = truth.total_failures();
    println!(
        "trace requests per failed job: {:.3} ({} requests, {failed} failed jobs, {refused} refused on purpose)",
        traces.requests as f64 / failed as f64,
        traces.requests,
    );
    // One read per failed job, and one more for each read refused on purpose.
    assert_eq!(traces.requests, failed + refused, "{traces:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_faults_a_404_a_403_an_erased_and_a_too_large_log_get_their_classes() {
    let mut rig = Rig::start(world(32), T0 + HOUR, Some(classify())).await;
    rig.poll().await;
    rig.run(4).await;
    let failed = failed_jobs(&rig);
    assert!(failed.len() >= 4, "failed jobs in the window: {failed:?}");
    // Failures still to come: a log over max_log_bytes, a job whose log 404s, one erased.
    let (now, end) = (rig.sim.now_ms(), T0 + 3 * HOUR);
    let later: Vec<u64> = rig
        .sim
        .world()
        .jobs()
        .iter()
        .filter(|j| IDS.contains(&j.project_id) && j.finished_at(now).is_none())
        .filter(|j| j.status_at(end) == Some("failed"))
        .map(|j| j.id)
        .collect();
    assert!(later.len() >= 3, "failed jobs still to come: {later:?}");
    rig.sim.set_log_size(later[0], MAX_LOG + 1).expect("job");
    rig.sim
        .set_trace_fault(later[1], Some(TraceFault::NotFound));
    rig.sim.erase_log(later[2]).expect("job");
    // Transient faults on the trace endpoint: retried, never a wrong class.
    for f in [
        TraceFault::Fault(Fault::ServerError(502)),
        TraceFault::CutAfter(100),
        TraceFault::Fault(Fault::RateLimitedJson),
        TraceFault::Forbidden,
    ] {
        rig.sim.push_trace_fault(f);
    }
    rig.run(30).await;
    rig.settle().await;
    let truth = rig.truth();
    assert_classes_match(&rig.scrape(), &truth);
    assert!(
        truth.failures_with_class("log_too_large") >= 1,
        "{:?}",
        truth.failures_by_class()
    );
    assert!(
        truth.failures_with_class("unavailable") >= 2,
        "{:?}",
        truth.failures_by_class()
    );
    // The unreadable ones were tried a few times, no more.
    let stats = rig.sim.trace_stats();
    assert!(stats.max_per_job() <= 3 + 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifying_off_requests_no_log_and_shows_no_class() {
    let mut rig = Rig::start(world(33), T0 + HOUR, None).await;
    rig.poll().await;
    rig.run(10).await;
    rig.settle().await;
    let scrape = rig.scrape();
    common::assert_matches_truth(&scrape, &rig.truth());
    assert_eq!(rig.sim.trace_stats().requests, 0);
    assert!(scrape.values("gitlab_ci_job_failures_total").is_empty());
    // No family at all (its series count, `gitlab_jobs_exporter_series`, says 0).
    assert!(!scrape.text.contains("# TYPE gitlab_ci_job_failures_total"));
    assert!(!scrape.text.contains("gitlab_ci_job_failures_total{"));
    assert!(
        scrape
            .text
            .contains(r#"gitlab_jobs_exporter_series{metric="gitlab_ci_job_failures_total"} 0"#)
    );
}

/// Through the configuration and the scheduler (`[failures] classify = true`, webhooks on):
/// the same exactness, and a project whose hooks arrive is still polled at the normal pace
/// while failed jobs wait for their class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_classifies_from_the_configuration() {
    use gitlab_sim::LogLimits;
    let mut h = common::Harness::start_with(
        world(34),
        T0 + HOUR,
        IDS.map(by_id).to_vec(),
        Duration::from_secs(3600),
        |cfg| {
            cfg.failures.classify = true;
            common::with_webhooks(cfg);
        },
    )
    .await;
    // The exporter's defaults: 64 KiB tails, 32 MiB at most.
    h.sim.set_log_limits(LogLimits::default());
    h.poll().await;
    for _ in 0..10 {
        h.sim.advance(Duration::from_secs(120));
        h.poll().await;
    }
    h.settle().await;
    let truth = h.truth();
    assert_classes_match(&h.scrape().await, &truth);
    let scrape = h.scrape().await;
    let requests = scrape.values("gitlab_jobs_exporter_api_requests_total");
    let traces: f64 = requests
        .iter()
        .filter(|(k, _)| k.get("endpoint").is_some_and(|e| e == "trace"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        traces,
        truth.total_failures() as f64,
        "one trace request per failed job"
    );
    h.stop().await;
}
