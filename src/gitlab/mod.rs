//! The GitLab API client: one shared `reqwest` client with timeouts, the token in a header that is
//! marked sensitive, bounded retries with backoff, capped bodies, and every request reported to a
//! [`ClientObserver`] (the exporter's metrics).

pub mod link;
pub mod observer;
pub mod pager;
pub mod throttle;

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

use crate::config::GitlabConfig;
use crate::model::{self, text};
use pager::NextHeaders;
// The model's types, where callers long found them.
pub use crate::model::{Job, JobRunner, JobStatus, Project};
pub use observer::ClientObserver;

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
        observer: Arc<dyn ClientObserver>,
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
            observer,
            max_clock_skew: cfg.max_clock_skew,
            clock_off: AtomicBool::new(false),
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
        let url = self
            .url(endpoint, rel)
            .inspect_err(|e| self.observer.api_error(e.kind()))?;
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
            // Only the kind: the error itself (with GitLab's message) is logged once, by the
            // caller, when the retries are used up.
            .notify(|e: &ApiError, wait: Duration| {
                warn!(endpoint, kind = e.kind(), status = ?e.status(), wait_ms = wait.as_millis() as u64, "GitLab request failed; retrying");
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

    async fn get_once<T>(
        &self,
        endpoint: &'static str,
        url: url::Url,
        parse: &impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let started = Instant::now();
        let result = self.send(endpoint, url).await;
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
        let mut headers = resp.headers().clone();
        self.check_clock(&mut headers);
        let remaining = header_f64(&headers, "ratelimit-remaining");
        if let Some(remaining) = remaining {
            self.observer.rate_limit_remaining(remaining);
        }
        let body = read_capped(resp)
            .await
            .map_err(|message| ApiError::Transport { endpoint, message })?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            let (retry_after, capped) = retry_after(&headers);
            if capped {
                warn!(endpoint, retry_after = %raw_header(&headers, "retry-after"),
                    ratelimit_reset = %raw_header(&headers, "ratelimit-reset"),
                    max_pause_s = throttle::MAX_PAUSE.as_secs(),
                    "GitLab asked for a longer pause than allowed; pausing for the maximum");
            }
            let paused = self.throttle.rate_limited(retry_after);
            self.observer.rate_limited(paused);
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

/// A header's raw value for a log line (bounded, escaped).
fn raw_header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map_or_else(String::new, |v| text::bounded_bytes(v.as_bytes()))
}

/// `Retry-After` in seconds from GitLab's now: delay-seconds or an HTTP date.
fn retry_after_secs(headers: &HeaderMap) -> Option<f64> {
    let text = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(text).ok()?.into();
    let now = server_time(headers).unwrap_or_else(Utc::now);
    Some(((at - now).num_milliseconds() as f64 / 1000.0).max(0.0))
}

/// The later of `Retry-After` and `RateLimit-Reset` (unix time), as a wait from now, at most
/// [`throttle::MAX_PAUSE`] (a wait of a day would stop the exporter for a day); `true` when
/// GitLab asked for more.
fn retry_after(headers: &HeaderMap) -> (Option<Duration>, bool) {
    let after = retry_after_secs(headers);
    let reset = reset_in(headers).map(|d| d.as_secs_f64());
    let wait = match (after, reset) {
        (Some(a), Some(r)) => Some(a.max(r)),
        (a, r) => a.or(r),
    };
    let max = throttle::MAX_PAUSE.as_secs_f64();
    (
        wait.map(|s| Duration::from_secs_f64(s.min(max))),
        wait.is_some_and(|s| s > max),
    )
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
        assert_eq!(retry_after(&h).0, Some(Duration::from_secs(30)));
        h.remove("ratelimit-reset");
        assert_eq!(retry_after(&h).0, Some(Duration::from_secs(5)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h).0, None);
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
mod hostile_tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::simulator::{
        Fault, Hostile, ProjectSpec, SimClock, SimHandle, Simulator, World, WorldSpec,
    };

    const TOKEN: &str = "glpat-hostile-test";

    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Logs {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    impl std::io::Write for Logs {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
        type Writer = Logs;
        fn make_writer(&'a self) -> Logs {
            self.clone()
        }
    }

    /// Captures this thread's log lines (the tests run on a current-thread runtime).
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    struct Setup {
        sim: Simulator,
        client: GitlabClient,
        metrics: Arc<Metrics>,
        _handle: SimHandle,
    }

    /// A simulator (clock at the real now) with project 1 holding a few jobs, and a client
    /// retrying `retries` times without real waits.
    async fn setup(retries: usize) -> Setup {
        let now = Utc::now().timestamp_millis();
        let spec = WorldSpec::new(
            vec![ProjectSpec {
                id: 1,
                path: "g/p".into(),
                pipelines_per_hour: 2.0,
            }],
            now - 3_600_000,
            now,
        );
        let sim = Simulator::new(
            World::generate(&spec, 7),
            SimClock::manual(now),
            TOKEN.into(),
        );
        let handle = sim.spawn().await.unwrap();
        let cfg = crate::config::Config::new(&handle.base_url, TOKEN.to_string().into(), vec![]);
        let mut gitlab = cfg.gitlab.clone();
        gitlab.max_requests_per_minute = 1e9;
        gitlab.timeout = Duration::from_secs(5);
        let metrics =
            Arc::new(Metrics::new(&Default::default(), usize::MAX, &Default::default()).unwrap());
        let retry = RetryPolicy {
            retries,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            rate_limit_pause: Duration::from_millis(1),
        };
        let client =
            GitlabClient::new(&gitlab, TOKEN.to_string().into(), retry, metrics.clone()).unwrap();
        Setup {
            sim,
            client,
            metrics,
            _handle: handle,
        }
    }

    /// `gitlab_jobs_exporter_<family>` with these labels, from the rendered page.
    fn value(metrics: &Metrics, series: &str) -> f64 {
        let page = metrics.render().unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    fn errors(metrics: &Metrics, kind: &str) -> f64 {
        value(
            metrics,
            &format!("gitlab_jobs_exporter_api_errors_total{{kind=\"{kind}\"}}"),
        )
    }

    fn raw(status: u16, headers: &[(&str, &[u8])], body: &[u8]) -> Fault {
        Fault::Raw {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_string(), v.to_vec()))
                .collect(),
            body: body.to_vec(),
        }
    }

    #[tokio::test]
    async fn error_bodies_reach_logs_and_errors_bounded_escaped_and_once() {
        let s = setup(2).await;
        let (logs, _guard) = capture();
        let huge =
            serde_json::to_vec(&serde_json::json!({"message": "A".repeat(8 << 20)})).unwrap();
        for _ in 0..3 {
            s.sim
                .push_fault(raw(500, &[("content-type", b"application/json")], &huge));
        }
        let e = s.client.project("1").await.expect_err("500 three times");
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
        let forged = b"bad gateway\n2026-12-02T00:00:00.000Z ERROR forged line\x1b[2J";
        for _ in 0..3 {
            s.sim
                .push_fault(raw(502, &[("content-type", b"text/plain")], forged));
        }
        let e = s.client.project("1").await.expect_err("502 three times");
        let shown = e.to_string();
        assert!(
            !shown.contains('\n') && !shown.contains('\x1b'),
            "{shown:?}"
        );
        assert!(shown.contains(r"bad gateway\n2026-12-02"), "{shown:?}");
        // The retries log the kind only: the message is the caller's to log, once.
        let text = logs.text();
        assert!(text.len() < 2048, "{} bytes of log", text.len());
        assert!(!text.contains("forged") && !text.contains("AAAA"), "{text}");
        assert_eq!(text.matches("retrying").count(), 4, "{text}");
    }

    #[tokio::test]
    async fn a_single_job_that_does_not_decode_is_a_bad_job_not_retried() {
        let s = setup(3).await;
        s.sim.push_fault(raw(
            200,
            &[("content-type", b"application/json")],
            br#"{"id": 5, "status": "success", "name": "\ud800"}"#,
        ));
        let e = s.client.job("1", 5).await.expect_err("bad job");
        assert!(matches!(e, ApiError::BadItem { .. }), "{e}");
        assert_eq!(
            errors(&s.metrics, "bad_job"),
            1.0,
            "counted once, not retried"
        );
        // A truncated body is still a transient decode error (retried, and then it answers).
        s.sim.push_fault(Fault::MalformedJson);
        assert!(s.client.job("1", 5).await.is_ok());
        assert_eq!(errors(&s.metrics, "decode"), 1.0);
    }

    #[tokio::test]
    async fn a_project_path_that_would_forge_log_lines_is_refused() {
        let s = setup(0).await;
        s.sim.push_fault(raw(
            200,
            &[("content-type", b"application/json")],
            br#"{"id": 1, "path_with_namespace": "g/p\n2026-12-02T00:00:00Z  INFO forged"}"#,
        ));
        let e = s.client.project("1").await.expect_err("refused");
        assert!(matches!(e, ApiError::Decode { .. }), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
        assert_eq!(errors(&s.metrics, "decode"), 1.0);
    }

    #[tokio::test]
    async fn an_unreadable_link_after_a_partial_page_is_the_last_page() {
        let s = setup(0).await;
        let first = || PageRequest::First {
            project: "1",
            scopes: &[],
        };
        let links: [&[u8]; 3] = [b"garbage", b"", b"\xff\xfe"];
        for link in links {
            s.sim.clear_hostile();
            s.sim.add_hostile(Hostile::ListLink(Some(link.to_vec())));
            let before = errors(&s.metrics, "link");
            let page = s.client.jobs_page(first()).await;
            let page = page.unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(link)));
            assert!(matches!(page.next(), Ok(None)) && !page.jobs.is_empty());
            // An empty Link is no Link at all; the others are counted.
            let counted = errors(&s.metrics, "link") - before;
            assert!(counted <= 1.0);
            assert!(link.is_empty() || counted == 1.0, "{link:?}");
        }
        // A full page with an unreadable Link: the next page exists, so needing it is an
        // error; the page itself is kept (a cycle that needs no more pages goes on).
        s.sim
            .add_hostile(Hostile::JobsExtraItems(vec![b"{}".to_vec(); 100]));
        let before = errors(&s.metrics, "link");
        let mut page = s.client.jobs_page(first()).await.expect("full page kept");
        assert!(!page.jobs.is_empty());
        let e = page
            .take_next()
            .expect_err("the next page is needed but unknown");
        assert!(matches!(e, ApiError::Link { .. }), "{e}");
        assert_eq!(errors(&s.metrics, "link") - before, 1.0);
        // Far longer than asked: refused whole, not retried.
        s.sim.clear_hostile();
        s.sim.add_hostile(Hostile::JobsExtraItems(vec![
            b"{}".to_vec();
            MAX_JOB_PAGE_ITEMS
        ]));
        let e = s.client.jobs_page(first()).await.expect_err("too long");
        assert!(matches!(e, ApiError::TooLong { .. }), "{e}");
        assert_eq!(errors(&s.metrics, "page_too_long"), 1.0);
    }

    #[tokio::test]
    async fn a_link_outside_the_api_is_counted() {
        let s = setup(0).await;
        s.sim.add_hostile(Hostile::ListLink(Some(
            b"<https://evil.example/steal?x=1>; rel=\"next\"".to_vec(),
        )));
        // The page is kept; following its Link is refused.
        let mut page = s
            .client
            .jobs_page(PageRequest::First {
                project: "1",
                scopes: &[],
            })
            .await
            .expect("the page itself is fine");
        let e = page.take_next().expect_err("outside the API");
        assert!(matches!(e, ApiError::Link { .. }), "{e}");
        assert_eq!(errors(&s.metrics, "link"), 1.0);
        // A crafted relative target that resolves outside the API base is refused and counted.
        let e = s
            .client
            .jobs_page(PageRequest::Next("../../../admin?x=1"))
            .await
            .expect_err("escapes the base");
        assert!(matches!(e, ApiError::Link { .. }), "{e}");
        assert_eq!(errors(&s.metrics, "link"), 2.0);
    }

    #[tokio::test]
    async fn bad_items_are_skipped_and_counted_not_fatal() {
        let s = setup(0).await;
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        s.sim.add_hostile(Hostile::JobsExtraItems(vec![
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
            br#"{"id": 1, "status": "success", "name": "\ud800"}"#.to_vec(),
            br#"{"id": 2, "status": "success", "duration": 1e400}"#.to_vec(),
            format!(r#"{{"id": 3, "status": "success", "runner": {deep}}}"#).into_bytes(),
        ]));
        let page = s
            .client
            .jobs_page(PageRequest::First {
                project: "1",
                scopes: &[],
            })
            .await
            .expect("page decodes");
        assert_eq!(page.bad_items, 4);
        assert!(!page.jobs.is_empty());
        assert!(page.jobs.iter().all(|j| j.id > 3));
    }

    #[tokio::test]
    async fn no_rate_limit_pauses_longer_than_ten_minutes() {
        let s = setup(0).await;
        let (logs, _guard) = capture();
        s.sim.push_fault(raw(
            429,
            &[
                ("retry-after", b"1000000000"),
                ("ratelimit-reset", b"1e300"),
            ],
            b"Retry later\n",
        ));
        let e = s.client.project("1").await.expect_err("429");
        match e {
            ApiError::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(throttle::MAX_PAUSE));
            }
            other => panic!("{other}"),
        }
        assert_eq!(
            value(
                &s.metrics,
                "gitlab_jobs_exporter_rate_limited_seconds_total"
            ),
            600.0
        );
        let text = logs.text();
        assert!(
            text.contains("1000000000") && text.contains("1e300"),
            "raw headers logged: {text}"
        );
    }

    #[tokio::test]
    async fn a_used_up_window_with_a_far_reset_logs_its_pause() {
        let s = setup(0).await;
        let (logs, _guard) = capture();
        let reset = (Utc::now().timestamp() + 1_000_000).to_string();
        s.sim.push_fault(raw(
            200,
            &[
                ("content-type", b"application/json"),
                ("ratelimit-remaining", b"0"),
                ("ratelimit-limit", b"600"),
                ("ratelimit-reset", reset.as_bytes()),
            ],
            br#"{"id": 1, "path_with_namespace": "g/p"}"#,
        ));
        s.client.project("1").await.expect("answered");
        let text = logs.text();
        assert!(
            text.contains("used up") && text.contains("pause_s=600"),
            "{text}"
        );
    }

    #[test]
    fn retry_after_as_an_http_date_and_capped_resets() {
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Wed, 25 Nov 2026 08:50:00 GMT"),
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 25 Nov 2026 08:52:00 GMT"),
        );
        assert_eq!(retry_after(&h), (Some(Duration::from_secs(120)), false));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Tue, 24 Nov 2026 08:52:00 GMT"),
        );
        assert_eq!(retry_after(&h), (Some(Duration::ZERO), false));
        h.remove("retry-after");
        h.insert("ratelimit-reset", HeaderValue::from_static("1e300"));
        assert_eq!(retry_after(&h), (Some(throttle::MAX_PAUSE), true));
        h.insert("retry-after", HeaderValue::from_static("1000000000"));
        assert_eq!(retry_after(&h), (Some(throttle::MAX_PAUSE), true));
    }

    #[tokio::test]
    async fn a_server_clock_far_off_is_ignored_counted_and_logged_once() {
        let s = setup(0).await;
        let (logs, _guard) = capture();
        for _ in 0..2 {
            s.sim.push_fault(raw(
                200,
                &[
                    ("content-type", b"application/json"),
                    ("date", b"Fri, 31 Dec 9999 23:59:59 GMT"),
                ],
                b"[]",
            ));
        }
        let first = || PageRequest::First {
            project: "1",
            scopes: &[],
        };
        for _ in 0..2 {
            let page = s.client.jobs_page(first()).await.unwrap();
            assert_eq!(page.server_time, None, "the local clock is used instead");
        }
        assert_eq!(errors(&s.metrics, "clock_skew"), 2.0);
        // The simulator's own clock is the real one: believed again, and said so.
        let page = s.client.jobs_page(first()).await.unwrap();
        assert!(page.server_time.is_some());
        let text = logs.text();
        assert_eq!(
            text.matches("off the local clock by more than").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("agrees with the local clock again").count(),
            1,
            "{text}"
        );
    }
}
