//! Paging helpers every listing of a cycle shares.

use tracing::warn;

use super::PollError;
use crate::gitlab::JobsPage;
use crate::gitlab::pager::{PageError, PageSource, Pager};
use crate::metrics::Metrics;
use crate::project::state::Project;

/// Sanity checks on a page that follows one whose lowest id was `previous_min`: GitLab lists by
/// id descending, at most `PER_PAGE` jobs. Oddities are logged and counted; a page that does
/// not move below the previous one is a pagination loop (an error, so the cycle ends).
pub(super) fn check_page(
    page: &JobsPage,
    previous_min: Option<u64>,
    label: &str,
    metrics: &Metrics,
) -> Result<(), PollError> {
    if page.jobs.len() > crate::gitlab::PER_PAGE as usize {
        warn!(project = %label, jobs = page.jobs.len(), "page longer than asked");
        metrics.api_error("page_too_long");
    }
    if page.jobs.windows(2).any(|w| w[0].id <= w[1].id) {
        warn!(project = %label, "page not in descending id order");
        metrics.api_error("ids_out_of_order");
    }
    if let Some(prev) = previous_min
        && page.jobs.iter().any(|j| j.id >= prev)
    {
        metrics.api_error("pagination_loop");
        return Err(PollError::PaginationLoop);
    }
    Ok(())
}

/// Where a listing stands after asking its pager for a page (see [`next_page`]).
pub(super) enum Step<P> {
    Page(P),
    /// The last page was read.
    End,
    /// The page cap was reached with more to read: where to resume.
    Capped(Option<String>),
}

/// The next page from `pager`, for a caller that stops at the last page or at the cap and
/// fails on anything else: a failed request or an unusable `Link` as it is, a `Link` leading
/// back to a page already read counted as a pagination loop.
pub(super) async fn next_page<S: PageSource>(
    pager: &mut Pager<S>,
    metrics: &Metrics,
) -> Result<Step<S::Page>, PollError> {
    match pager.next().await {
        Ok(Some(page)) => Ok(Step::Page(page)),
        Ok(None) => Ok(Step::End),
        Err(PageError::Capped { resume, .. }) => Ok(Step::Capped(resume)),
        Err(PageError::Api(e) | PageError::Link(e)) => Err(PollError::Api(e)),
        Err(PageError::Loop) => Err(link_loop(metrics)),
    }
}

/// A `Link` that leads back to a page already read this listing: counted, and the cycle ends.
pub(super) fn link_loop(metrics: &Metrics) -> PollError {
    metrics.api_error("pagination_loop");
    PollError::PaginationLoop
}

pub(super) fn page_time(page: &JobsPage) -> f64 {
    Project::now_or(page, Project::local_now())
}
