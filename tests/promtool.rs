//! `promtool check metrics` finds nothing on a real `/metrics` page (Debian's `prometheus`
//! package provides promtool; `scripts/install-test-deps.sh` installs it).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Harness, by_id, by_path};
use gitlab_sim::{Ms, ProjectSpec, World, WorldSpec};

const T0: Ms = 1_790_000_000_000;
const HOUR: Ms = 3_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_check_metrics_is_clean() {
    let spec = WorldSpec::new(
        vec![
            ProjectSpec {
                id: 21,
                path: "acme/platform/api".into(),
                pipelines_per_hour: 12.0,
            },
            ProjectSpec {
                id: 22,
                path: "tools/cli".into(),
                pipelines_per_hour: 5.0,
            },
        ],
        T0,
        T0 + 3 * HOUR,
    );
    let mut h = Harness::start(
        World::generate(&spec, 11),
        T0 + 2 * HOUR,
        vec![by_path("acme/platform/api"), by_id(22)],
        Duration::from_secs(3600),
    )
    .await;
    for _ in 0..20 {
        h.sim.advance(Duration::from_secs(60));
        h.poll().await;
    }
    let (status, content_type, body) = h.get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for family in [
        "gitlab_ci_jobs_total",
        "gitlab_ci_job_duration_seconds_bucket",
        "gitlab_ci_job_queued_duration_seconds_bucket",
        "gitlab_ci_jobs_active",
        "gitlab_ci_jobs_oldest_pending_timestamp_seconds",
        "gitlab_jobs_exporter_build_info",
        "gitlab_jobs_exporter_api_requests_total",
        "gitlab_jobs_exporter_api_request_duration_seconds_bucket",
        "gitlab_jobs_exporter_polls_total",
        "gitlab_jobs_exporter_poll_errors_total",
        "gitlab_jobs_exporter_last_successful_poll_timestamp_seconds",
        "gitlab_jobs_exporter_tracked_jobs",
    ] {
        assert!(body.contains(&format!("\n{family}")), "{family} missing");
    }

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (run scripts/install-test-deps.sh)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}");
    assert!(
        report.trim().is_empty(),
        "promtool found problems: {report}"
    );
    h.stop().await;
}
