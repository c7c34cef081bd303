//! The shipped deployment files, checked offline with real tools (scripts/install-test-deps.sh
//! installs them): the Grafana dashboards' structure and documentation, the Prometheus rules with
//! promtool (syntax and unit tests), the systemd unit with `systemd-analyze verify` and `security`,
//! the kustomize base and its sharded overlays and the Helm chart rendered by kubectl and helm and
//! validated against Kubernetes' and the prometheus-operator's schemas, the Dockerfile with
//! hadolint. Every configuration they ship is run through the exporter's own `--check-config`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const EXPORTER: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");
/// Kubernetes versions the manifests are validated against: the chart's oldest and the newest
/// the validator knows.
const KUBERNETES: [&str; 2] = ["1.29.0", "1.37.0"];
/// Where the manifests mount things, and what the configurations they ship must point at.
const CONFIG_DIR: &str = "/etc/gitlab-jobs-exporter";
const TOKEN_DIR: &str = "/var/run/secrets/gitlab-jobs-exporter";
const STATE_DIR: &str = "/var/lib/gitlab-jobs-exporter";
/// Webhooks (issue 11): the environment variable with the secret GitLab sends, what the
/// manifests' Secret references stand for when their configuration is checked, and the port.
const WEBHOOK_SECRET_ENV: &str = "GITLAB_WEBHOOK_SECRET";
const WEBHOOK_SECRET: &str = "whsec-from-the-secret";
const WEBHOOK_PORT: u64 = 39130;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A tool installed by scripts/install-test-deps.sh under $GJE_TEST_TOOLS.
fn tool(rel: &str) -> PathBuf {
    let dir = std::env::var_os("GJE_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/gitlab-jobs-exporter-test-tools"));
    let path = dir.join(rel);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-test-deps.sh)"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs the command and returns its stdout; panics with its output if it fails.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn python() -> Command {
    let mut cmd = Command::new(tool("venv/bin/python"));
    cmd.arg(repo().join("tests/deploy/k8s.py"));
    cmd
}

/// The YAML documents of a file, as JSON.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let json = ok(python().arg("json").arg(path));
    let docs: Value = serde_json::from_str(&json).expect("JSON");
    docs.as_array().expect("a list of documents").clone()
}

/// Validates every resource of the file against the Kubernetes and prometheus-operator schemas.
fn validate(path: &Path) {
    for version in KUBERNETES {
        let report = ok(python().args(["validate", version]).arg(path));
        assert!(!report.contains("FAIL"), "{report}");
        assert!(report.lines().count() >= 3, "{report}");
    }
}

/// Writes `text` to a temporary file.
fn temp_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Runs the exporter's `--check-config` on a configuration as a deployment ships it: `env` and
/// the configuration's paths under the token and state mounts are mapped into `tmp`. Returns
/// the effective configuration.
fn check_config(config: &str, env: &[(String, String)], tmp: &Path) -> String {
    try_check_config(config, env, tmp).unwrap_or_else(|e| panic!("{e}"))
}

/// The effective `[webhook]` section of a configuration with webhooks on.
fn webhook_effective(config: &str, env: &[(String, String)], tmp: &Path) -> Value {
    let effective = check_config(config, env, tmp);
    let webhook = toml_json(&effective)["webhook"].clone();
    assert_eq!(webhook["enabled"], true, "{effective}");
    webhook
}

/// [`check_config`], `Err` with the exporter's output if it refuses.
fn try_check_config(config: &str, env: &[(String, String)], tmp: &Path) -> Result<String, String> {
    let map = |s: &str| {
        s.replace(TOKEN_DIR, &tmp.join("token").display().to_string())
            .replace(STATE_DIR, &tmp.join("state").display().to_string())
    };
    std::fs::create_dir_all(tmp.join("token")).expect("mkdir");
    std::fs::create_dir_all(tmp.join("state")).expect("mkdir");
    std::fs::write(tmp.join("token/token"), "glpat-from-the-secret\n").expect("token");
    let path = temp_file(tmp, "config.toml", &map(config));
    let mut cmd = Command::new(EXPORTER);
    cmd.arg("--config").arg(&path).arg("--check-config");
    cmd.env_remove("GITLAB_TOKEN")
        .env_remove(WEBHOOK_SECRET_ENV);
    for (k, _) in std::env::vars() {
        if k.starts_with("GITLAB_JOBS_EXPORTER__") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, map(v));
    }
    let out = run(&mut cmd);
    if !out.status.success() {
        return Err(format!("{cmd:?} failed:\n{}", text(&out)));
    }
    let effective = String::from_utf8(out.stdout).expect("UTF-8");
    for secret in ["glpat-from-the-secret", WEBHOOK_SECRET] {
        assert!(!effective.contains(secret), "{effective}");
    }
    assert!(
        effective.contains(&format!(
            "token_file = \"{}\"",
            tmp.join("token/token").display()
        )),
        "the token is not read from the mounted Secret:\n{effective}"
    );
    assert!(
        effective.contains(&format!("dir = \"{}\"", tmp.join("state").display())),
        "the checkpoint is not written to the state volume:\n{effective}"
    );
    Ok(effective)
}

/// A TOML document as JSON (panics with the text if it is not valid TOML).
fn toml_json(text: &str) -> Value {
    toml::from_str(text).unwrap_or_else(|e| panic!("invalid TOML: {e}\n{text}"))
}

fn dashboard(name: &str) -> Value {
    serde_json::from_str(&read(format!("grafana/{name}"))).expect("dashboard JSON")
}

/// All panels, those inside rows included.
fn panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

/// Panels and rows of the top level tile the grid without overlapping.
fn assert_no_overlap(file: &str, d: &Value) {
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in d["panels"].as_array().expect("panels") {
        let pos = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| pos[k].as_u64().expect("gridPos"));
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            if let Some(other) = cells.insert(cell, title.clone()) {
                panic!("{file}: {title} overlaps {other} at {cell:?}");
            }
        }
    }
}

/// Template variables are matched with `=~`, so that "All" (`.*`) and multi-values work.
fn assert_regex_matches(expr: &str, vars: &[&str], what: &str) {
    for var in vars {
        for (i, _) in expr.match_indices(&format!("\"${var}\"")) {
            assert!(
                expr[..i].ends_with("=~"),
                "{what}: ${var} without =~ in {expr}"
            );
        }
    }
}

