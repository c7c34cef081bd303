use super::html::{escape, render};
use super::*;

#[test]
fn escapes_what_html_gives_meaning_to() {
    assert_eq!(
        escape("<script>alert('x')</script> & \"y\""),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
    );
    assert_eq!(escape("acme/platform-api_2"), "acme/platform-api_2");
}

#[test]
fn credentials_query_and_fragment_are_stripped() {
    assert_eq!(
        strip_credentials(
            "https://user:glpat-SECRET@gitlab.example.com/sub/?private_token=SECRET#x"
        ),
        "https://gitlab.example.com/sub/"
    );
    assert_eq!(
        strip_credentials("http://oauth2@10.0.0.1:8080"),
        "http://10.0.0.1:8080/"
    );
    assert_eq!(
        strip_credentials("https://gitlab.example.com"),
        "https://gitlab.example.com/"
    );
    assert_eq!(strip_credentials("not a url"), "(not a valid URL)");
}

fn hostile_snapshot() -> Snapshot {
    let evil = "<script>alert(1)</script>";
    let at = When::at(1_790_000_000.0);
    Snapshot {
        version: "0.0.0",
        mode: "gitlab",
        gitlab_url: format!("https://gitlab.example.com/{evil}"),
        generated: When::at(1_790_000_060.0),
        ready: ReadyStatus {
            ready: false,
            reason: format!("not ready: {evil} is failing"),
            done: 0,
            total: 1,
        },
        health: HealthStatus {
            healthy: true,
            reason: None,
        },
        budget: Budget {
            requests_per_minute: 600.0,
            requests_last_minute: 12,
            window_seconds: 60,
            demand_per_minute: 4.0,
            stretch_busy: 1.0,
            stretch_idle: 1.0,
            busy_projects: 1,
            idle_projects: 0,
            poll_interval_seconds: 30.0,
            max_interval_seconds: 600.0,
            rate_limit_remaining: None,
        },
        webhooks: Webhooks {
            enabled: false,
            receiving: 0,
            silent: 0,
            reconcile_interval_seconds: None,
            last_received: None,
        },
        projects_total: 2,
        projects_by_state: BTreeMap::from([("failing", 1), ("ok", 1)]),
        projects: vec![ProjectRow {
            name: format!("g/{evil}"),
            path: Some(format!("g/{evil}")),
            id: Some(7),
            discovered: false,
            state: RowState::Failing,
            last_success: Some(at.clone()),
            jobs_counted: 41,
            interval_seconds: Some(30.0),
            last_error: Some(LastError {
                at,
                message: format!("GitLab said {evil}"),
            }),
            last_hook: None,
        }],
        projects_not_shown: 1,
    }
}

#[test]
fn gitlab_strings_are_escaped_on_the_page() {
    let page = render(&hostile_snapshot());
    assert!(!page.contains("<script"), "{page}");
    assert_eq!(page.matches("&lt;script&gt;").count(), 4, "{page}");
    assert!(page.contains("1 more projects not shown"), "{page}");
    assert!(
        page.contains("<td class=\"state bad\">failing</td>"),
        "{page}"
    );
    assert!(page.contains("2026-09-21 14:13:20 UTC"), "{page}");
    assert!(page.contains("(1m ago)"), "{page}");
    // Self-contained: nothing loaded from anywhere.
    for external in ["src=", "http://", "<link", "@import"] {
        assert!(!page.contains(external), "{external} in {page}");
    }
}

#[test]
fn json_names_states_in_snake_case() {
    let json = serde_json::to_value(hostile_snapshot()).expect("serializes");
    assert_eq!(json["projects"][0]["state"], "failing");
    assert_eq!(
        json["projects"][0]["last_success"]["utc"],
        "2026-09-21 14:13:20 UTC"
    );
    assert_eq!(json["projects_not_shown"], 1);
    assert_eq!(
        serde_json::to_value(RowState::ReceivingHooks).expect("serializes"),
        "receiving_hooks"
    );
}

#[test]
fn failing_projects_sort_first() {
    let mut states = [
        RowState::Ok,
        RowState::ReceivingHooks,
        RowState::Backfilling,
        RowState::Forbidden,
        RowState::Failing,
        RowState::Elsewhere,
    ];
    states.sort();
    assert_eq!(states[0], RowState::Failing);
    assert_eq!(states[1], RowState::Forbidden);
    assert!(states[..2].iter().all(|s| s.is_problem()));
    assert!(!RowState::Backfilling.is_problem());
}
