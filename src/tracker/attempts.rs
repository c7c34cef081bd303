//! Flaky jobs: a success counted whose pipeline holds an earlier (lower id) failed attempt
//! with the same name. Pure bookkeeping beside the tracker (no I/O, no clock): the poll cycle
//! asks it which pipelines to look up and hands the answers back.
//!
//! Why the project's job list mostly suffices: it holds every attempt, retried ones included,
//! so every failed attempt the tracker has listed is remembered here (per pipeline, by name,
//! the lowest failed id). A success is *certainly* not flaky when every job of its pipeline
//! with a lower id has been seen:
//! - every id up to the success's has been read (the high-water mark is past it, and no unread
//!   [`Gap`](crate::tracker::Gap) of a capped cycle lies below it), and no earlier attempt of
//!   the same name is still followed with its end unknown;
//! - the pipeline was created after the lowest job ever listed from the top (the
//!   [`Horizon`]): ids grow with creation time, so none of its jobs is older than what was
//!   listed;
//! - its failed attempts were not forgotten ([`MAX_PIPELINES`], [`MAX_NAMES`]: forgetting a
//!   pipeline raises `pipeline_floor`, below which nothing is certain).
//!
//! Otherwise (a retry of a pipeline older than the backfill, an old checkpoint) one request,
//! `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true&scope[]=failed`,
//! decides for every waiting success of that pipeline. Decisions wait for the end of a cycle's
//! reads: a page read from the top may show a success before the page below shows its failed
//! first attempt. A Job Hook's `retries_count == 0` says a first attempt at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Event, JobLabels, Tracker, secs};
use crate::model::{Job, JobStatus};

/// Pipelines whose failed attempts are remembered, at most (the most recent ids).
pub const MAX_PIPELINES: usize = 5_000;
/// Failed job names remembered over all pipelines, at most.
pub const MAX_NAMES: usize = 50_000;
/// Successes waiting for a decision, at most; beyond, the oldest are given up (not flaky,
/// counted undecided).
pub const MAX_PENDING: usize = 10_000;
/// Pipelines looked up per cycle, at most; the rest wait for the next cycle.
pub const MAX_LOOKUPS_PER_CYCLE: usize = 20;
/// Failed lookups of one pipeline after which its successes are given up as not flaky.
pub const MAX_LOOKUP_TRIES: u32 = 3;
/// Cycles a success waits for the tracker to learn more (an earlier attempt still followed,
/// an unread gap) before a lookup decides instead.
pub const MAX_WAITS: u32 = 20;
/// A pipeline must be created this long after the horizon job to be certain of: ids and
/// creation times are not taken in one atomic step, and clocks of GitLab's nodes differ.
pub const HORIZON_MARGIN_SECS: f64 = 60.0;

/// The lowest job listed from the top since failed attempts were recorded: every job with a
/// higher id has been seen since.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Horizon {
    pub id: u64,
    /// Its `created_at`, unix seconds.
    pub created_at: f64,
}

/// One pipeline's failed attempts: job name → lowest failed id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Failed {
    names: BTreeMap<String, u64>,
    /// A lookup read all its failed attempts: what it holds now is known (later attempts are
    /// new jobs, which the job list shows), so its later successes need no lookup.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    looked_up: bool,
}

/// A success counted whose flakiness is not decided yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub pipeline: u64,
    /// Its pipeline's `created_at` (unix seconds), when known.
    #[serde(default)]
    pub created_at: Option<f64>,
    /// The job's labels as counted (raw: the label policy applies when the event is published).
    pub labels: JobLabels,
    /// Cycles it waited for the tracker.
    #[serde(default)]
    pub waits: u32,
    /// Failed lookups so far.
    #[serde(default)]
    pub tries: u32,
    /// Only a lookup decides it.
    #[serde(default)]
    pub lookup: bool,
}

/// A project's flaky-job bookkeeping (checkpointed with its tracker).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attempts {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    failed: BTreeMap<u64, Failed>,
    /// Pipelines below this id may have had failed attempts forgotten.
    #[serde(default)]
    pipeline_floor: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    horizon: Option<Horizon>,
    /// Successes to decide, by job id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending: BTreeMap<u64, Pending>,
    /// Names in `failed` (derived: recounted after a restore).
    #[serde(skip)]
    names: usize,
}

/// What deciding did, for the own metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub flaky: usize,
    /// Given up: counted not flaky without certainty (lookups failed, limits).
    pub undecided: usize,
}

