//! Learning the state of deep followed jobs that left the listings: pipeline job lists,
//! reading on down the job list, single fetches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tracing::{debug, info, warn};

use super::pages::{Step, check_page, next_page};
use super::{
    Cycle, MAX_LISTING_PAGES, MAX_SINGLE_FETCHES, PIPELINE_JOBS_MAX_FAILURES, PollError, Reread,
};
use crate::gitlab::pager::{JobList, PageError, Pager, PipelineJobList};
use crate::gitlab::{ApiError, JobsPage};
use crate::project::state::Project;

impl Cycle<'_> {
    /// Learns the current state of deep followed jobs that no listing showed this cycle (at most
    /// `MAX_SINGLE_FETCHES`, oldest first).
    ///
    /// Why per pipeline: deep jobs that change together usually belong to one pipeline (its
    /// stage finished, it was canceled, a retry ended it), and one request for the pipeline's
    /// job list (`include_retried=true`, 100 per page) returns them all, where single fetches
    /// cost one request each. So jobs sharing a pipeline with another job to fetch (or with
    /// another deep followed job, which the list then refreshes for free) are read that way,
    /// the rest one by one. The endpoint is optional for correctness: any failure of it (404,
    /// 5xx after retries, a body that does not decode) falls back to single fetches of those
    /// jobs in the same cycle, a job its list does not show is fetched singly too (never
    /// dropped), and a project where it fails `PIPELINE_JOBS_MAX_FAILURES` times in a row
    /// stops using it. What the list shows is fed like any listing, restricted as in `list`.
    ///
    /// Why read on: a burst of deep changes (hundreds of jobs ending at once, or no pipeline
    /// job lists to use) would cost a request per pipeline or per job, minutes of budget;
    /// the project's own job list, read on from where the top pages stopped down to the oldest
    /// of them, shows them all at ⌈depth/100⌉ requests. It is chosen when it costs fewer
    /// requests than the other ways at best (`reread_pages`); anything it did not show is
    /// learnt those ways.
    pub(super) async fn fetch_changed(
        &mut self,
        mut ids: Vec<u64>,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        let pages = {
            let p = self.lock();
            ids.retain(|id| p.tracker.is_followed(*id) && !seen.contains(id));
            ids.sort_unstable();
            reread_pages(&p, &ids, reread)
        };
        if let Some(pages) = pages {
            // Cheaper than the requests below would be: one page shows a hundred jobs.
            debug!(project = %self.label, jobs = ids.len(), pages, "reading on below the top pages instead of fetching each changed job");
            self.reread(ids[0], pages + 1, seen, reread).await?;
            let p = self.lock();
            ids.retain(|id| p.tracker.is_followed(*id) && !seen.contains(id));
        }
        if ids.len() > MAX_SINGLE_FETCHES {
            warn!(project = %self.label, pending = ids.len(), "many followed jobs changed at once; fetching the rest next cycle");
            ids.truncate(MAX_SINGLE_FETCHES);
        }
        let (mut singles, groups) = self.by_pipeline(ids);
        for (pipeline, group) in groups {
            if self.lock().pipeline_jobs_off {
                singles.extend(group);
                continue;
            }
            match self.read_pipeline(pipeline, &group, seen).await {
                Ok(missing) => {
                    self.lock().pipeline_jobs_failures = 0;
                    if !missing.is_empty() {
                        debug!(project = %self.label, pipeline, missing = missing.len(), "jobs missing from their pipeline's job list; fetching them singly");
                    }
                    singles.extend(missing);
                }
                Err(e) => self.pipeline_failed(pipeline, group, seen, e).await?,
            }
        }
        singles.sort_unstable();
        self.fetch_each(singles).await?;
        Ok(())
    }

    /// Splits `ids` into jobs to fetch singly and, by pipeline, jobs worth their pipeline's job
    /// list: two or more of them, or a lone one whose list also refreshes other deep followed
    /// jobs of the pipeline (same cost).
    fn by_pipeline(&self, ids: Vec<u64>) -> (Vec<u64>, BTreeMap<u64, Vec<u64>>) {
        let p = self.lock();
        let mut singles = Vec::new();
        let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            match p.tracker.followed(id).and_then(|f| f.pipeline_id) {
                Some(pipeline) if !p.pipeline_jobs_off => {
                    groups.entry(pipeline).or_default().push(id)
                }
                _ => singles.push(id),
            }
        }
        let mut deep: HashMap<u64, usize> = HashMap::new();
        if groups.values().any(|g| g.len() == 1) {
            for (_, f) in p.tracker.deep_followed(self.lowest) {
                if let Some(pipeline) = f.pipeline_id.filter(|x| groups.contains_key(x)) {
                    *deep.entry(pipeline).or_default() += 1;
                }
            }
        }
        groups.retain(|pipeline, group| {
            let worth = group.len() >= 2 || deep.get(pipeline).is_some_and(|n| *n >= 2);
            if !worth {
                singles.append(group);
            }
            worth
        });
        (singles, groups)
    }

    /// A pipeline's job list failed: its jobs are fetched singly, and the endpoint is blamed
    /// when the failure says something about it.
    async fn pipeline_failed(
        &mut self,
        pipeline: u64,
        group: Vec<u64>,
        seen: &HashSet<u64>,
        e: PollError,
    ) -> Result<(), PollError> {
        let rest: Vec<u64> = group.into_iter().filter(|id| !seen.contains(id)).collect();
        warn!(project = %self.label, endpoint = e.endpoint(), pipeline, error = %e, jobs = rest.len(),
            "cannot read the pipeline's job list; fetching its jobs singly");
        let asked = rest.len();
        let gone = self.fetch_each(rest).await?;
        // A deleted pipeline answers 404 and so do its jobs: not the endpoint's fault.
        let pipeline_gone = asked > 0
            && gone == asked
            && matches!(&e, PollError::Api(a) if a.status() == Some(404));
        if counts_against_endpoint(&e) && !pipeline_gone {
            let mut p = self.lock();
            p.pipeline_jobs_failures += 1;
            if p.pipeline_jobs_failures >= PIPELINE_JOBS_MAX_FAILURES && !p.pipeline_jobs_off {
                p.pipeline_jobs_off = true;
                self.metrics.api_error("pipeline_jobs_disabled");
                warn!(project = %self.label, failures = p.pipeline_jobs_failures,
                    "the pipeline jobs endpoint keeps failing; this project now fetches changed jobs one by one");
            }
        }
        Ok(())
    }

    /// Reads on down the job list from where `reread` stands until `down_to` is reached (or
    /// `max_pages` were read), feeding what it shows ([`Cycle::in_window`]) and noting it in
    /// `seen`.
    async fn reread(
        &mut self,
        down_to: u64,
        max_pages: usize,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        let api_id = self.api_id.clone();
        let list = JobList::all(self.client, &api_id);
        let mut pager = Pager::resume(list, reread.next.clone(), max_pages);
        while reread.reached.is_none_or(|r| r > down_to) && reread.next.is_some() {
            let mut page = match pager.next().await {
                Ok(Some(page)) => page,
                // The cap: the next call goes on from `reread.next`. An unusable `Link` has
                // left `reread.next` empty: the other ways serve the rest.
                Ok(None) | Err(PageError::Capped { .. } | PageError::Link(_)) => break,
                // A link back to a page read on this call: counted as a page that does not
                // go down is (below), and reading on ends, without asking for it again.
                Err(PageError::Loop) => {
                    self.metrics.api_error("pagination_loop");
                    reread.next = None;
                    break;
                }
                Err(PageError::Api(e)) => return Err(e.into()),
            };
            reread.next = None;
            self.stats.requests += 1;
            self.stats.reread_pages += 1;
            if check_page(&page, reread.reached, &self.label, self.metrics).is_err() {
                // A page that does not go down: no reading on this cycle, the other ways
                // (pipeline job lists, single fetches) serve.
                return Ok(());
            }
            let Some(min) = page.jobs.iter().map(|j| j.id).min() else {
                break;
            };
            reread.reached = Some(min);
            // An unusable `Link` ends reading on: the other ways serve the rest.
            reread.next = page.next().ok().flatten().map(str::to_string);
            seen.extend(page.jobs.iter().map(|j| j.id));
            self.feed_window(&mut page);
        }
        Ok(())
    }

    /// Reads one pipeline's job list, feeding what it shows (below `lowest`, at most
    /// `highest`, as `list` does: jobs above were read this cycle, newer ones are next
    /// cycle's). Returns the `wanted` jobs it did not show, for single fetches. Stops paging
    /// when fewer than two wanted jobs remain (a page then costs as much as fetching them) or
    /// after as many pages as jobs wanted (a pipeline of thousands of jobs).
    async fn read_pipeline(
        &mut self,
        pipeline: u64,
        wanted: &[u64],
        seen: &mut HashSet<u64>,
    ) -> Result<Vec<u64>, PollError> {
        let mut missing: BTreeSet<u64> = wanted.iter().copied().collect();
        let api_id = self.api_id.clone();
        let list = PipelineJobList {
            client: self.client,
            project: &api_id,
            pipeline,
            scopes: &[],
        };
        // Never more pages than jobs wanted: at worst about twice the single fetches.
        let mut pager = Pager::new(list, wanted.len());
        loop {
            let mut page = match next_page(&mut pager, self.metrics).await? {
                Step::Page(page) => page,
                Step::End | Step::Capped(_) => break,
            };
            self.stats.requests += 1;
            self.stats.pipeline_pages += 1;
            // Offset pages may overlap (a job created between two requests shifts the rest down
            // by one): harmless, as observing a job twice is, so only the page itself is checked.
            check_page(&page, None, &self.label, self.metrics)?;
            self.feed_window(&mut page);
            for j in &page.jobs {
                missing.remove(&j.id);
                seen.insert(j.id);
            }
            // An unusable `Link` fails the read even when no more pages are wanted.
            page.next()?;
            if missing.len() < 2 {
                break;
            }
        }
        Ok(missing.into_iter().collect())
    }

    /// Fetches followed jobs one by one (at most `MAX_SINGLE_FETCHES`, oldest first). Returns
    /// how many were gone (404).
    async fn fetch_each(&mut self, mut ids: Vec<u64>) -> Result<usize, PollError> {
        {
            let p = self.lock();
            ids.retain(|id| p.tracker.is_followed(*id));
        }
        if ids.len() > MAX_SINGLE_FETCHES {
            warn!(project = %self.label, pending = ids.len(), "many followed jobs changed at once; fetching the rest next cycle");
            ids.truncate(MAX_SINGLE_FETCHES);
        }
        let mut gone = 0;
        for job_id in ids {
            let job = match self.client.job(&self.api_id, job_id).await {
                // Counted (bad_job); still followed, so a GitLab that mends it is counted.
                Err(e @ ApiError::BadItem { .. }) => {
                    warn!(project = %self.label, endpoint = e.endpoint(), job_id, error = %e, "a followed job does not decode; skipped this cycle");
                    continue;
                }
                r => r?,
            };
            self.stats.requests += 1;
            self.stats.single_fetches += 1;
            match job {
                Some(job) => {
                    let page = JobsPage::of_jobs(vec![job]);
                    self.feed(&page, self.server_now);
                }
                None => {
                    info!(project = %self.label, job_id, "followed job no longer exists (pipeline deleted?); dropping it");
                    self.lock().tracker.forget(job_id);
                    gone += 1;
                }
            }
        }
        Ok(gone)
    }
}

