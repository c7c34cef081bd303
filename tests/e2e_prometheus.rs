//! End to end with a real Prometheus (Debian's `prometheus` package; scripts/install-test-deps.sh
//! installs it): the simulator, the exporter and Prometheus on loopback ports, Prometheus
//! scraping every second with the example scrape configuration and the recording and alerting
//! rules of deploy/prometheus loaded. After a scripted history, checked through Prometheus' HTTP
//! API: the target is up, every PromQL expression of both Grafana dashboards (template variables
//! substituted) and of every recording rule parses and returns data, the rules are healthy, and
//! `sum(gitlab_ci_jobs_total)` equals the simulator's ground truth, per project too.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{HOOK_SECRET, Harness, assert_matches_truth, by_id, by_path, with_webhooks};
use gitlab_sim::{Fault, HookKnobs, HookSender, Ms, ProjectSpec, World, WorldSpec};
use serde_json::Value;

const MIN: Ms = 60_000;
const HOUR: Ms = 60 * MIN;
const T0: Ms = 1_790_000_000_000;
/// How long Prometheus may take to show what the exporter serves (it scrapes every second).
const DEADLINE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn world() -> World {
    let projects = vec![
        ProjectSpec {
            id: 31,
            path: "acme/platform/api".into(),
            pipelines_per_hour: 14.0,
        },
        ProjectSpec {
            id: 32,
            path: "acme/web/frontend".into(),
            pipelines_per_hour: 9.0,
        },
        ProjectSpec {
            id: 33,
            path: "tools/cli".into(),
            pipelines_per_hour: 4.0,
        },
    ];
    // Retry chains and late retries: flaky passes for the "Flaky jobs" table and its alert.
    World::generate(
        &WorldSpec::new(projects, T0, T0 + 4 * HOUR).with_retries(2),
        1,
    )
}

/// Webhooks on and failed jobs classified from their logs ("Why jobs fail").
fn hooks_and_classes(cfg: &mut gitlab_jobs_exporter::config::Config) {
    with_webhooks(cfg);
    cfg.failures.classify = true;
}

/// A Prometheus server in a temporary directory, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One query's outcome: the number of series (a scalar counts as one) and whether any value is
/// a number (not NaN).
struct Answer {
    series: usize,
    any_number: bool,
}

impl Prometheus {
    /// Writes the configuration derived from deploy/prometheus/scrape-config.yml (scraping
    /// `target` every second, evaluating every second, loading the repository's rules) and
    /// starts Prometheus on a free loopback port.
    async fn start(target: &str) -> Self {
        let mut dir = tempfile::tempdir().expect("tempdir");
        let config = scrape_config(target);
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config).expect("write prometheus.yml");
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config_path)
            .output()
            .expect("promtool is installed (run scripts/install-test-deps.sh)");
        assert!(
            check.status.success(),
            "promtool check config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        // Prometheus takes no inherited socket, so its port is picked (bound and released)
        // before it starts; another process may take it meanwhile: then it starts again.
        for attempt in 1.. {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a loopback port")
                .port();
            let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("prometheus is installed (run scripts/install-test-deps.sh)");
            let prom = Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir,
                http: reqwest::Client::new(),
            };
            match prom.ready().await {
                Ok(prom) => return prom,
                Err(prom) if attempt < 5 && prom.log().contains("address already in use") => {
                    dir = prom.into_dir();
                }
                Err(prom) => panic!("prometheus exited:\n{}", prom.log()),
            }
        }
        unreachable!("the loop returns or panics")
    }

    /// Waits until Prometheus is ready; `Err` if it exited first.
    async fn ready(mut self) -> Result<Self, Self> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                return Err(self);
            }
            let ready = self
                .http
                .get(format!("{}/-/ready", self.url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(self);
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The temporary directory of a Prometheus that has exited, for the next start.
    fn into_dir(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        drop(self);
        dir
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let resp = self
            .http
            .get(format!("{}/api/v1/{path}", self.url))
            .query(query)
            .send()
            .await
            .expect("prometheus answers");
        resp.json().await.expect("JSON from prometheus")
    }

    /// An instant query: `Err` with Prometheus' message when it fails (a parse error, say).
    async fn query(&self, expr: &str) -> Result<Answer, String> {
        let v = self.api("query", &[("query", expr)]).await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        let number = |s: &Value| {
            s.as_str()
                .is_some_and(|s| s.parse::<f64>().is_ok_and(|f| !f.is_nan()))
        };
        let data = &v["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => {
                let result = data["result"].as_array().cloned().unwrap_or_default();
                let any_number = result.iter().any(|s| {
                    number(&s["value"][1])
                        || s["values"]
                            .as_array()
                            .is_some_and(|vs| vs.iter().any(|p| number(&p[1])))
                });
                Answer {
                    series: result.len(),
                    any_number,
                }
            }
            _ => Answer {
                series: 1,
                any_number: number(&data["result"][1]),
            },
        })
    }

    /// Value of a query returning one sample.
    async fn scalar(&self, expr: &str) -> Option<f64> {
        let v = self.api("query", &[("query", expr)]).await;
        let result = v["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Polls until `expr` has the value `want`.
    async fn wait_for_value(&self, expr: &str, want: f64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.scalar(expr).await;
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} is {got:?} in Prometheus, want {want}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// deploy/prometheus/scrape-config.yml with the target, the intervals and the rule files made
/// fit for the test. Each replacement must apply: the example may not drift unnoticed.
fn scrape_config(target: &str) -> String {
    let rules = repo().join("deploy/prometheus/rules");
    let mut config = std::fs::read_to_string(repo().join("deploy/prometheus/scrape-config.yml"))
        .expect("scrape-config.yml");
    for (from, to) in [
        ("scrape_interval: 30s", "scrape_interval: 1s".to_string()),
        (
            "evaluation_interval: 30s",
            "evaluation_interval: 1s".to_string(),
        ),
        ("scrape_timeout: 10s", "scrape_timeout: 1s".to_string()),
        ("gitlab-jobs-exporter.example.com:39129", target.to_string()),
        (
            "/etc/prometheus/rules/gitlab-jobs-exporter/",
            format!("{}/", rules.display()),
        ),
    ] {
        assert!(config.contains(from), "scrape-config.yml has no {from:?}");
        config = config.replace(from, &to);
    }
    config
}

/// The PromQL expressions of a dashboard's panels (rows included), with Grafana's variables
/// substituted; and its `label_values(selector, label)` variable queries as PromQL.
fn dashboard_exprs(path: &Path) -> Vec<(String, String)> {
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard"))
        .expect("dashboard is JSON");
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut out = Vec::new();
    fn walk(panels: &Value, name: &str, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], name, out);
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has an expr");
                let what = format!("{name}: panel {:?} target {}", p["title"], t["refId"]);
                out.push((what, substitute(expr)));
            }
        }
    }
    walk(&d["panels"], &name, &mut out);
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        let q = v["definition"].as_str().expect("definition");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: variable query {q:?} is no label_values(…)"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        let expr = format!("group by ({}) ({})", label.trim(), selector.trim());
        out.push((format!("{name}: variable {}", v["name"]), substitute(&expr)));
    }
    out
}

