//! Unit tests of reading the configuration: the file, the token, and secrets kept out of
//! errors.

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::tests::{GOOD, HEAD, TAIL, key_of, load_text, parse, parse_raw};
use super::*;

#[test]
fn syntax_errors_never_show_a_secret_and_name_the_key() {
    let s = "glpat-SECRETVALUE123";
    let cases = [
        (format!("{HEAD}token = \"{s}\n{TAIL}"), Some("gitlab.token")),
        (format!("{HEAD}token = '{s}\n{TAIL}"), Some("gitlab.token")),
        (
            format!("{HEAD}token = \"{s}\"\ntoken = \"{s}-2\"{TAIL}"),
            Some("gitlab.token"),
        ),
        (
            format!("{HEAD}token = \"{s}\\q\"{TAIL}"),
            Some("gitlab.token"),
        ),
        (format!("{HEAD}token = \"\"\"\n{s}\n{TAIL}"), None),
        (
            format!("{HEAD}token = \"\"\"\nglpat-\n{s}\\q\n\"\"\"{TAIL}"),
            Some("gitlab.token"),
        ),
        (
            format!("gitlab = {{ url = \"https://gitlab.example.com\", token = \"{s} }}{TAIL}"),
            None,
        ),
        (
            format!("{HEAD}token = \"{s}\"\n[server]\nwebhook_secret = \"{s}2{TAIL}"),
            Some("server.webhook_secret"),
        ),
        (
            format!("{HEAD}token_file = \"/run/{s}{TAIL}"),
            Some("gitlab.token_file"),
        ),
    ];
    for (text, key) in cases {
        let err = load_text(&text).expect_err(&text).to_string();
        assert!(
            !err.contains("SECRETVALUE"),
            "secret shown: {err}\nfor\n{text}"
        );
        if let Some(key) = key {
            assert!(err.contains(key), "{key} not named: {err}\nfor\n{text}");
        }
    }
    // Other lines are still quoted, with the line number: the error stays useful.
    let err = load_text(&format!(
        "{HEAD}token = \"{s}\"\n[poll]\ninterval = 30s{TAIL}"
    ))
    .unwrap_err()
    .to_string();
    assert!(!err.contains("SECRETVALUE"), "{err}");
    assert!(
        err.contains("poll.interval") && err.contains(":5:") && err.contains("interval = 30s"),
        "{err}"
    );
}

#[test]
fn a_secret_key_of_the_wrong_type_is_not_shown() {
    for value in [
        "[\"glpat-SECRETVALUE123\"]",
        "{ x = \"glpat-SECRETVALUE123\" }",
    ] {
        let err = load_text(&format!("{HEAD}token = {value}{TAIL}"))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("SECRETVALUE") && err.contains("gitlab.token"),
            "{err}"
        );
    }
}

