//! Command line and process wiring (logging, signals, exit codes). The only module using `anyhow`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::app::App;
use crate::config::{Config, ConfigError, FailureSettings, Settings, WEBHOOK_SECRET_ENV};
use crate::gitlab::RetryPolicy;
use crate::{doctor, failures, install, server};

/// Where `--demo` listens unless told otherwise: loopback only, the simulator is no real GitLab.
pub const DEMO_LISTEN: &str = "127.0.0.1:39129";

/// Exit code for configuration errors.
pub const EXIT_CONFIG: u8 = 2;

/// `--help`'s closing part: what the flags do not say.
const AFTER_HELP: &str = "\
Environment:
  GITLAB_TOKEN           the GitLab token (read_api scope); wins over gitlab.token_file and
                         gitlab.token
  GITLAB_WEBHOOK_SECRET  the webhook secret (X-Gitlab-Token); wins over webhook.secret_file
  GITLAB_JOBS_EXPORTER__SECTION__KEY
                         overrides a configuration key, e.g.
                         GITLAB_JOBS_EXPORTER__POLL__INTERVAL=15s for poll.interval
  RUST_LOG               log filter (default info); RUST_LOG=gitlab_jobs_exporter=debug shows
                         the exporter's own debug lines only
  HOSTNAME               with shard.count > 1 and no shard.index: the shard is its -N suffix

Exit codes:
  0  stopped cleanly (SIGTERM, SIGINT), or the check passed
  1  a runtime failure (the listen address is taken, the state directory is unusable, ...)
  2  a configuration or command-line error (the message names the key)
  3  --check-gitlab: GitLab answered, but something is wrong (listed with the fixes)";

