//! What a correct exporter should report, computed from the world at a given time.

use std::collections::BTreeMap;

use super::world::{JobPlan, Ms, World, is_final};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobKey {
    pub project: String,
    pub ref_: String,
    pub stage: String,
    pub job: String,
    pub status: String,
    /// The reason for `failed` (`unknown_failure` if none), `""` for other statuses.
    pub failure_reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationKey {
    pub project: String,
    pub ref_: String,
    pub stage: String,
    pub job: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueuedKey {
    pub project: String,
    pub ref_: String,
    pub stage: String,
    pub job: String,
}

/// Completed jobs by the runner GitLab shows for them (`""` twice: never ran).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerKey {
    pub project: String,
    pub description: String,
    pub runner_type: String,
    pub status: String,
}

/// A counted failed job by its class (`gitlab_ci_job_failures_total`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailureKey {
    pub project: String,
    pub ref_: String,
    pub stage: String,
    pub job: String,
    /// As in [`JobKey`]: `unknown_failure` when GitLab gives none.
    pub failure_reason: String,
    /// One of [`crate::FAILURE_CLASSES`], `other`, `unavailable` or `log_too_large`.
    pub class: String,
}

/// A counted success whose pipeline holds an earlier failed attempt of the same name
/// (`gitlab_ci_job_flaky_total`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlakyKey {
    pub project: String,
    pub ref_: String,
    pub stage: String,
    pub job: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GroundTruth {
    /// The counted jobs of `jobs_total` again, by runner.
    pub jobs_by_runner: BTreeMap<RunnerKey, u64>,
    /// Completed jobs, each counted once.
    pub jobs_total: BTreeMap<JobKey, u64>,
    /// Seconds from `started_at` to `finished_at` of the counted jobs that ran, ascending job id.
    pub duration: BTreeMap<DurationKey, Vec<f64>>,
    /// Seconds from `queued_at` to `started_at` of every job that started (not ignored).
    pub queued: BTreeMap<QueuedKey, Vec<f64>>,
    /// Jobs not in a final status, by `(project, status)`; unknown statuses included.
    pub active: BTreeMap<(String, String), u64>,
    /// Per project, the earliest `queued_at` (unix seconds) of the jobs now `pending`.
    pub oldest_pending: BTreeMap<String, f64>,
    /// The counted failed jobs of `jobs_total` again, by the class their log gets with the
    /// world's `LogLimits` (`Simulator::set_log_limits`).
    pub failures: BTreeMap<FailureKey, u64>,
    /// Counted successes that passed after an earlier failed attempt in their pipeline (the
    /// attempt may be older than the cutoff).
    pub flaky: BTreeMap<FlakyKey, u64>,
}

impl GroundTruth {
    pub fn total_jobs(&self) -> u64 {
        self.jobs_total.values().sum()
    }

    /// Counted jobs with this final status.
    pub fn jobs_with_status(&self, status: &str) -> u64 {
        self.jobs_total
            .iter()
            .filter(|(k, _)| k.status == status)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total_active(&self) -> u64 {
        self.active.values().sum()
    }

    pub fn duration_count(&self) -> usize {
        self.duration.values().map(Vec::len).sum()
    }

    pub fn queued_count(&self) -> usize {
        self.queued.values().map(Vec::len).sum()
    }

    /// Counted failed jobs of this class.
    pub fn failures_with_class(&self, class: &str) -> u64 {
        (self.failures.iter())
            .filter(|(k, _)| k.class == class)
            .map(|(_, n)| n)
            .sum()
    }

    /// Counted failed jobs per class.
    pub fn failures_by_class(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (k, n) in &self.failures {
            *out.entry(k.class.clone()).or_default() += n;
        }
        out
    }

    pub fn total_failures(&self) -> u64 {
        self.failures.values().sum()
    }

    pub fn total_flaky(&self) -> u64 {
        self.flaky.values().sum()
    }
}

impl World {
    /// Adds a counted job to [`GroundTruth::failures`] or [`GroundTruth::flaky`].
    fn failure_and_flaky_truth(
        &self,
        truth: &mut GroundTruth,
        job: &JobPlan,
        project: &str,
        now: Ms,
    ) {
        let flaky = job.status_at(now) == Some("success")
            && self
                .pipeline_jobs(job.pipeline_id)
                .any(|o| o.name == job.name && o.id < job.id && o.status_at(now) == Some("failed"));
        if flaky {
            let key = FlakyKey {
                project: project.to_owned(),
                ref_: job.ref_.clone(),
                stage: job.stage.clone(),
                job: job.name.clone(),
            };
            *truth.flaky.entry(key).or_default() += 1;
        }
        if let Some(class) = self.failure_class(job) {
            let key = FailureKey {
                project: project.to_owned(),
                ref_: job.ref_.clone(),
                stage: job.stage.clone(),
                job: job.name.clone(),
                failure_reason: job
                    .failure_reason
                    .as_deref()
                    .unwrap_or("unknown_failure")
                    .to_owned(),
                class: class.to_owned(),
            };
            *truth.failures.entry(key).or_default() += 1;
        }
    }