#[test]
fn dashboards_are_provisionable_and_documented() {
    let readme = read("grafana/README.md");
    for (file, uid, vars) in [
        (
            "gitlab-ci-jobs.json",
            "gitlab-ci-jobs",
            &["datasource", "project", "ref", "stage", "job"][..],
        ),
        (
            "gitlab-jobs-exporter.json",
            "gitlab-jobs-exporter",
            &["datasource", "instance", "project"][..],
        ),
    ] {
        let raw = read(format!("grafana/{file}"));
        assert!(!raw.contains("${DS_"), "{file}: import placeholders");
        assert!(!raw.contains("__inputs"), "{file}: import placeholders");
        let d = dashboard(file);
        assert_eq!(d["id"], Value::Null, "{file}");
        assert_eq!(d["uid"], uid, "{file}");
        assert!(readme.contains(&format!("`{uid}`")), "{uid} not in README");

        let list = d["templating"]["list"].as_array().expect("variables");
        let names: Vec<&str> = list.iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(names, vars, "{file}: variables");
        assert_eq!(list[0]["type"], "datasource", "{file}");
        assert_eq!(list[0]["query"], "prometheus", "{file}");
        for v in &list[1..] {
            assert_eq!(v["type"], "query", "{file}: {v}");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: {v}");
            assert_eq!(v["includeAll"], true, "{file}: {v}");
            assert_eq!(v["allValue"], ".*", "{file}: {v}");
            let query = v["definition"].as_str().expect("definition");
            assert_eq!(v["query"]["query"], query, "{file}: {v}");
            assert_regex_matches(query, &vars[1..], &format!("{file}: {}", v["name"]));
        }

        assert_no_overlap(file, &d);

        let mut ids = BTreeSet::new();
        let mut titles = BTreeSet::new();
        for p in panels(&d) {
            let title = p["title"].as_str().expect("title");
            assert!(
                ids.insert(p["id"].as_u64().expect("id")),
                "{file}: id of {title}"
            );
            let pos = &p["gridPos"];
            let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
            assert!(
                x + w <= 24 && pos["h"].as_u64().unwrap() > 0,
                "{file}: {title}"
            );
            if p["type"] == "row" {
                continue;
            }
            assert!(
                titles.insert(title.to_string()),
                "{file}: two panels named {title}"
            );
            assert!(
                p["description"].as_str().is_some_and(|s| s.len() > 20),
                "{file}: {title} has no description"
            );
            assert!(
                readme.contains(&format!("**{title}**")) || {
                    // "Duration p50 / p95 by stage** and **by job**"
                    let (head, tail) = title.rsplit_once(" by ").unwrap_or((title, ""));
                    readme.contains(&format!("**{head} by"))
                        && readme.contains(&format!("**by {tail}**"))
                },
                "grafana/README.md does not describe {file}: {title}"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{file}: {title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title}");
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}", "{file}: {title}");
                let expr = t["expr"].as_str().expect("expr");
                assert_regex_matches(expr, &vars[1..], &format!("{file}: {title}"));
                // Series with ref, stage and job labels follow all four variables.
                let labelled = [
                    "gitlab_ci_jobs_total",
                    "gitlab_ci_job_duration_seconds",
                    "gitlab_ci_job_queued_duration_seconds",
                    ":gitlab_ci_jobs:",
                ];
                if labelled.iter().any(|m| expr.contains(m)) {
                    for var in ["$project", "$ref", "$stage", "$job"] {
                        assert!(expr.contains(var), "{file}: {title} ignores {var}");
                    }
                }
            }
        }
    }

    let provider = read("grafana/provisioning/dashboards/gitlab-jobs-exporter.yaml");
    assert!(provider.contains("type: file"), "{provider}");
    assert!(
        provider.contains("path: /var/lib/grafana/dashboards/gitlab-jobs-exporter"),
        "{provider}"
    );
    let datasource = yaml_docs(&repo().join("grafana/provisioning/datasources/prometheus.yaml"));
    assert_eq!(datasource[0]["datasources"][0]["type"], "prometheus");
}

#[test]
fn prometheus_rules_pass_promtool_and_every_alert_is_tested() {
    let dir = repo().join("deploy/prometheus");
    let report = ok(Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("rules/recording-rules.yml"))
        .arg(dir.join("rules/alerts.yml")));
    assert!(report.contains("SUCCESS"), "{report}");
    // Every test file in tests/ (alerts.test.yml, webhooks.test.yml, …).
    let mut test_files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .expect("deploy/prometheus/tests")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yml"))
        .collect();
    test_files.sort();
    assert!(test_files.len() >= 2, "{test_files:?}");
    let report = ok(Command::new("promtool")
        .args(["test", "rules"])
        .args(&test_files));
    assert_eq!(
        report.matches("SUCCESS").count(),
        test_files.len(),
        "{report}"
    );

    let alerts: Vec<Value> = yaml_docs(&dir.join("rules/alerts.yml"))[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    let tests: Vec<Value> = test_files
        .iter()
        .flat_map(|f| yaml_docs(f)[0]["tests"].as_array().cloned().expect("tests"))
        .collect();
    // alert name -> (tested as not firing, tested as firing)
    let mut tested: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in &tests {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_string();
            let fires = case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let entry = tested.entry(name).or_default();
            if fires {
                entry.1 = true;
            } else {
                entry.0 = true;
            }
        }
    }
    for alert in &alerts {
        let name = alert["alert"].as_str().expect("only alerts in alerts.yml");
        assert!(
            alert["labels"]["severity"].is_string(),
            "{name}: no severity"
        );
        for key in ["summary", "description"] {
            assert!(alert["annotations"][key].is_string(), "{name}: no {key}");
        }
        assert_eq!(
            tested.get(name),
            Some(&(true, true)),
            "{name}: a promtool test where it fires and one where it does not"
        );
    }

    let scrape = yaml_docs(&dir.join("scrape-config.yml"));
    let job = &scrape[0]["scrape_configs"][0];
    assert_eq!(job["job_name"], "gitlab-jobs-exporter");
    assert_eq!(
        job["honor_labels"], true,
        "the exporter's job label must survive"
    );
}

/// The optional socket unit (socket activation) listens where the exporter does by default,
/// names the service, and verifies with the service beside it.
#[test]
fn systemd_socket_unit_verifies() {
    let socket = read("deploy/systemd/gitlab-jobs-exporter.socket");
    let listen = format!(
        "ListenStream={}",
        gitlab_jobs_exporter::config::DEFAULT_LISTEN
    );
    assert!(socket.lines().any(|l| l == listen), "{listen}:\n{socket}");
    assert!(socket.contains("\nService=gitlab-jobs-exporter.service\n"));
    let tmp = tempfile::tempdir().expect("tempdir");
    // systemd-analyze needs the binary where the service's ExecStart says.
    let service = read("deploy/systemd/gitlab-jobs-exporter.service")
        .replace("/usr/local/bin/gitlab-jobs-exporter", EXPORTER);
    temp_file(tmp.path(), "gitlab-jobs-exporter.service", &service);
    let path = temp_file(tmp.path(), "gitlab-jobs-exporter.socket", &socket);
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = read("deploy/systemd/gitlab-jobs-exporter.service");
    let service: Vec<(String, String)> = unit
        .lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let get = |key: &str| -> Vec<&str> {
        service
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("Restart", "on-failure"),
        ("StateDirectory", "gitlab-jobs-exporter"),
    ] {
        assert_eq!(get(key), [value], "{key}");
    }
    assert!(!get("RestrictAddressFamilies").is_empty());
    assert!(!get("SystemCallFilter").is_empty());
    // The default soft limit of 1,024 descriptors is what idle connections used to exhaust:
    // the unit sets its own, well above server.max_connections plus the GitLab pool, logs
    // and checkpoint.
    let nofile: u64 = get("LimitNOFILE")
        .first()
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE set to a number");
    let max_connections = gitlab_jobs_exporter::config::ServerConfig::default().max_connections;
    assert!(nofile >= 4 * max_connections as u64, "LimitNOFILE={nofile}");
    let exec = get("ExecStart")[0];
    assert!(
        exec.starts_with(
            "/usr/local/bin/gitlab-jobs-exporter --config /etc/gitlab-jobs-exporter/config.toml"
        ),
        "{exec}"
    );
    let (credential, source) = get("LoadCredential")[0].split_once(':').expect("name:path");
    assert_eq!(source, "/etc/gitlab-jobs-exporter/gitlab-token");

    // systemd-analyze needs the binary where ExecStart says: point it at the built one.
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = unit.replace("/usr/local/bin/gitlab-jobs-exporter", EXPORTER);
    let path = temp_file(tmp.path(), "gitlab-jobs-exporter.service", &copy);
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    // Unknown keys are only warnings to systemd-analyze: any output is a failure here.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path));
    assert!(out.status.success(), "exposure above 2.0:\n{}", text(&out));

    // The configuration as the unit hands it over: the example config, the token from the
    // credential (%d) and the checkpoint in the state directory (%S/…).
    let creds = tmp.path().join("credentials");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::write(creds.join(credential), "glpat-from-the-credential\n").expect("token");
    let env: Vec<(String, String)> = get("Environment")
        .iter()
        .map(|e| {
            let (k, v) = e.split_once('=').expect("KEY=value");
            let v = v
                .replace("%d", &creds.display().to_string())
                .replace("%S", &tmp.path().display().to_string());
            (k.to_string(), v)
        })
        .collect();
    let mut cmd = Command::new(EXPORTER);
    cmd.args(["--config"])
        .arg(repo().join("config/example.toml"))
        .arg("--check-config")
        .env_remove("GITLAB_TOKEN")
        .envs(env);
    let effective = ok(&mut cmd);
    assert!(
        effective.contains(&format!(
            "token_file = \"{}\"",
            creds.join(credential).display()
        )),
        "{effective}"
    );
    assert!(
        effective.contains(&format!(
            "dir = \"{}\"",
            tmp.path().join("gitlab-jobs-exporter").display()
        )),
        "{effective}"
    );
}

