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
