//! Unit tests of reading and validating the configuration.

use std::time::Duration;

use secrecy::SecretString;

use super::*;

/// `toml_text` as read (the token resolved), not validated yet.
pub(super) fn parse_raw(toml_text: &str) -> Result<Config, ConfigError> {
    let raw = config::Config::builder()
        .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
        .build()
        .map_err(|e| ConfigError::Source(e.to_string()))?;
    let mut cfg: Config = serde_path_to_error::deserialize(raw)
        .map_err(|e| ConfigError::invalid(e.path().to_string(), e.into_inner().to_string()))?;
    cfg.resolve_token(Some("glpat-secret".into()))?;
    Ok(cfg)
}

pub(super) fn parse(toml_text: &str) -> Result<Settings, ConfigError> {
    parse_raw(toml_text)?.validate()
}

pub(super) const GOOD: &str = r#"
    [gitlab]
    url = "https://gitlab.example.com"
    [poll]
    interval = "15s"
    [[projects]]
    path = "group/sub/project"
    [[projects]]
    id = 42
"#;

pub(super) fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { key, .. } => key,
        ConfigError::Source(s) => panic!("expected a key error, got source error {s}"),
        e @ ConfigError::Syntax { .. } => panic!("expected a key error, got {e}"),
    }
}

#[test]
fn good_config_parses_with_defaults() {
    let cfg = parse(GOOD).unwrap();
    assert_eq!(cfg.poll.interval, Duration::from_secs(15));
    assert_eq!(cfg.poll.backfill, Duration::from_secs(3600));
    assert_eq!(cfg.poll.concurrency, 4);
    assert_eq!(cfg.gitlab.timeout, Duration::from_secs(10));
    assert_eq!(cfg.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(cfg.projects[0].api_id(), "group%2Fsub%2Fproject");
    assert_eq!(cfg.projects[1].api_id(), "42");
}

#[test]
fn hostile_gitlab_limits_have_defaults_and_are_checked() {
    let cfg = parse(GOOD).unwrap();
    assert_eq!(cfg.limits.max_projects, 20_000);
    assert_eq!(cfg.gitlab.max_clock_skew, Duration::from_secs(86_400));
    let with = |extra: &str| parse(&format!("{extra}\n{GOOD}"));
    let cfg = with("[limits]\nmax_projects = 2").unwrap();
    assert_eq!(cfg.limits.max_projects, 2);
    for (extra, key) in [
        ("[limits]\nmax_projects = 0", "limits.max_projects"),
        // Fewer than the two [[projects]] of GOOD.
        ("[limits]\nmax_projects = 1", "limits.max_projects"),
    ] {
        assert_eq!(key_of(with(extra).unwrap_err()), key, "{extra}");
    }
    let skew = GOOD.replace(
        "url = \"https://gitlab.example.com\"",
        "url = \"https://gitlab.example.com\"\nmax_clock_skew = \"1s\"",
    );
    assert_eq!(key_of(parse(&skew).unwrap_err()), "gitlab.max_clock_skew");
}

#[test]
fn errors_name_the_key() {
    let cases = [
        (
            GOOD.replace("interval = \"15s\"", "interval = \"fast\""),
            "poll.interval",
        ),
        (
            GOOD.replace("interval = \"15s\"", "interval = \"0s\""),
            "poll.interval",
        ),
        (
            GOOD.replace("interval = \"15s\"", "intervall = \"15s\""),
            "poll.intervall",
        ),
        (
            GOOD.replace("interval = \"15s\"", "concurrency = 0"),
            "poll.concurrency",
        ),
        (
            GOOD.replace("https://gitlab.example.com", "gitlab.example.com"),
            "gitlab.url",
        ),
        (
            GOOD.replace("url = \"https://gitlab.example.com\"", ""),
            "gitlab",
        ),
        (
            GOOD.replace("id = 42", "path = \"Group/Sub/Project\""),
            "projects[1]",
        ),
        (
            GOOD.replace("id = 42", "id = 42\npath = \"a/b\""),
            "projects[1]",
        ),
        (
            format!("{GOOD}\n[server]\nlisten = \"nowhere\""),
            "server.listen",
        ),
        (
            format!("{GOOD}\n[server]\nmax_connections = 0"),
            "server.max_connections",
        ),
        (
            format!("{GOOD}\n[server]\nheader_read_timeout = \"0s\""),
            "server.header_read_timeout",
        ),
        (
            format!("{GOOD}\n[metrics]\nduration_buckets = [5.0, 1.0]"),
            "metrics.duration_buckets",
        ),
        (
            GOOD.replace(
                "interval = \"15s\"",
                "interval = \"15s\"\nmax_interval = \"10s\"",
            ),
            "poll.max_interval",
        ),
    ];
    assert_keys(cases);
    let no_projects = GOOD.split("[[projects]]").next().unwrap_or_default();
    assert_eq!(key_of(parse(no_projects).unwrap_err()), "projects");
}

#[test]
fn discovery_and_label_errors_name_the_key() {
    let cases = [
        (
            format!("{GOOD}\n[discovery]\nexclude = [\"ok\", \"(unclosed\"]"),
            "discovery.exclude[1]",
        ),
        (
            format!("{GOOD}\n[[groups]]\npath = \"a\"\n[discovery]\ngrace_period = \"10m\""),
            "discovery.grace_period",
        ),
        (
            format!("{GOOD}\n[[groups]]\npath = \"a\"\n[[groups]]\npath = \"/b\""),
            "groups[1].path",
        ),
        (
            format!("{GOOD}\n[[groups]]\nid = 3\ninclude_subgroups = \"maybe\""),
            "groups[0].include_subgroups",
        ),
        (
            format!("{GOOD}\n[labels]\nrunner = \"host\""),
            "labels.runner",
        ),
        (
            format!(
                "{GOOD}\n[labels]\njob_rewrites = [{{ match = 'ok', replace = 'x' }}, {{ match = 'rspec (', replace = 'rspec' }}]"
            ),
            "labels.job_rewrites[1].match",
        ),
        (
            format!("{GOOD}\n[labels]\njob_rewrites = [{{ match = 'a(b)', replace = '$1_x' }}]"),
            "labels.job_rewrites[0].replace",
        ),
        (
            format!("{GOOD}\n[labels]\njob_rewrites = [{{ match = 'a', replacement = 'b' }}]"),
            "labels.job_rewrites[0].replacement",
        ),
        (
            format!("{GOOD}\n[labels]\ndrop = [\"ref\", \"status\"]"),
            "labels.drop[1]",
        ),
        (
            format!("{GOOD}\n[labels]\ndrop = [\"project\"]"),
            "labels.drop[0]",
        ),
        (
            format!("{GOOD}\n[labels]\ndrop = [\"branch\"]"),
            "labels.drop[0]",
        ),
    ];
    assert_keys(cases);
}

/// Each text fails to parse with an error naming its key.
fn assert_keys<const N: usize>(cases: [(String, &str); N]) {
    for (text, key) in cases {
        let err = parse(&text).expect_err(key);
        let msg = err.to_string();
        assert_eq!(key_of(err), key, "{msg}");
    }
}

#[test]
fn discovery_alone_is_enough_and_filters_apply() {
    let no_projects = GOOD.split("[[projects]]").next().unwrap_or_default();
    let cfg = parse(&format!(
        "{no_projects}\n[discovery]\nmembership = true\ninclude = [\"^platform/\"]\nexclude = [\"/sandbox-\"]"
    ))
    .unwrap();
    assert_eq!(cfg.discovery.interval, Duration::from_secs(600));
    assert_eq!(cfg.poll.max_interval, Duration::from_secs(600));
    let f = &cfg.discovery.filter;
    assert!(f.allows("platform/api"));
    assert!(!f.allows("platform/sandbox-1"));
    assert!(!f.allows("other/api"));
    let cfg = parse(&format!("{no_projects}\n[[groups]]\npath = \"platform\"")).unwrap();
    assert!(
        cfg.discovery.groups[0].include_subgroups,
        "subgroups by default"
    );
    assert_eq!(cfg.discovery.groups[0].api_id(), "platform");
}

#[test]
fn label_policy_parses() {
    let cfg = parse(&format!(
        r#"{GOOD}
        [labels]
        runner = "type"
        drop = ["ref", "failure_reason"]
        [[labels.job_rewrites]]
        match = 'rspec (\w+)'
        replace = 'rspec-${{1}}'
        [[labels.job_rewrites]]
        match = 'deploy-.*'
        replace = 'deploy'
        "#
    ))
    .unwrap();
    let l = &cfg.labels;
    assert_eq!(l.runner, crate::labels::RunnerMode::Type);
    assert_eq!(l.rewrite_job("rspec unit").as_deref(), Some("rspec-unit"));
    assert_eq!(l.rewrite_job("deploy-eu").as_deref(), Some("deploy"));
    assert!(!l.keeps("ref") && !l.keeps("failure_reason") && l.keeps("runner"));
    // The effective configuration round-trips (what --check-config prints).
    let text = cfg.to_redacted_toml();
    assert!(
        text.contains("drop = [") && text.contains("rspec (\\w+)"),
        "{text}"
    );
}

#[test]
fn undroppable_labels_are_named_in_the_error() {
    let err = parse(&format!("{GOOD}\n[labels]\ndrop = [\"status\"]")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("labels.drop[0]") && msg.contains("status"),
        "{msg}"
    );
    let err = parse(&format!("{GOOD}\n[labels]\ndrop = [\"host\"]")).unwrap_err();
    assert!(err.to_string().contains("droppable: ref"), "{err}");
}

/// Loads `text` as a configuration file, as the binary does.
pub(super) fn load_text(text: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path))
}

