//! deploy/README.md's systemd recipe works as written on a fresh host: its shell blocks are run
//! command by command, as they are printed, under a temporary root (`/etc`, `/usr/local/bin`
//! and `/var/lib` mapped into it), from a checkout holding the built binary. What needs a running
//! systemd is done as far as possible without one: `systemctl` and `journalctl` (and `cargo`,
//! whose build is this test's binary, and `curl`) are recorded by stand-ins; the installed unit is
//! verified with `systemd-analyze verify`, and the configuration is checked once more the way
//! the started service sees it (its `Environment=` lines, `%d` holding the credentials
//! `LoadCredential=` copies, `%S` the state directory). `$EDITOR` writes what a user would: the
//! URL of a simulated GitLab and its project, the token, the webhook secret, the `[webhook]`
//! block uncommented. `--check-gitlab` runs against that simulator when the binary has it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use gitlab_sim::{ProjectSpec, SimClock, Simulator, World, WorldSpec};

const EXPORTER: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");
const TOKEN: &str = "glpat-recipe-token";
const WEBHOOK_SECRET: &str = "recipe-webhook-secret";
const UNIT: &str = "gitlab-jobs-exporter.service";
/// Host paths the recipe writes to, mapped under the temporary root.
const MAPPED: [&str; 4] = [
    "/etc/gitlab-jobs-exporter",
    "/etc/systemd/system",
    "/usr/local/bin/",
    "/var/lib/",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write(path: impl AsRef<Path>, text: &str) {
    let path = path.as_ref();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The ```sh blocks of deploy/README.md's "## systemd" section, each as its commands (lines
/// ending in `\` joined).
fn recipe_blocks() -> Vec<Vec<String>> {
    let readme = read(repo().join("deploy/README.md"));
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("systemd\n"))
        .expect("deploy/README.md: ## systemd");
    let mut blocks = Vec::new();
    for chunk in section.split("```sh\n").skip(1) {
        let body = chunk.split("```").next().expect("closed block");
        let mut commands = Vec::new();
        let mut current = String::new();
        for line in body.lines() {
            match line.strip_suffix('\\') {
                Some(head) => current.push_str(head),
                None => {
                    current.push_str(line);
                    if !current.trim().is_empty() {
                        commands.push(std::mem::take(&mut current));
                    }
                    current.clear();
                }
            }
        }
        blocks.push(commands);
    }
    blocks
}

