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

/// Project 42 at `T0 + 120 s` holds one job in each interesting state.
fn scripted() -> World {
    let j = |id, project, name, timeline: &[(Ms, &str)]| {
        let timeline: Vec<(Ms, &str)> = timeline.iter().map(|&(t, s)| (T0 + t * S, s)).collect();
        JobPlan::new(id, project, 500 + id / 4, name, "test", &timeline)
    };
    let mut failed = j(
        1002,
        42,
        "rspec 1/2",
        &[
            (10, "created"),
            (11, "pending"),
            (12, "running"),
            (30, "failed"),
        ],
    );
    failed.failure_reason = Some("script_failure".into());
    let jobs = vec![
        j(
            1001,
            42,
            "build",
            &[
                (0, "created"),
                (1, "pending"),
                (3, "running"),
                (63, "success"),
            ],
        ),
        failed,
        j(1003, 42, "rspec 2/2", &[(20, "created"), (20, "pending")]),
        j(
            1004,
            42,
            "lint",
            &[(25, "created"), (26, "pending"), (30, "running")],
        ),
        j(
            1005,
            42,
            "approve",
            &[(40, "created"), (40, "waiting_for_approval")],
        ),
        j(
            1006,
            42,
            "deploy",
            &[(45, "created"), (46, "pending"), (50, "canceled")],
        ),
        j(1007, 42, "docs", &[(50, "created"), (55, "skipped")]),
        j(
            1008,
            7,
            "build",
            &[
                (60, "created"),
                (61, "pending"),
                (62, "running"),
                (70, "success"),
            ],
        ),
        j(1009, 42, "unborn", &[(90, "created"), (95, "failed")]),
        j(1010, 42, "future", &[(3600, "created")]),
    ];
    let projects = vec![
        ProjectDef::new(42, "group/sub/project"),
        ProjectDef::new(7, "other/proj"),
    ];
    World::new(projects, jobs).expect("valid scripted world")
}

fn generated(projects: u64, rate: f64, hours: i64, seed: u64) -> World {
    World::generate(
        &WorldSpec::uniform(projects, rate, T0, T0 + hours * 3600 * S),
        seed,
    )
}

async fn start(world: World, now: Ms) -> (Simulator, SimHandle) {
    let sim = Simulator::new(world, SimClock::manual(now), TOKEN.into());
    let handle = sim.spawn().await.expect("spawn simulator");
    (sim, handle)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
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
        self.json()
            .as_array()
            .expect("array")
            .iter()
            .map(|j| j["id"].as_u64().expect("id"))
            .collect()
    }
    /// `path?query` of the `rel="next"` link, checking it points at the external URL.
    fn next(&self, ext: &str) -> Option<String> {
        let link = self.header("link")?;
        let url = link.strip_prefix('<')?.strip_suffix(">; rel=\"next\"")?;
        assert!(url.starts_with(&format!("{ext}/api/v4/")), "{url}");
        Some(url[ext.len()..].to_owned())
    }
}

async fn get_with(h: &SimHandle, path: &str, auth: Option<(&str, &str)>) -> Got {
    let mut req = client().get(format!("{}{path}", h.base_url));
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
        jobs.extend(got.json().as_array().expect("array").iter().cloned());
        next = got.next(EXT);
    }
    jobs
}

fn expected_ids(world: &World, project: u64, now: Ms, scope: &[&str]) -> Vec<u64> {
    let jobs = world
        .project_jobs(project)
        .rev()
        .filter(|j| j.visible_at(now));
    let jobs = jobs.filter(|j| scope.is_empty() || scope.contains(&j.status_at(now).unwrap_or("")));
    jobs.map(|j| j.id).collect()
}

