//! Shared harness: the simulator and the exporter (scheduler + HTTP server) on loopback ports,
//! cycles driven by hand, `/metrics` scraped over real HTTP and compared with ground truth.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gitlab_jobs_exporter::app::App;
use gitlab_jobs_exporter::config::{Config, ProjectRef, Settings};
use gitlab_jobs_exporter::fleet::runner::Scheduler;
use gitlab_jobs_exporter::gitlab::RetryPolicy;
use gitlab_jobs_exporter::project::cycle::CycleStats;
use gitlab_sim::{GroundTruth, Ms, SimClock, SimHandle, Simulator, World};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "glpat-TEST-SECRET-0123456789";

pub fn config(base_url: &str, projects: Vec<ProjectRef>, backfill: Duration) -> Config {
    let mut cfg = Config::new(base_url, TOKEN.to_string().into(), projects);
    cfg.gitlab.timeout = Duration::from_secs(5);
    // The simulator answers in microseconds; GitLab's budget would only slow tests down.
    cfg.gitlab.max_requests_per_minute = 1e9;
    // The simulated clock runs far from the local one (a fixed T0): believe it.
    cfg.gitlab.max_clock_skew = Duration::from_secs(100 * 365 * 24 * 3600);
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.poll.backfill = backfill;
    cfg
}

pub fn by_path(path: &str) -> ProjectRef {
    ProjectRef::Path(path.into())
}

pub fn by_id(id: u64) -> ProjectRef {
    ProjectRef::Id(id)
}

/// A listener on a loopback port the kernel chose, for an exporter started as a process (see
/// [`hand_over`]): the port is the test's from the start, no other test can take it meanwhile.
pub fn loopback_listener() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("bound address").port();
    (listener, port)
}

/// Starts `cmd`'s process with `listener` as its fd 3 and `LISTEN_FDS=1`: systemd socket
/// activation, which the exporter serves on instead of `server.listen`.
///
/// `LISTEN_PID` cannot be known before the fork and setting it between fork and exec
/// (`setenv`) is not async-signal-safe, so it is left unset: listenfd accepts an unset
/// `LISTEN_PID` (as systemfd's protocol does). Between fork and exec only `dup2`/`fcntl` run.
pub fn hand_over(cmd: &mut std::process::Command, listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    // The command owns its copy, so the descriptor stays valid until the command is dropped;
    // in this process it is close-on-exec, so no other child inherits it.
    let owned = listener.try_clone().expect("clone the listener");
    cmd.env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    // SAFETY: the closure runs in the forked child before exec and only calls dup2 and fcntl,
    // both async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let fd = owned.as_raw_fd();
            // dup2 clears close-on-exec on the copy; a descriptor already at 3 needs it cleared.
            let rc = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if rc == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
}

/// A loopback port where nothing answers: bound, so the kernel gives it to no one else while
/// the returned socket lives, but never listening, so every connection is refused.
pub fn refused_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&any.into()).expect("bind a loopback port");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address")
        .port();
    (socket, port)
}

/// Fast retries: the simulator answers instantly, so tests need not wait long.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        retries: 4,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(40),
        rate_limit_pause: Duration::from_millis(50),
        ..RetryPolicy::default()
    }
}

