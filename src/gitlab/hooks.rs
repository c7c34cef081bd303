//! Project hooks, for `--install-webhooks`: `GET /projects/:id/hooks` (read through the
//! [`Pager`](super::pager::Pager) like every listing), `POST /projects/:id/hooks` and
//! `PUT /projects/:id/hooks/:hook_id` (GitLab's `lib/api/project_hooks.rb`).
//!
//! The hook's token (the webhook secret) travels only in the form body of a write, never in a
//! URL, and is never logged; GitLab never returns it.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::pager::{NextHeaders, PageSource, Paged};
use super::{ApiError, GitlabClient, Method, NextLink, PER_PAGE, Response, decode_error, next_of};
use crate::model;

/// Items in one hook page beyond which it is refused (GitLab sends at most `per_page`; a
/// project holds at most 100 hooks under GitLab's default plan limit).
pub const MAX_HOOK_PAGE_ITEMS: usize = 10 * PER_PAGE as usize;

/// A project hook as `GET /projects/:id/hooks` lists it (`API::Entities::ProjectHook`).
/// Lenient: unknown fields are ignored, and every field but `id` and `url` may be missing
/// (older GitLab versions lack `alert_status` and `disabled_until`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ProjectHook {
    pub id: u64,
    pub url: String,
    #[serde(default)]
    pub job_events: Option<bool>,
    #[serde(default)]
    pub push_events: Option<bool>,
    #[serde(default)]
    pub pipeline_events: Option<bool>,
    #[serde(default)]
    pub enable_ssl_verification: Option<bool>,
    #[serde(default)]
    pub alert_status: Option<AlertStatus>,
    /// When a temporarily disabled hook is tried again, as GitLab writes it (ISO 8601).
    #[serde(default)]
    pub disabled_until: Option<String>,
}

/// `alert_status` (`WebHooks::AutoDisabling#alert_status`): whether GitLab still delivers to
/// the hook. After 4 failed deliveries in a row it stops for a while (1 minute, doubling up to
/// a day: `temporarily_disabled` until `disabled_until`); after 40, for good (`disabled`).
/// A successful delivery (a test event included) re-enables it; editing the hook does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Executable,
    TemporarilyDisabled,
    Disabled,
    /// A value this version does not know.
    #[serde(other)]
    Other,
}

/// What a hook is created or updated with. Fields left `None` are not sent, so GitLab keeps
/// what the hook has (an update sends only what it changes).
#[derive(Debug)]
pub struct HookParams<'a> {
    pub url: &'a str,
    /// Sent as `token`: GitLab puts it in `X-Gitlab-Token` of every delivery.
    pub token: &'a SecretString,
    pub job_events: bool,
    pub enable_ssl_verification: bool,
    /// GitLab's default is `true`: a new hook must say `false`.
    pub push_events: Option<bool>,
}

impl HookParams<'_> {
    /// The form body (it holds the token, hence a secret from the start).
    fn form(&self) -> SecretString {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("url", self.url);
        q.append_pair("token", self.token.expose_secret());
        q.append_pair("job_events", bool_str(self.job_events));
        q.append_pair(
            "enable_ssl_verification",
            bool_str(self.enable_ssl_verification),
        );
        if let Some(push) = self.push_events {
            q.append_pair("push_events", bool_str(push));
        }
        SecretString::from(q.finish())
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// One page of a project's hook list.
#[derive(Debug)]
pub struct HooksPage {
    pub hooks: Vec<ProjectHook>,
    /// Items that were not readable hooks.
    pub bad_items: usize,
    next: NextLink,
}

impl Paged for HooksPage {
    fn next_link(&self) -> Result<Option<&str>, ApiError> {
        next_of(&self.next)
    }
}

/// `GET /projects/:id/hooks` (offset pagination), for the [`Pager`](super::pager::Pager).
#[derive(Debug, Clone, Copy)]
pub struct HookList<'a> {
    pub client: &'a GitlabClient,
    /// The `:id` segment: a numeric id or a URL-encoded path.
    pub project: &'a str,
}

impl PageSource for HookList<'_> {
    type Page = HooksPage;
    async fn fetch(&self, cursor: Option<&str>) -> Result<HooksPage, ApiError> {
        self.client.hooks_page(self.project, cursor).await
    }
}

const LIST: &str = "hooks";
const CREATE: &str = "hook_create";
const UPDATE: &str = "hook_update";

impl GitlabClient {
    /// One page of `GET /projects/:id/hooks`: the first (`cursor` `None`) or a `Link` target.
    pub async fn hooks_page(
        &self,
        project: &str,
        cursor: Option<&str>,
    ) -> Result<HooksPage, ApiError> {
        let rel = match cursor {
            Some(rel) => rel.to_string(),
            None => format!("projects/{project}/hooks?per_page={PER_PAGE}"),
        };
        self.get(LIST, &rel, |resp| {
            let (hooks, bad_items) =
                model::decode_list::<ProjectHook>(&resp.body, MAX_HOOK_PAGE_ITEMS).map_err(
                    |e| match e {
                        model::DecodeError::TooManyItems(max) => ApiError::TooLong {
                            endpoint: LIST,
                            max,
                        },
                        model::DecodeError::Json(e) => decode_error(LIST, &e, &resp.body),
                    },
                )?;
            let full = hooks.len() + bad_items >= PER_PAGE as usize;
            let next = self.next_link(
                LIST,
                NextHeaders::LinkOrXNextPage,
                &rel,
                &resp.headers,
                full,
            );
            Ok(HooksPage {
                hooks,
                bad_items,
                next,
            })
        })
        .await
    }

