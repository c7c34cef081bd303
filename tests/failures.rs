//! Refusals and disappearances: a missing project, a rejected token, and a rate-limit window
//! during which no request is sent.

mod common;

use std::time::Duration;

use common::{Harness, assert_matches_truth, by_path};
use gitlab_sim::{Fault, Ms, ProjectSpec, World, WorldSpec};

const T0: Ms = 1_790_000_000_000;
const HOUR: Ms = 3_600_000;

fn world() -> World {
    let spec = WorldSpec::new(
        vec![
            ProjectSpec {
                id: 31,
                path: "acme/platform/api".into(),
                pipelines_per_hour: 10.0,
            },
            ProjectSpec {
                id: 32,
                path: "tools/cli".into(),
                pipelines_per_hour: 4.0,
            },
        ],
        T0,
        T0 + 3 * HOUR,
    );
    World::generate(&spec, 21)
}

fn state_of(scrape: &common::Scrape, project: &str) -> String {
    scrape
        .values("gitlab_jobs_exporter_project_state")
        .into_iter()
        .filter(|(l, v)| l.get("project").map(String::as_str) == Some(project) && *v == 1.0)
        .map(|(l, _)| l.get("state").cloned().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_project_is_reported_and_does_not_block_the_others() {
    let h = Harness::start(
        world(),
        T0 + 2 * HOUR,
        vec![
            by_path("acme/platform/api"),
            by_path("acme/gone"),
            by_path("tools/cli"),
        ],
        Duration::from_secs(3600),
    )
    .await;
    let results = h.scheduler.poll_all_once().await;
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = results[1].as_ref().expect_err("404");
    assert!(err.to_string().contains("404"), "{err}");
    // A configured project never found (a wrong path, id or gitlab.url) holds readiness back:
    // an exporter that finds none of its projects must not look like one at work.
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("2 of 3"), "{body}");
    let scrape = h.scrape().await;
    assert_eq!(state_of(&scrape, "acme/gone"), "not_found");
    assert_eq!(state_of(&scrape, "acme/platform/api"), "ok");
    // Never found: a wrong path, still among those never polled (and alerted on).
    assert_eq!(never_polled(&scrape), Some(1.0));
    // It is looked up again: once it exists, it is polled and readiness follows.
    h.sim
        .add_project(gitlab_sim::ProjectDef::new(33, "acme/gone"))
        .expect("new project");
    let results = h.scheduler.poll_all_once().await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(state_of(&h.scrape().await, "acme/gone"), "ok");
    h.stop().await;
}

/// A project deleted after it was polled: no longer polled, and it does not hold readiness.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_deleted_after_its_first_poll_is_no_longer_polled() {
    let mut h = Harness::start(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api"), by_path("tools/cli")],
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    assert_eq!(h.scheduler.watched(), 2);
    h.sim.remove_project(32).expect("project exists");
    let results = h.scheduler.poll_all_once().await;
    assert!(results.iter().filter(|r| r.is_err()).count() == 1);
    let scrape = h.scrape().await;
    assert_eq!(state_of(&scrape, "tools/cli"), "not_found");
    assert_eq!(h.scheduler.watched(), 1, "no longer polled");
    let (status, _, body) = h.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    h.stop().await;
}

fn never_polled(scrape: &common::Scrape) -> Option<f64> {
    scrape
        .values("gitlab_jobs_exporter_projects_never_polled")
        .values()
        .copied()
        .next()
}

/// A project found, whose jobs GitLab then refuses (CI disabled: 403) or no longer has (404),
/// shows in `project_state`; it must not also keep `projects_never_polled` (and its alert)
/// up for good. One project per exporter: the simulator's faults go to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_refused_or_gone_after_their_lookup_are_not_never_polled() {
    for (fault, state) in [
        (Fault::Forbidden, "forbidden"),
        (
            Fault::Raw {
                status: 404,
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: br#"{"message":"404 Project Not Found"}"#.to_vec(),
            },
            "not_found",
        ),
    ] {
        let h = Harness::start(
            world(),
            T0 + 2 * HOUR,
            vec![by_path("acme/platform/api")],
            Duration::from_secs(3600),
        )
        .await;
        assert_eq!(never_polled(&h.scrape().await), Some(1.0), "from the start");
        // The lookup is answered normally, the job listing after it is not.
        h.sim.push_fault(Fault::Delay(Duration::ZERO));
        h.sim.push_fault(fault);
        let results = h.scheduler.poll_all_once().await;
        assert!(results[0].is_err(), "{results:?}");
        let scrape = h.scrape().await;
        assert_eq!(state_of(&scrape, "acme/platform/api"), state);
        assert_eq!(never_polled(&scrape), Some(0.0), "{state}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_keeps_the_last_metrics_and_recovers() {
    let mut h = Harness::start_with(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
        |_| {},
    )
    .await;
    h.poll().await;
    let before = h.scrape().await.values("gitlab_ci_jobs_total");
    assert!(!before.is_empty());
    h.sim.advance(Duration::from_secs(600));
    h.sim.push_fault(Fault::ExpiredToken);
    let results = h.scheduler.poll_all_once().await;
    let err = results[0].as_ref().expect_err("401");
    assert!(err.to_string().contains("Token is expired"), "{err}");
    assert!(
        !err.to_string().contains(common::TOKEN) && !format!("{err:?}").contains(common::TOKEN)
    );
    let scrape = h.scrape().await;
    assert_eq!(state_of(&scrape, "acme/platform/api"), "unauthorized");
    assert_eq!(
        scrape.values("gitlab_ci_jobs_total"),
        before,
        "last metrics kept"
    );
    // The token works again (renewed): nothing is lost.
    h.sim.push_fault(Fault::Forbidden);
    assert!(h.scheduler.poll_all_once().await[0].is_err());
    assert_eq!(
        state_of(&h.scrape().await, "acme/platform/api"),
        "forbidden"
    );
    h.settle().await;
    let scrape = h.scrape().await;
    assert_eq!(state_of(&scrape, "acme/platform/api"), "ok");
    assert_matches_truth(&scrape, &h.truth_for(&["acme/platform/api"]));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_sent_during_a_retry_after_window() {
    // One request at a time, so none is already on the wire when the 429 arrives.
    let mut h = Harness::start_with(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api"), by_path("tools/cli")],
        Duration::from_secs(3600),
        |cfg| cfg.poll.concurrency = 1,
    )
    .await;
    h.poll().await;
    h.sim.reset_requests();
    h.sim.advance(Duration::from_secs(60));
    h.sim.push_fault(Fault::RateLimitedText {
        retry_after_secs: 2,
    });
    h.poll().await;
    let log = h.sim.request_log();
    let limited = log
        .iter()
        .position(|r| r.status == 429)
        .expect("one 429 answered");
    let wall = |r: &gitlab_sim::LoggedRequest| r.wall;
    let window_end = wall(&log[limited]) + Duration::from_secs(2);
    for r in &log[limited + 1..] {
        assert!(
            wall(r) >= window_end,
            "request {} sent inside the Retry-After window",
            r.path_and_query
        );
    }
    assert!(log.len() > limited + 1, "requests resumed after the window");
    let paused = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_rate_limited_seconds_total");
    let paused: f64 = paused.values().sum();
    assert!(paused >= 2.0, "pause exported: {paused}");
    assert_matches_truth(&h.scrape().await, &h.truth());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_body_is_a_counted_transport_error_and_retried() {
    let mut h = Harness::start(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    h.sim.advance(Duration::from_secs(120));
    h.sim.push_fault(Fault::ConnectionReset);
    h.poll().await;
    let errors = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_api_errors_total");
    let transport: f64 = errors
        .iter()
        .filter(|(l, _)| l.get("kind").map(String::as_str) == Some("transport"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(transport, 1.0, "{errors:?}");
    assert_matches_truth(&h.scrape().await, &h.truth_for(&["acme/platform/api"]));
    h.stop().await;
}
