//! Durability: the real binary is killed with SIGKILL at random moments while jobs keep
//! completing, and restarted on the same `state.dir`. No scrape ever sees a counter go down,
//! and at the end every counter equals the ground truth.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Scrape, TOKEN, matches_truth};
use gitlab_sim::{Ms, ProjectSpec, SimClock, Simulator, World, WorldSpec};

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");
const T0: Ms = 1_790_000_000_000;
const HOUR: Ms = 3_600_000;

fn start(
    config: &std::path::Path,
    listener: &std::net::TcpListener,
    log: &std::path::Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(config)
        .env("GITLAB_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(log);
    // Every start serves on the same socket, as under a systemd `.socket` unit.
    common::hand_over(&mut cmd, listener);
    cmd.spawn().expect("exporter starts")
}

/// Every counter-like value of a scrape: counters, histogram counts and sums.
fn monotonic_values(s: &Scrape) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for sample in &s.samples {
        let counter = match sample.value {
            prometheus_parse::Value::Counter(v) => Some(v),
            _ => None,
        };
        let is_total = sample.metric.ends_with("_total")
            || sample.metric.ends_with("_count")
            || sample.metric.ends_with("_sum");
        let v = match (counter, &sample.value) {
            (Some(v), _) => v,
            (None, prometheus_parse::Value::Untyped(v)) if is_total => *v,
            _ => continue,
        };
        if sample.metric.starts_with("process_") {
            continue; // this process's own CPU time restarts with it, as everywhere
        }
        let mut labels: Vec<_> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        out.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), v);
    }
    out
}

