//! Scoped listings of the followed jobs below the top pages, and the re-checks of waiting jobs.

use std::collections::{BTreeSet, HashMap, HashSet};

use tracing::warn;

use super::pages::{Step, check_page, next_page};
use super::{
    COLD_SWEEP_CYCLES, Cycle, MAX_LISTING_PAGES, PollError, Reread, SCHEDULED_RECHECK_SECS,
    SETTLING_PURSUIT_SECS,
};
use crate::gitlab::ApiError;
use crate::gitlab::pager::{JobList, Pager};
use crate::model::JobStatus;
use crate::project::state::is_waiting;
use crate::tracker::{Settling, Tracker};

/// What the followed jobs of one pipeline are doing.
#[derive(Debug, Default, Clone, Copy)]
struct PipelineSummary {
    /// A job in flight (not waiting).
    busy: bool,
    /// A `created` job.
    created: bool,
    /// A `manual` job (which may hold the pipeline's `created` jobs for good).
    manual: bool,
}

/// One pass over the followed jobs, by pipeline.
fn pipeline_summary(tracker: &Tracker) -> HashMap<u64, PipelineSummary> {
    let mut out: HashMap<u64, PipelineSummary> = HashMap::new();
    for (_, f) in tracker.deep_followed(None) {
        if let Some(p) = f.pipeline_id {
            let s = out.entry(p).or_default();
            s.busy |= !is_waiting(&f.status);
            s.created |= f.status == JobStatus::Created;
            s.manual |= f.status == JobStatus::Manual;
        }
    }
    out
}

/// Which `scope[]` listing to read.
#[derive(Debug, Clone, Copy)]
enum Listing {
    /// Every non-final status.
    All,
    /// The non-final statuses that move on their own (pending, running, …).
    Busy,
    /// created, manual, scheduled.
    Waiting,
}

impl Listing {
    fn scopes(self, legacy: bool) -> Vec<JobStatus> {
        JobStatus::NON_FINAL
            .into_iter()
            .filter(|s| !(legacy && s.is_recent_scope()))
            .filter(|s| match self {
                Self::All => true,
                Self::Busy => !is_waiting(s),
                Self::Waiting => is_waiting(s),
            })
            .collect()
    }
}

/// The waiting jobs a cycle re-checks, planned under one lock (see `follow_waiting`).
struct WaitingPlan {
    sweep: bool,
    scheduled_due: bool,
    /// Pipelines seen changing, untouched once their waiting jobs were re-checked.
    touched: BTreeSet<u64>,
    /// Settled pipelines whose `created` jobs are due for a re-check.
    pursued: HashSet<u64>,
    /// Waiting jobs to re-check.
    cold: Vec<u64>,
    /// Pages the last listing of waiting jobs took.
    waiting_pages: usize,
}

