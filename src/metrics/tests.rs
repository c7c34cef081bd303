use super::*;

/// A burst of scrapes costs one render and one page in memory, not one per scrape.
#[tokio::test]
async fn concurrent_scrapes_share_one_page() {
    let m = Arc::new(Metrics::new(&MetricsSettings::default(), 100, &Default::default()).unwrap());
    let (a, b, c) = tokio::join!(m.scrape(), m.scrape(), m.scrape());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert!(a[0].len() > 100);
    assert_eq!(a[0].as_ptr(), b[0].as_ptr());
    assert_eq!(a[0].as_ptr(), c[0].as_ptr());
    // The burst is over: the next scrape renders afresh.
    let d = m.scrape().await.unwrap();
    assert_ne!(a[0].as_ptr(), d[0].as_ptr());
    // A published page is shared as it is.
    m.publish("# published\n".into(), 1_790_000_000.0);
    let (e, f) = tokio::join!(m.scrape(), m.scrape());
    let (e, f) = (e.unwrap(), f.unwrap());
    assert_eq!(&e[0][..], b"# published\n");
    assert_eq!(e[0].as_ptr(), f[0].as_ptr());
    let tail = String::from_utf8_lossy(&e[1]).into_owned();
    assert!(
        tail.contains("gitlab_jobs_exporter_checkpoint_failures_total 0"),
        "{tail}"
    );
    assert!(
        tail.contains("gitlab_jobs_exporter_last_checkpoint_timestamp_seconds 1790000000"),
        "{tail}"
    );
}