#[test]
fn token_file_must_be_a_small_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let with_file =
        |file: &Path| format!("{HEAD}token_file = {:?}{TAIL}", file.display().to_string());
    let big = dir.path().join("big");
    std::fs::write(&big, "a".repeat(100 * 1024)).unwrap();
    let err = load_text(&with_file(&big)).unwrap_err().to_string();
    assert!(
        err.contains("gitlab.token_file") && err.contains("larger"),
        "{err}"
    );
    // A FIFO would block start-up until something writes to it.
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let text = with_file(&fifo);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(load_text(&text).map(|_| ()).map_err(|e| e.to_string()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("reading a FIFO token file does not block");
        let err = result.unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
    // A device that never ends.
    if Path::new("/dev/zero").exists() {
        let err = load_text(&with_file(Path::new("/dev/zero")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gitlab.token_file"), "{err}");
    }
}

#[test]
fn a_token_that_is_no_header_value_is_rejected_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "glpat-SECRETVALUE123\nglpat-other\n").unwrap();
    let err = load_text(&format!(
        "{HEAD}token_file = {:?}{TAIL}",
        file.display().to_string()
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gitlab.token_file") && !err.contains("SECRETVALUE"),
        "{err}"
    );
    let err = load_text(&format!("{HEAD}token = \"glpat-SECRETVALUE123\\nx\"{TAIL}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gitlab.token") && !err.contains("SECRETVALUE"),
        "{err}"
    );
    let mut cfg = parse_raw(GOOD).unwrap();
    let err = cfg
        .resolve_token(Some("glpat-SECRETVALUE123\r\nx".into()))
        .and_then(|()| cfg.validate())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(TOKEN_ENV) && !err.contains("SECRETVALUE"),
        "{err}"
    );
}

#[test]
fn credentials_in_the_url_are_rejected_unshown() {
    for url in [
        "https://user:hunter2pass@gitlab.example.com",
        "https://hunter2pass@gitlab.example.com",
    ] {
        let err = load_text(&format!(
            "[gitlab]\nurl = \"{url}\"\ntoken = \"glpat-x\"{TAIL}"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("gitlab.url") && !err.contains("hunter2"),
            "{err}"
        );
    }
}

#[test]
fn a_trailing_api_v4_is_stripped() {
    for (given, used) in [
        (
            "https://gitlab.example.com/api/v4",
            "https://gitlab.example.com",
        ),
        (
            "https://gitlab.example.com/api/v4/",
            "https://gitlab.example.com",
        ),
        (
            "https://example.com/gitlab/api/v4",
            "https://example.com/gitlab",
        ),
        ("https://example.com/api/v4x", "https://example.com/api/v4x"),
    ] {
        let cfg = load_text(&format!(
            "[gitlab]\nurl = \"{given}\"\ntoken = \"glpat-x\"{TAIL}"
        ))
        .unwrap();
        assert_eq!(cfg.gitlab.url, used);
    }
    // Built in code, it is refused rather than silently doubled.
    let cfg = Config::new(
        "https://gitlab.example.com/api/v4",
        SecretString::from("glpat-x"),
        vec![ProjectRef::Id(1)],
    );
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("gitlab.url")
    );
}

#[test]
fn a_listen_override_applies_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("{HEAD}token = \"glpat-x\"\n[server]\nlisten = \"nowhere\"{TAIL}"),
    )
    .unwrap();
    let cfg = Config::load_with(Some(&path), |cfg| cfg.server.listen = "127.0.0.1:9".into())
        .expect("the override replaces the bad value");
    assert_eq!(cfg.server.listen, "127.0.0.1:9".parse().unwrap());
    let err = Config::load_with(Some(&path), |cfg| cfg.server.listen = "here".into());
    assert_eq!(key_of(err.unwrap_err()), "server.listen");
}

/// `--install-webhooks` enables webhooks through the adjustment: the secret file of a
/// configuration with `webhook.enabled = false` is read then, and only then.
#[test]
fn an_adjustment_enabling_webhooks_resolves_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, "whsec-from-file\n").unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "{HEAD}token = \"glpat-x\"{TAIL}\n[webhook]\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    assert!(Config::load(Some(&path)).unwrap().webhook.is_none());
    let cfg = Config::load_with(Some(&path), |cfg| cfg.webhook.enabled = true).unwrap();
    assert_eq!(
        cfg.webhook.unwrap().secret.expose_secret(),
        "whsec-from-file"
    );
    std::fs::remove_file(&secret).unwrap();
    let err = Config::load_with(Some(&path), |cfg| cfg.webhook.enabled = true).unwrap_err();
    assert_eq!(key_of(err), "webhook.secret_file");
}

#[test]
fn token_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "  glpat-from-file\n").unwrap();
    let mut cfg = parse_raw(GOOD).unwrap();
    cfg.gitlab.token = None;
    cfg.gitlab.token_file = Some(file.clone());
    cfg.resolve_token(None).unwrap();
    assert_eq!(
        cfg.validate().unwrap().token().expose_secret(),
        "glpat-from-file"
    );
    cfg.gitlab.token_file = Some(dir.path().join("missing"));
    assert_eq!(
        key_of(cfg.resolve_token(None).unwrap_err()),
        "gitlab.token_file"
    );
}

