//! Job Hooks (events, knobs, delivery) and the project hooks API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use super::*;

const TOKEN: &str = "sim-secret-token";
const SECRET: &str = "hook-secret";
/// 2025-11-24T16:00:00Z
const T0: Ms = 1_764_000_000_000;
const S: Ms = 1000;
const EXT: &str = "https://gitlab.example.com";

/// `id project name second:status…` per line; job 2 fails with a reason, job 7 without.
fn scripted() -> World {
    let spec = [
        "1 42 build 0:created 1:pending 3:running 63.25:success",
        "2 42 rspec 10:created 11:pending 12:running 30:failed",
        "3 42 rspec2 20:created 20:pending",
        "4 7 deploy 45:created 46:pending 50:canceled",
        "5 42 docs 50:created 55:skipped",
        "6 42 build 70:created 71:pending 72.5:running 80:success",
        "7 7 unborn 90:created 95:failed",
    ];
    let jobs = spec.iter().map(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        let num = |s: &str| s.parse::<u64>().expect("number");
        let timeline: Vec<(Ms, &str)> = (f[3..].iter())
            .filter_map(|e| e.split_once(':'))
            .map(|(t, s)| (T0 + (t.parse::<f64>().expect("secs") * 1000.0) as Ms, s))
            .collect();
        let pipeline = if f[1] == "7" { 901 } else { 900 };
        let mut job = JobPlan::new(num(f[0]), num(f[1]), pipeline, f[2], "test", &timeline);
        job.failure_reason = (f[2] == "rspec").then(|| "script_failure".into());
        job.tag_list = vec!["docker".into()];
        job
    });
    let projects = vec![
        ProjectDef::new(42, "group/sub/project"),
        ProjectDef::new(7, "o/p"),
    ];
    World::new(projects, jobs.collect()).expect("valid world")
}

fn generated(projects: u64, hours: i64, seed: u64) -> World {
    let spec = WorldSpec::uniform(projects, 12.0, T0, T0 + hours * 3600 * S);
    World::generate(&spec, seed)
}

fn events(world: &World, knobs: &HookKnobs) -> Vec<JobHookEvent> {
    job_hook_events(world, Ms::MIN, Ms::MAX, EXT, knobs)
}

fn event<'a>(all: &'a [JobHookEvent], job: u64, status: &str) -> &'a Value {
    let e = all.iter().find(|e| e.job_id == job && e.status == status);
    &e.unwrap_or_else(|| panic!("no {status} event for job {job}"))
        .payload
}

#[test]
fn every_timeline_change_yields_exactly_one_event_in_change_order() {
    let world = generated(3, 3, 5);
    let all = events(&world, &HookKnobs::default());
    let changes: usize = world.jobs().iter().map(|j| j.timeline.len()).sum();
    assert!(changes > 1000, "a world with many changes: {changes}");
    assert_eq!(all.len(), changes);
    let unique: BTreeSet<(u64, usize)> = all.iter().map(|e| (e.job_id, e.index)).collect();
    assert_eq!(unique.len(), changes);
    let keys: BTreeSet<&str> = all.iter().map(|e| e.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), changes, "one Idempotency-Key per event");
    for e in &all {
        let job = world.job(e.job_id).expect("job");
        assert_eq!(
            (e.at_ms, e.status.as_str()),
            (job.timeline[e.index].0, &*job.timeline[e.index].1)
        );
        assert_eq!(e.payload["build_status"], e.status);
        assert_eq!(e.payload["build_id"], e.job_id);
        assert_eq!(e.payload["project_id"], e.project_id);
    }
    assert!(all.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    // Without knobs every event is delivered once, at the time of its change.
    let plan = plan_job_hooks(&world, Ms::MIN, Ms::MAX, EXT, &HookKnobs::default());
    assert_eq!((plan.dropped, plan.duplicated), (0, 0));
    assert_eq!(plan.deliveries.len(), changes);
    assert!(
        plan.deliveries
            .iter()
            .all(|d| d.due_ms == d.event.at_ms && d.copy == 0)
    );
    // Windows split anywhere give the same events.
    let mid = T0 + 54_321;
    let mut split = job_hook_events(&world, Ms::MIN, mid, EXT, &HookKnobs::default());
    split.extend(job_hook_events(
        &world,
        mid,
        Ms::MAX,
        EXT,
        &HookKnobs::default(),
    ));
    let ids = |v: &[JobHookEvent]| -> Vec<(u64, usize)> {
        v.iter().map(|e| (e.job_id, e.index)).collect()
    };
    assert_eq!(ids(&split), ids(&all));
}

