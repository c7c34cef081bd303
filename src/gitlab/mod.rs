//! The GitLab API client: one shared `reqwest` client with timeouts, the token in a header that is
//! marked sensitive, bounded retries with backoff, capped bodies, and every request reported to a
//! [`ClientObserver`] (the exporter's metrics).
//!
//! Longer than 600 lines on purpose: the request path (URL check, token, throttle, retries,
//! rate-limit answers, clock check, page decoding) reads best in one place; what stands apart
//! lives beside it (`pager`, `link`, `headers`, `throttle`, `observer`).

mod headers;
pub mod hooks;
pub mod link;
pub mod meta;
pub mod observer;
pub mod pager;
pub mod throttle;
mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;
use tracing::{debug, warn};

use crate::config::GitlabSettings;
use crate::model::{self, text};
use crate::model::{Job, JobStatus, Project};
use headers::{header_f64, raw_header, reset_in, retry_after, server_time};
pub use observer::ClientObserver;
use pager::NextHeaders;
pub use trace::Trace;

/// Largest response body accepted; a jobs page of 100 is ~200 KiB, so this only stops runaways.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Keyset page size: GitLab's documented maximum.
pub const PER_PAGE: u32 = 100;
/// Items in one job page beyond which it is refused (`page_too_long`, not decoded): GitLab
/// never sends more than asked; a page a little longer is kept and counted (`check_page`).
pub const MAX_JOB_PAGE_ITEMS: usize = 10 * PER_PAGE as usize;

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
    /// Well-formed JSON that is no job (a lone surrogate, a number out of range, nesting past
    /// the limit, a field of the wrong type): asking again would not help.
    #[error("{endpoint}: not a valid job: {message}")]
    BadItem {
        endpoint: &'static str,
        message: String,
    },
    /// A listing page with more items than asked for (GitLab never does that).
    #[error("{endpoint}: page longer than asked (more than {max} items); refused")]
    TooLong { endpoint: &'static str, max: usize },
}

impl ApiError {
    /// Worth retrying within the same cycle: the server or the network may do better next time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500,
            Self::RateLimited { .. } | Self::Transport { .. } | Self::Decode { .. } => true,
            Self::Link { .. } | Self::TooLong { .. } | Self::BadItem { .. } => false,
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
            Self::TooLong { .. } => "page_too_long",
            Self::BadItem { .. } => "bad_job",
        }
    }

    /// The endpoint the failed request was for (`jobs`, `project`, ...), for logs.
    pub fn endpoint(&self) -> &'static str {
        match self {
            Self::Status { endpoint, .. }
            | Self::RateLimited { endpoint, .. }
            | Self::Transport { endpoint, .. }
            | Self::Decode { endpoint, .. }
            | Self::Link { endpoint, .. }
            | Self::BadItem { endpoint, .. }
            | Self::TooLong { endpoint, .. } => endpoint,
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
    /// Longest pause of all requests, whatever GitLab's headers ask for (the daemon waits a
    /// limit out; a one-off command such as `--check-gitlab` reports it instead).
    pub max_pause: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 3,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            rate_limit_pause: Duration::from_secs(5),
            max_pause: throttle::MAX_PAUSE,
        }
    }
}

/// One page of a job listing.
#[derive(Debug)]
pub struct JobsPage {
    pub jobs: Vec<Job>,
    /// Items that were not decodable jobs (counted and skipped).
    pub bad_items: usize,
    /// The next page, relative to `/api/v4/`, from the `Link` header. A full page whose
    /// `Link` cannot be used holds the error instead: only a caller that needs the next page
    /// fails on it (an idle project's cycle reads one page and must not fail for the rest).
    next: NextLink,
    /// GitLab's clock (`Date` header), so time comparisons never mix two clocks.
    pub server_time: Option<DateTime<Utc>>,
}

impl JobsPage {
    /// A page of these jobs with no next page (a single job's answer).
    pub fn of_jobs(jobs: Vec<Job>) -> Self {
        Self {
            jobs,
            bad_items: 0,
            next: Ok(None),
            server_time: None,
        }
    }