pub(super) const HEAD: &str = "[gitlab]\nurl = \"https://gitlab.example.com\"\n";
pub(super) const TAIL: &str = "\n[[projects]]\nid = 42\n";

#[test]
fn the_gitlab_url_keeps_its_text_and_gives_the_api_base() {
    let with_url = |url: &str| GOOD.replace("https://gitlab.example.com", url);
    for (url, api) in [
        (
            "https://gitlab.example.com",
            "https://gitlab.example.com/api/v4/",
        ),
        (
            "https://gitlab.example.com/",
            "https://gitlab.example.com/api/v4/",
        ),
        (
            "http://example.com/gitlab",
            "http://example.com/gitlab/api/v4/",
        ),
        (
            "http://127.0.0.1:8080/gitlab/",
            "http://127.0.0.1:8080/gitlab/api/v4/",
        ),
    ] {
        let cfg = parse(&with_url(url)).unwrap();
        // The text as configured: the checkpoint records it, so it must not be normalised.
        assert_eq!(cfg.gitlab.url.as_str(), url);
        assert_eq!(cfg.gitlab.url.api_base().as_str(), api);
    }
    for url in ["ftp://gitlab.example.com", "https://x.example.com/?a=b"] {
        assert_eq!(key_of(parse(&with_url(url)).unwrap_err()), "gitlab.url");
    }
}