/// Awaits `check` returning `Some`, re-checking every 50 ms; fails after `limit`, naming `what`.
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// See [`Harness::hooks_handled`]; for a page scraped otherwise.
pub fn hooks_handled(scrape: &Scrape) -> f64 {
    const HANDLED: [&str; 6] = [
        "applied",
        "duplicate",
        "stale",
        "unwatched",
        "dropped",
        "forwarded",
    ];
    scrape
        .values("gitlab_jobs_exporter_webhook_events_total")
        .iter()
        .filter(|(l, _)| l.get("event").map(String::as_str) == Some("job"))
        .filter(|(l, _)| {
            l.get("result")
                .is_some_and(|r| HANDLED.contains(&r.as_str()))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// The webhook secret of tests that turn webhooks on.
pub const HOOK_SECRET: &str = "hook-SECRET-a1b2c3d4";

/// Webhooks on (on the `/metrics` listener), with [`HOOK_SECRET`].
pub fn with_webhooks(cfg: &mut Config) {
    cfg.webhook.enabled = true;
    cfg.webhook.secret = Some(HOOK_SECRET.to_string().into());
}

pub struct Harness {
    pub sim: Simulator,
    sim_handle: Option<SimHandle>,
    pub scheduler: Arc<Scheduler>,
    pub metrics_url: String,
    pub base_url: String,
    stop: CancellationToken,
    /// The first poll's backfill cutoff, as GitLab's clock (whole seconds) saw it.
    pub cutoff_ms: Option<Ms>,
    /// The simulated time of the first poll.
    pub first_poll_ms: Option<Ms>,
    backfill: Duration,
    http: reqwest::Client,
}

impl Harness {
    /// Starts the simulator on a manual clock at `start_ms` and the exporter against it.
    pub async fn start(
        world: World,
        start_ms: Ms,
        projects: Vec<ProjectRef>,
        backfill: Duration,
    ) -> Self {
        Self::start_with(world, start_ms, projects, backfill, |_| {}).await
    }

    /// Like [`Harness::start`], with the exporter's configuration adjusted by `tweak`.
    pub async fn start_with(
        world: World,
        start_ms: Ms,
        projects: Vec<ProjectRef>,
        backfill: Duration,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_with_settings(world, start_ms, projects, backfill, tweak, |_| {}).await
    }

    /// Like [`Harness::start_with`], with the validated settings adjusted by `adjust` too (for
    /// values validation refuses but a test wants).
    pub async fn start_with_settings(
        world: World,
        start_ms: Ms,
        projects: Vec<ProjectRef>,
        backfill: Duration,
        tweak: impl FnOnce(&mut Config),
        adjust: impl FnOnce(&mut Settings),
    ) -> Self {
        let sim = Simulator::new(world, SimClock::manual(start_ms), TOKEN.to_string());
        let sim_handle = sim.spawn().await.expect("simulator starts");
        let base_url = sim_handle.base_url.clone();
        let mut cfg = config(&base_url, projects, backfill);
        tweak(&mut cfg);
        let mut settings = cfg.validate().expect("valid configuration");
        adjust(&mut settings);
        Self::start_exporter(sim, sim_handle, settings).await
    }

    pub async fn start_exporter(sim: Simulator, sim_handle: SimHandle, cfg: Settings) -> Self {
        let app = App::new(&cfg, fast_retry()).expect("exporter parts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let s = stop.clone();
        app.spawn_http(listener, async move { s.cancelled().await });
        app.spawn_hooks(stop.clone());
        let scheduler = app.scheduler;
        Self {
            base_url: sim_handle.base_url.clone(),
            sim,
            sim_handle: Some(sim_handle),
            scheduler,
            metrics_url: format!("http://{addr}"),
            stop,
            cutoff_ms: None,
            first_poll_ms: None,
            backfill: cfg.poll.backfill,
            http: reqwest::Client::new(),
        }
    }

    /// One cycle of every project; panics if any fails.
    pub async fn poll(&mut self) -> Vec<CycleStats> {
        if self.cutoff_ms.is_none() {
            // The Date header has whole seconds.
            let now = self.sim.now_ms();
            self.cutoff_ms = Some(now - now.rem_euclid(1000) - self.backfill.as_millis() as Ms);
            self.first_poll_ms = Some(now);
        }
        self.scheduler
            .poll_all_once()
            .await
            .into_iter()
            .map(|r| r.expect("poll cycle succeeds"))
            .collect()
    }

    /// Polls without moving the clock until every project has swept its deep manual jobs, so
    /// the exporter has caught up with everything that happened.
    pub async fn settle(&mut self) {
        for _ in 0..gitlab_jobs_exporter::project::cycle::COLD_SWEEP_CYCLES {
            self.poll().await;
        }
    }

    pub fn truth(&self) -> GroundTruth {
        self.sim.ground_truth_since(
            self.cutoff_ms.expect("polled at least once"),
            self.first_poll_ms.expect("polled at least once"),
        )
    }

    /// The truth restricted to some projects (when the world holds more than are watched).
    pub fn truth_for(&self, projects: &[&str]) -> GroundTruth {
        let keep = |p: &String| projects.contains(&p.as_str());
        let mut t = self.truth();
        t.jobs_total.retain(|k, _| keep(&k.project));
        t.duration.retain(|k, _| keep(&k.project));
        t.queued.retain(|k, _| keep(&k.project));
        t.active.retain(|k, _| keep(&k.0));
        t.oldest_pending.retain(|k, _| keep(k));
        t
    }

    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.metrics_url))
            .send()
            .await
            .expect("exporter answers");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        (status, ct, resp.text().await.expect("body"))
    }

    /// POSTs `body` to `/webhook` with `headers`; the status and body of the answer.
    pub async fn post_hook(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}/webhook", self.metrics_url))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("exporter answers");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// The value of `gitlab_jobs_exporter_webhook_events_total{event, result}` (0 if absent).
    pub async fn hook_events(&self, event: &str, result: &str) -> f64 {
        self.scrape()
            .await
            .values("gitlab_jobs_exporter_webhook_events_total")
            .iter()
            .filter(|(l, _)| l.get("event").map(String::as_str) == Some(event))
            .filter(|(l, _)| l.get("result").map(String::as_str) == Some(result))
            .map(|(_, v)| *v)
            .sum()
    }

    /// Job events the exporter has dealt with (applied or not), over every result but the
    /// refusals: once it reaches the deliveries sent, every one of them was handled.
    pub async fn hooks_handled(&self) -> f64 {
        hooks_handled(&self.scrape().await)
    }

    pub async fn scrape(&self) -> Scrape {
        let (status, _, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        Scrape::parse(&body)
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(h) = self.sim_handle.take() {
            h.shutdown().await;
        }
    }
}

/// A parsed `/metrics` page.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<prometheus_parse::Sample>,
}

pub type Labels = BTreeMap<String, String>;

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
        Self {
            text: text.to_string(),
            samples: parsed.samples,
        }
    }

    fn labels(s: &prometheus_parse::Sample) -> Labels {
        s.labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Counter or gauge values of `name`, by label set.
    pub fn values(&self, name: &str) -> BTreeMap<Labels, f64> {
        self.samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some((Self::labels(s), v)),
                _ => None,
            })
            .collect()
    }

    /// Histograms of `name`: (count, sum, cumulative bucket counts by upper bound).
    pub fn histograms(&self, name: &str) -> BTreeMap<Labels, Histogram> {
        let mut out = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.metric == name) {
            if let prometheus_parse::Value::Histogram(buckets) = &s.value {
                let mut labels = Self::labels(s);
                labels.remove("le");
                let h: &mut Histogram = out.entry(labels).or_default();
                h.buckets = buckets.iter().map(|b| (b.less_than, b.count)).collect();
            }
        }
        for (suffix, is_count) in [("_count", true), ("_sum", false)] {
            for (labels, v) in self.values(&format!("{name}{suffix}")) {
                let h = out.entry(labels).or_default();
                if is_count {
                    h.count = v;
                } else {
                    h.sum = v;
                }
            }
        }
        out
    }
}

