//! A project's failed jobs waiting for their failure class (`[failures] classify = true`).
//!
//! A failed job is queued in the lock scope in which the tracker counts it (a polled page or a
//! hook, `Project::publish`), with the labels it was counted under:
//! the tracker counts a job once, so it is queued once, whoever saw it. Each cycle then reads
//! the logs of a few queued jobs ([`PER_CYCLE`], see `cycle::classify`) and counts each in
//! `gitlab_ci_job_failures_total` in the lock scope that takes it off the queue. The queue is
//! checkpointed with the tracker and the series, so a job is classified exactly once across
//! restarts: a checkpoint sees it either queued or counted, never both, never neither.
//!
//! Bounded: at most [`MAX_PENDING`] per project; a failed job beyond that is counted at once
//! as `unavailable` (result `overflow` in the own metrics), never dropped silently. A job
//! whose log cannot be read ([`MAX_TRIES`] tries, across cycles) is `unavailable` too.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::failures::Classifier;
use crate::metrics::Metrics;
use crate::model::JobStatus;
pub use crate::persist::PendingClass as Pending;
use crate::tracker::Event;

/// Failed jobs waiting per project, at most.
pub const MAX_PENDING: usize = 1_000;
/// Logs read per project per cycle, at most (each one request through the budget).
pub const PER_CYCLE: usize = 10;
/// Reads of a job's log that may fail (404, 403, errors) before it is
/// `unavailable`; one per cycle at most, so a passing outage of GitLab is waited out.
pub const MAX_TRIES: u32 = 3;

/// What classifying takes: the rules and the bounds of a log read (`[failures]`).
#[derive(Debug, Clone)]
pub struct ClassifyConfig {
    pub classifier: Arc<Classifier>,
    pub tail_bytes: usize,
    pub max_log_bytes: u64,
}

impl ClassifyConfig {
    /// From `[failures]`; `None` when classifying is off.
    pub fn from_settings(cfg: &crate::config::Settings) -> Option<Self> {
        let f = &cfg.failures;
        f.classify.then(|| Self {
            classifier: f.classifier.clone(),
            tail_bytes: f.tail_bytes,
            max_log_bytes: f.max_log_bytes,
        })
    }
}

/// The queue (checkpointed) and whether classifying is on (configuration, not saved).
#[derive(Debug, Clone, Default)]
pub struct Followups {
    pending: VecDeque<Pending>,
    config: Option<ClassifyConfig>,
    /// Pending jobs counted in the gauge for this project.
    reported: i64,
}

/// How reading one job's log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its class (from the tail, or `log_too_large`), and the own-metrics result.
    Class(String, &'static str),
    /// No log this time (404, 403, errors): tried again next cycle, up to MAX_TRIES.
    Failed,
}

impl Followups {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn config(&self) -> Option<&ClassifyConfig> {
        self.config.as_ref()
    }

    pub fn set_config(&mut self, config: Option<ClassifyConfig>) {
        self.config = config;
    }

    /// The queue, for a checkpoint.
    pub fn checkpoint(&self) -> Vec<Pending> {
        self.pending.iter().cloned().collect()
    }

    /// Takes up a checkpoint's queue (the configuration stays). With classifying off now,
    /// the saved jobs are dropped: their class would never come (counted nowhere: the
    /// metric is only for jobs classified).
    pub fn restore(&mut self, saved: Vec<Pending>) {
        if self.config.is_some() {
            self.pending = saved.into_iter().take(MAX_PENDING).collect();
        }
    }

    /// Queues the failed jobs among `events` (labels as counted; `origin[i]` is the job id
    /// of `events[i]`). A job already queued is not queued again; beyond [`MAX_PENDING`] a
    /// job is counted `unavailable` at once.
    pub fn enqueue(&mut self, project: &str, events: &[Event], origin: &[u64], metrics: &Metrics) {
        if self.config.is_none() {
            return;
        }
        for (e, job) in events.iter().zip(origin) {
            let Event::Completed {
                labels,
                status: JobStatus::Failed,
                failure_reason,
                ..
            } = e
            else {
                continue;
            };
            if self.pending.iter().any(|p| p.job == *job) {
                continue;
            }
            if self.pending.len() >= MAX_PENDING {
                metrics.count_failure(
                    project,
                    labels,
                    failure_reason,
                    crate::failures::UNAVAILABLE,
                );
                metrics.failure_classification("overflow");
                continue;
            }
            self.pending.push_back(Pending {
                job: *job,
                labels: labels.clone(),
                failure_reason: failure_reason.clone(),
                tries: 0,
            });
        }
        self.sync_gauge(metrics);
    }

