//! The project hooks API (`lib/api/project_hooks.rb`, `Entities::ProjectHook`): list, show,
//! create, update and delete a project's hooks. The token is stored and never shown.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::discovery::bool_param;
use super::http::{Param, Params, Reject, json_response, offset_params, offset_response};
use super::render::iso;
use super::world::Ms;
use super::{Simulator, hooks};

/// `WebHook#alert_status` as stored: what GitLab's auto-disabling left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookAlertStatus {
    #[default]
    Executable,
    /// Disabled until `disabled_until` (after 4 failures in a row, 1 min doubling up to 1 day).
    TemporarilyDisabled,
    /// Disabled for good (the 40th failure in a row).
    Disabled,
}

/// A project hook as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectHook {
    pub id: u64,
    pub project_id: u64,
    pub url: String,
    /// `X-Gitlab-Token`; never returned by the API.
    pub token: Option<String>,
    pub job_events: bool,
    pub pipeline_events: bool,
    pub push_events: bool,
    pub enable_ssl_verification: bool,
    pub alert: HookAlertStatus,
    pub disabled_until: Option<Ms>,
    pub created_at_ms: Ms,
}

impl ProjectHook {
    /// A hook with GitLab's column defaults: push events and SSL verification on, the rest off.
    pub fn new(project_id: u64, url: &str, now_ms: Ms) -> Self {
        Self {
            id: 0,
            project_id,
            url: url.to_owned(),
            token: None,
            job_events: false,
            pipeline_events: false,
            push_events: true,
            enable_ssl_verification: true,
            alert: HookAlertStatus::Executable,
            disabled_until: None,
            created_at_ms: now_ms,
        }
    }

    /// `alert_status` as the API shows it at `now_ms`: a temporary disabling that has run out
    /// reads `executable`.
    pub fn alert_status_at(&self, now_ms: Ms) -> &'static str {
        match self.alert {
            HookAlertStatus::Disabled => "disabled",
            HookAlertStatus::TemporarilyDisabled if !self.executable_at(now_ms) => {
                "temporarily_disabled"
            }
            _ => "executable",
        }
    }

    /// Whether GitLab would send it events at `now_ms`.
    pub fn executable_at(&self, now_ms: Ms) -> bool {
        hooks::executable(self.alert, self.disabled_until, now_ms)
    }
}

#[derive(Debug, Default)]
pub(crate) struct HookStore {
    last_id: u64,
    hooks: BTreeMap<u64, ProjectHook>,
    /// Projects where the token is not Maintainer.
    denied: BTreeSet<u64>,
}

impl HookStore {
    pub(crate) fn of_project(&self, project_id: u64) -> Vec<ProjectHook> {
        let hooks = self.hooks.values();
        hooks
            .filter(|h| h.project_id == project_id)
            .cloned()
            .collect()
    }

    pub(crate) fn insert(&mut self, mut hook: ProjectHook) -> u64 {
        self.last_id += 1;
        hook.id = self.last_id;
        self.hooks.insert(hook.id, hook);
        self.last_id
    }

    pub(crate) fn set_access(&mut self, project_id: u64, allowed: bool) {
        if allowed {
            self.denied.remove(&project_id);
        } else {
            self.denied.insert(project_id);
        }
    }

    pub(crate) fn allowed(&self, project_id: u64) -> bool {
        !self.denied.contains(&project_id)
    }

    pub(crate) fn set_alert(&mut self, id: u64, alert: HookAlertStatus, until: Option<Ms>) -> bool {
        let Some(hook) = self.hooks.get_mut(&id) else {
            return false;
        };
        hook.alert = alert;
        hook.disabled_until = until;
        true
    }
}

/// `Entities::ProjectHook` (the token never appears).
fn hook_json(h: &ProjectHook, now_ms: Ms) -> Value {
    json!({
        "id": h.id, "url": h.url, "name": null, "description": null,
        "created_at": iso(h.created_at_ms), "push_events": h.push_events,
        "tag_push_events": false, "merge_requests_events": false,
        "repository_update_events": false, "enable_ssl_verification": h.enable_ssl_verification,
        "alert_status": h.alert_status_at(now_ms), "disabled_until": h.disabled_until.map(iso),
        "url_variables": [], "push_events_branch_filter": null,
        "branch_filter_strategy": "wildcard", "custom_webhook_template": null,
        "custom_headers": [], "project_id": h.project_id, "issues_events": false,
        "confidential_issues_events": false, "note_events": false,
        "confidential_note_events": false, "pipeline_events": h.pipeline_events,
        "wiki_page_events": false, "deployment_events": false, "feature_flag_events": false,
        "job_events": h.job_events, "releases_events": false, "milestone_events": false,
        "emoji_events": false, "resource_access_token_events": false,
        "resource_deploy_token_events": false, "vulnerability_events": false,
    })
}

