use super::*;

/// Every line of issue 14's table, verbatim as real logs print it, with the class it must get.
const TABLE: &[(&str, &str)] = &[
    ("Killed\nERROR: Job failed: exit code 137", "oom"),
    (
        "/scripts-1-2/step_script: line 140:   57 Killed                  npm test\n\
         Cleaning up project directory and file based variables\n\
         ERROR: Job failed: exit code 137",
        "oom",
    ),
    (
        "Last State: Terminated\n  Reason: OOMKilled\n  Exit Code: 137",
        "oom",
    ),
    (
        "fatal error: runtime: out of memory\n\nruntime stack:",
        "oom",
    ),
    (
        "<--- JS stacktrace --->\n\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
        "oom",
    ),
    (
        "cp: error writing '/builds/app/dist/bundle.js': No space left on device",
        "disk_full",
    ),
    (
        "failed to register layer: write /usr/lib/x86_64-linux-gnu/libLLVM.so: no space left on device",
        "disk_full",
    ),
    (
        "ERROR: Job failed: failed to pull image \"node:20\" with specified policies [always]: \
         Error response from daemon: toomanyrequests: You have reached your pull rate limit. \
         You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
        "registry_rate_limit",
    ),
    (
        "Error response from daemon: pull access denied for acme/private, repository does not exist or may require 'docker login'",
        "image_pull",
    ),
    (
        "Error response from daemon: manifest for node:99 not found: manifest unknown: manifest unknown",
        "image_pull",
    ),
    (
        "ERROR: Job failed: failed to pull image \"registry.example.com/ci/builder:latest\" with specified policies [always]",
        "image_pull",
    ),
    (
        "fatal: unable to access 'https://gitlab.example.com/acme/api.git/': Could not resolve host: gitlab.example.com",
        "network",
    ),
    (
        "curl: (28) Failed to connect to mirror.example.com port 443 after 130000 ms: Connection timed out",
        "network",
    ),
    (
        "read tcp 10.0.0.5:41234->10.0.0.9:443: read: connection reset by peer",
        "network",
    ),
    (
        "Get \"https://registry-1.docker.io/v2/\": net/http: TLS handshake timeout",
        "network",
    ),
    (
        "ERROR: Job failed: execution took longer than 1h0m0s seconds",
        "timeout",
    ),
    (
        "npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree",
        "dependency",
    ),
    (
        "ERROR: Could not find a version that satisfies the requirement torch==9.9.9 (from versions: none)\n\
         ERROR: No matching distribution found for torch==9.9.9",
        "dependency",
    ),
    (
        "error: failed to select a version for `serde`.\n    ... required by package `app v0.1.0`",
        "dependency",
    ),
    (
        "error[E0425]: cannot find value `x` in this scope\n --> src/main.rs:2:5",
        "compile",
    ),
    (
        "error: could not compile `app` (bin \"app\") due to 1 previous error",
        "compile",
    ),
    (
        "  File \"/builds/app/main.py\", line 3\n    def f(\n         ^\nSyntaxError: '(' was never closed",
        "compile",
    ),
    (
        "failures:\n    tests::adds\n\ntest result: FAILED. 11 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.02s",
        "test_failure",
    ),
    (
        "FAILED tests/test_api.py::test_login - AssertionError\n\
         ========================= 2 failed, 48 passed in 3.21s =========================",
        "test_failure",
    ),
    (
        "=== RUN   TestParse\n--- FAIL: TestParse (0.00s)\n    parse_test.go:12: got 1, want 2\nFAIL",
        "test_failure",
    ),
    (
        "[ERROR] Tests run: 42, Failures: 3, Errors: 0, Skipped: 1, Time elapsed: 2.3 s <<< FAILURE!",
        "test_failure",
    ),
    (
        "Finished in 1.52 seconds (files took 0.8 seconds to load)\n12 examples, 2 failures",
        "test_failure",
    ),
    ("Tests:       1 failed, 4 passed, 5 total", "test_failure"),
    (
        "$ make deploy\nmake: *** [Makefile:12: deploy] Error 2\nERROR: Job failed: exit code 1",
        "other",
    ),
];

