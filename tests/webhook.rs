//! `POST /webhook` over real HTTP: what GitLab may send, and what a forger, a broken proxy or
//! another GitLab may send instead. Nothing but a valid, authenticated Job Hook of a watched
//! project changes a number; every delivery is answered at once and counted.

mod common;

use std::time::Duration;

use common::{HOOK_SECRET, Harness, assert_matches_truth, by_id, by_path, until, with_webhooks};
use gitlab_sim::{HookKnobs, HookSender, Ms, ProjectSpec, World, WorldSpec};

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const T0: Ms = 1_790_000_000_000;
const WAIT: Duration = Duration::from_secs(20);

fn world() -> World {
    let projects = vec![
        ProjectSpec {
            id: 11,
            path: "acme/platform/api".into(),
            pipelines_per_hour: 10.0,
        },
        ProjectSpec {
            id: 12,
            path: "acme/web/frontend".into(),
            pipelines_per_hour: 6.0,
        },
    ];
    World::generate(&WorldSpec::new(projects, T0, T0 + 3 * HOUR), 7)
}

/// GitLab's sample Job Hook about job `job` of project `project`, now `status`.
fn hook(project: u64, job: u64, status: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/webhook_job.json")).expect("fixture");
    v["project_id"] = project.into();
    v["build_id"] = job.into();
    v["build_status"] = status.into();
    v["build_name"] = "hooked".into();
    v.to_string()
}

/// The exporter with webhooks on, watching project 11 by path and 12 by id, not polled yet.
async fn unpolled() -> Harness {
    Harness::start_with(
        world(),
        T0 + HOUR,
        vec![by_path("acme/platform/api"), by_id(12)],
        Duration::from_secs(3600),
        with_webhooks,
    )
    .await
}

/// [`unpolled`], after its first poll.
async fn start() -> Harness {
    let mut h = unpolled().await;
    h.poll().await;
    h
}

const AUTH: (&str, &str) = ("x-gitlab-token", HOOK_SECRET);
const JOB_EVENT: (&str, &str) = ("x-gitlab-event", "Job Hook");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_malformed_oversized_and_foreign_deliveries_change_nothing() {
    let h = start().await;
    let truth = h.truth();
    assert_matches_truth(&h.scrape().await, &truth);
    let good = hook(11, 900_000_001, "success");

    // Forged or missing secret: 401, never applied.
    let forged = ("x-gitlab-token", "hook-SECRET-a1b2c3d5");
    assert_eq!(h.post_hook(good.clone(), &[forged, JOB_EVENT]).await.0, 401);
    assert_eq!(h.post_hook(good.clone(), &[JOB_EVENT]).await.0, 401);
    let prefix = ("x-gitlab-token", &HOOK_SECRET[..HOOK_SECRET.len() - 1]);
    assert_eq!(h.post_hook(good.clone(), &[prefix, JOB_EVENT]).await.0, 401);
    // Other methods.
    let (status, _, _) = h.get("/webhook").await;
    assert_eq!(status, 405);
    // Over 1 MiB.
    let big = format!(
        "{{\"object_kind\":\"build\",\"x\":\"{}\"}}",
        "a".repeat(1 << 20)
    );
    assert_eq!(h.post_hook(big, &[AUTH, JOB_EVENT]).await.0, 413);
    // Not JSON; JSON without what a Job Hook needs; a job id beyond GitLab's range.
    assert_eq!(
        h.post_hook("{\"object_kind\":", &[AUTH, JOB_EVENT]).await.0,
        400
    );
    assert_eq!(
        h.post_hook("{\"object_kind\":\"build\"}", &[AUTH, JOB_EVENT])
            .await
            .0,
        400
    );
    let huge_id = good.replace("900000001", "18446744073709551615");
    assert_eq!(h.post_hook(huge_id, &[AUTH, JOB_EVENT]).await.0, 400);
    // Another project's (not watched here), and an event type not used: 200, counted.
    let foreign = hook(4242, 900_000_002, "failed");
    assert_eq!(h.post_hook(foreign, &[AUTH, JOB_EVENT]).await.0, 200);
    let pipeline = include_str!("fixtures/webhook_pipeline.json");
    let event = ("x-gitlab-event", "Pipeline Hook");
    assert_eq!(h.post_hook(pipeline, &[AUTH, event]).await.0, 200);

    until("the foreign event is counted", WAIT, || async {
        (h.hook_events("job", "unwatched").await == 1.0).then_some(())
    })
    .await;
    assert_eq!(h.hook_events("job", "rejected").await, 3.0);
    assert_eq!(
        h.hook_events("other", "malformed").await + h.hook_events("job", "malformed").await,
        4.0
    );
    assert_eq!(h.hook_events("pipeline", "ignored").await, 1.0);
    assert_eq!(h.hook_events("job", "applied").await, 0.0);
    let scrape = h.scrape().await;
    assert_matches_truth(&scrape, &truth);
    let (_, _, page) = h.get("/metrics").await;
    assert!(!page.contains("4242"), "a series for the foreign project");
    assert!(!page.contains(HOOK_SECRET), "the secret on /metrics");

    // The genuine event is applied once, however often it comes.
    let key = ("idempotency-key", "6a5f2c1e-0000-4000-8000-000000000001");
    for _ in 0..3 {
        assert_eq!(
            h.post_hook(good.clone(), &[AUTH, JOB_EVENT, key]).await.0,
            200
        );
    }
    assert_eq!(h.post_hook(good.clone(), &[AUTH, JOB_EVENT]).await.0, 200);
    until("the hooks are applied", WAIT, || async {
        (h.hook_events("job", "duplicate").await == 3.0).then_some(())
    })
    .await;
    assert_eq!(h.hook_events("job", "applied").await, 1.0);
    let hooked = h
        .scrape()
        .await
        .values("gitlab_ci_jobs_total")
        .into_iter()
        .filter(|(l, _)| l.get("job").map(String::as_str) == Some("hooked"))
        .map(|(l, v)| (l["project"].clone(), l["status"].clone(), v))
        .collect::<Vec<_>>();
    assert_eq!(
        hooked,
        [("acme/platform/api".into(), "success".into(), 1.0)]
    );
    let receiving = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_webhook_projects");
    assert_eq!(
        receiving
            .iter()
            .find(|(l, _)| l["state"] == "receiving")
            .map(|(_, v)| *v),
        Some(1.0)
    );
    h.stop().await;
}