/// The `[Service]` settings of a unit file or drop-in, in order.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("key=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// config/example.toml with its commented `[webhook]` block switched on.
fn example_with_webhook() -> String {
    let example = read("config/example.toml");
    let lines: Vec<&str> = example.lines().collect();
    let start = lines
        .iter()
        .position(|l| *l == "# [webhook]")
        .expect("# [webhook]");
    let end = start
        + lines[start..]
            .iter()
            .take_while(|l| l.starts_with('#'))
            .count();
    let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    out.extend(lines[start..end].iter().map(|l| l[2..].to_string()));
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    out.join("\n") + "\n"
}

/// The webhook drop-in hands the secret over like the token (a credential, `%d`), verifies
/// with the unit, keeps it as tightly sandboxed, and the example's `[webhook]` block works
/// with it. The credential is not in the unit itself: systemd refuses to start a unit whose
/// LoadCredential= file is missing, and the file exists only where webhooks are used.
#[test]
fn systemd_webhook_dropin_hands_over_the_secret() {
    const UNIT: &str = "gitlab-jobs-exporter.service";
    let unit = read(format!("deploy/systemd/{UNIT}"));
    let dropin = read(format!("deploy/systemd/{UNIT}.d/webhook.conf"));
    assert!(
        !unit.contains("webhook"),
        "the unit needs no webhook secret"
    );
    let settings = service_settings(&dropin);
    let credential = "webhook-secret";
    assert_eq!(
        settings,
        [
            (
                "LoadCredential".to_string(),
                format!("{credential}:{CONFIG_DIR}/webhook-secret")
            ),
            (
                "Environment".to_string(),
                format!("GITLAB_JOBS_EXPORTER__WEBHOOK__SECRET_FILE=%d/{credential}")
            ),
        ]
    );

    // systemd-analyze verify reads no drop-ins: verify the unit with the drop-in's settings in
    // it; `security` reads the drop-in directory beside the unit.
    let tmp = tempfile::tempdir().expect("tempdir");
    let unit = unit.replace("/usr/local/bin/gitlab-jobs-exporter", EXPORTER);
    let body: String = dropin
        .lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    let merged = unit.replacen("[Service]\n", &format!("[Service]\n{body}"), 1);
    let merged_dir = tmp.path().join("merged");
    std::fs::create_dir_all(&merged_dir).expect("mkdir");
    let path = temp_file(&merged_dir, UNIT, &merged);
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify:\n{}",
        text(&out)
    );
    let path = temp_file(tmp.path(), UNIT, &unit);
    std::fs::create_dir_all(tmp.path().join(format!("{UNIT}.d"))).expect("mkdir");
    temp_file(
        &tmp.path().join(format!("{UNIT}.d")),
        "webhook.conf",
        &dropin,
    );
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&path));
    assert!(out.status.success(), "exposure above 2.0:\n{}", text(&out));

    // The example's [webhook] block names the credential where systemd puts it:
    // /run/credentials/<unit name>/<id> ($CREDENTIALS_DIRECTORY, %d).
    let config = example_with_webhook();
    let webhook = &toml_json(&config)["webhook"];
    let run_dir = format!("/run/credentials/{UNIT}");
    assert_eq!(webhook["secret_file"], format!("{run_dir}/{credential}"));
    assert_eq!(webhook["listen"], format!("0.0.0.0:{WEBHOOK_PORT}"));

    check_example_with_webhook(&unit, settings, &config, &run_dir, tmp.path());
}

/// The example's configuration with its [webhook] block as the unit and the drop-in hand it
/// over (`settings`: the drop-in's): the secret is read from the credential.
fn check_example_with_webhook(
    unit: &str,
    settings: Vec<(String, String)>,
    config: &str,
    run_dir: &str,
    tmp: &Path,
) {
    let credential = "webhook-secret";
    let creds = tmp.join("credentials");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::write(creds.join("gitlab-token"), "glpat-from-the-credential\n").expect("token");
    std::fs::write(creds.join(credential), format!("{WEBHOOK_SECRET}\n")).expect("secret");
    let env: Vec<(String, String)> = service_settings(unit)
        .into_iter()
        .chain(settings)
        .filter(|(k, _)| k == "Environment")
        .map(|(_, e)| {
            let (k, v) = e.split_once('=').expect("KEY=value");
            let v = v
                .replace("%d", &creds.display().to_string())
                .replace("%S", &tmp.display().to_string());
            (k.to_string(), v)
        })
        .collect();
    let config = config.replace(run_dir, &creds.display().to_string());
    let check = |config: &str, env: &[(String, String)]| {
        let path = temp_file(tmp, "config.toml", config);
        let mut cmd = Command::new(EXPORTER);
        cmd.arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env_remove("GITLAB_TOKEN")
            .env_remove(WEBHOOK_SECRET_ENV)
            .envs(env.iter().cloned());
        run(&mut cmd)
    };
    let out = check(&config, &env);
    assert!(out.status.success(), "{}", text(&out));
    let effective = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(!effective.contains(WEBHOOK_SECRET), "{effective}");
    let webhook = &toml_json(&effective)["webhook"];
    assert_eq!(webhook["enabled"], true, "{effective}");
    assert_eq!(
        webhook["secret_file"],
        creds.join(credential).display().to_string(),
        "{effective}"
    );
}

#[test]
fn example_configurations_pass_check_config() {
    // config/example.toml is checked above as the systemd unit hands it over; every example
    // in config/ (discovery.toml, …) must at least be a valid configuration.
    let mut checked = Vec::new();
    let dir = repo().join("config");
    for entry in std::fs::read_dir(&dir).expect("config/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut cmd = Command::new(EXPORTER);
        cmd.arg("--config")
            .arg(&path)
            .arg("--check-config")
            .env("GITLAB_TOKEN", "glpat-example");
        for (k, _) in std::env::vars() {
            if k.starts_with("GITLAB_JOBS_EXPORTER__") {
                cmd.env_remove(k);
            }
        }
        let effective = ok(&mut cmd);
        assert!(!effective.contains("glpat-example"), "{effective}");
        checked.push(path.file_name().unwrap().to_string_lossy().to_string());
    }
    checked.sort();
    assert!(
        checked.contains(&"example.toml".to_string())
            && checked.contains(&"discovery.toml".to_string()),
        "{checked:?}"
    );
}

