//! The GitLab API client: one shared `reqwest` client with timeouts, the token in a header that is
//! marked sensitive, bounded retries with backoff, capped bodies, and per-request metrics.

pub mod link;
pub mod model;
pub mod throttle;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use tracing::{debug, warn};

use crate::config::GitlabConfig;
use crate::metrics::Metrics;
pub use model::{Job, JobRunner, JobStatus, Project};

/// Largest response body accepted; a jobs page of 100 is ~200 KiB, so this only stops runaways.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Keyset page size: GitLab's documented maximum.
pub const PER_PAGE: u32 = 100;

const USER_AGENT: &str = concat!(
    "gitlab-jobs-exporter/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/gitlab-jobs-exporter)"
);

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{endpoint}: HTTP {status}: {message}")]
    Status {
        endpoint: &'static str,
        status: u16,
        message: String,
    },
    #[error("{endpoint}: rate limited (HTTP 429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        endpoint: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{endpoint}: request failed: {message}")]
    Transport {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint}: bad response body: {message}")]
    Decode {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint}: {0}", .source)]
    Link {
        endpoint: &'static str,
        source: link::LinkError,
    },
}

impl ApiError {
    /// Worth retrying within the same cycle: the server or the network may do better next time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500,
            Self::RateLimited { .. } | Self::Transport { .. } | Self::Decode { .. } => true,
            Self::Link { .. } => false,
        }
    }

    /// A short, bounded label for `gitlab_jobs_exporter_api_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Status { status: 401, .. } => "unauthorized",
            Self::Status { status: 403, .. } => "forbidden",
            Self::Status { status: 404, .. } => "not_found",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
            Self::RateLimited { .. } => "rate_limited",
            Self::Transport { .. } => "transport",
            Self::Decode { .. } => "decode",
            Self::Link { .. } => "link",
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}

/// How hard to retry transient failures within one call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// First pause after a 429 that names no wait (doubled for each one in a row).
    pub rate_limit_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            rate_limit_pause: Duration::from_secs(5),
        }
    }
}

/// One page of a job listing.
#[derive(Debug)]
pub struct JobsPage {
    pub jobs: Vec<Job>,
    /// Items that were not decodable jobs (counted and skipped).
    pub bad_items: usize,
    /// The next page, relative to `/api/v4/`, from the `Link` header.
    pub next: Option<String>,
    /// GitLab's clock (`Date` header), so time comparisons never mix two clocks.
    pub server_time: Option<DateTime<Utc>>,
}

/// Which page of one pipeline's job list to read.
#[derive(Debug, Clone)]
pub enum PipelineJobsRequest<'a> {
    /// The first page (offset pagination, newest first), retried jobs included.
    First { project: &'a str, pipeline: u64 },
    /// A `Link: rel="next"` target as returned in [`JobsPage::next`].
    Next(&'a str),
}

/// One page of a project listing.
#[derive(Debug)]
pub struct ProjectsPage {
    pub projects: Vec<Project>,
    /// Items that were not decodable projects (counted and skipped).
    pub bad_items: usize,
    /// The next page, relative to `/api/v4/`, from the `Link` header.
    pub next: Option<String>,
}

/// Which page of a project listing to read.
#[derive(Debug, Clone)]
pub enum ProjectsRequest<'a> {
    /// `GET /groups/:id/projects` (offset pagination: GitLab offers no keyset here).
    Group {
        group: &'a str,
        include_subgroups: bool,
        with_archived: bool,
    },
    /// `GET /projects?membership=true` (keyset pagination by id).
    Membership { with_archived: bool },
    /// A `Link: rel="next"` target as returned in [`ProjectsPage::next`].
    Next(&'a str),
}

/// Which page of a job listing to read.
#[derive(Debug, Clone)]
pub enum PageRequest<'a> {
    /// The first (newest) page, optionally restricted to some statuses.
    First {
        project: &'a str,
        scopes: &'a [JobStatus],
    },
    /// A `Link: rel="next"` target as returned in [`JobsPage::next`].
    Next(&'a str),
}

pub struct GitlabClient {
    http: reqwest::Client,
    /// `<configured url>/api/v4/`, always with a trailing slash so `join` appends.
    api_base: url::Url,
    token: SecretString,
    retry: RetryPolicy,
    metrics: Arc<Metrics>,
    throttle: throttle::Throttle,
}

impl std::fmt::Debug for GitlabClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitlabClient")
            .field("api_base", &self.api_base.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Error)]