    /// The next page: `Ok(None)` on the last one, an error when it exists but its `Link`
    /// could not be used.
    pub fn next(&self) -> Result<Option<&str>, ApiError> {
        next_of(&self.next)
    }

    /// [`Self::next`], taken out of the page.
    pub fn take_next(&mut self) -> Result<Option<String>, ApiError> {
        let next = self.next()?.map(str::to_string);
        self.next = Ok(None);
        Ok(next)
    }
}

/// Which page of one pipeline's job list to read.
#[derive(Debug, Clone)]
pub enum PipelineJobsRequest<'a> {
    /// The first page (offset pagination, newest first), retried jobs included, optionally
    /// restricted to some statuses (`scope[]`).
    First {
        project: &'a str,
        pipeline: u64,
        scopes: &'a [JobStatus],
    },
    /// A `Link: rel="next"` target as returned in [`JobsPage::next`].
    Next(&'a str),
}

/// One page of a project listing.
#[derive(Debug)]
pub struct ProjectsPage {
    pub projects: Vec<Project>,
    /// Items that were not decodable projects (counted and skipped).
    pub bad_items: usize,
    /// The next page, relative to `/api/v4/` (`Link`, else `X-Next-Page`); the error when
    /// it exists but its `Link` cannot be used, as in [`JobsPage`].
    next: NextLink,
}

impl ProjectsPage {
    /// The next page: `Ok(None)` on the last one, an error when it exists but its `Link`
    /// could not be used.
    pub fn next(&self) -> Result<Option<&str>, ApiError> {
        next_of(&self.next)
    }
}