/// Grafana's variables as Grafana would fill them in with "All" selected.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "1h"),
        ("$project", ".*"),
        ("$ref", ".*"),
        ("$stage", ".*"),
        ("$job", ".*"),
        ("$instance", ".*"),
    ] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "unknown variable left in {e:?}");
    e
}

fn promtool(args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (run scripts/install-test-deps.sh)");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {report}");
    if args[..2] == ["check", "metrics"] {
        assert!(
            report.trim().is_empty(),
            "promtool found problems: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_work_against_a_real_prometheus() {
    let mut h = Harness::start_with(
        world(),
        T0 + 90 * MIN,
        vec![
            by_path("acme/platform/api"),
            by_id(32),
            by_path("tools/cli"),
        ],
        Duration::from_secs(3600),
        hooks_and_classes,
    )
    .await;
    // GitLab's Job Hooks too, a third of them lost: the polls find what they missed, so every
    // webhook panel and rule has data.
    let knobs = HookKnobs {
        drop: 0.3,
        duplicate: 0.1,
        max_delay: Duration::from_secs(1),
        seed: 5,
        ..HookKnobs::default()
    };
    let hooks = HookSender::new(
        &h.sim,
        &format!("{}/webhook", h.metrics_url),
        HOOK_SECRET,
        knobs,
    )
    .expect("hook sender");
    let target = h.metrics_url.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target).await;
    prom.wait_for_value(r#"up{job="gitlab-jobs-exporter"}"#, 1.0)
        .await;

    // The scripted history, in chunks: after each, Prometheus has scraped the state it left, so
    // the counters grow across many samples and every rate() has something to show.
    h.poll().await;
    let steps: Vec<Ms> = std::iter::repeat_n(2 * MIN, 60)
        .chain(std::iter::repeat_n(5 * MIN, 30))
        .collect();
    for (i, chunk) in steps.chunks(10).enumerate() {
        if i == 2 {
            // GitLab's instance throttle once: 429s and RateLimit-Remaining get series.
            h.sim.push_fault(Fault::RateLimitedText {
                retry_after_secs: 1,
            });
        }
        for step in chunk {
            h.sim.advance(Duration::from_millis(*step as u64));
            hooks.deliver_due().await;
            h.poll().await;
        }
        sync(&prom, &h).await;
    }
    h.settle().await;
    sync(&prom, &h).await;

    // Ground truth: every job once, in Prometheus as in the simulator.
    let truth = h.truth();
    assert!(truth.total_jobs() > 300, "{}", truth.total_jobs());
    // The exporter itself first, so that a difference below is Prometheus' doing.
    assert_matches_truth(&h.scrape().await, &truth);
    prom.wait_for_value("sum(gitlab_ci_jobs_total)", truth.total_jobs() as f64)
        .await;
    let mut by_project: BTreeMap<&str, u64> = BTreeMap::new();
    for (k, n) in &truth.jobs_total {
        *by_project.entry(k.project.as_str()).or_default() += n;
    }
    assert_eq!(by_project.len(), 3);
    for (project, n) in by_project {
        let expr = format!(r#"sum(gitlab_ci_jobs_total{{project="{project}"}})"#);
        assert_eq!(prom.scalar(&expr).await, Some(n as f64), "{expr}");
    }
    assert_eq!(
        prom.scalar(r#"up{job="gitlab-jobs-exporter"}"#).await,
        Some(1.0)
    );
    // Failure classes and flaky passes, each once, in Prometheus as in the simulator.
    assert!(truth.total_failures() > 0 && truth.total_flaky() > 0);
    prom.wait_for_value(
        "sum(gitlab_ci_job_failures_total)",
        truth.total_failures() as f64,
    )
    .await;
    prom.wait_for_value("sum(gitlab_ci_job_flaky_total)", truth.total_flaky() as f64)
        .await;

    // The rules: loaded, evaluated without error, alerts labelled and annotated.
    let mut recording = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let rules = prom.api("rules", &[]).await;
        let groups = rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let all: Vec<Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let unhealthy: Vec<_> = all.iter().filter(|r| r["health"] != "ok").collect();
        if !all.is_empty() && unhealthy.is_empty() {
            assert_eq!(groups.len(), 2, "{rules:#}");
            for r in &all {
                match r["type"].as_str() {
                    Some("recording") => recording.push(r.clone()),
                    Some("alerting") => {
                        assert!(
                            r["labels"]["severity"].is_string()
                                && r["annotations"]["summary"].is_string()
                                && r["annotations"]["description"].is_string(),
                            "alert without severity, summary or description: {r:#}"
                        );
                    }
                    other => panic!("rule of type {other:?}"),
                }
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules not all healthy: {unhealthy:#?}\n{}",
            prom.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(recording.len() >= 4, "{recording:#?}");

    // Every expression parses and returns at least one series with a number in it.
    let mut checks = Vec::new();
    for file in ["gitlab-ci-jobs.json", "gitlab-jobs-exporter.json"] {
        checks.extend(dashboard_exprs(&repo().join("grafana").join(file)));
    }
    for r in &recording {
        let name = r["name"].as_str().expect("name").to_string();
        let query = r["query"].as_str().expect("query").to_string();
        checks.push((format!("recording rule {name}: expr"), query));
        checks.push((format!("recording rule {name}: recorded series"), name));
    }
    assert!(checks.len() > 40, "{}", checks.len());
    let deadline = Instant::now() + DEADLINE;
    let mut pending = checks;
    loop {
        let mut failing = Vec::new();
        for (what, expr) in pending {
            match prom.query(&expr).await {
                Err(e) => panic!("{what}: {expr}\nis rejected by Prometheus: {e}"),
                Ok(a) if a.series > 0 && a.any_number => {}
                Ok(a) => failing.push((what, expr, a.series)),
            }
        }
        if failing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let list: Vec<String> = failing
                .iter()
                .map(|(what, expr, n)| format!("{what} ({n} series, none with a number): {expr}"))
                .collect();
            panic!("expressions without data:\n{}", list.join("\n"));
        }
        pending = failing.into_iter().map(|(w, e, _)| (w, e)).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // promtool agrees with the rules and with the page Prometheus scraped.
    let rules = repo().join("deploy/prometheus/rules");
    promtool(
        &[
            "check",
            "rules",
            rules.join("recording-rules.yml").to_str().unwrap(),
            rules.join("alerts.yml").to_str().unwrap(),
        ],
        None,
    );
    let (status, _, page) = h.get("/metrics").await;
    assert_eq!(status, 200);
    promtool(&["check", "metrics"], Some(&page));

    drop(prom);
    h.stop().await;
}

/// Waits until Prometheus has scraped the exporter's current poll count.
async fn sync(prom: &Prometheus, h: &Harness) {
    let polls: f64 = h
        .scrape()
        .await
        .values("gitlab_jobs_exporter_polls_total")
        .values()
        .sum();
    prom.wait_for_value("sum(gitlab_jobs_exporter_polls_total)", polls)
        .await;
}