    /// The jobs whose logs this cycle reads (oldest first).
    pub fn plan(&self) -> Vec<u64> {
        self.pending.iter().take(PER_CYCLE).map(|p| p.job).collect()
    }

    /// Applies how reading job `job`'s log ended: counted (and off the queue) once its class
    /// is known, or after [`MAX_TRIES`] failed reads as `unavailable`.
    pub fn settle(&mut self, project: &str, job: u64, outcome: Outcome, metrics: &Metrics) {
        let Some(at) = self.pending.iter().position(|p| p.job == job) else {
            // Settled meanwhile (cannot happen: one cycle per project at a time).
            return;
        };
        let (class, result) = match outcome {
            Outcome::Class(class, result) => (class, result),
            Outcome::Failed => {
                let p = &mut self.pending[at];
                p.tries += 1;
                if p.tries < MAX_TRIES {
                    // To the back: the others are not held up by one unreadable log.
                    if let Some(p) = self.pending.remove(at) {
                        self.pending.push_back(p);
                    }
                    return;
                }
                (crate::failures::UNAVAILABLE.to_string(), "unavailable")
            }
        };
        if let Some(p) = self.pending.remove(at) {
            metrics.count_failure(project, &p.labels, &p.failure_reason, &class);
            metrics.failure_classification(result);
        }
        self.sync_gauge(metrics);
    }

    /// Brings the pending gauge up to date with this project's queue.
    pub fn sync_gauge(&mut self, metrics: &Metrics) {
        let now = self.pending.len() as i64;
        metrics.add_pending_classifications(now - self.reported);
        self.reported = now;
    }