#[test]
fn knobs_drop_duplicate_and_delay_as_asked_deterministically() {
    let world = generated(4, 3, 9);
    let knobs = HookKnobs {
        drop: 0.2,
        duplicate: 0.1,
        max_delay: Duration::from_secs(30),
        seed: 42,
        ..HookKnobs::default()
    };
    let plan = plan_job_hooks(&world, Ms::MIN, Ms::MAX, EXT, &knobs);
    let generated = plan.events.len() as u64;
    let sent = plan.deliveries.len() as u64;
    assert_eq!(sent, generated - plan.dropped + plan.duplicated);
    let drop_rate = plan.dropped as f64 / generated as f64;
    let dup_rate = plan.duplicated as f64 / (generated - plan.dropped) as f64;
    assert!((0.17..0.23).contains(&drop_rate), "drop rate {drop_rate}");
    assert!(
        (0.08..0.12).contains(&dup_rate),
        "duplicate rate {dup_rate}"
    );
    let mut by_key: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for d in &plan.deliveries {
        by_key
            .entry(&d.event.idempotency_key)
            .or_default()
            .push(d.copy);
        let delay = d.due_ms - d.event.at_ms;
        assert!((0..=30_000).contains(&delay), "delay {delay}");
    }
    let twice = by_key.values().filter(|c| c.len() == 2).count() as u64;
    assert_eq!(
        twice, plan.duplicated,
        "both copies share the Idempotency-Key"
    );
    assert!(by_key.values().all(|c| c.len() <= 2));
    // Delays reorder: some delivery is due before an earlier change's.
    let reordered = plan
        .deliveries
        .windows(2)
        .any(|w| w[0].event.at_ms > w[1].event.at_ms);
    assert!(reordered);
    assert!(
        plan.deliveries
            .windows(2)
            .all(|w| w[0].due_ms <= w[1].due_ms)
    );
    // The same seed gives the same plan, however the time is split.
    let mid = T0 + 3_600_000;
    let a = plan_job_hooks(&world, Ms::MIN, mid, EXT, &knobs);
    let b = plan_job_hooks(&world, mid, Ms::MAX, EXT, &knobs);
    assert_eq!(a.dropped + b.dropped, plan.dropped);
    assert_eq!(
        a.deliveries.len() + b.deliveries.len(),
        plan.deliveries.len()
    );
    let other = HookKnobs { seed: 43, ..knobs };
    let c = plan_job_hooks(&world, Ms::MIN, Ms::MAX, EXT, &other);
    assert_ne!(c.dropped, plan.dropped, "another seed, other fates");
}

#[test]
fn payload_has_the_fixtures_fields_and_types() {
    let fixture: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/webhook_job.json"))
            .expect("fixture json");
    let all = events(&scripted(), &HookKnobs::default());
    let payload = event(&all, 1, "success");
    let (Value::Object(want), Value::Object(got)) = (&fixture, payload) else {
        panic!("objects");
    };
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    for (k, v) in want {
        let g = got.get(k).unwrap_or_else(|| panic!("missing {k}"));
        // The fixture's job deployed; ours have no environment (null, as GitLab sends then).
        if k != "environment" {
            assert_eq!(kind(g), kind(v), "{k}");
        }
        if let (Value::Object(v), Value::Object(g)) = (v, g) {
            let missing: Vec<_> = v.keys().filter(|k| !g.contains_key(*k)).collect();
            assert!(missing.is_empty() || k == "environment", "{k}: {missing:?}");
        }
    }
    let extra: BTreeSet<&str> = got
        .keys()
        .filter(|k| !want.contains_key(*k))
        .map(String::as_str)
        .collect();
    let newer = [
        "build_created_at_iso",
        "build_finished_at_iso",
        "build_started_at_iso",
        "project",
    ];
    assert_eq!(extra, BTreeSet::from(newer), "only what newer GitLab adds");
    assert_eq!(payload["object_kind"], "build");
    assert_eq!(payload["commit"]["id"], 900, "commit.id is the pipeline id");
    assert_eq!(
        payload["project"]["path_with_namespace"],
        "group/sub/project"
    );
    assert_eq!(payload["project_name"], "group / sub / project");
    assert_eq!(payload["runner"]["tags"], serde_json::json!(["docker"]));
}