/// What a lookup of one pipeline's failed attempts found.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// Its failed attempts (all of them, or, when `complete` is false, the first pages).
    Found { failed: &'a [Job], complete: bool },
    /// GitLab does not know the pipeline (deleted): nothing to be flaky about.
    NotFound,
    /// The request failed.
    Failed,
}

impl Attempts {
    pub fn is_empty(&self) -> bool {
        self.failed.is_empty() && self.pending.is_empty() && self.horizon.is_none()
    }

    /// After a restore: derived counts.
    pub fn restored(mut self) -> Self {
        self.names = self.failed.values().map(|f| f.names.len()).sum();
        self
    }

    pub fn horizon(&self) -> Option<Horizon> {
        self.horizon
    }

    pub fn pending(&self) -> &BTreeMap<u64, Pending> {
        &self.pending
    }

    /// Successes that only a lookup decides (they keep the project busy).
    pub fn has_lookups(&self) -> bool {
        self.pending.values().any(|p| p.lookup)
    }

    /// A page read from the top of the job list: the horizon moves down to it. `last`: no
    /// page follows, so every job of the project has been listed (the horizon is the start).
    pub fn listed(&mut self, jobs: &[Job], last: bool) {
        if last {
            self.horizon = Some(Horizon {
                id: 0,
                created_at: 0.0,
            });
            return;
        }
        let lowest = jobs
            .iter()
            .filter_map(|j| Some((j.id, secs(j.created_at?))))
            .min_by_key(|(id, _)| *id);
        if let Some((id, created_at)) = lowest
            && self.horizon.is_none_or(|h| id < h.id)
        {
            self.horizon = Some(Horizon { id, created_at });
        }
    }

    /// Notes one job snapshot, from any source: a failed attempt is remembered.
    pub fn observe(&mut self, job: &Job) {
        if job.status != JobStatus::Failed {
            return;
        }
        if let Some(p) = job.pipeline_id() {
            self.remember(p, &job.name, job.id);
        }
    }

    fn remember(&mut self, pipeline: u64, name: &str, id: u64) {
        let failed = self.failed.entry(pipeline).or_default();
        match failed.names.get_mut(name) {
            Some(lowest) => *lowest = (*lowest).min(id),
            None => {
                failed.names.insert(name.to_string(), id);
                self.names += 1;
            }
        }
        self.evict();
    }

    /// Forgets the oldest pipelines beyond the bounds; nothing below them is certain any more.
    fn evict(&mut self) {
        while self.failed.len() > MAX_PIPELINES || self.names > MAX_NAMES {
            let Some((p, f)) = self.failed.pop_first() else {
                break;
            };
            self.names = self.names.saturating_sub(f.names.len());
            self.pipeline_floor = self.pipeline_floor.max(p.saturating_add(1));
        }
    }

    /// An earlier failed attempt of `name` in `pipeline`, below `id`, is known.
    fn known_flaky(&self, pipeline: u64, name: &str, id: u64) -> bool {
        self.failed
            .get(&pipeline)
            .and_then(|f| f.names.get(name))
            .is_some_and(|lowest| *lowest < id)
    }

    /// A success was counted (`job`, with the labels it was counted under). `first_attempt`:
    /// a Job Hook's `retries_count` was 0. Returns the labels of a flaky series to count now;
    /// else it is decided now (not flaky) or later ([`Attempts::settle`]). Returns how many
    /// pending successes were given up to stay within [`MAX_PENDING`] in `given_up`.
    pub fn success(
        &mut self,
        job: &Job,
        labels: JobLabels,
        first_attempt: bool,
        given_up: &mut usize,
    ) -> Option<JobLabels> {
        let pipeline = job.pipeline_id()?;
        if self.known_flaky(pipeline, &job.name, job.id) {
            return Some(labels);
        }
        if first_attempt {
            return None;
        }
        self.pending.insert(
            job.id,
            Pending {
                pipeline,
                created_at: job.pipeline.created_at.map(secs),
                labels: JobLabels {
                    runner: None,
                    ..labels
                },
                waits: 0,
                tries: 0,
                lookup: false,
            },
        );
        while self.pending.len() > MAX_PENDING {
            self.pending.pop_first();
            *given_up += 1;
        }
        None
    }