#[test]
fn unknown_statuses_and_failure_reasons_stay_bounded() {
    let m = Metrics::new(&MetricsSettings::default(), usize::MAX, &Default::default()).unwrap();
    let mut counts: BTreeMap<JobStatus, u64> = (0..500)
        .map(|i| (JobStatus::from(format!("invented_{i}")), 1))
        .collect();
    counts.insert(JobStatus::Running, 2);
    m.set_active("g/p", &counts, None);
    let page = m.render().unwrap();
    let active: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("gitlab_ci_jobs_active{"))
        .collect();
    assert_eq!(active.len(), JobStatus::NON_FINAL.len() + 1, "{active:?}");
    assert!(page.contains(r#"gitlab_ci_jobs_active{project="g/p",status="unknown"} 500"#));
    assert!(page.contains(r#"gitlab_ci_jobs_active{project="g/p",status="running"} 2"#));
    // Gone again: the series goes.
    m.set_active("g/p", &BTreeMap::new(), None);
    assert!(!m.render().unwrap().contains(r#"status="unknown""#));

    let failed = |reason: String| Event::Completed {
        labels: crate::tracker::JobLabels {
            ref_: "main".into(),
            stage: "test".into(),
            name: "rspec".into(),
            tag: false,
            runner: None,
        },
        status: JobStatus::Failed,
        failure_reason: reason,
        duration: None,
        finished_at: None,
    };
    let mut events: Vec<Event> = (0..500).map(|i| failed(format!("invented_{i}"))).collect();
    events.push(failed("script_failure".into()));
    events.push(failed("Forged\nline".into()));
    m.apply("g/p", &events);
    let page = m.render().unwrap();
    let reasons: BTreeSet<&str> = page
        .lines()
        .filter(|l| l.starts_with("gitlab_ci_jobs_total{"))
        .filter_map(|l| l.split("failure_reason=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(reasons.len(), MAX_NEW_FAILURE_REASONS + 2, "{reasons:?}");
    assert!(reasons.contains("script_failure") && reasons.contains("other"));
    assert!(reasons.contains("invented_0") && !reasons.contains("invented_499"));
    let total: f64 = page
        .lines()
        .filter(|l| l.starts_with("gitlab_ci_jobs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 502.0, "every job still counted");
}

#[test]
fn renders_before_any_job_and_after_some() {
    let m = Metrics::new(&MetricsSettings::default(), 2, &Default::default()).unwrap();
    let page = m.render().unwrap();
    assert!(page.contains("gitlab_jobs_exporter_build_info"));
    assert!(!page.contains("gitlab_ci_jobs_total{"));
    let labels = crate::tracker::JobLabels {
        ref_: "main".into(),
        stage: "test".into(),
        name: "rspec".into(),
        tag: false,
        runner: None,
    };
    m.apply(
        "g/p",
        &[Event::Completed {
            labels,
            status: JobStatus::Success,
            failure_reason: String::new(),
            duration: Some(3.0),
            finished_at: None,
        }],
    );
    let page = m.render().unwrap();
    assert!(page.contains(r#"gitlab_ci_jobs_total{failure_reason="",job="rspec",project="g/p",ref="main",stage="test",status="success"} 1"#), "{page}");
    assert!(page.contains("gitlab_ci_job_duration_seconds_count"));
    // The cap (2 series here): a third job name folds into job="__other__".
    for name in ["lint", "build", "deploy"] {
        m.apply(
            "g/p",
            &[Event::Completed {
                labels: crate::tracker::JobLabels {
                    ref_: "main".into(),
                    stage: "test".into(),
                    name: name.into(),
                    tag: false,
                    runner: None,
                },
                status: JobStatus::Success,
                failure_reason: String::new(),
                duration: None,
                finished_at: None,
            }],
        );
    }
    let page = m.render().unwrap();
    assert!(
        page.contains(r#"job="lint""#) && !page.contains(r#"job="build""#),
        "{page}"
    );
    assert!(page.contains(r#"job="__other__""#), "{page}");
    assert!(
        page.contains(r#"gitlab_jobs_exporter_series{metric="gitlab_ci_jobs_total"} 3"#),
        "{page}"
    );
}

/// `/metrics` opens with the job counter, then the other counters and gauges (the
/// never-published checkpoint ones among them); the histograms' bucket lines come last.
#[tokio::test]
async fn the_page_puts_the_job_counter_and_gauges_before_the_histograms() {
    use crate::model::JobStatus;
    use crate::tracker::{Event, JobLabels};
    let m = Arc::new(Metrics::new(&MetricsSettings::default(), 100, &Default::default()).unwrap());
    let labels = JobLabels {
        ref_: "main".into(),
        stage: "test".into(),
        name: "rspec".into(),
        tag: false,
        runner: None,
    };
    m.apply(
        "g/p",
        &[
            Event::Started {
                labels: labels.clone(),
                queued_duration: 3.0,
            },
            Event::Completed {
                labels,
                status: JobStatus::Success,
                failure_reason: String::new(),
                duration: Some(30.0),
                finished_at: Some(1_790_000_000.0),
            },
        ],
    );
    m.observe_request("jobs", "200", 0.1);
    let check = |page: &str| {
        let types: Vec<(&str, &str)> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert_eq!(
            types.first().map(|t| t.0),
            Some("gitlab_ci_jobs_total"),
            "{page}"
        );
        let first_histogram = types.iter().position(|t| t.1 == "histogram");
        let last_other = types.iter().rposition(|t| t.1 != "histogram");
        assert!(first_histogram.is_some(), "{page}");
        assert!(last_other < first_histogram, "{types:?}");
        assert!(page.contains("gitlab_jobs_exporter_checkpoint_failures_total 0"));
    };
    // Live, and as published from a checkpoint.
    check(&m.render().unwrap());
    let chunks = m.scrape().await.unwrap();
    check(
        &chunks
            .iter()
            .map(|b| String::from_utf8_lossy(b))
            .collect::<String>(),
    );
    let page = m.render_with(m.own_families(), &m.lock_jobs()).unwrap();
    m.publish(page, 1_790_000_000.0);
    check(&m.render().unwrap());
}

/// The page as the `prometheus` crate's encoder wrote it from protobuf families: the reference
/// the direct renderer must match byte for byte.
fn encoder_page(m: &Metrics, jobs: &BTreeMap<String, jobs::ProjectSeries>) -> String {
    use prometheus::Encoder;
    let mut families = m.own_families();
    families.extend(jobs::families(jobs.iter(), &m.bounds, &m.layout));
    families.sort_by(|a, b| (rank(a), a.name()).cmp(&(rank(b), b.name())));
    let mut buf = Vec::new();
    TextEncoder::new().encode(&families, &mut buf).unwrap();
    String::from_utf8(buf).unwrap()
}

fn busy_metrics(jobs: usize) -> Arc<Metrics> {
    let m = Arc::new(
        Metrics::new(&MetricsSettings::default(), usize::MAX, &Default::default()).unwrap(),
    );
    for i in 0..jobs {
        let labels = crate::tracker::JobLabels {
            ref_: format!("ref-\"{}\"", i % 3),
            stage: "test".into(),
            name: format!("job-{i}\n\\é"),
            tag: false,
            runner: None,
        };
        m.apply(
            &format!("g/p-{}", i % 4),
            &[
                Event::Started {
                    labels: labels.clone(),
                    queued_duration: i as f64 / 7.0,
                },
                Event::Completed {
                    labels,
                    status: JobStatus::Failed,
                    failure_reason: "script_failure".into(),
                    duration: Some(i as f64 * 1.5),
                    finished_at: None,
                },
            ],
        );
    }
    m.observe_request("jobs", "200", 0.2);
    m.set_active(
        "g/p-0",
        &BTreeMap::from([(JobStatus::Running, 3)]),
        Some(12.5),
    );
    m
}

#[test]
fn the_page_is_the_encoders_byte_for_byte() {
    let m = busy_metrics(40);
    let jobs = m.lock_jobs().clone();
    let page = m.render_with(m.own_families(), &jobs).unwrap();
    assert_eq!(page, encoder_page(&m, &jobs));
    // The job counter first, the histograms last, the split where they begin.
    assert!(page.starts_with("# HELP gitlab_ci_jobs_total "), "{page}");
    let live = m.render_live().unwrap();
    assert_eq!(live.split, histograms_start(&live.text));
    assert!(live.text[live.split..].starts_with(b"# HELP gitlab_ci_job_duration_seconds "));
}

fn gunzip(chunks: &[Bytes]) -> String {
    use std::io::Read;
    let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let mut out = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Concurrent gzip scrapes share one render and one compression; what they decode to is the
/// plain page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_gzip_scrapes_share_one_compressed_page() {
    let m = busy_metrics(200);
    // The render waits for the jobs lock, held here until all three scrapes have joined it
    // (each holds the shared render): however loaded the machine, none can finish first.
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let m = m.clone();
        std::thread::spawn(move || {
            let _jobs = m.lock_jobs();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        })
    };
    locked.recv().unwrap();
    let scrape = |gzip| {
        let m = m.clone();
        tokio::spawn(async move { m.scrape_as(gzip).await })
    };
    let (a, b, c) = (scrape(true), scrape(true), scrape(false));
    while lock(&m.rendering)
        .as_ref()
        .map_or(0, |(_, cell)| Arc::strong_count(cell))
        < 4
    {
        tokio::task::yield_now().await;
    }
    release.send(()).unwrap();
    holder.join().unwrap();
    let (a, b, c) = (
        a.await.unwrap().unwrap(),
        b.await.unwrap().unwrap(),
        c.await.unwrap().unwrap(),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(a[0].as_ptr(), b[0].as_ptr(), "one compressed head");
    assert_eq!(a[2].as_ptr(), b[2].as_ptr(), "one compressed tail");
    let plain: Vec<u8> = c.iter().flat_map(|c| c.iter().copied()).collect();
    let plain = String::from_utf8(plain).unwrap();
    assert_eq!(gunzip(&a), plain);
    assert_eq!(gunzip(&b), plain);
    let size: usize = a.iter().map(Bytes::len).sum();
    assert!(size * 8 < plain.len(), "{size} of {}", plain.len());
    // A published page is compressed once too, and its live tail stays live.
    m.publish(m.render().unwrap(), 1_790_000_000.0);
    let (d, e) = tokio::join!(m.scrape_as(true), m.scrape_as(true));
    let (d, e) = (d.unwrap(), e.unwrap());
    assert_eq!(d[0].as_ptr(), e[0].as_ptr());
    m.checkpoint_failed();
    let f = m.scrape_as(true).await.unwrap();
    assert_eq!(d[0].as_ptr(), f[0].as_ptr());
    let text = gunzip(&f);
    assert_eq!(text, m.render().unwrap());
    assert!(text.contains("gitlab_jobs_exporter_checkpoint_failures_total 1\n"));
}

/// A published snapshot is rendered when a scrape asks, byte for byte the page of the values it
/// holds (not the live ones); scrapes while one holds its page share that page, and once none
/// does the page is freed and rendered again.
#[tokio::test]
async fn a_published_snapshot_is_rendered_on_demand_from_its_values() {
    let m = busy_metrics(40);
    let own = m.own_families();
    let series = m.lock_jobs().clone();
    let expected = m.render_with(own.clone(), &series).unwrap();
    m.publish_snapshot(Snapshot::new(own, series), 1_790_000_000.0);
    // After the checkpoint: live values change, the published page must not.
    m.remove_project("g/p-1", &[]);
    let joined = |chunks: &[Bytes]| {
        chunks
            .iter()
            .map(|b| String::from_utf8_lossy(b))
            .collect::<String>()
    };
    let a = m.scrape().await.unwrap();
    assert_eq!(joined(&[a[0].clone(), a[2].clone()]), expected);
    assert!(expected.contains("project=\"g/p-1\""));
    assert!(
        joined(&a[1..2])
            .contains("gitlab_jobs_exporter_last_checkpoint_timestamp_seconds 1790000000")
    );
    let b = m.scrape().await.unwrap();
    assert_eq!(
        a[0].as_ptr(),
        b[0].as_ptr(),
        "one render while a scrape holds it"
    );
    let weak = lock(
        &match lock(&m.published).clone() {
            Some(Published::Snapshot(s)) => s,
            _ => panic!("a snapshot is published"),
        }
        .page,
    )
    .clone();
    drop((a, b));
    assert!(weak.upgrade().is_none(), "the page is freed once sent");
    let c = m.scrape_as(false).await.unwrap();
    assert_eq!(joined(&[c[0].clone(), c[2].clone()]), expected);
    assert_eq!(joined(&c), m.render().unwrap());
    let gz = m.scrape_as(true).await.unwrap();
    assert_eq!(gunzip(&gz), m.render().unwrap());
}
