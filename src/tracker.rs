//! Per-project job tracker: a pure state machine (no I/O) that turns observed job snapshots into
//! events, each exactly once.
//!
//! Invariants:
//! - Every job id `>= floor` that is not followed and is in `done` has been handled (counted, or
//!   deliberately ignored); every id `< floor` that is not followed is treated as handled,
//!   except inside a [`Gap`] (ids a capped cycle left unread), where only `done` counts.
//! - The high-water mark only moves past ids that were read, or that a [`Gap`] keeps for later.
//! - A job emits `Completed` at most once: the first time it is seen in a final status; it then
//!   moves to `done` and is never counted again, whatever later pages or retries show.
//! - A job emits `Started` (its queued duration) at most once: the first time it is seen started.
//! - Observing the same snapshot twice changes nothing, so re-reading a page (after a failed
//!   request, an overlapping page, a retried cycle) is always safe.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Job, JobRunner, JobStatus};

/// How many handled ids above the floor are remembered (to recognise late-committed jobs that
/// appear below the high-water mark). Older ones are folded into `floor`.
pub const DONE_KEEP: usize = 5_000;
/// Non-final jobs followed per project, at most. Beyond it the oldest are given up (never
/// counted): a project with more unfinished jobs than this is broken in ways no exporter fixes,
/// and memory must stay bounded.
pub const MAX_FOLLOWED: usize = 50_000;
/// On a first start, jobs created this long before the backfill cutoff are still read, because a
/// long job created then may have finished inside the window (GitLab's default job timeout is 1h).
pub const BACKFILL_LOOKBACK_SECS: f64 = 3600.0;
/// Jobs hooks may make known between two completed cycles, at most: only a completed cycle
/// folds `done` (and trims `followed`), so while none completes (GitLab's API failing, an
/// expired token) hooks beyond this are left to the polls (see [`Seen::Deferred`]).
pub const MAX_NEW_FROM_HOOKS: usize = 4 * DONE_KEEP;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobLabels {
    pub ref_: String,
    pub stage: String,
    pub name: String,
    /// The ref is a tag (for `labels.ref = "kind"`).
    #[serde(default)]
    pub tag: bool,
    /// For `labels.runner`: known once the job was seen started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<JobRunner>,
}

impl JobLabels {
    fn of(job: &Job) -> Self {
        Self {
            ref_: job.ref_.clone(),
            stage: job.stage.clone(),
            name: job.name.clone(),
            tag: job.tag,
            runner: job.runner.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// First seen started: observe its queued duration.
    Started {
        labels: JobLabels,
        queued_duration: f64,
    },
    /// First seen completed: count it (and observe its duration if it ran).
    Completed {
        labels: JobLabels,
        status: JobStatus,
        failure_reason: String,
        duration: Option<f64>,
        /// GitLab's `finished_at` (unix seconds), for the freshness histogram.
        finished_at: Option<f64>,
    },
    /// A success counted earlier was found to follow a failed attempt of the same name in
    /// its pipeline (see `project::attempts`): count it flaky, once.
    Flaky { labels: JobLabels },
}

/// A job not yet final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Followed {
    pub status: JobStatus,
    pub labels: JobLabels,
    /// Its queued duration has been observed (or must not be).
    pub started_seen: bool,
    /// Already counted once (a final job that GitLab later reset, e.g. skipped → created after a
    /// retry): followed for the active gauge only, never counted again.
    pub counted: bool,
    /// Unix seconds when it began waiting, while pending.
    pub pending_since: Option<f64>,
    #[serde(default)]
    pub pipeline_id: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// Highest id seen at the end of a completed cycle; `None` before the first one.
    high_water: Option<u64>,
    floor: u64,
    done: BTreeSet<u64>,
    followed: BTreeMap<u64, Followed>,
    /// Backfill cutoff (unix seconds), fixed when the first cycle starts and kept until it
    /// completes, so a retried first cycle uses the same window.
    cutoff: Option<f64>,
    /// Pipelines in which a job was seen new or changing since the last `take_touched`.
    /// Checkpointed: a cycle that failed after seeing a change must not lose it to a restart.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    touched: BTreeSet<u64>,
    /// Pipelines seen settled (no job in flight) with `created` jobs left, which GitLab moves
    /// on by itself: see [`Settling`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    settling: BTreeMap<u64, Settling>,
    /// Stretches of ids below the high-water mark that cycles stopped at their page cap left
    /// unread, highest first: read downwards in the next cycles (see [`Gap`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    gaps: Vec<Gap>,
    /// Jobs a hook moved on since the current poll cycle started: that cycle's pages may
    /// have been read before, so they must not move these back (see [`Tracker::observe`]).
    #[serde(skip)]
    hooked: BTreeSet<u64>,
    /// Jobs hooks made known since the last completed cycle (see [`MAX_NEW_FROM_HOOKS`]).
    #[serde(skip)]
    new_from_hooks: usize,
    /// Jobs a hook saw end other than skipped: GitLab never takes those back (only a skipped
    /// job is reset, when its pipeline is retried), so a poll showing one unfinished read a
    /// lagging database replica. Kept while the id is in `done`.
    #[serde(skip)]
    hook_final: BTreeSet<u64>,
}

/// Ids a cycle that stopped at its page cap did not read: those between `bottom` and `top`
/// (both excluded). Until they are read, they do not count as handled even below `floor`, so
/// none is skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The lowest id read above the gap.
    pub top: u64,
    /// The high-water mark when the gap opened: ids up to it had been read.
    pub bottom: u64,
    /// Where reading resumes: a `Link: rel="next"` target (an opaque keyset cursor) at or
    /// above the gap; `None` to start from the top of the list (a cursor GitLab refused).
    pub next: Option<String>,
    /// Pages read into it so far, for the log.
    #[serde(default)]
    pub pages: u64,
}