#[derive(Debug, Parser)]
#[command(
    name = "gitlab-jobs-exporter",
    version,
    about = "Prometheus exporter that counts every GitLab CI job exactly once",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print the complete effective configuration (defaults
    /// included, secrets redacted) as TOML that --check-config takes again, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Run against a built-in GitLab simulator with lively synthetic projects (no GitLab needed),
    /// with a configuration of its own: --config is refused with it (only --listen applies).
    /// Builds without the `demo` feature keep the flag but refuse it (exit code 2).
    #[arg(long, conflicts_with = "check_config")]
    pub demo: bool,
    /// Listen address, overriding `server.listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Log format on stderr (the level comes from RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Create or update a project hook sending Job events to URL, with the webhook secret
    /// (GITLAB_WEBHOOK_SECRET or webhook.secret_file) as its token, on every watched project
    /// (configured and discovered, all shards); print one line per project and exit: 0 when
    /// every project succeeded, 1 otherwise. Needs the Maintainer role on each project.
    #[arg(long, value_name = "URL", conflicts_with_all = ["check_config", "demo"])]
    pub install_webhooks: Option<String>,
    /// Connect to GitLab with the configuration and say whether the exporter will work: GitLab
    /// reachable and its version, the token's scopes and expiry, each project and group, the
    /// rate-limit headers, and with `[webhook]` each project's hook. Read-only. Exit codes: 0 all
    /// well, 1 GitLab unreachable, 2 configuration error, 3 problems found (each printed with
    /// its fix).
    #[arg(long, conflicts_with_all = ["check_config", "demo", "install_webhooks"])]
    pub check_gitlab: bool,
    /// With --check-gitlab: the webhook URL to look for on each project (matched as
    /// --install-webhooks matches it); without it, any hook sending Job events counts.
    #[arg(long, value_name = "URL", requires = "check_gitlab")]
    pub hook_url: Option<String>,
    /// With --install-webhooks: also send the token to existing hooks that are otherwise right
    /// (GitLab never shows a hook's token, so a changed secret is not detected).
    #[arg(long, requires = "install_webhooks")]
    pub update_token: bool,
    /// Print the class a job log gets (`class: …`) and the rule that matched (`rule: …`), with
    /// the `[failures]` rules of --config (without it: the default rules), then exit 0; a bad
    /// rule exits 2. Only the end of the log is read (failures.tail_bytes), as the exporter
    /// reads it; `-` reads standard input. Nothing of the log is printed.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["check_config", "demo", "install_webhooks", "check_gitlab"])]
    pub classify_log: Option<PathBuf>,
    /// How often the INFO summary is logged (jobs counted, requests against the budget,
    /// projects failing). Hidden: for tests; operators have no reason to change it.
    #[arg(long, hide = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub summary_interval: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // First, while the process has a single thread: listenfd reads and clears LISTEN_FDS and
    // LISTEN_PID, and changing the environment is only sound before any other thread exists.
    let mut listen_fds = listenfd::ListenFd::from_env();
    let cli = Cli::parse();
    let _log_guard = init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    if cli.demo && cli.config.is_some() {
        // Said rather than silently ignored: the file would not be what runs.
        say(format_args!(
            "error: --demo runs against a built-in simulator with its own configuration and reads no --config file; drop --config to see the demo, or --demo to use the file"
        ));
        return ExitCode::from(EXIT_CONFIG);
    }
    if cli.demo {
        #[cfg(feature = "demo")]
        return report(
            cli.log_format,
            inherited_listener(&mut listen_fds).and_then(|inherited| {
                runtime.block_on(run_demo(cli.listen, cli.summary_interval, inherited))
            }),
        );
        #[cfg(not(feature = "demo"))]
        {
            say(format_args!(
                "error: --demo is not available: this build has no simulator (built without the `demo` feature)"
            ));
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if let Some(url) = &cli.install_webhooks {
        return install_webhooks(&cli, url, &runtime);
    }
    if let Some(log) = &cli.classify_log {
        return classify_log(cli.config.as_deref(), log);
    }
    let mut cfg = match load_config(&cli, |_| {}) {
        Ok(cfg) => cfg,
        Err(e) => {
            fatal(cli.log_format, "configuration error", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(every) = cli.summary_interval {
        cfg.summary_interval = every;
    }
    if cli.check_config {
        return print_checked(&cfg);
    }
    if cli.check_gitlab {
        return check_gitlab(&cli, &cfg, &runtime);
    }
    let result = inherited_listener(&mut listen_fds)
        .and_then(|inherited| runtime.block_on(run(cfg, inherited)));
    // Whatever still runs (a blocking file operation stuck on a broken disk) must not keep
    // a stopped exporter alive: the HTTP drain and the final checkpoint are done by now.
    runtime.shutdown_timeout(server::DRAIN_TIMEOUT);
    report(cli.log_format, result)
}

/// `--check-config`'s output. A reader that stops early (`| head`) is no failure: the
/// configuration was checked all the same.
fn print_checked(cfg: &Settings) -> ExitCode {
    let mut out = std::io::stdout().lock();
    let written = write!(out, "# configuration is valid\n{}", cfg.to_redacted_toml())
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            say(format_args!("error: cannot write the configuration: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// A line on stderr for whoever started the process. Unlike `eprintln!`, a closed stderr
/// (`2>&1 | head`) is no panic: the exit code says what happened.
fn say(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

fn report(format: LogFormat, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            fatal(format, "error", &format_args!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The error that ends the process, printed once: a plain `what: error` line for a person
/// (text logs), a log record for a machine (JSON logs, where a plain line would break the
/// stream). Errors along the way are logged where they happen and not again here.
fn fatal(format: LogFormat, what: &str, error: &dyn std::fmt::Display) {
    match format {
        LogFormat::Text => say(format_args!("{what}: {error}")),
        LogFormat::Json => error!(error = %error, "{what}; exiting"),
    }
}

/// The configuration file, with the command line's overrides and `adjust` applied.
fn load_config(cli: &Cli, adjust: impl FnOnce(&mut Config)) -> Result<Settings, ConfigError> {
    let Some(path) = &cli.config else {
        return Err(ConfigError::Invalid {
            key: "--config".into(),
            message: "no configuration file given (or use --demo)".into(),
        });
    };
    Config::load_with(Some(path), |cfg| {
        if let Some(listen) = &cli.listen {
            cfg.server.listen = listen.clone();
        }
        adjust(cfg);
    })
}

/// `--install-webhooks URL`: see [`crate::install`]. A bad URL or configuration, or no
/// webhook secret, exits with [`EXIT_CONFIG`].
fn install_webhooks(cli: &Cli, url: &str, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let url = match install::HookUrl::parse(url) {
        Ok(url) => url,
        Err(e) => {
            say(format_args!("error: --install-webhooks URL: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // The secret is resolved only for an enabled `[webhook]`; the hooks need it either way.
    let mut was_enabled = false;
    let loaded = load_config(cli, |cfg| {
        was_enabled = cfg.webhook.enabled;
        cfg.webhook.enabled = true;
    });
    let secret = match loaded {
        Ok(cfg) => cfg
            .webhook
            .as_ref()
            .map(|w| w.secret.clone())
            .map(|s| (cfg, s)),
        Err(ConfigError::Invalid { key, .. }) if key == "webhook.enabled" => None,
        Err(e) => {
            say(format_args!("configuration error: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some((cfg, secret)) = secret else {
        say(format_args!(
            "configuration error: --install-webhooks needs the webhook secret (GitLab sends it in X-Gitlab-Token): set {WEBHOOK_SECRET_ENV} or webhook.secret_file"
        ));
        return ExitCode::from(EXIT_CONFIG);
    };
    if !was_enabled {
        say(format_args!(
            "note: webhook.enabled is not true in the configuration: until it is, the exporter does not serve /webhook and GitLab's deliveries fail"
        ));
    }
    if url.is_plain_http() {
        say(format_args!(
            "warning: the URL is plain http: GitLab will send the webhook secret unencrypted"
        ));
    }
    let opts = install::InstallOptions {
        url,
        secret,
        update_token: cli.update_token,
    };
    let mut out = std::io::stdout();
    match runtime.block_on(install::run(&cfg, &opts, &mut out)) {
        Ok(summary) if summary.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            say(format_args!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `--classify-log FILE`: the class FILE gets with the `[failures]` rules of `config` (the
/// defaults without one), and the rule that gave it. Read like a trace: the last
/// `failures.tail_bytes` kept, `log_too_large` past `failures.max_log_bytes`. Privacy: only
/// the class and the rule are printed, never a byte of the log.
fn classify_log(config: Option<&std::path::Path>, log: &std::path::Path) -> ExitCode {
    let settings = match config {
        Some(path) => match Config::load_failures(path) {
            Ok(s) => s,
            Err(e) => {
                say(format_args!("configuration error: {e}"));
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => FailureSettings::default(),
    };
    let tail = match read_tail(log, &settings) {
        Ok(tail) => tail,
        Err(e) => {
            say(format_args!("error: cannot read {}: {e}", log.display()));
            return ExitCode::FAILURE;
        }
    };
    let classifier = &settings.classifier;
    let (verdict, note) = match tail {
        None => (
            failures::Verdict::log_too_large(),
            Some(format!(
                "the log is longer than failures.max_log_bytes ({} bytes): not read to its end",
                settings.max_log_bytes
            )),
        ),
        Some(tail) if tail.is_empty() => (
            classifier.classify(&tail),
            Some("the log is empty (as GitLab serves an erased log)".to_string()),
        ),
        Some(tail) => (classifier.classify(&tail), None),
    };
    let rule = match verdict
        .rule
        .and_then(|i| classifier.rules().get(i).map(|r| (i, r)))
    {
        None => "none".to_string(),
        Some((i, r)) => {
            let users = classifier
                .rules()
                .iter()
                .filter(|r| !r.is_default())
                .count();
            let which = if r.is_default() {
                format!("default rule {}", i - users)
            } else {
                format!("failures.rules[{i}]")
            };
            format!("{which} ({}): {}", r.class(), r.pattern())
        }
    };
    let mut out = std::io::stdout().lock();
    let mut text = format!(
        "class: {}
rule: {rule}
",
        verdict.class
    );
    if let Some(note) = note {
        text.push_str(&format!("note: {note}\n"));
    }
    // A reader that stops early (`| head -1`) changes nothing.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    ExitCode::SUCCESS
}

/// The last `tail_bytes` of `path` (`-`: standard input), `None` when it is longer than
/// `max_log_bytes` (reading stops there).
fn read_tail(
    path: &std::path::Path,
    settings: &FailureSettings,
) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut input: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path)?)
    };
    let mut buffer = failures::TailBuffer::new(settings.tail_bytes, settings.max_log_bytes);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(0) => return Ok(Some(buffer.into_tail())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buffer.push(&chunk[..n]).is_err() {
            return Ok(None);
        }
    }
}

/// `--check-gitlab`: see [`doctor`]. The report goes to stdout; the exit code says how it went.
fn check_gitlab(cli: &Cli, cfg: &Settings, runtime: &tokio::runtime::Runtime) -> ExitCode {
    let hook_url = match cli.hook_url.as_deref().map(install::HookUrl::parse) {
        None => None,
        Some(Ok(url)) => Some(url),
        Some(Err(e)) => {
            say(format_args!("error: --hook-url: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let opts = doctor::DoctorOptions { hook_url };
    let report = match runtime.block_on(doctor::run(cfg, &opts)) {
        Ok(report) => report,
        Err(e) => {
            say(format_args!(
                "error: {}",
                doctor::scrub(&e.to_string(), &cfg.token())
            ));
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    // A reader that stops early (`| head`) changes nothing: the exit code still tells.
    let _ = out
        .write_all(report.render(&cfg.token()).as_bytes())
        .and_then(|()| out.flush());
    match report.verdict() {
        doctor::Verdict::Healthy => ExitCode::SUCCESS,
        doctor::Verdict::Unreachable => ExitCode::from(doctor::EXIT_UNREACHABLE),
        doctor::Verdict::Problems => ExitCode::from(doctor::EXIT_PROBLEMS),
    }
}

/// Logs go to stderr through a background writer: a slow or stuck reader of stderr must never
/// stall polling or `/metrics` (lines are dropped instead, and the drop is counted by the
/// writer). Keep the returned guard alive: dropping it flushes what is buffered.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The queue is allocated whole up front: the default 128,000 lines hold 4 MB for good;
    // 8,192 lines (256 KB) still absorb any burst the exporter logs (one line per project).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(8192)
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    // try_init: a second init (tests) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}

/// The listening socket handed over by systemd socket activation (`LISTEN_FDS`, fd 3), if any.
/// `LISTEN_PID`, when set, must name this process; listenfd also accepts it unset, which is how
/// a parent that cannot know the child's pid before `exec` (the tests) hands a socket over.
fn inherited_listener(
    fds: &mut listenfd::ListenFd,
) -> anyhow::Result<Option<std::net::TcpListener>> {
    let Some(listener) = fds
        .take_tcp_listener(0)
        .context("LISTEN_FDS is set but fd 3 is no listening TCP socket")?
    else {
        return Ok(None);
    };
    if fds.len() > 1 {
        tracing::warn!(
            sockets = fds.len(),
            "socket activation passed several sockets; serving on the first only"
        );
    }
    // Tokio needs it non-blocking; systemd and the tests hand it over blocking.
    listener
        .set_nonblocking(true)
        .context("cannot use the inherited socket")?;
    Ok(Some(listener))
}

/// Runs the exporter until SIGTERM or SIGINT, on the `inherited` socket (socket activation) if
/// given, else on `server.listen`.
pub async fn run(cfg: Settings, inherited: Option<std::net::TcpListener>) -> anyhow::Result<()> {
    let listener = bind(&cfg, inherited).await?;
    run_on(cfg, listener).await
}

/// The `inherited` socket (socket activation) if given, else `server.listen` bound.
async fn bind(
    cfg: &Settings,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<TcpListener> {
    Ok(match inherited {
        Some(listener) => {
            info!(
                "serving on the socket handed over by socket activation; server.listen is not used"
            );
            TcpListener::from_std(listener).context("cannot use the inherited socket")?
        }
        None => TcpListener::bind(cfg.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?,
    })
}

/// Runs the exporter on `listener` until SIGTERM or SIGINT.
async fn run_on(cfg: Settings, listener: TcpListener) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    serve(cfg, listener, shutdown).await
}

/// Runs the exporter on `listener` until `shutdown` is cancelled.
pub async fn serve(
    cfg: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = App::new(&cfg, RetryPolicy::default())?;
    let hook_listener = match app.webhook_listen() {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (webhook.listen)"))?,
        ),
        None => None,
    };
    app.restore(&cfg).await?;
    let bound = listener.local_addr()?;
    info!(listen = %bound, gitlab = %cfg.gitlab.url, "serving /metrics");
    if cfg.webhook.is_some() {
        // The address bound (an inherited socket, or port 0 resolved), not the configured one.
        let at = match &hook_listener {
            Some(l) => l.local_addr()?,
            None => bound,
        };
        info!(listen = %at, "accepting GitLab webhooks on POST /webhook");
    }
    app.run(listener, hook_listener, shutdown).await?;
    Ok(())
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("shutdown requested");
    token.cancel();
}

/// `--demo`: the simulator with a live demo world on a loopback port, and the exporter against it.
#[cfg(feature = "demo")]
async fn run_demo(
    listen: Option<String>,
    summary_interval: Option<std::time::Duration>,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    use std::time::Duration;

    use crate::config::GroupRef;
    use gitlab_sim::{SimClock, Simulator, World};
    let token = "demo-token".to_string();
    let world = World::demo(chrono::Utc::now().timestamp_millis());
    let sim = Simulator::new(world, SimClock::Live, token.clone());
    let handle = sim.spawn().await.context("cannot start the simulator")?;
    let mut cfg = Config::new(handle.base_url.clone(), token.into(), Vec::new());
    // The demo's projects are found as a real deployment would find them: by their group.
    cfg.groups = vec![GroupRef {
        path: Some("acme".into()),
        id: None,
        include_subgroups: true,
    }];
    cfg.discovery.interval = Duration::from_secs(60);
    cfg.server.listen = listen.unwrap_or_else(|| DEMO_LISTEN.to_string());
    cfg.poll.interval = Duration::from_secs(5);
    cfg.poll.max_interval = Duration::from_secs(60);
    // Job Hooks as a GitLab with webhooks set up sends them; polls reconcile every minute.
    let secret: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(32)
        .collect();
    cfg.webhook.enabled = true;
    cfg.webhook.secret = Some(secret.clone().into());
    cfg.webhook.reconcile_interval = Duration::from_secs(60);
    // The simulator serves job logs: the demo shows why jobs fail too.
    cfg.failures.classify = true;
    let mut settings = cfg.validate().context("demo configuration")?;
    if let Some(every) = summary_interval {
        settings.summary_interval = every;
    }
    crate::status::mark_demo();
    info!(gitlab = %handle.base_url, "demo: simulated GitLab started");
    // Bound here: the address to open (and to send hooks to) is the one bound (`--listen
    // 127.0.0.1:0` picks a port).
    let listener = bind(&settings, inherited).await?;
    let mut exporter = listener.local_addr().context("the listening socket")?;
    if exporter.ip().is_unspecified() {
        exporter.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let hooks = gitlab_sim::HookSender::new(
        &sim,
        &format!("http://{exporter}/webhook"),
        &secret,
        gitlab_sim::HookKnobs::default(),
    )
    .context("cannot start the simulator's webhooks")?;
    let _sending = hooks.spawn();
    info!(to = %format!("http://{exporter}/webhook"), "demo: the simulated GitLab sends Job Hooks");
    let url = format!("http://{exporter}/");
    info!(url = %url, "demo: open {url} in a browser (metrics at {url}metrics)");
    run_on(settings, listener).await
}