/// The temporary host: the root, the checkout the recipe runs from, the stand-ins and the
/// edits `$EDITOR` makes, in order, per file name.
struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
    checkout: PathBuf,
    bin: PathBuf,
    edits: PathBuf,
    log: PathBuf,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let checkout = dir.path().join("checkout");
        let bin = dir.path().join("bin");
        let edits = dir.path().join("edits");
        let log = dir.path().join("commands.log");
        for d in [&root, &checkout, &bin, &edits] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        // What any Debian host has; nothing of the exporter's.
        for d in ["usr/local/bin", "etc/systemd/system", "var/lib"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        // The checkout: the repository's files the recipe installs, and the release binary
        // `cargo build --release` would leave.
        for name in ["config", "deploy"] {
            std::os::unix::fs::symlink(repo().join(name), checkout.join(name)).expect("symlink");
        }
        std::fs::create_dir_all(checkout.join("target/release")).expect("mkdir");
        std::fs::copy(
            EXPORTER,
            checkout.join("target/release/gitlab-jobs-exporter"),
        )
        .expect("copy");
        let record = format!(
            "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> {}\n",
            log.display()
        );
        for tool in ["cargo", "systemctl", "journalctl", "curl"] {
            write(bin.join(tool), &record);
            std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        // $EDITOR FILE: the next edit prepared for FILE's name (cp keeps FILE's mode).
        let editor = format!(
            "#!/bin/sh\nset -e\nname=$(basename \"$1\")\nn=$(( $(cat {e}/$name.n 2>/dev/null || echo 0) + 1 ))\necho $n > {e}/$name.n\ncp {e}/$name.$n \"$1\"\n",
            e = edits.display()
        );
        write(bin.join("editor"), &editor);
        std::fs::set_permissions(bin.join("editor"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Self {
            _dir: dir,
            root,
            checkout,
            bin,
            edits,
            log,
        }
    }

    /// `$EDITOR`'s `n`th edit of the file called `name`.
    fn edit(&self, name: &str, n: u32, text: &str) {
        write(self.edits.join(format!("{name}.{n}")), text);
    }

    /// A path of the host, under the root.
    fn path(&self, host_path: &str) -> PathBuf {
        self.root.join(host_path.trim_start_matches('/'))
    }

    /// Runs one command of the recipe as printed, host paths mapped under the root.
    fn run(&self, command: &str) -> std::process::Output {
        let mut mapped = command.to_string();
        for p in MAPPED {
            mapped = mapped.replace(p, &self.path(p).display().to_string());
        }
        let path = format!(
            "{}:{}:{}",
            self.bin.display(),
            self.path("/usr/local/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &mapped])
            .current_dir(&self.checkout)
            .env("PATH", path)
            .env("EDITOR", self.bin.join("editor"))
            .env_remove("GITLAB_TOKEN")
            .env_remove("GITLAB_WEBHOOK_SECRET")
            .env_remove("HOSTNAME");
        for (k, _) in std::env::vars() {
            if k.starts_with("GITLAB_JOBS_EXPORTER__") {
                cmd.env_remove(k);
            }
        }
        cmd.output().expect("bash")
    }

    /// Runs every command of a block; panics naming the first that fails.
    fn run_block(&self, commands: &[String], check_gitlab: bool) {
        for command in commands {
            if command.contains("--check-gitlab") && !check_gitlab {
                eprintln!("skipped (this binary has no --check-gitlab yet): {command}");
                continue;
            }
            let out = self.run(command);
            assert!(
                out.status.success(),
                "`{command}` failed ({:?}):\n{}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn recorded(&self) -> Vec<String> {
        read(&self.log).lines().map(str::to_string).collect()
    }
}

/// config/example.toml as a user edits it for `url` and one project.
fn edited_example(url: &str, project: &str) -> String {
    let example = read(repo().join("config/example.toml"));
    let projects = "[[projects]]\npath = \"group/subgroup/project\"\n\n[[projects]]\nid = 42\n";
    for needle in ["url = \"https://gitlab.example.com\"", projects] {
        assert!(
            example.contains(needle),
            "config/example.toml changed: {needle:?}"
        );
    }
    example
        .replace(
            "url = \"https://gitlab.example.com\"",
            &format!("url = {url:?}"),
        )
        .replace(projects, &format!("[[projects]]\npath = {project:?}\n"))
}

/// The text with its commented `# [webhook]` block switched on.
fn with_webhook(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
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

/// The `[Service]` settings of a unit or drop-in.
fn service_settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .skip_while(|l| l.trim() != "[Service]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What the started service would see: the installed unit's (and drop-ins') credentials copied
/// to a fresh credentials directory (`%d`; all but `omit`), their `Environment=` with `%d` and
/// `%S` expanded; runs its `ExecStart` with `--check-config`.
fn check_as_the_service(host: &Host, omit: Option<&str>) -> std::process::Output {
    let units = host.path("/etc/systemd/system");
    let mut settings = service_settings(&read(units.join(UNIT)));
    if let Ok(entries) = std::fs::read_dir(units.join(format!("{UNIT}.d"))) {
        for e in entries {
            settings.extend(service_settings(&read(e.expect("entry").path())));
        }
    }
    let creds = host.root.join("run/credentials").join(UNIT);
    let _ = std::fs::remove_dir_all(&creds);
    std::fs::create_dir_all(&creds).expect("mkdir");
    let mut env = BTreeMap::new();
    let mut exec = String::new();
    for (key, value) in settings {
        match key.as_str() {
            "LoadCredential" => {
                let (id, source) = value.split_once(':').expect("id:path");
                if omit != Some(id) {
                    std::fs::copy(host.path(source), creds.join(id)).expect("credential source");
                }
            }
            "Environment" => {
                let (k, v) = value.split_once('=').expect("KEY=value");
                let v = v
                    .replace("%d", &creds.display().to_string())
                    .replace("%S", &host.path("/var/lib").display().to_string());
                env.insert(k.to_string(), v);
            }
            "ExecStart" => exec = value,
            _ => {}
        }
    }
    let mut args = exec.split_whitespace().map(|a| {
        let mut a = a.to_string();
        for p in MAPPED {
            a = a.replace(p, &host.path(p).display().to_string());
        }
        a
    });
    let program = args.next().expect("ExecStart");
    Command::new(program)
        .args(args)
        .arg("--check-config")
        .env_clear()
        .envs(env)
        .output()
        .expect("ExecStart")
}

/// [`check_as_the_service`] with every credential: must pass; returns its output.
fn service_passes(host: &Host) -> String {
    let out = check_as_the_service(host, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the service's view fails --check-config:\n{text}"
    );
    text
}

/// The installed unit verifies (its ExecStart pointed at the installed binary).
fn verify_installed_unit(host: &Host) {
    let unit = read(host.path("/etc/systemd/system").join(UNIT)).replace(
        "/usr/local/bin/",
        &host.path("/usr/local/bin/").display().to_string(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(UNIT);
    write(&path, &unit);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (run scripts/install-test-deps.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

fn has_check_gitlab() -> bool {
    let out = Command::new(EXPORTER)
        .arg("--help")
        .output()
        .expect("--help");
    String::from_utf8_lossy(&out.stdout).contains("--check-gitlab")
}

/// A simulated GitLab on a live clock with one project, accepting [`TOKEN`].
async fn simulated_gitlab(project: &str) -> gitlab_sim::SimHandle {
    let now = chrono::Utc::now().timestamp_millis();
    let spec = WorldSpec::new(
        vec![ProjectSpec {
            id: 7,
            path: project.into(),
            pipelines_per_hour: 2.0,
        }],
        now - 3_600_000,
        now,
    );
    let sim = Simulator::new(World::generate(&spec, 3), SimClock::Live, TOKEN.to_string());
    sim.spawn().await.expect("simulator")
}

/// After the install block: the files where and as the recipe says, the stand-ins called.
fn assert_installed(host: &Host) {
    let etc = host.path("/etc/gitlab-jobs-exporter");
    assert_eq!(
        mode(&host.path("/usr/local/bin/gitlab-jobs-exporter")),
        0o755
    );
    assert_eq!(mode(&etc.join("config.toml")), 0o644);
    assert_eq!(
        mode(&etc.join("gitlab-token")),
        0o600,
        "the token stays root-only"
    );
    assert_eq!(read(etc.join("gitlab-token")).trim(), TOKEN);
    assert_eq!(
        read(host.path("/etc/systemd/system").join(UNIT)),
        read(repo().join("deploy/systemd").join(UNIT))
    );
    let recorded = host.recorded();
    for expected in [
        "cargo build --release --locked",
        "systemctl daemon-reload",
        "systemctl enable --now gitlab-jobs-exporter",
    ] {
        assert!(
            recorded.iter().any(|l| l == expected),
            "{expected}: {recorded:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_recipe_works_as_written_on_a_fresh_host() {
    let project = "acme/platform/api";
    let gitlab = simulated_gitlab(project).await;

    let blocks = recipe_blocks();
    assert_eq!(blocks.len(), 2, "install, webhooks: {blocks:?}");
    let host = Host::new();
    let config = edited_example(&gitlab.base_url, project);
    host.edit("config.toml", 1, &config);
    host.edit("config.toml", 2, &with_webhook(&config));
    host.edit("gitlab-token", 1, &format!("{TOKEN}\n"));
    host.edit("webhook-secret", 1, &format!("{WEBHOOK_SECRET}\n"));

    let check_gitlab = has_check_gitlab();
    // The commands block this worker; the simulator answers on the other one.
    tokio::task::block_in_place(|| host.run_block(&blocks[0], check_gitlab));

    assert_installed(&host);
    verify_installed_unit(&host);
    let effective = service_passes(&host);
    assert!(!effective.contains(TOKEN), "{effective}");
    // The token comes from the credential alone: without it the service would not start.
    assert_eq!(
        check_as_the_service(&host, Some("gitlab-token"))
            .status
            .code(),
        Some(2)
    );

    // Webhooks: the secret as a second credential through the drop-in.
    tokio::task::block_in_place(|| host.run_block(&blocks[1], check_gitlab));
    let secret = host.path("/etc/gitlab-jobs-exporter/webhook-secret");
    assert_eq!(mode(&secret), 0o600);
    assert!(
        host.path("/etc/systemd/system")
            .join(format!("{UNIT}.d/webhook.conf"))
            .is_file()
    );
    assert!(
        host.recorded()
            .iter()
            .any(|l| l == "systemctl restart gitlab-jobs-exporter")
    );
    let effective = service_passes(&host);
    assert!(!effective.contains(WEBHOOK_SECRET), "{effective}");
    // Webhooks are on, with the secret from its credential: without it, a configuration error.
    assert_eq!(
        check_as_the_service(&host, Some("webhook-secret"))
            .status
            .code(),
        Some(2)
    );
}