    /// Decides what the tracker's view now allows (at the end of a cycle's reads): flaky
    /// successes become [`Event::Flaky`] in `events`; those only a lookup can decide are
    /// marked for one ([`Attempts::lookups`]).
    pub fn settle(&mut self, tracker: &Tracker, events: &mut Vec<Event>) -> Outcome {
        let mut outcome = Outcome::default();
        for (id, mut p) in std::mem::take(&mut self.pending) {
            if self.known_flaky(p.pipeline, &p.labels.name, id) {
                outcome.flaky += 1;
                events.push(Event::Flaky { labels: p.labels });
                continue;
            }
            if !p.lookup {
                match self.verdict(tracker, id, &p) {
                    Verdict::NotFlaky => continue,
                    Verdict::Wait if p.waits < MAX_WAITS => p.waits += 1,
                    Verdict::Wait | Verdict::Lookup => p.lookup = true,
                }
            }
            self.pending.insert(id, p);
        }
        outcome
    }

    /// Whether the tracker's view decides success `id` (not known flaky).
    fn verdict(&self, tracker: &Tracker, id: u64, p: &Pending) -> Verdict {
        // Not every id below it read yet: the next cycle reads them.
        if tracker.high_water().is_none_or(|hw| id > hw) {
            return Verdict::Wait;
        }
        if tracker
            .gaps()
            .iter()
            .any(|g| g.bottom.saturating_add(1) < id)
        {
            return Verdict::Wait;
        }
        let earlier_unfinished = tracker
            .deep_followed(Some(id))
            .any(|(_, f)| f.pipeline_id == Some(p.pipeline) && f.labels.name == p.labels.name);
        if earlier_unfinished {
            return Verdict::Wait;
        }
        let after_horizon = match (self.horizon, p.created_at) {
            (Some(h), Some(created)) => created >= h.created_at + HORIZON_MARGIN_SECS,
            _ => false,
        };
        let looked_up = self.failed.get(&p.pipeline).is_some_and(|f| f.looked_up);
        if (after_horizon || looked_up) && p.pipeline >= self.pipeline_floor {
            Verdict::NotFlaky
        } else {
            Verdict::Lookup
        }
    }

    /// Pipelines to look up this cycle (at most [`MAX_LOOKUPS_PER_CYCLE`], oldest first),
    /// with the names their waiting successes need.
    pub fn lookups(&self) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .pending
            .values()
            .filter(|p| p.lookup)
            .map(|p| p.pipeline)
            .collect();
        out.sort_unstable();
        out.dedup();
        out.truncate(MAX_LOOKUPS_PER_CYCLE);
        out
    }

    /// Whether a lookup that has read `failed` so far can stop: every waiting success of
    /// `pipeline` has an earlier failed attempt among them.
    pub fn lookup_satisfied(&self, pipeline: u64, failed: &[Job]) -> bool {
        self.pending
            .iter()
            .filter(|(_, p)| p.pipeline == pipeline && p.lookup)
            .all(|(id, p)| failed.iter().any(|j| j.name == p.labels.name && j.id < *id))
    }

    /// Applies a lookup of `pipeline`: decides its waiting successes.
    pub fn looked_up(
        &mut self,
        pipeline: u64,
        answer: Lookup<'_>,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        if let Lookup::Found { failed, complete } = &answer {
            for j in failed.iter().filter(|j| j.status == JobStatus::Failed) {
                self.remember(pipeline, &j.name, j.id);
            }
            if *complete && pipeline >= self.pipeline_floor {
                self.failed.entry(pipeline).or_default().looked_up = true;
                self.evict();
            }
        }
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.pipeline == pipeline && p.lookup)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            let flaky = match &answer {
                Lookup::Found { failed, complete } => {
                    let found = failed.iter().any(|j| {
                        j.status == JobStatus::Failed && j.name == p.labels.name && j.id < id
                    });
                    if !found && !complete {
                        outcome.undecided += 1;
                    }
                    found
                }
                Lookup::NotFound => false,
                Lookup::Failed => {
                    p.tries += 1;
                    if p.tries < MAX_LOOKUP_TRIES {
                        continue;
                    }
                    outcome.undecided += 1;
                    false
                }
            };
            if let Some(p) = self.pending.remove(&id)
                && flaky
            {
                outcome.flaky += 1;
                events.push(Event::Flaky { labels: p.labels });
            }
        }
        outcome
    }
}

enum Verdict {
    NotFlaky,
    /// The tracker may learn what decides it.
    Wait,
    /// Only a lookup decides it.
    Lookup,
}

#[cfg(test)]
mod tests;