    /// Out of the gauge (the project is paused or forgotten); the queue stays.
    pub fn unreport(&mut self, metrics: &Metrics) {
        metrics.add_pending_classifications(-self.reported);
        self.reported = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::JobLabels;

    fn metrics() -> Metrics {
        Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics")
    }

    fn failed(name: &str) -> Event {
        Event::Completed {
            labels: JobLabels {
                ref_: "main".into(),
                stage: "test".into(),
                name: name.into(),
                tag: false,
                runner: None,
            },
            status: JobStatus::Failed,
            failure_reason: "script_failure".into(),
            duration: Some(1.0),
            finished_at: None,
        }
    }

    fn on() -> Followups {
        let mut f = Followups::default();
        f.set_config(Some(ClassifyConfig {
            classifier: Arc::new(Classifier::with_defaults()),
            tail_bytes: 1024,
            max_log_bytes: 4096,
        }));
        f
    }

    fn line<'a>(page: &'a str, class: &str) -> Option<&'a str> {
        page.lines().find(|l| {
            l.starts_with("gitlab_ci_job_failures_total{")
                && l.contains(&format!("class=\"{class}\""))
        })
    }

    /// A project whose hooks arrive is reconciled only every `webhook.reconcile_interval`;
    /// a failed job waiting for its class is read at the normal pace (a hook's failure
    /// classified within a poll interval).
    #[test]
    fn waiting_classes_keep_a_hooked_project_paced() {
        use crate::model::Activity;
        use crate::project::state::{NextPoll, Project};
        let m = metrics();
        let mut p = Project::new(
            crate::config::ProjectRef::Id(5),
            std::time::Duration::from_secs(3600),
            Default::default(),
            (0, 1),
        );
        p.resolved = Some((5, "g/p".into()));
        p.followups = on();
        p.tracker.complete_cycle(Some(1), Some(1));
        p.set_hook_state(crate::project::hooks::HookState::Receiving, &m);
        let interval = std::time::Duration::from_secs(30);
        assert_eq!(p.next_poll(interval), NextPoll::Reconcile);
        p.followups.enqueue("g/p", &[failed("a")], &[2], &m);
        assert_eq!(p.next_poll(interval), NextPoll::Paced(Activity::Busy));
        p.followups
            .settle("g/p", 2, Outcome::Class("oom".into(), "classified"), &m);
        assert_eq!(p.next_poll(interval), NextPoll::Reconcile);
    }

    #[test]
    fn off_queues_nothing() {
        let m = metrics();
        let mut f = Followups::default();
        f.enqueue("g/p", &[failed("a")], &[1], &m);
        assert!(f.is_empty());
    }

    #[test]
    fn a_job_is_counted_once_with_its_class_or_unavailable_after_three_tries() {
        let m = metrics();
        let mut f = on();
        let mut success = failed("ok");
        if let Event::Completed { status, .. } = &mut success {
            *status = JobStatus::Success;
        }
        f.enqueue("g/p", &[failed("a"), failed("b"), success], &[1, 2, 3], &m);
        // Queued again (a duplicate hook): still once.
        f.enqueue("g/p", &[failed("a")], &[1], &m);
        assert_eq!(f.plan(), vec![1, 2]);
        f.settle("g/p", 1, Outcome::Class("oom".into(), "classified"), &m);
        f.settle("g/p", 1, Outcome::Class("oom".into(), "classified"), &m);
        for _ in 0..MAX_TRIES - 1 {
            f.settle("g/p", 2, Outcome::Failed, &m);
            assert_eq!(f.plan(), vec![2]);
        }
        f.settle("g/p", 2, Outcome::Failed, &m);
        assert!(f.is_empty());
        let page = m.render().expect("render");
        let oom = line(&page, "oom").expect("oom line");
        assert!(oom.contains("job=\"a\"") && oom.ends_with(" 1"), "{oom}");
        let unavailable = line(&page, "unavailable").expect("unavailable line");
        assert!(
            unavailable.contains("job=\"b\"") && unavailable.ends_with(" 1"),
            "{page}"
        );
        assert!(
            page.contains(
                "gitlab_jobs_exporter_failure_classifications_total{result=\"classified\"} 1"
            ),
            "{page}"
        );
        assert!(
            page.contains(
                "gitlab_jobs_exporter_failure_classifications_total{result=\"unavailable\"} 1"
            ),
            "{page}"
        );
        assert!(
            page.contains("gitlab_jobs_exporter_failure_classifications_pending 0"),
            "{page}"
        );
    }

    #[test]
    fn a_full_queue_counts_the_overflow_as_unavailable() {
        let m = metrics();
        let mut f = on();
        let events: Vec<Event> = (0..=MAX_PENDING).map(|_| failed("x")).collect();
        let ids: Vec<u64> = (1..=events.len() as u64).collect();
        f.enqueue("g/p", &events, &ids, &m);
        assert_eq!(f.len(), MAX_PENDING);
        let page = m.render().expect("render");
        assert!(
            line(&page, "unavailable").is_some_and(|l| l.ends_with(" 1")),
            "{page}"
        );
        assert!(page.contains("result=\"overflow\"} 1"), "{page}");
        assert!(
            page.contains(&format!(
                "gitlab_jobs_exporter_failure_classifications_pending {MAX_PENDING}"
            )),
            "{page}"
        );
    }

    #[test]
    fn the_queue_survives_a_checkpoint_and_old_checkpoints_load() {
        let m = metrics();
        let mut f = on();
        f.enqueue("g/p", &[failed("a")], &[7], &m);
        let json = serde_json::to_string(&f.checkpoint()).expect("encode");
        let mut back = on();
        back.restore(serde_json::from_str(&json).expect("decode"));
        assert_eq!(back.plan(), vec![7]);
        // Classifying off since: nothing restored.
        let mut off = Followups::default();
        off.restore(serde_json::from_str(&json).expect("decode"));
        assert!(off.is_empty());
    }
}
