//! Request handling: routing on the raw path (so `group%2Fsub%2Fproject` stays one segment),
//! Grape-like parameter handling, pagination headers and faults.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::discovery::{Listing, list_projects};
use super::render::{http_date, job_json, project_json};
use super::world::{JobPlan, Ms, STATUSES, World};
use super::{Endpoint, FLOOD_ID_BASE, Fault, Hostile, Simulator};

const JSON: &str = "application/json";
const HTML_LOGIN: &str = "<!DOCTYPE html>\n<html><head><title>Sign in - Corporate SSO</title></head>\n\
    <body><form method=\"post\" action=\"/oauth2/sign_in\"><input name=\"username\">\
    <input name=\"password\" type=\"password\"></form></body></html>\n";
const TOO_MANY: &str = "This endpoint has been requested too many times. Try again later.";
const EXPIRED: &str = "Token is expired. You can either do re-authorization or token refresh.";
const NO_KEYSET: &str = "Keyset pagination is not yet available for this type of request";
/// The largest request body read (hooks API params).
const BODY_LIMIT: usize = 1 << 20;

/// A decoded query parameter, as Rack parses it: `k=v` or `k[]=v1&k[]=v2`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Param {
    One(String),
    Many(Vec<String>),
}

pub(super) type Params = BTreeMap<String, Param>;

fn parse_query(query: Option<&str>) -> Params {
    let mut params = Params::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        match k.strip_suffix("[]") {
            Some(base) => match params.entry(base.to_owned()).or_insert(Param::Many(vec![])) {
                Param::Many(list) => list.push(v),
                one => *one = Param::Many(vec![v]),
            },
            None => drop(params.insert(k, Param::One(v))),
        }
    }
    params
}

/// Ruby's `CGI.escape`, which Rails' `to_query` uses.
fn cgi_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Rails' `Hash#to_query`: one `k=v` (or `k[]=v1&k[]=v2`) string per key, the strings sorted.
fn to_query(params: &Params) -> String {
    let pair = |k: &str, v: &str| format!("{}={}", cgi_escape(k), cgi_escape(v));
    let mut parts: Vec<String> = params
        .iter()
        .map(|(k, v)| match v {
            Param::One(v) => pair(k, v),
            Param::Many(list) if list.is_empty() => pair(&format!("{k}[]"), ""),
            Param::Many(list) => {
                let each: Vec<String> = list.iter().map(|v| pair(&format!("{k}[]"), v)).collect();
                each.join("&")
            }
        })
        .collect();
    parts.sort();
    parts.join("&")
}

fn percent_decode(s: &str) -> String {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => (out.push(b), i += 3),
            (b, _) => (out.push(b), i += 1),
        };
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Every value built here is ASCII (URLs are percent-encoded), so this never falls back.
    let value = HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
    headers.insert(name, value);
}

fn response(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    set(resp.headers_mut(), "content-type", content_type);
    resp
}

pub(super) fn json_response(status: u16, body: &Value) -> Response {
    response(status, JSON, body.to_string())
}

/// GitLab's error bodies: `{"message": …}` from the API helpers, `{"error": …}` from Grape.
fn err(status: u16, key: &str, message: &str) -> Response {
    json_response(status, &json!({ key: message }))
}

enum Route {
    Project(String),
    Jobs(String),
    Job(String, String),
    /// `GET /projects/:id/jobs/:job_id/trace`
    Trace(String, String),
    /// `GET /projects/:id/pipelines/:pipeline_id/jobs`
    PipelineJobs(String, String),
    GroupProjects(String),
    Projects,
    /// `/projects/:id/hooks` (no hook id) or `/projects/:id/hooks/:hook_id`
    Hooks(String, Option<String>),
    Other,
}