/// Where a page says its listing goes on: the link, or why it cannot be used.
type NextLink = Result<Option<String>, (&'static str, link::LinkError)>;

fn next_of(next: &NextLink) -> Result<Option<&str>, ApiError> {
    match next {
        Ok(next) => Ok(next.as_deref()),
        Err((endpoint, source)) => Err(ApiError::Link {
            endpoint,
            source: source.clone(),
        }),
    }
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
    observer: Arc<dyn ClientObserver>,
    throttle: throttle::Throttle,
    /// `gitlab.max_clock_skew`.
    max_clock_skew: Duration,
    /// The last `Date` header was more than `max_clock_skew` off (logged on each change).
    clock_off: AtomicBool,
    /// `gitlab.timeout`: the whole of a JSON request; a job log gets more (see `trace`).
    timeout: Duration,
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
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

struct Response {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A request's method, with the form body of a write. The body may hold a secret (a hook's
/// token): it is never logged, and it travels in the body only, never in the URL.
enum Method {
    Get,
    Post(SecretString),
    Put(SecretString),
}

impl Method {
    fn name(&self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post(_) => "POST",
            Self::Put(_) => "PUT",
        }
    }

    /// Whether `e` is worth sending this request again for. A POST is not idempotent: after a
    /// timeout or a 5xx it may have been done, and a second one would make a duplicate; only a
    /// 429 (refused before it was looked at) is sent again.
    fn may_retry(&self, e: &ApiError) -> bool {
        match self {
            Self::Get | Self::Put(_) => e.is_transient(),
            Self::Post(_) => matches!(e, ApiError::RateLimited { .. }),
        }
    }
}

impl GitlabClient {
    pub fn new(
        cfg: &GitlabSettings,
        token: SecretString,
        retry: RetryPolicy,
        observer: Arc<dyn ClientObserver>,
    ) -> Result<Self, ClientBuildError> {
        install_tls_provider();
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
            api_base: cfg.url.api_base().clone(),
            token,
            throttle: throttle::Throttle::new(cfg.max_requests_per_minute, retry.rate_limit_pause)
                .with_max_pause(retry.max_pause),
            retry,
            observer,
            max_clock_skew: cfg.max_clock_skew,
            clock_off: AtomicBool::new(false),
            timeout: cfg.timeout,
        })
    }

    /// Adds the 429 pause served since the last call to `rate_limited_seconds_total`; returns
    /// what it added and when the pause ends, while one runs. Waiting requests call it as
    /// they wait; the checkpoint loop too, so the published page shows a pause growing.
    pub fn count_rate_limited(&self) -> (Duration, Option<tokio::time::Instant>) {
        let served = self.throttle.take_served();
        if !served.is_zero() {
            self.observer.rate_limited(served);
        }
        (served, self.throttle.rate_limited_until())
    }

    /// The URL `GET /projects/:id` asks, for logs (it holds no credentials: validate() keeps
    /// them out of `gitlab.url`, and the token travels in a header).
    pub fn project_url(&self, project: &str) -> String {
        format!("{}projects/{project}", self.api_base)
    }

    /// `GET /projects/:id`.
    pub async fn project(&self, project: &str) -> Result<Project, ApiError> {
        self.get("project", &format!("projects/{project}"), |resp| {
            let p: Project = serde_json::from_str(&String::from_utf8_lossy(&resp.body))
                .map_err(|e| decode_error("project", &e, &resp.body))?;
            // Its path labels every series and log line of the project.
            if !p.is_plausible() {
                return Err(ApiError::Decode {
                    endpoint: "project",
                    message: format!(
                        "implausible path_with_namespace \"{}\"",
                        text::Bounded(&p.path_with_namespace)
                    ),
                });
            }
            Ok(p)
        })
        .await
    }

    /// `GET /projects/:id/jobs/:job_id`; `Ok(None)` when the job is gone (404).
    pub async fn job(&self, project: &str, job_id: u64) -> Result<Option<Job>, ApiError> {
        let rel = format!("projects/{project}/jobs/{job_id}");
        let found = self.get("job", &rel, |resp| {
            let text = String::from_utf8_lossy(&resp.body);
            serde_json::from_str(&text).map_err(|e| {
                // Well-formed but no job: the same answer next time, so not retried.
                if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() {
                    ApiError::BadItem {
                        endpoint: "job",
                        message: text::bounded(&e.to_string()),
                    }
                } else {
                    decode_error("job", &e, &resp.body)
                }
            })
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
        self.get("jobs", &rel, |resp| {
            self.parse_jobs_page("jobs", NextHeaders::Link, &rel, resp)
        })
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
            PipelineJobsRequest::First {
                project,
                pipeline,
                scopes,
            } => {
                let mut q = url::form_urlencoded::Serializer::new(String::new());
                q.append_pair("include_retried", "true");
                q.append_pair("per_page", &PER_PAGE.to_string());
                for s in scopes {
                    q.append_pair("scope[]", s.as_str());
                }
                format!(
                    "projects/{project}/pipelines/{pipeline}/jobs?{}",
                    q.finish()
                )
            }
            PipelineJobsRequest::Next(rel) => rel.to_string(),
        };
        self.get(ENDPOINT, &rel, |resp| {
            // Offset pages: X-Next-Page stands in for a dropped `Link`.
            self.parse_jobs_page(ENDPOINT, NextHeaders::LinkOrXNextPage, &rel, resp)
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
            let (projects, bad_items) = model::decode_projects(&resp.body, PER_PAGE as usize)
                .map_err(|e| match e {
                    model::DecodeError::TooManyItems(max) => ApiError::TooLong { endpoint, max },
                    model::DecodeError::Json(e) => decode_error(endpoint, &e, &resp.body),
                })?;
            // GitLab sends both; a proxy or look-alike that drops `Link` still says X-Next-Page.
            let full = projects.len() + bad_items >= PER_PAGE as usize;
            let how = NextHeaders::LinkOrXNextPage;
            let next = self.next_link(endpoint, how, &rel, &resp.headers, full);
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
        self.request(endpoint, rel, &Method::Get, parse).await
    }

    /// `method` and `parse`, retried as [`Method::may_retry`] allows (bounded, with backoff).
    async fn request<T>(
        &self,
        endpoint: &'static str,
        rel: &str,
        method: &Method,
        parse: impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let url = self
            .url(endpoint, rel)
            .inspect_err(|e| self.observer.api_error(e.kind()))?;
        // A 429 is retried too: the throttle holds every request until GitLab's wait is over.
        self.retrying(
            endpoint,
            || self.request_once(endpoint, url.clone(), method, &parse),
            |e| method.may_retry(e),
        )
        .await
    }

    /// `attempt` again while `retry` says so, bounded and with backoff (`self.retry`); each
    /// retry logged by its kind only: the error itself (with GitLab's message) is logged once,
    /// by the caller, when the retries are used up.
    async fn retrying<T, Fut>(
        &self,
        endpoint: &'static str,
        attempt: impl FnMut() -> Fut,
        retry: impl FnMut(&ApiError) -> bool,
    ) -> Result<T, ApiError>
    where
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let policy = &self.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.retries)
            .with_jitter();
        attempt
            .retry(backoff)
            .when(retry)
            .notify(|e: &ApiError, wait: Duration| {
                // The project, when there is one, is the caller's span (`poll`, `discovery`).
                warn!(
                    endpoint,
                    kind = e.kind(),
                    status = e.status(),
                    wait_ms = wait.as_millis() as u64,
                    "GitLab request failed; retrying"
                );
            })
            .await
    }

    /// `rel` under the API base URL: never anywhere else.
    fn url(&self, endpoint: &'static str, rel: &str) -> Result<url::Url, ApiError> {
        let url = self.api_base.join(rel).map_err(|e| ApiError::Link {
            endpoint,
            source: link::LinkError::Syntax(format!("bad URL \"{}\": {e}", text::Bounded(rel))),
        })?;
        // join() resolves against the base; anything else would mean a crafted path escaped it.
        if url.origin() != self.api_base.origin() || !url.path().starts_with(self.api_base.path()) {
            return Err(ApiError::Link {
                endpoint,
                source: link::LinkError::NotApi(text::bounded(rel)),
            });
        }
        Ok(url)
    }

    async fn request_once<T>(
        &self,
        endpoint: &'static str,
        url: url::Url,
        method: &Method,
        parse: &impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = self.send(endpoint, url, method).await;
        let status = match &result {
            Ok(r) => Some(r.status.as_u16()),
            Err(e) => e.status(),
        };
        self.observer
            .request(endpoint, status, started.elapsed().as_secs_f64());
        // A body that does not decode counts as a failed request too (and is retried).
        let result = result.and_then(parse);
        if let Err(e) = &result {
            self.observer.api_error(e.kind());
        }
        result
    }

    async fn send(
        &self,
        endpoint: &'static str,
        url: url::Url,
        method: &Method,
    ) -> Result<Response, ApiError> {
        let (status, headers, resp) = self.open(endpoint, url, method).await?;
        let body = read_capped(resp)
            .await
            .map_err(|message| ApiError::Transport { endpoint, message })?;
        self.answer(endpoint, status, headers, body)
    }

    /// Sends a request through the throttle and reads its head: the status, the headers
    /// (GitLab's clock checked, `RateLimit-Remaining` reported), and the body still unread.
    async fn open(
        &self,
        endpoint: &'static str,
        url: url::Url,
        method: &Method,
    ) -> Result<(StatusCode, HeaderMap, reqwest::Response), ApiError> {
        self.open_within(endpoint, url, method, self.timeout).await
    }

    /// [`Self::open`] with the whole request (body included) allowed `timeout`.
    async fn open_within(
        &self,
        endpoint: &'static str,
        url: url::Url,
        method: &Method,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, reqwest::Response), ApiError> {
        let mut token =
            HeaderValue::from_str(self.token.expose_secret()).map_err(|_| ApiError::Transport {
                endpoint,
                message: "the token contains characters not allowed in an HTTP header".into(),
            })?;
        token.set_sensitive(true);
        self.throttle
            .wait(|| {
                self.count_rate_limited();
            })
            .await;
        debug!(endpoint, path = url.path(), "{}", method.name());
        let form = |req: reqwest::RequestBuilder, body: &SecretString| {
            req.header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body.expose_secret().to_string())
        };
        let req = match method {
            Method::Get => self.http.get(url),
            Method::Post(body) => form(self.http.post(url), body),
            Method::Put(body) => form(self.http.put(url), body),
        };
        let resp = req
            .timeout(timeout)
            .header("PRIVATE-TOKEN", token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport_error(endpoint, &e))?;
        let status = resp.status();
        let mut headers = resp.headers().clone();
        self.check_clock(&mut headers);
        if let Some(remaining) = header_f64(&headers, "ratelimit-remaining") {
            self.observer.rate_limit_remaining(remaining);
        }
        Ok((status, headers, resp))
    }

    /// What an answer means: a 429 pauses every request, an error status becomes its
    /// [`ApiError`], a success goes back with its headers and `body`.
    fn answer(
        &self,
        endpoint: &'static str,
        status: StatusCode,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Response, ApiError> {
        let remaining = header_f64(&headers, "ratelimit-remaining");
        if status == StatusCode::TOO_MANY_REQUESTS {
            let (retry_after, capped) = retry_after(&headers);
            if capped {
                warn!(endpoint, retry_after = %raw_header(&headers, "retry-after"),
                    ratelimit_reset = %raw_header(&headers, "ratelimit-reset"),
                    max_pause_s = throttle::MAX_PAUSE.as_secs(),
                    "GitLab asked for a longer pause than allowed; pausing for the maximum");
            }
            // Counted as it is served (`count_rate_limited`), not in one lump now.
            let paused = self.throttle.rate_limited(retry_after);
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
            let grown = self.throttle.remaining(
                remaining,
                header_f64(&headers, "ratelimit-limit"),
                reset_in(&headers),
            );
            if remaining < 1.0 && !grown.is_zero() {
                warn!(endpoint, pause_s = grown.as_secs_f64(),
                    ratelimit_reset = %raw_header(&headers, "ratelimit-reset"),
                    "GitLab's rate-limit window is used up (RateLimit-Remaining: 0): all requests paused until its reset");
            }
        }
        if !status.is_success() {
            // The token out before the message is cut to size: a cut one would show its start.
            let body = redact(&body, self.token.expose_secret());
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

impl GitlabClient {
    /// A `Date` header more than `gitlab.max_clock_skew` off the local clock (a server in year
    /// 9999 would make every job look too old to count) is dropped, so the local clock is used
    /// instead; counted (`clock_skew`) per response, logged when this starts or stops.
    fn check_clock(&self, headers: &mut HeaderMap) {
        let Some(at) = server_time(headers) else {
            return;
        };
        let off = (at - Utc::now())
            .abs()
            .to_std()
            .map_or(true, |d| d > self.max_clock_skew);
        if off {
            self.observer.api_error("clock_skew");
            if !self.clock_off.swap(true, Ordering::Relaxed) {
                warn!(date = %raw_header(headers, "date"), max_clock_skew = %humantime::format_duration(self.max_clock_skew),
                    "GitLab's clock (Date header) is off the local clock by more than gitlab.max_clock_skew; using the local clock");
            }
            headers.remove(reqwest::header::DATE);
        } else if self.clock_off.swap(false, Ordering::Relaxed) {
            warn!("GitLab's clock (Date header) agrees with the local clock again");
        }
    }

    /// Where the listing answered by `headers` for `rel` goes on ([`pager::next_page`]). A
    /// `Link` that cannot be read after a partial page is taken as the last page: logged,
    /// counted (`link`) and ignored, so the cycle goes on. One that cannot be used on a full
    /// page (or leaves the API) is counted here, once per page; only a caller that needs the
    /// next page fails on it.
    fn next_link(
        &self,
        endpoint: &'static str,
        how: NextHeaders,
        rel: &str,
        headers: &HeaderMap,
        full: bool,
    ) -> NextLink {
        let found = pager::next_page(how, rel, headers, full);
        if let Some(error) = found.ignored {
            let link = headers
                .get(reqwest::header::LINK)
                .map_or_else(String::new, |v| text::bounded_bytes(v.as_bytes()));
            warn!(endpoint, %error, %link,
                "unreadable Link header after a partial page; taken as the last page");
            self.observer.api_error("link");
        }
        found.next.map_err(|source| {
            self.observer.api_error("link");
            (endpoint, source)
        })
    }

    fn parse_jobs_page(
        &self,
        endpoint: &'static str,
        how: NextHeaders,
        rel: &str,
        resp: Response,
    ) -> Result<JobsPage, ApiError> {
        let (jobs, bad_items) =
            model::decode_jobs(&resp.body, MAX_JOB_PAGE_ITEMS).map_err(|e| match e {
                model::DecodeError::Json(e) => decode_error(endpoint, &e, &resp.body),
                model::DecodeError::TooManyItems(max) => ApiError::TooLong { endpoint, max },
            })?;
        let full = jobs.len() + bad_items >= PER_PAGE as usize;
        let next = self.next_link(endpoint, how, rel, &resp.headers, full);
        Ok(JobsPage {
            jobs,
            bad_items,
            next,
            server_time: server_time(&resp.headers),
        })
    }
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
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the body failed"
    } else {
        "sending the request failed"
    };
    describe_chain(what, std::error::Error::source(e))
}

/// `what`, then every cause, bounded ([`text::bounded`]): causes are not ours to size (a
/// rustls certificate-name error lists every name on the server's certificate).
fn describe_chain(what: &str, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut msg = what.to_string();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    text::bounded(&msg)
}

fn decode_error(endpoint: &'static str, e: &serde_json::Error, body: &[u8]) -> ApiError {
    ApiError::Decode {
        endpoint,
        message: format!(
            "{} (body starts \"{}\")",
            text::bounded(&e.to_string()),
            text::bounded_bytes(body)
        ),
    }
}

/// `body` with every occurrence of `token` replaced by `<redacted>` (an error body that echoes
/// it: its message reaches logs, the status page and `--check-gitlab`).
fn redact<'a>(body: &'a [u8], token: &str) -> std::borrow::Cow<'a, [u8]> {
    let t = token.as_bytes();
    if t.is_empty() || !body.windows(t.len()).any(|w| w == t) {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.windows(t.len()).position(|w| w == t) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"<redacted>");
        rest = &rest[at + t.len()..];
    }
    out.extend_from_slice(rest);
    std::borrow::Cow::Owned(out)
}

