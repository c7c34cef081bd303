//! GitLab-provided text on its way into a log line or an error message: bounded and escaped, so a
//! hostile or broken server can neither flood the log (an 8 MB error message) nor forge lines
//! in it (a newline followed by a fake entry, terminal escape sequences).

use std::fmt::{self, Write as _};

/// Bytes of GitLab text shown at most (escapes included); the rest is summarised by its length.
pub const MAX_SHOWN: usize = 200;

/// Displays a string at most [`MAX_SHOWN`] bytes long (cut on a char boundary, the cut noted),
/// with control and bidi-override characters escaped (`\n`, `\u{1b}`, …).
#[derive(Debug, Clone, Copy)]
pub struct Bounded<'a>(pub &'a str);

/// [`Bounded`], as an owned string (for error values).
pub fn bounded(s: &str) -> String {
    Bounded(s).to_string()
}

/// [`bounded`] for raw bytes (invalid UTF-8 shown as U+FFFD); decodes only a prefix of `bytes`.
pub fn bounded_bytes(bytes: &[u8]) -> String {
    // Escaping never shrinks text, so no more than MAX_SHOWN bytes (and a partial char) can be
    // shown.
    let head = &bytes[..bytes.len().min(MAX_SHOWN + 4)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let shown = write_bounded(&mut out, &text).unwrap_or(0);
    if shown < text.len() || head.len() < bytes.len() {
        let _ = write!(out, "…[{} bytes in all]", bytes.len());
    }
    out
}

/// Characters written escaped: C0/C1 controls and DEL, and Unicode's line separators and
/// bidirectional overrides (which can make a line read as another).
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `s` escaped until [`MAX_SHOWN`] bytes are written; returns the bytes of `s` shown.
fn write_bounded(f: &mut impl fmt::Write, s: &str) -> Result<usize, fmt::Error> {
    let mut written = 0;
    let mut buf = String::new();
    for (i, c) in s.char_indices() {
        buf.clear();
        if needs_escape(c) {
            write!(buf, "{}", c.escape_default())?;
        } else {
            buf.push(c);
        }
        if written + buf.len() > MAX_SHOWN {
            return Ok(i);
        }
        f.write_str(&buf)?;
        written += buf.len();
    }
    Ok(s.len())
}

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = write_bounded(f, self.0)?;
        if shown < self.0.len() {
            write!(f, "…[{} bytes in all]", self.0.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_plain_text_is_unchanged() {
        assert_eq!(bounded("404 Project Not Found"), "404 Project Not Found");
        assert_eq!(bounded("grüße/projekt"), "grüße/projekt");
    }

    #[test]
    fn forged_log_lines_are_escaped() {
        let body = "oops\n2026-01-01T00:00:00Z  INFO fake line\r\x1b[2J\u{202e}";
        let shown = bounded(body);
        assert!(!shown.chars().any(needs_escape), "{shown:?}");
        assert_eq!(
            shown,
            "oops\\n2026-01-01T00:00:00Z  INFO fake line\\r\\u{1b}[2J\\u{202e}"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_its_length() {
        let long = "é".repeat(4 * 1024 * 1024); // 8 MiB
        let shown = bounded(&long);
        assert!(shown.len() <= MAX_SHOWN + 40, "{}", shown.len());
        assert!(shown.ends_with(&format!("…[{} bytes in all]", long.len())));
        let bytes = bounded_bytes(long.as_bytes());
        assert_eq!(bytes, shown);
        let raw = bounded_bytes(b"\xff\xfe ok");
        assert_eq!(raw, "\u{fffd}\u{fffd} ok");
    }

    proptest! {
        #[test]
        fn output_is_bounded_and_free_of_controls(s in ".{0,600}") {
            let shown = bounded(&s);
            prop_assert!(shown.len() <= MAX_SHOWN + 40);
            prop_assert!(!shown.chars().any(needs_escape));
            let b = bounded_bytes(s.as_bytes());
            prop_assert!(b.len() <= MAX_SHOWN + 40);
            prop_assert!(!b.chars().any(needs_escape));
        }
    }
}