/// The pod template of a Deployment or StatefulSet is locked down and wired as the exporter
/// expects; returns the container's environment.
fn assert_hardened(workload: &Value) -> Vec<(String, String)> {
    let name = &workload["metadata"]["name"];
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{name}"
    );
    assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{name}");
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{name}"
    );
    for kind in ["requests", "limits"] {
        for r in ["cpu", "memory"] {
            assert!(c["resources"][kind][r].is_string(), "{name}: {kind}.{r}");
        }
    }
    assert_eq!(c["ports"][0]["name"], "metrics", "{name}");
    assert_eq!(c["ports"][0]["containerPort"], 39129, "{name}");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{name}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{name}");
    }
    assert!(
        c["args"]
            .as_array()
            .expect("args")
            .contains(&Value::from(format!("--config={CONFIG_DIR}/config.toml"))),
        "{name}"
    );
    let mounts: BTreeMap<&str, &str> = c["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap(),
                m["name"].as_str().unwrap(),
            )
        })
        .collect();
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert!(
        volumes[mounts[CONFIG_DIR]]["configMap"].is_object(),
        "{name}"
    );
    assert!(volumes[mounts[TOKEN_DIR]]["secret"].is_object(), "{name}");
    // The checkpoint: an emptyDir, or a claim per pod of a StatefulSet.
    let state = mounts[STATE_DIR];
    match volumes.get(state) {
        Some(volume) => assert!(volume["emptyDir"].is_object(), "{name}"),
        None => assert!(
            workload["spec"]["volumeClaimTemplates"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["metadata"]["name"] == state)),
            "{name}: no volume {state}"
        ),
    }
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(env_var)
        .collect()
}

/// A container's environment variable as (name, value): plain values, but for the webhook
/// secret, which comes from a Secret (never in the manifest) and stands for WEBHOOK_SECRET.
fn env_var(e: &Value) -> (String, String) {
    let name = e["name"].as_str().unwrap().to_string();
    let value = match e["value"].as_str() {
        Some(value) => value,
        None => {
            assert_eq!(name, WEBHOOK_SECRET_ENV, "plain env values: {e}");
            let source = &e["valueFrom"]["secretKeyRef"];
            assert!(
                source["name"].is_string() && source["key"].is_string(),
                "{e}"
            );
            WEBHOOK_SECRET
        }
    };
    (name, value.to_string())
}

/// The container's `GITLAB_WEBHOOK_SECRET` source: (Secret name, key).
fn webhook_secret_ref(workload: &Value) -> (String, String) {
    let env = workload["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    let e = env
        .iter()
        .find(|e| e["name"] == WEBHOOK_SECRET_ENV)
        .expect("GITLAB_WEBHOOK_SECRET");
    let source = &e["valueFrom"]["secretKeyRef"];
    let part = |k: &str| source[k].as_str().expect("secretKeyRef").to_string();
    (part("name"), part("key"))
}

/// GitLab's way in when webhooks are on: the container's port `webhook` (WEBHOOK_PORT unless
/// `port` says otherwise) behind a Service port `webhook`, and one Ingress that routes the
/// exact path /webhook, and nothing else, to it. Returns the Ingress.
fn assert_webhook_exposed<'a>(docs: &'a [Value], workload: &Value, port: u64) -> &'a Value {
    let name = &workload["metadata"]["name"];
    let container = &workload["spec"]["template"]["spec"]["containers"][0];
    let ports = container["ports"].as_array().expect("ports");
    let webhook = ports
        .iter()
        .find(|p| p["name"] == "webhook")
        .unwrap_or_else(|| panic!("{name}: no container port webhook"));
    assert_eq!(webhook["containerPort"], port, "{name}");
    assert_eq!(ports.len(), 2, "{name}: {ports:?}");

    let ingresses = find(docs, "Ingress");
    assert_eq!(ingresses.len(), 1, "one Ingress");
    let ingress = ingresses[0];
    let rules = ingress["spec"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 1, "{ingress}");
    let paths = rules[0]["http"]["paths"].as_array().expect("paths");
    assert_eq!(paths.len(), 1, "only /webhook: {ingress}");
    assert_eq!(paths[0]["path"], "/webhook");
    assert_eq!(paths[0]["pathType"], "Exact");
    let backend = &paths[0]["backend"]["service"];
    assert_eq!(backend["port"]["name"], "webhook", "{ingress}");
    let service = find(docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == backend["name"])
        .unwrap_or_else(|| panic!("no Service {}", backend["name"]));
    let pods = &workload["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&service["spec"]["selector"], pods), "{service}");
    let service_port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .unwrap_or_else(|| panic!("Service {}: no port webhook", backend["name"]));
    assert_eq!(service_port["targetPort"], "webhook");
    assert_eq!(service_port["port"], port);
    ingress
}

/// The NetworkPolicy example: it selects the exporter's pods, restricts only inbound traffic,
/// and each rule admits someone in particular (a rule without `from` admits everyone) to the
/// metrics or the webhook port. Returns the rules' port names.
fn assert_network_policy(docs: &[Value], workload: &Value) -> Vec<String> {
    let policies = find(docs, "NetworkPolicy");
    assert_eq!(policies.len(), 1);
    let spec = &policies[0]["spec"];
    let pods = &workload["spec"]["template"]["metadata"]["labels"];
    assert!(selects(&spec["podSelector"]["matchLabels"], pods), "{spec}");
    assert_eq!(spec["policyTypes"], serde_json::json!(["Ingress"]));
    let mut ports = Vec::new();
    for rule in spec["ingress"].as_array().expect("ingress rules") {
        assert!(
            rule["from"].as_array().is_some_and(|f| !f.is_empty()),
            "a rule without `from` admits everyone: {rule}"
        );
        for p in rule["ports"].as_array().expect("ports") {
            let port = p["port"].as_str().expect("a named port").to_string();
            assert!(["metrics", "webhook"].contains(&port.as_str()), "{rule}");
            ports.push(port);
        }
    }
    ports
}

/// `peer_url` reaches shard N's pod: `http://<StatefulSet>-{shard}.<serviceName>[.<ns>.svc]:
/// <port>/webhook`, where serviceName is a headless Service selecting the StatefulSet's pods
/// with that port as `webhook`.
fn assert_peer_url(docs: &[Value], set: &Value, url: &str) {
    let re = regex::Regex::new(
        r"^http://(?P<pod>[a-z0-9-]+)-\{shard\}\.(?P<svc>[a-z0-9-]+)(\.(?P<ns>[a-z0-9-]+)\.svc)?:(?P<port>[0-9]+)/webhook$",
    )
    .unwrap();
    let caps = re.captures(url).unwrap_or_else(|| panic!("peer_url {url}"));
    let spec = &set["spec"];
    assert_eq!(set["kind"], "StatefulSet");
    assert_eq!(set["metadata"]["name"], &caps["pod"], "{url}");
    assert_eq!(spec["serviceName"], &caps["svc"], "{url}");
    if let Some(ns) = caps.name("ns") {
        assert_eq!(set["metadata"]["namespace"], ns.as_str(), "{url}");
    }
    let service = find(docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == spec["serviceName"])
        .expect("the StatefulSet's Service");
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "pod DNS names need it headless"
    );
    let pods = &spec["template"]["metadata"]["labels"];
    assert!(selects(&service["spec"]["selector"], pods));
    let port: u64 = caps["port"].parse().unwrap();
    assert!(
        service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == port && p["targetPort"] == "webhook"),
        "{service}"
    );
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn assert_scraped_with_honored_labels(docs: &[Value]) {
    let service = find(docs, "Service")[0];
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    let monitor = find(docs, "ServiceMonitor")[0];
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["honorLabels"], true);
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor selects the Service"
        );
    }
}