async fn scrape(client: &reqwest::Client, url: &str) -> Option<Scrape> {
    let resp = client.get(url).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(Scrape::parse(&resp.text().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_lose_nothing_and_never_go_backwards() {
    let spec = WorldSpec::new(
        vec![
            ProjectSpec {
                id: 41,
                path: "acme/platform/api".into(),
                pipelines_per_hour: 20.0,
            },
            ProjectSpec {
                id: 42,
                path: "tools/cli".into(),
                pipelines_per_hour: 8.0,
            },
        ],
        T0,
        T0 + 4 * HOUR,
    );
    let start_ms = T0 + HOUR;
    let sim = Simulator::new(
        World::generate(&spec, 31),
        SimClock::manual(start_ms),
        TOKEN.to_string(),
    );
    let handle = sim.spawn().await.expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let (listener, port) = common::loopback_listener();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[gitlab]\nurl = {:?}\nmax_requests_per_minute = 1e9\nmax_clock_skew = \"36500days\"\n[server]\nlisten = \"127.0.0.1:{port}\"\n\
             [poll]\ninterval = \"200ms\"\nbackfill = \"1h\"\n[state]\ndir = {:?}\n\
             [[projects]]\npath = \"acme/platform/api\"\n[[projects]]\nid = 42\n",
            handle.base_url,
            dir.path().join("state").display().to_string()
        ),
    )
    .expect("config");
    let log = dir.path().join("exporter.log");
    gitlab_jobs_exporter::gitlab::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let ready_url = format!("http://127.0.0.1:{port}/readyz");

    // First start: the clock stands still until the first poll, so the backfill cutoff is known.
    let mut child = start(&config, &listener, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client
        .get(&ready_url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "never ready: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cutoff_ms = start_ms - HOUR;

    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    let mut scrapes = 0;
    let check = |s: &Scrape, last: &mut BTreeMap<String, f64>| {
        let now = monotonic_values(s);
        for (k, v) in last.iter() {
            let new = now.get(k).copied();
            assert!(new.is_some_and(|n| n >= *v), "{k} went from {v} to {new:?}");
        }
        *last = now;
    };
    let mut rng = fastrand::Rng::with_seed(7);
    for kill in 0..5 {
        // Run a random while, with jobs completing, scraping all along.
        let until = Instant::now() + Duration::from_millis(rng.u64(300..2500));
        while Instant::now() < until {
            sim.advance(Duration::from_secs(45));
            if let Some(s) = scrape(&client, &metrics_url).await {
                check(&s, &mut last);
                scrapes += 1;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        assert!(
            dir.path().join("state").join("checkpoint.json").exists(),
            "checkpoint written before kill {kill}"
        );
        child = start(&config, &listener, &log);
    }
    // Let the rest of the history happen, then stop the clock and wait until the exporter has
    // caught up (an awaited condition with a deadline, not a fixed sleep).
    for _ in 0..40 {
        sim.advance(Duration::from_secs(180));
        if let Some(s) = scrape(&client, &metrics_url).await {
            check(&s, &mut last);
            scrapes += 1;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let truth = sim.ground_truth_since(cutoff_ms, start_ms);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut matched = false;
    let mut latest = None;
    while Instant::now() < deadline {
        if let Some(s) = scrape(&client, &metrics_url).await {
            check(&s, &mut last);
            if matches_truth(&s, &truth) {
                matched = true;
                break;
            }
            latest = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().expect("stop");
    let _ = child.wait();
    // Closed, so that a scrape is refused at once rather than left waiting in the backlog.
    drop(listener);
    let final_scrape = scrape(&client, &metrics_url).await;
    assert!(final_scrape.is_none(), "the exporter is gone");
    if !matched && let Some(s) = &latest {
        common::assert_matches_truth(s, &truth); // panics with the difference
    }
    assert!(matched, "counters equal the ground truth after 5 kills");
    assert!(scrapes > 20, "scraped throughout: {scrapes}");
    assert!(truth.total_jobs() > 100, "{}", truth.total_jobs());
    handle.shutdown().await;
}

/// A checkpoint write that fails keeps /metrics at the last checkpoint's values (that is the
/// durability promise), but not silently: the failures are counted on the same page, and the
/// page moves on once a write works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checkpoint_writes_are_counted_on_the_frozen_page() {
    use common::{Harness, by_path};
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 41,
            path: "acme/api".into(),
            pipelines_per_hour: 30.0,
        }],
        T0,
        T0 + 3 * HOUR,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().to_path_buf();
    gitlab_jobs_exporter::persist::prepare(&state_dir).expect("state dir");
    let mut h = Harness::start_with(
        World::generate(&spec, 5),
        T0 + HOUR,
        vec![by_path("acme/api")],
        Duration::from_secs(3600),
        |cfg| cfg.state.dir = Some(state_dir.clone()),
    )
    .await;
    let failures = |s: &Scrape| {
        s.values("gitlab_jobs_exporter_checkpoint_failures_total")
            .values()
            .copied()
            .next()
    };
    let polls = |s: &Scrape| {
        s.values("gitlab_jobs_exporter_polls_total")
            .values()
            .copied()
            .sum::<f64>()
    };
    let never_polled = |s: &Scrape| {
        s.values("gitlab_jobs_exporter_projects_never_polled")
            .values()
            .copied()
            .next()
    };
    assert_eq!(never_polled(&h.scrape().await), Some(1.0), "from the start");
    h.poll().await;
    h.scheduler.write_checkpoint().await.expect("checkpoint");
    let before = h.scrape().await;
    assert_eq!(failures(&before), Some(0.0));
    // Polled once: no project is left without a successful cycle.
    assert_eq!(never_polled(&before), Some(0.0));
    assert!(
        !before
            .values("gitlab_jobs_exporter_last_checkpoint_timestamp_seconds")
            .is_empty()
    );

    // A directory where the temp file goes: every write fails (even as root).
    let blocker = state_dir.join(format!("{}.tmp", gitlab_jobs_exporter::persist::FILE_NAME));
    std::fs::create_dir(&blocker).expect("blocker");
    h.sim.advance(Duration::from_secs(60));
    h.poll().await;
    assert!(h.scheduler.write_checkpoint().await.is_err());
    assert!(h.scheduler.write_checkpoint().await.is_err());
    let frozen = h.scrape().await;
    assert_eq!(failures(&frozen), Some(2.0));
    assert_eq!(polls(&frozen), polls(&before), "values stay as on disk");

    std::fs::remove_dir(&blocker).expect("unblock");
    h.scheduler.write_checkpoint().await.expect("checkpoint");
    let after = h.scrape().await;
    assert_eq!(failures(&after), Some(2.0));
    assert!(polls(&after) > polls(&before));
    h.stop().await;
}
