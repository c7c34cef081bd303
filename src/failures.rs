//! Why a job failed: a class from the end of its log (issue 14).
//!
//! Pure: regexes and bytes only, no I/O, no clock, no tokio. The client streams a failed job's
//! trace into a [`TailBuffer`] (only the last `failures.tail_bytes` are kept, and reading stops
//! after `failures.max_log_bytes`); the [`Classifier`] strips ANSI escapes and GitLab's section
//! markers ([`strip`]) and runs an ordered rule list over what is left: the first rule that
//! matches names the class ([`Verdict`]).
//!
//! Privacy: a log holds secrets. Nothing here logs, stores or returns any of it: only a class
//! name and the index of the rule that matched leave this module.
//!
//! - `rules.rs`: the default rules (the table, in its order).
//! - `strip.rs`: [`strip`].
//! - `tail.rs`: [`TailBuffer`].

mod rules;
mod strip;
mod tail;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::{Arc, LazyLock};

pub use rules::DEFAULT_RULES;
pub use strip::strip;
pub use tail::{TailBuffer, TooLarge};

/// Nothing matched.
pub const OTHER: &str = "other";
/// The log could not be read (404, 403, errors after a few tries) or was empty (erased).
pub const UNAVAILABLE: &str = "unavailable";
/// The log was longer than `failures.max_log_bytes`: reading stopped, nothing was classified.
pub const LOG_TOO_LARGE: &str = "log_too_large";

/// User rules at most: each class is a label value, so the rule list bounds the cardinality
/// of `gitlab_ci_job_failures_total` (and each rule is a regex run over every failed job's tail).
pub const MAX_USER_RULES: usize = 100;
/// Longest class name, in bytes.
pub const MAX_CLASS_LEN: usize = 64;
/// Compiled size allowed per rule (the regex crate's `size_limit`; its default is 10 MiB): a
/// hundred huge rules must not take a gigabyte.
const RULE_SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache per rule (the regex crate's `dfa_size_limit`).
const RULE_DFA_LIMIT: usize = 1 << 20;

/// A rule as configured (`[[failures.rules]]`): a class name and a regex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRule {
    pub class: String,
    pub pattern: String,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    class: Arc<str>,
    regex: regex::Regex,
    default: bool,
}

impl Rule {
    /// The class it gives.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// The regex as written.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// Whether it is one of [`DEFAULT_RULES`] (not a user rule).
    pub fn is_default(&self) -> bool {
        self.default
    }
}

/// A user rule that cannot be used. `index` is its place in `[[failures.rules]]` (from 0).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{count} rules; at most {MAX_USER_RULES} (each class is a label value)")]
    TooMany { count: usize },
    #[error("{reason}")]
    Class { index: usize, reason: String },
    #[error("{source}")]
    Regex {
        index: usize,
        #[source]
        source: regex::Error,
    },
}

impl RuleError {
    /// The rule's field the error is about, as a key below `failures.`: `rules`,
    /// `rules[2].class` or `rules[2].match`.
    pub fn key(&self) -> String {
        match self {
            Self::TooMany { .. } => "rules".to_string(),
            Self::Class { index, .. } => format!("rules[{index}].class"),
            Self::Regex { index, .. } => format!("rules[{index}].match"),
        }
    }
}

/// What a log's tail says: its class, and which rule said it (`None`: [`OTHER`], or a class
/// given without a rule: [`UNAVAILABLE`], [`LOG_TOO_LARGE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub class: Arc<str>,
    /// Index into [`Classifier::rules`].
    pub rule: Option<usize>,
}

impl Verdict {
    /// A class no rule gave (e.g. [`UNAVAILABLE`], [`LOG_TOO_LARGE`]).
    pub fn without_rule(class: &str) -> Self {
        Self {
            class: Arc::from(class),
            rule: None,
        }
    }

    pub fn unavailable() -> Self {
        Self::without_rule(UNAVAILABLE)
    }

    pub fn log_too_large() -> Self {
        Self::without_rule(LOG_TOO_LARGE)
    }
}