/// GitLab's error bodies: `{"message": …}` or `{"error": …, "error_description": …}`, bounded
/// and escaped ([`text::bounded`]).
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let pick = |k: &str| {
            v.get(k)
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
        };
        match (pick("error"), pick("error_description"), pick("message")) {
            (Some(e), Some(d), _) => return text::bounded(&format!("{e}: {d}")),
            (_, _, Some(m)) | (Some(m), None, None) => return text::bounded(&m),
            _ => {}
        }
    }
    text::bounded_bytes(body)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A cause as long as a certificate's list of names: the transport error text is bounded.
    #[test]
    fn transport_error_text_is_bounded() {
        #[derive(Debug)]
        struct Names(String);
        impl std::fmt::Display for Names {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Names {}
        let names: Vec<String> = (0..2000).map(|i| format!("host{i}.example.com")).collect();
        let cause = Names(format!(
            "invalid peer certificate: certificate not valid for name \"gitlab.example.com\"; certificate is only valid for {}",
            names.join(", ")
        ));
        let text = describe_chain("connection failed", Some(&cause));
        assert!(
            text.starts_with("connection failed: invalid peer certificate"),
            "{text}"
        );
        assert!(text.len() < 400, "{} bytes", text.len());
        assert!(!text.contains("host1999"), "{text}");
    }
}

/// The client against a hostile GitLab (the simulator's raw faults and hostile modes).
#[cfg(test)]
mod hostile_tests;