#[test]
fn listen_takes_an_ip_address_and_port_only() {
    let with_listen = |listen: &str| parse(&format!("{GOOD}\n[server]\nlisten = \"{listen}\""));
    let cfg = with_listen("[::1]:9000").unwrap();
    assert_eq!(cfg.server.listen, "[::1]:9000".parse().unwrap());
    assert_eq!(
        with_listen("127.0.0.1:0").unwrap().server.listen.port(),
        0,
        "port 0 (any free port) is allowed"
    );
    // As before the typed settings: no host names (nothing would resolve them), no bare port.
    for bad in ["localhost:39129", "39129", "0.0.0.0"] {
        assert_eq!(
            key_of(with_listen(bad).unwrap_err()),
            "server.listen",
            "{bad}"
        );
    }
    assert_eq!(
        ServerSettings::default().listen.to_string(),
        DEFAULT_LISTEN,
        "the default of code-built settings is the documented one"
    );
}

#[test]
fn projects_and_groups_become_references() {
    let cfg = parse(&format!(
        "{GOOD}\n[[groups]]\nid = 7\ninclude_subgroups = false\n[[groups]]\npath = \"a/b\""
    ))
    .unwrap();
    assert_eq!(
        cfg.projects,
        [
            ProjectRef::Path("group/sub/project".into()),
            ProjectRef::Id(42)
        ]
    );
    // The display form is the checkpoint key of a configured project: fixed.
    assert_eq!(cfg.projects[0].to_string(), "group/sub/project");
    assert_eq!(cfg.projects[1].to_string(), "id 42");
    assert_eq!(
        (cfg.projects[1].id(), cfg.projects[1].path()),
        (Some(42), None)
    );
    let groups = &cfg.discovery.groups;
    assert_eq!(groups[0].key, GroupKey::Id(7));
    assert!(!groups[0].include_subgroups);
    assert_eq!(groups[1].api_id(), "a%2Fb");
    assert_eq!(groups[1].to_string(), "group a/b");
    assert!(cfg.discovery.enabled());
    // Code-built configurations go through the same entries.
    let built = Config::new(
        "https://gitlab.example.com",
        SecretString::from("glpat-x"),
        vec![ProjectRef::Id(3), ProjectRef::Path("x/y".into())],
    );
    assert_eq!(
        built.validate().unwrap().projects,
        [ProjectRef::Id(3), ProjectRef::Path("x/y".into())]
    );
}