    /// The truth at `now` for an exporter that ignores jobs completed before `cutoff_ms`.
    ///
    /// A job's completion time is its `finished_at`; a skipped job has none in GitLab, so its
    /// `created_at` (the only time the API shows for it) stands in.
    pub fn ground_truth(&self, now: Ms, cutoff_ms: Ms) -> GroundTruth {
        self.ground_truth_since(now, cutoff_ms, None)
    }

    /// Like [`World::ground_truth`], for an exporter whose first poll was at `first_poll_ms`:
    /// a job still unfinished then is counted whenever it completes, even a skipped one created
    /// before the cutoff (the exporter saw it waiting and then saw it skipped).
    pub fn ground_truth_since(
        &self,
        now: Ms,
        cutoff_ms: Ms,
        first_poll_ms: Option<Ms>,
    ) -> GroundTruth {
        let mut truth = GroundTruth::default();
        let sec = |ms: Ms| ms as f64 / 1000.0;
        for job in self.jobs() {
            let (Some(status), Some(project)) = (job.status_at(now), self.project(job.project_id))
            else {
                continue;
            };
            let project = &project.path_with_namespace;
            let started = job.started_at(now);
            if is_final(status) {
                let finished = job.finished_at(now);
                let after_first_poll = first_poll_ms
                    .is_some_and(|first| job.completed_at(now).is_some_and(|c| c > first));
                if finished.unwrap_or(job.created_at_ms) < cutoff_ms && !after_first_poll {
                    continue;
                }
                let failure_reason = match status {
                    "failed" => job.failure_reason.as_deref().unwrap_or("unknown_failure"),
                    _ => "",
                };
                let key = JobKey {
                    project: project.clone(),
                    ref_: job.ref_.clone(),
                    stage: job.stage.clone(),
                    job: job.name.clone(),
                    status: status.to_owned(),
                    failure_reason: failure_reason.to_owned(),
                };
                *truth.jobs_total.entry(key).or_default() += 1;
                self.failure_and_flaky_truth(&mut truth, job, project, now);
                let runner = job.runner_at(now);
                let key = RunnerKey {
                    project: project.clone(),
                    description: runner.map(|r| r.description.clone()).unwrap_or_default(),
                    runner_type: runner.map(|r| r.runner_type.clone()).unwrap_or_default(),
                    status: status.to_owned(),
                };
                *truth.jobs_by_runner.entry(key).or_default() += 1;
                if let (Some(s), Some(f)) = (started, finished) {
                    let key = DurationKey {
                        project: project.clone(),
                        ref_: job.ref_.clone(),
                        stage: job.stage.clone(),
                        job: job.name.clone(),
                        status: status.to_owned(),
                    };
                    truth.duration.entry(key).or_default().push(sec(f - s));
                }
            } else {
                // Statuses outside GitLab's 13 share one label value (bounded cardinality).
                let shown = if super::world::STATUSES.contains(&status) {
                    status
                } else {
                    "unknown"
                };
                *truth
                    .active
                    .entry((project.clone(), shown.to_owned()))
                    .or_default() += 1;
                if let Some(q) = job.queued_at(now).filter(|_| status == "pending") {
                    let oldest = truth
                        .oldest_pending
                        .entry(project.clone())
                        .or_insert(f64::MAX);
                    *oldest = oldest.min(sec(q));
                }
            }
            if let (Some(_), Some(q)) = (started, job.queued_duration_ms(now)) {
                let key = QueuedKey {
                    project: project.clone(),
                    ref_: job.ref_.clone(),
                    stage: job.stage.clone(),
                    job: job.name.clone(),
                };
                truth.queued.entry(key).or_default().push(sec(q));
            }
        }
        truth
    }
}
