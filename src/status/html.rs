//! The status page as HTML: one self-contained document (inline CSS, no script, no external
//! asset), every string from GitLab or the configuration escaped with [`escape`].

use std::fmt::Write as _;

use super::{ProjectRow, RowState, Snapshot, When};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0 0 .5em}h2{font-size:1.1em;margin:1.2em 0 .4em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.num{text-align:right}.bad{background:#fde2e1}.warn{background:#fff4d6}\
.good{background:#e3f6e5}.muted{color:#777}.err{font-family:monospace;font-size:12px;max-width:40em;overflow-wrap:anywhere}\
nav a{margin-right:1em}";

/// `s` with the five characters that matter in HTML text and attribute values escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A duration in seconds, short (`45s`, `12m 3s`, `1m`, `2h 5m`).
fn short(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (big, big_unit, small, small_unit) = match s {
        0..60 => return format!("{s}s"),
        60..3600 => (s / 60, "m", s % 60, "s"),
        3600..86_400 => (s / 3600, "h", s % 3600 / 60, "m"),
        _ => (s / 86_400, "d", s % 86_400 / 3600, "h"),
    };
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit} {small}{small_unit}")
    }
}

/// `2026-12-02 14:55:03 UTC (12s ago)`, or `never` in grey.
fn when(w: Option<&When>, now: f64) -> String {
    match w {
        Some(w) => format!(
            "{} <span class=\"muted\">({} ago)</span>",
            w.utc,
            short(now - w.unix)
        ),
        None => "<span class=\"muted\">never since start</span>".into(),
    }
}

fn class(state: RowState) -> &'static str {
    match state {
        s if s.is_problem() => "bad",
        RowState::Starting | RowState::Backfilling | RowState::HooksSilent => "warn",
        RowState::Elsewhere => "muted",
        _ => "good",
    }
}

/// The whole page.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + s.projects.len() * 400);
    out.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width\">");
    let _ = write!(
        out,
        "<title>GitLab jobs exporter: {}</title><style>{STYLE}</style></head><body>",
        if s.ready.ready { "ready" } else { "not ready" }
    );
    let _ = write!(
        out,
        "<h1>GitLab jobs exporter <span class=\"muted\">{}</span></h1>",
        escape(s.version)
    );
    out.push_str("<nav><a href=\"metrics\">/metrics</a><a href=\"status.json\">/status.json</a><a href=\"healthz\">/healthz</a><a href=\"readyz\">/readyz</a></nav>");
    summary(&mut out, s);
    projects(&mut out, s);
    let _ = writeln!(
        out,
        "<p class=\"muted\">Generated {}. Reload for fresh figures.</p></body></html>",
        s.generated.utc
    );
    out
}

/// One line of the summary table; `value` is HTML already.
fn line(out: &mut String, key: &str, class: &str, value: &str) {
    let _ = write!(
        out,
        "<tr><th>{key}</th><td class=\"{class}\">{value}</td></tr>"
    );
}

fn summary(out: &mut String, s: &Snapshot) {
    let now = s.generated.unix;
    out.push_str("<h2>Exporter</h2><table id=\"summary\">");
    let mode = match s.mode {
        "demo" => "demo (the built-in simulated GitLab)",
        _ => "GitLab",
    };
    line(out, "Mode", "", mode);
    line(out, "GitLab", "", &escape(&s.gitlab_url));
    let ready = format!(
        "{} <span class=\"muted\">({} of {} done)</span>",
        escape(&s.ready.reason),
        s.ready.done,
        s.ready.total
    );
    line(
        out,
        "Ready",
        if s.ready.ready { "good" } else { "bad" },
        &ready,
    );
    match &s.health.reason {
        None => line(out, "Health", "good", "healthy"),
        Some(r) => line(out, "Health", "bad", &format!("unhealthy: {}", escape(r))),
    }
    budget(out, &s.budget);
    let w = &s.webhooks;
    let hooks = if w.enabled {
        format!(
            "enabled; projects receiving hooks: {}, silent: {}; last hook received {}",
            w.receiving,
            w.silent,
            when(w.last_received.as_ref(), now)
        )
    } else {
        "disabled (polling only)".into()
    };
    line(out, "Webhooks", "", &hooks);
    out.push_str("</table>");
}

fn budget(out: &mut String, b: &super::Budget) {
    let window = if b.window_seconds < 60 {
        format!(" (in the {}s since start)", b.window_seconds)
    } else {
        String::new()
    };
    let remaining = b
        .rate_limit_remaining
        .map(|r| format!("; GitLab's RateLimit-Remaining: {r}"))
        .unwrap_or_default();
    let requests = format!(
        "{} in the last minute{window}, budget {}/min{remaining}",
        b.requests_last_minute, b.requests_per_minute
    );
    line(out, "Requests", "", &requests);
    let stretched = b.stretch_busy > 1.0 || b.stretch_idle > 1.0;
    let pacing = format!(
        "{} busy, {} idle projects; demand {:.1} requests/min at the target intervals (poll.interval {}, max_interval {}); stretch busy ×{:.2}, idle ×{:.2}{}",
        b.busy_projects,
        b.idle_projects,
        b.demand_per_minute,
        short(b.poll_interval_seconds),
        short(b.max_interval_seconds),
        b.stretch_busy,
        b.stretch_idle,
        if stretched {
            " (the budget cannot poll every project at its target: polling less often, nothing skipped)"
        } else {
            ""
        }
    );
    line(out, "Pacing", if stretched { "warn" } else { "" }, &pacing);
}

fn projects(out: &mut String, s: &Snapshot) {
    let now = s.generated.unix;
    let counts: Vec<String> = s
        .projects_by_state
        .iter()
        .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
        .collect();
    let _ = write!(
        out,
        "<h2>Projects ({}: {})</h2>",
        s.projects_total,
        escape(&counts.join(", "))
    );
    out.push_str("<table id=\"projects\"><thead><tr><th>Project</th><th>State</th><th>Last successful poll</th><th class=\"num\">Jobs counted</th><th class=\"num\">Interval</th><th>Last error</th></tr></thead><tbody>");
    for r in &s.projects {
        row(out, r, now);
    }
    out.push_str("</tbody></table>");
    if s.projects_not_shown > 0 {
        let _ = write!(
            out,
            "<p>{} more projects not shown (the most urgent come first; all are in <a href=\"status.json\">/status.json</a>).</p>",
            s.projects_not_shown
        );
    }
}

fn row(out: &mut String, r: &ProjectRow, now: f64) {
    let mut name = escape(&r.name);
    if r.path.is_none() {
        name.push_str(" <span class=\"muted\">(not looked up yet)</span>");
    }
    if r.discovered {
        name.push_str(" <span class=\"muted\">discovered</span>");
    }
    let interval = r
        .interval_seconds
        .map_or_else(|| "<span class=\"muted\">–</span>".into(), short);
    let error = match &r.last_error {
        Some(e) => format!(
            "<span class=\"err\">{}</span><br><span class=\"muted\">{} ({} ago)</span>",
            escape(&e.message),
            e.at.utc,
            short(now - e.at.unix)
        ),
        None => "<span class=\"muted\">none</span>".into(),
    };
    let _ = write!(
        out,
        "<tr data-state=\"{}\"><td class=\"project\">{name}</td><td class=\"state {}\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{interval}</td><td>{error}</td></tr>",
        r.state.as_str(),
        class(r.state),
        r.state.text(),
        when(r.last_success.as_ref(), now),
        r.jobs_counted,
    );
}