#[test]
fn the_discovery_filter_is_compiled_once_and_a_bad_one_is_no_config() {
    let no_projects = GOOD.split("[[projects]]").next().unwrap_or_default();
    let with = |filters: &str| {
        parse(&format!(
            "{no_projects}\n[discovery]\nmembership = true\n{filters}"
        ))
    };
    // A bad regex in either list is an error naming it; no Settings exists to run without it
    // (and PathFilter has no constructor but the compiling one, so there is no "no filter").
    assert_eq!(
        key_of(with("include = [\"[\"]").unwrap_err()),
        "discovery.include[0]"
    );
    assert_eq!(
        key_of(with("exclude = [\"a\", \"b\", \"(?P<\"]").unwrap_err()),
        "discovery.exclude[2]"
    );
    let cfg = with("include = [\"^a/\"]\nexclude = [\"-old$\"]").unwrap();
    let f = &cfg.discovery.filter;
    assert!(f.allows("a/x") && !f.allows("b/x") && !f.allows("a/x-old"));
    let all = with("").unwrap();
    assert!(all.discovery.filter.allows("anything/at-all"));
}

#[test]
fn the_shard_is_checked_and_resolved() {
    let with = |shard: &str| parse(&format!("{GOOD}\n[shard]\n{shard}"));
    assert_eq!(key_of(with("count = 0").unwrap_err()), "shard.count");
    assert_eq!(
        key_of(with("count = 2\nindex = 2").unwrap_err()),
        "shard.index"
    );
    let fixed = with("count = 3\nindex = 1").unwrap().shard;
    assert_eq!(fixed.resolve(Some("exporter-2")), (1, 3));
    let ordinal = with("count = 3").unwrap().shard;
    assert_eq!(ordinal.count(), 3);
    assert_eq!(ordinal.resolve(Some("exporter-2")), (2, 3));
    assert_eq!(ordinal.resolve(None), (0, 3));
    // A pod ordinal beyond the count (the hostname is no configuration) is the last shard.
    assert_eq!(ordinal.resolve(Some("exporter-7")), (2, 3));
}

#[test]
fn buckets_are_checked_by_their_type() {
    assert_eq!(
        key_of(Buckets::new("metrics.queued_buckets", vec![]).unwrap_err()),
        "metrics.queued_buckets"
    );
    for bad in [vec![1.0, f64::NAN], vec![0.0, 1.0], vec![1.0, 1.0]] {
        assert!(Buckets::new("k", bad.clone()).is_err(), "{bad:?}");
    }
    let cfg = parse(&format!("{GOOD}\n[metrics]\nqueued_buckets = [0.5, 2.0]")).unwrap();
    assert_eq!(cfg.metrics.queued_buckets.as_slice(), [0.5, 2.0]);
    assert_eq!(
        cfg.metrics.duration_buckets.as_slice(),
        default_duration_buckets()
    );
    assert_eq!(
        key_of(parse(&format!("{GOOD}\n[metrics]\nqueued_buckets = []")).unwrap_err()),
        "metrics.queued_buckets"
    );
}

