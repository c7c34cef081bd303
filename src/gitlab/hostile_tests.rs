//! The client against a hostile GitLab (the simulator's raw faults and hostile modes).

use super::*;
use crate::metrics::Metrics;
use gitlab_sim::{Fault, Hostile, ProjectSpec, SimClock, SimHandle, Simulator, World, WorldSpec};

const TOKEN: &str = "glpat-hostile-test";

#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Captures this thread's log lines (the tests run on a current-thread runtime).
fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

struct Setup {
    sim: Simulator,
    client: GitlabClient,
    metrics: Arc<Metrics>,
    _handle: SimHandle,
}

/// A simulator (clock at the real now) with project 1 holding a few jobs, and a client
/// retrying `retries` times without real waits.
async fn setup(retries: usize) -> Setup {
    let now = Utc::now().timestamp_millis();
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 1,
            path: "g/p".into(),
            pipelines_per_hour: 2.0,
        }],
        now - 3_600_000,
        now,
    );
    let sim = Simulator::new(
        World::generate(&spec, 7),
        SimClock::manual(now),
        TOKEN.into(),
    );
    let handle = sim.spawn().await.unwrap();
    let mut cfg = crate::config::Config::new(&handle.base_url, TOKEN.to_string().into(), vec![]);
    cfg.gitlab.max_requests_per_minute = 1e9;
    cfg.gitlab.timeout = Duration::from_secs(5);
    let gitlab = cfg.gitlab.validate().unwrap();
    let metrics =
        Arc::new(Metrics::new(&Default::default(), usize::MAX, &Default::default()).unwrap());
    let retry = RetryPolicy {
        retries,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        rate_limit_pause: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let client =
        GitlabClient::new(&gitlab, TOKEN.to_string().into(), retry, metrics.clone()).unwrap();
    Setup {
        sim,
        client,
        metrics,
        _handle: handle,
    }
}

/// `gitlab_jobs_exporter_<family>` with these labels, from the rendered page.
fn value(metrics: &Metrics, series: &str) -> f64 {
    let page = metrics.render().unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn errors(metrics: &Metrics, kind: &str) -> f64 {
    value(
        metrics,
        &format!("gitlab_jobs_exporter_api_errors_total{{kind=\"{kind}\"}}"),
    )
}

fn raw(status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> Fault {
    Fault::Raw {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_string(), v.to_vec()))
            .collect(),
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn error_bodies_reach_logs_and_errors_bounded_escaped_and_once() {
    let s = setup(2).await;
    let (logs, _guard) = capture();
    let huge = serde_json::to_vec(&serde_json::json!({"message": "A".repeat(8 << 20)})).unwrap();
    for _ in 0..3 {
        s.sim
            .push_fault(raw(500, &[("content-type", b"application/json")], &huge));
    }
    let e = s.client.project("1").await.expect_err("500 three times");
    assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    let forged = b"bad gateway\n2026-12-02T00:00:00.000Z ERROR forged line\x1b[2J";
    for _ in 0..3 {
        s.sim
            .push_fault(raw(502, &[("content-type", b"text/plain")], forged));
    }
    let e = s.client.project("1").await.expect_err("502 three times");
    let shown = e.to_string();
    assert!(
        !shown.contains('\n') && !shown.contains('\x1b'),
        "{shown:?}"
    );
    assert!(shown.contains(r"bad gateway\n2026-12-02"), "{shown:?}");
    // The retries log the kind only: the message is the caller's to log, once.
    let text = logs.text();
    assert!(text.len() < 2048, "{} bytes of log", text.len());
    assert!(!text.contains("forged") && !text.contains("AAAA"), "{text}");
    assert_eq!(text.matches("retrying").count(), 4, "{text}");
}

#[tokio::test]
async fn a_single_job_that_does_not_decode_is_a_bad_job_not_retried() {
    let s = setup(3).await;
    s.sim.push_fault(raw(
        200,
        &[("content-type", b"application/json")],
        br#"{"id": 5, "status": "success", "name": "\ud800"}"#,
    ));
    let e = s.client.job("1", 5).await.expect_err("bad job");
    assert!(matches!(e, ApiError::BadItem { .. }), "{e}");
    assert_eq!(
        errors(&s.metrics, "bad_job"),
        1.0,
        "counted once, not retried"
    );
    // A truncated body is still a transient decode error (retried, and then it answers).
    s.sim.push_fault(Fault::MalformedJson);
    assert!(s.client.job("1", 5).await.is_ok());
    assert_eq!(errors(&s.metrics, "decode"), 1.0);
}

#[tokio::test]
async fn a_project_path_that_would_forge_log_lines_is_refused() {
    let s = setup(0).await;
    s.sim.push_fault(raw(
        200,
        &[("content-type", b"application/json")],
        br#"{"id": 1, "path_with_namespace": "g/p\n2026-12-02T00:00:00Z  INFO forged"}"#,
    ));
    let e = s.client.project("1").await.expect_err("refused");
    assert!(matches!(e, ApiError::Decode { .. }), "{e}");
    assert!(!e.to_string().contains('\n'), "{e}");
    assert_eq!(errors(&s.metrics, "decode"), 1.0);
}

#[tokio::test]
async fn an_unreadable_link_after_a_partial_page_is_the_last_page() {
    let s = setup(0).await;
    let first = || PageRequest::First {
        project: "1",
        scopes: &[],
    };
    let links: [&[u8]; 3] = [b"garbage", b"", b"\xff\xfe"];
    for link in links {
        s.sim.clear_hostile();
        s.sim.add_hostile(Hostile::ListLink(Some(link.to_vec())));
        let before = errors(&s.metrics, "link");
        let page = s.client.jobs_page(first()).await;
        let page = page.unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(link)));
        assert!(matches!(page.next(), Ok(None)) && !page.jobs.is_empty());
        // An empty Link is no Link at all; the others are counted.
        let counted = errors(&s.metrics, "link") - before;
        assert!(counted <= 1.0);
        assert!(link.is_empty() || counted == 1.0, "{link:?}");
    }
    // A full page with an unreadable Link: the next page exists, so needing it is an
    // error; the page itself is kept (a cycle that needs no more pages goes on).
    s.sim
        .add_hostile(Hostile::JobsExtraItems(vec![b"{}".to_vec(); 100]));
    let before = errors(&s.metrics, "link");
    let mut page = s.client.jobs_page(first()).await.expect("full page kept");
    assert!(!page.jobs.is_empty());
    let e = page
        .take_next()
        .expect_err("the next page is needed but unknown");
    assert!(matches!(e, ApiError::Link { .. }), "{e}");
    assert_eq!(errors(&s.metrics, "link") - before, 1.0);
    // Far longer than asked: refused whole, not retried.
    s.sim.clear_hostile();
    s.sim.add_hostile(Hostile::JobsExtraItems(vec![
        b"{}".to_vec();
        MAX_JOB_PAGE_ITEMS
    ]));
    let e = s.client.jobs_page(first()).await.expect_err("too long");
    assert!(matches!(e, ApiError::TooLong { .. }), "{e}");
    assert_eq!(errors(&s.metrics, "page_too_long"), 1.0);
}

