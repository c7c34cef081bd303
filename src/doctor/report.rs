//! The doctor's findings and how they are printed: an aligned table (one row per check), then
//! each warning and each problem on its own line with its fix. The token is scrubbed from the
//! whole text as a last net (nothing puts it there; a hostile GitLab might echo it).

use std::fmt::Write as _;

use secrecy::{ExposeSecret, SecretString};

/// Widest first column; longer check names (deep project paths) are not padded further.
const MAX_CHECK_WIDTH: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not checked (an earlier check failed, or nothing to check).
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
            Self::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// Something to act on: what is wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub fix: String,
    /// Later problems with the same fix (one cause, several symptoms): shown on this line.
    pub also: Vec<String>,
}

/// How the run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    Problems,
    Unreachable,
}

#[derive(Debug, Default)]
pub struct Report {
    pub gitlab_url: String,
    pub rows: Vec<Row>,
    pub warnings: Vec<Finding>,
    pub problems: Vec<Finding>,
    /// GitLab never answered (or only its proxy did, with a 5xx).
    pub unreachable: bool,
}

impl Report {
    pub fn row(&mut self, check: impl Into<String>, status: Status, detail: impl Into<String>) {
        self.rows.push(Row {
            check: check.into(),
            status,
            detail: detail.into(),
        });
    }

    /// A problem; one with the same fix as an earlier one is added to that one's line (a token
    /// without read_api fails every project: one line, one fix).
    pub fn problem(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        let (what, fix) = (what.into(), fix.into());
        match self.problems.iter_mut().find(|p| p.fix == fix) {
            Some(p) => p.also.push(what),
            None => self.problems.push(Finding {
                what,
                fix,
                also: Vec::new(),
            }),
        }
    }

    pub fn warning(&mut self, what: impl Into<String>, fix: impl Into<String>) {
        self.warnings.push(Finding {
            what: what.into(),
            fix: fix.into(),
            also: Vec::new(),
        });
    }

    pub fn verdict(&self) -> Verdict {
        if self.unreachable {
            Verdict::Unreachable
        } else if self.problems.is_empty() {
            Verdict::Healthy
        } else {
            Verdict::Problems
        }
    }

    /// The whole report as printed, `token` scrubbed.
    pub fn render(&self, token: &SecretString) -> String {
        let width = self
            .rows
            .iter()
            .map(|r| r.check.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(5, MAX_CHECK_WIDTH);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "checking GitLab at {}\n", self.gitlab_url);
        let _ = writeln!(out, "{:<width$}  {:<6}  DETAIL", "CHECK", "STATUS");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<width$}  {:<6}  {}",
                r.check,
                r.status.as_str(),
                r.detail
            );
        }
        write_findings(&mut out, "warnings", &self.warnings);
        write_findings(&mut out, "problems", &self.problems);
        let _ = writeln!(
            out,
            "\n{}",
            match self.verdict() {
                Verdict::Healthy if self.warnings.is_empty() => "all checks passed".to_string(),
                Verdict::Healthy =>
                    format!("all checks passed, {} warning(s)", self.warnings.len()),
                Verdict::Problems => format!("{} problem(s) found", self.problems.len()),
                Verdict::Unreachable => "GitLab is unreachable".to_string(),
            }
        );
        scrub(&out, token)
    }
}

fn write_findings(out: &mut String, title: &str, findings: &[Finding]) {
    if findings.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for f in findings {
        if f.also.is_empty() {
            let _ = writeln!(out, "  {}: {}", f.what, f.fix);
        } else {
            let _ = writeln!(out, "  {} (also: {}): {}", f.what, f.also.join("; "), f.fix);
        }
    }
}

/// `text` with every occurrence of the token replaced.
pub fn scrub(text: &str, token: &SecretString) -> String {
    let t = token.expose_secret();
    if t.is_empty() {
        return text.to_string();
    }
    text.replace(t, "<redacted>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned_and_findings_carry_their_fix() {
        let mut r = Report {
            gitlab_url: "https://gitlab.example.com".into(),
            ..Report::default()
        };
        r.row("gitlab", Status::Ok, "GitLab 17.5.2");
        r.row("project acme/api", Status::Fail, "not found (HTTP 404)");
        r.problem("project acme/api not found", "check [[projects]]");
        let token = SecretString::from("glpat-XYZ".to_string());
        let text = r.render(&token);
        assert!(
            text.contains("gitlab            ok      GitLab 17.5.2"),
            "{text}"
        );
        assert!(
            text.contains("project acme/api  FAIL    not found (HTTP 404)"),
            "{text}"
        );
        assert!(
            text.contains("\n  project acme/api not found: check [[projects]]\n"),
            "{text}"
        );
        assert!(text.ends_with("1 problem(s) found\n"), "{text}");
        r.problem("group acme could not be listed", "check [[projects]]");
        assert!(
            r.render(&token)
                .contains("\n  project acme/api not found (also: group acme could not be listed): check [[projects]]\n"),
            "one cause, one line"
        );
        assert_eq!(r.verdict(), Verdict::Problems);
    }

    #[test]
    fn the_token_is_scrubbed() {
        let mut r = Report::default();
        r.row("token", Status::Fail, "GitLab said: bad token glpat-XYZ");
        let text = r.render(&SecretString::from("glpat-XYZ".to_string()));
        assert!(
            !text.contains("glpat-XYZ") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