#[test]
fn payload_renders_the_job_as_of_each_change() {
    let all = events(&scripted(), &HookKnobs::default());
    // The creation event, as `Ci::ExecutePipelineBuildHooksWorker` blanks it.
    let created = event(&all, 1, "created");
    for k in [
        "build_started_at",
        "build_finished_at",
        "build_duration",
        "build_queued_duration",
    ] {
        assert!(created[k].is_null(), "{k}");
    }
    assert!(created["runner"].is_null() && created["build_failure_reason"].is_null());
    let pending = event(&all, 1, "pending");
    assert_eq!(pending["build_queued_duration"], 0.0);
    assert!(pending["runner"].is_null(), "no runner before it starts");
    assert_eq!(pending["build_failure_reason"], "unknown_failure");
    let running = event(&all, 1, "running");
    assert_eq!(running["build_queued_duration"], 2.0);
    assert_eq!(running["build_duration"], 0.0);
    assert_eq!(running["runner"]["runner_type"], "instance_type");
    assert!(running["build_finished_at"].is_null());
    let done = event(&all, 1, "success");
    assert_eq!(
        done["build_duration"], 60.25,
        "exact, not from the rounded times"
    );
    assert_eq!(done["build_failure_reason"], "unknown_failure");
    assert_eq!(
        event(&all, 2, "failed")["build_failure_reason"],
        "script_failure"
    );
    assert_eq!(
        event(&all, 7, "failed")["build_failure_reason"],
        "unknown_failure"
    );
    assert!(event(&all, 7, "failed")["runner"].is_null(), "never ran");
    assert!(event(&all, 5, "skipped")["build_finished_at"].is_null());
    // Two changes in the same millisecond: the first shows only itself.
    assert!(event(&all, 3, "created")["build_queued_duration"].is_null());
    assert_eq!(event(&all, 3, "pending")["build_queued_duration"], 0.0);
    // The retry of `build` in the same pipeline counts one retry.
    assert_eq!(event(&all, 6, "success")["retries_count"], 1);
    assert_eq!(done["retries_count"], 0);
}

#[test]
fn old_and_iso_time_formats() {
    let all = events(&scripted(), &HookKnobs::default());
    let done = event(&all, 6, "success");
    assert_eq!(done["build_created_at"], "2025-11-24 16:01:10 UTC");
    assert_eq!(
        done["build_started_at"], "2025-11-24 16:01:12 UTC",
        "whole seconds"
    );
    assert_eq!(done["build_finished_at"], "2025-11-24 16:01:20 UTC");
    assert_eq!(done["build_created_at_iso"], "2025-11-24T16:01:10Z");
    assert_eq!(done["build_started_at_iso"], "2025-11-24T16:01:12Z");
    assert_eq!(done["build_duration"], 7.5);
    assert!(event(&all, 6, "running")["build_finished_at_iso"].is_null());
    let old = HookKnobs {
        iso_times: false,
        ..HookKnobs::default()
    };
    let all = events(&scripted(), &old);
    let done = event(&all, 6, "success");
    assert!(
        done.get("build_started_at_iso").is_none() && done.get("build_created_at_iso").is_none()
    );
    assert_eq!(done["build_started_at"], "2025-11-24 16:01:12 UTC");
}

