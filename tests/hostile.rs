//! A hostile GitLab (the simulator's hostile mode): bad items, unreadable or looping `Link`
//! headers, project listings that never end. The exporter stays up, bounded and ready, and
//! counts what it met in `api_errors_total{kind}`.

mod common;

use std::time::Duration;

use common::{Harness, assert_matches_truth, by_path};
use gitlab_jobs_exporter::config::{Config, GroupRef};
use gitlab_sim::{Endpoint, Hostile, Ms, ProjectSpec, World, WorldSpec};

const T0: Ms = 1_790_000_000_000;
const HOUR: Ms = 3_600_000;

fn world() -> World {
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 31,
            path: "acme/platform/api".into(),
            pipelines_per_hour: 10.0,
        }],
        T0,
        T0 + 3 * HOUR,
    );
    World::generate(&spec, 21)
}

fn errors(scrape: &common::Scrape, kind: &str) -> f64 {
    scrape
        .values("gitlab_jobs_exporter_api_errors_total")
        .iter()
        .filter(|(l, _)| l.get("kind").map(String::as_str) == Some(kind))
        .map(|(_, v)| v)
        .sum()
}

fn discover_acme(cfg: &mut Config) {
    cfg.groups.push(GroupRef {
        path: Some("acme".into()),
        id: None,
        include_subgroups: true,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_are_skipped_counted_and_readiness_comes() {
    let mut h = Harness::start(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
    )
    .await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    h.sim.add_hostile(Hostile::JobsExtraItems(vec![
        b"{\"id\": 1, \"status\": \"success\", \"name\": \"\\ud800\"}".to_vec(),
        br#"{"id": 2, "status": "success", "duration": 1e400}"#.to_vec(),
        format!(r#"{{"id": 3, "status": "success", "runner": {deep}}}"#).into_bytes(),
        b"{\"status\": \"\xff\xfe\"}".to_vec(),
    ]));
    h.poll().await;
    let (status, _, _) = h.get("/readyz").await;
    assert_eq!(status, 200);
    h.sim.advance(Duration::from_secs(120));
    h.poll().await;
    let scrape = h.scrape().await;
    let bad = errors(&scrape, "bad_job");
    assert!(bad >= 8.0 && bad % 4.0 == 0.0, "4 per page read: {bad}");
    assert_matches_truth(&scrape, &h.truth());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_that_leave_the_api_or_loop_are_counted() {
    let h = Harness::start_with(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
        discover_acme,
    )
    .await;
    let ext = h.sim.external_url();
    // A group listing whose Link always names the same page.
    h.sim.add_hostile(Hostile::ListLink(Some(
        format!("<{ext}/api/v4/groups/acme/projects?page=1&per_page=100>; rel=\"next\"")
            .into_bytes(),
    )));
    let stats = h.scheduler.discover().await;
    assert!(!stats.complete);
    let scrape = h.scrape().await;
    assert_eq!(errors(&scrape, "pagination_loop"), 1.0);
    assert_eq!(errors(&scrape, "discovery"), 1.0);
    // A job listing whose Link leaves /api/v4: the cycle fails, counted as `link`.
    h.sim.clear_hostile();
    h.sim.add_hostile(Hostile::ListLink(Some(
        format!("<{ext}/admin/users?page=2>; rel=\"next\"").into_bytes(),
    )));
    let results = h.scheduler.poll_all_once().await;
    assert!(results.iter().any(Result::is_err));
    assert!(errors(&h.scrape().await, "link") >= 1.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_listings_are_bounded_per_page_and_in_all() {
    let h = Harness::start_with(
        world(),
        T0 + 2 * HOUR,
        Vec::new(),
        Duration::from_secs(3600),
        |cfg| {
            discover_acme(cfg);
            cfg.limits.max_projects = 1_000;
        },
    )
    .await;
    // Far more items than asked for: refused, the pass incomplete, nothing added.
    h.sim.add_hostile(Hostile::ProjectFlood { per_page: 5_000 });
    let stats = h.scheduler.discover().await;
    assert!(!stats.complete && stats.found == 0, "{stats:?}");
    assert_eq!(h.sim.requests().group_projects, 1, "not retried");
    let scrape = h.scrape().await;
    assert_eq!(errors(&scrape, "page_too_long"), 1.0);
    // Pages of the size asked for, with a next page forever: the cap ends the pass.
    h.sim.clear_hostile();
    h.sim.reset_requests();
    h.sim.add_hostile(Hostile::ProjectFlood { per_page: 100 });
    let stats = h.scheduler.discover().await;
    assert_eq!(stats.found, 1_000, "{stats:?}");
    assert!(h.sim.requests().group_projects <= 11);
    assert!(h.scheduler.watched() <= 1_000);
    let scrape = h.scrape().await;
    let reached = scrape.values("gitlab_jobs_exporter_project_limit_reached");
    assert_eq!(reached.values().sum::<f64>(), 1.0, "{reached:?}");
    h.stop().await;
}

/// A GitLab that sends an unusable `Link` on every page: a cycle that needs no page after a
/// full one (an idle or steady project, its new jobs all on the top page) goes on as usual;
/// only a cycle that needs the page after would fail. Counted as `link` all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_link_on_a_full_page_fails_only_a_cycle_that_needs_the_next_page() {
    let mut h = Harness::start(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
    )
    .await;
    h.poll().await;
    let first = h.scrape().await;
    assert_matches_truth(&first, &h.truth());
    let failed = |s: &common::Scrape| -> f64 {
        s.values("gitlab_jobs_exporter_poll_errors_total")
            .values()
            .sum()
    };
    let failed_before = failed(&first);
    h.sim
        .add_hostile(Hostile::ListLink(Some(b"<garbage".to_vec())));
    for _ in 0..6 {
        h.sim.advance(Duration::from_secs(30));
        let stats = h.poll().await;
        assert!(
            stats.iter().all(|s| s.pages == 1),
            "one top page each cycle: {stats:?}"
        );
    }
    let scrape = h.scrape().await;
    assert!(
        errors(&scrape, "link") >= 6.0,
        "every full page counted: {}",
        errors(&scrape, "link")
    );
    assert_eq!(failed(&scrape), failed_before, "no cycle failed");
    assert_matches_truth(&scrape, &h.truth());
    h.stop().await;
}

/// A GitLab older than 17.0 answers 400 to the newer statuses in `scope[]`: the first listing
/// asks again with the older list (within the same cycle, the refusal not counted against the
/// listing's pages), and the project keeps to it from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_before_17_is_listed_with_the_older_statuses() {
    let mut h = Harness::start(
        world(),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api")],
        Duration::from_secs(3600),
    )
    .await;
    h.sim.add_hostile(Hostile::ScopesBefore17);
    for _ in 0..4 {
        h.sim.advance(Duration::from_secs(60));
        h.poll().await;
    }
    let scoped: Vec<_> = (h.sim.request_log().into_iter())
        .filter(|r| r.endpoint == Endpoint::JobsScoped)
        .collect();
    let refused = scoped.iter().filter(|r| r.status == 400).count();
    assert_eq!(refused, 1, "one refusal, then the older list: {scoped:#?}");
    let served: Vec<_> = scoped.iter().filter(|r| r.status == 200).collect();
    assert!(!served.is_empty(), "{scoped:#?}");
    for r in served {
        let q = &r.path_and_query;
        assert!(
            !q.contains("waiting_for_callback") && !q.contains("canceling"),
            "{q}"
        );
    }
    let scrape = h.scrape().await;
    let failed: f64 = scrape
        .values("gitlab_jobs_exporter_poll_errors_total")
        .values()
        .sum();
    assert_eq!(failed, 0.0, "no cycle failed");
    assert_matches_truth(&scrape, &h.truth());
    h.stop().await;
}