/// Sends every hook due by now and waits until the exporter has dealt with all sent so far.
async fn deliver(h: &Harness, hooks: &HookSender) {
    hooks.deliver_due().await;
    let sent = hooks.stats().sent as f64;
    until("every hook delivered is applied", WAIT, || async {
        (h.hooks_handled().await >= sent).then_some(())
    })
    .await;
    let stats = hooks.stats();
    assert_eq!(stats.failed, 0, "{stats:?}");
    assert!(stats.by_status.keys().all(|s| *s == 200), "{stats:?}");
}

fn sender(h: &Harness, knobs: HookKnobs) -> HookSender {
    HookSender::new(
        &h.sim,
        &format!("{}/webhook", h.metrics_url),
        HOOK_SECRET,
        knobs,
    )
    .expect("hook sender")
}

/// Hooks alone (polls every 2 simulated minutes) keep every counter, histogram and active
/// gauge equal to the truth at every moment, not just after a poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_alone_keep_every_number_exact_between_polls() {
    let mut h = start().await;
    let hooks = sender(&h, HookKnobs::default());
    let mut checked = 0;
    for step in 1..=240 {
        h.sim.advance(Duration::from_secs(5));
        deliver(&h, &hooks).await;
        if step % 24 == 0 {
            h.poll().await;
        }
        if step % 6 == 0 {
            assert_matches_truth(&h.scrape().await, &h.truth());
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
    let stats = hooks.stats();
    assert!(stats.generated > 100, "{stats:?}");
    assert!(h.hook_events("job", "applied").await > 100.0);
    // Hooks counted the jobs: the polls found nothing they had missed.
    let missed: f64 = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_webhook_missed_total")
        .values()
        .sum();
    assert_eq!(missed, 0.0);
    h.stop().await;
}

/// 30% of hooks dropped, 15% sent twice, each up to 1 s late (so reordered): after a
/// reconciliation poll every number equals the truth, and the polls counted what was missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_repeated_and_late_hooks_are_reconciled_by_polls() {
    let mut h = start().await;
    let knobs = HookKnobs {
        drop: 0.3,
        duplicate: 0.15,
        max_delay: Duration::from_secs(1),
        seed: 11,
        ..HookKnobs::default()
    };
    let hooks = sender(&h, knobs);
    for step in 1..=360 {
        h.sim.advance(Duration::from_millis(2500));
        deliver(&h, &hooks).await;
        if step % 48 == 0 {
            h.poll().await;
        }
    }
    h.sim.advance(Duration::from_secs(2));
    deliver(&h, &hooks).await;
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    let stats = hooks.stats();
    assert!(stats.dropped >= 20 && stats.duplicated >= 5, "{stats:?}");
    assert!(h.hook_events("job", "duplicate").await >= stats.duplicated as f64);
    let missed: f64 = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_webhook_missed_total")
        .values()
        .sum();
    assert!(missed > 0.0, "polls found what hooks missed");
    h.stop().await;
}

/// Hooks that arrive before the first poll, while its backfill runs, and after: each job is
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_before_during_and_after_the_first_backfill_count_each_job_once() {
    let mut h = unpolled().await;
    let hooks = sender(&h, HookKnobs::default());
    // Before: ten minutes of hooks, no poll yet (project 11 is configured by path and not
    // looked up: its hooks find it by path).
    for _ in 0..120 {
        h.sim.advance(Duration::from_secs(5));
        deliver(&h, &hooks).await;
    }
    assert!(h.hook_events("job", "applied").await > 0.0);
    // Both found: by path (11) and by id (12), neither looked up yet.
    assert_eq!(h.hook_events("job", "unwatched").await, 0.0);
    // 12's path is not known before its lookup: its hooks wait for its first poll (whose
    // backfill counts their jobs), no series goes out under a placeholder such as "id 12".
    assert!(h.hook_events("job", "dropped").await > 0.0);
    let (_, _, page) = h.get("/metrics").await;
    assert!(!page.contains("id 12"), "{page}");
    assert!(!page.contains("acme/web/frontend"), "{page}");
    // During: the backfill's requests are slowed down while more hooks arrive.
    h.sim.advance(Duration::from_secs(60));
    for _ in 0..4 {
        h.sim
            .push_fault(gitlab_sim::Fault::Delay(Duration::from_millis(200)));
    }
    let (_, ()) = tokio::join!(h.poll(), async {
        hooks.deliver_due().await;
    });
    deliver(&h, &hooks).await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    // After.
    for step in 1..=120 {
        h.sim.advance(Duration::from_secs(5));
        deliver(&h, &hooks).await;
        if step % 24 == 0 {
            h.poll().await;
        }
    }
    assert_matches_truth(&h.scrape().await, &h.truth());
    h.settle().await;
    assert_matches_truth(&h.scrape().await, &h.truth());
    h.stop().await;
}