#[tokio::test]
async fn keyset_pages_chain_through_link_and_cover_every_job_once() {
    let world = generated(2, 12.0, 6, 1);
    let now = T0 + 4 * 3600 * S;
    let (sim, h) = start(world, now).await;
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
            "pagination=keyset&per_page=20&scope[]=success&scope[]=failed",
        ),
        (
            2,
            &["pending"][..],
            "pagination=keyset&per_page=2&scope=pending",
        ),
    ] {
        let jobs = all_pages(&h, &format!("/api/v4/projects/{project}/jobs?{query}")).await;
        let ids: Vec<u64> = jobs.iter().map(|j| j["id"].as_u64().unwrap_or(0)).collect();
        let want = expected_ids(sim.world(), project, now, scope);
        assert!(want.len() > 3, "{query}: too few jobs to page");
        assert_eq!(ids, want, "{query}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn keyset_link_matches_gitlab_format() {
    let (sim, h) = start(scripted(), T0 + 120 * S).await;
    let got = get(&h, "/api/v4/projects/42/jobs?pagination=keyset&per_page=2").await;
    assert_eq!(got.ids(), vec![1009, 1007]);
    let cursor = "eyJpZCI6IjEwMDciLCJfa2QiOiJuIn0%3D";
    assert_eq!(
        got.header("link"),
        Some(&*format!(
            "<{EXT}/api/v4/projects/42/jobs?cursor={cursor}&id=42&page=1&pagination=keyset&per_page=2>; rel=\"next\""
        ))
    );
    for h_name in ["x-page", "x-next-page", "x-total", "x-total-pages"] {
        assert!(got.header(h_name).is_none(), "{h_name}");
    }
    // Encoded path, a string scope and an external URL with a port.
    sim.set_external_url("https://gl.internal:8443/");
    let got = get(
        &h,
        "/api/v4/projects/group%2Fsub%2Fproject/jobs?scope=pending&pagination=keyset&per_page=1",
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.ids(), vec![1003]);
    assert!(got.header("link").is_none(), "single match: last page");
    let got = get(&h, "/api/v4/projects/GROUP%2Fsub%2Fproject/jobs?scope[]=success&scope[]=failed&pagination=keyset&per_page=1").await;
    assert_eq!(got.ids(), vec![1009]);
    let next = got.next("https://gl.internal:8443").expect("next link");
    assert_eq!(
        next,
        "/api/v4/projects/GROUP%2Fsub%2Fproject/jobs?cursor=eyJpZCI6IjEwMDkiLCJfa2QiOiJuIn0%3D&id=GROUP%2Fsub%2Fproject\
         &page=1&pagination=keyset&per_page=1&scope%5B%5D=success&scope%5B%5D=failed"
    );
    let got = get(&h, &next).await;
    assert_eq!(got.ids(), vec![1002]);
    assert!(got.header("link").is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn scope_filters_and_unknown_status_matches_none() {
    let now = T0 + 120 * S;
    let (sim, h) = start(scripted(), now).await;
    let list = |q: &'static str| {
        let h = &h;
        async move {
            get(h, &format!("/api/v4/projects/42/jobs?per_page=100&{q}"))
                .await
                .ids()
        }
    };
    assert_eq!(
        list("scope[]=pending&scope[]=running").await,
        vec![1004, 1003]
    );
    assert_eq!(list("scope=skipped").await, vec![1007]);
    assert_eq!(
        list("").await,
        vec![1009, 1007, 1006, 1005, 1004, 1003, 1002, 1001]
    );
    let all: String = STATUSES.iter().map(|s| format!("scope[]={s}&")).collect();
    let scoped = get(&h, &format!("/api/v4/projects/42/jobs?per_page=100&{all}"))
        .await
        .ids();
    assert!(!scoped.contains(&1005), "unknown status matches no scope");
    assert_eq!(scoped.len(), 7);
    assert_eq!(
        sim.world().job(1005).and_then(|j| j.status_at(now)),
        Some("waiting_for_approval")
    );
    let stats = sim.requests();
    assert_eq!((stats.jobs, stats.jobs_scoped), (1, 3));
    h.shutdown().await;
}

#[tokio::test]
async fn offset_pagination_headers() {
    let (_sim, h) = start(scripted(), T0 + 120 * S).await;
    let base = format!("{EXT}/api/v4/projects/42/jobs");
    let got = get(&h, "/api/v4/projects/42/jobs?per_page=3").await;
    assert_eq!(got.ids(), vec![1009, 1007, 1006]);
    let hdr = |g: &Got| {
        ["x-page", "x-per-page", "x-next-page", "x-prev-page"]
            .map(|n| g.header(n).map(str::to_owned))
    };
    assert_eq!(
        hdr(&got),
        [
            Some("1".into()),
            Some("3".into()),
            Some("2".into()),
            Some(String::new())
        ]
    );
    assert!(got.header("x-total").is_none() && got.header("x-total-pages").is_none());
    assert_eq!(
        got.header("link"),
        Some(&*format!(
            "<{base}?id=42&page=2&per_page=3>; rel=\"next\", <{base}?id=42&page=1&per_page=3>; rel=\"first\""
        ))
    );
    let got = get(&h, "/api/v4/projects/42/jobs?per_page=3&page=3").await;
    assert_eq!(got.ids(), vec![1002, 1001]);
    assert_eq!(
        hdr(&got),
        [
            Some("3".into()),
            Some("3".into()),
            Some(String::new()),
            Some("2".into())
        ]
    );
    let link = got.header("link").unwrap_or("");
    assert!(
        link.contains("page=2&per_page=3>; rel=\"prev\"")
            && !link.contains("next")
            && !link.contains("last")
    );
    let got = get(&h, "/api/v4/projects/42/jobs").await;
    assert_eq!(got.header("x-per-page"), Some("20"));
    h.shutdown().await;
}

#[tokio::test]
async fn per_page_is_clamped_to_100() {
    let now = T0 + 5 * 3600 * S;
    let (_sim, h) = start(generated(1, 30.0, 6, 2), now).await;
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
    let cases: [(&str, u16, &str); 14] = [
        (
            "/api/v4/projects/42/jobs?pagination=keyset&order_by=created_at",
            405,
            r#"{"error":"Keyset pagination is not yet available for this type of request"}"#,
        ),
        (
            "/api/v4/projects/42/jobs?pagination=keyset&sort=asc",
            405,
            r#"{"error":"Keyset pagination is not yet available for this type of request"}"#,
        ),
        (
            "/api/v4/projects/42/jobs?scope[]=pending&scope[]=bogus",
            400,
            r#"{"error":"scope does not have a valid value"}"#,
        ),
        (
            "/api/v4/projects/42/jobs?scope=waiting_for_approval",
            400,
            r#"{"error":"scope does not have a valid value"}"#,
        ),
        (
            "/api/v4/projects/42/jobs?pagination=keyset&cursor=%%%",
            400,
            r#"{"error":"cursor is invalid"}"#,
        ),
        (
            "/api/v4/projects/42/jobs?per_page=lots",
            400,
            r#"{"error":"per_page is invalid"}"#,
        ),
        (
            "/api/v4/projects/999/jobs",
            404,
            r#"{"message":"404 Project Not Found"}"#,
        ),
        (
            "/api/v4/projects/nope%2Fnope",
            404,
            r#"{"message":"404 Project Not Found"}"#,
        ),
        (
            "/api/v4/projects/42/jobs/4242",
            404,
            r#"{"message":"404 Not found"}"#,
        ),
        (
            "/api/v4/projects/42/jobs/1008",
            404,
            r#"{"message":"404 Not found"}"#,
        ),
        (
            "/api/v4/projects/42/jobs/1010",
            404,
            r#"{"message":"404 Not found"}"#,
        ),
        (
            "/api/v4/projects/42/jobs/abc",
            400,
            r#"{"error":"job_id is invalid"}"#,
        ),
        (
            "/api/v4/groups/1/projects",
            404,
            r#"{"error":"404 Not Found"}"#,
        ),
        ("/metrics", 404, r#"{"error":"404 Not Found"}"#),
    ];
    for (path, status, body) in cases {
        let got = get(&h, path).await;
        assert_eq!((got.status, got.body.as_str()), (status, body), "{path}");
        assert_eq!(got.header("content-type"), Some("application/json"));
    }
    let unauthorized = r#"{"message":"401 Unauthorized"}"#;
    for auth in [
        None,
        Some(("PRIVATE-TOKEN", "wrong")),
        Some(("Authorization", "Bearer wrong")),
    ] {
        let got = get_with(&h, "/api/v4/projects/42/jobs", auth).await;
        assert_eq!((got.status, got.body.as_str()), (401, unauthorized));
    }
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get_with(
            &h,
            "/api/v4/projects/42/jobs",
            Some(("Authorization", &bearer))
        )
        .await
        .status,
        200
    );
    let stats = sim.requests();
    assert_eq!(stats.by_status.get(&401), Some(&3));
    assert_eq!(stats.other, 2);
    h.shutdown().await;
}

#[tokio::test]
async fn project_endpoint_by_id_and_encoded_path() {
    let (_sim, h) = start(scripted(), T0 + 120 * S).await;
    for path in [
        "/api/v4/projects/42",
        "/api/v4/projects/group%2Fsub%2Fproject",
        "/api/v4/projects/Group%2FSub%2FProject",
    ] {
        let p = get(&h, path).await.json();
        assert_eq!(p["id"], 42, "{path}");
        assert_eq!(p["path_with_namespace"], "group/sub/project");
        assert_eq!(
            (p["default_branch"].as_str(), p["archived"].as_bool()),
            (Some("main"), Some(false))
        );
        assert_eq!(p["web_url"], format!("{EXT}/group/sub/project"));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn date_header_follows_the_manual_clock() {
    let (sim, h) = start(scripted(), T0).await;
    let got = get(&h, "/api/v4/projects/42").await;
    assert_eq!(got.header("date"), Some("Mon, 24 Nov 2025 16:00:00 GMT"));
    sim.advance(Duration::from_secs(3 * 3600 + 61));
    assert_eq!(
        get(&h, "/nowhere").await.header("date"),
        Some("Mon, 24 Nov 2025 19:01:01 GMT")
    );
    h.shutdown().await;
}

#[tokio::test]
async fn durations_grow_live_and_freeze() {
    let (sim, h) = start(scripted(), T0 + 120 * S).await;
    let job = |id: u64| {
        let h = &h;
        async move {
            get(h, &format!("/api/v4/projects/42/jobs/{id}"))
                .await
                .json()
        }
    };
    let pair = |j: &Value| (j["duration"].as_f64(), j["queued_duration"].as_f64());
    assert_eq!(pair(&job(1004).await), (Some(90.0), Some(4.0))); // running
    assert_eq!(pair(&job(1003).await), (None, Some(100.0))); // pending
    assert_eq!(pair(&job(1001).await), (Some(60.0), Some(2.0))); // finished
    assert_eq!(pair(&job(1006).await), (None, Some(74.0))); // canceled while pending
    assert_eq!(pair(&job(1007).await), (None, None)); // skipped
    let skipped = job(1007).await;
    assert!(skipped["finished_at"].is_null() && skipped["started_at"].is_null());
    sim.advance(Duration::from_millis(60_500));
    assert_eq!(pair(&job(1004).await), (Some(150.5), Some(4.0)));
    assert_eq!(pair(&job(1003).await), (None, Some(160.5)));
    assert_eq!(pair(&job(1001).await), (Some(60.0), Some(2.0)));
    assert_eq!(pair(&job(1006).await), (None, Some(134.5)));
    let done = job(1001).await;
    assert_eq!(done["started_at"], "2025-11-24T16:00:03.000Z");
    assert_eq!(done["finished_at"], "2025-11-24T16:01:03.000Z");
    h.shutdown().await;
}

#[tokio::test]
async fn job_json_shape_and_failure_reason_only_when_failed() {
    let (_sim, h) = start(scripted(), T0 + 120 * S).await;
    let jobs = get(&h, "/api/v4/projects/42/jobs").await.json();
    for j in jobs.as_array().expect("array") {
        let failed = j["status"] == "failed";
        assert_eq!(j.get("failure_reason").is_some(), failed, "{}", j["id"]);
        for key in [
            "id",
            "status",
            "stage",
            "name",
            "ref",
            "tag",
            "coverage",
            "allow_failure",
            "archived",
            "source",
        ] {
            assert!(j.get(key).is_some(), "{key}");
        }
        for key in [
            "created_at",
            "started_at",
            "finished_at",
            "erased_at",
            "duration",
            "queued_duration",
            "artifacts",
        ] {
            assert!(j.get(key).is_some(), "{key}");
        }
        for key in [
            "artifacts_expire_at",
            "tag_list",
            "pipeline",
            "runner",
            "runner_manager",
            "user",
            "commit",
            "web_url",
        ] {
            assert!(j.get(key).is_some(), "{key}");
        }
        assert_eq!(j["project"]["ci_job_token_scope_enabled"], false);
        assert_eq!(
            j["runner"].is_null(),
            j["started_at"].is_null(),
            "runner only once started"
        );
        assert_eq!(j["pipeline"]["project_id"], 42);
        assert!(j["web_url"].as_str().is_some_and(|u| u.starts_with(EXT)));
    }
    let by_id = |id: u64| {
        jobs.as_array()
            .and_then(|a| a.iter().find(|j| j["id"] == id))
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
    let ok = |id, at| JobPlan::new(id, 1, 1, "x", "test", &[(at, "created")]);
    assert_eq!(
        World::new(p(), vec![ok(2, 10), ok(3, 5)]).err(),
        Some(WorldError::IdOrder(3))
    );
    assert_eq!(
        World::new(p(), vec![ok(2, 10), ok(2, 10)]).err(),
        Some(WorldError::DuplicateJob(2))
    );
    assert_eq!(
        World::new(
            p(),
            vec![JobPlan {
                project_id: 9,
                ..ok(2, 1)
            }]
        )
        .err(),
        Some(WorldError::UnknownProject(2, 9))
    );
    let after_final = JobPlan::new(
        4,
        1,
        1,
        "x",
        "test",
        &[(1, "created"), (2, "success"), (3, "running")],
    );
    assert!(matches!(
        World::new(p(), vec![after_final]),
        Err(WorldError::Timeline(4, _))
    ));
}

#[test]
fn generator_yields_every_case_and_is_deterministic() {
    let spec = WorldSpec::uniform(3, 12.0, T0, T0 + 6 * 3600 * S);
    let world = World::generate(&spec, 42);
    let again = World::generate(&spec, 42);
    assert_eq!(world.jobs(), again.jobs());
    assert_ne!(world.jobs(), World::generate(&spec, 43).jobs());
    for p in 1..=3 {
        let n = world.project_jobs(p).count();
        assert!((200..=800).contains(&n), "project {p}: {n} jobs");
    }
    let end = Ms::MAX;
    let jobs = world.jobs();
    let seq = |j: &JobPlan| {
        j.timeline
            .iter()
            .map(|e| e.1.as_str())
            .collect::<Vec<_>>()
            .join(">")
    };
    let has = |what: &str, f: &dyn Fn(&JobPlan) -> bool| assert!(jobs.iter().any(f), "no {what}");
    has("success", &|j| seq(j) == "created>pending>running>success");
    for reason in [
        "script_failure",
        "runner_system_failure",
        "stuck_or_timeout_failure",
        "job_execution_timeout",
        "some_future_reason",
    ] {
        has(reason, &|j| {
            j.status_at(end) == Some("failed") && j.failure_reason.as_deref() == Some(reason)
        });
    }
    has("allowed failure", &|j| {
        j.allow_failure && j.status_at(end) == Some("failed")
    });
    has("waiting_for_resource", &|j| {
        seq(j).contains("waiting_for_resource>") && j.started_at(end).is_some()
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
        seq(j).contains("waiting_for_approval>") && j.status_at(end) == Some("success")
    });
    has("waiting_for_callback", &|j| {
        seq(j).ends_with("waiting_for_callback>success")
    });
    has("left created", &|j| seq(j) == "created");
    has("retried", &|j| {
        j.status_at(end) == Some("failed")
            && jobs.iter().any(|r| {
                r.pipeline_id == j.pipeline_id
                    && r.name == j.name
                    && r.id > j.id
                    && r.created_at_ms > j.updated_at(end)
            })
    });
    has("mr ref", &|j| {
        j.ref_.starts_with("refs/merge-requests/") && j.source == "merge_request_event"
    });
    has("tag", &|j| j.tag && j.ref_.starts_with("v1."));
    has("parallel", &|j| j.name == "rspec 3/3");
    // Ids: one global sequence growing with creation; every finished job done within 100 min.
    assert!(
        jobs.windows(2)
            .all(|w| w[0].id < w[1].id && w[0].created_at_ms <= w[1].created_at_ms)
    );
    assert!(jobs.windows(2).any(|w| w[0].project_id != w[1].project_id));
    for j in jobs {
        if let Some(f) = j.finished_at(end) {
            assert!(
                f - j.created_at_ms <= 100 * 60 * S,
                "job {} took too long",
                j.id
            );
        }
        assert!(
            j.timeline.iter().rev().skip(1).all(|e| !is_final(&e.1)),
            "job {} changed after final",
            j.id
        );
        assert!(j.timeline.windows(2).all(|w| w[0].0 <= w[1].0));
    }
    let max_run = jobs
        .iter()
        .filter_map(|j| j.duration_ms(end).filter(|_| j.finished_at(end).is_some()))
        .max();
    assert!(max_run.is_some_and(|d| d > 40 * 60 * S), "some long jobs");
}

#[test]
fn generator_scales_to_a_thousand_projects() {
    let started = Instant::now();
    let world = generated(1000, 3.0, 1, 9);
    let took = started.elapsed();
    let n = world.jobs().len();
    assert!((14_000..=28_000).contains(&n), "{n} jobs");
    assert!(took < Duration::from_secs(3), "generation took {took:?}");
    let demo = World::demo(T0);
    assert_eq!(demo.projects().len(), 5);
    assert!(demo.find_project("acme/platform/api").is_some());
}

#[tokio::test]
async fn ground_truth_agrees_with_the_listing() {
    let now = T0 + 5 * 3600 * S;
    let cutoff = T0 + 2 * 3600 * S;
    let (sim, h) = start(generated(2, 15.0, 8, 3), now).await;
    let truth = sim.ground_truth(cutoff);
    let mut totals = BTreeMap::new();
    let mut active = BTreeMap::new();
    let mut durations = 0;
    let mut oldest: BTreeMap<String, f64> = BTreeMap::new();
    let time = |v: &Value| {
        v.as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp_millis())
    };
    for p in sim.world().projects() {
        let path = &p.path_with_namespace;
        for j in all_pages(
            &h,
            &format!(
                "/api/v4/projects/{}/jobs?pagination=keyset&per_page=100",
                p.id
            ),
        )
        .await
        {
            let status = j["status"].as_str().unwrap_or_default().to_owned();
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
            if time(&j["finished_at"])
                .or(time(&j["created_at"]))
                .unwrap_or(0)
                < cutoff
            {
                continue;
            }
            durations += usize::from(!j["duration"].is_null());
            let key = JobKey {
                project: path.clone(),
                ref_: j["ref"].as_str().unwrap_or_default().into(),
                stage: j["stage"].as_str().unwrap_or_default().into(),
                job: j["name"].as_str().unwrap_or_default().into(),
                failure_reason: j["failure_reason"].as_str().unwrap_or_default().into(),
                status,
            };
            *totals.entry(key).or_insert(0u64) += 1;
        }
    }
    assert!(
        truth.total_jobs() > 100 && truth.total_active() > 5,
        "{} / {}",
        truth.total_jobs(),
        truth.total_active()
    );
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
    let path = "/api/v4/projects/42/jobs";
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
        let got = get(&h, path).await;
        assert_eq!(
            (got.status, got.header("content-type")),
            (status, Some(content_type)),
            "{fault:?}"
        );
        assert!(got.body.contains(body), "{fault:?}: {}", got.body);
        assert!(got.header("date").is_some());
        if let Fault::RateLimitedText { .. } = fault {
            assert_eq!(got.header("retry-after"), Some("30"));
            assert_eq!(
                got.header("ratelimit-name"),
                Some("throttle_authenticated_api")
            );
            assert_eq!(got.header("ratelimit-remaining"), Some("0"));
            assert_eq!(
                got.header("ratelimit-reset"),
                Some(&*((T0 / 1000 + 30).to_string()))
            );
            assert_eq!(
                got.header("ratelimit-resettime"),
                Some("Mon, 24 Nov 2025 16:00:30 GMT")
            );
        }
        if fault == Fault::RateLimitedJson {
            assert!(got.header("retry-after").is_none());
        }
        let again = get(&h, path).await;
        assert_eq!(
            (again.status, again.ids()),
            (200, vec![1001]),
            "after {fault:?}"
        );
    }
    sim.push_fault(Fault::Delay(Duration::from_millis(300)));
    let started = Instant::now();
    assert_eq!(get(&h, path).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(sim.pending_faults(), 0);

    let stats = sim.requests();
    assert_eq!((stats.total, stats.jobs), (19, 19));
    assert_eq!(stats.by_status.get(&200), Some(&12));
    let log = sim.request_log();
    assert_eq!(log.len(), 19);
    assert!(log.iter().all(|r| r.auth == Some("PRIVATE-TOKEN")
        && r.token_ok
        && !r.path_and_query.contains(TOKEN)));
    assert_eq!(log[0].path_and_query, path);
    sim.reset_requests();
    assert_eq!((sim.requests().total, sim.request_log().len()), (0, 0));
    h.shutdown().await;
}