/// The pages it takes to read on from where `reread` stands down to the oldest of `ids`
/// (ascending), if that is cheaper than learning them the other ways: at least one
/// request per pipeline (their job lists) or per job (single fetches). The depth is the
/// number of this project's jobs known between the two ids (every id above `floor` that
/// was read is remembered); below `floor` the id distance stands in, an overestimate as
/// ids are global.
fn reread_pages(p: &Project, ids: &[u64], reread: &Reread) -> Option<usize> {
    let (&oldest, reached) = (ids.first()?, reread.reached?);
    if reread.next.is_none() || ids.len() < 2 || oldest >= reached {
        return None;
    }
    let depth = p
        .tracker
        .known_between(oldest, reached)
        .unwrap_or((reached - oldest) as usize);
    let pages = depth.max(1).div_ceil(crate::gitlab::PER_PAGE as usize);
    let others = if p.pipeline_jobs_off {
        ids.len()
    } else {
        let mut pipelines = HashSet::new();
        let mut without = 0;
        for id in ids {
            match p.tracker.followed(*id).and_then(|f| f.pipeline_id) {
                Some(pipeline) => {
                    pipelines.insert(pipeline);
                }
                None => without += 1,
            }
        }
        pipelines.len() + without
    };
    (pages < others && pages <= MAX_LISTING_PAGES).then_some(pages)
}

/// Whether a failed pipeline-jobs request says something about the endpoint itself (rather than
/// about GitLab's load or the network, which single fetches would meet too).
fn counts_against_endpoint(e: &PollError) -> bool {
    match e {
        PollError::Api(ApiError::RateLimited { .. } | ApiError::Transport { .. }) => false,
        PollError::Api(_) | PollError::PaginationLoop => true,
        PollError::Aborted | PollError::CatchUp(_) => false,
    }
}