pub enum ClientBuildError {
    #[error("gitlab.url: {0}")]
    Url(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl GitlabClient {
    pub fn new(
        cfg: &GitlabConfig,
        token: SecretString,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ClientBuildError> {
        install_tls_provider();
        let mut base = cfg.url.trim_end_matches('/').to_string();
        base.push_str("/api/v4/");
        let api_base = url::Url::parse(&base).map_err(|e| ClientBuildError::Url(e.to_string()))?;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            // Never follow redirects: a redirect could carry the token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientBuildError::Http(e.to_string()))?;
        Ok(Self {
            http,
            api_base,
            token,
            throttle: throttle::Throttle::new(cfg.max_requests_per_minute, retry.rate_limit_pause),
            retry,
            metrics,
        })
    }

    /// The URL `GET /projects/:id` asks, for logs (it holds no credentials: validate() keeps
    /// them out of `gitlab.url`, and the token travels in a header).
    pub fn project_url(&self, project: &str) -> String {
        format!("{}projects/{project}", self.api_base)
    }

    /// `GET /projects/:id`.
    pub async fn project(&self, project: &str) -> Result<Project, ApiError> {
        self.get("project", &format!("projects/{project}"), |resp| {
            serde_json::from_slice(&resp.body).map_err(|e| decode_error("project", &e, &resp.body))
        })
        .await
    }

    /// `GET /projects/:id/jobs/:job_id`; `Ok(None)` when the job is gone (404).
    pub async fn job(&self, project: &str, job_id: u64) -> Result<Option<Job>, ApiError> {
        let rel = format!("projects/{project}/jobs/{job_id}");
        let found = self.get("job", &rel, |resp| {
            serde_json::from_slice(&resp.body).map_err(|e| decode_error("job", &e, &resp.body))
        });
        match found.await {
            Ok(job) => Ok(Some(job)),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One keyset page of `GET /projects/:id/jobs`.
    pub async fn jobs_page(&self, req: PageRequest<'_>) -> Result<JobsPage, ApiError> {
        let rel = match req {
            PageRequest::First { project, scopes } => {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("pagination", "keyset");
                q.append_pair("per_page", &PER_PAGE.to_string());
                for s in scopes {
                    q.append_pair("scope[]", s.as_str());
                }
                format!("projects/{project}/jobs?{}", q.finish())
            }
            PageRequest::Next(rel) => rel.to_string(),
        };
        self.get("jobs", &rel, |resp| parse_jobs_page("jobs", resp))
            .await
    }

    /// One page of `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true`: the
    /// pipeline's jobs (trigger jobs excluded), id descending, same job JSON as the jobs list.
    /// Offset pagination only (GitLab's plain `paginate`); the next page comes from `Link`.
    /// A pipeline GitLab does not know (or an instance without this endpoint) answers 404,
    /// which is returned as an error: the caller decides what it means.
    pub async fn pipeline_jobs_page(
        &self,
        req: PipelineJobsRequest<'_>,
    ) -> Result<JobsPage, ApiError> {
        const ENDPOINT: &str = "pipeline_jobs";
        let rel = match req {
            PipelineJobsRequest::First { project, pipeline } => {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("include_retried", "true");
                q.append_pair("per_page", &PER_PAGE.to_string());
                format!(
                    "projects/{project}/pipelines/{pipeline}/jobs?{}",
                    q.finish()
                )
            }
            PipelineJobsRequest::Next(rel) => rel.to_string(),
        };
        self.get(ENDPOINT, &rel, |resp| {
            // Offset pages: X-Next-Page stands in for a dropped `Link`.
            let fallback = x_next_page(&rel, &resp.headers);
            let mut page = parse_jobs_page(ENDPOINT, resp)?;
            page.next = page.next.or(fallback);
            Ok(page)
        })
        .await
    }

    pub async fn projects_page(&self, req: ProjectsRequest<'_>) -> Result<ProjectsPage, ApiError> {
        // Built in a block: the serializer is not Send and must not live across the await.
        let (endpoint, rel) = {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            let common = |q: &mut url::form_urlencoded::Serializer<'_, String>,
                          with_archived: bool| {
                // `simple` keeps pages small; archived ones are filtered by GitLab instead.
                q.append_pair("simple", "true");
                if !with_archived {
                    q.append_pair("archived", "false");
                }
                q.append_pair("order_by", "id");
                q.append_pair("sort", "asc");
                q.append_pair("per_page", &PER_PAGE.to_string());
            };
            let (endpoint, rel) = match req {
                ProjectsRequest::Group {
                    group,
                    include_subgroups,
                    with_archived,
                } => {
                    q.append_pair("include_subgroups", &include_subgroups.to_string());
                    // Projects shared with the group belong to (and are counted under) another.
                    q.append_pair("with_shared", "false");
                    common(&mut q, with_archived);
                    (
                        "group_projects",
                        format!("groups/{group}/projects?{}", q.finish()),
                    )
                }
                ProjectsRequest::Membership { with_archived } => {
                    q.append_pair("membership", "true");
                    // Reporter and up: a Guest membership usually cannot read jobs (403).
                    q.append_pair("min_access_level", "20");
                    q.append_pair("pagination", "keyset");
                    common(&mut q, with_archived);
                    ("projects", format!("projects?{}", q.finish()))
                }
                ProjectsRequest::Next(rel) => {
                    let endpoint = if rel.starts_with("groups/") {
                        "group_projects"
                    } else {
                        "projects"
                    };
                    (endpoint, rel.to_string())
                }
            };
            (endpoint, rel)
        };
        self.get(endpoint, &rel, |resp| {
            // GitLab sends both; a proxy or look-alike that drops `Link` still says X-Next-Page.
            let next = match next_link(endpoint, &resp.headers)? {
                Some(next) => Some(next),
                None => x_next_page(&rel, &resp.headers),
            };
            let (projects, bad_items) = model::decode_projects(&resp.body)
                .map_err(|e| decode_error(endpoint, &e, &resp.body))?;
            Ok(ProjectsPage {
                projects,
                bad_items,
                next,
            })
        })
        .await
    }

    /// GET and `parse`, with bounded retries for transient failures (5xx, 429, timeouts, broken
    /// or undecodable bodies): a retry re-sends the request, so nothing half-parsed is kept.
    async fn get<T>(
        &self,
        endpoint: &'static str,
        rel: &str,
        parse: impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let url = self.api_base.join(rel).map_err(|e| ApiError::Transport {
            endpoint,
            message: format!("bad URL {rel:?}: {e}"),
        })?;
        // join() resolves against the base; anything else would mean a crafted path escaped it.
        if url.origin() != self.api_base.origin() || !url.path().starts_with(self.api_base.path()) {
            return Err(ApiError::Link {
                endpoint,
                source: link::LinkError::NotApi(rel.to_string()),
            });
        }
        let policy = self.retry.clone();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.retries)
            .with_jitter();
        // A 429 is retried too: the throttle holds every request until GitLab's wait is over.
        (|| self.get_once(endpoint, url.clone(), &parse))
            .retry(backoff)
            .when(ApiError::is_transient)
            .notify(|e: &ApiError, wait: Duration| {
                warn!(endpoint, error = %e, wait_ms = wait.as_millis() as u64, "GitLab request failed; retrying");
            })
            .await
    }

    async fn get_once<T>(
        &self,
        endpoint: &'static str,
        url: url::Url,
        parse: &impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = self.send(endpoint, url).await;
        let code = match &result {
            Ok(r) => r.status.as_u16().to_string(),
            Err(e) => e
                .status()
                .map_or_else(|| "error".to_string(), |s| s.to_string()),
        };
        self.metrics
            .observe_request(endpoint, &code, started.elapsed().as_secs_f64());
        // A body that does not decode counts as a failed request too (and is retried).
        let result = result.and_then(parse);
        if let Err(e) = &result {
            self.metrics.api_error(e.kind());
        }
        result
    }

    async fn send(&self, endpoint: &'static str, url: url::Url) -> Result<Response, ApiError> {
        let mut token =
            HeaderValue::from_str(self.token.expose_secret()).map_err(|_| ApiError::Transport {
                endpoint,
                message: "the token contains characters not allowed in an HTTP header".into(),
            })?;
        token.set_sensitive(true);
        self.throttle.wait().await;
        debug!(endpoint, path = url.path(), "GET");
        let resp = self
            .http
            .get(url)
            .header("PRIVATE-TOKEN", token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let remaining = header_f64(&headers, "ratelimit-remaining");
        if let Some(remaining) = remaining {
            self.metrics.rate_limit_remaining(remaining);
        }
        let body = read_capped(resp)
            .await
            .map_err(|message| ApiError::Transport { endpoint, message })?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(&headers);
            let paused = self.throttle.rate_limited(retry_after);
            self.metrics.rate_limited(paused.as_secs_f64());
            warn!(
                endpoint,
                pause_s = paused.as_secs_f64(),
                "GitLab rate limit hit (429): all requests paused"
            );
            return Err(ApiError::RateLimited {
                endpoint,
                retry_after,
            });
        }
        self.throttle.succeeded();
        if let Some(remaining) = remaining {
            self.throttle.remaining(
                remaining,
                header_f64(&headers, "ratelimit-limit"),
                reset_in(&headers),
            );
        }
        if !status.is_success() {
            return Err(ApiError::Status {
                endpoint,
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The next offset page from `X-Next-Page` (empty on the last page): `rel` with its `page`
/// parameter set to it.
fn x_next_page(rel: &str, headers: &HeaderMap) -> Option<String> {
    let page: u64 = headers
        .get("x-next-page")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let (path, query) = rel.split_once('?').unwrap_or((rel, ""));
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != "page") {
        q.append_pair(&k, &v);
    }
    q.append_pair("page", &page.to_string());
    Some(format!("{path}?{}", q.finish()))
}

/// The `Link: rel="next"` target, relative to `/api/v4/`.
fn next_link(endpoint: &'static str, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(reqwest::header::LINK) {
        Some(v) => {
            let text = v.to_str().map_err(|e| ApiError::Link {
                endpoint,
                source: link::LinkError::Syntax(e.to_string()),
            })?;
            link::next_relative(text).map_err(|source| ApiError::Link { endpoint, source })
        }
        None => Ok(None),
    }
}

fn parse_jobs_page(endpoint: &'static str, resp: Response) -> Result<JobsPage, ApiError> {
    let next = next_link(endpoint, &resp.headers)?;
    let (jobs, bad_items) =
        model::decode_jobs(&resp.body).map_err(|e| decode_error(endpoint, &e, &resp.body))?;
    Ok(JobsPage {
        jobs,
        bad_items,
        next,
        server_time: server_time(&resp.headers),
    })
}

/// reqwest is built without a default crypto provider (aws-lc's build is heavy); install ring's.
/// Idempotent; any code building a `reqwest::Client` in this process must call it first.
pub fn install_tls_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("response body larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_error(endpoint: &'static str, e: &reqwest::Error) -> ApiError {
    ApiError::Transport {
        endpoint,
        message: describe(e),
    }
}

/// reqwest errors name the URL; ours carry no secret, but keep the chain short and readable.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "sending the request failed"
    }
    .to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn decode_error(endpoint: &'static str, e: &serde_json::Error, body: &[u8]) -> ApiError {
    ApiError::Decode {
        endpoint,
        message: format!("{e} (body starts {:?})", snippet(body)),
    }
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned()
}

/// GitLab's error bodies: `{"message": …}` or `{"error": …, "error_description": …}`.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let pick = |k: &str| {
            v.get(k)
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
        };
        match (pick("error"), pick("error_description"), pick("message")) {
            (Some(e), Some(d), _) => return format!("{e}: {d}"),
            (_, _, Some(m)) | (Some(m), None, None) => return m,
            _ => {}
        }
    }
    snippet(body)
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// `RateLimit-Reset` (unix time) as a wait from GitLab's now.
fn reset_in(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_f64(headers, "ratelimit-reset")?;
    let now = server_time(headers).unwrap_or_else(Utc::now).timestamp() as f64;
    (reset > now).then(|| Duration::from_secs_f64((reset - now).min(24.0 * 3600.0)))
}

/// The later of `Retry-After` (seconds) and `RateLimit-Reset` (unix time), as a wait from now.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let after = header_f64(headers, "retry-after").filter(|s| *s >= 0.0);
    let reset = reset_in(headers).map(|d| d.as_secs_f64());
    match (after, reset) {
        (Some(a), Some(r)) => Some(a.max(r)),
        (a, r) => a.or(r),
    }
    .map(|s| Duration::from_secs_f64(s.min(24.0 * 3600.0)))
}

fn server_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_next_page_stands_in_for_a_missing_link() {
        let mut h = HeaderMap::new();
        assert_eq!(
            x_next_page("groups/7/projects?page=1&per_page=100", &h),
            None
        );
        h.insert("x-next-page", HeaderValue::from_static(""));
        assert_eq!(
            x_next_page("groups/7/projects?page=1", &h),
            None,
            "last page"
        );
        h.insert("x-next-page", HeaderValue::from_static("3"));
        assert_eq!(
            x_next_page("groups/a%2Fb/projects?page=2&per_page=100", &h).as_deref(),
            Some("groups/a%2Fb/projects?per_page=100&page=3")
        );
        assert_eq!(
            x_next_page("groups/7/projects", &h).as_deref(),
            Some("groups/7/projects?page=3")
        );
    }

    #[test]
    fn error_messages_from_gitlab_bodies() {
        assert_eq!(
            error_message(br#"{"message":"401 Unauthorized"}"#),
            "401 Unauthorized"
        );
        assert_eq!(
            error_message(br#"{"error":"invalid_token","error_description":"Token is expired."}"#),
            "invalid_token: Token is expired."
        );
        assert_eq!(
            error_message(
                br#"{"message":{"error":"This endpoint has been requested too many times."}}"#
            ),
            r#"{"error":"This endpoint has been requested too many times."}"#
        );
        assert_eq!(error_message(b"<html>502</html>"), "<html>502</html>");
    }

    #[test]
    fn retry_after_takes_the_later_of_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Wed, 25 Nov 2026 08:50:00 GMT"),
        );
        h.insert("retry-after", HeaderValue::from_static("5"));
        // 08:50:30 GMT
        let reset = DateTime::parse_from_rfc2822("Wed, 25 Nov 2026 08:50:30 GMT")
            .unwrap()
            .timestamp();
        h.insert(
            "ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.remove("ratelimit-reset");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(5)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }
}
