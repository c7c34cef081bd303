//! Request handling: routing on the raw path (so `group%2Fsub%2Fproject` stays one segment),
//! Grape-like parameter handling, pagination headers and faults.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::json;

use super::render::{http_date, job_json, project_json};
use super::world::{Ms, STATUSES};
use super::{Endpoint, Fault, Simulator};

/// A decoded query parameter, as Rack parses it: `k=v` or `k[]=v1&k[]=v2`.
#[derive(Debug, Clone, PartialEq)]
enum Param {
    One(String),
    Many(Vec<String>),
}

type Params = BTreeMap<String, Param>;

fn parse_query(query: Option<&str>) -> Params {
    let mut params = Params::new();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.strip_suffix("[]") {
            Some(base) => match params
                .entry(base.to_owned())
                .or_insert_with(|| Param::Many(Vec::new()))
            {
                Param::Many(list) => list.push(v.into_owned()),
                one => *one = Param::Many(vec![v.into_owned()]),
            },
            None => {
                params.insert(k.into_owned(), Param::One(v.into_owned()));
            }
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
    let mut parts: Vec<String> = params
        .iter()
        .map(|(k, v)| match v {
            Param::One(v) => format!("{}={}", cgi_escape(k), cgi_escape(v)),
            Param::Many(list) if list.is_empty() => format!("{}=", cgi_escape(&format!("{k}[]"))),
            Param::Many(list) => {
                let key = cgi_escape(&format!("{k}[]"));
                list.iter()
                    .map(|v| format!("{key}={}", cgi_escape(v)))
                    .collect::<Vec<_>>()
                    .join("&")
            }
        })
        .collect();
    parts.sort();
    parts.join("&")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn response(status: StatusCode, content_type: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    response(status, "application/json", body.to_string())
}

fn error(status: StatusCode, key: &str, message: &str) -> Response {
    json_response(status, &json!({ key: message }))
}

fn header_value(s: &str) -> HeaderValue {
    // Every value built here is ASCII (URLs are percent-encoded), so this never falls back.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

enum Route {
    Project(String),
    Jobs(String),
    Job(String, String),
    Other,
}

fn route(path: &str) -> Route {
    let Some(rest) = path.strip_prefix("/api/v4/projects/") else {
        return Route::Other;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    match segs.as_slice() {
        [id] if !id.is_empty() => Route::Project(percent_decode(id)),
        [id, "jobs"] if !id.is_empty() => Route::Jobs(percent_decode(id)),
        [id, "jobs", job] if !id.is_empty() && !job.is_empty() => {
            Route::Job(percent_decode(id), percent_decode(job))
        }
        _ => Route::Other,
    }
}

/// What a request presented as credentials: `(where, token)`.
fn credentials(headers: &HeaderMap, params: &Params) -> Option<(&'static str, String)> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(t) = text("private-token") {
        return Some(("PRIVATE-TOKEN", t));
    }
    if let Some(auth) = text("authorization") {
        let token = auth.strip_prefix("Bearer ").unwrap_or("").trim().to_owned();
        return Some(("Authorization", token));
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
    let (method, uri, headers) = (
        req.method().clone(),
        req.uri().clone(),
        req.headers().clone(),
    );
    let params = parse_query(uri.query());
    let route = route(uri.path());
    let endpoint = match &route {
        Route::Project(_) => Endpoint::Project,
        Route::Jobs(_) if params.contains_key("scope") => Endpoint::JobsScoped,
        Route::Jobs(_) => Endpoint::Jobs,
        Route::Job(..) => Endpoint::Job,
        Route::Other => Endpoint::Other,
    };
    let creds = credentials(&headers, &params);
    let token_ok = creds.as_ref().is_some_and(|c| c.1 == sim.inner.token);
    let mut resp = match sim.pop_fault() {
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            None
        }
        Some(fault) => Some(fault_response(&fault, sim.now_ms())),
        None => None,
    }
    .unwrap_or_else(|| answer(&sim, &method, uri.path(), route, params, token_ok));
    let now = sim.now_ms();
    let h = resp.headers_mut();
    // Set explicitly so hyper does not stamp the real time on a simulated clock.
    h.insert(header::DATE, header_value(&http_date(now)));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=0, private, must-revalidate"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("SAMEORIGIN"));
    let path_and_query = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let outcome = Outcome {
        endpoint,
        auth: creds.map(|c| c.0),
        token_ok,
    };
    sim.record(
        method.as_str(),
        path_and_query,
        resp.status().as_u16(),
        now,
        outcome,
    );
    resp
}

fn fault_response(fault: &Fault, now: Ms) -> Response {
    match fault {
        Fault::ServerError(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_GATEWAY);
            let title = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("Error")
            );
            let body = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            );
            response(status, "text/html", body)
        }
        Fault::RateLimitedJson => json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"message": {"error": "This endpoint has been requested too many times. Try again later."}}),
        ),
        Fault::RateLimitedText { retry_after_secs } => {
            let mut resp = response(StatusCode::TOO_MANY_REQUESTS, "text/plain", "Retry later\n");
            let reset_ms = now + *retry_after_secs as Ms * 1000;
            let h = resp.headers_mut();
            h.insert(
                header::RETRY_AFTER,
                header_value(&retry_after_secs.to_string()),
            );
            h.insert(
                "ratelimit-name",
                HeaderValue::from_static("throttle_authenticated_api"),
            );
            h.insert("ratelimit-limit", HeaderValue::from_static("600"));
            h.insert("ratelimit-observed", HeaderValue::from_static("601"));
            h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
            h.insert(
                "ratelimit-reset",
                header_value(&(reset_ms / 1000).to_string()),
            );
            h.insert("ratelimit-resettime", header_value(&http_date(reset_ms)));
            resp
        }
        Fault::MalformedJson => response(
            StatusCode::OK,
            "application/json",
            r#"[{"id":12,"status":"succ"#,
        ),
        Fault::HtmlOk => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<!DOCTYPE html>\n<html><head><title>Sign in - Corporate SSO</title></head>\n<body><form method=\"post\" action=\"/oauth2/sign_in\"><input name=\"username\"><input name=\"password\" type=\"password\"></form></body></html>\n",
        ),
        Fault::Unauthorized => error(StatusCode::UNAUTHORIZED, "message", "401 Unauthorized"),
        Fault::ExpiredToken => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_token", "error_description": "Token is expired. You can either do re-authorization or token refresh."}),
        ),
        Fault::Forbidden => error(StatusCode::FORBIDDEN, "message", "403 Forbidden"),
        // Handled before answering: it only delays a normal answer.
        Fault::Delay(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "message",
            "500 Internal Server Error",
        ),
    }
}

