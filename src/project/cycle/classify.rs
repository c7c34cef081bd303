//! The cycle's last step with `[failures] classify = true`: the logs of a few failed jobs
//! waiting for their class ([`crate::project::followups`]), one trace request each through
//! the budget. Planned under the lock, read without it, each settled under the lock again
//! (counted and taken off the queue in one step). A log that cannot be read never fails the
//! cycle: the job is tried again next cycle, and is `unavailable` after a few tries; an empty
//! log (erased, or a job that never ran) is `unavailable` at once.

use tracing::{debug, warn};

use super::Cycle;
use crate::failures::{LOG_TOO_LARGE, UNAVAILABLE};
use crate::gitlab::{ApiError, Trace};
use crate::project::followups::Outcome;

/// How long one cycle may spend reading logs before it leaves the rest for the next one.
const STEP_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

impl Cycle<'_> {
    pub(super) async fn classify(&mut self) {
        let (plan, config) = {
            let p = self.lock();
            let Some(config) = p.followups.config().cloned() else {
                return;
            };
            (p.followups.plan(), config)
        };
        // Logs are read while the project's cycle (and a fleet poll permit) is held: a slow
        // GitLab must not keep the job list unpolled, so the step stops after a while and
        // leaves the rest queued (no try counted).
        let started = std::time::Instant::now();
        for job in plan {
            if started.elapsed() > STEP_BUDGET {
                debug!(project = %self.label, "failure classes: step budget spent; the rest waits for the next cycle");
                break;
            }
            let read = self
                .client
                .trace(&self.api_id, job, config.tail_bytes, config.max_log_bytes)
                .await;
            self.stats.requests += 1;
            self.stats.traces += 1;
            let outcome = match read {
                Ok(Trace::TooLarge) => Outcome::Class(LOG_TOO_LARGE.to_string(), "log_too_large"),
                // Erased (or the job never ran): GitLab has no log to give, now or later.
                Ok(Trace::Tail(tail)) if tail.is_empty() => {
                    Outcome::Class(UNAVAILABLE.to_string(), "unavailable")
                }
                Ok(Trace::Tail(tail)) => {
                    // Escapes and section markers are stripped by the classifier.
                    let verdict = config.classifier.classify(&tail);
                    Outcome::Class(verdict.class.to_string(), "classified")
                }
                Err(e) => {
                    self.log_unreadable(job, &e);
                    Outcome::Failed
                }
            };
            let mut p = self.lock();
            let label = p.label();
            p.followups.settle(&label, job, outcome, self.metrics);
        }
    }

    /// Why a log could not be read: GitLab's status and message (never any of the log).
    fn log_unreadable(&self, job: u64, e: &ApiError) {
        match e.status() {
            Some(403) => warn!(project = %self.label, job, endpoint = "trace", error = %e,
                "the token may not read this job's log (403); its failure class will be unavailable"),
            Some(404) => debug!(project = %self.label, job, endpoint = "trace", error = %e,
                "job log not found (404)"),
            _ => warn!(project = %self.label, job, endpoint = "trace", error = %e,
                "cannot read a failed job's log; trying again next cycle"),
        }
    }
}
