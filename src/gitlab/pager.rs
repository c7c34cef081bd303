//! One pager for every GitLab listing: the job list (keyset), `scope[]` listings, a pipeline's
//! job list and the project listings (offset or keyset).
//!
//! Where the next page is comes from the answer's headers ([`next_page`]): `Link: rel="next"`
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

/// `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true` (offset).
#[derive(Debug, Clone, Copy)]
pub struct PipelineJobList<'a> {
    pub client: &'a GitlabClient,
    pub project: &'a str,
    pub pipeline: u64,
}

impl PageSource for PipelineJobList<'_> {
    type Page = JobsPage;
    async fn fetch(&self, cursor: Option<&str>) -> Result<JobsPage, ApiError> {
        let req = match cursor {
            None => PipelineJobsRequest::First {
                project: self.project,
                pipeline: self.pipeline,
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
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

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
    fn next_page_reads_link_then_x_next_page_where_the_listing_allows() {
        let rel = "groups/7/projects?page=1&per_page=100";
        let offset = headers(&[("x-next-page", "2")]);
        assert_eq!(
            next_page(NextHeaders::LinkOrXNextPage, rel, &offset, true).next,
            Ok(Some("groups/7/projects?per_page=100&page=2".into()))
        );
        // The keyset job list never follows X-Next-Page.
        assert_eq!(
            next_page(NextHeaders::Link, rel, &offset, true).next,
            Ok(None)
        );
        // Link wins over X-Next-Page; its host is dropped, its path kept.
        let both = headers(&[
            ("x-next-page", "2"),
            (
                "link",
                "<https://public.example/api/v4/groups/7/projects?cursor=abc>; rel=\"next\"",
            ),
        ]);
        assert_eq!(
            next_page(NextHeaders::LinkOrXNextPage, rel, &both, true).next,
            Ok(Some("groups/7/projects?cursor=abc".into()))
        );
    }

    #[test]
    fn a_foreign_link_is_refused_on_any_page() {
        let h = headers(&[("link", "<https://evil.example/steal?x=1>; rel=\"next\"")]);
        for full in [true, false] {
            let found = next_page(NextHeaders::Link, "projects/1/jobs", &h, full);
            assert!(matches!(found.next, Err(LinkError::NotApi(_))), "{found:?}");
        }
        // Garbage after a partial page is "no next page", reported; on a full page an error.
        let h = headers(&[("link", "garbage")]);
        let found = next_page(NextHeaders::Link, "projects/1/jobs", &h, false);
        assert_eq!(found.next, Ok(None));
        assert!(found.ignored.is_some());
        let found = next_page(NextHeaders::Link, "projects/1/jobs", &h, true);
        assert!(matches!(found.next, Err(LinkError::Syntax(_))));
    }

    /// A page of the fake listing: its number and where it says the listing goes on.
    #[derive(Debug)]
    struct Page {
        n: u32,
        next: Result<Option<String>, LinkError>,
    }

    impl Paged for Page {
        fn next_link(&self) -> Result<Option<&str>, ApiError> {
            match &self.next {
                Ok(n) => Ok(n.as_deref()),
                Err(e) => Err(ApiError::Link {
                    endpoint: "fake",
                    source: e.clone(),
                }),
            }
        }
    }

    /// Answers each cursor (`l` for the first page) with the headers given for it, through
    /// [`next_page`] as the client does; logs the cursors asked.
    #[derive(Default)]
    struct Fake {
        pages: HashMap<String, (u32, HeaderMap)>,
        how: Option<NextHeaders>,
        asked: Mutex<Vec<String>>,
        fail: Mutex<usize>,
    }

    impl Fake {
        fn page(mut self, cursor: &str, n: u32, h: &[(&'static str, &str)]) -> Self {
            self.pages.insert(cursor.into(), (n, headers(h)));
            self
        }
        fn asked(&self) -> Vec<String> {
            self.asked.lock().unwrap().clone()
        }
    }

    impl PageSource for &Fake {
        type Page = Page;
        async fn fetch(&self, cursor: Option<&str>) -> Result<Page, ApiError> {
            let rel = cursor.unwrap_or("l");
            self.asked.lock().unwrap().push(rel.to_string());
            {
                let mut fail = self.fail.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(ApiError::Transport {
                        endpoint: "fake",
                        message: "down".into(),
                    });
                }
            }
            let (n, h) = self.pages.get(rel).expect("a page the test set up");
            let how = self.how.unwrap_or(NextHeaders::Link);
            Ok(Page {
                n: *n,
                next: next_page(how, rel, h, true).next,
            })
        }
    }

    fn link(rel: &str) -> String {
        format!("<https://gitlab.example/api/v4/{rel}>; rel=\"next\"")
    }

    async fn read_all<S: PageSource<Page = Page>>(
        pager: &mut Pager<S>,
    ) -> (Vec<u32>, Option<PageError>) {
        let mut got = Vec::new();
        loop {
            match pager.next().await {
                Ok(Some(p)) => got.push(p.n),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[tokio::test]
    async fn follows_links_to_the_last_page() {
        let fake = Fake::default()
            .page("l", 1, &[("link", &link("l?c=2"))])
            .page("l?c=2", 2, &[("link", &link("l?c=3"))])
            .page("l?c=3", 3, &[]);
        let mut pager = Pager::new(&fake, 10);
        let (got, err) = read_all(&mut pager).await;
        assert_eq!(got, [1, 2, 3]);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(pager.pages(), 3);
        assert_eq!(pager.cursor(), Some("l?c=3"));
        assert!(pager.next().await.unwrap().is_none(), "stays at the end");
        assert_eq!(fake.asked().len(), 3);
    }

    #[tokio::test]
    async fn offset_listings_follow_x_next_page() {
        let mut fake = Fake::default().page("l", 1, &[("x-next-page", "2")]).page(
            "l?page=2",
            2,
            &[("x-next-page", "")],
        );
        fake.how = Some(NextHeaders::LinkOrXNextPage);
        let (got, err) = read_all(&mut Pager::new(&fake, 10)).await;
        assert_eq!(got, [1, 2]);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(fake.asked(), ["l", "l?page=2"]);
    }

    #[tokio::test]
    async fn a_link_loop_ends_the_listing() {
        let fake = Fake::default()
            .page("l", 1, &[("link", &link("l?c=2"))])
            .page("l?c=2", 2, &[("link", &link("l?c=3"))])
            .page("l?c=3", 3, &[("link", &link("l?c=2"))]);
        let (got, err) = read_all(&mut Pager::new(&fake, 100)).await;
        assert_eq!(got, [1, 2, 3]);
        assert!(matches!(err, Some(PageError::Loop)), "{err:?}");
        assert_eq!(fake.asked().len(), 3, "the page is not asked twice");
        assert_eq!(PageError::Loop.uncounted_kind(), Some("pagination_loop"));
    }

    #[tokio::test]
    async fn the_cap_ends_the_listing_with_where_to_resume() {
        let fake = Fake::default()
            .page("l", 1, &[("link", &link("l?c=2"))])
            .page("l?c=2", 2, &[("link", &link("l?c=3"))])
            .page("l?c=3", 3, &[]);
        let mut pager = Pager::new(&fake, 2);
        let (got, err) = read_all(&mut pager).await;
        assert_eq!(got, [1, 2]);
        match err {
            Some(PageError::Capped { pages: 2, resume }) => {
                assert_eq!(resume.as_deref(), Some("l?c=3"));
                // A later pager goes on from there, with its own budget.
                let mut later = Pager::resume(&fake, resume, 5);
                assert_eq!(read_all(&mut later).await.0, [3]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fake.asked(), ["l", "l?c=2", "l?c=3"]);
        // No budget at all: nothing is sent, and the start is where to resume.
        let mut none = Pager::resume(&fake, Some("l?c=2".into()), 0);
        assert!(matches!(
            none.next().await,
            Err(PageError::Capped { pages: 0, resume: Some(r) }) if r == "l?c=2"
        ));
        assert_eq!(fake.asked().len(), 3);
    }

    #[tokio::test]
    async fn the_caller_stops_early_and_an_unusable_link_fails_only_going_on() {
        let fake = Fake::default()
            .page(
                "l",
                1,
                &[("link", "<https://evil.example/steal>; rel=\"next\"")],
            )
            .page("l?c=2", 2, &[("link", &link("l?c=3"))]);
        // The caller has what it needs after one page: nothing more is asked, nothing fails.
        let mut pager = Pager::new(&fake, 10);
        assert_eq!(pager.next().await.unwrap().map(|p| p.n), Some(1));
        drop(pager);
        assert_eq!(fake.asked(), ["l"]);
        // Going on from a page whose Link leaves the API: refused, no request sent.
        let mut pager = Pager::new(&fake, 10);
        pager.next().await.unwrap();
        let e = pager.next().await.expect_err("foreign link");
        assert!(
            matches!(
                &e,
                PageError::Link(ApiError::Link {
                    source: LinkError::NotApi(_),
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(fake.asked(), ["l", "l"]);
        assert!(pager.next().await.unwrap().is_none(), "the listing ended");
    }

    #[tokio::test]
    async fn a_failed_request_is_sent_again_within_the_cap_and_restart_reads_the_top() {
        let fake = Fake::default()
            .page("l", 1, &[("link", &link("l?c=2"))])
            .page("l?c=2", 2, &[]);
        *fake.fail.lock().unwrap() = 1;
        let mut pager = Pager::resume(&fake, Some("l?c=2".into()), 3);
        assert!(matches!(pager.next().await, Err(PageError::Api(_))));
        assert_eq!(pager.cursor(), Some("l?c=2"), "the failed request's cursor");
        // The saved cursor is given up: from the top, the failed request still counted.
        pager.restart();
        let (got, err) = read_all(&mut pager).await;
        assert_eq!(got, [1, 2]);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(pager.pages(), 3);
        assert_eq!(fake.asked(), ["l?c=2", "l", "l?c=2"]);
    }
}