/// An error answer, built into a response at the end (a `Response` is too big for `Err`).
struct Reject(StatusCode, &'static str, String);

impl Reject {
    fn new(status: StatusCode, key: &'static str, message: &str) -> Self {
        Self(status, key, message.to_owned())
    }

    fn into_response(self) -> Response {
        error(self.0, self.1, &self.2)
    }
}

/// Grape's integer coercion of an optional parameter: `Err` answers 400 "`name` is invalid".
fn int_param(params: &Params, name: &str, default: i64) -> Result<i64, Reject> {
    match params.get(name) {
        None => Ok(default),
        Some(Param::One(v)) if v.trim().parse::<i64>().is_ok() => {
            Ok(v.trim().parse().unwrap_or(default))
        }
        Some(_) => Err(Reject(
            StatusCode::BAD_REQUEST,
            "error",
            format!("{name} is invalid"),
        )),
    }
}

fn answer(
    sim: &Simulator,
    method: &Method,
    path: &str,
    route: Route,
    params: Params,
    token_ok: bool,
) -> Response {
    if matches!(route, Route::Other) {
        return error(StatusCode::NOT_FOUND, "error", "404 Not Found");
    }
    if method != Method::GET && method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, "error", "405 Not Allowed");
    }
    if !token_ok {
        return error(StatusCode::UNAUTHORIZED, "message", "401 Unauthorized");
    }
    let now = sim.now_ms();
    let ext = sim.external_url();
    let world = sim.world();
    let project_not_found = || error(StatusCode::NOT_FOUND, "message", "404 Project Not Found");
    match route {
        Route::Project(id) => match world.find_project(&id) {
            Some(p) => json_response(StatusCode::OK, &project_json(world, p, now, &ext)),
            None => project_not_found(),
        },
        Route::Job(id, job_id) => {
            let Ok(job_id) = job_id.parse::<u64>() else {
                return error(StatusCode::BAD_REQUEST, "error", "job_id is invalid");
            };
            let Some(p) = world.find_project(&id) else {
                return project_not_found();
            };
            match world
                .job(job_id)
                .filter(|j| j.project_id == p.id && j.visible_at(now))
            {
                Some(job) => {
                    let body = serde_json::to_vec(&job_json(
                        world,
                        job,
                        &p.path_with_namespace,
                        now,
                        &ext,
                    ));
                    response(StatusCode::OK, "application/json", body.unwrap_or_default())
                }
                None => error(StatusCode::NOT_FOUND, "message", "404 Not found"),
            }
        }
        Route::Jobs(id) => {
            list_jobs(sim, path, id, params, now, &ext).unwrap_or_else(Reject::into_response)
        }
        Route::Other => error(StatusCode::NOT_FOUND, "error", "404 Not Found"),
    }
}