fn route(path: &str) -> Route {
    if path == "/api/v4/projects" {
        return Route::Projects;
    }
    if let Some(rest) = path.strip_prefix("/api/v4/groups/") {
        return match rest.split_once('/') {
            Some((id, "projects")) if !id.is_empty() => Route::GroupProjects(percent_decode(id)),
            _ => Route::Other,
        };
    }
    let Some(rest) = path.strip_prefix("/api/v4/projects/") else {
        return Route::Other;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    match segs[..] {
        [id] if !id.is_empty() => Route::Project(percent_decode(id)),
        [id, "jobs"] if !id.is_empty() => Route::Jobs(percent_decode(id)),
        [id, "jobs", job] if !id.is_empty() => Route::Job(percent_decode(id), job.to_owned()),
        [id, "jobs", job, "trace"] if !id.is_empty() => {
            Route::Trace(percent_decode(id), job.to_owned())
        }
        [id, "pipelines", pipeline, "jobs"] if !id.is_empty() && !pipeline.is_empty() => {
            Route::PipelineJobs(percent_decode(id), pipeline.to_owned())
        }
        [id, "hooks"] if !id.is_empty() => Route::Hooks(percent_decode(id), None),
        [id, "hooks", hook] if !id.is_empty() => {
            Route::Hooks(percent_decode(id), Some(hook.to_owned()))
        }
        _ => Route::Other,
    }
}

/// What a request presented as credentials: `(where, token)`.
fn credentials(headers: &HeaderMap, params: &Params) -> Option<(&'static str, String)> {
    let text = |name: &str| Some(headers.get(name)?.to_str().ok()?.to_owned());
    if let Some(t) = text("private-token") {
        return Some(("PRIVATE-TOKEN", t));
    }
    if let Some(auth) = text("authorization") {
        let token = auth.strip_prefix("Bearer ").unwrap_or("").trim();
        return Some(("Authorization", token.to_owned()));
    }
    match params.get("private_token") {
        Some(Param::One(t)) => Some(("private_token", t.clone())),
        _ => None,
    }
}

/// What the request log keeps about one request.
pub(super) struct Outcome {
    pub endpoint: Endpoint,
    pub auth: Option<&'static str>,
    pub token_ok: bool,
}

pub(super) async fn handle(State(sim): State<Simulator>, req: Request) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let mut params = parse_query(uri.query());
    let route = route(uri.path());
    let endpoint = match &route {
        Route::Project(_) => Endpoint::Project,
        Route::Jobs(_) if params.contains_key("scope") => Endpoint::JobsScoped,
        Route::Jobs(_) => Endpoint::Jobs,
        Route::Job(..) => Endpoint::Job,
        Route::Trace(..) => Endpoint::Trace,
        Route::PipelineJobs(..) => Endpoint::PipelineJobs,
        Route::GroupProjects(_) => Endpoint::GroupProjects,
        Route::Projects => Endpoint::ProjectsList,
        Route::Hooks(..) => Endpoint::Hooks,
        Route::Other => Endpoint::Other,
    };
    let trace_job = match &route {
        Route::Trace(_, job) => Some(job.parse::<u64>().ok()),
        _ => None,
    };
    let creds = credentials(req.headers(), &params);
    let body = body_params(req, endpoint, &mut params).await;
    let token_ok = creds.as_ref().is_some_and(|c| c.1 == sim.inner.token);
    let limited = matches!(endpoint, Endpoint::Jobs | Endpoint::JobsScoped)
        && token_ok
        && !sim.admit_jobs_request();
    let fault = if limited {
        Some(Fault::RateLimitedJson)
    } else {
        sim.pop_fault()
    };
    if let Some(Fault::Delay(d)) = fault {
        tokio::time::sleep(d).await;
    }
    let now = sim.now_ms();
    let unserved = match endpoint {
        Endpoint::PipelineJobs => sim.pipeline_jobs_answer(),
        _ => None,
    };
    let hostile = sim.hostile();
    let flood = hostile.iter().find_map(|h| match h {
        Hostile::ProjectFlood { per_page } => Some(*per_page),
        _ => None,
    });
    let listing = matches!(endpoint, Endpoint::GroupProjects | Endpoint::ProjectsList);
    let mut resp = match fault {
        Some(f) if !matches!(f, Fault::Delay(_)) => fault_response(&f, now),
        _ if listing && token_ok && flood.is_some() => {
            flood_page(&sim, uri.path(), &params, flood.unwrap_or(0))
        }
        _ if endpoint == Endpoint::JobsScoped && rejects_scope(&hostile, &params) => {
            err(400, "error", "scope does not have a valid value")
        }
        _ if unserved == Some(404) => err(404, "error", "404 Not Found"),
        _ if unserved.is_some() => {
            let code = unserved.unwrap_or(500);
            fault_response(&Fault::ServerError(code), now)
        }
        _ => body.map_or_else(Reject::into_response, |()| {
            answer(&sim, &method, uri.path(), route, params, token_ok, now)
        }),
    };
    if resp.status() == StatusCode::OK {
        for h in &hostile {
            resp = apply_hostile(h, endpoint, resp).await;
        }
    }
    sim.token_store().decorate(&mut resp, now);
    let h = resp.headers_mut();
    // Set explicitly so hyper does not stamp the real time on a simulated clock (a raw fault
    // may bring its own).
    if !h.contains_key("date") {
        set(h, "date", &http_date(now));
    }
    set(h, "cache-control", "max-age=0, private, must-revalidate");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "SAMEORIGIN");
    let path_and_query = uri.path_and_query().map_or("", |p| p.as_str()).to_owned();
    let outcome = Outcome {
        endpoint,
        auth: creds.map(|c| c.0),
        token_ok,
    };
    let status = resp.status().as_u16();
    if let Some(job) = trace_job {
        sim.note_trace(job, status);
    }
    sim.record(method.as_str(), path_and_query, status, now, outcome);
    resp
}

