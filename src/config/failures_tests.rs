//! `[failures]`: defaults, sizes, rules, errors naming the key, and `--check-config`'s output
//! taken back.

use super::tests::{GOOD, key_of, parse};

fn with(section: &str) -> String {
    format!("{GOOD}\n{section}")
}

#[test]
fn failures_are_off_by_default_with_the_default_rules() {
    let cfg = parse(GOOD).expect("valid");
    let f = &cfg.failures;
    assert!(!f.classify);
    assert_eq!(f.tail_bytes, 64 * 1024);
    assert_eq!(f.max_log_bytes, 32 * 1024 * 1024);
    assert_eq!(
        f.classifier.rules().len(),
        crate::failures::DEFAULT_RULES.len()
    );
    assert_eq!(
        f.classifier
            .classify(b"No space left on device")
            .class
            .as_ref(),
        "disk_full"
    );
}

#[test]
fn failures_section_is_read() {
    let cfg = parse(&with(
        r#"
        [failures]
        classify = true
        tail_bytes = "16KiB"
        max_log_bytes = 1048576
        [[failures.rules]]
        class = "flaky_db"
        match = "could not connect to server: Connection refused"
        [[failures.rules]]
        class = "disk_full"
        match = "quota exceeded"
        "#,
    ))
    .expect("valid");
    let f = &cfg.failures;
    assert!(f.classify);
    assert_eq!(f.tail_bytes, 16 * 1024);
    assert_eq!(f.max_log_bytes, 1024 * 1024);
    let rules = f.classifier.rules();
    assert_eq!(rules.len(), 2 + crate::failures::DEFAULT_RULES.len());
    assert_eq!(
        (rules[0].class(), rules[1].class()),
        ("flaky_db", "disk_full")
    );
    let v = f
        .classifier
        .classify(b"psql: could not connect to server: Connection refused");
    assert_eq!((v.class.as_ref(), v.rule), ("flaky_db", Some(0)));
}

#[test]
fn default_rules_can_be_replaced() {
    let cfg = parse(&with(
        r#"
        [failures]
        default_rules = false
        [[failures.rules]]
        class = "oom"
        match = "Killed"
        "#,
    ))
    .expect("valid");
    let c = &cfg.failures.classifier;
    assert_eq!(c.rules().len(), 1);
    assert_eq!(
        c.classify(b"No space left on device").class.as_ref(),
        "other"
    );
}

#[test]
fn failures_errors_name_the_key() {
    let rule = |class: &str, pattern: &str| {
        format!("[[failures.rules]]\nclass = {class:?}\nmatch = {pattern:?}\n")
    };
    let three = |third: String| with(&format!("{}{}{third}", rule("a", "ok"), rule("b", "fine")));
    for (text, key) in [
        (
            three(rule("c", "unclosed (group")),
            "failures.rules[2].match",
        ),
        (three(rule("Bad Class", "x")), "failures.rules[2].class"),
        (three(rule("unavailable", "x")), "failures.rules[2].class"),
        (
            with("[[failures.rules]]\nclass = \"a\"\npattern = \"x\"\n"),
            "failures.rules[0]",
        ),
        (
            with("[failures]\ntail_bytes = \"64 potatoes\""),
            "failures.tail_bytes",
        ),
        (with("[failures]\ntail_bytes = 100"), "failures.tail_bytes"),
        (
            with("[failures]\ntail_bytes = \"2MiB\""),
            "failures.tail_bytes",
        ),
        (
            with("[failures]\ntail_bytes = \"64KiB\"\nmax_log_bytes = \"32KiB\""),
            "failures.max_log_bytes",
        ),
        (
            with("[failures]\nmax_log_bytes = \"2GiB\""),
            "failures.max_log_bytes",
        ),
        (with("[failures]\nclasify = true"), "failures.clasify"),
    ] {
        let err = parse(&text).expect_err(key);
        let shown = err.to_string();
        assert!(key_of(err).starts_with(key), "{key}: {shown}");
    }
    let err = parse(&three(rule("c", "unclosed (group"))).expect_err("regex");
    assert!(
        err.to_string().starts_with("failures.rules[2].match: "),
        "{err}"
    );
}

#[test]
fn too_many_rules_are_refused() {
    let rules: String = (0..=crate::failures::MAX_USER_RULES)
        .map(|i| format!("[[failures.rules]]\nclass = \"c{i}\"\nmatch = \"x{i}\"\n"))
        .collect();
    let err = parse(&with(&rules)).expect_err("too many");
    assert_eq!(key_of(err), "failures.rules");
}

#[test]
fn check_config_prints_failures_and_takes_them_back() {
    let text = with(
        r#"
        [failures]
        classify = true
        tail_bytes = "16KiB"
        max_log_bytes = 5000000
        [[failures.rules]]
        class = "flaky_db"
        match = 'could not connect to server: "Connection refused"\s+\d+'
        "#,
    );
    let cfg = parse(&text).expect("valid");
    let shown = cfg.to_redacted_toml_for(None);
    assert!(shown.contains("[failures]\nclassify = true\n"), "{shown}");
    assert!(shown.contains("tail_bytes = \"16KiB\""), "{shown}");
    assert!(shown.contains("max_log_bytes = 5000000"), "{shown}");
    assert!(shown.contains("default_rules = true"), "{shown}");
    assert!(shown.contains("[[failures.rules]]"), "{shown}");
    assert!(
        shown.contains("default rules (docs/failures.md)"),
        "{shown}"
    );
    let again = parse(&shown).expect("the output is a valid configuration");
    assert_eq!(again.to_redacted_toml_for(None), shown);
    let rules = again.failures.classifier.rules();
    assert_eq!(
        rules[0].pattern(),
        r#"could not connect to server: "Connection refused"\s+\d+"#
    );
    // Defaults print too.
    let shown = parse(GOOD).expect("valid").to_redacted_toml_for(None);
    let section = shown
        .split("[failures]\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("a [failures] section");
    let mut lines: Vec<_> = section.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "classify = false",
            "default_rules = true",
            "max_log_bytes = \"32MiB\"",
            "rules = []",
            "tail_bytes = \"64KiB\"",
        ],
        "{shown}"
    );
}
