//! Tests through real HTTP requests against a spawned simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

const TOKEN: &str = "sim-secret-token";
/// 2025-11-24T16:00:00Z
const T0: Ms = 1_764_000_000_000;
const S: Ms = 1000;
const EXT: &str = "https://gitlab.example.com";
const P42: &str = "/api/v4/projects/42";

/// Project 42 at `T0 + 120 s` holds one job in each interesting state. Each line:
/// `id project name second:status…`.
fn scripted() -> World {
    let spec = [
        "1001 42 build 0:created 1:pending 3:running 63:success",
        "1002 42 rspec 10:created 11:pending 12:running 30:failed",
        "1003 42 rspec2 20:created 20:pending",
        "1004 42 lint 25:created 26:pending 30:running",
        "1005 42 approve 40:created 40:waiting_for_approval",
        "1006 42 deploy 45:created 46:pending 50:canceled",
        "1007 42 docs 50:created 55:skipped",
        "1008 7 build 60:created 61:pending 62:running 70:success",
        "1009 42 unborn 90:created 95:failed",
        "1010 42 future 3600:created",
    ];
    let jobs = spec.iter().map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().expect("number");
        let timeline: Vec<(Ms, &str)> = (f[3..].iter())
            .filter_map(|e| e.split_once(':'))
            .map(|(t, s)| (T0 + num(t) as Ms * S, s))
            .collect();
        let mut job = JobPlan::new(
            num(f[0]),
            num(f[1]),
            500 + num(f[0]) / 4,
            f[2],
            "test",
            &timeline,
        );
        job.failure_reason = (f[2] == "rspec").then(|| "script_failure".into());
        job
    });
    let projects = vec![
        ProjectDef::new(42, "group/sub/project"),
        ProjectDef::new(7, "o/p"),
    ];
    World::new(projects, jobs.collect()).expect("valid scripted world")
}

fn generated(projects: u64, rate: f64, hours: i64, seed: u64) -> World {
    let spec = WorldSpec::uniform(projects, rate, T0, T0 + hours * 3600 * S);
    World::generate(&spec, seed)
}

async fn start(world: World, now: Ms) -> (Simulator, SimHandle) {
    let sim = Simulator::new(world, SimClock::manual(now), TOKEN.into());
    let handle = sim.spawn().await.expect("spawn simulator");
    (sim, handle)
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("json body")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    fn ids(&self) -> Vec<u64> {
        let jobs = self.json().as_array().cloned().expect("array");
        jobs.iter().map(|j| j["id"].as_u64().expect("id")).collect()
    }

    /// `path?query` of the `rel="next"` link, checking it points at the external URL `ext`.
    fn next(&self, ext: &str) -> Option<String> {
        let link = self.header("link")?;
        let url = link.strip_prefix('<')?.strip_suffix(">; rel=\"next\"")?;
        assert!(url.starts_with(&format!("{ext}/api/v4/")), "{url}");
        Some(url[ext.len()..].to_owned())
    }
}