/// Merges the body's params into the query's, as Grape does; only the hooks API takes a body.
async fn body_params(req: Request, endpoint: Endpoint, params: &mut Params) -> Result<(), Reject> {
    if endpoint != Endpoint::Hooks {
        return Ok(());
    }
    let content_type = req.headers().get("content-type");
    let content_type = content_type
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(req.into_body(), BODY_LIMIT).await;
    let body = body.map_err(|_| Reject(413, "error", "413 Request Entity Too Large".into()))?;
    super::hooks_api::body_params(content_type.as_deref(), &body, params)
}

/// `/projects/:id/hooks[/:hook_id]`, any method.
fn answer_hooks(
    sim: &Simulator,
    req: super::hooks_api::HooksRequest<'_>,
    token_ok: bool,
) -> Response {
    if !token_ok {
        return err(401, "message", "401 Unauthorized");
    }
    super::hooks_api::answer(sim, req).unwrap_or_else(Reject::into_response)
}

/// One page of [`Hostile::ProjectFlood`]: `per_page` made-up projects of page `page` (offset
/// pagination, whatever the request asked), always with a next page.
fn flood_page(sim: &Simulator, path: &str, params: &Params, per_page: usize) -> Response {
    let page = match params.get("page") {
        Some(Param::One(p)) => p.parse::<u64>().unwrap_or(1).max(1),
        _ => 1,
    };
    let first = FLOOD_ID_BASE + (page - 1) * per_page as u64;
    let mut body = String::with_capacity(per_page * 80 + 2);
    body.push('[');
    for id in first..first + per_page as u64 {
        if id > first {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"id":{id},"path_with_namespace":"flood/p{id}","default_branch":"main","archived":false}}"#
        ));
    }
    body.push(']');
    let mut next = params.clone();
    next.insert("page".into(), Param::One((page + 1).to_string()));
    let link = format!(
        "<{}{path}?{}>; rel=\"next\"",
        sim.external_url(),
        to_query(&next)
    );
    let mut resp = response(200, JSON, body);
    let h = resp.headers_mut();
    set(h, "link", &link);
    set(h, "x-next-page", &(page + 1).to_string());
    set(h, "x-page", &page.to_string());
    resp
}

/// Whether [`Hostile::ScopesBefore17`] refuses the `scope` asked for.
fn rejects_scope(hostile: &[Hostile], params: &Params) -> bool {
    let scope: &[String] = match params.get("scope") {
        Some(Param::One(s)) => std::slice::from_ref(s),
        Some(Param::Many(list)) => list,
        None => &[],
    };
    hostile.contains(&Hostile::ScopesBefore17)
        && scope
            .iter()
            .any(|s| s == "waiting_for_callback" || s == "canceling")
}

