//! `gitlab_ci_job_failures_total{project,ref,stage,job,failure_reason,class}`: failed jobs by
//! the class their log's tail gave (`[failures] classify`), counted once per job when its
//! class is known. A job series family like `gitlab_ci_jobs_total`: kept in each project's
//! [`ProjectSeries`] (so it is checkpointed, renamed and removed with them), under the same
//! label policy (`labels.drop` of ref, stage, job or failure_reason) and the same
//! `limits.max_series` cap (new series beyond it folded into `job="__other__"`). Rendered
//! through the encoder: a few series per job, not per run.
//!
//! Also the own metrics of classifying: results, and the jobs waiting.

use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use super::jobs::{Layout, OVERFLOW};
use super::{KNOWN_FAILURE_REASONS, Metrics, OTHER_FAILURE_REASON, lock, with};
use crate::tracker::JobLabels;

/// `result` values of `gitlab_jobs_exporter_failure_classifications_total`.
pub const RESULTS: &[&str] = &["classified", "unavailable", "log_too_large", "overflow"];

pub const FAILURES_TOTAL: &str = "gitlab_ci_job_failures_total";
pub const FAILURES_HELP: &str = "Failed GitLab CI jobs by the class of their log's tail (failures.classify), each counted once when its class is known; unavailable: the log could not be read.";

/// The labels after `project` under a label policy, in key order.
fn names(layout: &Layout) -> Vec<&'static str> {
    ["ref", "stage", "job", "failure_reason"]
        .into_iter()
        .filter(|n| layout.names[0].contains(n))
        .chain(std::iter::once("class"))
        .collect()
}

/// The exporter's own metrics of classifying.
pub(super) struct Own {
    results: IntCounterVec,
    pending: IntGauge,
}

impl Own {
    pub(super) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let results = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_failure_classifications_total",
                "Failed jobs given a class: classified (from the log's tail), unavailable (the log could not be read after a few tries), log_too_large (over failures.max_log_bytes), overflow (more failed jobs waiting than a project may queue; counted unavailable).",
            ),
            &["result"],
        )?;
        let pending = IntGauge::new(
            "gitlab_jobs_exporter_failure_classifications_pending",
            "Failed jobs whose log is still to be read for their class.",
        )?;
        registry.register(Box::new(results.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        for r in RESULTS {
            let _ = with(&results, &[r]);
        }
        Ok(Self { results, pending })
    }
}

impl Metrics {
    /// Counts one failed job of `project` (labels as counted in `gitlab_ci_jobs_total`) under
    /// `class`.
    pub fn count_failure(
        &self,
        project: &str,
        labels: &JobLabels,
        failure_reason: &str,
        class: &str,
    ) {
        let names = names(&self.layout);
        let reason = self.reason_label(failure_reason);
        let mut key: Vec<String> = names
            .iter()
            .map(|n| match *n {
                "ref" => labels.ref_.clone(),
                "stage" => labels.stage.clone(),
                "job" => labels.name.clone(),
                "failure_reason" => reason.clone(),
                _ => class.to_string(),
            })
            .collect();
        let mut jobs = self.lock_jobs();
        let exists = jobs
            .get(project)
            .is_some_and(|s| s.failures.contains_key(&key));
        if !exists {
            let used: usize = jobs.values().map(|s| s.failures.len()).sum();
            if used >= self.max_series {
                // Folded as the job families are: `job`, else what varies by job.
                let fold: &[&str] = if names.contains(&"job") {
                    &["job"]
                } else {
                    &["ref", "stage"]
                };
                for (n, v) in names.iter().zip(key.iter_mut()) {
                    if fold.contains(n) {
                        *v = OVERFLOW.to_string();
                    }
                }
            }
        }
        *jobs
            .entry(project.to_string())
            .or_default()
            .failures
            .entry(key.into())
            .or_default() += 1;
    }

    /// The failure reason as `gitlab_ci_jobs_total` shows it (see `bound_failure_reasons`).
    fn reason_label(&self, r: &str) -> String {
        if r.is_empty() || KNOWN_FAILURE_REASONS.contains(&r) || lock(&self.new_reasons).contains(r)
        {
            r.to_string()
        } else {
            OTHER_FAILURE_REASON.to_string()
        }
    }

    /// One result of classifying (`gitlab_jobs_exporter_failure_classifications_total`).
    pub fn failure_classification(&self, result: &str) {
        if let Some(c) = with(&self.failures.results, &[result]) {
            c.inc();
        }
    }

    pub fn add_pending_classifications(&self, delta: i64) {
        self.failures.pending.add(delta);
    }
}

/// The family over all projects, if any has a series.
pub(super) fn family(jobs: &impl super::text::Projects, layout: &Layout) -> Option<MetricFamily> {
    let names = names(layout);
    let mut metrics = Vec::new();
    for (project, series) in jobs.each() {
        for (key, n) in &series.failures {
            let mut pairs: Vec<LabelPair> = std::iter::once(("project", project))
                .chain(names.iter().copied().zip(key.iter().map(String::as_str)))
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.to_string());
                    l
                })
                .collect();
            // The text encoder expects labels sorted by name.
            pairs.sort_by(|a, b| a.name().cmp(b.name()));
            let mut m = proto::Metric::from_label(pairs);
            let mut c = proto::Counter::default();
            c.set_value(*n as f64);
            m.set_counter(c);
            metrics.push(m);
        }
    }
    if metrics.is_empty() {
        return None;
    }
    let mut f = MetricFamily::default();
    f.set_name(FAILURES_TOTAL.to_string());
    f.set_help(FAILURES_HELP.to_string());
    f.set_field_type(MetricType::COUNTER);
    f.set_metric(metrics);
    Some(f)
}