impl Gap {
    pub fn contains(&self, id: u64) -> bool {
        id > self.bottom && id < self.top
    }
}

/// A pipeline whose running part was seen over while it still had `created` jobs. GitLab moves
/// those on within seconds (the next stage starts, or they are skipped after a failure), unless
/// a blocking manual job holds the pipeline; so they are re-checked, ever less often, for a
/// while (the poller's policy). GitLab's clock, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Settling {
    /// When it was first seen settled.
    pub since: f64,
    /// When its `created` jobs are due for a re-check.
    pub next_check: f64,
    /// When they were last checked (0 in checkpoints from before this field: unknown). The
    /// pursuit ends with a check after `since` + the pursuit window, even one a downtime
    /// delayed, so a job moved on near the window's end is not left to the sweep.
    #[serde(default)]
    pub last_check: f64,
}

/// Unix seconds.
pub fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// True until the first cycle has completed.
    pub fn is_first_cycle(&self) -> bool {
        self.high_water.is_none()
    }

    /// Starts (or resumes) the first cycle; returns the backfill cutoff in unix seconds.
    pub fn begin_first_cycle(&mut self, server_now: f64, backfill_secs: f64) -> f64 {
        *self.cutoff.get_or_insert(server_now - backfill_secs)
    }

    fn is_handled(&self, id: u64) -> bool {
        self.done.contains(&id) || (id < self.floor && !self.in_gap(id))
    }

    fn in_gap(&self, id: u64) -> bool {
        self.gaps.iter().any(|g| g.contains(id))
    }

    /// How many of this project's jobs have ids in `from..to`, when known: every id above
    /// `floor` that was read is followed or in `done` (`None` below `floor`).
    pub fn known_between(&self, from: u64, to: u64) -> Option<usize> {
        if from >= to {
            return Some(0);
        }
        if from < self.floor {
            return None;
        }
        Some(self.done.range(from..to).count() + self.followed.range(from..to).count())
    }

    /// The high-water mark (`None` before the first completed cycle).
    pub fn high_water(&self) -> Option<u64> {
        self.high_water
    }

    /// Unread stretches, highest first.
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    /// Replaces the unread stretches, at the end of a completed cycle (right before
    /// [`Tracker::complete_cycle`]): a failed cycle leaves them as they were, and re-reading
    /// is idempotent.
    pub fn set_gaps(&mut self, mut gaps: Vec<Gap>) {
        gaps.retain(|g| g.top > g.bottom.saturating_add(1));
        gaps.sort_by_key(|g| std::cmp::Reverse(g.top));
        self.gaps = gaps;
    }

    /// Feeds one job snapshot; pushes the events it causes. `server_now` is GitLab's clock at the
    /// response (unix seconds).
    pub fn observe(&mut self, job: &Job, server_now: f64, events: &mut Vec<Event>) {
        self.observe_with(job, server_now, events, true);
    }

    /// Feeds one job snapshot from a Job Hook. Unlike a poll (a fresh read of the whole
    /// state), an event may be late, repeated or overtaken by a later one, so it never moves a
    /// job backwards: a followed job keeps its further status, and a job already final stays
    /// final. GitLab's one real way back (a skipped job reset to `created` when its pipeline
    /// is retried) looks exactly like a late `created` event; that is [`Seen::Stale`] too,
    /// and the caller has a poll settle it.
    pub fn observe_hook(&mut self, job: &Job, now: f64, events: &mut Vec<Event>) -> Seen {
        if self.behind(job) {
            return Seen::Stale;
        }
        if !self.followed.contains_key(&job.id) && self.is_handled(job.id) {
            return Seen::Known;
        }
        let new = !self.followed.contains_key(&job.id);
        if new {
            if self.new_from_hooks >= MAX_NEW_FROM_HOOKS || self.followed.len() >= MAX_FOLLOWED {
                return Seen::Deferred;
            }
            self.new_from_hooks += 1;
        }
        let before = (
            events.len(),
            self.followed.get(&job.id).map(|f| f.status.clone()),
        );
        // A hook reports a change as it happens: a job final without `finished_at` (skipped)
        // became so now, inside the backfill window whatever its creation time.
        let dated;
        let job = match DateTime::from_timestamp_millis((now * 1000.0) as i64) {
            Some(at)
                if self.cutoff.is_some() && job.status.is_final() && job.finished_at.is_none() =>
            {
                dated = Job {
                    created_at: Some(at),
                    ..job.clone()
                };
                &dated
            }
            _ => job,
        };
        // Hook changes do not ask the poller to re-read their pipelines: the hooks of the
        // pipeline's other jobs report those.
        self.observe_with(job, now, events, false);
        let status_changed = before.1.as_ref() != Some(&job.status);
        if events.len() > before.0 || status_changed {
            self.hooked.insert(job.id);
            if job.status.is_final() && job.status != JobStatus::Skipped {
                self.hook_final.insert(job.id);
            }
            Seen::Changed
        } else {
            Seen::Known
        }
    }

    fn observe_with(&mut self, job: &Job, server_now: f64, events: &mut Vec<Event>, touch: bool) {
        let id = job.id;
        if touch && (self.hooked.contains(&id) || self.hook_final.contains(&id)) && self.behind(job)
        {
            return;
        }
        let changed = self
            .followed
            .get(&id)
            .is_none_or(|f| f.status != job.status);
        if touch
            && changed
            && !(job.status.is_final() && self.is_handled(id))
            && let Some(p) = job.pipeline_id()
        {
            self.touched.insert(p);
        }
        if let Some(f) = self.followed.get_mut(&id) {
            // Labels are taken when a job is first seen, often before a runner picked it up.
            if job.runner.is_some() && f.labels.runner != job.runner {
                f.labels.runner = job.runner.clone();
            }
            if job.has_started() && !f.started_seen {
                f.started_seen = true;
                if let Some(q) = job.queued_duration {
                    events.push(Event::Started {
                        labels: f.labels.clone(),
                        queued_duration: q,
                    });
                }
            }
            if job.status.is_final() {
                if !f.counted {
                    events.push(completed(job, f.labels.clone()));
                }
                self.followed.remove(&id);
                self.done.insert(id);
            } else {
                f.status = job.status.clone();
                f.pending_since = pending_since(job, server_now);
            }
            return;
        }
        if self.is_handled(id) {
            if !job.status.is_final() {
                // GitLab can reset a final job (a skipped job after its pipeline is retried):
                // show it as active, but it was counted once already.
                self.follow(job, server_now, true);
            }
            return;
        }
        // Never seen before.
        if job.status.is_final() {
            if !self.before_backfill(job) {
                if job.has_started()
                    && let Some(q) = job.queued_duration
                {
                    events.push(Event::Started {
                        labels: JobLabels::of(job),
                        queued_duration: q,
                    });
                }
                events.push(completed(job, JobLabels::of(job)));
            }
            self.done.insert(id);
        } else {
            if job.has_started()
                && let Some(q) = job.queued_duration
            {
                events.push(Event::Started {
                    labels: JobLabels::of(job),
                    queued_duration: q,
                });
            }
            self.follow(job, server_now, false);
        }
    }

    /// A poll cycle starts: from now on its pages are newer than every hook applied so far.
    pub fn cycle_started(&mut self) {
        self.hooked.clear();
    }

    /// `job` is further back than what is known of it: an older status of a followed job,
    /// or not final any more.
    fn behind(&self, job: &Job) -> bool {
        match self.followed.get(&job.id) {
            Some(f) => !job.status.is_final() && progress(&job.status) < progress(&f.status),
            None => self.is_handled(job.id) && !job.status.is_final(),
        }
    }

    fn follow(&mut self, job: &Job, server_now: f64, counted: bool) {
        self.followed.insert(
            job.id,
            Followed {
                status: job.status.clone(),
                labels: JobLabels::of(job),
                started_seen: counted || job.has_started(),
                counted,
                pending_since: pending_since(job, server_now),
                pipeline_id: job.pipeline_id(),
            },
        );
    }

    /// During the first cycle: a final job that ended before the backfill window is ignored
    /// altogether. Skipped jobs have no `finished_at` in GitLab; their creation time stands in.
    fn before_backfill(&self, job: &Job) -> bool {
        let Some(cutoff) = self.cutoff else {
            return false;
        };
        match job.finished_at.or(job.created_at) {
            Some(t) => secs(t) < cutoff,
            None => false,
        }
    }

    /// A followed job that GitLab no longer has (its pipeline was deleted): stop following it.
    pub fn forget(&mut self, id: u64) {
        if self.followed.remove(&id).is_some() {
            self.done.insert(id);
        }
    }

    /// Whether the page after `page` (ids descending) may still hold jobs this cycle must see.
    pub fn wants_page_after(&self, page: &[Job]) -> bool {
        let Some(lowest) = page.iter().map(|j| j.id).min() else {
            return false;
        };
        match (self.high_water, self.cutoff) {
            // Every job on the page is new: the next page may hold more new ones.
            (Some(hw), _) => lowest > hw,
            (None, Some(cutoff)) => page.iter().any(|j| {
                let recent_created = j
                    .created_at
                    .is_none_or(|t| secs(t) >= cutoff - BACKFILL_LOOKBACK_SECS);
                let finished_inside = j.status.is_final()
                    && j.finished_at
                        .or(j.created_at)
                        .is_none_or(|t| secs(t) >= cutoff);
                recent_created || finished_inside
            }),
            (None, None) => true,
        }
    }

    /// Followed jobs below `lowest_read` (all of them when nothing was read): these were not on
    /// the pages read this cycle, so their fate must be learnt another way.
    pub fn deep_followed(
        &self,
        lowest_read: Option<u64>,
    ) -> impl Iterator<Item = (u64, &Followed)> {
        let range = match lowest_read {
            Some(low) => self.followed.range(..low),
            None => self.followed.range(..),
        };
        range.map(|(id, f)| (*id, f))
    }

    /// Pipelines with a job seen new or changing since the last call.
    pub fn take_touched(&mut self) -> BTreeSet<u64> {
        std::mem::take(&mut self.touched)
    }

    /// Pipelines with a job seen new or changing since they were last taken or untouched.
    pub fn touched(&self) -> &BTreeSet<u64> {
        &self.touched
    }

    /// Forgets the given touched pipelines once they were dealt with (the ones touched since
    /// stay for the next cycle).
    pub fn untouch(&mut self, pipelines: &BTreeSet<u64>) {
        self.touched.retain(|p| !pipelines.contains(p));
    }

    /// Settled pipelines whose `created` jobs are being re-checked.
    pub fn settling_mut(&mut self) -> &mut BTreeMap<u64, Settling> {
        &mut self.settling
    }

    /// A followed job's state, if it is followed.
    pub fn followed(&self, id: u64) -> Option<&Followed> {
        self.followed.get(&id)
    }

    pub fn is_followed(&self, id: u64) -> bool {
        self.followed.contains_key(&id)
    }

    /// Ends a cycle that read ids `lowest_read..=highest_read` from the top of the list.
    /// Returns how many followed jobs were given up to stay within `MAX_FOLLOWED`.
    pub fn complete_cycle(&mut self, lowest_read: Option<u64>, highest_read: Option<u64>) -> usize {
        self.new_from_hooks = 0;
        let first = self.high_water.is_none();
        let hw = self.high_water.unwrap_or(0).max(highest_read.unwrap_or(0));
        self.high_water = Some(hw);
        if first {
            // Everything below what the backfill read is history: handled by definition.
            self.floor = self.floor.max(lowest_read.unwrap_or(hw.saturating_add(1)));
            self.done.retain(|id| *id >= self.floor);
            self.cutoff = None;
        }
        let mut given_up = 0;
        while self.followed.len() > MAX_FOLLOWED {
            if let Some((id, _)) = self.followed.pop_first() {
                self.done.insert(id);
                given_up += 1;
            }
        }
        if let Some(excess) = self.done.len().checked_sub(DONE_KEEP) {
            // Ids inside an unread gap stay: folded into `floor`, they would be counted again
            // when the catch-up reads them.
            let fold: Vec<u64> = (self.done.iter().copied())
                // u64::MAX (a hostile GitLab's) stays: `floor` cannot cover it.
                .filter(|id| !self.in_gap(*id) && *id < u64::MAX)
                .take(excess)
                .collect();
            for id in fold {
                self.done.remove(&id);
                self.floor = self.floor.max(id.saturating_add(1));
            }
        }
        let done = &self.done;
        self.hook_final.retain(|id| done.contains(id));
        given_up
    }

    /// Number of followed jobs per status.
    pub fn active_counts(&self) -> BTreeMap<JobStatus, u64> {
        let mut counts = BTreeMap::new();
        for f in self.followed.values() {
            *counts.entry(f.status.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// When the longest-waiting pending job began waiting (unix seconds).
    pub fn oldest_pending_since(&self) -> Option<f64> {
        self.followed
            .values()
            .filter(|f| f.status == JobStatus::Pending)
            .filter_map(|f| f.pending_since)
            .min_by(f64::total_cmp)
    }

    pub fn followed_len(&self) -> usize {
        self.followed.len()
    }
}

/// What a hook's observation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// New to the tracker (a new job, a new status, its start or its completion).
    Changed,
    /// Already known: nothing changed (a duplicate, or a poll saw it first).
    Known,
    /// Older than what is known: ignored.
    Stale,
    /// Not applied: the tracker is full until a cycle completes; a poll counts it.
    Deferred,
}

/// How far along a non-final job is, for ordering hook events: waiting, then queued
/// (`waiting_for_resource` → `preparing` → `pending`, never back: `Ci::Build`'s state
/// machine), then running. GitLab moves a job forwards only (a retry is a new job), so a
/// lower value after a higher one is an event that arrived late.
fn progress(status: &JobStatus) -> u8 {
    match status {
        JobStatus::Created => 0,
        // GitLab processes a created job into manual or scheduled (and unschedules a
        // scheduled one into manual), never back.
        JobStatus::Manual | JobStatus::Scheduled => 1,
        JobStatus::WaitingForResource => 2,
        JobStatus::Preparing => 3,
        // A status newer than this exporter: most new ones are ways of waiting.
        JobStatus::Pending | JobStatus::Unknown(_) => 4,
        JobStatus::Running | JobStatus::WaitingForCallback => 5,
        JobStatus::Canceling => 6,
        JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped => 7,
    }
}

fn completed(job: &Job, labels: JobLabels) -> Event {
    let failure_reason = if job.status == JobStatus::Failed {
        job.failure_reason
            .clone()
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "unknown_failure".to_string())
    } else {
        String::new()
    };
    Event::Completed {
        labels,
        status: job.status.clone(),
        failure_reason,
        // Only a job that ran has a meaningful duration.
        duration: if job.has_started() {
            job.duration
        } else {
            None
        },
        finished_at: job.finished_at.map(secs),
    }
}

/// For a pending job: GitLab's clock minus how long it has been queued, i.e. when it was queued.
fn pending_since(job: &Job, server_now: f64) -> Option<f64> {
    if job.status != JobStatus::Pending {
        return None;
    }
    match job.queued_duration {
        Some(q) => Some(server_now - q),
        None => job.created_at.map(secs),
    }
}

pub mod attempts;
#[cfg(test)]
mod tests;