/// Rewrites a normal answer as `hostile` says.
async fn apply_hostile(hostile: &Hostile, endpoint: Endpoint, resp: Response) -> Response {
    let jobs = matches!(endpoint, Endpoint::Jobs | Endpoint::JobsScoped);
    let listing = jobs
        || matches!(
            endpoint,
            Endpoint::PipelineJobs | Endpoint::GroupProjects | Endpoint::ProjectsList
        );
    match hostile {
        Hostile::ProjectFlood { .. } | Hostile::ScopesBefore17 => resp,
        Hostile::ListLink(_) if !listing => resp,
        Hostile::JobsExtraItems(_) if !jobs => resp,
        Hostile::ListLink(link) => {
            let mut resp = resp;
            let h = resp.headers_mut();
            h.remove("link");
            if let Some(raw) = link
                && let Ok(v) = HeaderValue::from_bytes(raw)
            {
                h.insert("link", v);
            }
            resp
        }
        Hostile::JobsExtraItems(items) => {
            let (parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let Some(inner) = bytes.strip_prefix(b"[").and_then(|b| b.strip_suffix(b"]")) else {
                return Response::from_parts(parts, Body::from(bytes));
            };
            let mut out = Vec::with_capacity(
                bytes.len() + items.iter().map(Vec::len).sum::<usize>() + items.len(),
            );
            out.push(b'[');
            out.extend_from_slice(inner);
            for item in items {
                if out.len() > 1 {
                    out.push(b',');
                }
                out.extend_from_slice(item);
            }
            out.push(b']');
            Response::from_parts(parts, Body::from(out))
        }
    }
}

pub(super) fn fault_response(fault: &Fault, now: Ms) -> Response {
    if let Fault::Raw {
        status,
        headers,
        body,
    } = fault
    {
        let mut resp = Response::new(Body::from(body.clone()));
        *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
        for (name, value) in headers {
            if let (Ok(n), Ok(v)) = (
                axum::http::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                resp.headers_mut().append(n, v);
            }
        }
        return resp;
    }
    match *fault {
        Fault::ServerError(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY);
            let reason = status.canonical_reason().unwrap_or("Error");
            let title = format!("{} {reason}", status.as_u16());
            let body = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                 <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n"
            );
            response(status.as_u16(), "text/html", body)
        }
        Fault::RateLimitedJson => json_response(429, &json!({"message": {"error": TOO_MANY}})),
        Fault::RateLimitedText { retry_after_secs } => {
            let mut resp = response(429, "text/plain", "Retry later\n");
            let reset_ms = now + retry_after_secs as Ms * 1000;
            let h = resp.headers_mut();
            set(h, "retry-after", &retry_after_secs.to_string());
            set(h, "ratelimit-name", "throttle_authenticated_api");
            set(h, "ratelimit-limit", "600");
            set(h, "ratelimit-observed", "601");
            set(h, "ratelimit-remaining", "0");
            set(h, "ratelimit-reset", &(reset_ms / 1000).to_string());
            set(h, "ratelimit-resettime", &http_date(reset_ms));
            resp
        }
        Fault::MalformedJson => response(200, JSON, r#"[{"id":12,"status":"succ"#),
        Fault::HtmlOk => response(200, "text/html; charset=utf-8", HTML_LOGIN),
        Fault::ConnectionReset => response(200, JSON, Body::new(CutBody { sent: false })),
        Fault::Unauthorized => err(401, "message", "401 Unauthorized"),
        Fault::ExpiredToken => json_response(
            401,
            &json!({"error": "invalid_token", "error_description": EXPIRED}),
        ),
        Fault::Forbidden => err(403, "message", "403 Forbidden"),
        // Never reached: a delay only postpones the normal answer, a raw one is answered above.
        Fault::Delay(_) | Fault::Raw { .. } => err(500, "message", "500 Internal Server Error"),
    }
}