#[test]
fn a_section_validates_alone() {
    let mut cfg = Config::new(
        "https://gitlab.example.com",
        SecretString::from("glpat-x"),
        Vec::new(),
    );
    // No project: the whole is refused, the [gitlab] section alone is fine.
    assert_eq!(key_of(cfg.validate().unwrap_err()), "projects");
    let gitlab = cfg.gitlab.validate().unwrap();
    assert_eq!(gitlab.url, "https://gitlab.example.com");
    cfg.gitlab.timeout = Duration::ZERO;
    assert_eq!(key_of(cfg.gitlab.validate().unwrap_err()), "gitlab.timeout");
}

/// `toml_text` with the webhook secret `secret` as if from `GITLAB_WEBHOOK_SECRET`.
fn parse_with_hook_secret(toml_text: &str, secret: Option<&str>) -> Result<Settings, ConfigError> {
    let mut cfg = parse_raw(toml_text)?;
    cfg.resolve_webhook_secret(secret.map(str::to_string))?;
    cfg.validate()
}

#[test]
fn webhook_settings_are_checked_and_name_the_key() {
    use secrecy::ExposeSecret;
    // Off by default: no secret needed.
    assert!(parse(GOOD).unwrap().webhook.is_none());
    let on = format!("{GOOD}\n[webhook]\nenabled = true");
    let err = parse_with_hook_secret(&on, None).unwrap_err();
    let msg = err.to_string();
    assert_eq!(key_of(err), "webhook.enabled", "{msg}");
    assert!(msg.contains("GITLAB_WEBHOOK_SECRET"), "{msg}");
    let hook = parse_with_hook_secret(&on, Some(" s3cret \n"))
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(hook.secret.expose_secret(), "s3cret");
    assert_eq!(hook.reconcile_interval, Duration::from_secs(600));
    assert_eq!(hook.listen, None);
    assert_eq!(hook.queue.get(), 10_000);

    // The file, and the environment winning over it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-secret");
    std::fs::write(&file, "from-file\n").unwrap();
    let with_file = format!("{on}\nsecret_file = {:?}", file.display().to_string());
    let hook = parse_with_hook_secret(&with_file, None)
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(hook.secret.expose_secret(), "from-file");
    let hook = parse_with_hook_secret(&with_file, Some("from-env"))
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(hook.secret.expose_secret(), "from-env");
    std::fs::write(&file, "\n").unwrap();
    let err = parse_with_hook_secret(&with_file, None).unwrap_err();
    assert_eq!(key_of(err), "webhook.secret_file");
    let missing = format!("{on}\nsecret_file = \"/nonexistent/webhook-secret\"");
    let err = parse_with_hook_secret(&missing, Some("env")).unwrap_err();
    assert_eq!(key_of(err), "webhook.secret_file");

    let cases = [
        (
            format!("{on}\nlisten = \"0.0.0.0:39129\""),
            "webhook.listen",
        ),
        (format!("{on}\nlisten = \"localhost:1\""), "webhook.listen"),
        (
            format!("{on}\nreconcile_interval = \"10s\""),
            "webhook.reconcile_interval",
        ),
        (
            format!("{on}\npeer_url = \"http://peer:39130/webhook\""),
            "webhook.peer_url",
        ),
        (
            format!("{on}\npeer_url = \"ftp://peer-{{shard}}/webhook\""),
            "webhook.peer_url",
        ),
        (format!("{on}\nqueue = 0"), "webhook.queue"),
        (format!("{on}\nsecret = \"inline\""), "webhook.secret"),
    ];
    for (text, key) in cases {
        let err = parse_with_hook_secret(&text, Some("s")).expect_err(key);
        let msg = err.to_string();
        assert_eq!(key_of(err), key, "{msg}");
    }
    let peer = format!(
        "{on}\nlisten = \"0.0.0.0:39130\"\npeer_url = \"http://x-{{shard}}.x:39130/webhook\""
    );
    let hook = parse_with_hook_secret(&peer, Some("s"))
        .unwrap()
        .webhook
        .unwrap();
    assert_eq!(hook.listen, Some("0.0.0.0:39130".parse().unwrap()));
    assert_eq!(
        hook.peer_url.unwrap().for_shard(2),
        "http://x-2.x:39130/webhook"
    );
}