/// A webhook receiver: records every request, answers `status`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    count: tokio::sync::watch::Receiver<usize>,
    status: Arc<AtomicU16>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Receiver {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<(HeaderMap, Value)>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let (count_tx, count) = tokio::sync::watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (g, st) = (Arc::clone(&got), Arc::clone(&status));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (g, st, count_tx) = (Arc::clone(&g), Arc::clone(&st), Arc::clone(&count_tx));
                async move {
                    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let n = {
                        let mut g = lock(&g);
                        g.push((headers, body));
                        g.len()
                    };
                    count_tx.send_replace(n);
                    axum::http::StatusCode::from_u16(st.load(Ordering::SeqCst))
                        .unwrap_or(axum::http::StatusCode::OK)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await;
        });
        Self {
            url: format!("http://{addr}/hook"),
            got,
            count,
            status,
            _stop: stop,
        }
    }

    fn got(&self) -> Vec<(HeaderMap, Value)> {
        lock(&self.got).clone()
    }

    /// Waits (at most 10 s) until `n` requests have arrived.
    async fn wait_for(&mut self, n: usize) {
        let reached =
            tokio::time::timeout(Duration::from_secs(10), self.count.wait_for(|c| *c >= n));
        assert!(reached.await.is_ok(), "{n} requests never arrived");
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn manual_clock_delivers_each_change_once_with_gitlabs_headers() {
    let world = scripted();
    let rx = Receiver::start().await;
    let sim = Simulator::new(world.clone(), SimClock::manual(T0 - S), TOKEN.into());
    let sender = HookSender::new(&sim, &rx.url, SECRET, HookKnobs::default()).expect("sender");
    let all = events(&world, &HookKnobs::default());
    let mut delivered = 0;
    for step in [500, 1500, 9000, 30_000, 1, 40_000, 100_000] {
        sim.advance(Duration::from_millis(step));
        delivered += sender.deliver_until(sim.now_ms()).await;
        let due = all.iter().filter(|e| e.at_ms <= sim.now_ms()).count();
        assert_eq!(delivered, due);
        assert_eq!(rx.got().len(), due, "delivered when deliver_until returns");
    }
    assert_eq!(delivered, all.len());
    let got = rx.got();
    let mut uuids = BTreeSet::new();
    for ((h, body), e) in got.iter().zip(&all) {
        assert_eq!(header(h, "x-gitlab-token"), SECRET);
        assert_eq!(header(h, "x-gitlab-event"), "Job Hook");
        assert_eq!(header(h, "content-type"), "application/json");
        assert_eq!(header(h, "user-agent"), "GitLab/17.6.0");
        assert_eq!(header(h, "x-gitlab-instance"), EXT);
        assert_eq!(header(h, "idempotency-key"), e.idempotency_key);
        assert_eq!(body, &e.payload);
        uuids.insert(header(h, "x-gitlab-event-uuid").to_owned());
    }
    assert_eq!(
        uuids.len(),
        got.len(),
        "a fresh X-Gitlab-Event-UUID per delivery"
    );
    let stats = sender.stats();
    assert_eq!(
        (stats.generated, stats.sent, stats.pending),
        (all.len() as u64, all.len() as u64, 0)
    );
    assert_eq!(stats.by_status, BTreeMap::from([(200, all.len() as u64)]));
}

#[tokio::test]
async fn knobs_through_http_counts_add_up_and_duplicates_share_the_key() {
    let world = generated(2, 1, 3);
    let rx = Receiver::start().await;
    let sim = Simulator::new(world, SimClock::manual(T0), TOKEN.into());
    let knobs = HookKnobs {
        drop: 0.1,
        duplicate: 0.2,
        max_delay: Duration::from_secs(5),
        seed: 7,
        ..HookKnobs::default()
    };
    let sender = HookSender::new(&sim, &rx.url, SECRET, knobs).expect("sender");
    sender.set_projects(HookProjects::Only(BTreeSet::from([1])));
    for _ in 0..4 {
        sim.advance(Duration::from_secs(900));
        sender.deliver_until(sim.now_ms()).await;
    }
    sender.deliver_until(Ms::MAX).await;
    let s = sender.stats();
    assert!(
        s.generated > 100 && s.dropped > 0 && s.duplicated > 0,
        "{s:?}"
    );
    assert_eq!(s.sent, s.generated - s.dropped + s.duplicated);
    assert_eq!(rx.got().len() as u64, s.sent);
    let mut keys: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (h, body) in rx.got() {
        assert_eq!(body["project_id"], 1, "only the project asked for");
        keys.entry(header(&h, "idempotency-key").to_owned())
            .or_default()
            .push(body);
    }
    let twice: Vec<_> = keys.values().filter(|b| b.len() == 2).collect();
    assert_eq!(twice.len() as u64, s.duplicated);
    assert!(
        twice.iter().all(|b| b[0] == b[1]),
        "a duplicate is the same event"
    );
    assert!(!s.by_status.keys().any(|c| *c >= 500));
}

#[tokio::test]
async fn stepping_the_clock_delivers_exactly_the_plan_in_its_order() {
    let world = generated(1, 1, 11);
    let start = T0 + 600 * S;
    let knobs = HookKnobs {
        drop: 0.15,
        duplicate: 0.15,
        max_delay: Duration::from_secs(20),
        seed: 3,
        ..HookKnobs::default()
    };
    let end = T0 + 3600 * S;
    let plan = plan_job_hooks(&world, start, end, EXT, &knobs);
    assert!(plan.deliveries.len() > 100, "{}", plan.deliveries.len());
    let rx = Receiver::start().await;
    let sim = Simulator::new(world, SimClock::manual(start), TOKEN.into());
    let sender = HookSender::new(&sim, &rx.url, SECRET, knobs).expect("sender");
    let mut rng = fastrand::Rng::with_seed(5);
    while sim.now_ms() < end {
        sim.advance(Duration::from_millis(rng.u64(1..20_000)));
        sender.deliver_until(sim.now_ms().min(end)).await;
    }
    // Deliveries due after `end` wait for a later call; changes after `end` are not planned.
    let late = plan.deliveries.iter().filter(|d| d.due_ms > end).count();
    assert_eq!(sender.stats().pending, late as u64);
    let got: Vec<(u64, String)> = (rx.got().iter())
        .map(|(h, b)| {
            (
                b["build_id"].as_u64().unwrap_or(0),
                header(h, "idempotency-key").to_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = (plan.deliveries.iter())
        .filter(|d| d.due_ms <= end)
        .map(|d| (d.event.job_id, d.event.idempotency_key.clone()))
        .collect();
    assert_eq!(got, want);
    let s = sender.stats();
    assert_eq!(
        (s.generated, s.dropped, s.duplicated),
        (plan.events.len() as u64, plan.dropped, plan.duplicated)
    );
}

#[tokio::test]
async fn failed_deliveries_are_counted_never_retried() {
    let rx = Receiver::start().await;
    rx.status.store(500, Ordering::SeqCst);
    let sim = Simulator::new(scripted(), SimClock::manual(T0 + 10 * S), TOKEN.into());
    let sender = HookSender::new(&sim, &rx.url, SECRET, HookKnobs::default())
        .expect("sender")
        .since(T0 - 1);
    let n = sender.deliver_until(sim.now_ms()).await;
    assert_eq!(n, 4, "job 1's three changes and job 2's creation");
    assert_eq!(sender.stats().by_status, BTreeMap::from([(500, 4)]));
    assert_eq!(sender.deliver_until(sim.now_ms()).await, 0, "no retry");
    // Nothing listens on a port a closed listener had.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let refused = HookSender::new(&sim, &url, SECRET, HookKnobs::default())
        .expect("sender")
        .since(T0 - 1);
    assert_eq!(refused.deliver_until(sim.now_ms()).await, 4);
    let s = refused.stats();
    assert_eq!((s.sent, s.failed), (4, 4));
    assert!(refused.deliveries().iter().all(|d| d.http_status.is_none()));
}

#[tokio::test]
async fn jobs_added_later_send_their_events() {
    let rx = Receiver::start().await;
    let sim = Simulator::new(scripted(), SimClock::manual(T0 + 200 * S), TOKEN.into());
    let sender = HookSender::new(&sim, &rx.url, SECRET, HookKnobs::default()).expect("sender");
    assert_eq!(
        sender.deliver_until(sim.now_ms()).await,
        0,
        "the past is not sent"
    );
    let t = |s: i64| T0 + s * S;
    let late = JobPlan::new(
        8,
        42,
        901,
        "late",
        "test",
        &[
            (t(190), "created"),
            (t(199), "pending"),
            (t(260), "running"),
        ],
    );
    sim.add_jobs(vec![late]).expect("add");
    assert_eq!(
        sender.deliver_until(sim.now_ms()).await,
        2,
        "its changes so far"
    );
    sim.advance(Duration::from_secs(100));
    assert_eq!(sender.deliver_due().await, 1);
    let statuses: Vec<Value> = rx
        .got()
        .iter()
        .map(|(_, b)| b["build_status"].clone())
        .collect();
    assert_eq!(statuses, ["created", "pending", "running"]);
}

#[tokio::test]
async fn registered_hooks_choose_projects_and_token() {
    let rx = Receiver::start().await;
    let sim = Simulator::new(scripted(), SimClock::manual(T0 - S), TOKEN.into());
    let hook = sim
        .add_project_hook(42, &rx.url, Some("per-hook"))
        .expect("hook");
    sim.add_project_hook(7, "https://elsewhere.example.com/hook", Some("x"))
        .expect("hook");
    let sender = HookSender::new(&sim, &rx.url, SECRET, HookKnobs::default()).expect("sender");
    sender.set_projects(HookProjects::Registered);
    sim.advance(Duration::from_secs(40));
    sender.deliver_until(sim.now_ms()).await;
    let got = rx.got();
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|(h, b)| b["project_id"] == 42 && header(h, "x-gitlab-token") == "per-hook")
    );
    // A disabled hook sends nothing, and its events are not generated.
    assert!(sim.set_hook_alert(hook, HookAlertStatus::Disabled, None));
    let before = sender.stats().generated;
    sim.advance(Duration::from_secs(100));
    assert_eq!(sender.deliver_until(sim.now_ms()).await, 0);
    assert_eq!(sender.stats().generated, before);
}

#[tokio::test]
async fn live_task_sends_as_the_clock_moves() {
    let mut rx = Receiver::start().await;
    let sim = Simulator::new(scripted(), SimClock::manual(T0 - S), TOKEN.into());
    let knobs = HookKnobs {
        max_delay: Duration::from_secs(2),
        ..HookKnobs::default()
    };
    let sender = HookSender::new(&sim, &rx.url, SECRET, knobs).expect("sender");
    let task = sender.spawn();
    sim.advance(Duration::from_secs(300));
    let total = events(&scripted(), &HookKnobs::default()).len();
    rx.wait_for(total).await;
    task.shutdown().await;
    let s = sender.stats();
    assert_eq!(
        (s.generated, s.sent, s.pending),
        (total as u64, total as u64, 0)
    );
    let keys: BTreeSet<String> = rx
        .got()
        .iter()
        .map(|(h, _)| header(h, "idempotency-key").to_owned())
        .collect();
    assert_eq!(keys.len(), total);
}

// The project hooks API.

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
        json: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("PRIVATE-TOKEN", TOKEN);
        if let Some(form) = form {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            req = req
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
        }
        if let Some(json) = json {
            req = req.json(&json);
        }
        let resp = req.send().await.expect("request");
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::Null),
            headers,
        )
    }
}