async fn get_with(h: &SimHandle, path: &str, auth: Option<(&str, &str)>) -> Got {
    // reqwest is built without a default TLS provider and refuses to build a client without one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut req = client.get(format!("{}{path}", h.base_url));
    if let Some((name, value)) = auth {
        req = req.header(name, value);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Got {
        status,
        headers,
        body: resp.text().await.expect("body"),
    }
}

async fn get(h: &SimHandle, path: &str) -> Got {
    get_with(h, path, Some(("PRIVATE-TOKEN", TOKEN))).await
}

/// Follows keyset pages from `first`, returning every job object.
async fn all_pages(h: &SimHandle, first: &str) -> Vec<Value> {
    let (mut jobs, mut next) = (Vec::new(), Some(first.to_owned()));
    while let Some(path) = next {
        let got = get(h, &path).await;
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        jobs.extend(got.json().as_array().cloned().expect("array"));
        next = got.next(EXT);
    }
    jobs
}

#[tokio::test]
async fn keyset_pages_chain_through_link_and_cover_every_job_once() {
    let now = T0 + 4 * 3600 * S;
    let (sim, h) = start(generated(2, 12.0, 6, 1), now).await;
    for (project, scope, query) in [
        (1, &[][..], "pagination=keyset&per_page=37"),
        (
            2,
            &[][..],
            "pagination=keyset&per_page=100&order_by=id&sort=desc",
        ),
        (
            1,
            &["success", "failed"][..],
            "pagination=keyset&scope[]=success&scope[]=failed",
        ),
        (
            2,
            &["pending"][..],
            "pagination=keyset&per_page=2&scope=pending",
        ),
    ] {
        let jobs = all_pages(&h, &format!("/api/v4/projects/{project}/jobs?{query}")).await;
        let ids: Vec<u64> = jobs.iter().map(|j| j["id"].as_u64().unwrap_or(0)).collect();
        let world = sim.world();
        let visible = world
            .project_jobs(project)
            .rev()
            .filter(|j| j.visible_at(now));
        let want: Vec<u64> = visible
            .filter(|j| scope.is_empty() || scope.contains(&j.status_at(now).unwrap_or("")))
            .map(|j| j.id)
            .collect();
        assert!(want.len() > 3, "{query}: too few jobs to page");
        assert_eq!(ids, want, "{query}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn keyset_link_matches_gitlab_format() {
    let (sim, h) = start(scripted(), T0 + 120 * S).await;
    let got = get(&h, &format!("{P42}/jobs?pagination=keyset&per_page=2")).await;
    assert_eq!(got.ids(), vec![1009, 1007]);
    let cursor = "eyJpZCI6IjEwMDciLCJfa2QiOiJuIn0%3D";
    let query = format!("cursor={cursor}&id=42&page=1&pagination=keyset&per_page=2");
    let want = format!("<{EXT}{P42}/jobs?{query}>; rel=\"next\"");
    assert_eq!(got.header("link"), Some(want.as_str()));
    for name in ["x-page", "x-next-page", "x-total", "x-total-pages"] {
        assert!(got.header(name).is_none(), "{name}");
    }
    // Encoded path, a string scope and an external URL with a port.
    sim.set_external_url("https://gl.internal:8443/");
    let path = "/api/v4/projects/group%2Fsub%2Fproject/jobs";
    let got = get(
        &h,
        &format!("{path}?scope=pending&pagination=keyset&per_page=1"),
    )
    .await;
    assert_eq!((got.status, got.ids()), (200, vec![1003]));
    assert!(got.header("link").is_none(), "single match: last page");
    let path = "/api/v4/projects/GROUP%2Fsub%2Fproject/jobs";
    let query = "scope[]=success&scope[]=failed&pagination=keyset&per_page=1";
    let got = get(&h, &format!("{path}?{query}")).await;
    assert_eq!(got.ids(), vec![1009]);
    let next = got.next("https://gl.internal:8443").expect("next link");
    let want = "?cursor=eyJpZCI6IjEwMDkiLCJfa2QiOiJuIn0%3D&id=GROUP%2Fsub%2Fproject&page=1\
                &pagination=keyset&per_page=1&scope%5B%5D=success&scope%5B%5D=failed";
    assert_eq!(next, format!("{path}{want}"));
    let got = get(&h, &next).await;
    assert_eq!(got.ids(), vec![1002]);
    assert!(got.header("link").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn scope_filters_and_unknown_status_matches_none() {
    let now = T0 + 120 * S;
    let (sim, h) = start(scripted(), now).await;
    let url = |q: &str| format!("{P42}/jobs?per_page=100&{q}");
    let running = get(&h, &url("scope[]=pending&scope[]=running")).await;
    assert_eq!(running.ids(), vec![1004, 1003]);
    assert_eq!(get(&h, &url("scope=skipped")).await.ids(), vec![1007]);
    let all = get(&h, &url("")).await.ids();
    assert_eq!(all, vec![1009, 1007, 1006, 1005, 1004, 1003, 1002, 1001]);
    let every: String = STATUSES.iter().map(|s| format!("scope[]={s}&")).collect();
    let scoped = get(&h, &url(&every)).await.ids();
    assert!(!scoped.contains(&1005), "unknown status matches no scope");
    assert_eq!(scoped.len(), 7);
    let world = sim.world();
    let unknown = world.job(1005).and_then(|j| j.status_at(now));
    assert_eq!(unknown, Some("waiting_for_approval"));
    let stats = sim.requests();
    assert_eq!((stats.jobs, stats.jobs_scoped), (1, 3));
    h.shutdown().await;
}

#[tokio::test]
async fn offset_pagination_headers() {
    let (_sim, h) = start(scripted(), T0 + 120 * S).await;
    let base = format!("{EXT}{P42}/jobs");
    let names = ["x-page", "x-per-page", "x-next-page", "x-prev-page"];
    let hdr = |g: &Got| {
        names
            .map(|n| g.header(n).unwrap_or("-").to_owned())
            .join(",")
    };
    let got = get(&h, &format!("{P42}/jobs?per_page=3")).await;
    assert_eq!(got.ids(), vec![1009, 1007, 1006]);
    assert_eq!(hdr(&got), "1,3,2,");
    assert!(got.header("x-total").is_none() && got.header("x-total-pages").is_none());
    let next = format!("<{base}?id=42&page=2&per_page=3>; rel=\"next\"");
    let first = format!("<{base}?id=42&page=1&per_page=3>; rel=\"first\"");
    assert_eq!(
        got.header("link"),
        Some(format!("{next}, {first}").as_str())
    );
    let got = get(&h, &format!("{P42}/jobs?per_page=3&page=3")).await;
    assert_eq!(got.ids(), vec![1002, 1001]);
    assert_eq!(hdr(&got), "3,3,,2");
    let link = got.header("link").unwrap_or("");
    assert!(link.contains("page=2&per_page=3>; rel=\"prev\""));
    assert!(!link.contains("next") && !link.contains("last"));
    let got = get(&h, &format!("{P42}/jobs")).await;
    assert_eq!(got.header("x-per-page"), Some("20"));
    h.shutdown().await;
}

#[tokio::test]
async fn per_page_is_clamped_to_100() {
    let (_sim, h) = start(generated(1, 30.0, 6, 2), T0 + 5 * 3600 * S).await;
    let got = get(&h, "/api/v4/projects/1/jobs?per_page=500").await;
    assert_eq!(
        (got.ids().len(), got.header("x-per-page")),
        (100, Some("100"))
    );
    let got = get(&h, "/api/v4/projects/1/jobs?per_page=500&pagination=keyset").await;
    assert_eq!(got.ids().len(), 100);
    assert!(got.next(EXT).is_some_and(|l| l.contains("per_page=500")));
    h.shutdown().await;
}

#[tokio::test]
async fn error_answers() {
    let (sim, h) = start(scripted(), T0 + 120 * S).await;
    let keyset = r#"{"error":"Keyset pagination is not yet available for this type of request"}"#;
    let scope = r#"{"error":"scope does not have a valid value"}"#;
    let no_project = r#"{"message":"404 Project Not Found"}"#;
    let no_job = r#"{"message":"404 Not found"}"#;
    let no_route = r#"{"error":"404 Not Found"}"#;
    let cases = [
        ("42/jobs?pagination=keyset&order_by=created_at", 405, keyset),
        ("42/jobs?pagination=keyset&sort=asc", 405, keyset),
        ("42/jobs?scope[]=pending&scope[]=bogus", 400, scope),
        ("42/jobs?scope=waiting_for_approval", 400, scope),
        (
            "42/jobs?pagination=keyset&cursor=%%%",
            400,
            r#"{"error":"cursor is invalid"}"#,
        ),
        (
            "42/jobs?per_page=lots",
            400,
            r#"{"error":"per_page is invalid"}"#,
        ),
        ("999/jobs", 404, no_project),
        ("nope%2Fnope", 404, no_project),
        ("42/jobs/4242", 404, no_job),
        ("42/jobs/1008", 404, no_job),
        ("42/jobs/1010", 404, no_job),
        ("42/jobs/abc", 400, r#"{"error":"job_id is invalid"}"#),
        ("42/pipelines", 404, no_route),
        ("../groups/1/issues", 404, no_route),
    ];
    for (path, status, body) in cases {
        let got = get(&h, &format!("/api/v4/projects/{path}")).await;
        assert_eq!((got.status, got.body.as_str()), (status, body), "{path}");
        assert_eq!(got.header("content-type"), Some("application/json"));
    }
    let path = format!("{P42}/jobs");
    let bearer = format!("Bearer {TOKEN}");
    let unauthorized = r#"{"message":"401 Unauthorized"}"#;
    let wrong = [
        ("PRIVATE-TOKEN", "wrong"),
        ("Authorization", "Bearer wrong"),
    ];
    for auth in [None, Some(wrong[0]), Some(wrong[1])] {
        let got = get_with(&h, &path, auth).await;
        assert_eq!((got.status, got.body.as_str()), (401, unauthorized));
    }
    let got = get_with(&h, &path, Some(("Authorization", &bearer))).await;
    assert_eq!(got.status, 200);
    let stats = sim.requests();
    assert_eq!((stats.by_status.get(&401), stats.other), (Some(&3), 2));
    h.shutdown().await;
}

#[tokio::test]
async fn project_endpoint_by_id_and_encoded_path() {
    let (_sim, h) = start(scripted(), T0 + 120 * S).await;
    for id in ["42", "group%2Fsub%2Fproject", "Group%2FSub%2FProject"] {
        let p = get(&h, &format!("/api/v4/projects/{id}")).await.json();
        assert_eq!(
            (p["id"].as_u64(), p["archived"].as_bool()),
            (Some(42), Some(false))
        );
        assert_eq!(p["path_with_namespace"], "group/sub/project");
        assert_eq!(p["default_branch"], "main");
        assert_eq!(p["web_url"], format!("{EXT}/group/sub/project"));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn date_header_follows_the_manual_clock() {
    let (sim, h) = start(scripted(), T0).await;
    let got = get(&h, P42).await;
    assert_eq!(got.header("date"), Some("Mon, 24 Nov 2025 16:00:00 GMT"));
    sim.advance(Duration::from_secs(3 * 3600 + 61));
    let got = get(&h, "/nowhere").await;
    assert_eq!(got.header("date"), Some("Mon, 24 Nov 2025 19:01:01 GMT"));
    h.shutdown().await;
}

#[tokio::test]
async fn durations_grow_live_and_freeze() {
    let (sim, h) = start(scripted(), T0 + 120 * S).await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        // running, pending, finished, canceled while pending, skipped
        for id in [1004, 1003, 1001, 1006, 1007] {
            let j = get(&h, &format!("{P42}/jobs/{id}")).await.json();
            seen.push((j["duration"].as_f64(), j["queued_duration"].as_f64()));
        }
        sim.advance(Duration::from_millis(60_500));
    }
    let want = [
        (Some(90.0), Some(4.0)),
        (None, Some(100.0)),
        (Some(60.0), Some(2.0)),
        (None, Some(74.0)),
        (None, None),
        (Some(150.5), Some(4.0)),
        (None, Some(160.5)),
        (Some(60.0), Some(2.0)),
        (None, Some(134.5)),
        (None, None),
    ];
    assert_eq!(seen, want);
    let done = get(&h, &format!("{P42}/jobs/1001")).await.json();
    assert_eq!(done["started_at"], "2025-11-24T16:00:03.000Z");
    assert_eq!(done["finished_at"], "2025-11-24T16:01:03.000Z");
    let skipped = get(&h, &format!("{P42}/jobs/1007")).await.json();
    assert!(skipped["finished_at"].is_null() && skipped["started_at"].is_null());
    h.shutdown().await;
}

#[tokio::test]
async fn job_json_shape_and_failure_reason_only_when_failed() {
    let (_sim, h) = start(scripted(), T0 + 120 * S).await;
    let jobs = get(&h, &format!("{P42}/jobs")).await.json();
    let jobs = jobs.as_array().cloned().unwrap_or_default();
    let keys = "id status stage name ref tag coverage allow_failure archived source created_at \
                started_at finished_at erased_at duration queued_duration artifacts \
                artifacts_expire_at tag_list pipeline runner runner_manager user commit web_url";
    for j in &jobs {
        assert_eq!(
            j.get("failure_reason").is_some(),
            j["status"] == "failed",
            "{}",
            j["id"]
        );
        for key in keys.split_whitespace() {
            assert!(j.get(key).is_some(), "{key}");
        }
        assert_eq!(j["project"]["ci_job_token_scope_enabled"], false);
        assert_eq!(
            j["runner"].is_null(),
            j["started_at"].is_null(),
            "runner once started"
        );
        assert_eq!(j["pipeline"]["project_id"], 42);
        assert!(j["web_url"].as_str().is_some_and(|u| u.starts_with(EXT)));
    }
    let by_id = |id: u64| {
        jobs.iter()
            .find(|j| j["id"] == id)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by_id(1002)["failure_reason"], "script_failure");
    assert_eq!(by_id(1009)["failure_reason"], "unknown_failure");
    assert_eq!(by_id(1004)["runner"]["runner_type"], "instance_type");
    assert_eq!(by_id(1001)["created_at"], "2025-11-24T16:00:00.000Z");
    h.shutdown().await;
}

#[test]
fn world_rejects_impossible_histories() {
    let p = || vec![ProjectDef::new(1, "a/b")];
    let job = |id, at| JobPlan::new(id, 1, 1, "x", "test", &[(at, "created")]);
    let new = |jobs| World::new(p(), jobs).err();
    assert_eq!(
        new(vec![job(2, 10), job(3, 5)]),
        Some(WorldError::IdOrder(3))
    );
    assert_eq!(
        new(vec![job(2, 10), job(2, 10)]),
        Some(WorldError::DuplicateJob(2))
    );
    let stray = JobPlan {
        project_id: 9,
        ..job(2, 1)
    };
    assert_eq!(new(vec![stray]), Some(WorldError::UnknownProject(2, 9)));
    let timeline = [(1, "created"), (2, "success"), (3, "running")];
    let after_final = JobPlan::new(4, 1, 1, "x", "test", &timeline);
    assert!(matches!(
        new(vec![after_final]),
        Some(WorldError::Timeline(4, _))
    ));
}

#[test]
fn generator_yields_every_case_and_is_deterministic() {
    let spec = WorldSpec::uniform(3, 12.0, T0, T0 + 6 * 3600 * S);
    let world = World::generate(&spec, 42);
    assert_eq!(world.jobs(), World::generate(&spec, 42).jobs());
    assert_ne!(world.jobs(), World::generate(&spec, 43).jobs());
    for p in 1..=3 {
        let n = world.project_jobs(p).count();
        assert!((200..=800).contains(&n), "project {p}: {n} jobs");
    }
    let (jobs, end) = (world.jobs(), Ms::MAX);
    let seq = |j: &JobPlan| {
        j.timeline
            .iter()
            .map(|e| e.1.as_str())
            .collect::<Vec<_>>()
            .join(">")
    };
    let ends = |j: &JobPlan, s| j.status_at(end) == Some(s);
    let has = |what: &str, f: &dyn Fn(&JobPlan) -> bool| assert!(jobs.iter().any(f), "no {what}");
    has("success", &|j| seq(j) == "created>pending>running>success");
    let reasons = "script_failure runner_system_failure stuck_or_timeout_failure \
                   job_execution_timeout some_future_reason";
    for reason in reasons.split_whitespace() {
        has(reason, &|j| {
            ends(j, "failed") && j.failure_reason.as_deref() == Some(reason)
        });
    }
    has("allowed failure", &|j| j.allow_failure && ends(j, "failed"));
    has("waiting_for_resource", &|j| {
        seq(j).contains("waiting_for_resource>pending>running")
    });
    has("preparing", &|j| {
        seq(j).contains("preparing>pending>running")
    });
    has("canceled while pending", &|j| {
        seq(j).ends_with("pending>canceled")
    });
    has("canceled while running", &|j| {
        seq(j).ends_with("running>canceling>canceled")
    });
    has("skipped", &|j| seq(j) == "created>skipped");
    has("manual forever", &|j| seq(j) == "created>manual");
    has("manual played", &|j| {
        seq(j).starts_with("created>manual>pending>running>")
    });
    has("scheduled", &|j| {
        seq(j) == "created>scheduled>pending>running>success"
    });
    has("stuck pending", &|j| {
        seq(j) == "created>pending" && j.created_at_ms < T0 + 3600 * S
    });
    has("unknown status", &|j| {
        seq(j).contains("waiting_for_approval>") && ends(j, "success")
    });
    has("waiting_for_callback", &|j| {
        seq(j).ends_with("waiting_for_callback>success")
    });
    has("left created", &|j| seq(j) == "created");
    // A job skipped 5 s or more after anything else in its pipeline last changed.
    let lone_late = |j: &JobPlan| {
        let Some(&(at, _)) = j.timeline.last().filter(|e| e.1 == "skipped") else {
            return false;
        };
        let siblings = world.pipeline_jobs(j.pipeline_id).filter(|o| o.id != j.id);
        let last = (siblings.flat_map(|o| o.timeline.iter().map(|e| e.0)))
            .filter(|t| *t <= at)
            .max();
        last.is_some_and(|t| at - t >= 5 * S)
    };
    has("lone late skip", &|j| {
        lone_late(j) && seq(j) == "created>skipped"
    });
    has("lone late skip through waiting_for_resource", &|j| {
        lone_late(j) && seq(j) == "created>waiting_for_resource>skipped"
    });
    let retry_of = |j: &JobPlan, r: &JobPlan| {
        r.pipeline_id == j.pipeline_id && r.name == j.name && r.created_at_ms > j.updated_at(end)
    };
    has("retried", &|j| {
        ends(j, "failed") && jobs.iter().any(|r| retry_of(j, r))
    });
    has("mr ref", &|j| j.ref_.starts_with("refs/merge-requests/"));
    has("tag", &|j| j.tag && j.ref_.starts_with("v1."));
    has("parallel", &|j| j.name == "rspec 3/3");
    // Ids: one global sequence growing with creation; every finished job done within 100 min.
    let id_order = |w: &[JobPlan]| w[0].id < w[1].id && w[0].created_at_ms <= w[1].created_at_ms;
    assert!(jobs.windows(2).all(id_order));
    assert!(jobs.windows(2).any(|w| w[0].project_id != w[1].project_id));
    for j in jobs {
        let took = j.finished_at(end).map(|f| f - j.created_at_ms);
        assert!(
            took.is_none_or(|t| t <= 100 * 60 * S),
            "job {} took too long",
            j.id
        );
        assert!(
            j.timeline.iter().rev().skip(1).all(|e| !is_final(&e.1)),
            "job {}",
            j.id
        );
    }
    let runs = jobs
        .iter()
        .filter_map(|j| j.finished_at(end).and(j.duration_ms(end)));
    assert!(
        runs.max().is_some_and(|d| d > 40 * 60 * S),
        "some long jobs"
    );
}

#[test]
fn generator_scales_to_a_thousand_projects() {
    let started = Instant::now();
    let world = generated(1000, 3.0, 1, 9);
    let (took, n) = (started.elapsed(), world.jobs().len());
    assert!((14_000..=28_000).contains(&n), "{n} jobs");
    assert!(took < Duration::from_secs(3), "generation took {took:?}");
    let demo = World::demo(T0);
    assert_eq!(demo.projects().len(), 5);
    assert!(demo.find_project("acme/platform/api").is_some());
}

#[tokio::test]
async fn ground_truth_agrees_with_the_listing() {
    let (now, cutoff) = (T0 + 5 * 3600 * S, T0 + 2 * 3600 * S);
    let (sim, h) = start(generated(2, 15.0, 8, 3), now).await;
    let truth = sim.ground_truth(cutoff);
    let (mut totals, mut active, mut oldest) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut durations = 0;
    let time = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for p in sim.world().projects() {
        let path = &p.path_with_namespace;
        let first = format!(
            "/api/v4/projects/{}/jobs?pagination=keyset&per_page=100",
            p.id
        );
        for j in all_pages(&h, &first).await {
            let status = text(&j["status"]);
            if !is_final(&status) {
                *active.entry((path.clone(), status.clone())).or_insert(0) += 1;
                if status == "pending" {
                    let queued = now as f64 / 1000.0 - j["queued_duration"].as_f64().unwrap_or(0.0);
                    let e = oldest.entry(path.clone()).or_insert(f64::MAX);
                    *e = e.min(queued);
                }
                continue;
            }
            // Skipped jobs have no finished_at: their created_at stands in.
            let done = time(&j["finished_at"]).or(time(&j["created_at"]));
            if done.map_or(0, |t| t.timestamp_millis()) < cutoff {
                continue;
            }
            durations += usize::from(!j["duration"].is_null());
            let key = JobKey {
                project: path.clone(),
                ref_: text(&j["ref"]),
                stage: text(&j["stage"]),
                job: text(&j["name"]),
                failure_reason: text(&j["failure_reason"]),
                status,
            };
            *totals.entry(key).or_insert(0u64) += 1;
        }
    }
    assert!(truth.total_jobs() > 100 && truth.total_active() > 5);
    assert_eq!(totals, truth.jobs_total);
    assert_eq!(active, truth.active);
    assert_eq!(durations, truth.duration_count());
    assert_eq!(oldest.len(), truth.oldest_pending.len());
    for (p, t) in &truth.oldest_pending {
        assert!((oldest[p] - t).abs() < 0.01, "{p}");
    }
    let statuses: BTreeSet<_> = truth.jobs_total.keys().map(|k| k.status.as_str()).collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["canceled", "failed", "skipped", "success"])
    );
    assert!(truth.queued_count() > truth.duration_count());
    h.shutdown().await;
}

#[tokio::test]
async fn each_fault_answers_once_then_normal_service_resumes() {
    let (sim, h) = start(scripted(), T0).await;
    let path = format!("{P42}/jobs");
    let faults = [
        (
            Fault::ServerError(502),
            502,
            "text/html",
            "<h1>502 Bad Gateway</h1>",
        ),
        (
            Fault::ServerError(504),
            504,
            "text/html",
            "504 Gateway Timeout",
        ),
        (
            Fault::RateLimitedJson,
            429,
            "application/json",
            "requested too many times",
        ),
        (
            Fault::RateLimitedText {
                retry_after_secs: 30,
            },
            429,
            "text/plain",
            "Retry later\n",
        ),
        (
            Fault::MalformedJson,
            200,
            "application/json",
            r#"[{"id":12,"status":"succ"#,
        ),
        (
            Fault::HtmlOk,
            200,
            "text/html; charset=utf-8",
            "<!DOCTYPE html>",
        ),
        (
            Fault::Unauthorized,
            401,
            "application/json",
            "401 Unauthorized",
        ),
        (
            Fault::ExpiredToken,
            401,
            "application/json",
            "Token is expired",
        ),
        (
            Fault::Forbidden,
            403,
            "application/json",
            r#"{"message":"403 Forbidden"}"#,
        ),
    ];
    for (fault, status, content_type, body) in faults {
        sim.push_fault(fault.clone());
        let got = get(&h, &path).await;
        let head = (got.status, got.header("content-type"));
        assert_eq!(head, (status, Some(content_type)), "{fault:?}");
        assert!(got.body.contains(body), "{fault:?}: {}", got.body);
        assert!(got.header("date").is_some());
        let throttle = [
            "retry-after",
            "ratelimit-name",
            "ratelimit-remaining",
            "ratelimit-reset",
        ]
        .map(|n| got.header(n).unwrap_or("-").to_owned())
        .join(",");
        match fault {
            Fault::RateLimitedText { .. } => {
                let reset = T0 / 1000 + 30;
                assert_eq!(throttle, format!("30,throttle_authenticated_api,0,{reset}"));
                let reset_time = got.header("ratelimit-resettime");
                assert_eq!(reset_time, Some("Mon, 24 Nov 2025 16:00:30 GMT"));
            }
            _ => assert_eq!(throttle, "-,-,-,-", "{fault:?}"),
        }
        let again = get(&h, &path).await;
        assert_eq!(
            (again.status, again.ids()),
            (200, vec![1001]),
            "after {fault:?}"
        );
    }
    sim.push_fault(Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(get(&h, &path).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.pending_faults(), 0);

    let stats = sim.requests();
    assert_eq!(
        (stats.total, stats.jobs, stats.by_status.get(&200)),
        (19, 19, Some(&12))
    );
    let log = sim.request_log();
    assert_eq!(
        (log.len(), log[0].path_and_query.as_str()),
        (19, path.as_str())
    );
    let clean = |r: &LoggedRequest| !r.path_and_query.contains(TOKEN);
    assert!(
        log.iter()
            .all(|r| r.auth == Some("PRIVATE-TOKEN") && r.token_ok && clean(r))
    );
    sim.reset_requests();
    assert_eq!((sim.requests().total, sim.request_log().len()), (0, 0));
    h.shutdown().await;
}

/// Projects in nested groups: `acme` (10_000_000) holds 1 and 2, `acme/platform` (10_000_001)
/// holds 3, `acme/platform/infra` (10_000_002) holds 4, `other` (10_000_003) holds 5. Project 1
/// has one job.
fn discovery_world() -> World {
    let projects = [
        (1, "acme/api"),
        (2, "acme/web"),
        (3, "acme/platform/db"),
        (4, "acme/platform/infra/tf"),
        (5, "other/tool"),
    ];
    let projects = projects.map(|(id, path)| ProjectDef::new(id, path));
    let job = JobPlan::new(2001, 1, 900, "build", "build", &[(T0, "created")]);
    World::new(projects.to_vec(), vec![job]).expect("valid discovery world")
}

const ACME: u64 = GROUP_ID_BASE;

#[test]
fn groups_come_from_project_paths_with_stable_ids() {
    let world = discovery_world();
    let groups: Vec<(u64, &str, Option<u64>)> = (world.groups().iter())
        .map(|g| (g.id, g.full_path.as_str(), g.parent_id))
        .collect();
    let want = [
        (ACME, "acme", None),
        (ACME + 1, "acme/platform", Some(ACME)),
        (ACME + 2, "acme/platform/infra", Some(ACME + 1)),
        (ACME + 3, "other", None),
    ];
    assert_eq!(groups, want);
    assert_eq!(
        world.find_group("ACME/Platform").map(|g| g.id),
        Some(ACME + 1)
    );
    assert_eq!(
        world.find_group("10000002").map(|g| g.path()),
        Some("infra")
    );
    assert!(
        world.find_group("acme/api").is_none(),
        "a project is no group"
    );
    // Project ids at or above the base push group ids above them.
    let world = World::new(vec![ProjectDef::new(GROUP_ID_BASE + 5, "g/p")], vec![]);
    let world = world.expect("valid world");
    assert_eq!(world.groups()[0].id, GROUP_ID_BASE + 6);
}

#[tokio::test]
async fn group_projects_filter_by_subgroups_archived_and_path() {
    let (sim, h) = start(discovery_world(), T0 + 60 * S).await;
    let ids = |g: &Got| {
        assert_eq!(g.status, 200, "{}", g.body);
        g.ids()
    };
    let list = |q: &str| format!("/api/v4/groups/{q}");
    assert_eq!(ids(&get(&h, &list("acme/projects")).await), vec![2, 1]);
    let got = get(&h, &list("acme/projects?include_subgroups=true")).await;
    assert_eq!(ids(&got), vec![4, 3, 2, 1]);
    let got = get(&h, &list(&format!("{}/projects", ACME + 1))).await;
    assert_eq!(ids(&got), vec![3]);
    let got = get(&h, &list("acme%2Fplatform/projects?include_subgroups=1")).await;
    assert_eq!(ids(&got), vec![4, 3]);
    let got = get(
        &h,
        &list("acme/projects?order_by=id&sort=asc&with_shared=false"),
    )
    .await;
    assert_eq!(ids(&got), vec![1, 2]);

    sim.set_archived(2, true).expect("project 2 exists");
    let q = "acme/projects?include_subgroups=true&archived";
    assert_eq!(
        ids(&get(&h, &list(&format!("{q}=false"))).await),
        vec![4, 3, 1]
    );
    assert_eq!(ids(&get(&h, &list(&format!("{q}=true"))).await), vec![2]);
    let got = get(&h, &list("acme/projects")).await;
    assert_eq!(ids(&got), vec![2, 1], "no archived param: all");
    assert_eq!(got.json()[0]["archived"], true);

    // The list entity matches `GET /projects/:id`; `simple` is BasicProjectDetails.
    let one = get(&h, "/api/v4/projects/3").await.json();
    let listed = get(&h, &list("acme%2Fplatform/projects")).await.json();
    assert_eq!(listed[0], one);
    let ns = &one["namespace"];
    assert_eq!(
        (&ns["id"], &ns["full_path"], &ns["parent_id"], &ns["kind"]),
        (
            &(ACME + 1).into(),
            &"acme/platform".into(),
            &ACME.into(),
            &"group".into()
        )
    );
    assert_eq!(ns["web_url"], format!("{EXT}/groups/acme/platform"));
    let simple = get(&h, &list("acme/projects?simple=true")).await.json();
    assert!(simple[0].get("archived").is_none() && simple[0].get("visibility").is_none());
    assert_eq!(simple[0]["path_with_namespace"], "acme/web");

    let no_group = r#"{"message":"404 Group Not Found"}"#;
    for q in [
        "nope/projects",
        "acme%2Fapi/projects",
        "10000004/projects",
        "1/projects",
    ] {
        let got = get(&h, &list(q)).await;
        assert_eq!((got.status, got.body.as_str()), (404, no_group), "{q}");
    }
    let got = get(&h, &list("acme/projects?archived=maybe")).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (400, r#"{"error":"archived is invalid"}"#)
    );
    let got = get(&h, &list("acme/projects?order_by=size")).await;
    let body = r#"{"error":"order_by does not have a valid value"}"#;
    assert_eq!((got.status, got.body.as_str()), (400, body));
    h.shutdown().await;
}

#[tokio::test]
async fn group_projects_offset_headers_and_links() {
    let (sim, h) = start(discovery_world(), T0).await;
    sim.set_external_url("https://gl.example.org:8443");
    let ext = "https://gl.example.org:8443";
    let path = "/api/v4/groups/acme/projects";
    let names = [
        "x-page",
        "x-per-page",
        "x-next-page",
        "x-prev-page",
        "x-total",
        "x-total-pages",
    ];
    let hdr = |g: &Got| {
        names
            .map(|n| g.header(n).unwrap_or("-").to_owned())
            .join(",")
    };
    let link = |page: u32, rel: &str| {
        format!(
            "<{ext}{path}?id=acme&include_ancestor_groups=false&include_subgroups=true\
             &order_by=created_at&owned=false&page={page}&per_page=3&simple=false&sort=desc\
             &starred=false&with_issues_enabled=false&with_merge_requests_enabled=false\
             &with_shared=true>; rel=\"{rel}\""
        )
    };
    let query = "include_subgroups=true&per_page=3";
    let got = get(&h, &format!("{path}?{query}")).await;
    assert_eq!(got.ids(), vec![4, 3, 2]);
    assert_eq!(hdr(&got), "1,3,2,,4,2");
    let want = [link(2, "next"), link(1, "first"), link(2, "last")].join(", ");
    assert_eq!(got.header("link"), Some(want.as_str()));
    let got = get(&h, &format!("{path}?{query}&page=2")).await;
    assert_eq!(got.ids(), vec![1]);
    assert_eq!(hdr(&got), "2,3,,1,4,2");
    let want = [link(1, "prev"), link(1, "first"), link(2, "last")].join(", ");
    assert_eq!(got.header("link"), Some(want.as_str()));
    // Past the end: empty, and Kaminari calls it out of range, so no prev page either.
    let got = get(&h, &format!("{path}?{query}&page=3")).await;
    assert_eq!((got.ids(), hdr(&got)), (vec![], "3,3,,,4,2".to_owned()));
    // An empty group still has one page.
    let got = get(
        &h,
        "/api/v4/groups/acme%2Fplatform%2Finfra/projects?archived=true",
    )
    .await;
    assert_eq!((got.ids(), hdr(&got)), (vec![], "1,20,,,0,1".to_owned()));
    h.shutdown().await;
}

#[tokio::test]
async fn more_than_ten_thousand_results_are_not_counted() {
    let projects = (1..=10_000).map(|i| ProjectDef::new(i, &format!("big/p{i}")));
    let world = World::new(projects.collect(), vec![]).expect("valid world");
    let (sim, h) = start(world, T0).await;
    let path = "/api/v4/groups/big/projects?per_page=100&page=100";
    let got = get(&h, path).await;
    assert_eq!(
        (got.header("x-total"), got.header("x-total-pages")),
        (Some("10000"), Some("100"))
    );
    assert!(
        got.header("link")
            .is_some_and(|l| l.contains("rel=\"last\""))
    );
    sim.add_project(ProjectDef::new(10_001, "big/p10001"))
        .expect("new project");
    let got = get(&h, path).await;
    assert_eq!(
        (got.header("x-total"), got.header("x-total-pages")),
        (None, None)
    );
    assert_eq!(got.header("x-next-page"), Some("101"));
    assert!(
        got.header("link")
            .is_some_and(|l| !l.contains("rel=\"last\""))
    );
    assert_eq!(got.ids().last(), Some(&2));
    h.shutdown().await;
}

#[tokio::test]
async fn membership_keyset_pages_end_with_an_empty_page() {
    let (sim, h) = start(discovery_world(), T0).await;
    sim.set_member(3, false).expect("project 3 exists");
    let first =
        "/api/v4/projects?membership=true&order_by=id&pagination=keyset&per_page=2&simple=true";
    let mut pages = Vec::new();
    let mut next = Some(first.to_owned());
    while let Some(path) = next {
        let got = get(&h, &path).await;
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        for name in ["x-page", "x-next-page", "x-total"] {
            assert!(got.header(name).is_none(), "{name}");
        }
        pages.push(got.ids());
        next = got.next(EXT);
        assert!(pages.len() < 10, "no end");
    }
    // GitLab's Pager links on from any non-empty page, so the last page fetched is empty.
    assert_eq!(pages, vec![vec![5, 4], vec![2, 1], vec![]]);
    let got = get(&h, first).await;
    let want = format!(
        "<{EXT}/api/v4/projects?id_before=4&imported=false&membership=true&order_by=id&owned=false\
         &page=1&pagination=keyset&per_page=2&simple=true&sort=desc&starred=false&statistics=false\
         &with_issues_enabled=false&with_merge_requests_enabled=false>; rel=\"next\""
    );
    assert_eq!(got.header("link"), Some(want.as_str()));
    // Ascending pages continue with id_after; a short page still links on.
    let got = get(
        &h,
        "/api/v4/projects?order_by=id&sort=asc&pagination=keyset&per_page=3",
    )
    .await;
    assert_eq!(
        got.ids(),
        vec![1, 2, 3],
        "without membership every project is listed"
    );
    let next = got.next(EXT).expect("next");
    assert!(next.contains("id_after=3"), "{next}");
    let got = get(&h, &next).await;
    assert_eq!(got.ids(), vec![4, 5]);
    assert!(got.next(EXT).is_some_and(|n| n.contains("id_after=5")));
    assert_eq!(
        got.json()[0]["permissions"]["project_access"]["access_level"],
        20
    );

    let no_keyset =
        r#"{"error":"Keyset pagination is not yet available for this type of request"}"#;
    for q in ["pagination=keyset", "pagination=keyset&order_by=name"] {
        let got = get(&h, &format!("/api/v4/projects?{q}")).await;
        assert_eq!((got.status, got.body.as_str()), (405, no_keyset), "{q}");
    }
    // Offset pagination counts, and refuses deep offsets.
    let got = get(
        &h,
        "/api/v4/projects?membership=true&archived=false&per_page=3",
    )
    .await;
    assert_eq!(got.ids(), vec![5, 4, 2]);
    assert_eq!(
        (got.header("x-total"), got.header("x-next-page")),
        (Some("4"), Some("2"))
    );
    let got = get(&h, "/api/v4/projects?page=501&per_page=100").await;
    assert_eq!(got.status, 405);
    assert!(
        got.body.contains("maximum allowed offset of 50000"),
        "{}",
        got.body
    );
    let stats = sim.requests();
    assert_eq!(
        (stats.projects_list, stats.group_projects),
        (stats.total, 0)
    );
    let log = sim.request_log();
    assert!(log.iter().all(|r| r.endpoint == Endpoint::ProjectsList));
    h.shutdown().await;
}

#[tokio::test]
async fn projects_change_at_runtime() {
    let (sim, h) = start(discovery_world(), T0 + 60 * S).await;
    assert_eq!(get(&h, "/api/v4/projects/1/jobs").await.ids(), vec![2001]);
    let removed = sim.remove_project(1).expect("project 1 exists");
    assert_eq!(removed.path_with_namespace, "acme/api");
    let no_project = r#"{"message":"404 Project Not Found"}"#;
    for path in ["1", "1/jobs", "1/jobs/2001", "acme%2Fapi"] {
        let got = get(&h, &format!("/api/v4/projects/{path}")).await;
        assert_eq!((got.status, got.body.as_str()), (404, no_project), "{path}");
    }
    assert_eq!(get(&h, "/api/v4/groups/acme/projects").await.ids(), vec![2]);
    assert_eq!(get(&h, "/api/v4/projects").await.ids(), vec![5, 4, 3, 2]);
    assert_eq!(
        sim.ground_truth(0).total_active(),
        0,
        "its jobs went with it"
    );
    assert_eq!(sim.remove_project(1), Err(WorldError::NoSuchProject(1)));

    let new = ProjectDef::new(6, "fresh/team/svc");
    sim.add_project(new.clone()).expect("new project");
    assert_eq!(sim.add_project(new), Err(WorldError::DuplicateProject(6)));
    let dup = ProjectDef::new(7, "Fresh/team/SVC");
    assert!(matches!(
        sim.add_project(dup),
        Err(WorldError::DuplicatePath(_))
    ));
    let group = ProjectDef::new(ACME, "x/y");
    assert_eq!(sim.add_project(group), Err(WorldError::GroupIdTaken(ACME)));
    // New namespaces get the next ids; the old ones keep theirs.
    let world = sim.world();
    let fresh: Vec<(u64, &str)> = (world.groups().iter().skip(4))
        .map(|g| (g.id, g.full_path.as_str()))
        .collect();
    assert_eq!(fresh, vec![(ACME + 4, "fresh"), (ACME + 5, "fresh/team")]);
    assert_eq!(world.find_group("other").map(|g| g.id), Some(ACME + 3));
    let got = get(&h, "/api/v4/projects/fresh%2Fteam%2Fsvc").await;
    assert_eq!(
        (got.status, &got.json()["namespace"]["id"]),
        (200, &(ACME + 5).into())
    );
    let got = get(&h, "/api/v4/projects/6/jobs?pagination=keyset").await;
    assert_eq!((got.status, got.ids()), (200, vec![]));
    let got = get(&h, "/api/v4/groups/fresh/projects?include_subgroups=true").await;
    assert_eq!(got.ids(), vec![6]);
    assert_eq!(get(&h, "/api/v4/projects?per_page=1").await.ids(), vec![6]);

    // Jobs can follow, if they continue the instance-wide id sequence.
    let job = |id, at: Ms| JobPlan::new(id, 6, 901, "test", "test", &[(T0 + at * S, "pending")]);
    sim.add_jobs(vec![job(2003, 30)]).expect("next job id");
    assert_eq!(
        sim.add_jobs(vec![job(2003, 30)]),
        Err(WorldError::DuplicateJob(2003))
    );
    assert_eq!(
        sim.add_jobs(vec![job(2004, 10)]),
        Err(WorldError::IdOrder(2004))
    );
    assert_eq!(get(&h, "/api/v4/projects/6/jobs").await.ids(), vec![2003]);

    sim.set_archived(6, true).expect("project 6 exists");
    let got = get(&h, "/api/v4/projects/6").await;
    assert_eq!(got.json()["archived"], true);
    assert_eq!(
        get(&h, "/api/v4/projects?archived=false").await.ids(),
        vec![5, 4, 3, 2]
    );
    assert_eq!(
        sim.set_member(99, false),
        Err(WorldError::NoSuchProject(99))
    );
    let stats = sim.requests();
    assert_eq!((stats.group_projects, stats.projects_list), (2, 3));
    h.shutdown().await;
}

#[tokio::test]
async fn pipeline_jobs_hide_retried_unless_asked_and_filter_by_scope() {
    let (sim, h) = start(fixtures::pipelines_world(T0), T0 + 200 * S).await;
    let got = get(&h, &format!("{P42}/pipelines/900/jobs")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.ids(),
        vec![2003, 2002],
        "retried 2001 hidden by default"
    );
    for (query, ids) in [
        ("include_retried=true", vec![2003, 2002, 2001]),
        ("include_retried=1", vec![2003, 2002, 2001]),
        ("include_retried=false", vec![2003, 2002]),
        ("include_retried=true&scope[]=failed", vec![2001]),
        (
            "include_retried=true&scope[]=failed&scope[]=manual",
            vec![2002, 2001],
        ),
        ("scope=manual", vec![2002]),
        ("scope[]=failed", vec![]),
    ] {
        let got = get(&h, &format!("{P42}/pipelines/900/jobs?{query}")).await;
        assert_eq!((got.status, got.ids()), (200, ids), "{query}");
    }
    // The same job JSON as the project's jobs endpoint.
    let listed = get(
        &h,
        &format!("{P42}/pipelines/900/jobs?include_retried=true"),
    )
    .await;
    let single = get(&h, &format!("{P42}/jobs/2001")).await;
    assert_eq!(listed.json()[2], single.json());
    // By encoded path too.
    let by_path = get(
        &h,
        "/api/v4/projects/group%2Fsub%2Fproject/pipelines/900/jobs",
    )
    .await;
    assert_eq!(by_path.ids(), vec![2003, 2002]);
    assert_eq!(sim.requests().pipeline_jobs, 10);
    h.shutdown().await;
}

#[tokio::test]
async fn pipeline_jobs_errors_and_an_unserved_endpoint() {
    let (sim, h) = start(fixtures::pipelines_world(T0), T0 + 200 * S).await;
    let not_found = r#"{"message":"404 Not found"}"#;
    let cases = [
        ("42/pipelines/901/jobs", 404, not_found), // another project's pipeline
        ("42/pipelines/903/jobs", 404, not_found), // not created yet
        ("42/pipelines/999999/jobs", 404, not_found),
        (
            "999/pipelines/900/jobs",
            404,
            r#"{"message":"404 Project Not Found"}"#,
        ),
        (
            "42/pipelines/abc/jobs",
            400,
            r#"{"error":"pipeline_id is invalid"}"#,
        ),
        (
            "42/pipelines/900/jobs?include_retried=maybe",
            400,
            r#"{"error":"include_retried is invalid"}"#,
        ),
        (
            "42/pipelines/900/jobs?scope[]=bogus",
            400,
            r#"{"error":"scope does not have a valid value"}"#,
        ),
        ("42/pipelines/900", 404, r#"{"error":"404 Not Found"}"#),
    ];
    for (path, status, body) in cases {
        let got = get(&h, &format!("/api/v4/projects/{path}")).await;
        assert_eq!((got.status, got.body.as_str()), (status, body), "{path}");
    }
    // A GitLab look-alike without the endpoint, or a proxy failing it; other endpoints serve.
    sim.set_pipeline_jobs_answer(Some(404));
    let got = get(&h, &format!("{P42}/pipelines/900/jobs")).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (404, r#"{"error":"404 Not Found"}"#)
    );
    sim.set_pipeline_jobs_answer(Some(502));
    let got = get(&h, &format!("{P42}/pipelines/900/jobs")).await;
    assert_eq!(got.status, 502);
    assert_eq!(get(&h, &format!("{P42}/jobs/2001")).await.status, 200);
    sim.set_pipeline_jobs_answer(None);
    assert_eq!(
        get(&h, &format!("{P42}/pipelines/900/jobs")).await.status,
        200
    );
    h.shutdown().await;
}