/// Whether a `matchLabels` selector selects an object with these labels.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("matchLabels");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

/// `kubectl kustomize` of a directory under deploy/kubernetes.
fn kustomize(dir: &str) -> String {
    ok(Command::new(tool("bin/kubectl"))
        .arg("kustomize")
        .arg(repo().join("deploy/kubernetes").join(dir)))
}

#[test]
fn kustomize_base_renders_and_validates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // deploy/kubernetes renders the base (overlays cannot sit inside the base's directory).
    let rendered = kustomize("");
    assert_eq!(rendered, kustomize("base"));
    let path = temp_file(tmp.path(), "kustomize.yaml", &rendered);
    validate(&path);
    let docs = yaml_docs(&path);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "Deployment", "Service", "ServiceMonitor"])
    );
    let deployment = find(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let env = assert_hardened(deployment);
    assert_scraped_with_honored_labels(&docs);

    let config_map = find(&docs, "ConfigMap")[0];
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains(&format!("\"name\":{}", config_map["metadata"]["name"])));
    let config = config_map["data"]["config.toml"]
        .as_str()
        .expect("config.toml");
    check_config(config, &env, tmp.path());
}

/// A sharded overlay's StatefulSets: every pod scraped once, and the configuration's
/// shard.count equal to the replicas. Returns each StatefulSet's configuration.
fn assert_sharded(docs: &[Value], tmp: &Path) -> Vec<String> {
    let sets = find(docs, "StatefulSet");
    let services = find(docs, "Service");
    let monitors = find(docs, "ServiceMonitor");
    assert_eq!(services.len(), sets.len());
    assert_eq!(monitors.len(), sets.len());
    let mut configs = Vec::new();
    for set in sets {
        let name = set["metadata"]["name"].as_str().unwrap();
        let spec = &set["spec"];
        assert_eq!(spec["replicas"], 3, "{name}");
        assert_eq!(spec["podManagementPolicy"], "Parallel", "{name}");
        let env = assert_hardened(set);
        let template = &spec["template"]["metadata"]["labels"];
        assert!(
            selects(&spec["selector"]["matchLabels"], template),
            "{name}"
        );
        // The checkpoint is on a claim per pod, so a rescheduled shard resumes exactly.
        let claims = spec["volumeClaimTemplates"].as_array().expect("claims");
        assert_eq!(claims.len(), 1, "{name}");
        assert_eq!(claims[0]["metadata"]["name"], "state", "{name}");
        assert_eq!(
            claims[0]["spec"]["accessModes"],
            serde_json::json!(["ReadWriteOnce"])
        );
        assert!(claims[0]["spec"]["resources"]["requests"]["storage"].is_string());

        // serviceName: an existing headless Service, which selects this StatefulSet's pods
        // and no other's.
        let service = services
            .iter()
            .find(|s| s["metadata"]["name"] == spec["serviceName"])
            .unwrap_or_else(|| panic!("{name}: no Service {}", spec["serviceName"]));
        assert_eq!(service["spec"]["clusterIP"], "None", "{name}: not headless");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
        for other in find(docs, "StatefulSet") {
            let pods = &other["spec"]["template"]["metadata"]["labels"];
            assert_eq!(
                selects(&service["spec"]["selector"], pods),
                other["metadata"]["name"] == name,
                "{name}: Service {} and the pods of {}",
                service["metadata"]["name"],
                other["metadata"]["name"]
            );
        }
        // Exactly one ServiceMonitor selects the Service: each pod is one target.
        let scraping: Vec<_> = monitors
            .iter()
            .filter(|m| {
                selects(
                    &m["spec"]["selector"]["matchLabels"],
                    &service["metadata"]["labels"],
                )
            })
            .collect();
        assert_eq!(scraping.len(), 1, "{name}: ServiceMonitors of its Service");
        let endpoint = &scraping[0]["spec"]["endpoints"][0];
        assert_eq!(endpoint["port"], "metrics", "{name}");
        assert_eq!(endpoint["honorLabels"], true, "{name}");

        // The configuration it mounts: shard.count = replicas, shard.index unset (the pod's
        // ordinal), and the exporter accepts it.
        let volumes = spec["template"]["spec"]["volumes"].as_array().unwrap();
        let config_map =
            volumes.iter().find(|v| v["name"] == "config").unwrap()["configMap"]["name"].clone();
        let config = find(docs, "ConfigMap")
            .into_iter()
            .find(|c| c["metadata"]["name"] == config_map)
            .unwrap_or_else(|| panic!("{name}: no ConfigMap {config_map}"))["data"]["config.toml"]
            .as_str()
            .expect("config.toml")
            .to_string();
        let shard = &toml_json(&config)["shard"];
        assert_eq!(shard["count"], spec["replicas"], "{name}: shard.count");
        assert!(shard.get("index").is_none(), "{name}: shard.index is set");
        let effective = check_config(&config, &env, &tmp.join(name));
        assert_eq!(toml_json(&effective)["shard"]["count"], 3, "{effective}");
        configs.push(config);
    }
    configs
}

#[test]
fn kustomize_sharded_overlays_render_and_validate() {
    let tmp = tempfile::tempdir().expect("tempdir");

    // sharded: the base as a StatefulSet of 3 shards.
    let path = temp_file(tmp.path(), "sharded.yaml", &kustomize("sharded"));
    validate(&path);
    let docs = yaml_docs(&path);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ConfigMap", "Service", "StatefulSet", "ServiceMonitor"]
    );
    assert_sharded(&docs, &tmp.path().join("sharded"));
    // The base's ServiceMonitor, unchanged.
    let base = yaml_docs(&temp_file(tmp.path(), "base.yaml", &kustomize("base")));
    assert_eq!(find(&docs, "ServiceMonitor"), find(&base, "ServiceMonitor"));

    // sharded-ha: two copies with the same configuration, told apart by `replica` alone.
    let path = temp_file(tmp.path(), "sharded-ha.yaml", &kustomize("sharded-ha"));
    validate(&path);
    let docs = yaml_docs(&path);
    let configs = assert_sharded(&docs, &tmp.path().join("sharded-ha"));
    assert_eq!(configs.len(), 2);
    assert_eq!(configs[0], configs[1], "the copies' configurations differ");
    let replicas: Vec<&Value> = find(&docs, "StatefulSet")
        .iter()
        .map(|s| &s["spec"]["template"]["metadata"]["labels"]["replica"])
        .collect();
    assert_eq!(replicas, ["a", "b"]);
    for monitor in find(&docs, "ServiceMonitor") {
        // Shard 2 of either copy is instance="gitlab-jobs-exporter-2" (Prometheus anchors it).
        let rule = monitor["spec"]["endpoints"][0]["relabelings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["targetLabel"] == "instance")
            .expect("instance relabelling");
        let re = regex::Regex::new(&format!("^(?:{})$", rule["regex"].as_str().unwrap())).unwrap();
        for pod in ["gitlab-jobs-exporter-a-2", "gitlab-jobs-exporter-b-2"] {
            let instance = re.replace(pod, rule["replacement"].as_str().unwrap());
            assert_eq!(instance, "gitlab-jobs-exporter-2");
        }
        let relabelings = monitor["spec"]["endpoints"][0]["relabelings"].to_string();
        for needle in [
            r#""sourceLabels":["__meta_kubernetes_pod_label_replica"],"targetLabel":"replica""#,
            r#""targetLabel":"instance""#,
            r#""action":"labeldrop","regex":"pod|service""#,
        ] {
            assert!(
                relabelings.contains(needle),
                "{needle} not in {relabelings}"
            );
        }
    }
}

