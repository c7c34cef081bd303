//! `--install-webhooks`: the real binary against a small mock of GitLab's project and hooks
//! API (offset pages with `Link`, GitLab's defaults: `push_events` true unless sent, the token
//! never returned), run twice and then with `--update-token`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use common::TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");
const HOOK_URL: &str = "https://exporter.example.com/webhook";
const SECRET: &str = "whsec-NEVER-SHOWN-4711";
/// Hooks per page: small, so a project's hooks span pages.
const PAGE: usize = 2;

#[derive(Default)]
struct Mock {
    base: String,
    /// id → path_with_namespace; every project is in group `acme` but `solo/app`.
    projects: BTreeMap<u64, String>,
    /// Project → its hooks as GitLab lists them (no token).
    hooks: BTreeMap<u64, Vec<Value>>,
    /// Hook id → the token it was last given.
    tokens: HashMap<u64, String>,
    /// Projects whose hooks answer 403 (the token's user is no Maintainer there).
    denied: BTreeSet<u64>,
    /// Projects where creating a hook answers 500.
    failing_create: BTreeSet<u64>,
    next_hook: u64,
    /// Every request's method and URI (path and query).
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Mock>>;

fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Mock> {
    m.lock().expect("mock lock")
}

fn project_json(id: u64, path: &str) -> Value {
    json!({"id": id, "path_with_namespace": path, "default_branch": "main", "archived": false})
}

async fn project(State(m): State<Shared>, uri: Uri, UrlPath(id): UrlPath<String>) -> Response {
    let mut m = lock(&m);
    m.requests.push(format!("GET {uri}"));
    let found = m
        .projects
        .iter()
        .find(|(pid, path)| pid.to_string() == id || **path == id);
    match found {
        Some((pid, path)) => axum::Json(project_json(*pid, path)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            r#"{"message":"404 Project Not Found"}"#,
        )
            .into_response(),
    }
}

async fn group_projects(State(m): State<Shared>, uri: Uri) -> Response {
    let mut m = lock(&m);
    m.requests.push(format!("GET {uri}"));
    let list: Vec<Value> = m
        .projects
        .iter()
        .filter(|(_, p)| p.starts_with("acme/"))
        .map(|(id, p)| project_json(*id, p))
        .collect();
    axum::Json(list).into_response()
}

/// The project id of a hooks request, or the answer when it may not see them.
fn hooks_of(m: &Mock, id: &str) -> Result<u64, (StatusCode, &'static str)> {
    let not_found = (
        StatusCode::NOT_FOUND,
        r#"{"message":"404 Project Not Found"}"#,
    );
    let id: u64 = id.parse().map_err(|_| not_found)?;
    if !m.projects.contains_key(&id) {
        return Err(not_found);
    }
    if m.denied.contains(&id) {
        return Err((StatusCode::FORBIDDEN, r#"{"message":"403 Forbidden"}"#));
    }
    Ok(id)
}

async fn list_hooks(
    State(m): State<Shared>,
    uri: Uri,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut m = lock(&m);
    m.requests.push(format!("GET {uri}"));
    let id = match hooks_of(&m, &id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let all = m.hooks.get(&id).cloned().unwrap_or_default();
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .cloned()
        .collect();
    let mut headers = HeaderMap::new();
    if page * PAGE < all.len() {
        let next = format!(
            "<{}/api/v4/projects/{id}/hooks?page={}&per_page=100>; rel=\"next\"",
            m.base,
            page + 1
        );
        headers.insert("link", next.parse().expect("header"));
    }
    (headers, axum::Json(items)).into_response()
}

fn form(body: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn flag(f: &HashMap<String, String>, key: &str) -> Option<bool> {
    f.get(key).map(|v| v == "true")
}

async fn create_hook(
    State(m): State<Shared>,
    uri: Uri,
    UrlPath(id): UrlPath<String>,
    body: String,
) -> Response {
    let mut m = lock(&m);
    m.requests.push(format!("POST {uri}"));
    let id = match hooks_of(&m, &id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    if m.failing_create.contains(&id) {
        return (StatusCode::INTERNAL_SERVER_ERROR, r#"{"message":"boom"}"#).into_response();
    }
    let f = form(&body);
    m.next_hook += 1;
    let hook_id = m.next_hook;
    // GitLab's column defaults: push events and SSL verification on, the rest off.
    let hook = json!({
        "id": hook_id,
        "url": f.get("url"),
        "project_id": id,
        "push_events": flag(&f, "push_events").unwrap_or(true),
        "job_events": flag(&f, "job_events").unwrap_or(false),
        "pipeline_events": flag(&f, "pipeline_events").unwrap_or(false),
        "enable_ssl_verification": flag(&f, "enable_ssl_verification").unwrap_or(true),
        "alert_status": "executable",
        "disabled_until": null,
    });
    if let Some(token) = f.get("token") {
        m.tokens.insert(hook_id, token.clone());
    }
    m.hooks.entry(id).or_default().push(hook.clone());
    (StatusCode::CREATED, axum::Json(hook)).into_response()
}

async fn update_hook(
    State(m): State<Shared>,
    uri: Uri,
    UrlPath((id, hook_id)): UrlPath<(String, u64)>,
    body: String,
) -> Response {
    let mut m = lock(&m);
    m.requests.push(format!("PUT {uri}"));
    let id = match hooks_of(&m, &id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let f = form(&body);
    if let Some(token) = f.get("token") {
        m.tokens.insert(hook_id, token.clone());
    }
    let Some(hook) = m
        .hooks
        .get_mut(&id)
        .and_then(|hs| hs.iter_mut().find(|h| h["id"] == hook_id))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Only what is sent changes.
    for (k, v) in &f {
        if k == "url" {
            hook[k] = json!(v);
        } else if k != "token" {
            hook[k] = json!(v == "true");
        }
    }
    axum::Json(hook.clone()).into_response()
}

fn hook(id: u64, url: &str, job_events: bool) -> Value {
    json!({"id": id, "url": url, "push_events": true, "job_events": job_events,
        "pipeline_events": true, "enable_ssl_verification": true, "alert_status": "executable"})
}

/// The mock on a loopback port: `solo/app` (1, configured by path), and in group `acme`:
/// `acme/api` (2), `acme/web` (3, hooks denied), `acme/legacy` (4, already a hook at the URL
/// without Job events, on the second page of its hooks).
async fn start_mock() -> Shared {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut mock = Mock {
        base: format!("http://{}", listener.local_addr().expect("addr")),
        next_hook: 100,
        ..Mock::default()
    };
    for (id, path) in [
        (1, "solo/app"),
        (2, "acme/api"),
        (3, "acme/web"),
        (4, "acme/legacy"),
    ] {
        mock.projects.insert(id, path.to_string());
    }
    mock.denied.insert(3);
    mock.hooks.insert(
        4,
        vec![
            hook(11, "https://ci.example.com/a", true),
            hook(12, "https://ci.example.com/b", false),
            hook(13, HOOK_URL, false),
        ],
    );
    let shared = Arc::new(Mutex::new(mock));
    let app = axum::Router::new()
        .route("/api/v4/projects/{id}", get(project))
        .route("/api/v4/groups/{group}/projects", get(group_projects))
        .route(
            "/api/v4/projects/{id}/hooks",
            get(list_hooks).post(create_hook),
        )
        .route(
            "/api/v4/projects/{id}/hooks/{hook_id}",
            axum::routing::put(update_hook),
        )
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    shared
}

fn write_config(dir: &Path, base: &str) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"
[gitlab]
url = "{base}"
timeout = "5s"
max_requests_per_minute = 1000000

[[projects]]
path = "solo/app"

[[groups]]
path = "acme"
"#
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// The binary, off the runtime's threads (the mock answers on them meanwhile).
async fn install(config: &Path, secret: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .arg("--install-webhooks")
        .arg(HOOK_URL)
        .args(extra)
        .env("GITLAB_TOKEN", TOKEN)
        .env_remove("GITLAB_WEBHOOK_SECRET")
        .env_remove("RUST_LOG");
    if let Some(s) = secret {
        cmd.env("GITLAB_WEBHOOK_SECRET", s);
    }
    tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
        .await
        .expect("join")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The hook at `HOOK_URL` of `project`, and how many it has there.
fn ours(m: &Mock, project: u64) -> (Value, usize) {
    let at: Vec<&Value> = m.hooks[&project]
        .iter()
        .filter(|h| h["url"] == HOOK_URL)
        .collect();
    (at[0].clone(), at.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_are_created_updated_and_left_alone_and_a_denial_fails_the_run() {
    let mock = start_mock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &lock(&mock).base.clone());

    let mut outputs = Vec::new();
    // First run: created, updated, denied (exit 1, the others done all the same).
    let out = install(&config, Some(SECRET), &[]).await;
    let (stdout, stderr) = text(&out);
    eprintln!("DEBUG-OUT\n{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "solo/app (id 1): created",
            "acme/api (id 2): created",
            "acme/legacy (id 4): updated (job events were off)",
            "acme/web (id 3): denied (needs the Maintainer role)",
        ],
        "{stdout}"
    );
    assert!(
        lines[4].starts_with("2 created, 1 updated, 0 unchanged, 1 not done"),
        "{stdout}"
    );
    assert!(stderr.contains("webhook.enabled is not true"), "{stderr}");
    outputs.push(out);
    {
        let m = lock(&mock);
        for project in [1, 2] {
            let (h, n) = ours(&m, project);
            assert_eq!(n, 1);
            assert_eq!(h["job_events"], true, "{h}");
            assert_eq!(
                h["push_events"], false,
                "GitLab's default (true) overridden: {h}"
            );
            assert_eq!(h["enable_ssl_verification"], true, "{h}");
            assert_eq!(m.tokens[&h["id"].as_u64().unwrap()], SECRET);
        }
        let (legacy, n) = ours(&m, 4);
        assert_eq!((legacy["id"].as_u64(), n), (Some(13), 1));
        assert_eq!(legacy["job_events"], true, "{legacy}");
        // The events it already had are kept.
        assert_eq!(legacy["push_events"], true, "{legacy}");
        assert_eq!(legacy["pipeline_events"], true, "{legacy}");
        assert_eq!(m.tokens[&13], SECRET);
        assert_eq!(m.hooks[&4].len(), 3, "the other hooks untouched");
        assert!(!m.tokens.contains_key(&11) && !m.tokens.contains_key(&12));
    }

    // Second run, the denial lifted and one hook disabled by GitLab meanwhile.
    {
        let mut m = lock(&mock);
        m.denied.clear();
        let h = m.hooks.get_mut(&2).unwrap().last_mut().unwrap();
        h["alert_status"] = json!("temporarily_disabled");
        h["disabled_until"] = json!("2026-12-02T15:00:00.000Z");
    }
    let out = install(&config, Some(SECRET), &[]).await;
    let (stdout, stderr) = text(&out);
    eprintln!("DEBUG-OUT\n{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "solo/app (id 1): unchanged", "{stdout}");
    assert!(
        lines[1].starts_with(
            "acme/api (id 2): unchanged; GitLab has disabled this hook after failed deliveries until 2026-12-02T15:00:00.000Z"
        ),
        "{stdout}"
    );
    assert_eq!(lines[2], "acme/legacy (id 4): unchanged", "{stdout}");
    assert_eq!(lines[3], "acme/web (id 3): created", "{stdout}");
    assert!(stdout.contains("--update-token"), "{stdout}");
    outputs.push(out);
    {
        let m = lock(&mock);
        for project in [1, 2, 3, 4] {
            assert_eq!(ours(&m, project).1, 1, "one hook per project at the URL");
        }
    }

    // A new secret reaches the existing hooks only with --update-token.
    let new_secret = "whsec-ROTATED-0815";
    let out = install(&config, Some(new_secret), &["--update-token"]).await;
    let (stdout, stderr) = text(&out);
    eprintln!("DEBUG-OUT\n{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(": updated (token set)"))
            .count(),
        4,
        "{stdout}"
    );
    outputs.push(out);
    {
        let m = lock(&mock);
        for project in [1, 2, 3, 4] {
            let (h, _) = ours(&m, project);
            assert_eq!(m.tokens[&h["id"].as_u64().unwrap()], new_secret);
        }
        // The secrets travelled in bodies only.
        for r in &m.requests {
            assert!(
                !r.contains(SECRET) && !r.contains(new_secret) && !r.contains("whsec"),
                "{r}"
            );
        }
        assert!(
            m.requests.iter().any(|r| r.contains("hooks?page=2")),
            "second hook page read"
        );
    }
    for out in &outputs {
        let (stdout, stderr) = text(out);
        assert!(
            !stdout.contains("whsec") && !stderr.contains("whsec"),
            "{stdout}\n{stderr}"
        );
    }
}

/// Also: a create that failed (it may have been done) is not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_never_shows_even_at_debug_level() {
    let mock = start_mock().await;
    lock(&mock).failing_create.insert(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &lock(&mock).base.clone());
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&config)
        .args(["--install-webhooks", HOOK_URL])
        .env("GITLAB_TOKEN", TOKEN)
        .env("GITLAB_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "trace");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("binary runs"))
        .await
        .expect("join");
    let (stdout, stderr) = text(&out);
    eprintln!("DEBUG-OUT\n{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("acme/web (id 3): denied"), "{stdout}");
    assert!(
        stdout.contains("solo/app (id 1): failed: hook_create: HTTP 500: boom"),
        "{stdout}"
    );
    let posts = lock(&mock)
        .requests
        .iter()
        .filter(|r| r.starts_with("POST /api/v4/projects/1/hooks"))
        .count();
    assert_eq!(posts, 1, "a failed create is not sent again");
    for shown in [&stdout, &stderr] {
        assert!(!shown.contains(SECRET) && !shown.contains(TOKEN), "{shown}");
    }
}

#[test]
fn no_secret_or_a_bad_url_exits_2_before_any_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 9: a request would fail, not hang.
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let run = |url: &str, secret: Option<&str>| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&config)
            .args(["--install-webhooks", url])
            .env("GITLAB_TOKEN", TOKEN)
            .env_remove("GITLAB_WEBHOOK_SECRET");
        if let Some(s) = secret {
            cmd.env("GITLAB_WEBHOOK_SECRET", s);
        }
        cmd.output().expect("binary runs")
    };
    let out = run(HOOK_URL, None);
    let (stdout, stderr) = text(&out);
    eprintln!("DEBUG-OUT\n{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("GITLAB_WEBHOOK_SECRET") && stderr.contains("webhook.secret_file"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");
    for url in [
        "https://admin:hunter2@exporter.example.com/webhook",
        "ftp://exporter.example.com/webhook",
        "exporter.example.com/webhook",
    ] {
        let out = run(url, Some(SECRET));
        let (stdout, stderr) = text(&out);
        eprintln!("DEBUG-OUT\n{stdout}\n{stderr}");
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("--install-webhooks"), "{stderr}");
        assert!(
            !stderr.contains("hunter2") && !stdout.contains("hunter2"),
            "{stderr}"
        );
    }
    // --update-token means nothing alone; --check-config and --install-webhooks exclude each other.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("--update-token")
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["--check-config", "--install-webhooks", HOOK_URL])
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
}

/// The same command against the simulator's hooks API (a second reading of GitLab's source):
/// configured and discovered projects, a denial, a UI-made hook without the token, a disabled
/// hook named, and nothing new on a second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_simulator() {
    use gitlab_sim::{HookAlertStatus, ProjectSpec, SimClock, Simulator, World, WorldSpec};
    let now = chrono::Utc::now().timestamp_millis();
    let spec = WorldSpec::new(
        vec![
            ProjectSpec {
                id: 7,
                path: "acme/platform/api".into(),
                pipelines_per_hour: 1.0,
            },
            ProjectSpec {
                id: 8,
                path: "acme/web/frontend".into(),
                pipelines_per_hour: 1.0,
            },
            ProjectSpec {
                id: 9,
                path: "acme/ops/infra".into(),
                pipelines_per_hour: 1.0,
            },
        ],
        now - 3_600_000,
        now,
    );
    let sim = Simulator::new(World::generate(&spec, 5), SimClock::Live, TOKEN.to_string());
    sim.set_hooks_access(8, false);
    let ui_hook = sim.add_project_hook(9, HOOK_URL, None).expect("project 9");
    assert!(sim.set_hook_alert(ui_hook, HookAlertStatus::Disabled, None));
    let handle = sim.spawn().await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    let toml = format!(
        "[gitlab]\nurl = {:?}\nmax_requests_per_minute = 1000000\nmax_clock_skew = \"876000h\"\n[[projects]]\nid = 7\n[[groups]]\npath = \"acme\"\n",
        handle.base_url
    );
    std::fs::write(&config, toml).expect("write config");

    let out = install(&config, Some(SECRET), &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "acme/platform/api (id 7): created", "{stdout}");
    assert!(
        lines[1].starts_with(
            "acme/ops/infra (id 9): unchanged; GitLab has disabled this hook for good"
        ),
        "{stdout}"
    );
    assert_eq!(
        lines[2], "acme/web/frontend (id 8): denied (needs the Maintainer role)",
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
    let hooks = sim.project_hooks(7);
    assert_eq!(hooks.len(), 1);
    let h = &hooks[0];
    assert_eq!(h.url, HOOK_URL);
    assert_eq!(h.token.as_deref(), Some(SECRET));
    assert!(
        h.job_events && !h.push_events && h.enable_ssl_verification,
        "{h:?}"
    );
    // The UI-made hook had no token: only --update-token sets it.
    assert_eq!(sim.project_hooks(9)[0].token, None);

    sim.set_hooks_access(8, true);
    let out = install(&config, Some(SECRET), &["--update-token"]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("acme/platform/api (id 7): updated (token set)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("acme/web/frontend (id 8): created"),
        "{stdout}"
    );
    for project in [7, 8, 9] {
        let hooks = sim.project_hooks(project);
        assert_eq!(hooks.len(), 1, "one hook per project: {hooks:?}");
        assert_eq!(hooks[0].token.as_deref(), Some(SECRET));
    }
    // Still disabled: an update does not re-enable a hook (a successful delivery does).
    assert_eq!(
        sim.project_hooks(9)[0].alert_status_at(sim.now_ms()),
        "disabled"
    );
}
