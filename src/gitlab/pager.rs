//! One pager for every GitLab listing: the job list (keyset), `scope[]` listings, a pipeline's
//! job list and the project listings (offset or keyset).
//!
//! Where the next page is comes from the answer's headers (`next_page`): `Link: rel="next"`
//! (keyset and offset), else, for listings that may be offset-paginated, `X-Next-Page` (a proxy
//! or look-alike that drops `Link` still says it). A `Link` keeps only its path under
//! `/api/v4/` ([`super::link`]), so the token never travels to the host GitLab names in it.
//!
//! The [`Pager`] holds the one set of bounds every listing shares: a page cap, a visited set
//! against links that lead back, and one error type ([`PageError`]). The caller decides after
//! each page whether to go on: it calls [`Pager::next`] again, or stops (a job-list read stops
//! when it reaches known territory). A page whose `Link` cannot be used is still handed out;
//! only going on from it fails, so a caller that needs no more pages never fails on it.

use std::collections::HashSet;
use std::future::Future;

use reqwest::header::HeaderMap;
use thiserror::Error;

use super::link::{self, LinkError};
use super::{
    ApiError, GitlabClient, JobsPage, PageRequest, PipelineJobsRequest, ProjectsPage,
    ProjectsRequest,
};
use crate::model::JobStatus;

/// Which headers of an answer say where its listing goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHeaders {
    /// `Link: rel="next"` only: keyset pagination of the job list, where GitLab sends no
    /// `X-Next-Page` (and a stray one must not send the cycle elsewhere).
    Link,
    /// `Link: rel="next"`, else `X-Next-Page` (offset pagination; the project listings).
    LinkOrXNextPage,
}

/// Where an answer says its listing goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// The next page, relative to `/api/v4/`; `None` on the last page. An error when a next
    /// page exists but its `Link` cannot be used.
    pub next: Result<Option<String>, LinkError>,
    /// A `Link` that could not be read on a partial page and was taken as "no next page"
    /// (GitLab gives none after a partial page): the caller logs and counts it.
    pub ignored: Option<LinkError>,
}

/// Where the listing answered by `headers` for the request `rel` goes on. `full`: the page
/// held as many items as asked for. An unreadable `Link` (garbage, not ASCII) after a partial
/// page means no next page; on a full page it is an error, as stopping there could skip items.
/// A `Link` outside `/api/v4/` is refused either way.
pub(crate) fn next_page(how: NextHeaders, rel: &str, headers: &HeaderMap, full: bool) -> Found {
    let mut found = Found {
        next: Ok(None),
        ignored: None,
    };
    if let Some(v) = headers.get(reqwest::header::LINK) {
        let parsed = match v.to_str() {
            Ok(text) => link::next_relative(text),
            Err(e) => Err(LinkError::Syntax(e.to_string())),
        };
        match parsed {
            Err(source @ LinkError::Syntax(_)) if !full => found.ignored = Some(source),
            other => found.next = other,
        }
    }
    if how == NextHeaders::LinkOrXNextPage && matches!(found.next, Ok(None)) {
        found.next = Ok(x_next_page(rel, headers));
    }
    found
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

/// A page of some listing.
pub trait Paged {
    /// The next page: `Ok(None)` on the last one, an error when it exists but its `Link` could
    /// not be used.
    fn next_link(&self) -> Result<Option<&str>, ApiError>;
}

impl Paged for JobsPage {
    fn next_link(&self) -> Result<Option<&str>, ApiError> {
        self.next()
    }
}

impl Paged for ProjectsPage {
    fn next_link(&self) -> Result<Option<&str>, ApiError> {
        self.next()
    }
}

/// A listing the pager reads: one request per page.
pub trait PageSource {
    type Page: Paged;
    /// The page at `cursor` (a link from the page before, relative to `/api/v4/`), or the
    /// listing's first page when `None`.
    fn fetch(
        &self,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<Self::Page, ApiError>> + Send;
}

/// Why a listing stopped before its last page.
#[derive(Debug, Error)]
pub enum PageError {
    /// A request failed (after the client's retries; already counted by the client).
    #[error(transparent)]
    Api(ApiError),
    /// The last page names a next one that cannot be used (unparsable on a full page, outside
    /// the API); counted by the client when it read the page. No request was sent.
    #[error(transparent)]
    Link(ApiError),
    /// A `Link` led back to a page already read in this listing.
    #[error("pagination loop: the Link header pointed back to a page already read")]
    Loop,
    /// `pages` pages were read and more follow: `resume` is where the next one is (`None`:
    /// the listing's first page), for a caller that goes on later.
    #[error("page limit: {pages} pages read and more follow")]
    Capped {
        pages: usize,
        resume: Option<String>,
    },
}

impl PageError {
    /// The endpoint of the request that failed, if one did.
    pub fn endpoint(&self) -> Option<&'static str> {
        match self {
            Self::Api(e) | Self::Link(e) => Some(e.endpoint()),
            Self::Loop | Self::Capped { .. } => None,
        }
    }

    /// The `api_errors_total{kind}` this stop is counted under by the caller that treats it as
    /// an error, when the client has not counted it already.
    pub fn uncounted_kind(&self) -> Option<&'static str> {
        match self {
            Self::Api(_) | Self::Link(_) => None,
            Self::Loop => Some("pagination_loop"),
            Self::Capped { .. } => Some("page_limit"),
        }
    }
}

/// What the pager does on its next call.
#[derive(Debug)]
enum Step {
    /// Read this page (`None`: the first one). Also after a failed request: it is read again.
    Read(Option<String>),
    /// Go on from the page just handed out, as its `Link` says.
    After(Result<Option<String>, ApiError>),
    /// The listing ended (last page, or a stop that going on cannot mend).
    Done,
}