async fn api() -> (Simulator, SimHandle, Api) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(scripted(), SimClock::manual(T0), TOKEN.into());
    let handle = sim.spawn().await.expect("spawn");
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let base = format!("{}/api/v4", handle.base_url);
    (sim, handle, Api { client, base })
}

impl Api {
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let (status, body, _) = self.call(Method::POST, path, Some(form), None).await;
        (status, body)
    }

    async fn put(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let (status, body, _) = self.call(Method::PUT, path, Some(form), None).await;
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (status, body, _) = self.call(Method::GET, path, None, None).await;
        (status, body)
    }
}

const HOOKS: &str = "/projects/42/hooks";

#[tokio::test]
async fn hooks_api_creates_and_lists_without_showing_the_token() {
    let (sim, h, api) = api().await;
    let form = [
        ("url", "https://exporter.example.com/webhook"),
        ("token", "s3cret"),
        ("job_events", "true"),
        ("push_events", "false"),
        ("enable_ssl_verification", "true"),
    ];
    let (status, created) = api.post(HOOKS, &form).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["job_events"], true);
    assert_eq!(created["push_events"], false);
    assert_eq!(created["pipeline_events"], false);
    assert_eq!(created["alert_status"], "executable");
    assert!(created["disabled_until"].is_null() && created.get("token").is_none());
    assert_eq!(created["project_id"], 42);
    // JSON params, by path; GitLab's default push_events is true.
    let body = serde_json::json!({"url": "https://other.example.com/h", "pipeline_events": true});
    let by_path = "/projects/group%2Fsub%2Fproject/hooks";
    let (status, second, _) = api.call(Method::POST, by_path, None, Some(body)).await;
    assert_eq!(status, 201);
    assert_eq!(second["push_events"], true);
    assert_eq!(second["job_events"], false);
    let page = format!("{HOOKS}?per_page=1");
    let (status, list, headers) = api.call(Method::GET, &page, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let total = headers.get("x-total").and_then(|v| v.to_str().ok());
    assert_eq!(total, Some("2"));
    let fields = "id url project_id job_events pipeline_events push_events \
                  enable_ssl_verification alert_status disabled_until created_at";
    for f in fields.split_whitespace() {
        assert!(list[0].get(f).is_some(), "{f}");
    }
    assert!(!list.to_string().contains("s3cret"));
    assert_eq!(sim.project_hooks(42)[0].token.as_deref(), Some("s3cret"));
    assert_eq!(sim.requests().hooks, 3);
    h.shutdown().await;
}