    /// `POST /projects/:id/hooks`. Sent again only after a 429 (a create is not idempotent).
    /// `Ok(None)`: created, but the answer was no readable hook.
    pub async fn create_hook(
        &self,
        project: &str,
        params: &HookParams<'_>,
    ) -> Result<Option<ProjectHook>, ApiError> {
        let rel = format!("projects/{project}/hooks");
        self.request(CREATE, &rel, &Method::Post(params.form()), written_hook)
            .await
    }

    /// `PUT /projects/:id/hooks/:hook_id`: only the fields in `params` change.
    /// `Ok(None)`: updated, but the answer was no readable hook.
    pub async fn update_hook(
        &self,
        project: &str,
        hook_id: u64,
        params: &HookParams<'_>,
    ) -> Result<Option<ProjectHook>, ApiError> {
        let rel = format!("projects/{project}/hooks/{hook_id}");
        self.request(UPDATE, &rel, &Method::Put(params.form()), written_hook)
            .await
    }
}

/// The hook a write answered with. Never an error: the write was done (2xx), and an error here
/// would send it again.
fn written_hook(resp: Response) -> Result<Option<ProjectHook>, ApiError> {
    let hook = serde_json::from_slice(&resp.body).ok();
    if hook.is_none() {
        // Not the body: an answer echoing the request would show the token.
        tracing::debug!(
            bytes = resp.body.len(),
            "GitLab answered a hook write with no readable hook"
        );
    }
    Ok(hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hooks_decode_leniently() {
        let body = br#"[
            {"id": 1, "url": "https://a.example/webhook", "project_id": 3, "job_events": true,
             "push_events": false, "enable_ssl_verification": true, "alert_status": "executable",
             "disabled_until": null, "created_at": "2024-01-01T00:00:00Z", "name": "x",
             "custom_headers": [], "url_variables": []},
            {"id": 2, "url": "https://b.example/"},
            {"id": 3, "url": "https://c.example/", "alert_status": "temporarily_disabled",
             "disabled_until": "2026-12-02T13:00:00.000Z"},
            {"id": 4, "url": "https://d.example/", "alert_status": "something_new"},
            {"id": "five", "url": "https://e.example/"},
            {"url": "https://f.example/"}
        ]"#;
        let (hooks, bad) = model::decode_list::<ProjectHook>(body, 100).unwrap();
        assert_eq!(bad, 2);
        assert_eq!(hooks.len(), 4);
        assert_eq!(hooks[0].job_events, Some(true));
        assert_eq!(hooks[0].alert_status, Some(AlertStatus::Executable));
        assert_eq!(hooks[1].job_events, None);
        assert_eq!(hooks[1].alert_status, None);
        assert_eq!(
            hooks[2].alert_status,
            Some(AlertStatus::TemporarilyDisabled)
        );
        assert_eq!(
            hooks[2].disabled_until.as_deref(),
            Some("2026-12-02T13:00:00.000Z")
        );
        assert_eq!(hooks[3].alert_status, Some(AlertStatus::Other));
    }

    /// A create that may have been done is never sent again (it would make a duplicate); a
    /// 429 was refused before GitLab looked at it. An update is idempotent.
    #[test]
    fn a_create_is_sent_again_only_after_a_429() {
        let body = || SecretString::from("token=x".to_string());
        let server_error = ApiError::Status {
            endpoint: CREATE,
            status: 502,
            message: String::new(),
        };
        let timeout = ApiError::Transport {
            endpoint: CREATE,
            message: "timed out".into(),
        };
        let limited = ApiError::RateLimited {
            endpoint: CREATE,
            retry_after: None,
        };
        for e in [&server_error, &timeout] {
            assert!(!Method::Post(body()).may_retry(e), "{e}");
            assert!(Method::Put(body()).may_retry(e), "{e}");
            assert!(Method::Get.may_retry(e), "{e}");
        }
        assert!(Method::Post(body()).may_retry(&limited));
    }

    #[test]
    fn the_form_holds_the_token_and_push_events_only_when_asked() {
        let token = SecretString::from("s3cr&t=1".to_string());
        let mut params = HookParams {
            url: "https://x.example/webhook?a=1",
            token: &token,
            job_events: true,
            enable_ssl_verification: true,
            push_events: Some(false),
        };
        let form = params.form();
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(form.expose_secret().as_bytes())
                .into_owned()
                .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("url"), Some("https://x.example/webhook?a=1"));
        assert_eq!(get("token"), Some("s3cr&t=1"));
        assert_eq!(get("job_events"), Some("true"));
        assert_eq!(get("enable_ssl_verification"), Some("true"));
        assert_eq!(get("push_events"), Some("false"));
        params.push_events = None;
        assert!(!params.form().expose_secret().contains("push_events"));
        // Debug output never shows the token.
        assert!(!format!("{params:?}").contains("s3cr"));
    }
}
