//! A raw job log as the terminal would show it: escape sequences removed, progress lines
//! overwritten, GitLab's section markers and runner timestamps gone.

use std::borrow::Cow;

/// What the rules see of `raw`: lossy UTF-8 (a tail may start inside a character), without
/// ANSI escapes (CSI such as colours and `\e[0K`, OSC such as hyperlinks and titles, other
/// escapes), other control characters but tabs, GitLab's section markers
/// (`section_start:<ts>:<name>[<options>]` and `section_end:<ts>:<name>`) and the runner's
/// per-line timestamps (`2024-05-30T14:30:00.000000Z 00O `). A line rewritten with `\r`
/// (progress bars, section headers) keeps its last non-blank part, as a terminal shows it; a
/// `\r\n` line end is an ordinary line end. Linear in the input.
pub fn strip(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let plain = without_escapes(&text);
    let mut out = String::with_capacity(plain.len());
    for (i, line) in plain.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if !line.contains('\r') {
            out.push_str(&without_markers(without_timestamp(line)));
            continue;
        }
        let shown = line
            .split('\r')
            .map(|part| without_markers(without_timestamp(part)))
            .rfind(|part| !part.trim().is_empty())
            .unwrap_or_default();
        out.push_str(&shown);
    }
    out
}

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;

/// Bytes that end a run copied as it is: control characters but `\n`, `\r` and `\t`
/// (`ESC` among them).
fn is_special(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t')) || b == 0x7f
}

/// `text` without escape sequences and control characters other than `\n`, `\r` and `\t`. A
/// sequence never swallows a line break (one cut short, or never closed, ends there). Works
/// on bytes, copying runs of ordinary text at once; it only ever removes ASCII bytes and
/// whole characters, so the result is still UTF-8.
fn without_escapes(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let run = b[i..]
            .iter()
            .position(|&c| is_special(c))
            .unwrap_or(b.len() - i);
        out.extend_from_slice(&b[i..i + run]);
        i += run;
        if i < b.len() {
            let c = b[i];
            i += 1;
            if c == ESC {
                i = escape_end(b, i);
            }
        }
    }
    // Never fails (see above); lossy rather than a panic should that change.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where the escape sequence whose `ESC` is just before `at` ends.
fn escape_end(b: &[u8], mut at: usize) -> usize {
    let ascii_but_newline = |c: Option<&u8>| c.is_some_and(|&c| c.is_ascii() && c != b'\n');
    match b.get(at) {
        // CSI: parameters and intermediates (0x20..=0x3f), then one final byte (0x40..=0x7e).
        // Continuation bytes of a character are never a final byte: a broken sequence skips
        // whole characters.
        Some(b'[') => {
            at += 1;
            while let Some(&p) = b.get(at) {
                if p == b'\n' {
                    break;
                }
                at += 1;
                if (0x40..=0x7e).contains(&p) {
                    break;
                }
            }
            at
        }
        // OSC, DCS, SOS, PM, APC: a string ended by BEL or ST (`ESC \`).
        Some(b']' | b'P' | b'X' | b'^' | b'_') => {
            at += 1;
            while let Some(&p) = b.get(at) {
                if p == b'\n' {
                    break;
                }
                at += 1;
                if p == BEL {
                    break;
                }
                if p == ESC {
                    if b.get(at) == Some(&b'\\') {
                        at += 1;
                    }
                    break;
                }
            }
            at
        }
        // Character-set designations take one more character (`ESC ( B`).
        Some(b'(' | b')' | b'*' | b'+' | b'#' | b'%') => {
            at += 1;
            if ascii_but_newline(b.get(at)) {
                at += 1;
            }
            at
        }
        // Two-character escapes (`ESC 7`, `ESC =`, `ESC M`…).
        c if ascii_but_newline(c) => at + 1,
        _ => at,
    }
}

/// `part` without a leading runner timestamp: RFC 3339 UTC time, a space, two hex digits of
/// stream id, `O` or `E`, and `+` (a continued line) or a space.
fn without_timestamp(part: &str) -> &str {
    let b = part.as_bytes();
    // The shortest form: `2024-05-30T14:30:00Z 00O `.
    if b.len() < 25 || !(b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':') {
        return part;
    }
    let Some(z) = b.iter().take(40).position(|&c| c == b'Z') else {
        return part;
    };
    let time_ok = b[..z]
        .iter()
        .all(|c| c.is_ascii_digit() || b"-T:.".contains(c));
    let meta = b.get(z + 1..z + 6);
    match meta {
        Some([b' ', h1, h2, b'O' | b'E', b'+' | b' '])
            if time_ok && h1.is_ascii_hexdigit() && h2.is_ascii_hexdigit() =>
        {
            // All ASCII up to here: a char boundary.
            &part[z + 6..]
        }
        _ => part,
    }
}

/// `part` with every GitLab section marker removed (`section_start:1560896352:build[collapsed=true]`,
/// `section_end:1560896353:build`); text that only looks like the start of one is kept.
fn without_markers(part: &str) -> Cow<'_, str> {
    if !part.contains("section_") {
        return Cow::Borrowed(part);
    }
    let mut out = String::new();
    let mut rest = part;
    while let Some(at) = rest.find("section_") {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        match marker_len(candidate) {
            Some(len) => rest = &candidate[len..],
            None => {
                out.push_str("section_");
                rest = &candidate["section_".len()..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The length of the marker `text` starts with, if it starts with one.
fn marker_len(text: &str) -> Option<usize> {
    let body = text
        .strip_prefix("section_start:")
        .or_else(|| text.strip_prefix("section_end:"))?;
    let b = body.as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || b.get(digits) != Some(&b':') {
        return None;
    }
    let name_at = digits + 1;
    let name = b[name_at..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
        .count();
    if name == 0 {
        return None;
    }
    let mut end = name_at + name;
    // Options: `[collapsed=true]`, only when closed.
    if b.get(end) == Some(&b'[')
        && let Some(close) = b[end..].iter().position(|&c| c == b']')
    {
        end += close + 1;
    }
    Some(text.len() - body.len() + end)
}
