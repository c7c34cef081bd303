//! Flaky jobs at the end of a cycle: successes whose pipeline the reads have now covered are
//! decided ([`Attempts::settle`](crate::tracker::attempts::Attempts::settle)); for those only
//! a lookup can decide (a pipeline older than what was listed), one request per pipeline,
//! `GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true&scope[]=failed`,
//! through the one pager and the one budget (`endpoint="pipeline_jobs"`).

use tracing::{debug, warn};

use super::Cycle;
use crate::gitlab::pager::{PageError, Pager, PipelineJobList};
use crate::model::{Job, JobStatus};
use crate::tracker::attempts::{Lookup, Outcome};

/// Pages of one pipeline's failed attempts read, at most (a pipeline with more than 1,000
/// failed attempts is decided on those).
pub const MAX_LOOKUP_PAGES: usize = 10;

impl Cycle<'_> {
    /// Decides what this cycle's reads allow, then looks up the pipelines only a lookup
    /// decides (at most `MAX_LOOKUPS_PER_CYCLE`). Never fails the cycle: a failed lookup is
    /// tried again next cycle, and given up after a few tries.
    pub(super) async fn settle_flaky(&mut self) {
        let lookups = {
            let mut guard = self.lock();
            let p = &mut *guard;
            let mut events = Vec::new();
            let outcome = p.attempts.settle(&p.tracker, &mut events);
            self.publish_flaky(p, events, outcome);
            p.attempts.lookups()
        };
        for pipeline in lookups {
            self.look_up(pipeline).await;
        }
    }

    /// One pipeline's failed attempts, applied.
    async fn look_up(&mut self, pipeline: u64) {
        let (answer, failed) = self.read_failed(pipeline).await;
        let answer = match &answer {
            Answer::Found { complete } => Lookup::Found {
                failed: &failed,
                complete: *complete,
            },
            Answer::NotFound => Lookup::NotFound,
            Answer::Failed => Lookup::Failed,
        };
        let result = match answer {
            Lookup::Found { .. } => "decided",
            Lookup::NotFound => "not_found",
            Lookup::Failed => "error",
        };
        self.metrics.flaky_lookup(result);
        let mut guard = self.lock();
        let p = &mut *guard;
        let mut events = Vec::new();
        let outcome = p.attempts.looked_up(pipeline, answer, &mut events);
        debug!(project = %self.label, pipeline, result, flaky = outcome.flaky, "looked up a pipeline's failed attempts");
        self.publish_flaky(p, events, outcome);
    }

    /// Reads a pipeline's failed attempts (retried ones included), stopping once they decide
    /// every success waiting on the pipeline.
    async fn read_failed(&mut self, pipeline: u64) -> (Answer, Vec<Job>) {
        let api_id = self.api_id.clone();
        let list = PipelineJobList {
            client: self.client,
            project: &api_id,
            pipeline,
            scopes: &[JobStatus::Failed],
        };
        let mut pager = Pager::new(list, MAX_LOOKUP_PAGES);
        let mut failed = Vec::new();
        let answer = loop {
            let next = pager.next().await;
            self.stats.requests += usize::from(!matches!(next, Err(PageError::Capped { .. })));
            match next {
                Ok(Some(page)) => {
                    let last = page.next().is_ok_and(|n| n.is_none());
                    failed.extend(
                        page.jobs
                            .into_iter()
                            // A job of another pipeline in the answer (a broken proxy, a
                            // look-alike) must not make this pipeline's passes flaky.
                            .filter(|j| {
                                j.status == JobStatus::Failed && j.pipeline_id() == Some(pipeline)
                            }),
                    );
                    // Every waiting success found flaky: the rest is not needed (but then
                    // the pipeline is not known whole).
                    if !last && self.lock().attempts.lookup_satisfied(pipeline, &failed) {
                        break Answer::Found { complete: false };
                    }
                }
                Ok(None) => break Answer::Found { complete: true },
                Err(PageError::Capped { .. }) => break Answer::Found { complete: false },
                Err(PageError::Api(e)) if e.status() == Some(404) => break Answer::NotFound,
                Err(e) => {
                    warn!(project = %self.label, endpoint = e.endpoint(), pipeline, error = %e,
                        "cannot read the pipeline's failed jobs to tell flaky ones; trying again next cycle");
                    if let Some(kind) = e.uncounted_kind() {
                        self.metrics.api_error(kind);
                    }
                    break Answer::Failed;
                }
            }
        };
        (answer, failed)
    }

    /// Flaky events to the job series, under the project's label policy (the caller holds
    /// the state lock: tracker, attempts and series change together).
    fn publish_flaky(
        &self,
        p: &mut crate::project::state::Project,
        events: Vec<crate::tracker::Event>,
        outcome: Outcome,
    ) {
        if outcome.undecided > 0 {
            self.metrics.flaky_undecided(outcome.undecided);
        }
        if !events.is_empty() {
            let label = p.label();
            // Flaky passes only: no failed job among them for the failure classes' queue.
            p.publish(&label, events, &[], self.metrics);
        }
    }
}

/// How a lookup ended (the failed jobs it read are kept beside it).
enum Answer {
    Found { complete: bool },
    NotFound,
    Failed,
}