#[tokio::test]
async fn hooks_api_updates_and_shows_disabled_hooks() {
    let (sim, h, api) = api().await;
    let url = "https://exporter.example.com/webhook";
    let id = sim.add_project_hook(42, url, Some("s3cret")).expect("hook");
    let path = format!("{HOOKS}/{id}");
    // PUT: the same URL keeps the token; a new URL without a token drops it.
    let (status, updated) = api
        .put(&path, &[("url", url), ("pipeline_events", "true")])
        .await;
    assert_eq!(
        (status, &updated["pipeline_events"]),
        (200, &Value::Bool(true))
    );
    assert_eq!(updated["job_events"], true, "unchanged");
    assert_eq!(sim.project_hooks(42)[0].token.as_deref(), Some("s3cret"));
    api.put(&path, &[("url", "https://moved.example.com/webhook")])
        .await;
    assert_eq!(sim.project_hooks(42)[0].token, None);
    api.put(&path, &[("token", "new")]).await;
    assert_eq!(sim.project_hooks(42)[0].token.as_deref(), Some("new"));
    // The alert knob shows in the API, and a temporary disabling runs out.
    let until = Some(T0 + 60 * S);
    assert!(sim.set_hook_alert(id, HookAlertStatus::TemporarilyDisabled, until));
    let (_, shown) = api.get(&path).await;
    assert_eq!(shown["alert_status"], "temporarily_disabled");
    assert_eq!(shown["disabled_until"], "2025-11-24T16:01:00.000Z");
    sim.advance(Duration::from_secs(61));
    assert_eq!(api.get(&path).await.1["alert_status"], "executable");
    assert!(sim.set_hook_alert(id, HookAlertStatus::Disabled, None));
    assert_eq!(api.get(HOOKS).await.1[0]["alert_status"], "disabled");
    assert!(!sim.set_hook_alert(999, HookAlertStatus::Disabled, None));
    h.shutdown().await;
}

