//! The status page end to end: the exporter's own polling loop against the simulator, then
//! `/status.json` read as a script would and `/` rendered by a real browser (Debian's
//! `chromium`, headless; scripts/install-test-deps.sh installs it). Three projects end in three
//! states: one refused (403), one whose hooks arrive, one polled normally; one of them has a
//! path with markup in it, which must show as text and never become an element.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{HOOK_SECRET, Harness, by_id, by_path, until, with_webhooks};
use gitlab_sim::{Fault, Ms, ProjectSpec, World, WorldSpec};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const T0: Ms = 1_790_000_000_000;
const WAIT: Duration = Duration::from_secs(60);
const EVIL: &str = "acme/<script>alert(1)</script>";

fn world() -> World {
    let spec = |id, path: &str| ProjectSpec {
        id,
        path: path.into(),
        pipelines_per_hour: 6.0,
    };
    let projects = vec![
        spec(41, "acme/platform/api"),
        spec(42, EVIL),
        spec(43, "tools/cli"),
    ];
    World::generate(&WorldSpec::new(projects, T0, T0 + 2 * HOUR), 3)
}

/// GitLab's sample Job Hook about a new job of `project`.
fn hook(project: u64) -> String {
    let mut v: Value =
        serde_json::from_str(include_str!("fixtures/webhook_job.json")).expect("fixture");
    v["project_id"] = project.into();
    v["build_id"] = 900_000_001u64.into();
    v["build_status"] = "success".into();
    v.to_string()
}

async fn status(h: &Harness) -> Value {
    let (code, ct, body) = h.get("/status.json").await;
    assert_eq!(code, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    serde_json::from_str(&body).expect("/status.json is JSON")
}

/// Project name → state, from `/status.json`.
fn states(s: &Value) -> BTreeMap<String, String> {
    s["projects"]
        .as_array()
        .expect("projects")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("name").to_string();
            (name, p["state"].as_str().expect("state").to_string())
        })
        .collect()
}

/// The page as Chromium rendered it (its DOM, serialised).
async fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let child = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium is installed (run scripts/install-test-deps.sh)");
    let pid = child.id();
    let run = tokio::task::spawn_blocking(move || child.wait_with_output());
    let out = match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(out) => out.expect("join").expect("chromium's output"),
        Err(_) => {
            // SAFETY: kill(2) on our own child's pid, which it still is: not yet waited for.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("chromium did not finish in two minutes");
        }
    };
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 DOM")
}

/// The project table's row naming `name` (HTML-escaped as the DOM serialises text).
fn row_of<'a>(dom: &'a str, name: &str) -> &'a str {
    let escaped = name.replace('<', "&lt;").replace('>', "&gt;");
    dom.split("<tr data-state=")
        .skip(1)
        .map(|r| r.split("</tr>").next().unwrap_or(r))
        .find(|r| r.contains(&format!("<td class=\"project\">{escaped}")))
        .unwrap_or_else(|| panic!("no row for {name} in {dom}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_names_every_project_and_its_state() {
    let h = Harness::start_with(
        world(),
        T0 + HOUR,
        vec![by_path("acme/platform/api"), by_id(42), by_id(43)],
        Duration::from_secs(3600),
        |cfg| {
            with_webhooks(cfg);
            cfg.poll.interval = Duration::from_secs(1);
            cfg.poll.max_interval = Duration::from_secs(2);
        },
    )
    .await;
    // Before any poll: named as configured, never by a made-up path.
    let before = states(&status(&h).await);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        ["acme/platform/api", "project id 42", "project id 43"],
        "{before:?}"
    );
    let stop = CancellationToken::new();
    tokio::spawn(h.scheduler.clone().run(stop.clone()));

    let ready = until("ready on the status page", WAIT, || async {
        let s = status(&h).await;
        (s["ready"]["ready"] == true).then_some(s)
    })
    .await;
    assert!(
        ready["ready"]["reason"]
            .as_str()
            .expect("reason")
            .starts_with("ready")
    );
    assert_eq!(states(&ready).len(), 3, "{ready}");

    // The next request (whichever project sends it) is refused: that project is forbidden.
    h.sim.push_fault(Fault::Forbidden);
    let refused = until("a project refused", WAIT, || async {
        let s = status(&h).await;
        s["projects"]
            .as_array()?
            .iter()
            .find(|p| p["state"] == "forbidden")
            .cloned()
    })
    .await;
    let refused_id = refused["id"].as_u64().expect("id");
    assert!(
        refused["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("403")),
        "{refused}"
    );
    // A hook for another project: it receives hooks.
    let hooked = [41, 43]
        .into_iter()
        .find(|id| *id != refused_id)
        .expect("one");
    let auth = [
        ("x-gitlab-token", HOOK_SECRET),
        ("x-gitlab-event", "Job Hook"),
    ];
    assert_eq!(h.post_hook(hook(hooked), &auth).await.0, 200);
    let last = until("hooks shown", WAIT, || async {
        let s = status(&h).await;
        let by_id = |id: u64| {
            s["projects"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["id"] == id))
                .map(|p| p["state"].clone())
        };
        (by_id(hooked)? == "receiving_hooks").then_some(s)
    })
    .await;
    assert_eq!(last["webhooks"]["enabled"], true);
    assert_eq!(last["webhooks"]["receiving"], 1);
    assert!(
        last["webhooks"]["last_received"]["utc"].is_string(),
        "{last}"
    );
    // Failing first.
    assert_eq!(last["projects"][0]["state"], "forbidden", "{last}");

    let want = states(&last);
    assert_eq!(want.len(), 3);
    assert!(want.contains_key(EVIL), "{want:?}");
    let (_, ct, page) = h.get("/").await;
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        !page.contains("<script"),
        "markup from GitLab reached the page: {page}"
    );

    // What a person sees: the browser's DOM names each project with its state, and the path
    // with markup is text, not an element.
    let dom = rendered(&format!("{}/", h.metrics_url)).await;
    assert!(dom.contains("GitLab jobs exporter"), "{dom}");
    assert!(!dom.contains("<script"), "a script element in {dom}");
    for (name, state) in &want {
        let row = row_of(&dom, name);
        let text = state.replace('_', " ");
        assert!(
            row.contains(&format!(">{text}</td>")),
            "{name}: state {text} not in {row}"
        );
    }
    stop.cancel();
    h.stop().await;
}