/// Pages through one listing, at most `max_pages` requests (failed ones included), never
/// following a link twice. See the module documentation.
#[derive(Debug)]
pub struct Pager<S> {
    source: S,
    step: Step,
    /// Links followed so far (the starting cursor is not one: nothing led to it).
    visited: HashSet<String>,
    pages: usize,
    max_pages: usize,
    /// The cursor of the last request sent (`None`: the first page).
    cursor: Option<String>,
}

impl<S: PageSource> Pager<S> {
    /// From the listing's first page.
    pub fn new(source: S, max_pages: usize) -> Self {
        Self::resume(source, None, max_pages)
    }

    /// From `cursor` (a link saved earlier: a catch-up cursor, reading on below the top), or
    /// from the first page when `None`.
    pub fn resume(source: S, cursor: Option<String>, max_pages: usize) -> Self {
        Self {
            source,
            step: Step::Read(cursor),
            visited: HashSet::new(),
            pages: 0,
            max_pages,
            cursor: None,
        }
    }

    /// The next page; `Ok(None)` after the last one. Going on from a page checks, in this
    /// order: its `Link` is usable ([`PageError::Link`]), the page cap is not reached
    /// ([`PageError::Capped`], with the link to resume from), the link was not followed before
    /// ([`PageError::Loop`]). A failed request ([`PageError::Api`]) is sent again by the next
    /// call (within the cap); the other errors end the listing.
    pub async fn next(&mut self) -> Result<Option<S::Page>, PageError> {
        let (cursor, followed) = match std::mem::replace(&mut self.step, Step::Done) {
            Step::Done | Step::After(Ok(None)) => return Ok(None),
            Step::After(Err(e)) => return Err(PageError::Link(e)),
            Step::After(Ok(Some(link))) => (Some(link), true),
            Step::Read(cursor) => (cursor, false),
        };
        if self.pages >= self.max_pages {
            self.step = Step::Read(cursor.clone());
            return Err(PageError::Capped {
                pages: self.pages,
                resume: cursor,
            });
        }
        if let Some(link) = cursor.as_ref().filter(|_| followed)
            && !self.visited.insert(link.clone())
        {
            return Err(PageError::Loop);
        }
        self.pages += 1;
        let result = self.source.fetch(cursor.as_deref()).await;
        self.cursor = cursor;
        match result {
            Ok(page) => {
                self.step = Step::After(page.next_link().map(|n| n.map(str::to_string)));
                Ok(Some(page))
            }
            Err(e) => {
                self.step = Step::Read(self.cursor.clone());
                Err(PageError::Api(e))
            }
        }
    }

    /// Requests sent so far (failed ones included): what the listing cost against a budget.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The cursor of the last request sent (`None`: the first page), e.g. to tell a refused
    /// saved cursor from a failing first page.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// Reads from the first page again (a saved cursor GitLab refused): the links followed are
    /// forgotten, the pages already sent still count against the cap.
    pub fn restart(&mut self) {
        self.step = Step::Read(None);
        self.visited.clear();
    }

    pub fn source(&self) -> &S {
        &self.source
    }
}

/// `GET /projects/:id/jobs` (keyset, newest first), optionally restricted to some statuses.
#[derive(Debug, Clone, Copy)]
pub struct JobList<'a> {
    pub client: &'a GitlabClient,
    pub project: &'a str,
    pub scopes: &'a [JobStatus],
}

impl<'a> JobList<'a> {
    /// Every job of `project`, whatever its status.
    pub fn all(client: &'a GitlabClient, project: &'a str) -> Self {
        Self {
            client,
            project,
            scopes: &[],
        }
    }
}

impl PageSource for JobList<'_> {
    type Page = JobsPage;
    async fn fetch(&self, cursor: Option<&str>) -> Result<JobsPage, ApiError> {
        let req = match cursor {
            None => PageRequest::First {
                project: self.project,
                scopes: self.scopes,
            },
            Some(rel) => PageRequest::Next(rel),
        };
        self.client.jobs_page(req).await
    }
}

/// `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true` (offset), optionally
/// restricted to some statuses (`scope[]`).
#[derive(Debug, Clone, Copy)]
pub struct PipelineJobList<'a> {
    pub client: &'a GitlabClient,
    pub project: &'a str,
    pub pipeline: u64,
    pub scopes: &'a [JobStatus],
}

impl PageSource for PipelineJobList<'_> {
    type Page = JobsPage;
    async fn fetch(&self, cursor: Option<&str>) -> Result<JobsPage, ApiError> {
        let req = match cursor {
            None => PipelineJobsRequest::First {
                project: self.project,
                pipeline: self.pipeline,
                scopes: self.scopes,
            },
            Some(rel) => PipelineJobsRequest::Next(rel),
        };
        self.client.pipeline_jobs_page(req).await
    }
}

/// A project listing: `first` is a group's projects or the token's memberships.
#[derive(Debug, Clone)]
pub struct ProjectList<'a> {
    pub client: &'a GitlabClient,
    pub first: ProjectsRequest<'a>,
}

impl PageSource for ProjectList<'_> {
    type Page = ProjectsPage;
    async fn fetch(&self, cursor: Option<&str>) -> Result<ProjectsPage, ApiError> {
        let req = match cursor {
            None => self.first.clone(),
            Some(rel) => ProjectsRequest::Next(rel),
        };
        self.client.projects_page(req).await
    }
}

#[cfg(test)]
mod tests;