#[tokio::test]
async fn a_link_outside_the_api_is_counted() {
    let s = setup(0).await;
    s.sim.add_hostile(Hostile::ListLink(Some(
        b"<https://evil.example/steal?x=1>; rel=\"next\"".to_vec(),
    )));
    // The page is kept; following its Link is refused.
    let mut page = s
        .client
        .jobs_page(PageRequest::First {
            project: "1",
            scopes: &[],
        })
        .await
        .expect("the page itself is fine");
    let e = page.take_next().expect_err("outside the API");
    assert!(matches!(e, ApiError::Link { .. }), "{e}");
    assert_eq!(errors(&s.metrics, "link"), 1.0);
    // A crafted relative target that resolves outside the API base is refused and counted.
    let e = s
        .client
        .jobs_page(PageRequest::Next("../../../admin?x=1"))
        .await
        .expect_err("escapes the base");
    assert!(matches!(e, ApiError::Link { .. }), "{e}");
    assert_eq!(errors(&s.metrics, "link"), 2.0);
}

#[tokio::test]
async fn bad_items_are_skipped_and_counted_not_fatal() {
    let s = setup(0).await;
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    s.sim.add_hostile(Hostile::JobsExtraItems(vec![
        b"{\"name\": \"\xff\xfe\"}".to_vec(),
        br#"{"id": 1, "status": "success", "name": "\ud800"}"#.to_vec(),
        br#"{"id": 2, "status": "success", "duration": 1e400}"#.to_vec(),
        format!(r#"{{"id": 3, "status": "success", "runner": {deep}}}"#).into_bytes(),
    ]));
    let page = s
        .client
        .jobs_page(PageRequest::First {
            project: "1",
            scopes: &[],
        })
        .await
        .expect("page decodes");
    assert_eq!(page.bad_items, 4);
    assert!(!page.jobs.is_empty());
    assert!(page.jobs.iter().all(|j| j.id > 3));
}

#[tokio::test]
async fn no_rate_limit_pauses_longer_than_ten_minutes() {
    let s = setup(0).await;
    let (logs, _guard) = capture();
    s.sim.push_fault(raw(
        429,
        &[
            ("retry-after", b"1000000000"),
            ("ratelimit-reset", b"1e300"),
        ],
        b"Retry later\n",
    ));
    let e = s.client.project("1").await.expect_err("429");
    match e {
        ApiError::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(throttle::MAX_PAUSE));
        }
        other => panic!("{other}"),
    }
    let text = logs.text();
    // The pause decided (`rate_limited_seconds_total` counts it as it is served).
    assert!(text.contains("pause_s=600.0"), "{text}");
    assert!(
        text.contains("1000000000") && text.contains("1e300"),
        "raw headers logged: {text}"
    );
}

