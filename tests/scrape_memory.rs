//! Memory under a burst of scrapes of a large page (a measurement, not run by default:
//! `cargo test --release --test scrape_memory -- --ignored --nocapture`). Only public API that
//! predates the shared page, so the same file measures an older build too.

use std::sync::Arc;
use std::time::Duration;

use gitlab_jobs_exporter::fleet::runner::Readiness;
use gitlab_jobs_exporter::metrics::Metrics;
use gitlab_jobs_exporter::model::JobStatus;
use gitlab_jobs_exporter::server::{self, AppState};
use gitlab_jobs_exporter::tracker::{Event, JobLabels};

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn memory_under_200_parallel_scrapes_of_a_16_mb_page() {
    let metrics = Arc::new(
        Metrics::new(&Default::default(), 1_000_000, &Default::default()).expect("metrics"),
    );
    for i in 0..3_500 {
        let labels = JobLabels {
            ref_: "main".into(),
            stage: "test".into(),
            name: format!("a-rather-long-job-name-from-a-generated-matrix-{i:05}"),
            tag: false,
            runner: None,
        };
        metrics.apply(
            "acme/platform/a-large-monorepo",
            &[
                Event::Started {
                    labels: labels.clone(),
                    queued_duration: 3.0,
                },
                Event::Completed {
                    labels,
                    status: JobStatus::Success,
                    failure_reason: String::new(),
                    duration: Some(120.0),
                    finished_at: None,
                },
            ],
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cfg = gitlab_jobs_exporter::config::Config::new(
        "http://127.0.0.1:9",
        "token".to_string().into(),
        vec![gitlab_jobs_exporter::config::ProjectRef::Path("g/p".into())],
    )
    .validate()
    .expect("valid configuration");
    let app = gitlab_jobs_exporter::app::App::new(&cfg, Default::default()).expect("parts");
    let state = AppState {
        metrics,
        readiness: Arc::new(Readiness::new(0)),
        ..app.http_state()
    };
    tokio::spawn(server::serve(listener, state, std::future::pending()));
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");
    let url = format!("http://{addr}/metrics");
    let page = client
        .get(&url)
        .send()
        .await
        .expect("scrape")
        .bytes()
        .await
        .expect("body");
    drop(client.get(&url).send().await);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_kb("VmRSS:");
    let scrapes: Vec<_> = (0..200)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut resp = client.get(&url).send().await.expect("scrape");
                let mut n = 0;
                // Read slowly-ish and discard: the client must not be what holds the memory.
                while let Some(chunk) = resp.chunk().await.expect("chunk") {
                    n += chunk.len();
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for s in scrapes {
        total += s.await.expect("task");
    }
    let peak = status_kb("VmHWM:");
    println!(
        "page {:.1} MB; RSS before the burst {:.1} MB, peak during 200 parallel scrapes {:.1} MB; {:.0} MB sent",
        page.len() as f64 / 1e6,
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        total as f64 / 1e6
    );
    assert!(total > 190 * page.len());
}
