//! `gitlab_ci_job_flaky_total{project,ref,stage,job}`: successes that passed after an earlier
//! failed attempt of the same name in the same pipeline, each counted once (decided in
//! `project::attempts`). A job series family like `gitlab_ci_jobs_total`: the same label
//! policy (`ref`, `stage`, `job` as rewritten or dropped), the same `limits.max_series` cap
//! (new series folded into `job="__other__"`), kept in [`ProjectSeries::flaky`] so it is
//! checkpointed, renamed and removed with the project's other series. Also the own counters
//! of the flaky checks.

use std::collections::BTreeMap;
use std::io::Write as _;

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use super::jobs::{self, Block, Key, OVERFLOW, ProjectSeries};
use crate::labels::LabelsConfig;
use crate::tracker::{Event, JobLabels};

pub const FLAKY_TOTAL: &str = "gitlab_ci_job_flaky_total";
pub const FLAKY_HELP: &str = "Successful GitLab CI jobs that passed after an earlier attempt with the same name in the same pipeline had failed (a retry), each counted once.";

/// Every label of the family after `project`, in key order.
const FULL: [&str; 3] = ["ref", "stage", "job"];

/// The family's labels under a label policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub names: Vec<&'static str>,
    /// Key positions set to [`OVERFLOW`] once the family is full: `job`, else `ref` and `stage`.
    overflow: Vec<usize>,
}

impl Layout {
    pub fn new(policy: &LabelsConfig) -> Self {
        let names: Vec<&'static str> = FULL.into_iter().filter(|n| policy.keeps(n)).collect();
        let at = |wanted: &[&str]| -> Vec<usize> {
            (0..names.len())
                .filter(|i| wanted.contains(&names[*i]))
                .collect()
        };
        let job = at(&["job"]);
        let overflow = if job.is_empty() {
            at(&["ref", "stage"])
        } else {
            job
        };
        Self { names, overflow }
    }

    fn key(&self, labels: &JobLabels) -> Vec<String> {
        self.names
            .iter()
            .map(|n| match *n {
                "ref" => labels.ref_.clone(),
                "stage" => labels.stage.clone(),
                _ => labels.name.clone(),
            })
            .collect()
    }
}

/// Series of the family over all projects.
pub fn used(jobs: &BTreeMap<String, ProjectSeries>) -> usize {
    jobs.values().map(|s| s.flaky.len()).sum()
}

/// Counts the [`Event::Flaky`] of `events` in `series`, within `max` series over all projects
/// (`used` so far). Returns whether a series was folded into the overflow series.
pub fn apply(
    series: &mut BTreeMap<Key, u64>,
    events: &[Event],
    layout: &Layout,
    max: usize,
    mut used: usize,
) -> bool {
    let mut folded = false;
    for e in events {
        let Event::Flaky { labels } = e else {
            continue;
        };
        let mut key = layout.key(labels);
        if !series.contains_key(&key) {
            if used >= max && !layout.overflow.is_empty() {
                for &i in &layout.overflow {
                    key[i] = OVERFLOW.to_string();
                }
                folded = true;
            }
            if !series.contains_key(&key) {
                used += 1;
            }
        }
        *jobs::entry(series, key, &layout.names) += 1;
    }
    folded
}

/// After a restore: drops keys of another label count (cannot happen under the same policy,
/// which the caller checks) and renders the label blocks. Returns how many were dropped.
pub fn restored(series: &mut BTreeMap<Key, u64>, layout: &Layout) -> usize {
    let before = series.len();
    *series = std::mem::take(series)
        .into_iter()
        .filter(|(k, _)| k.len() == layout.names.len())
        .map(|(k, v)| (Key::labelled(k.to_vec(), &layout.names), v))
        .collect();
    before - series.len()
}

/// The family in the text format, byte for byte what `TextEncoder` writes (see the tests);
/// `None` when no project has a series.
pub fn render(jobs: &impl super::text::Projects, layout: &Layout) -> Option<Vec<u8>> {
    if jobs.each().all(|(_, s)| s.flaky.is_empty()) {
        return None;
    }
    let mut out = Vec::with_capacity(256);
    let mut help = String::new();
    super::text::escape_into(&mut help, FLAKY_HELP, false);
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "# HELP {FLAKY_TOTAL} {help}\n# TYPE {FLAKY_TOTAL} counter\n"
    );
    for (project, series) in jobs.each() {
        let mut quoted = String::new();
        super::text::escape_into(&mut quoted, project, true);
        for (key, n) in &series.flaky {
            let made;
            let block = match key.block() {
                Some(b) => b,
                None => {
                    made = Block::new(&layout.names, key);
                    &made
                }
            };
            let (before, after) = block.halves();
            let _ = writeln!(
                out,
                "{FLAKY_TOTAL}{{{before}project=\"{quoted}\"{after}}} {}",
                *n as f64
            );
        }
    }
    Some(out)
}

/// The own counters of the flaky checks.
pub(super) struct Own {
    pub lookups: IntCounterVec,
    pub undecided: IntCounter,
}