/// An error answer, built into a response at the end (a `Response` is too big for `Err`).
pub(super) struct Reject(pub u16, pub &'static str, pub String);

impl Reject {
    fn into_response(self) -> Response {
        err(self.0, self.1, &self.2)
    }
}

/// Grape's integer coercion of an optional parameter: `Err` answers 400 "`name` is invalid".
pub(super) fn int_param(params: &Params, name: &str, default: i64) -> Result<i64, Reject> {
    let parsed = match params.get(name) {
        None => return Ok(default),
        Some(Param::One(v)) => v.trim().parse().ok(),
        Some(Param::Many(_)) => None,
    };
    parsed.ok_or_else(|| Reject(400, "error", format!("{name} is invalid")))
}

fn answer(
    sim: &Simulator,
    method: &Method,
    path: &str,
    route: Route,
    params: Params,
    token_ok: bool,
    now: Ms,
) -> Response {
    if let Some(resp) = token_knobs(sim, path, &route, token_ok, now) {
        return resp;
    }
    if matches!(route, Route::Other) {
        return err(404, "error", "404 Not Found");
    }
    if let Route::Hooks(id, hook_id) = route {
        let ext = sim.external_url();
        let (ext, path) = (&ext, path);
        let req = super::hooks_api::HooksRequest {
            method,
            path,
            id,
            hook_id,
            params,
            now,
            ext,
        };
        return answer_hooks(sim, req, token_ok);
    }
    if method != Method::GET && method != Method::HEAD {
        return err(405, "error", "405 Not Allowed");
    }
    if !token_ok {
        return err(401, "message", "401 Unauthorized");
    }
    let (ext, world) = (sim.external_url(), sim.world());
    let world = &*world;
    let project_not_found = || err(404, "message", "404 Project Not Found");
    match route {
        Route::Project(id) => match world.find_project(&id) {
            Some(p) => json_response(200, &project_json(world, p, now, &ext)),
            None => project_not_found(),
        },
        Route::Job(id, job_id) => {
            // Grape validates `job_id` as an Integer before the endpoint looks anything up.
            let Ok(job_id) = job_id.parse::<u64>() else {
                return err(400, "error", "job_id is invalid");
            };
            let Some(p) = world.find_project(&id) else {
                return project_not_found();
            };
            let job = world
                .job(job_id)
                .filter(|j| j.project_id == p.id && j.visible_at(now));
            match job {
                Some(job) => json_response(
                    200,
                    &job_json(world, job, &p.path_with_namespace, now, &ext),
                ),
                None => err(404, "message", "404 Not found"),
            }
        }
        Route::Trace(id, job_id) => super::trace_api::answer(sim, world, &id, &job_id, now),
        Route::Jobs(id) => {
            list_jobs(sim, path, id, params, now, &ext).unwrap_or_else(Reject::into_response)
        }
        Route::PipelineJobs(id, pipeline) => {
            list_pipeline_jobs(world, path, id, &pipeline, params, now, &ext)
                .unwrap_or_else(Reject::into_response)
        }
        Route::GroupProjects(id) => {
            let listing = Listing::Group(id);
            list_projects(world, path, listing, params, now, &ext)
                .unwrap_or_else(Reject::into_response)
        }
        Route::Projects => list_projects(world, path, Listing::All, params, now, &ext)
            .unwrap_or_else(Reject::into_response),
        Route::Hooks(..) | Route::Other => err(404, "error", "404 Not Found"),
    }
}

/// The answer of `token_api`'s endpoints and knobs, when they give one.
fn token_knobs(
    sim: &Simulator,
    path: &str,
    route: &Route,
    token_ok: bool,
    now: Ms,
) -> Option<Response> {
    let (project, jobs) = match route {
        Route::Project(id) | Route::Hooks(id, _) => (Some(id), false),
        Route::Jobs(id) | Route::Job(id, _) | Route::PipelineJobs(id, _) | Route::Trace(id, _) => {
            (Some(id), true)
        }
        _ => (None, false),
    };
    let world = sim.world();
    let project = project.and_then(|id| world.find_project(id)).map(|p| p.id);
    let req = super::token_api::Request {
        path,
        token_ok,
        project,
        jobs,
        now,
    };
    sim.token_store().answer(&req)
}

fn list_jobs(
    sim: &Simulator,
    path: &str,
    id: String,
    mut params: Params,
    now: Ms,
    ext: &str,
) -> Result<Response, Reject> {
    // Grape validates and coerces declared params before the endpoint runs.
    let scope = scope_param(&mut params)?;
    let (page, per_page) = offset_params(&mut params, &id)?;

    let world = &*sim.world();
    let Some(project) = world.find_project(&id) else {
        return Err(Reject(404, "message", "404 Project Not Found".into()));
    };
    let one = |k: &str| match params.get(k) {
        Some(Param::One(v)) => Some(v.as_str()),
        _ => None,
    };
    let keyset = one("pagination") == Some("keyset");
    let (mut below, mut skip) = (None, 0);
    if keyset {
        if one("order_by").is_some_and(|o| o != "id") || one("sort").is_some_and(|s| s != "desc") {
            return Err(Reject(405, "error", NO_KEYSET.into()));
        }
        if let Some(cursor) = one("cursor").filter(|c| !c.is_empty()) {
            let invalid = || Reject(400, "error", "cursor is invalid".into());
            below = Some(decode_cursor(cursor).ok_or_else(invalid)?);
        }
    } else {
        skip = (page as usize - 1).saturating_mul(per_page);
    }

    let jobs = world.jobs();
    let idx = world.project_indexes(project.id);
    // Ids grow with creation time, so the jobs that exist now are a prefix in id order.
    let mut end = idx.partition_point(|&i| jobs[i].created_at_ms <= now);
    if let Some(below) = below {
        end = idx[..end].partition_point(|&i| jobs[i].id < below);
    }
    let wanted = |i: &&usize| match (&scope, jobs[**i].status_at(now)) {
        (None, _) => true,
        (Some(scope), Some(status)) => scope.iter().any(|s| s == status),
        (Some(_), None) => false,
    };
    let found = idx[..end]
        .iter()
        .rev()
        .filter(wanted)
        .skip(skip)
        .take(per_page + 1);
    let mut page_jobs: Vec<_> = found.map(|&i| &jobs[i]).collect();
    let has_next = page_jobs.len() > per_page;
    page_jobs.truncate(per_page);

    let path_ns = &project.path_with_namespace;
    let body: Vec<Value> = page_jobs
        .iter()
        .map(|j| job_json(world, j, path_ns, now, ext))
        .collect();
    let mut resp = json_response(200, &Value::Array(body));
    let h = resp.headers_mut();
    if keyset {
        if let Some(last) = page_jobs.last().filter(|_| has_next) {
            let next = encode_cursor(last.id);
            set(
                h,
                "link",
                &page_link(ext, path, &params, "cursor", next, "next"),
            );
        }
        return Ok(resp);
    }
    // The jobs list skips counting: no X-Total, X-Total-Pages or rel="last".
    let offset = OffsetPage {
        page,
        per_page,
        has_next,
        empty: page_jobs.is_empty(),
        total: None,
    };
    offset.set_headers(h, ext, path, &params);
    Ok(resp)
}

/// `scope` or `scope[]` (`:optional_scope`): one status or many, each one of `STATUSES`, else
/// 400; coerced to a list, and written back as one (so links carry `scope[]=`).
fn scope_param(params: &mut Params) -> Result<Option<Vec<String>>, Reject> {
    let scope = match params.get("scope") {
        None => return Ok(None),
        Some(Param::One(s)) => vec![s.clone()],
        Some(Param::Many(list)) => list.clone(),
    };
    if scope.iter().any(|s| !STATUSES.contains(&s.as_str())) {
        return Err(Reject(
            400,
            "error",
            "scope does not have a valid value".into(),
        ));
    }
    params.insert("scope".into(), Param::Many(scope.clone()));
    Ok(Some(scope))
}

/// `GET /projects/:id/pipelines/:pipeline_id/jobs` as `lib/api/ci/pipelines.rb` serves it:
/// `Ci::JobsFinder` over `pipeline.builds` (no bridges), `.latest` (retried jobs hidden) unless
/// `include_retried`, `scope` filtering, `order_id_desc`, and plain offset pagination
/// (`paginate`, counted: `X-Total`, `X-Total-Pages`, `rel="last"` up to 10,000 rows). A
/// pipeline that is not the project's answers `ActiveRecord::RecordNotFound`'s 404.
fn list_pipeline_jobs(
    world: &World,
    path: &str,
    id: String,
    pipeline: &str,
    mut params: Params,
    now: Ms,
    ext: &str,
) -> Result<Response, Reject> {
    // Declared params first (Grape validates before the endpoint runs).
    let Ok(pipeline_id) = pipeline.parse::<u64>() else {
        return Err(Reject(400, "error", "pipeline_id is invalid".into()));
    };
    let include_retried = super::discovery::bool_param(&mut params, "include_retried")?;
    let include_retried = include_retried.unwrap_or(false);
    params.insert(
        "include_retried".into(),
        Param::One(include_retried.to_string()),
    );
    let scope = scope_param(&mut params)?;
    let (page, per_page) = offset_params(&mut params, &id)?;
    params.insert("pipeline_id".into(), Param::One(pipeline_id.to_string()));

    let Some(project) = world.find_project(&id) else {
        return Err(Reject(404, "message", "404 Project Not Found".into()));
    };
    // `user_project.all_pipelines.find(pipeline_id)`: the pipeline exists once its first job
    // does (the simulator has no empty pipelines).
    let visible: Vec<&JobPlan> = world
        .pipeline_jobs(pipeline_id)
        .filter(|j| j.project_id == project.id && j.visible_at(now))
        .collect();
    if visible.is_empty() {
        return Err(Reject(404, "message", "404 Not found".into()));
    }
    // A job is retried once a later job of the same name exists in its pipeline.
    let retried = |j: &JobPlan| visible.iter().any(|o| o.name == j.name && o.id > j.id);
    let found: Vec<&JobPlan> = visible
        .iter()
        .rev()
        .copied()
        .filter(|j| include_retried || !retried(j))
        .filter(|j| match (&scope, j.status_at(now)) {
            (None, _) => true,
            (Some(scope), Some(status)) => scope.iter().any(|s| s == status),
            (Some(_), None) => false,
        })
        .collect();
    let skip = (page as usize - 1).saturating_mul(per_page);
    let total = found.len();
    let path_ns = &project.path_with_namespace;
    let rows: Vec<Value> = (found.iter().skip(skip).take(per_page))
        .map(|j| job_json(world, j, path_ns, now, ext))
        .collect();
    Ok(offset_response(
        rows, page, per_page, total, ext, path, &params,
    ))
}

/// `page` and `per_page` (clamped to 1..=100) of an offset-paginated job list. The `Link`
/// repeats every param, with Grape's defaults and the path's `id` filled in.
pub(super) fn offset_params(params: &mut Params, id: &str) -> Result<(i64, usize), Reject> {
    let page = int_param(params, "page", 1)?.max(1);
    let per_page = int_param(params, "per_page", 20)?;
    params.insert("page".into(), Param::One(page.to_string()));
    params.insert("per_page".into(), Param::One(per_page.to_string()));
    params.insert("id".into(), Param::One(id.to_string()));
    Ok((page, per_page.clamp(1, 100) as usize))
}

/// Page `page` (of `per_page` rows) out of `total` results, with GitLab's offset headers.
pub(super) fn offset_response(
    rows: Vec<Value>,
    page: i64,
    per_page: usize,
    total: usize,
    ext: &str,
    path: &str,
    params: &Params,
) -> Response {
    let skip = (page.max(1) as usize - 1).saturating_mul(per_page);
    let offset = OffsetPage {
        page,
        per_page,
        has_next: total > skip.saturating_add(per_page),
        empty: rows.is_empty(),
        total: (total <= MAX_COUNT_LIMIT).then_some(total),
    };
    let mut resp = json_response(200, &Value::Array(rows));
    offset.set_headers(resp.headers_mut(), ext, path, params);
    resp
}

/// `<{ext}{path}?{params with key=value}>; rel="{rel}"`: GitLab puts its configured external
/// host in every pagination link and repeats every param (Grape defaults included).
pub(super) fn page_link(
    ext: &str,
    path: &str,
    params: &Params,
    key: &str,
    value: String,
    rel: &str,
) -> String {
    let mut p = params.clone();
    p.insert(key.to_owned(), Param::One(value));
    format!("<{ext}{path}?{}>; rel=\"{rel}\"", to_query(&p))
}

/// Above this many results GitLab stops counting (`Kaminari` `MAX_COUNT_LIMIT`): no `X-Total`,
/// `X-Total-Pages` or `rel="last"`.
pub(super) const MAX_COUNT_LIMIT: usize = 10_000;

/// One page of offset pagination, as GitLab's `OffsetHeaderBuilder` describes it.
pub(super) struct OffsetPage {
    pub page: i64,
    pub per_page: usize,
    pub has_next: bool,
    /// No rows on this page (Kaminari then calls it out of range and gives no prev/next page).
    pub empty: bool,
    /// The number of results when counted (`None` for endpoints that skip the count, or when
    /// there are more than [`MAX_COUNT_LIMIT`]).
    pub total: Option<usize>,
}

impl OffsetPage {
    pub(super) fn set_headers(&self, h: &mut HeaderMap, ext: &str, path: &str, params: &Params) {
        let total_pages = self
            .total
            .map(|t| t.div_ceil(self.per_page.max(1)).max(1) as i64);
        // Kaminari's `out_of_range?`: past the last page when counted, an empty page when not.
        let out_of_range = match total_pages {
            Some(pages) => self.page > pages,
            None => self.empty && self.page > 1,
        };
        let next = (self.has_next && !out_of_range).then(|| (self.page + 1).to_string());
        let prev = (self.page > 1 && !out_of_range).then(|| (self.page - 1).to_string());
        let link = |value: String, rel: &str| page_link(ext, path, params, "page", value, rel);
        // GitLab's order: prev, next, first, last.
        let mut links = Vec::new();
        links.extend(prev.clone().map(|p| link(p, "prev")));
        links.extend(next.clone().map(|n| link(n, "next")));
        links.push(link("1".into(), "first"));
        links.extend(total_pages.map(|t| link(t.to_string(), "last")));
        set(h, "link", &links.join(", "));
        set(h, "x-page", &self.page.to_string());
        set(h, "x-per-page", &self.per_page.to_string());
        set(h, "x-next-page", next.as_deref().unwrap_or(""));
        set(h, "x-prev-page", prev.as_deref().unwrap_or(""));
        if let (Some(total), Some(pages)) = (self.total, total_pages) {
            set(h, "x-total", &total.to_string());
            set(h, "x-total-pages", &pages.to_string());
        }
    }
}

/// URL-safe base64 (padded) of `{"id":"<id>","_kd":"n"}`.
pub(super) fn encode_cursor(id: u64) -> String {
    // Written by hand: GitLab puts `id` first and a JSON map would sort `_kd` before it.
    URL_SAFE.encode(format!(r#"{{"id":"{id}","_kd":"n"}}"#))
}

/// The id below which the next page starts, or `None` for a cursor GitLab would refuse.
fn decode_cursor(cursor: &str) -> Option<u64> {
    let raw = URL_SAFE
        .decode(cursor)
        .or_else(|_| URL_SAFE_NO_PAD.decode(cursor))
        .ok()?;
    let value: Value = serde_json::from_slice(&raw).ok()?;
    if value.get("_kd").is_some_and(|kd| kd != "n") {
        return None; // backwards pagination is never offered by the jobs Link header
    }
    match value.get("id")? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// A body that sends a few bytes and then fails, which makes the server abort the connection.
struct CutBody {
    sent: bool,
}

impl http_body::Body for CutBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.sent {
            return std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated connection reset",
            ))));
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(
            axum::body::Bytes::from_static(b"[{\"id\":1"),
        ))))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn to_query_sorts_like_rails() {
        let mut p = parse_query(Some(
            "scope=pending&per_page=100&pagination=keyset&page=1&id=g%2Fp",
        ));
        p.insert(
            "scope".into(),
            Param::Many(vec!["pending".into(), "running".into()]),
        );
        assert_eq!(
            to_query(&p),
            "id=g%2Fp&page=1&pagination=keyset&per_page=100&scope%5B%5D=pending&scope%5B%5D=running"
        );
        assert_eq!(cgi_escape("a b*~"), "a+b%2A~");
    }

    #[test]
    fn cursor_round_trip() {
        assert_eq!(encode_cursor(123), "eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ==");
        assert_eq!(decode_cursor("eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ=="), Some(123));
        assert_eq!(decode_cursor("eyJpZCI6IjEyMyIsIl9rZCI6Im4ifQ"), Some(123));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(
            decode_cursor(&URL_SAFE.encode(r#"{"id":"5","_kd":"p"}"#)),
            None
        );
    }
}
