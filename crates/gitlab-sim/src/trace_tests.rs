//! The trace endpoint, generated logs, failure classes, flaky retries and their ground truth.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;

const TOKEN: &str = "sim-secret-token";
/// 2025-11-24T16:00:00Z
const T0: Ms = 1_764_000_000_000;
const S: Ms = 1000;
const HOUR: Ms = 3_600_000;

fn generated(projects: u64, rate: f64, hours: i64, seed: u64) -> World {
    let spec = WorldSpec::uniform(projects, rate, T0, T0 + hours * HOUR);
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
    /// `Err` when the body broke off.
    body: Result<Vec<u8>, String>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_deref().expect("whole body")).into_owned()
    }
}

async fn fetch(h: &SimHandle, path: &str, headers: &[(&str, &str)]) -> Got {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut req = client.get(format!("{}{path}", h.base_url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = resp
        .bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string());
    Got {
        status,
        headers,
        body,
    }
}

async fn trace(h: &SimHandle, project: u64, job: u64) -> Got {
    let path = format!("/api/v4/projects/{project}/jobs/{job}/trace");
    fetch(h, &path, &[("PRIVATE-TOKEN", TOKEN)]).await
}

fn failed_jobs(world: &World, now: Ms) -> Vec<&JobPlan> {
    let jobs = world.jobs().iter();
    jobs.filter(|j| j.status_at(now) == Some("failed"))
        .collect()
}

/// GitLab's ANSI escapes and section markers removed (what a classifier sees).
fn strip(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    for line in text.split('\n') {
        let mut line = line.to_owned();
        while let Some(at) = line.find('\x1b') {
            let end = line[at + 1..]
                .find(|c: char| c.is_ascii_alphabetic())
                .map_or(line.len(), |e| at + 2 + e);
            line.replace_range(at..end, "");
        }
        if line.starts_with("section_start:") || line.starts_with("section_end:") {
            line = line.split_once('\r').map_or("", |(_, r)| r).to_owned();
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// A reference classifier of the issue's table, by substrings, in rule order.
fn reference_class(tail: &str) -> &'static str {
    let has = |s: &str| tail.contains(s);
    let killed_137 = tail
        .find("Killed\n")
        .is_some_and(|k| tail[k..].contains("exit code 137"));
    let table: [(&str, bool); 9] = [
        (
            "oom",
            killed_137
                || has("OOMKilled")
                || has("fatal error: runtime: out of memory")
                || has("JavaScript heap out of memory"),
        ),
        ("disk_full", has("No space left on device")),
        (
            "registry_rate_limit",
            has("toomanyrequests: You have reached your pull rate limit"),
        ),
        (
            "image_pull",
            has("pull access denied")
                || has("manifest unknown")
                || has("ERROR: Job failed: failed to pull image"),
        ),
        (
            "network",
            has("Could not resolve host")
                || has("Connection timed out")
                || has("connection reset by peer")
                || has("TLS handshake timeout"),
        ),
        (
            "timeout",
            has("ERROR: Job failed: execution took longer than"),
        ),
        (
            "dependency",
            has("npm ERR! code ERESOLVE")
                || has("ERROR: Could not find a version that satisfies the requirement")
                || has("error: failed to select a version for"),
        ),
        (
            "compile",
            has("error[E0") || has("error: could not compile") || has("SyntaxError:"),
        ),
        (
            "test_failure",
            has("test result: FAILED")
                || has(" failed, ")
                || has("--- FAIL:")
                || has("Failures: 2")
                || has("examples, 3 failures")
                || has("Tests:       2 failed"),
        ),
    ];
    table
        .iter()
        .find(|(_, hit)| *hit)
        .map_or(CLASS_OTHER, |(c, _)| c)
}

fn tail_of(log: &[u8], n: u64) -> &[u8] {
    &log[log.len().saturating_sub(n as usize)..]
}

#[tokio::test]
async fn trace_answers_the_whole_log_as_gitlab_does_whatever_range_says() {
    let world = generated(2, 10.0, 4, 5);
    let now = T0 + 6 * HOUR;
    let job = *failed_jobs(&world, now)
        .iter()
        .find(|j| j.started_at(now).is_some())
        .expect("a failed job that ran");
    let (id, project) = (job.id, job.project_id);
    let (sim, h) = start(world, now).await;
    let want = sim.log_bytes(id).expect("a log");
    let got = trace(&h, project, id).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("content-type"), Some("text/plain"));
    assert_eq!(
        got.header("content-disposition"),
        Some(format!("infile; filename=\"{id}.log\"").as_str())
    );
    assert_eq!(
        got.header("content-length"),
        Some(want.len().to_string().as_str())
    );
    assert_eq!(got.body.as_deref(), Ok(&want[..]));
    // No Range handling on this path: still 200 and the whole log.
    let path = format!("/api/v4/projects/{project}/jobs/{id}/trace");
    let ranged = fetch(
        &h,
        &path,
        &[("PRIVATE-TOKEN", TOKEN), ("Range", "bytes=-100")],
    )
    .await;
    assert_eq!(ranged.status, 200);
    assert_eq!(ranged.header("content-range"), None);
    assert_eq!(ranged.body.as_deref(), Ok(&want[..]));
    // By encoded path, with a bearer token.
    let path = format!(
        "/api/v4/projects/{}/jobs/{id}/trace",
        sim.project_by_id(project)
            .expect("project")
            .path_with_namespace
            .replace('/', "%2F")
    );
    let bearer = format!("Bearer {TOKEN}");
    let by_path = fetch(&h, &path, &[("Authorization", &bearer)]).await;
    assert_eq!(by_path.body.as_deref(), Ok(&want[..]));
    let stats = sim.trace_stats();
    assert_eq!((stats.requests, stats.by_job.get(&id)), (3, Some(&3)));
    assert_eq!(sim.requests().trace, 3);
    assert!(stats.bytes_sent >= 3 * want.len() as u64);
    h.shutdown().await;
}

#[tokio::test]
async fn trace_errors_and_empty_logs() {
    let world = generated(2, 10.0, 4, 5);
    let now = T0 + 6 * HOUR;
    let failed = failed_jobs(&world, now);
    let ran = *failed
        .iter()
        .find(|j| j.started_at(now).is_some())
        .expect("ran");
    let never = *failed
        .iter()
        .find(|j| j.started_at(now).is_none())
        .expect("stuck job");
    let other_project = if ran.project_id == 1 { 2 } else { 1 };
    let (ran, never, rp, np) = (ran.id, never.id, ran.project_id, never.project_id);
    let (sim, h) = start(world, now).await;
    let path = format!("/api/v4/projects/{rp}/jobs/{ran}/trace");
    let anonymous = fetch(&h, &path, &[]).await;
    assert_eq!(
        (anonymous.status, anonymous.text()),
        (401, r#"{"message":"401 Unauthorized"}"#.into())
    );
    let cases = [
        (
            999,
            ran.to_string(),
            404,
            r#"{"message":"404 Project Not Found"}"#,
        ),
        (
            other_project,
            ran.to_string(),
            404,
            r#"{"message":"404 Not found"}"#,
        ),
        (rp, "99999999".into(), 404, r#"{"message":"404 Not found"}"#),
        (rp, "abc".into(), 400, r#"{"error":"job_id is invalid"}"#),
    ];
    for (project, job, status, body) in cases {
        let path = format!("/api/v4/projects/{project}/jobs/{job}/trace");
        let got = fetch(&h, &path, &[("PRIVATE-TOKEN", TOKEN)]).await;
        assert_eq!(
            (got.status, got.text()),
            (status, body.to_owned()),
            "{path}"
        );
    }
    // A job that never ran has no log: 200, empty, class `unavailable`.
    let empty = trace(&h, np, never).await;
    assert_eq!((empty.status, empty.text()), (200, String::new()));
    assert_eq!(empty.header("content-length"), Some("0"));
    assert_eq!(
        sim.world()
            .failure_class(sim.world().job(never).expect("job")),
        Some(CLASS_UNAVAILABLE)
    );
    // An erased log likewise.
    let job_path = format!("/api/v4/projects/{rp}/jobs/{ran}");
    let job_json = |got: Got| -> serde_json::Value {
        serde_json::from_slice(&got.body.expect("body")).expect("json")
    };
    let before = job_json(fetch(&h, &job_path, &[("PRIVATE-TOKEN", TOKEN)]).await);
    assert_eq!(before["erased_at"], serde_json::Value::Null);
    sim.erase_log(ran).expect("erase");
    assert_eq!(trace(&h, rp, ran).await.text(), "");
    let after = job_json(fetch(&h, &job_path, &[("PRIVATE-TOKEN", TOKEN)]).await);
    assert_eq!(after["erased_at"], after["finished_at"]);
    // A token that may not read the project's logs.
    sim.set_trace_denied(rp, true);
    let denied = trace(&h, rp, ran).await;
    assert_eq!(
        (denied.status, denied.text()),
        (403, r#"{"message":"403 Forbidden"}"#.into())
    );
    sim.set_trace_denied(rp, false);
    assert_eq!(trace(&h, rp, ran).await.status, 200);
    let stats = sim.trace_stats();
    assert_eq!(stats.by_status.get(&404), Some(&3));
    assert_eq!(stats.by_status.get(&403), Some(&1));
    h.shutdown().await;
}

#[tokio::test]
async fn logs_look_like_a_runner_s_and_are_deterministic() {
    let world = generated(3, 12.0, 6, 9);
    let now = T0 + 8 * HOUR;
    let plans: Vec<LogPlan> = (world.jobs().iter())
        .filter(|j| j.started_at(now).is_some() && j.completed_at(now).is_some())
        .filter_map(|j| world.log_plan(j.id))
        .collect();
    let sizes: Vec<u64> = plans.iter().map(|p| p.size).collect();
    let (min, max) = (sizes.iter().min(), sizes.iter().max());
    assert!(min.is_some_and(|&m| m < 4 * 1024), "small logs: {min:?}");
    assert!(max.is_some_and(|&m| m > 1024 * 1024), "MB logs: {max:?}");
    let some = plans
        .iter()
        .find(|p| p.size > 100_000)
        .expect("a 100 KB log");
    let log = some.bytes();
    assert_eq!(log.len() as u64, some.size);
    let text = String::from_utf8_lossy(&log);
    for needle in [
        "Running with gitlab-runner 17.",
        "Preparing the \"docker\" executor",
        "Using docker image sha256:",
        "section_start:",
        "section_end:",
        ":step_script\r\x1b[0K",
        "\x1b[32;1m$ ",
        "\r",
    ] {
        assert!(text.contains(needle), "log lacks {needle:?}");
    }
    assert!(text.ends_with("\x1b[0;m\n"));
    // The same seed gives the same bytes; another seed other bytes.
    let again = generated(3, 12.0, 6, 9);
    assert_eq!(again.log_plan(some.job_id).expect("plan").bytes(), log);
    let mut other = again.clone();
    other.logs_mut().seed ^= 1;
    assert_ne!(other.log_plan(some.job_id).expect("plan").bytes(), log);
}

#[test]
fn every_failed_log_carries_its_class_in_the_tail() {
    let world = generated(6, 12.0, 8, 21);
    let now = T0 + 10 * HOUR;
    let limits = LogLimits::default();
    let mut classes: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut decoys, mut fars) = (0, 0);
    for job in failed_jobs(&world, now) {
        let plan = world.log_plan(job.id).expect("plan");
        let class = world.failure_class(job).expect("failed");
        assert_eq!(class, plan.class(limits));
        *classes.entry(class).or_default() += 1;
        if plan.size == 0 {
            assert_eq!(class, CLASS_UNAVAILABLE);
            continue;
        }
        let log = plan.bytes();
        let tail = strip(tail_of(&log, limits.tail_bytes));
        assert_eq!(reference_class(&tail), class, "job {}: {tail}", job.id);
        if plan.lines.len() > 1 && plan.lines.iter().all(|l| l.from_end <= limits.tail_bytes) {
            decoys += 1;
        }
        if let Some(far) = plan.lines.iter().find(|l| l.from_end > limits.tail_bytes) {
            fars += 1;
            // Present in the log, out of the tail's reach.
            let whole = strip(&log);
            assert_eq!(reference_class(&whole), {
                let in_reach = [far.class, class];
                *in_reach
                    .iter()
                    .filter(|c| **c != CLASS_OTHER)
                    .min_by_key(|c| FAILURE_CLASSES.iter().position(|k| k == *c))
                    .unwrap_or(&CLASS_OTHER)
            });
        }
        if job.failure_reason.as_deref() == Some("job_execution_timeout") {
            assert_eq!(class, "timeout");
        }
    }
    for class in FAILURE_CLASSES
        .iter()
        .chain([&CLASS_OTHER, &CLASS_UNAVAILABLE])
    {
        assert!(classes.contains_key(class), "no {class} in {classes:?}");
    }
    assert!(decoys > 0 && fars > 0, "decoys {decoys}, far lines {fars}");
}

#[test]
fn overrides_pick_size_and_lines_and_the_truth_follows_the_limits() {
    let world = generated(1, 10.0, 4, 5);
    let now = T0 + 6 * HOUR;
    let job = failed_jobs(&world, now)
        .into_iter()
        .find(|j| j.started_at(now).is_some())
        .expect("ran")
        .clone();
    let sim = Simulator::new(world, SimClock::manual(now), TOKEN.into());
    let change = LogOverride {
        class: Some("test_failure".into()),
        decoy: Some("other".into()),
        far: Some("oom".into()),
        ..LogOverride::default()
    };
    sim.set_log(job.id, change).expect("override");
    let class = |sim: &Simulator| sim.world().failure_class(&job).expect("failed");
    assert_eq!(
        class(&sim),
        "test_failure",
        "the far OOM line is out of reach"
    );
    let plan = sim.log_plan(job.id).expect("plan");
    assert!(plan.lines[0].from_end > 64 * 1024);
    let tail = strip(tail_of(&plan.bytes(), 64 * 1024));
    assert_eq!(reference_class(&tail), "test_failure");
    // A tail long enough to reach it finds the OOM kill first.
    sim.set_log_limits(LogLimits {
        tail_bytes: 4 * 1024 * 1024,
        max_log_bytes: 32 << 20,
    });
    assert_eq!(class(&sim), "oom");
    sim.set_log_limits(LogLimits::default());
    sim.set_log_size(job.id, 33 << 20).expect("size");
    assert_eq!(sim.log_plan(job.id).expect("plan").size, 33 << 20);
    assert_eq!(class(&sim), CLASS_LOG_TOO_LARGE);
    assert_eq!(
        sim.set_log(
            job.id,
            LogOverride {
                class: Some("bogus".into()),
                ..LogOverride::default()
            }
        ),
        Err(WorldError::UnknownClass("bogus".into()))
    );
    sim.set_trace_fault(job.id, Some(TraceFault::Fault(Fault::ServerError(500))));
    assert_eq!(class(&sim), CLASS_UNAVAILABLE);
    sim.set_trace_fault(job.id, Some(TraceFault::Slow(Duration::from_millis(1))));
    assert_eq!(class(&sim), CLASS_LOG_TOO_LARGE);
}

#[tokio::test]
async fn a_log_larger_than_the_limit_streams_without_being_held() {
    let world = generated(1, 10.0, 4, 5);
    let now = T0 + 6 * HOUR;
    let job = *failed_jobs(&world, now)
        .iter()
        .find(|j| j.started_at(now).is_some())
        .expect("ran");
    let (id, project) = (job.id, job.project_id);
    let (sim, h) = start(world, now).await;
    sim.set_log_size(id, 40 << 20).expect("size");
    let got = trace(&h, project, id).await;
    let body = got.body.expect("whole body");
    assert_eq!(body.len(), 40 << 20);
    assert!(String::from_utf8_lossy(&body[body.len() - 300..]).contains("ERROR: Job failed"));
    h.shutdown().await;
}

#[tokio::test]
async fn trace_faults_answer_once_then_the_log_is_served() {
    let world = generated(1, 10.0, 4, 5);
    let now = T0 + 6 * HOUR;
    let job = *failed_jobs(&world, now)
        .iter()
        .find(|j| j.started_at(now).is_some())
        .expect("ran");
    let (id, project) = (job.id, job.project_id);
    let (sim, h) = start(world, now).await;
    sim.set_log_size(id, 300_000).expect("size");
    let want = sim.log_bytes(id).expect("log");
    sim.push_trace_fault(TraceFault::Fault(Fault::ServerError(502)));
    sim.push_trace_fault(TraceFault::Fault(Fault::RateLimitedText {
        retry_after_secs: 3,
    }));
    sim.push_trace_fault(TraceFault::NotFound);
    sim.push_trace_fault(TraceFault::Forbidden);
    sim.push_trace_fault(TraceFault::CutAfter(100_000));
    sim.push_trace_fault(TraceFault::Slow(Duration::from_millis(5)));
    let mut seen = Vec::new();
    for _ in 0..7 {
        let got = trace(&h, project, id).await;
        seen.push((got.status, got.body.as_ref().map(Vec::len).map_err(|_| ())));
    }
    let n = want.len();
    assert!(seen[0].1.is_ok_and(|len| len > 100), "a proxy's error page");
    assert_eq!(
        seen,
        vec![
            (502, seen[0].1),
            (429, Ok(12)),
            (404, Ok(27)),
            (403, Ok(27)),
            (200, Err(())),
            (200, Ok(n)),
            (200, Ok(n)),
        ]
    );
    // A general fault applies to trace requests too; other endpoints leave trace faults be.
    sim.push_trace_fault(TraceFault::Fault(Fault::ServerError(503)));
    let job_path = format!("/api/v4/projects/{project}/jobs/{id}");
    assert_eq!(
        fetch(&h, &job_path, &[("PRIVATE-TOKEN", TOKEN)])
            .await
            .status,
        200
    );
    assert_eq!(trace(&h, project, id).await.status, 503);
    // A standing fault answers every time.
    sim.set_trace_fault(id, Some(TraceFault::NotFound));
    assert_eq!(trace(&h, project, id).await.status, 404);
    assert_eq!(trace(&h, project, id).await.status, 404);
    sim.set_trace_fault(id, None);
    assert_eq!(trace(&h, project, id).await.body.as_deref(), Ok(&want[..]));
    let stats = sim.trace_stats();
    assert_eq!(stats.requests, 11);
    assert_eq!(stats.max_per_job(), 11);
    sim.reset_requests();
    assert_eq!(sim.trace_stats(), TraceStats::default());
    h.shutdown().await;
}

#[test]
fn ground_truth_counts_failures_by_class_and_flaky_passes() {
    let world = generated(4, 12.0, 8, 3);
    let now = T0 + 10 * HOUR;
    let truth = world.ground_truth(now, T0);
    assert_eq!(truth.total_failures(), truth.jobs_with_status("failed"));
    let mut flaky = 0;
    for job in world.jobs() {
        if job.status_at(now) != Some("success") {
            continue;
        }
        let earlier_failed = world
            .pipeline_jobs(job.pipeline_id)
            .any(|o| o.name == job.name && o.id < job.id && o.status_at(now) == Some("failed"));
        flaky += u64::from(earlier_failed);
    }
    assert!(flaky > 0, "the generator retries failed jobs");
    assert_eq!(truth.total_flaky(), flaky);
    let by_class = truth.failures_by_class();
    assert!(by_class.len() >= 8, "{by_class:?}");
    assert_eq!(by_class.values().sum::<u64>(), truth.total_failures());
    // Failure keys repeat the job keys' labels.
    for (k, n) in &truth.failures {
        let job = JobKey {
            project: k.project.clone(),
            ref_: k.ref_.clone(),
            stage: k.stage.clone(),
            job: k.job.clone(),
            status: "failed".into(),
            failure_reason: k.failure_reason.clone(),
        };
        assert!(truth.jobs_total.get(&job).is_some_and(|m| m >= n), "{k:?}");
    }
    // A later cutoff drops failures with their jobs, flaky passes with their successes.
    let late = world.ground_truth(now, T0 + 7 * HOUR);
    assert!(late.total_failures() < truth.total_failures());
    assert_eq!(late.total_failures(), late.jobs_with_status("failed"));
}

#[tokio::test]
async fn a_retry_of_an_old_pipeline_is_a_flaky_pass_with_retries_count() {
    let world = generated(1, 6.0, 3, 11);
    let end = world
        .jobs()
        .iter()
        .map(|j| j.updated_at(Ms::MAX))
        .max()
        .expect("jobs");
    let old = failed_jobs(&world, end)
        .into_iter()
        .find(|j| {
            world
                .pipeline_jobs(j.pipeline_id)
                .filter(|o| o.name == j.name)
                .count()
                == 1
                && j.started_at(end).is_some()
        })
        .expect("a failed job never retried")
        .clone();
    let later = end + 48 * HOUR;
    let (sim, h) = start(world, later).await;
    let before = sim.ground_truth(T0).total_flaky();
    let retry = sim
        .retry_job(old.id, later - 10 * 60 * S, "success")
        .expect("retry");
    assert!(retry > old.id);
    let truth = sim.ground_truth(later - HOUR);
    let key = FlakyKey {
        project: "bulk/group-0/project-1".into(),
        ref_: old.ref_.clone(),
        stage: old.stage.clone(),
        job: old.name.clone(),
    };
    assert_eq!(
        truth.flaky.get(&key),
        Some(&1),
        "counted though its failure is long past"
    );
    assert_eq!(sim.ground_truth(T0).total_flaky(), before + 1);
    // The pipeline's jobs hide the retried attempt unless asked.
    let path = format!("/api/v4/projects/1/pipelines/{}/jobs", old.pipeline_id);
    let ids = |got: Got| -> Vec<u64> {
        let v: serde_json::Value = serde_json::from_slice(&got.body.expect("body")).expect("json");
        v.as_array()
            .expect("array")
            .iter()
            .filter_map(|j| j["id"].as_u64())
            .collect()
    };
    let latest = ids(fetch(&h, &path, &[("PRIVATE-TOKEN", TOKEN)]).await);
    assert!(latest.contains(&retry) && !latest.contains(&old.id));
    let q = format!("{path}?include_retried=true&scope[]=failed");
    let failed = fetch(&h, &q, &[("PRIVATE-TOKEN", TOKEN)]).await;
    let total = failed.header("x-total").map(str::to_owned);
    let failed = ids(failed);
    assert!(failed.contains(&old.id) && !failed.contains(&retry));
    assert_eq!(total, Some(failed.len().to_string()));
    // Job Hooks of the retry carry retries_count 1; the original's 0.
    let world = sim.world();
    let payload = |id: u64| {
        let job = world.job(id).expect("job");
        job_hook_payload(
            &world,
            job,
            job.timeline.len() - 1,
            "https://gitlab.example.com",
            false,
        )
        .expect("payload")
    };
    assert_eq!(payload(retry)["retries_count"], 1);
    assert_eq!(payload(old.id)["retries_count"], 0);
    assert_eq!(payload(retry)["build_status"], "success");
    // Too early for the id sequence.
    assert!(sim.retry_job(old.id, T0, "failed").is_err());
    h.shutdown().await;
}

#[test]
fn retry_knobs_chain_attempts_and_retry_old_pipelines_late() {
    let late_at = T0 + 30 * HOUR;
    let mut spec = WorldSpec::uniform(3, 12.0, T0, T0 + 6 * HOUR).with_retries(2);
    spec.late_retry_at_ms = Some(late_at);
    let world = World::generate(&spec, 17);
    // Still a world GitLab could hold: one id sequence growing with creation time.
    let checked = World::new(world.projects().to_vec(), world.jobs().to_vec());
    assert!(checked.is_ok(), "{:?}", checked.err());
    let attempts = |j: &JobPlan| {
        (world.pipeline_jobs(j.pipeline_id))
            .filter(|o| o.name == j.name && o.id <= j.id)
            .count()
    };
    let most = world.jobs().iter().map(attempts).max().unwrap_or(0);
    assert!((3..=4).contains(&most), "retry chains: {most} attempts");
    let third = world
        .jobs()
        .iter()
        .find(|j| attempts(j) == 3)
        .expect("a third attempt");
    let payload = job_hook_payload(&world, third, 0, "https://gitlab.example.com", false);
    assert_eq!(payload.expect("payload")["retries_count"], 2);
    // Late retries: two per project, in the project's earliest pipelines, a day later.
    let late: Vec<&JobPlan> = world
        .jobs()
        .iter()
        .filter(|j| j.created_at_ms >= late_at)
        .collect();
    assert_eq!(late.len(), 6);
    for job in &late {
        let first = world
            .pipeline_jobs(job.pipeline_id)
            .next()
            .expect("pipeline");
        assert!(first.created_at_ms < T0 + 2 * HOUR, "an early pipeline");
        let earlier_failed = (world.pipeline_jobs(job.pipeline_id))
            .any(|o| o.name == job.name && o.id < job.id && o.status_at(Ms::MAX) == Some("failed"));
        assert!(earlier_failed);
    }
    // An exporter started after the pipelines ran counts the passing late retries as flaky.
    let now = late_at + 2 * HOUR;
    let truth = world.ground_truth(now, late_at - HOUR);
    let passed = late
        .iter()
        .filter(|j| j.status_at(now) == Some("success"))
        .count();
    assert!(passed > 0);
    assert_eq!(truth.total_flaky(), passed as u64);
    // Without the knobs nothing is created after the pipelines' window (plus their runs).
    let plain = World::generate(&WorldSpec::uniform(3, 12.0, T0, T0 + 6 * HOUR), 17);
    let last = plain
        .jobs()
        .iter()
        .map(|j| j.created_at_ms)
        .max()
        .unwrap_or(0);
    assert!(last < T0 + 8 * HOUR);
}

#[test]
fn a_share_of_huge_logs_is_too_large_for_the_truth() {
    let world = generated(3, 12.0, 6, 8);
    let now = T0 + 8 * HOUR;
    let sim = Simulator::new(world, SimClock::manual(now), TOKEN.into());
    assert_eq!(
        sim.ground_truth(T0)
            .failures_with_class(CLASS_LOG_TOO_LARGE),
        0
    );
    sim.set_log_profile(LogProfile {
        huge_permille: 100,
        huge_bytes: 33 << 20,
        ..LogProfile::default()
    });
    let truth = sim.ground_truth(T0);
    let too_large = truth.failures_with_class(CLASS_LOG_TOO_LARGE);
    assert!(
        too_large > 0 && too_large < truth.total_failures() / 3,
        "{too_large}"
    );
    let world = sim.world();
    let huge = failed_jobs(&world, now)
        .into_iter()
        .filter(|j| sim.failure_class(j.id) == Some(CLASS_LOG_TOO_LARGE))
        .map(|j| sim.log_plan(j.id).expect("plan").size);
    assert!(huge.clone().count() as u64 == too_large && huge.into_iter().all(|s| s == 33 << 20));
    // With a limit above them, their tails are classified again.
    sim.set_log_limits(LogLimits {
        tail_bytes: 64 * 1024,
        max_log_bytes: 64 << 20,
    });
    assert_eq!(
        sim.ground_truth(T0)
            .failures_with_class(CLASS_LOG_TOO_LARGE),
        0
    );
}

#[test]
fn the_demo_has_flaky_passes_and_classes_to_show() {
    let demo = World::demo(T0);
    let truth = demo.ground_truth(T0 + 24 * HOUR, T0 - 3 * HOUR);
    assert!(truth.total_flaky() > 0);
    assert!(
        truth.failures_by_class().len() >= 8,
        "{:?}",
        truth.failures_by_class()
    );
    // Late retries, 20 minutes after the demo starts, of pipelines whose ordinary retries
    // were all over by then (within 100 minutes of the pipeline, plus a minute).
    let late = demo.jobs().iter().filter(|j| {
        let first = demo.pipeline_jobs(j.pipeline_id).next();
        j.created_at_ms >= T0 + 20 * 60 * S
            && first.is_some_and(|f| f.created_at_ms + 102 * 60 * S < T0 + 20 * 60 * S)
    });
    assert!(late.count() >= 3, "the busier projects' earliest pipelines");
}