#[derive(Debug, Default, Clone)]
pub struct Histogram {
    pub count: f64,
    pub sum: f64,
    pub buckets: Vec<(f64, f64)>,
}

fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn assert_hist_matches(what: &str, key: &Labels, h: Option<&Histogram>, values: &[f64]) {
    let h = h.unwrap_or_else(|| panic!("{what}: no histogram for {key:?}"));
    assert_eq!(h.count, values.len() as f64, "{what} count for {key:?}");
    let sum: f64 = values.iter().sum();
    assert!(
        (h.sum - sum).abs() <= 1e-6 * sum.abs().max(1.0),
        "{what} sum for {key:?}: {} vs {sum}",
        h.sum
    );
    for (le, count) in &h.buckets {
        let expected = values.iter().filter(|v| **v <= *le).count() as f64;
        assert_eq!(*count, expected, "{what} bucket le={le} for {key:?}");
    }
}

/// Every job metric equals the ground truth exactly (histogram sums to float rounding).
pub fn assert_matches_truth(scrape: &Scrape, truth: &GroundTruth) {
    check_truth(scrape, truth)
}

/// Whether every job metric equals the ground truth (see [`assert_matches_truth`]).
pub fn matches_truth(scrape: &Scrape, truth: &GroundTruth) -> bool {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_truth(scrape, truth)))
        .is_ok();
    std::panic::set_hook(hook);
    ok
}