#[tokio::test]
async fn hooks_api_errors() {
    let (sim, h, api) = api().await;
    let form = [("url", "https://exporter.example.com/webhook")];
    let (status, body) = api.post("/projects/999/hooks", &form).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("404 Project Not Found"))
    );
    let (status, body) = api.put(&format!("{HOOKS}/77"), &form).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (404, Some("404 Not found"))
    );
    let (status, body) = api.post(HOOKS, &[("job_events", "true")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("url is missing"))
    );
    assert_eq!(api.post(HOOKS, &[("url", "not a url")]).await.0, 422);
    let maybe = [("url", "https://x.example.com"), ("job_events", "maybe")];
    assert_eq!(api.post(HOOKS, &maybe).await.0, 400);
    assert_eq!(api.get(&format!("{HOOKS}/x")).await.0, 400);
    assert!(sim.project_hooks(42).is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn hooks_api_needs_maintainer_and_a_token() {
    let (sim, h, api) = api().await;
    let form = [("url", "https://exporter.example.com/webhook")];
    sim.set_hooks_access(42, false);
    let (status, body) = api.post(HOOKS, &form).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("403 Forbidden"))
    );
    assert_eq!(api.get(HOOKS).await.0, 403);
    assert!(sim.project_hooks(42).is_empty());
    sim.set_hooks_access(42, true);
    assert_eq!(api.post(HOOKS, &form).await.0, 201);
    // Without a token: 401; faults apply as on any endpoint.
    let anonymous = api.client.get(format!("{}{HOOKS}", api.base)).send().await;
    assert_eq!(anonymous.expect("request").status().as_u16(), 401);
    sim.push_fault(Fault::ServerError(502));
    assert_eq!(api.get(HOOKS).await.0, 502);
    assert_eq!(sim.requests().hooks, 5);
    h.shutdown().await;
}
