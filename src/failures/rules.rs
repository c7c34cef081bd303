//! The default rules: issue 14's table, in its order (an OOM kill during tests is `oom`).
//!
//! Written for real logs: no `^` anchors (GitLab's runner may prefix lines with timestamps,
//! tools indent), ASCII word boundaries `(?-u:\b)` (a Unicode `\b` makes the regex crate leave
//! its fast engine on non-ASCII text), counts that never match zero (`0 failures` is a pass),
//! and case-insensitive where tools differ in case (`No space left on device` from C,
//! `no space left on device` from Go). Each rule is one line of the table so that
//! `--classify-log` can say which one matched.

/// `(class, regex)`, tried in this order after the user's rules.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    // The kernel's OOM killer: the shell says `Killed`, the runner `exit code 137` (128 + 9),
    // usually lines apart.
    ("oom", r"(?s)(?-u:\b)Killed(?-u:\b).*exit code 137(?-u:\b)"),
    ("oom", r"(?-u:\b)OOMKilled(?-u:\b)"),
    ("oom", r"fatal error: runtime: out of memory"),
    // Node: `FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory`
    // (also after `Ineffective mark-compacts near heap limit`).
    ("oom", r"JavaScript heap out of memory"),
    ("oom", r"java\.lang\.OutOfMemoryError"),
    ("disk_full", r"(?i)no space left on device"),
    ("registry_rate_limit", r"(?-u:\b)toomanyrequests(?-u:\b)"),
    (
        "registry_rate_limit",
        r"You have reached your (?:unauthenticated )?pull rate limit",
    ),
    ("image_pull", r"pull access denied"),
    ("image_pull", r"manifest unknown"),
    ("image_pull", r"ERROR: Job failed: failed to pull image"),
    (
        "image_pull",
        r"(?-u:\b)(?:ErrImagePull|ImagePullBackOff)(?-u:\b)",
    ),
    ("network", r"(?i)could not resolve host"),
    ("network", r"(?i)connection timed out"),
    ("network", r"(?i)connection reset by peer"),
    ("network", r"(?i)TLS handshake timeout"),
    ("network", r"Temporary failure in name resolution"),
    ("timeout", r"ERROR: Job failed: execution took longer than"),
    ("dependency", r"npm (?:ERR!|error) code ERESOLVE"),
    (
        "dependency",
        r"ERROR: Could not find a version that satisfies the requirement",
    ),
    ("dependency", r"error: failed to select a version for"),
    ("compile", r"error\[E[0-9]{4}\]:"),
    ("compile", r"error: could not compile"),
    ("compile", r"SyntaxError:"),
    // cargo test
    ("test_failure", r"test result: FAILED"),
    // pytest's summary: `==== 2 failed, 3 passed in 1.20s ====`.
    (
        "test_failure",
        r"=+ [^\n]*(?-u:\b)[1-9][0-9]* failed(?-u:\b)",
    ),
    // go test
    ("test_failure", r"--- FAIL:"),
    // JUnit (Maven Surefire, Gradle): a failure or an error.
    ("test_failure", r"Tests run: [0-9]+, Failures: [1-9]"),
    (
        "test_failure",
        r"Tests run: [0-9]+, Failures: [0-9]+, Errors: [1-9]",
    ),
    // rspec: `12 examples, 2 failures`.
    (
        "test_failure",
        r"(?-u:\b)[0-9]+ examples?, [1-9][0-9]* failures?(?-u:\b)",
    ),
    // jest: `Tests:       1 failed, 4 passed, 5 total`.
    (
        "test_failure",
        r"(?-u:\b)Tests:[ \t]+[1-9][0-9]* failed(?-u:\b)",
    ),
];