#[tokio::test]
async fn a_used_up_window_with_a_far_reset_logs_its_pause() {
    let s = setup(0).await;
    let (logs, _guard) = capture();
    let reset = (Utc::now().timestamp() + 1_000_000).to_string();
    s.sim.push_fault(raw(
        200,
        &[
            ("content-type", b"application/json"),
            ("ratelimit-remaining", b"0"),
            ("ratelimit-limit", b"600"),
            ("ratelimit-reset", reset.as_bytes()),
        ],
        br#"{"id": 1, "path_with_namespace": "g/p"}"#,
    ));
    s.client.project("1").await.expect("answered");
    let text = logs.text();
    assert!(
        text.contains("used up") && text.contains("pause_s=600"),
        "{text}"
    );
}

#[test]
fn retry_after_as_an_http_date_and_capped_resets() {
    let mut h = HeaderMap::new();
    h.insert(
        "date",
        HeaderValue::from_static("Wed, 25 Nov 2026 08:50:00 GMT"),
    );
    h.insert(
        "retry-after",
        HeaderValue::from_static("Wed, 25 Nov 2026 08:52:00 GMT"),
    );
    assert_eq!(retry_after(&h), (Some(Duration::from_secs(120)), false));
    h.insert(
        "retry-after",
        HeaderValue::from_static("Tue, 24 Nov 2026 08:52:00 GMT"),
    );
    assert_eq!(retry_after(&h), (Some(Duration::ZERO), false));
    h.remove("retry-after");
    h.insert("ratelimit-reset", HeaderValue::from_static("1e300"));
    assert_eq!(retry_after(&h), (Some(throttle::MAX_PAUSE), true));
    h.insert("retry-after", HeaderValue::from_static("1000000000"));
    assert_eq!(retry_after(&h), (Some(throttle::MAX_PAUSE), true));
}

#[tokio::test]
async fn a_server_clock_far_off_is_ignored_counted_and_logged_once() {
    let s = setup(0).await;
    let (logs, _guard) = capture();
    for _ in 0..2 {
        s.sim.push_fault(raw(
            200,
            &[
                ("content-type", b"application/json"),
                ("date", b"Fri, 31 Dec 9999 23:59:59 GMT"),
            ],
            b"[]",
        ));
    }
    let first = || PageRequest::First {
        project: "1",
        scopes: &[],
    };
    for _ in 0..2 {
        let page = s.client.jobs_page(first()).await.unwrap();
        assert_eq!(page.server_time, None, "the local clock is used instead");
    }
    assert_eq!(errors(&s.metrics, "clock_skew"), 2.0);
    // The simulator's own clock is the real one: believed again, and said so.
    let page = s.client.jobs_page(first()).await.unwrap();
    assert!(page.server_time.is_some());
    let text = logs.text();
    assert_eq!(
        text.matches("off the local clock by more than").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("agrees with the local clock again").count(),
        1,
        "{text}"
    );
}

/// GitLab (or a proxy) echoing the token in an error: never shown, not even the part before
/// the 200-byte cut of a long message (the error reaches logs, the status page and the doctor).
#[tokio::test]
async fn a_token_echoed_in_an_error_is_never_shown_even_cut() {
    let s = setup(0).await;
    for pad in [0, 185, 190] {
        let body = serde_json::json!({"message": format!("{}{TOKEN} is unknown", "x".repeat(pad))});
        s.sim.push_fault(raw(
            401,
            &[("content-type", b"application/json")],
            &serde_json::to_vec(&body).unwrap(),
        ));
        let shown = s.client.project("1").await.expect_err("401").to_string();
        assert!(!shown.contains(&TOKEN[..10]), "pad {pad}: {shown}");
    }
    let html = format!("<html>502 Bad Gateway for {TOKEN}</html>");
    s.sim
        .push_fault(raw(502, &[("content-type", b"text/html")], html.as_bytes()));
    let shown = s.client.project("1").await.expect_err("502").to_string();
    assert!(
        !shown.contains(TOKEN) && shown.contains("<redacted>"),
        "{shown}"
    );
}