fn list_jobs(
    sim: &Simulator,
    path: &str,
    id: String,
    mut params: Params,
    now: Ms,
    ext: &str,
) -> Result<Response, Reject> {
    // Grape: declared params are validated and coerced before the endpoint runs.
    let scope = match params.get("scope") {
        None => None,
        Some(Param::One(s)) => Some(vec![s.clone()]),
        Some(Param::Many(list)) => Some(list.clone()),
    };
    if let Some(scope) = &scope {
        if scope.iter().any(|s| !STATUSES.contains(&s.as_str())) {
            return Err(Reject::new(
                StatusCode::BAD_REQUEST,
                "error",
                "scope does not have a valid value",
            ));
        }
        params.insert("scope".to_owned(), Param::Many(scope.clone()));
    }
    let page = int_param(&params, "page", 1)?.max(1);
    let per_page = int_param(&params, "per_page", 20)?;
    params.insert("page".to_owned(), Param::One(page.to_string()));
    params.insert("per_page".to_owned(), Param::One(per_page.to_string()));
    params.insert("id".to_owned(), Param::One(id.clone()));
    let per_page = per_page.clamp(1, 100) as usize;

    let world = sim.world();
    let project = world
        .find_project(&id)
        .ok_or_else(|| Reject::new(StatusCode::NOT_FOUND, "message", "404 Project Not Found"))?;
    let one = |k: &str| match params.get(k) {
        Some(Param::One(v)) => Some(v.as_str()),
        _ => None,
    };
    let keyset = one("pagination") == Some("keyset");
    let mut below = None;
    let mut skip = 0;
    if keyset {
        if one("order_by").is_some_and(|o| o != "id") || one("sort").is_some_and(|s| s != "desc") {
            let msg = "Keyset pagination is not yet available for this type of request";
            return Err(Reject::new(StatusCode::METHOD_NOT_ALLOWED, "error", msg));
        }
        if let Some(cursor) = one("cursor").filter(|c| !c.is_empty()) {
            below = Some(decode_cursor(cursor).ok_or_else(|| {
                Reject::new(StatusCode::BAD_REQUEST, "error", "cursor is invalid")
            })?);
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
    let matches = |i: &&usize| {
        scope.as_ref().is_none_or(|s| {
            jobs[**i]
                .status_at(now)
                .is_some_and(|st| s.iter().any(|x| x == st))
        })
    };
    let mut page_jobs: Vec<_> = idx[..end]
        .iter()
        .rev()
        .filter(matches)
        .skip(skip)
        .take(per_page + 1)
        .map(|&i| &jobs[i])
        .collect();
    let has_next = page_jobs.len() > per_page;
    page_jobs.truncate(per_page);

    let path_ns = &project.path_with_namespace;
    let body: Vec<_> = page_jobs
        .iter()
        .map(|j| job_json(world, j, path_ns, now, ext))
        .collect();
    let mut resp = response(
        StatusCode::OK,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    );
    let link = |extra: Vec<(&str, String)>| {
        let mut p = params.clone();
        for (k, v) in extra {
            p.insert(k.to_owned(), Param::One(v));
        }
        format!("<{ext}{path}?{}>", to_query(&p))
    };
    let h = resp.headers_mut();
    if keyset {
        if let Some(last) = page_jobs.last().filter(|_| has_next) {
            h.insert(
                header::LINK,
                header_value(&format!(
                    "{}; rel=\"next\"",
                    link(vec![("cursor", encode_cursor(last.id))])
                )),
            );
        }
    } else {
        let next = if has_next {
            (page + 1).to_string()
        } else {
            String::new()
        };
        let prev = if page > 1 {
            (page - 1).to_string()
        } else {
            String::new()
        };
        let mut links = Vec::new();
        if has_next {
            links.push(format!(
                "{}; rel=\"next\"",
                link(vec![("page", next.clone())])
            ));
        }
        if page > 1 {
            links.push(format!(
                "{}; rel=\"prev\"",
                link(vec![("page", prev.clone())])
            ));
        }
        links.push(format!(
            "{}; rel=\"first\"",
            link(vec![("page", "1".to_owned())])
        ));
        h.insert(header::LINK, header_value(&links.join(", ")));
        h.insert("x-page", header_value(&page.to_string()));
        h.insert("x-per-page", header_value(&per_page.to_string()));
        h.insert("x-next-page", header_value(&next));
        h.insert("x-prev-page", header_value(&prev));
    }
    Ok(resp)
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
    let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    if value.get("_kd").is_some_and(|kd| kd != "n") {
        return None; // backwards pagination is never offered by the jobs Link header
    }
    match value.get("id")? {
        serde_json::Value::String(s) => s.parse().ok(),
        serde_json::Value::Number(n) => n.as_u64(),
        _ => None,
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
