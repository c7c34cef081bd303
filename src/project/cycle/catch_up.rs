//! Reading on into the gaps that cycles stopped by the page cap left.

use tracing::{error, info, warn};

use super::pages::check_page;
use super::{Cycle, PollError};
use crate::gitlab::pager::{JobList, PageError, PageSource, Pager};
use crate::gitlab::{ApiError, JobsPage};
use crate::project::state::Project;
use crate::tracker::Gap;

/// How reading into a gap ended this cycle.
enum GapEnd {
    /// Read down to the old high-water mark.
    Closed,
    /// Out of pages for this cycle: the next ones go on.
    Open,
    /// The list loops there (a broken GitLab or proxy).
    Abandoned,
}

impl Cycle<'_> {
    /// Reads on into the gaps earlier capped cycles left (highest first), at most `budget`
    /// pages, feeding the jobs inside them. Returns the gaps as they are after this cycle
    /// (for [`Tracker::set_gaps`](crate::tracker::Tracker::set_gaps) once the cycle completes).
    pub(super) async fn catch_up(&mut self, mut budget: usize) -> Result<Vec<Gap>, PollError> {
        let label = self.label.clone();
        let mut left = Vec::new();
        let gaps = self.lock().tracker.gaps().to_vec();
        for mut gap in gaps {
            match self.read_gap(&mut gap, &mut budget).await? {
                GapEnd::Closed => {
                    info!(project = %label, pages = gap.pages, down_to = gap.bottom, "caught up on the jobs a capped cycle left unread");
                }
                GapEnd::Open => {
                    if gap.pages > 0 {
                        info!(project = %label, pages = gap.pages, unread_below = gap.top, down_to = gap.bottom, "catching up on the jobs a capped cycle left unread");
                    }
                    left.push(gap);
                }
                GapEnd::Abandoned => {
                    // Failing every cycle on it would stop the project's counting altogether.
                    error!(project = %label, unread_below = gap.top, down_to = gap.bottom,
                        "the job list loops while catching up; giving up on the rest of this stretch, jobs in it may be missed");
                    self.metrics.api_error("catch_up_abandoned");
                }
            }
        }
        Ok(left)
    }

    /// Reads one gap on with the pages of `budget` left.
    async fn read_gap(&mut self, gap: &mut Gap, budget: &mut usize) -> Result<GapEnd, PollError> {
        let api_id = self.api_id.clone();
        let list = JobList::all(self.client, &api_id);
        let mut pager = Pager::resume(list, gap.next.clone(), *budget);
        let end = self.read_gap_pages(gap, &mut pager).await;
        *budget = budget.saturating_sub(pager.pages());
        end
    }

    /// [`Cycle::read_gap`]'s pages, from `pager` (which starts at the gap's cursor).
    async fn read_gap_pages<S: PageSource<Page = JobsPage>>(
        &mut self,
        gap: &mut Gap,
        pager: &mut Pager<S>,
    ) -> Result<GapEnd, PollError> {
        let mut prev_min: Option<u64> = None;
        loop {
            let mut page = match pager.next().await {
                Ok(Some(page)) => page,
                Ok(None) => return Ok(GapEnd::Closed),
                Err(PageError::Capped { resume, .. }) => {
                    gap.next = resume;
                    return Ok(GapEnd::Open);
                }
                Err(PageError::Loop) => return Ok(GapEnd::Abandoned),
                // An unusable `Link` on a page inside the gap: like a refused cursor.
                Err(PageError::Link(e)) => {
                    warn!(project = %self.label, endpoint = e.endpoint(), error = %e, "unusable link while catching up; reading down from the top instead");
                    self.metrics.api_error("catch_up_cursor");
                    pager.restart();
                    prev_min = None;
                    continue;
                }
                // A cursor this GitLab no longer takes (an upgrade since the checkpoint, a
                // proxy, a tampered file): read from the top instead, pages above the gap
                // cost but stay harmless.
                Err(PageError::Api(e)) if pager.cursor().is_some() && cursor_refused(&e) => {
                    self.stats.requests += 1;
                    warn!(project = %self.label, endpoint = e.endpoint(), error = %e, "GitLab refused the catch-up cursor; reading down from the top instead");
                    self.metrics.api_error("catch_up_cursor");
                    // The top page is above the ones read so far: no loop.
                    pager.restart();
                    prev_min = None;
                    continue;
                }
                Err(PageError::Api(e)) => return Err(PollError::CatchUp(e)),
            };
            self.stats.requests += 1;
            self.stats.pages += 1;
            self.stats.catch_up_pages += 1;
            gap.pages += 1;
            if check_page(&page, prev_min, &self.label, self.metrics).is_err() {
                return Ok(GapEnd::Abandoned);
            }
            let Some(min) = page.jobs.iter().map(|j| j.id).min() else {
                return Ok(GapEnd::Closed);
            };
            prev_min = Some(min);
            page.jobs.retain(|j| gap.contains(j.id));
            let now = Project::now_or(&page, self.server_now);
            self.feed(&page, now);
            gap.top = gap.top.min(min.max(gap.bottom));
            // Every id above the old mark read (ids are global: usually one more page).
            if min <= gap.bottom.saturating_add(1) {
                return Ok(GapEnd::Closed);
            }
        }
    }
}

/// Whether a failed request for a catch-up cursor says the cursor is no good (refused, or an
/// answer that is no page of jobs), rather than that GitLab or the network is having a bad
/// time (worth asking again later) or that the token lost its rights.
fn cursor_refused(e: &ApiError) -> bool {
    match e {
        ApiError::Status { status, .. } => {
            (400..500).contains(status) && !matches!(status, 401 | 403 | 429)
        }
        ApiError::Link { .. }
        | ApiError::Decode { .. }
        | ApiError::BadItem { .. }
        | ApiError::TooLong { .. } => true,
        ApiError::RateLimited { .. } | ApiError::Transport { .. } => false,
    }
}