/// Merges a request body's params into `params`, as Grape does: a JSON object or a form.
pub(super) fn body_params(
    content_type: Option<&str>,
    body: &[u8],
    params: &mut Params,
) -> Result<(), Reject> {
    if body.is_empty() {
        return Ok(());
    }
    let json = content_type.is_some_and(|c| c.starts_with("application/json"));
    if !json {
        for (k, v) in url::form_urlencoded::parse(body) {
            params.insert(k.into_owned(), Param::One(v.into_owned()));
        }
        return Ok(());
    }
    let invalid = || Reject(400, "error", "The provided JSON is invalid".into());
    let Value::Object(map) = serde_json::from_slice(body).map_err(|_| invalid())? else {
        return Err(invalid());
    };
    for (k, v) in map {
        let v = match v {
            Value::Null => continue,
            Value::String(s) => s,
            other => other.to_string(),
        };
        params.insert(k, Param::One(v));
    }
    Ok(())
}

/// The hook properties a POST or PUT may set.
struct HookParams {
    url: Option<String>,
    token: Option<String>,
    job_events: Option<bool>,
    pipeline_events: Option<bool>,
    push_events: Option<bool>,
    enable_ssl_verification: Option<bool>,
}

fn hook_params(params: &mut Params) -> Result<HookParams, Reject> {
    let text = |params: &Params, k: &str| match params.get(k) {
        Some(Param::One(v)) => Ok(Some(v.clone())),
        Some(Param::Many(_)) => Err(Reject(400, "error", format!("{k} is invalid"))),
        None => Ok(None),
    };
    let url = text(params, "url")?;
    if let Some(u) = &url {
        let ok = url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            return Err(Reject(422, "error", "Invalid url given".into()));
        }
    }
    Ok(HookParams {
        url,
        token: text(params, "token")?,
        job_events: bool_param(params, "job_events")?,
        pipeline_events: bool_param(params, "pipeline_events")?,
        push_events: bool_param(params, "push_events")?,
        enable_ssl_verification: bool_param(params, "enable_ssl_verification")?,
    })
}

impl HookParams {
    fn apply(self, h: &mut ProjectHook) {
        if let Some(url) = self.url {
            // `WebHook#reset_token`: a new URL without a new token drops the old token.
            if url != h.url && self.token.is_none() {
                h.token = None;
            }
            h.url = url;
        }
        if self.token.is_some() {
            h.token = self.token;
        }
        let set = |field: &mut bool, v: Option<bool>| *field = v.unwrap_or(*field);
        set(&mut h.job_events, self.job_events);
        set(&mut h.pipeline_events, self.pipeline_events);
        set(&mut h.push_events, self.push_events);
        set(&mut h.enable_ssl_verification, self.enable_ssl_verification);
    }
}

/// A request to `/projects/:id/hooks[/:hook_id]`, already authenticated.
pub(super) struct HooksRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub id: String,
    pub hook_id: Option<String>,
    pub params: Params,
    pub now: Ms,
    pub ext: &'a str,
}

pub(super) fn answer(sim: &Simulator, req: HooksRequest<'_>) -> Result<Response, Reject> {
    let HooksRequest {
        method,
        path,
        id,
        hook_id,
        mut params,
        now,
        ext,
    } = req;
    // Grape validates `hook_id` before the endpoint runs.
    let hook_id = match hook_id {
        Some(h) => Some(
            h.parse::<u64>()
                .map_err(|_| Reject(400, "error", "hook_id is invalid".into()))?,
        ),
        None => None,
    };
    let world = sim.world();
    let project = world
        .find_project(&id)
        .ok_or_else(|| Reject(404, "message", "404 Project Not Found".into()))?;
    // `authorize_admin_project`: Maintainer or above.
    if !sim.hooks_allowed(project.id) {
        return Err(Reject(403, "message", "403 Forbidden".into()));
    }
    let not_found = || Reject(404, "message", "404 Not found".into());
    let mut store = sim.hook_store();
    let find = |store: &super::hooks_api::HookStore, hid: u64| {
        let hook = store.hooks.get(&hid).filter(|h| h.project_id == project.id);
        hook.cloned().ok_or_else(not_found)
    };
    match (method.as_str(), hook_id) {
        ("GET" | "HEAD", None) => {
            let (page, per_page) = offset_params(&mut params, &id)?;
            let all = store.of_project(project.id);
            let skip = (page as usize - 1).saturating_mul(per_page);
            let rows = (all.iter().skip(skip).take(per_page))
                .map(|h| hook_json(h, now))
                .collect();
            Ok(offset_response(
                rows,
                page,
                per_page,
                all.len(),
                ext,
                path,
                &params,
            ))
        }
        ("GET" | "HEAD", Some(hid)) => Ok(json_response(200, &hook_json(&find(&store, hid)?, now))),
        ("POST", None) => {
            let p = hook_params(&mut params)?;
            let Some(url) = p.url.clone() else {
                return Err(Reject(400, "error", "url is missing".into()));
            };
            let mut hook = ProjectHook::new(project.id, &url, now);
            p.apply(&mut hook);
            let hid = store.insert(hook);
            Ok(json_response(201, &hook_json(&find(&store, hid)?, now)))
        }
        ("PUT", Some(hid)) => {
            let mut hook = find(&store, hid)?;
            hook_params(&mut params)?.apply(&mut hook);
            store.hooks.insert(hid, hook.clone());
            Ok(json_response(200, &hook_json(&hook, now)))
        }
        ("DELETE", Some(hid)) => {
            find(&store, hid)?;
            store.hooks.remove(&hid);
            Ok(json_response(204, &Value::Null).map(|_| axum::body::Body::empty()))
        }
        _ => Err(Reject(405, "error", "405 Not Allowed".into())),
    }
}