fn class_of(c: &Classifier, log: &str) -> String {
    c.classify(log.as_bytes()).class.to_string()
}

#[test]
fn every_line_of_the_table_gets_its_class() {
    let c = Classifier::with_defaults();
    let wrong: Vec<_> = TABLE
        .iter()
        .filter(|(log, class)| class_of(&c, log) != *class)
        .map(|(log, class)| format!("{log:?}: {} (expected {class})", class_of(&c, log)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn the_verdict_names_the_rule_that_matched() {
    let c = Classifier::with_defaults();
    let v = c.classify(b"npm ERR! code ERESOLVE");
    let rule = &c.rules()[v.rule.expect("a rule matched")];
    assert_eq!(rule.class(), "dependency");
    assert!(rule.pattern().contains("ERESOLVE"), "{}", rule.pattern());
    assert!(rule.is_default());
    assert_eq!(c.classify(b"all good, then exit 1").rule, None);
}

#[test]
fn zero_failures_are_no_test_failure() {
    let c = Classifier::with_defaults();
    for log in [
        "[INFO] Tests run: 42, Failures: 0, Errors: 0, Skipped: 1",
        "12 examples, 0 failures",
        "1 example, 0 failures, 1 pending",
        "============================== 48 passed in 3.21s ==============================",
        "===== 10 passed, 0 failed =====",
        "Tests:       5 passed, 5 total",
        "test result: ok. 12 passed; 0 failed; 0 ignored",
        "ok  \tgithub.com/acme/app\t0.012s",
        "Killed\nERROR: Job failed: exit code 1",
        "ERROR: Job failed: exit code 137",
        "ENOSPC: System limit for number of file watchers reached",
    ] {
        assert_eq!(class_of(&c, log), OTHER, "{log:?}");
    }
    // And non-zero counts of several digits do match.
    assert_eq!(class_of(&c, "Tests run: 7, Failures: 10"), "test_failure");
    assert_eq!(class_of(&c, "100 examples, 20 failures"), "test_failure");
    assert_eq!(
        class_of(&c, "Tests run: 3, Failures: 0, Errors: 2"),
        "test_failure"
    );
}

#[test]
fn the_table_order_decides_when_several_match() {
    let c = Classifier::with_defaults();
    // An OOM kill during tests is `oom`, whichever comes first in the log.
    let log = "--- FAIL: TestBig (3.00s)\n/bin/sh: line 1:  12 Killed   go test ./...\n\
               ERROR: Job failed: exit code 137";
    assert_eq!(class_of(&c, log), "oom");
    let log = "toomanyrequests: You have reached your pull rate limit\n\
               ERROR: Job failed: failed to pull image \"node:20\"";
    assert_eq!(class_of(&c, log), "registry_rate_limit");
    let log = "error: could not compile `app`\ntest result: FAILED. 0 passed; 1 failed";
    assert_eq!(class_of(&c, log), "compile");
}

#[test]
fn ansi_escapes_section_markers_and_progress_are_stripped() {
    let raw = "\x1b[0Ksection_start:1700000000:step_script[collapsed=true]\r\x1b[0K\x1b[0;36m\x1b[1mExecuting \"step_script\" stage\x1b[0;m\n\
               \x1b[32;1m$ npm test\x1b[0;m\n\
               Downloading 10%\rDownloading 55%\rDownloading 100%\n\
               \x1b]8;;https://example.com\x07link\x1b]8;;\x07 text\r\n\
               \x1b[31mNo space \x1b[1mleft\x1b[0m on device\x1b[0m\n\
               section_end:1700000042:step_script\r\x1b[0K\n\
               2024-05-30T14:30:00.123456Z 00O Tests:       1 failed, 1 total\n\
               2024-05-30T14:30:00.123456Z 01E+continued";
    let text = strip(raw.as_bytes());
    assert_eq!(
        text,
        "Executing \"step_script\" stage\n$ npm test\nDownloading 100%\nlink text\n\
         No space left on device\n\nTests:       1 failed, 1 total\ncontinued"
    );
    assert_eq!(
        Classifier::with_defaults()
            .classify(raw.as_bytes())
            .class
            .as_ref(),
        "disk_full"
    );
}

#[test]
fn strip_keeps_what_only_looks_like_markup() {
    for text in [
        "section_start is a word here",
        "section_end:notanumber:x",
        "2024-05-30 not a timestamp",
        "[0K is no escape without ESC",
        "tabs\tstay",
    ] {
        assert_eq!(strip(text.as_bytes()), text);
    }
    // Escapes cut short at either end of a tail, and invalid UTF-8, do not break it.
    assert_eq!(
        strip(b"2;31mred\x1b[0m\n\xff\xfeok\x1b["),
        "2;31mred\n\u{fffd}\u{fffd}ok"
    );
    // An escape never swallows the next line.
    assert_eq!(strip(b"a\x1b]0;title\nb"), "a\nb");
    // Windows line ends are line ends, not progress rewrites.
    assert_eq!(
        strip(b"Killed\r\nexit code 137\r\n"),
        "Killed\nexit code 137\n"
    );
}

#[test]
fn an_empty_log_is_unavailable() {
    let v = Classifier::with_defaults().classify(b"");
    assert_eq!(v, Verdict::unavailable());
    assert_eq!(Verdict::log_too_large().class.as_ref(), LOG_TOO_LARGE);
}

fn rule(class: &str, pattern: &str) -> UserRule {
    UserRule {
        class: class.into(),
        pattern: pattern.into(),
    }
}

#[test]
fn user_rules_come_before_the_defaults() {
    let c = Classifier::new(
        &[
            rule(
                "flaky_db",
                r"could not connect to server: Connection refused",
            ),
            rule("slow_mirror", r"mirror\.example\.com.*Connection timed out"),
        ],
        true,
    )
    .expect("valid rules");
    assert_eq!(c.rules().len(), 2 + DEFAULT_RULES.len());
    let log = "curl: (28) Failed to connect to mirror.example.com port 443: Connection timed out";
    let v = c.classify(log.as_bytes());
    assert_eq!((v.class.as_ref(), v.rule), ("slow_mirror", Some(1)));
    assert!(!c.rules()[1].is_default());
    // The defaults still apply after them.
    assert_eq!(class_of(&c, "Could not resolve host: x"), "network");
    assert_eq!(
        class_of(&c, "psql: could not connect to server: Connection refused"),
        "flaky_db"
    );
}

#[test]
fn without_the_defaults_only_user_rules_apply() {
    let c = Classifier::new(&[rule("flaky_db", "Connection refused")], false).expect("valid");
    assert_eq!(c.rules().len(), 1);
    assert_eq!(class_of(&c, "No space left on device"), OTHER);
    assert_eq!(class_of(&c, "dial tcp: Connection refused"), "flaky_db");
    let none = Classifier::new(&[], false).expect("valid");
    assert_eq!(class_of(&none, "OOMKilled"), OTHER);
}

#[test]
fn an_invalid_regex_names_its_rule() {
    let err = Classifier::new(
        &[
            rule("a", "ok"),
            rule("b", "fine"),
            rule("c", "unclosed (group"),
        ],
        true,
    )
    .expect_err("invalid regex");
    assert!(matches!(err, RuleError::Regex { index: 2, .. }), "{err:?}");
    assert_eq!(err.key(), "rules[2].match");
    assert!(err.to_string().contains("unclosed"), "{err}");
}

#[test]
fn class_names_are_checked() {
    for (class, says) in [
        ("", "empty"),
        ("Flaky", "a-z"),
        ("flaky-db", "a-z"),
        ("flaky db", "a-z"),
        ("unavailable", "reserved"),
        ("log_too_large", "reserved"),
    ] {
        let err = Classifier::new(&[rule(class, "x")], true).expect_err(class);
        assert_eq!(err.key(), "rules[0].class", "{class:?}");
        assert!(err.to_string().contains(says), "{class:?}: {err}");
    }
    let long = "a".repeat(MAX_CLASS_LEN + 1);
    let err = Classifier::new(&[rule(&long, "x")], true).expect_err("long");
    assert!(err.to_string().contains("64 bytes"), "{err}");
    let fine = "a".repeat(MAX_CLASS_LEN);
    for class in [fine.as_str(), "other", "oom", "flaky_db_2"] {
        assert!(
            Classifier::new(&[rule(class, "x")], true).is_ok(),
            "{class}"
        );
    }
}

#[test]
fn the_number_of_rules_is_bounded() {
    let rules: Vec<_> = (0..=MAX_USER_RULES)
        .map(|i| rule(&format!("c{i}"), "x"))
        .collect();
    let err = Classifier::new(&rules, true).expect_err("too many");
    assert_eq!(err.key(), "rules");
    assert!(Classifier::new(&rules[..MAX_USER_RULES], true).is_ok());
}

#[test]
fn every_default_rule_compiles() {
    assert_eq!(
        Classifier::with_defaults().rules().len(),
        DEFAULT_RULES.len()
    );
    for (class, pattern) in DEFAULT_RULES {
        assert!(compile(pattern).is_ok(), "{class}: {pattern}");
        assert!(check_class(class).is_ok(), "{class}");
    }
}

#[test]
fn tail_buffer_keeps_the_last_bytes_and_refuses_past_the_limit() {
    let mut t = TailBuffer::new(4, 10);
    t.push(b"abc").expect("fits");
    t.push(b"defg").expect("fits");
    assert_eq!(t.bytes_seen(), 7);
    t.push(b"hij").expect("exactly the limit");
    assert_eq!(t.push(b"k"), Err(TooLarge { max_bytes: 10 }));
    assert_eq!(t.push(b""), Err(TooLarge { max_bytes: 10 }));
    let mut t = TailBuffer::new(4, 100);
    t.push(b"ab").expect("fits");
    assert_eq!(t.into_tail(), b"ab");
    let mut t = TailBuffer::new(0, 100);
    t.push(b"ab").expect("fits");
    assert!(t.into_tail().is_empty());
}

mod property {
    use proptest::prelude::*;

    use super::super::TailBuffer;

    proptest! {
        /// Whatever the chunking, the tail is the last bytes of the concatenation, and the
        /// buffer never holds more than `tail_bytes`.
        #[test]
        fn the_tail_is_the_end_of_the_stream(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..30),
            tail_bytes in 0usize..64,
        ) {
            let mut t = TailBuffer::new(tail_bytes, u64::MAX);
            let mut all = Vec::new();
            for c in &chunks {
                t.push(c).expect("no limit");
                all.extend_from_slice(c);
                prop_assert!(t.held() <= tail_bytes);
            }
            prop_assert_eq!(t.bytes_seen(), all.len() as u64);
            let expected = &all[all.len().saturating_sub(tail_bytes)..];
            prop_assert_eq!(t.into_tail(), expected);
        }
    }
}

/// docs/failures.md lists every default rule, numbered, exactly as it is.
#[test]
fn the_documentation_lists_the_default_rules() {
    let doc = include_str!("../../docs/failures.md");
    let missing: Vec<_> = DEFAULT_RULES
        .iter()
        .enumerate()
        .map(|(i, (class, pattern))| {
            format!("| {i} | `{class}` | `{}` |", pattern.replace('|', "\\|"))
        })
        .filter(|row| !doc.contains(row.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in docs/failures.md: {missing:#?}");
    let rows = doc
        .lines()
        .filter(|l| {
            l.starts_with("| ")
                && l.split('|')
                    .nth(1)
                    .is_some_and(|n| n.trim().parse::<usize>().is_ok())
        })
        .count();
    assert_eq!(rows, DEFAULT_RULES.len(), "rules in docs/failures.md");
}
