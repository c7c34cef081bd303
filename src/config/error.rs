//! [`ConfigError`], and what keeps secrets out of it: syntax errors that never quote a
//! secret-holding line, and a last scrub of every known secret value.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Source(String),
    /// `key` is the dotted path of the offending key, e.g. `poll.interval`.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// The file is no TOML. `key` is the key of the offending line, when it has one; the line
    /// itself is quoted only when it holds no secret.
    #[error("{}TOML syntax error at {at}: {message}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
    Syntax {
        key: Option<String>,
        at: String,
        message: String,
    },
}

impl ConfigError {
    /// An error about the value of `key` (a dotted path, e.g. `poll.interval`).
    pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Shortest value scrubbed from error messages: real tokens are far longer, and scrubbing
/// short common words (`true`, `1h`) would only mangle messages.
const MIN_SCRUBBED: usize = 6;

impl ConfigError {
    /// The error with every occurrence of `secrets` replaced.
    pub(super) fn scrubbed(self, secrets: &[String]) -> Self {
        let mut secrets: Vec<&str> = secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| s.len() >= MIN_SCRUBBED)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let scrub = |mut text: String| {
            for secret in &secrets {
                if text.contains(secret) {
                    text = text.replace(secret, "<redacted>");
                }
            }
            text
        };
        match self {
            Self::Source(s) => Self::Source(scrub(s)),
            Self::Invalid { key, message } => Self::Invalid {
                key: scrub(key),
                message: scrub(message),
            },
            Self::Syntax { key, at, message } => Self::Syntax {
                key: key.map(scrub),
                at: scrub(at),
                message: scrub(message),
            },
        }
    }
}

/// Keys whose values are (or may be) secrets: `token`, `token_file`, `*_secret`, `*password*`.
pub(super) fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| key.contains(w))
}

/// Words that make a key secret.
const SECRET_WORDS: [&str; 3] = ["token", "secret", "password"];

/// A configuration file's lines, with those that hold a secret marked, for syntax errors.
pub(super) struct SourceLines<'a> {
    /// (byte offset of the line's start, the line without its line break)
    lines: Vec<(usize, &'a str)>,
    /// Per line: it holds a secret (a secret key's assignment, or the inside of a multi-line
    /// string one opened).
    secret: Vec<bool>,
    /// Per line: the line whose key it belongs to (itself, or where its multi-line string
    /// opened).
    owner: Vec<usize>,
}