fn check_truth(scrape: &Scrape, truth: &GroundTruth) {
    // gitlab_ci_jobs_total: same series, same values.
    let got = scrape.values("gitlab_ci_jobs_total");
    let mut want = BTreeMap::new();
    for (k, n) in &truth.jobs_total {
        want.insert(
            labels([
                ("project", &k.project),
                ("ref", &k.ref_),
                ("stage", &k.stage),
                ("job", &k.job),
                ("status", &k.status),
                ("failure_reason", &k.failure_reason),
            ]),
            *n as f64,
        );
    }
    let got_nonzero: BTreeMap<_, _> = got.into_iter().filter(|(_, v)| *v != 0.0).collect();
    if got_nonzero != want {
        let missing: Vec<_> = want
            .iter()
            .filter(|(k, v)| got_nonzero.get(*k) != Some(v))
            .collect();
        let extra: Vec<_> = got_nonzero
            .iter()
            .filter(|(k, v)| want.get(*k) != Some(v))
            .collect();
        panic!(
            "gitlab_ci_jobs_total differs from ground truth ({} vs {} jobs)\nwant but not got: {missing:#?}\ngot but not wanted: {extra:#?}",
            got_nonzero.values().sum::<f64>(),
            truth.total_jobs()
        );
    }

    let durations = scrape.histograms("gitlab_ci_job_duration_seconds");
    assert_eq!(
        durations.values().map(|h| h.count).sum::<f64>(),
        truth.duration_count() as f64,
        "duration observations"
    );
    for (k, values) in &truth.duration {
        let key = labels([
            ("project", &k.project),
            ("ref", &k.ref_),
            ("stage", &k.stage),
            ("job", &k.job),
            ("status", &k.status),
        ]);
        assert_hist_matches("duration", &key, durations.get(&key), values);
    }

    let queued = scrape.histograms("gitlab_ci_job_queued_duration_seconds");
    assert_eq!(
        queued.values().map(|h| h.count).sum::<f64>(),
        truth.queued_count() as f64,
        "queued observations"
    );
    for (k, values) in &truth.queued {
        let key = labels([
            ("project", &k.project),
            ("ref", &k.ref_),
            ("stage", &k.stage),
            ("job", &k.job),
        ]);
        assert_hist_matches("queued", &key, queued.get(&key), values);
    }

    let active: BTreeMap<_, _> = scrape
        .values("gitlab_ci_jobs_active")
        .into_iter()
        .filter(|(_, v)| *v != 0.0)
        .collect();
    let want_active: BTreeMap<_, _> = truth
        .active
        .iter()
        .map(|((p, s), n)| (labels([("project", p), ("status", s)]), *n as f64))
        .collect();
    assert_eq!(active, want_active, "gitlab_ci_jobs_active");

    let oldest = scrape.values("gitlab_ci_jobs_oldest_pending_timestamp_seconds");
    assert_eq!(
        oldest.len(),
        truth.oldest_pending.len(),
        "projects with a pending job: {oldest:?} vs {:?}",
        truth.oldest_pending
    );
    for (project, t) in &truth.oldest_pending {
        let got = oldest
            .get(&labels([("project", project)]))
            .unwrap_or_else(|| panic!("no oldest pending for {project}"));
        // GitLab's Date header has whole seconds: the exporter's estimate may be up to 1 s early.
        assert!(
            (got - t).abs() <= 1.0,
            "oldest pending for {project}: {got} vs {t}"
        );
    }
}