impl Own {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let lookups = IntCounterVec::new(
            Opts::new(
                "gitlab_jobs_exporter_flaky_lookups_total",
                "Lookups of a pipeline's failed attempts (GET /projects/:id/pipelines/:pipeline_id/jobs?include_retried=true&scope[]=failed) to decide whether successes were flaky, by result: decided, not_found (pipeline gone: not flaky), error.",
            ),
            &["result"],
        )?;
        let undecided = IntCounter::new(
            "gitlab_jobs_exporter_flaky_undecided_total",
            "Successes counted not flaky without certainty: their pipeline's failed attempts could not be read (lookups kept failing, or limits were reached).",
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(undecided.clone()))?;
        Ok(Self { lookups, undecided })
    }
}

impl super::Metrics {
    /// A lookup of a pipeline's failed attempts ended with `result`.
    pub fn flaky_lookup(&self, result: &str) {
        if let Some(c) = super::with(&self.flaky.lookups, &[result]) {
            c.inc();
        }
    }

    /// `n` successes were counted not flaky without certainty.
    pub fn flaky_undecided(&self, n: usize) {
        self.flaky.undecided.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Encoder;
    use prometheus::proto::{self, MetricType};

    use super::*;
    use crate::labels::{Droppable, JobMode};

    fn flaky(ref_: &str, name: &str) -> Event {
        Event::Flaky {
            labels: JobLabels {
                ref_: ref_.into(),
                stage: "test".into(),
                name: name.into(),
                tag: false,
                runner: None,
            },
        }
    }

    /// What the `prometheus` crate's encoder writes for the same series.
    fn encoded(jobs: &BTreeMap<String, ProjectSeries>, layout: &Layout) -> String {
        let mut family = proto::MetricFamily::default();
        family.set_name(FLAKY_TOTAL.into());
        family.set_help(FLAKY_HELP.into());
        family.set_field_type(MetricType::COUNTER);
        let mut metrics = Vec::new();
        for (project, s) in jobs {
            for (key, n) in &s.flaky {
                let mut pairs: Vec<(String, String)> = layout
                    .names
                    .iter()
                    .map(|n| n.to_string())
                    .zip(key.iter().cloned())
                    .collect();
                pairs.push(("project".into(), project.clone()));
                pairs.sort();
                let labels = pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let mut l = proto::LabelPair::default();
                        l.set_name(k);
                        l.set_value(v);
                        l
                    })
                    .collect();
                let mut m = proto::Metric::from_label(labels);
                let mut c = proto::Counter::default();
                c.set_value(*n as f64);
                m.set_counter(c);
                metrics.push(m);
            }
        }
        family.set_metric(metrics);
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&[family], &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn renders_as_the_encoder_does_under_each_policy() {
        let policies = [
            LabelsConfig::default(),
            LabelsConfig {
                drop: vec![Droppable::Ref],
                ..Default::default()
            },
            LabelsConfig {
                job: JobMode::Normalized,
                drop: vec![Droppable::Job],
                ..Default::default()
            },
        ];
        for policy in policies {
            let layout = Layout::new(&policy);
            let mut jobs = BTreeMap::new();
            let events = [
                flaky("main", "rspec"),
                flaky("main", "rspec"),
                flaky("fix \"quotes\"\\n", "lint"),
            ];
            for project in ["g/a", "g/b\"x"] {
                let s: &mut ProjectSeries = jobs.entry(project.to_string()).or_default();
                apply(&mut s.flaky, &events, &layout, usize::MAX, 0);
            }
            let text = String::from_utf8(render(&jobs, &layout).unwrap()).unwrap();
            assert_eq!(text, encoded(&jobs, &layout), "{policy:?}");
            assert_eq!(used(&jobs), 2 * jobs["g/a"].flaky.len());
        }
        assert_eq!(
            render(
                &BTreeMap::<String, ProjectSeries>::new(),
                &Layout::new(&Default::default())
            ),
            None
        );
    }

    #[test]
    fn the_cap_folds_new_series_into_the_overflow_job() {
        let layout = Layout::new(&LabelsConfig::default());
        let mut s = BTreeMap::new();
        let events: Vec<Event> = (0..5).map(|i| flaky("main", &format!("j{i}"))).collect();
        assert!(apply(&mut s, &events, &layout, 2, 0));
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s.values().sum::<u64>(), 5, "no count lost");
        let other = vec!["main".to_string(), "test".into(), OVERFLOW.into()];
        assert_eq!(s.get(&other), Some(&3));
        // With job dropped, ref and stage fold.
        let layout = Layout::new(&LabelsConfig {
            drop: vec![Droppable::Job],
            ..Default::default()
        });
        let mut s = BTreeMap::new();
        let events: Vec<Event> = (0..3).map(|i| flaky(&format!("r{i}"), "x")).collect();
        assert!(apply(&mut s, &events, &layout, 1, 0));
        assert_eq!(
            s.get(&vec![OVERFLOW.to_string(), OVERFLOW.into()]),
            Some(&2)
        );
    }

    #[test]
    fn restored_keys_are_labelled_and_odd_ones_dropped() {
        let layout = Layout::new(&LabelsConfig::default());
        let mut s: BTreeMap<Key, u64> = BTreeMap::new();
        s.insert(vec!["main".to_string(), "t".into(), "j".into()].into(), 2);
        s.insert(vec!["main".to_string()].into(), 1);
        assert_eq!(restored(&mut s, &layout), 1);
        assert!(s.keys().all(|k| k.block().is_some()));
    }
}