impl<'a> SourceLines<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        let mut lines = Vec::new();
        let mut offset = 0;
        for raw in text.split_inclusive('\n') {
            lines.push((offset, raw.trim_end_matches(['\n', '\r'])));
            offset += raw.len();
        }
        let mut secret = Vec::with_capacity(lines.len());
        let mut owner = Vec::with_capacity(lines.len());
        // An open multi-line string: (its delimiter, its line, whether its key is secret).
        let mut open: Option<(&str, usize, bool)> = None;
        for (i, (_, line)) in lines.iter().enumerate() {
            if let Some((delim, from, is_secret)) = open {
                secret.push(is_secret);
                owner.push(from);
                if line.matches(delim).count() % 2 == 1 {
                    open = None;
                }
                continue;
            }
            let value_at = secret_assignment(line);
            secret.push(value_at.is_some() || has_userinfo(line));
            owner.push(i);
            // Where the value starts: after a secret key's `=`, or after the first `=`.
            let Some(at) = value_at.or_else(|| line.find('=').map(|e| e + 1)) else {
                continue;
            };
            let value = &line[at..];
            for delim in ["\"\"\"", "'''"] {
                if value.matches(delim).count() % 2 == 1 {
                    open = Some((delim, i, value_at.is_some()));
                    break;
                }
            }
        }
        Self {
            lines,
            secret,
            owner,
        }
    }

    /// Pieces of the secret lines' values, to scrub from any message.
    pub(super) fn secret_values(&self) -> Vec<String> {
        let mut values = Vec::new();
        for (i, (_, line)) in self.lines.iter().enumerate() {
            if !self.secret[i] {
                continue;
            }
            let value = match secret_assignment(line) {
                Some(at) if self.owner[i] == i => &line[at..],
                _ => line,
            };
            values.extend(
                value
                    .split(|c: char| c.is_whitespace() || "\"',{}[]\\".contains(c))
                    .filter(|piece| piece.len() >= MIN_SCRUBBED)
                    .map(str::to_string),
            );
        }
        values
    }

    /// A syntax error naming the file, line, column and (when the line has one) the key; the
    /// line is quoted unless it holds a secret. The parser's own rendering is not used: it
    /// quotes the source line whatever it holds.
    pub(super) fn syntax_error(&self, path: &Path, e: &toml::de::Error) -> ConfigError {
        let offset = e.span().map_or(0, |s| s.start);
        let index = self
            .lines
            .iter()
            .rposition(|(start, _)| *start <= offset)
            .unwrap_or(0);
        let (start, line) = self.lines.get(index).copied().unwrap_or((0, ""));
        let column = line
            .get(..offset.saturating_sub(start).min(line.len()))
            .map_or(1, |before| before.chars().count() + 1);
        let mut message: String = e
            .message()
            .trim()
            .lines()
            .collect::<Vec<_>>()
            .join("; ")
            .chars()
            .take(300)
            .collect();
        if self.secret.get(index).copied().unwrap_or(false) {
            message.push_str(" (the line is not shown: it holds a secret)");
        } else {
            let shown: String = line.trim().chars().take(200).collect();
            message.push_str(&format!(" in {shown:?}"));
        }
        ConfigError::Syntax {
            key: self.key_of(self.owner.get(index).copied().unwrap_or(index)),
            at: format!("{}:{}:{column}", path.display(), index + 1),
            message,
        }
    }

    /// The dotted key a `key = value` line sets, under the table header above it.
    fn key_of(&self, index: usize) -> Option<String> {
        let (_, line) = self.lines.get(index)?;
        let (lhs, _) = line.split_once('=')?;
        let key = bare_key(lhs)?;
        let table = self.lines[..index]
            .iter()
            .enumerate()
            .rev()
            .filter(|(i, _)| self.owner[*i] == *i)
            .map(|(_, (_, l))| l.trim())
            .find(|l| l.starts_with('['))
            .and_then(|l| bare_key(l.trim_start_matches('[').split(']').next().unwrap_or("")));
        Some(match table {
            Some(t) => format!("{t}.{key}"),
            None => key,
        })
    }
}

/// A (possibly dotted or quoted) key as plain dotted text, if it looks like one.
fn bare_key(text: &str) -> Option<String> {
    let text = text.trim();
    let ok = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
    ok.then(|| {
        text.split('.')
            .map(|part| part.trim().trim_matches(['"', '\'']))
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// Whether `line` holds a URL with credentials (`scheme://user:password@host`): such a line
/// is not quoted either.
fn has_userinfo(line: &str) -> bool {
    line.match_indices("://").any(|(i, sep)| {
        line[i + sep.len()..]
            .split(|c: char| c.is_whitespace() || "/\"'?#".contains(c))
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}

/// Where the value of a secret key's assignment starts in `line` (just after its `=`): a
/// key containing `token`, `secret` or `password`, anywhere in the line (inline tables too).
fn secret_assignment(line: &str) -> Option<usize> {
    let lower = line.to_ascii_lowercase();
    SECRET_WORDS
        .iter()
        .flat_map(|word| lower.match_indices(word).map(|(i, w)| i + w.len()))
        .filter_map(|end| {
            let rest = lower[end..]
                .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || "_-\"'".contains(c))
                .trim_start();
            rest.starts_with('=').then(|| line.len() - rest.len() + 1)
        })
        .min()
}