/// The webhook Component on the base and on the sharded StatefulSet: webhooks on through the
/// environment, the secret from the Secret, the port, the Ingress and the NetworkPolicy; the
/// shards forward to each other by pod name.
#[test]
fn kustomize_webhook_component_renders_and_validates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (dir, kind) in [
        ("base-webhook", "Deployment"),
        ("sharded-webhook", "StatefulSet"),
    ] {
        let path = temp_file(tmp.path(), &format!("{dir}.yaml"), &kustomize(dir));
        validate(&path);
        let docs = yaml_docs(&path);
        let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            BTreeSet::from([
                "ConfigMap",
                "Ingress",
                "NetworkPolicy",
                "Service",
                "ServiceMonitor",
                kind
            ]),
            "{dir}"
        );
        let workload = find(&docs, kind)[0];
        if kind == "StatefulSet" {
            // Everything the sharded overlay promises still holds.
            assert_sharded(&docs, &tmp.path().join(dir));
        } else {
            assert_scraped_with_honored_labels(&docs);
        }
        let env = assert_hardened(workload);
        assert_webhook_exposed(&docs, workload, WEBHOOK_PORT);
        let mut ports = assert_network_policy(&docs, workload);
        ports.sort();
        assert_eq!(ports, ["metrics", "webhook", "webhook"], "{dir}");
        assert_eq!(
            webhook_secret_ref(workload),
            ("gitlab-jobs-exporter-webhook".into(), "secret".into())
        );
        let vars: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(vars["GITLAB_JOBS_EXPORTER__WEBHOOK__ENABLED"], "true");
        assert_eq!(
            vars["GITLAB_JOBS_EXPORTER__WEBHOOK__LISTEN"],
            format!("0.0.0.0:{WEBHOOK_PORT}")
        );
        let peer_url = vars.get("GITLAB_JOBS_EXPORTER__WEBHOOK__PEER_URL");
        assert_eq!(peer_url.is_some(), kind == "StatefulSet", "{dir}");
        if let Some(url) = peer_url {
            assert_peer_url(&docs, workload, url);
        }

        let config = find(&docs, "ConfigMap")[0]["data"]["config.toml"]
            .as_str()
            .expect("config.toml");
        {
            let effective = webhook_effective(config, &env, &tmp.path().join(dir));
            assert_eq!(effective["listen"], format!("0.0.0.0:{WEBHOOK_PORT}"));
            assert_eq!(effective["peer_url"].as_str(), peer_url.copied());
        }
    }
}

/// Renders the chart with a values file (relative to the chart, or absolute).
fn helm_template(values: &str, tmp: &Path) -> Result<PathBuf, String> {
    helm_template_with(values, &[], tmp)
}

/// Renders the chart with a values file and extra `helm template` arguments.
fn helm_template_with(values: &str, args: &[&str], tmp: &Path) -> Result<PathBuf, String> {
    let chart = repo().join("deploy/helm/gitlab-jobs-exporter");
    let mut cmd = Command::new(tool("bin/helm"));
    cmd.args(["template", "rel"])
        .arg(&chart)
        .args(["--namespace", "monitoring"])
        .args(args)
        .env("HELM_CACHE_HOME", tmp.join("helm/cache"))
        .env("HELM_CONFIG_HOME", tmp.join("helm/config"))
        .env("HELM_DATA_HOME", tmp.join("helm/data"));
    if !values.is_empty() {
        cmd.arg("--values").arg(chart.join(values));
    }
    let out = run(&mut cmd);
    if !out.status.success() {
        return Err(text(&out));
    }
    let name = values.replace('/', "-").trim_start_matches('-').to_string();
    Ok(temp_file(
        tmp,
        &format!("helm-{name}.yaml"),
        &String::from_utf8(out.stdout).expect("UTF-8"),
    ))
}

#[test]
fn helm_chart_lints_renders_and_validates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chart = repo().join("deploy/helm/gitlab-jobs-exporter");
    for values in [
        "ci/minimal-values.yaml",
        "ci/full-values.yaml",
        "ci/discovery-values.yaml",
        "ci/webhook-values.yaml",
    ] {
        let report = ok(Command::new(tool("bin/helm"))
            .args(["lint", "--strict"])
            .arg(&chart)
            .arg("--values")
            .arg(chart.join(values))
            .env("HELM_CACHE_HOME", tmp.path().join("helm/cache"))
            .env("HELM_CONFIG_HOME", tmp.path().join("helm/config"))
            .env("HELM_DATA_HOME", tmp.path().join("helm/data")));
        assert!(report.contains("0 chart(s) failed"), "{report}");
    }

    // values.schema.json: the defaults lack the URL, something to watch (projects, groups or
    // discovery.membership) and the token.
    let err = helm_template("", tmp.path()).expect_err("the defaults are incomplete");
    for missing in [
        "/gitlab/url",
        "/projects",
        "/groups",
        "/discovery/membership",
        "existingSecret",
    ] {
        assert!(err.contains(missing), "{err}");
    }

    // Minimal: a Deployment reading the token from an existing Secret.
    let path = helm_template("ci/minimal-values.yaml", tmp.path()).expect("renders");
    validate(&path);
    let docs = yaml_docs(&path);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "Deployment"]);
    let deployment = find(&docs, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 1);
    let env = assert_hardened(deployment);
    // Webhooks are off by default: no port for them.
    let ports = &deployment["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports.as_array().map(Vec::len), Some(1), "{ports}");
    let secret = &deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "token")
        .unwrap()["secret"];
    assert_eq!(secret["secretName"], "gitlab-jobs-exporter-token");
    let config = find(&docs, "ConfigMap")[0]["data"]["config.toml"]
        .as_str()
        .unwrap();
    let dir = tmp.path().join("minimal");
    let effective = check_config(config, &env, &dir);
    // The values' defaults are the exporter's: the same effective configuration as a file that
    // sets only what the chart must.
    let bare = format!(
        "[gitlab]\nurl = \"https://gitlab.example.com\"\ntoken_file = \"{TOKEN_DIR}/token\"\n\
         [state]\ndir = \"{STATE_DIR}\"\n[[projects]]\npath = \"group/subgroup/project\"\n"
    );
    assert_eq!(
        toml_json(&effective),
        toml_json(&check_config(&bare, &env, &dir)),
        "the chart's defaults differ from the exporter's"
    );

    // Full: shards as a StatefulSet, a Secret from the value, and every option.
    let path = helm_template("ci/full-values.yaml", tmp.path()).expect("renders");
    validate(&path);
    let docs = yaml_docs(&path);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Ingress",
            "NetworkPolicy",
            "PrometheusRule",
            "Secret",
            "Service",
            "ServiceMonitor",
            "StatefulSet"
        ])
    );
    let set = find(&docs, "StatefulSet")[0];
    assert_eq!(set["spec"]["replicas"], 3);
    // Each shard keeps its checkpoint on a claim of its own (persistence is on by default).
    let claims = set["spec"]["volumeClaimTemplates"]
        .as_array()
        .expect("claims");
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"], "state");
    assert_eq!(claims[0]["spec"]["resources"]["requests"]["storage"], "1Gi");
    let env = assert_hardened(set);
    assert_scraped_with_honored_labels(&docs);
    let config = find(&docs, "ConfigMap")
        .iter()
        .find_map(|c| c["data"]["config.toml"].as_str())
        .unwrap()
        .to_string();
    let dir = tmp.path().join("full");
    let effective = check_config(&config, &env, &dir);
    for line in [
        "count = 3",
        "max_requests_per_minute = 0.5",
        "id = 12345678",
        r#"tools/"quoted" cli"#,
        r#"ref = "kind""#,
        "max_series = 50000",
    ] {
        assert!(effective.contains(line), "{line} not in\n{effective}");
    }

    // The PrometheusRule is deploy/prometheus' rules, the dashboards ConfigMap grafana/'s files.
    let rules = find(&docs, "PrometheusRule")[0];
    let mut groups = Vec::new();
    for file in ["recording-rules.yml", "alerts.yml"] {
        let docs = yaml_docs(&repo().join("deploy/prometheus/rules").join(file));
        groups.extend(docs[0]["groups"].as_array().unwrap().clone());
    }
    assert_eq!(rules["spec"]["groups"], Value::Array(groups));
    let dashboards = find(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("dashboards ConfigMap");
    let data = dashboards["data"].as_object().unwrap();
    assert_eq!(data.len(), 2);
    for (name, json) in data {
        assert_eq!(
            json.as_str().unwrap(),
            read(format!("grafana/{name}")),
            "{name}"
        );
    }
}