#[test]
fn redacted_toml_hides_token() {
    let cfg = parse(GOOD).unwrap();
    let text = cfg.to_redacted_toml();
    assert!(!text.contains("glpat-secret"), "{text}");
    // Not even a placeholder: fed back, it would be used as the token.
    assert!(
        !text.contains("<redacted>") && !text.contains("token ="),
        "{text}"
    );
    assert!(text.contains("# gitlab.token is set"), "{text}");
    assert!(!format!("{cfg:?}").contains("glpat-secret"));
}

#[test]
fn a_duration_given_as_a_number_says_what_a_duration_looks_like() {
    for text in [
        GOOD.replace("interval = \"15s\"", "interval = 30"),
        GOOD.replace("interval = \"15s\"", "interval = \"30\""),
    ] {
        let err = load_text(&text).unwrap_err();
        let msg = err.to_string();
        assert_eq!(key_of(err), "poll.interval");
        assert!(msg.contains("a duration such as \"30s\""), "{msg}");
        assert!(msg.contains("30"), "{msg}");
    }
}

/// What `--check-config` prints: every key (the label policy's lists and the shard index
/// too, as resolved from the host name), no empty table and no bare key before the first
/// table; and it is a configuration that loads into the same settings, printed the same.
#[test]
fn the_effective_configuration_is_complete_and_round_trips() {
    let text = format!(
        "{HEAD}token = \"glpat-secret\"\n[shard]\ncount = 3\n[labels]\nrunner = \"type\"\n{TAIL}"
    );
    let first = load_text(&text)
        .unwrap()
        .to_redacted_toml_for(Some("gje-2"));
    assert!(first.starts_with("# gitlab.token is set"), "{first}");
    assert!(first.contains("\n[gitlab]\n"), "{first}");
    assert!(!first.contains("glpat-secret"), "{first}");
    assert!(!first.contains("\n[state]"), "no empty [state]: {first}");
    assert!(first.contains("# [state] dir is unset"), "{first}");
    assert!(!first.contains("groups = []"), "{first}");
    assert!(first.contains("# no [[groups]]"), "{first}");
    let table: toml::Table = first.parse().expect("valid TOML");
    assert_eq!(table["shard"]["index"].as_integer(), Some(2), "{first}");
    assert_eq!(table["shard"]["count"].as_integer(), Some(3), "{first}");
    assert!(first.contains("from HOSTNAME=gje-2"), "{first}");
    assert_eq!(table["labels"]["drop"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        table["labels"]["job_rewrites"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(table["projects"][0]["id"].as_integer(), Some(42));
    // Loaded again with a token given (it is never written), on another host.
    let second = load_text(&with_token(&first))
        .unwrap()
        .to_redacted_toml_for(Some("elsewhere-0"));
    let again: toml::Table = second.parse().expect("valid TOML");
    assert_eq!(table, again, "{first}\n---\n{second}");
}

#[test]
fn the_effective_configuration_shows_job_rewrites_and_dropped_labels() {
    let text = format!(
        "{HEAD}token = \"t\"\n[labels]\ndrop = [\"ref\"]\n[[labels.job_rewrites]]\nmatch = 'rspec (\\w+)'\nreplace = 'rspec-${{1}}'\n{TAIL}"
    );
    let out = load_text(&text).unwrap().to_redacted_toml_for(None);
    let table: toml::Table = out.parse().expect("valid TOML");
    assert_eq!(table["labels"]["drop"][0].as_str(), Some("ref"), "{out}");
    assert_eq!(
        table["labels"]["job_rewrites"][0]["match"].as_str(),
        Some("rspec (\\w+)"),
        "{out}"
    );
    assert_eq!(table["shard"]["index"].as_integer(), Some(0), "{out}");
    let again = load_text(&with_token(&out))
        .unwrap()
        .to_redacted_toml_for(None);
    assert_eq!(out, again);
}

/// `--check-config` output with a token put back into `[gitlab]` (it is never written).
fn with_token(rendered: &str) -> String {
    rendered.replacen("[gitlab]\n", "[gitlab]\ntoken = \"glpat-other\"\n", 1)
}
