//! STUB (helper "wire"): the API of `src/failures.rs` as named in the session brief, so the
//! trace request, the queue and the cycle step build before helper "classify" lands. Replaced
//! wholesale by h-classify's file at merge time (take theirs).

use std::sync::Arc;

use regex::bytes::Regex;

pub const OTHER: &str = "other";
pub const UNAVAILABLE: &str = "unavailable";
pub const LOG_TOO_LARGE: &str = "log_too_large";

/// What a tail was classified as.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub class: Arc<str>,
    pub rule: Option<usize>,
}

/// Ordered rules, first match wins.
#[derive(Debug)]
pub struct Classifier {
    rules: Vec<(Arc<str>, Regex)>,
    other: Arc<str>,
}

impl Classifier {
    pub fn with_defaults() -> Self {
        let rules = [
            ("oom", r"OOMKilled|out of memory"),
            ("disk_full", r"No space left on device"),
            ("network", r"Could not resolve host|Connection timed out"),
            ("test_failure", r"test result: FAILED|--- FAIL:"),
        ]
        .into_iter()
        .filter_map(|(c, r)| Regex::new(r).ok().map(|r| (Arc::from(c), r)))
        .collect();
        Self {
            rules,
            other: Arc::from(OTHER),
        }
    }

    pub fn classify(&self, tail: &[u8]) -> Verdict {
        let text = strip(tail);
        let tail = text.as_bytes();
        for (i, (class, re)) in self.rules.iter().enumerate() {
            if re.is_match(tail) {
                return Verdict {
                    class: class.clone(),
                    rule: Some(i),
                };
            }
        }
        Verdict {
            class: self.other.clone(),
            rule: None,
        }
    }
}

/// ANSI escapes and GitLab's section markers out (stub: ANSI only).
pub fn strip(raw: &[u8]) -> String {
    let re = Regex::new(r"\x1b\[[0-9;]*[A-Za-z]").ok();
    let out = match re {
        Some(re) => re.replace_all(raw, &b""[..]).into_owned(),
        None => raw.to_vec(),
    };
    String::from_utf8_lossy(&out).into_owned()
}

/// The log grew past `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// The last `tail_bytes` of a stream, refusing more than `max_bytes` in all.
#[derive(Debug)]
pub struct TailBuffer {
    tail_bytes: usize,
    max_bytes: u64,
    seen: u64,
    buf: std::collections::VecDeque<u8>,
}

impl TailBuffer {
    pub fn new(tail_bytes: usize, max_bytes: u64) -> Self {
        Self {
            tail_bytes,
            max_bytes,
            seen: 0,
            buf: std::collections::VecDeque::with_capacity(tail_bytes),
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        self.seen += chunk.len() as u64;
        if self.seen > self.max_bytes {
            return Err(TooLarge);
        }
        let keep = &chunk[chunk.len().saturating_sub(self.tail_bytes)..];
        self.buf.extend(keep);
        let over = self.buf.len().saturating_sub(self.tail_bytes);
        self.buf.drain(..over);
        Ok(())
    }

    pub fn into_tail(self) -> Vec<u8> {
        self.buf.into()
    }
}