/// The ordered rules: user rules first, in file order, then (unless replaced) the defaults.
/// The first that matches wins. Compiled once; each rule runs in time linear in the tail (the
/// `regex` crate has no backtracking).
#[derive(Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
    other: Arc<str>,
    unavailable: Arc<str>,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Self::with_defaults()
    }
}

impl Classifier {
    /// The default rules alone.
    pub fn with_defaults() -> Self {
        Self::build(defaults())
    }

    /// `user_rules` (checked: class names, regexes, at most [`MAX_USER_RULES`]) followed by
    /// the defaults when `keep_defaults`.
    pub fn new(user_rules: &[UserRule], keep_defaults: bool) -> Result<Self, RuleError> {
        if user_rules.len() > MAX_USER_RULES {
            return Err(RuleError::TooMany {
                count: user_rules.len(),
            });
        }
        let mut rules = Vec::with_capacity(user_rules.len() + DEFAULT_RULES.len());
        for (index, r) in user_rules.iter().enumerate() {
            check_class(&r.class).map_err(|reason| RuleError::Class { index, reason })?;
            let regex = compile(&r.pattern).map_err(|source| RuleError::Regex { index, source })?;
            rules.push(Rule {
                class: Arc::from(r.class.as_str()),
                regex,
                default: false,
            });
        }
        if keep_defaults {
            rules.extend(defaults());
        }
        Ok(Self::build(rules))
    }

    fn build(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            other: Arc::from(OTHER),
            unavailable: Arc::from(UNAVAILABLE),
        }
    }

    /// Every rule, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The class of a log whose last bytes are `tail` (raw, as read: escapes and section
    /// markers are stripped here). An empty tail (an erased log) is [`UNAVAILABLE`].
    pub fn classify(&self, tail: &[u8]) -> Verdict {
        if tail.is_empty() {
            return Verdict {
                class: self.unavailable.clone(),
                rule: None,
            };
        }
        self.classify_text(&strip(tail))
    }

    /// The class of text already stripped.
    pub fn classify_text(&self, text: &str) -> Verdict {
        match self.rules.iter().position(|r| r.regex.is_match(text)) {
            Some(i) => Verdict {
                class: self.rules[i].class.clone(),
                rule: Some(i),
            },
            None => Verdict {
                class: self.other.clone(),
                rule: None,
            },
        }
    }
}

/// A user's class name: a label value of `[a-z0-9_]`, at most [`MAX_CLASS_LEN`] bytes, not
/// one the exporter gives itself when it could not classify.
fn check_class(class: &str) -> Result<(), String> {
    if class.is_empty() {
        return Err("is empty".into());
    }
    if class.len() > MAX_CLASS_LEN {
        return Err(format!("is longer than {MAX_CLASS_LEN} bytes"));
    }
    if !class
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "{:?}: only a-z, 0-9 and _ (it is a label value)",
            bounded(class)
        ));
    }
    if class == UNAVAILABLE || class == LOG_TOO_LARGE {
        return Err(format!(
            "{class:?} is reserved (the exporter gives it when a log cannot be classified)"
        ));
    }
    Ok(())
}

/// At most 64 characters of `text`, for an error message.
fn bounded(text: &str) -> String {
    text.chars().take(MAX_CLASS_LEN).collect()
}

fn compile(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(RULE_SIZE_LIMIT)
        .dfa_size_limit(RULE_DFA_LIMIT)
        .build()
}

/// [`DEFAULT_RULES`], compiled once per process (a clone shares the compiled programs). They
/// are tested to compile (`tests.rs`); one that somehow did not would be left out rather than
/// stop the exporter.
fn defaults() -> Vec<Rule> {
    static COMPILED: LazyLock<Vec<Rule>> = LazyLock::new(|| {
        DEFAULT_RULES
            .iter()
            .filter_map(|(class, pattern)| {
                compile(pattern).ok().map(|regex| Rule {
                    class: Arc::from(*class),
                    regex,
                    default: true,
                })
            })
            .collect()
    });
    COMPILED.clone()
}