impl Cycle<'_> {
    /// The first cycle learns the whole non-final population, however old.
    pub(super) async fn first_listing(&mut self) -> Result<(), PollError> {
        self.list(Listing::All).await?;
        // That listing gave every waiting job's state: nothing to re-check this cycle. But
        // a pipeline that settled just before may still have `created` jobs GitLab moves on
        // in the next seconds: those are pursued from now on, as if seen settling. Not the
        // ones a manual job holds (they may stay `created` for good, the sweep covers them).
        let server_now = self.server_now;
        let mut p = self.lock();
        let touched = p.tracker.take_touched();
        let pipelines = pipeline_summary(&p.tracker);
        let map = p.tracker.settling_mut();
        for pipeline in touched {
            if pipelines
                .get(&pipeline)
                .is_some_and(|s| s.created && !s.busy && !s.manual)
            {
                map.insert(
                    pipeline,
                    Settling {
                        since: server_now,
                        next_check: server_now,
                        // The full listing just gave their state.
                        last_check: server_now,
                    },
                );
            }
        }
        Ok(())
    }

    /// Followed jobs below what was read. Busy ones (pending, running, …) every cycle: one
    /// listing of those statuses, then single fetches for the jobs that left it. Waiting ones
    /// (created, manual, scheduled) pile up in real projects (a manual deploy in every
    /// pipeline, never played) and mostly change when something else in their pipeline does:
    /// they are fetched when their pipeline showed a change this cycle (`created` ones also
    /// at thinning intervals while that pipeline stays settled, see `pursue`), and all of
    /// them are swept every `COLD_SWEEP_CYCLES` cycles. A played manual job usually shows
    /// up in the busy listing (pending, running) well before that.
    pub(super) async fn follow_up(&mut self, below_top: Option<String>) -> Result<(), PollError> {
        let (hot, below_top) = {
            let p = self.lock();
            let hot: Vec<u64> = p
                .tracker
                .deep_followed(self.lowest)
                .filter(|(_, f)| !is_waiting(&f.status))
                .map(|(id, _)| id)
                .collect();
            // Not with unread gaps below (their depth is unknown).
            (hot, below_top.filter(|_| p.tracker.gaps().is_empty()))
        };
        let to_fetch = match hot.len() {
            0 => Vec::new(),
            1 => hot,
            _ => {
                let listed = self.list(Listing::Busy).await?;
                hot.into_iter().filter(|id| !listed.contains(id)).collect()
            }
        };
        // Ids whose current state a pipeline job list already gave this cycle.
        let mut seen = HashSet::new();
        // Reading on below the top pages sees every deep job at once: an option for many
        // changed jobs.
        let mut reread = Reread {
            next: below_top,
            reached: self.lowest,
        };
        self.fetch_changed(to_fetch, &mut seen, &mut reread).await?;
        self.follow_waiting(&mut seen, &mut reread).await
    }

    /// Which waiting jobs to re-check this cycle (see `follow_up`).
    fn plan_waiting(&self, seen: &HashSet<u64>) -> WaitingPlan {
        let server_now = self.server_now;
        let mut p = self.lock();
        let sweep = p.completed_cycles.is_multiple_of(COLD_SWEEP_CYCLES);
        // A waiting job moves when the running part of its pipeline is over (next stage,
        // skipped after a failure, canceled with it): re-check those pipelines only.
        // Kept until the re-checks succeeded: a failing listing or fetch must not lose the
        // change (the next cycle would see the same statuses and no change).
        let touched = p.tracker.touched().clone();
        let pipelines = pipeline_summary(&p.tracker);
        let settled: HashSet<u64> = (touched.iter().copied())
            .filter(|p| !pipelines.get(p).is_some_and(|s| s.busy))
            .collect();
        // GitLab moves those jobs on seconds after, not always within this cycle: `created`
        // ones left in a settled pipeline are re-checked until they move (see `pursue`).
        let pursued = pursue(&mut p.tracker, &settled, &pipelines, server_now);
        let scheduled_due = p
            .scheduled_checked
            .is_some_and(|t| server_now - t >= SCHEDULED_RECHECK_SECS);
        let cold: Vec<u64> = p
            .tracker
            .deep_followed(self.lowest)
            .filter(|(id, f)| is_waiting(&f.status) && !seen.contains(id))
            .filter(|(_, f)| {
                sweep
                    || (scheduled_due && f.status == JobStatus::Scheduled)
                    || f.pipeline_id.is_some_and(|p| {
                        settled.contains(&p)
                            || (f.status == JobStatus::Created && pursued.contains(&p))
                    })
            })
            .map(|(id, _)| id)
            .collect();
        WaitingPlan {
            sweep,
            scheduled_due,
            touched,
            pursued,
            cold,
            waiting_pages: p.waiting_pages,
        }
    }

    /// Re-checks the waiting jobs `plan_waiting` picks.
    async fn follow_waiting(
        &mut self,
        seen: &mut HashSet<u64>,
        reread: &mut Reread,
    ) -> Result<(), PollError> {
        let plan = self.plan_waiting(seen);
        let cold = plan.cold;
        // One listing serves them all when that is cheaper than fetching each.
        let to_fetch = if cold.len() > 1 && (plan.sweep || cold.len() > plan.waiting_pages) {
            let before = self.stats.scoped_pages;
            let listed = self.list(Listing::Waiting).await?;
            self.lock().waiting_pages = (self.stats.scoped_pages - before).max(1);
            cold.into_iter().filter(|id| !listed.contains(id)).collect()
        } else {
            cold
        };
        self.fetch_changed(to_fetch, seen, reread).await?;
        let server_now = self.server_now;
        let mut p = self.lock();
        p.tracker.untouch(&plan.touched);
        if plan.sweep || plan.scheduled_due || p.scheduled_checked.is_none() {
            p.scheduled_checked = Some(server_now);
        }
        // Checked: the next re-check of each comes later and later (about every half of
        // the time the pipeline has been settled), so one held by a manual job costs a
        // few requests, not one per cycle.
        for pipeline in plan.pursued {
            if let Some(s) = p.tracker.settling_mut().get_mut(&pipeline) {
                s.next_check = server_now + (server_now - s.since).max(0.0) / 2.0;
                s.last_check = server_now;
            }
        }
        Ok(())
    }

    /// Pages through a `scope[]` listing, feeding jobs below `lowest` (the ones above were just
    /// read) and at most `highest` (newer ones are next cycle's). Returns the ids listed.
    async fn list(&mut self, listing: Listing) -> Result<HashSet<u64>, PollError> {
        let mut seen = HashSet::new();
        let mut listed_min: Option<u64> = None;
        let api_id = self.api_id.clone();
        // The cap counts every scoped page of the cycle; the first page is always read.
        let budget = MAX_LISTING_PAGES
            .saturating_sub(self.stats.scoped_pages)
            .max(1);
        let mut legacy = self.lock().legacy_scopes;
        let mut scopes = listing.scopes(legacy);
        let mut pager = Pager::new(
            JobList {
                client: self.client,
                project: &api_id,
                scopes: &scopes,
            },
            budget,
        );
        loop {
            let mut page = match next_page(&mut pager, self.metrics).await {
                Ok(Step::Page(page)) => page,
                Ok(Step::End) => return Ok(seen),
                Ok(Step::Capped(_)) => {
                    warn!(project = %self.label, pages = self.stats.scoped_pages, "listing too long; the rest waits for the next cycle");
                    self.metrics.api_error("page_limit");
                    return Ok(seen);
                }
                Err(PollError::Api(e @ ApiError::Status { status: 400, .. }))
                    if pager.cursor().is_none() && !legacy =>
                {
                    self.stats.requests += 1;
                    warn!(project = %self.label, endpoint = e.endpoint(), "GitLab rejected the newer statuses in scope[]; using the older list");
                    self.lock().legacy_scopes = true;
                    legacy = true;
                    // A new listing: the refused request does not count against its cap.
                    scopes = listing.scopes(legacy);
                    pager = Pager::new(
                        JobList {
                            client: self.client,
                            project: &api_id,
                            scopes: &scopes,
                        },
                        budget,
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.stats.requests += 1;
            self.stats.scoped_pages += 1;
            check_page(&page, listed_min, &self.label, self.metrics)?;
            listed_min = page.jobs.iter().map(|j| j.id).min().or(listed_min);
            seen.extend(page.jobs.iter().map(|j| j.id));
            self.feed_window(&mut page);
        }
    }
}

/// Keeps the settled pipelines with `created` jobs left (new ones from `settled`) for
/// `SETTLING_PURSUIT_SECS`, and returns those whose re-check is due. A pipeline leaves
/// when it has no followed `created` job any more, or a job in flight again (it settles
/// anew later), or once it was checked after its window ended (an entry past its window is
/// due at once: a downtime may have skipped its last re-checks).
fn pursue(
    tracker: &mut Tracker,
    settled: &HashSet<u64>,
    pipelines: &HashMap<u64, PipelineSummary>,
    server_now: f64,
) -> HashSet<u64> {
    let map = tracker.settling_mut();
    for p in settled {
        if pipelines.get(p).is_some_and(|s| s.created) {
            // Settled anew (a job moved since): its pursuit starts over.
            map.insert(
                *p,
                Settling {
                    since: server_now,
                    next_check: server_now,
                    // Checked this cycle (a settled pipeline's waiting jobs are).
                    last_check: server_now,
                },
            );
        }
    }
    map.retain(|p, s| {
        pipelines.get(p).is_some_and(|x| x.created && !x.busy)
            && s.last_check <= s.since + SETTLING_PURSUIT_SECS
    });
    map.iter()
        .filter(|(_, s)| s.next_check <= server_now || server_now - s.since > SETTLING_PURSUIT_SECS)
        .map(|(p, _)| *p)
        .collect()
}