/// Whether a LabelSelector (matchLabels and matchExpressions) selects an object with these
/// labels.
fn selects_with_expressions(selector: &Value, labels: &Value) -> bool {
    let expressions = selector["matchExpressions"].as_array().cloned();
    selects(&selector["matchLabels"], labels)
        && expressions.into_iter().flatten().all(|e| {
            let value = &labels[e["key"].as_str().expect("key")];
            let values = e["values"].as_array().cloned().unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => values.contains(value),
                Some("NotIn") => !values.contains(value),
                Some("Exists") => !value.is_null(),
                Some("DoesNotExist") => value.is_null(),
                other => panic!("operator {other:?}"),
            }
        })
}

/// ci/full-values.yaml: webhooks on 3 shards, the secret as a value. Each shard forwards events
/// for the others' projects through a headless Service of its own, which the ServiceMonitor
/// leaves alone.
#[test]
fn helm_chart_renders_sharded_webhooks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chart = repo().join("deploy/helm/gitlab-jobs-exporter");
    let values = &yaml_docs(&chart.join("ci/full-values.yaml"))[0]["webhook"];
    let port = values["port"].as_u64().expect("a port of its own");
    assert_ne!(
        port, WEBHOOK_PORT,
        "not the default, so that the value is seen to be used"
    );
    let path = helm_template("ci/full-values.yaml", tmp.path()).expect("renders");
    let docs = yaml_docs(&path);
    let set = find(&docs, "StatefulSet")[0];
    let env = assert_hardened(set);
    let ingress = assert_webhook_exposed(&docs, set, port);
    assert_eq!(
        ingress["spec"]["rules"][0]["host"],
        values["ingress"]["host"]
    );
    let mut ports = assert_network_policy(&docs, set);
    ports.sort();
    assert_eq!(ports, ["metrics", "webhook", "webhook"], "peers too");

    // The secret: a Secret made from the value, into the environment.
    let (name, key) = webhook_secret_ref(set);
    let secret = find(&docs, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == name.as_str())
        .expect("the webhook Secret");
    // base64 of ci/full-values.yaml's webhook.secret
    assert_eq!(values["secret"], "whsec-EXAMPLE-not-a-real-secret");
    assert_eq!(
        secret["data"][key.as_str()],
        "d2hzZWMtRVhBTVBMRS1ub3QtYS1yZWFsLXNlY3JldA=="
    );

    let config = find(&docs, "ConfigMap")
        .iter()
        .find_map(|c| c["data"]["config.toml"].as_str())
        .unwrap()
        .to_string();
    let rendered = toml_json(&config)["webhook"].clone();
    assert_eq!(rendered["enabled"], true);
    assert_eq!(rendered["listen"], format!("0.0.0.0:{port}"));
    assert_eq!(rendered["reconcile_interval"], "10m");
    assert!(
        rendered.get("secret_file").is_none(),
        "the secret is in the environment"
    );
    let peer_url = rendered["peer_url"].as_str().expect("peer_url");
    assert_peer_url(&docs, set, peer_url);
    let peers = find(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == set["spec"]["serviceName"])
        .unwrap();
    // A shard still backfilling (not ready) takes its forwarded events already.
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    let monitor = find(&docs, "ServiceMonitor")[0];
    let scraped: Vec<&Value> = find(&docs, "Service")
        .into_iter()
        .filter(|s| {
            selects_with_expressions(&monitor["spec"]["selector"], &s["metadata"]["labels"])
        })
        .collect();
    assert_eq!(scraped.len(), 1, "each pod scraped once: {scraped:?}");
    assert_ne!(scraped[0]["metadata"]["name"], peers["metadata"]["name"]);

    {
        let effective = webhook_effective(&config, &env, &tmp.path().join("full"));
        assert_eq!(effective["listen"], rendered["listen"]);
        assert_eq!(effective["peer_url"], rendered["peer_url"]);
    }
}

/// ci/webhook-values.yaml: webhooks on one replica, the secret from an existing Secret, the
/// Ingress with TLS, the example NetworkPolicy.
#[test]
fn helm_chart_renders_webhooks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chart = repo().join("deploy/helm/gitlab-jobs-exporter");
    let values = &yaml_docs(&chart.join("ci/webhook-values.yaml"))[0]["webhook"];
    let path = helm_template("ci/webhook-values.yaml", tmp.path()).expect("renders");
    validate(&path);
    let docs = yaml_docs(&path);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "Ingress",
            "NetworkPolicy",
            "Service"
        ])
    );
    let deployment = find(&docs, "Deployment")[0];
    let env = assert_hardened(deployment);
    let ingress = assert_webhook_exposed(&docs, deployment, WEBHOOK_PORT);
    let want = &values["ingress"];
    assert_eq!(ingress["spec"]["ingressClassName"], want["className"]);
    assert_eq!(ingress["spec"]["tls"], want["tls"]);
    assert_eq!(ingress["spec"]["rules"][0]["host"], want["host"]);
    assert_eq!(
        ingress["metadata"]["annotations"], want["annotations"],
        "annotations"
    );
    assert_eq!(
        assert_network_policy(&docs, deployment),
        ["metrics", "webhook"]
    );
    assert_eq!(
        webhook_secret_ref(deployment),
        (
            values["existingSecret"].as_str().unwrap().to_string(),
            values["existingSecretKey"].as_str().unwrap().to_string()
        )
    );
    let config = find(&docs, "ConfigMap")[0]["data"]["config.toml"]
        .as_str()
        .unwrap();
    let rendered = toml_json(config)["webhook"].clone();
    assert_eq!(rendered["listen"], format!("0.0.0.0:{WEBHOOK_PORT}"));
    assert_eq!(rendered["reconcile_interval"], values["reconcileInterval"]);
    assert!(
        rendered.get("peer_url").is_none(),
        "one replica forwards nothing"
    );
    {
        let effective = webhook_effective(config, &env, &tmp.path().join("webhook"));
        assert_eq!(effective["listen"], rendered["listen"]);
        assert_eq!(
            effective["reconcile_interval"],
            rendered["reconcile_interval"]
        );
    }

    // Enabled without a secret: the schema says so, and so does the template.
    let minimal = chart.join("ci/minimal-values.yaml");
    let args = [
        "--values",
        minimal.to_str().unwrap(),
        "--set",
        "webhook.enabled=true",
    ];
    let err = helm_template_with("", &args, tmp.path()).expect_err("no secret");
    assert!(err.contains("/webhook"), "{err}");
    let mut args = args.to_vec();
    args.push("--skip-schema-validation");
    let err = helm_template_with("", &args, tmp.path()).expect_err("no secret");
    assert!(
        err.contains("webhook.enabled: set webhook.existingSecret (recommended) or webhook.secret"),
        "{err}"
    );
}

#[test]
fn helm_chart_renders_discovery_and_label_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chart = repo().join("deploy/helm/gitlab-jobs-exporter");
    let values = &yaml_docs(&chart.join("ci/discovery-values.yaml"))[0];
    // What the escaping must survive: regexes with backslashes and double quotes, no projects.
    let mut regexes: Vec<&str> = Vec::new();
    for key in ["include", "exclude"] {
        regexes.extend(
            values["discovery"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap()),
        );
    }
    for rule in values["labels"]["jobRewrites"].as_array().unwrap() {
        regexes.push(rule["match"].as_str().unwrap());
    }
    assert!(regexes.iter().any(|r| r.contains(r"\d")), "{regexes:?}");
    assert!(regexes.iter().any(|r| r.contains('"')), "{regexes:?}");
    assert!(values.get("projects").is_none(), "discovery alone must do");

    let path = helm_template("ci/discovery-values.yaml", tmp.path()).expect("renders");
    validate(&path);
    let docs = yaml_docs(&path);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "Deployment"]);
    let env = assert_hardened(find(&docs, "Deployment")[0]);
    let config = find(&docs, "ConfigMap")[0]["data"]["config.toml"]
        .as_str()
        .unwrap();

    // The rendered TOML holds the values verbatim, and so does the exporter's effective
    // configuration (--check-config prints it after validating every key and regex).
    let rendered = toml_json(config);
    let effective = toml_json(&check_config(config, &env, &tmp.path().join("discovery")));
    let d = &values["discovery"];
    let rewrites: Vec<Value> = values["labels"]["jobRewrites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::json!({ "match": r["match"], "replace": r["replace"] }))
        .collect();
    let groups: Vec<Value> = values["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut out = serde_json::Map::new();
            for key in ["path", "id"] {
                if let Some(v) = g.get(key) {
                    out.insert(key.into(), v.clone());
                }
            }
            let subgroups = g.get("includeSubgroups").cloned().unwrap_or(true.into());
            out.insert("include_subgroups".into(), subgroups);
            Value::Object(out)
        })
        .collect();
    for toml in [&rendered, &effective] {
        for (key, want) in [
            ("membership", &d["membership"]),
            ("include", &d["include"]),
            ("exclude", &d["exclude"]),
            ("archived", &d["archived"]),
            ("interval", &d["interval"]),
            ("grace_period", &d["gracePeriod"]),
        ] {
            assert_eq!(&toml["discovery"][key], want, "discovery.{key}");
        }
        assert_eq!(toml["groups"], Value::Array(groups.clone()));
        assert!(
            toml["projects"].as_array().is_none_or(|p| p.is_empty()),
            "no [[projects]]: {}",
            toml["projects"]
        );
        assert_eq!(toml["poll"]["max_interval"], values["poll"]["maxInterval"]);
        assert_eq!(toml["poll"]["interval"], values["poll"]["interval"]);
        assert_eq!(toml["labels"]["runner"], values["labels"]["runner"]);
        assert_eq!(toml["labels"]["drop"], values["labels"]["drop"]);
        assert_eq!(
            toml["labels"]["job_rewrites"],
            Value::Array(rewrites.clone())
        );
    }

    // Nothing to watch: the schema names the three ways out, and so does the template should
    // the schema be skipped.
    let nothing = temp_file(
        tmp.path(),
        "nothing-values.yaml",
        "gitlab:\n  url: https://gitlab.example.com\n  existingSecret: token\n\
         discovery:\n  include: ['^platform/']\n",
    );
    let nothing = nothing.to_str().unwrap();
    let err = helm_template(nothing, tmp.path()).expect_err("nothing to watch");
    for way in ["/projects", "/groups", "/discovery/membership"] {
        assert!(err.contains(way), "{err}");
    }
    let report = run(Command::new(tool("bin/helm"))
        .args(["lint", "--strict"])
        .arg(&chart)
        .args(["--values", nothing])
        .env("HELM_CACHE_HOME", tmp.path().join("helm/cache"))
        .env("HELM_CONFIG_HOME", tmp.path().join("helm/config"))
        .env("HELM_DATA_HOME", tmp.path().join("helm/data")));
    assert!(!report.status.success(), "{}", text(&report));
    assert!(
        text(&report).contains("/discovery/membership"),
        "{}",
        text(&report)
    );
    let err = helm_template_with(nothing, &["--skip-schema-validation"], tmp.path())
        .expect_err("the template checks too");
    assert!(
        err.contains("nothing to watch: set projects (path or id), groups (path or id) or discovery.membership=true"),
        "{err}"
    );
}

#[test]
fn helm_chart_files_are_the_sources() {
    // .Files.Get reaches only into the chart: it carries copies, kept identical.
    let chart = "deploy/helm/gitlab-jobs-exporter/files";
    for (copy, source) in [
        ("alerts.yml", "deploy/prometheus/rules/alerts.yml"),
        (
            "recording-rules.yml",
            "deploy/prometheus/rules/recording-rules.yml",
        ),
        (
            "dashboards/gitlab-ci-jobs.json",
            "grafana/gitlab-ci-jobs.json",
        ),
        (
            "dashboards/gitlab-jobs-exporter.json",
            "grafana/gitlab-jobs-exporter.json",
        ),
    ] {
        assert!(
            read(format!("{chart}/{copy}")) == read(source),
            "{chart}/{copy} differs from {source}: cp {source} {chart}/{copy}"
        );
    }
}

#[test]
fn dockerfile_lints_and_matches_the_exporter() {
    let dockerfile = repo().join("deploy/container/Dockerfile");
    let out = run(Command::new(tool("venv/bin/hadolint")).arg(&dockerfile));
    assert!(out.status.success(), "hadolint:\n{}", text(&out));
    assert!(text(&out).trim().is_empty(), "hadolint:\n{}", text(&out));

    let text = read("deploy/container/Dockerfile");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let stages: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage");
    let last = &lines[*stages.last().unwrap()..];
    assert!(last[0].contains("distroless"), "{}", last[0]);
    assert!(last.contains(&"USER 65532:65532"), "non-root");
    assert!(last.contains(&"EXPOSE 39129"), "the default port");
    assert!(
        last.contains(&format!("EXPOSE {WEBHOOK_PORT}").as_str()),
        "the webhook port"
    );
    assert!(
        last.iter()
            .any(|l| l.starts_with("ENTRYPOINT [\"/usr/local/bin/gitlab-jobs-exporter\"]")),
        "{last:?}"
    );
    assert!(text.contains("cargo build --release --locked"));

    // The Rust version is at least Cargo.toml's rust-version.
    let version = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    let msrv = read("Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| version(v.trim_matches('"')))
        .expect("rust-version");
    let rust = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .map(version)
        .expect("ARG RUST_VERSION");
    assert!(rust >= msrv, "{rust:?} < {msrv:?}");

    let ignore = read("deploy/container/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l == "target/"), "{ignore}");
}
