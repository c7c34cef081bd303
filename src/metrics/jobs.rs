//! The job metrics' values, kept in plain maps per project rather than in the `prometheus`
//! crate's vectors: its histograms cannot be restored, and counters must survive restarts
//! (a checkpoint holds each project's series next to its tracker, taken under the same lock).

use std::collections::BTreeMap;

use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use serde::{Deserialize, Serialize};

use crate::labels::{LabelsConfig, RunnerMode};
use crate::tracker::{Event, JobLabels};

pub const JOBS_TOTAL: &str = "gitlab_ci_jobs_total";
pub const DURATION: &str = "gitlab_ci_job_duration_seconds";
pub const QUEUED: &str = "gitlab_ci_job_queued_duration_seconds";

/// A histogram's state: per-bucket (not cumulative) counts for the configured bounds, the
/// overflow (+Inf) bucket last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hist {
    pub buckets: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Hist {
    fn observe(&mut self, bounds: &[f64], v: f64) {
        if self.buckets.len() != bounds.len() + 1 {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let i = bounds.partition_point(|b| *b < v);
        self.buckets[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// One project's job series. Keys are label values in the order of [`Layout::names`] of the
/// family (the labels after `project`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectSeries {
    #[serde(with = "pairs")]
    pub total: BTreeMap<Key, u64>,
    #[serde(with = "pairs")]
    pub duration: BTreeMap<Key, Hist>,
    #[serde(with = "pairs")]
    pub queued: BTreeMap<Key, Hist>,
    /// `gitlab_ci_job_failures_total` (see `super::failures`); absent in older checkpoints.
    #[serde(default, with = "pairs", skip_serializing_if = "BTreeMap::is_empty")]
    pub failures: BTreeMap<Key, u64>,
    /// `gitlab_ci_job_flaky_total` (see [`super::flaky`]); absent from older checkpoints.
    #[serde(default, with = "pairs", skip_serializing_if = "BTreeMap::is_empty")]
    pub flaky: BTreeMap<Key, u64>,
}

/// A series' key: its label values after `project` (compared, ordered and saved as just that
/// list), with its label block as the text format writes it, rendered once when the series is
/// made so a scrape only copies it (see [`super::text`]).
#[derive(Debug, Clone)]
pub struct Key {
    values: Vec<String>,
    /// `None` until labelled (a key read from a checkpoint: [`ProjectSeries::label`]).
    block: Option<Block>,
}

/// `name="value"` pairs of a series sorted by name as the text encoder writes them, escaped,
/// with the `project` pair left out (it is the same for all of a project's series, and a
/// renamed project keeps its blocks): `text[..split]` goes before it (each pair followed by a
/// comma), `text[split..]` after it (each preceded by one).
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub text: Box<str>,
    pub split: u32,
}

impl Block {
    pub fn new(names: &[&str], values: &[String]) -> Self {
        let mut pairs: Vec<(&str, &str)> = names
            .iter()
            .zip(values)
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut text = String::new();
        let mut split = None;
        for (n, v) in pairs {
            if n > "project" && split.is_none() {
                split = Some(text.len());
            }
            if split.is_some() {
                text.push(',');
            }
            text.push_str(n);
            text.push_str("=\"");
            super::text::escape_into(&mut text, v, true);
            text.push('"');
            if split.is_none() {
                text.push(',');
            }
        }
        let split = split.unwrap_or(text.len());
        Self {
            // A label block over 4 GiB cannot come from GitLab's bounded label values.
            split: u32::try_from(split).unwrap_or(u32::MAX),
            text: text.into_boxed_str(),
        }
    }

    /// The pairs before `project` and after it.
    pub fn halves(&self) -> (&str, &str) {
        let at = (self.split as usize).min(self.text.len());
        self.text.split_at_checked(at).unwrap_or((&self.text, ""))
    }
}

impl Key {
    /// A key for lookups only, without a label block.
    fn bare(values: Vec<String>) -> Self {
        Self {
            values,
            block: None,
        }
    }

    pub(super) fn labelled(values: Vec<String>, names: &[&str]) -> Self {
        let block = Some(Block::new(names, &values));
        Self { values, block }
    }

    pub fn block(&self) -> Option<&Block> {
        self.block.as_ref()
    }
}

impl std::ops::Deref for Key {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.values
    }
}

impl std::borrow::Borrow<Vec<String>> for Key {
    fn borrow(&self) -> &Vec<String> {
        &self.values
    }
}

impl From<Vec<String>> for Key {
    fn from(values: Vec<String>) -> Self {
        Self::bare(values)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.values.cmp(&other.values)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.values.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(d).map(Self::bare)
    }
}

/// The entry of `values` in `map`, made (with its label block) if new.
pub(super) fn entry<'m, V: Default>(
    map: &'m mut BTreeMap<Key, V>,
    values: Vec<String>,
    names: &[&str],
) -> &'m mut V {
    let key = if map.contains_key(&values) {
        Key::bare(values)
    } else {
        Key::labelled(values, names)
    };
    map.entry(key).or_default()
}

/// Every label a job family can have after `project`, in key order: counter, duration, queued.
/// `labels.runner` and `labels.drop` select among them.
const FULL: [&[&str]; 3] = [
    &["ref", "stage", "job", "runner", "status", "failure_reason"],
    &["ref", "stage", "job", "runner", "status"],
    &["ref", "stage", "job", "runner"],
];

/// The labels (after `project`) of the three job families under a label policy, and how the
/// runner label is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub names: [Vec<&'static str>; 3],
    runner: RunnerMode,
    /// Per family, the key positions that [`OVERFLOW`] is written to once the family is full:
    /// `job`, or, with `job` dropped, every other label that varies by job (ref, stage, runner).
    overflow: [Vec<usize>; 3],
}

impl Default for Layout {
    fn default() -> Self {
        Self::new(&LabelsConfig::default())
    }
}

impl Layout {
    pub fn new(policy: &LabelsConfig) -> Self {
        let names = FULL.map(|all| {
            all.iter()
                .copied()
                .filter(|n| policy.keeps(n))
                .collect::<Vec<_>>()
        });
        let overflow = names.clone().map(|names| {
            let at = |wanted: &[&str]| -> Vec<usize> {
                names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| wanted.contains(n))
                    .map(|(i, _)| i)
                    .collect()
            };
            let job = at(&["job"]);
            if job.is_empty() {
                at(&["ref", "stage", "runner"])
            } else {
                job
            }
        });
        Self {
            names,
            runner: policy.runner,
            overflow,
        }
    }

    /// The key of family `f` for a job's (already rewritten) labels.
    fn key(&self, f: usize, labels: &JobLabels, status: &str, failure_reason: &str) -> Vec<String> {
        self.names[f]
            .iter()
            .map(|n| {
                match *n {
                    "ref" => &labels.ref_,
                    "stage" => &labels.stage,
                    "job" => &labels.name,
                    "runner" => self.runner.value(labels.runner.as_ref()),
                    "status" => status,
                    "failure_reason" => failure_reason,
                    // FULL lists only the names above.
                    _ => "",
                }
                .to_string()
            })
            .collect()
    }
}

/// Maps with composite keys as lists of `[key, value]` pairs (JSON keys must be strings).
pub mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

impl ProjectSeries {
    pub fn apply(&mut self, events: &[Event], bounds: &Bounds, layout: &Layout, room: &mut Room) {
        for ev in events {
            match ev {
                Event::Started {
                    labels,
                    queued_duration,
                } => {
                    let key = room.admit(2, &self.queued, layout.key(2, labels, "", ""), layout);
                    entry(&mut self.queued, key, &layout.names[2])
                        .observe(&bounds.queued, *queued_duration);
                }
                Event::Completed {
                    labels,
                    status,
                    failure_reason,
                    duration,
                    ..
                } => {
                    let key = layout.key(0, labels, status.label(), failure_reason);
                    let key = room.admit(0, &self.total, key, layout);
                    *entry(&mut self.total, key, &layout.names[0]) += 1;
                    if let Some(d) = duration {
                        let key = layout.key(1, labels, status.label(), "");
                        let key = room.admit(1, &self.duration, key, layout);
                        entry(&mut self.duration, key, &layout.names[1])
                            .observe(&bounds.duration, *d);
                    }
                }
                // Its own family, capped on its own (`super::flaky`).
                Event::Flaky { .. } => {}
            }
        }
    }

    /// Drops histograms whose buckets do not fit `bounds` (the configuration changed since a
    /// checkpoint): mixing bucket layouts would corrupt them. Also drops series whose key does
    /// not have the layout's label count (cannot happen under the same label policy, which the
    /// caller checks; rendering such a key would mislabel it). Returns how many were dropped.
    pub fn drop_mismatched(&mut self, bounds: &Bounds, layout: &Layout) -> usize {
        let before = self.len();
        let [t, d, q] = layout.names.clone().map(|n| n.len());
        self.total.retain(|k, _| k.len() == t);
        self.duration
            .retain(|k, h| k.len() == d && h.buckets.len() == bounds.duration.len() + 1);
        self.queued
            .retain(|k, h| k.len() == q && h.buckets.len() == bounds.queued.len() + 1);
        before - self.len()
    }

    fn len(&self) -> usize {
        self.total.len() + self.duration.len() + self.queued.len()
    }

    /// Renders the label block of every key that has none (read from a checkpoint).
    pub fn label(&mut self, layout: &Layout) {
        fn fill<V>(map: &mut BTreeMap<Key, V>, names: &[&str]) {
            if map.keys().all(|k| k.block.is_some()) {
                return;
            }
            *map = std::mem::take(map)
                .into_iter()
                .map(|(k, v)| match k.block {
                    Some(_) => (k, v),
                    None => (Key::labelled(k.values, names), v),
                })
                .collect();
        }
        fill(&mut self.total, &layout.names[0]);
        fill(&mut self.duration, &layout.names[1]);
        fill(&mut self.queued, &layout.names[2]);
    }
}

/// The job label value that series beyond `limits.max_series` are folded into.
pub const OVERFLOW: &str = "__other__";

/// The series budget of the three job families (counter, duration, queued), over all projects.
#[derive(Debug, Clone)]
pub struct Room {
    pub max: usize,
    pub used: [usize; 3],
    /// A series was folded into the overflow series during this call.
    pub folded: bool,
}

impl Room {
    /// The key to record under: `key` itself, or, once family `f` is full and `key` is new,
    /// the same key with the layout's overflow labels (normally `job`) set to [`OVERFLOW`].
    fn admit<V>(
        &mut self,
        f: usize,
        map: &BTreeMap<Key, V>,
        mut key: Vec<String>,
        layout: &Layout,
    ) -> Vec<String> {
        if map.contains_key(&key) {
            return key;
        }
        // With nothing left to fold (only status and failure reason), the series are few anyway.
        if self.used[f] >= self.max && !layout.overflow[f].is_empty() {
            for &i in &layout.overflow[f] {
                if let Some(v) = key.get_mut(i) {
                    *v = OVERFLOW.to_string();
                }
            }
            self.folded = true;
        }
        if !map.contains_key(&key) {
            self.used[f] += 1;
        }
        key
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    pub duration: Vec<f64>,
    pub queued: Vec<f64>,
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

fn labels(project: &str, names: &[&str], values: &[String]) -> Vec<LabelPair> {
    // The text encoder expects labels sorted by name.
    let mut pairs: Vec<LabelPair> = std::iter::once(label("project", project))
        .chain(names.iter().zip(values).map(|(n, v)| label(n, v)))
        .collect();
    pairs.sort_by(|a, b| a.name().cmp(b.name()));
    pairs
}

fn family(name: &str, help: &str, kind: MetricType) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(kind);
    f
}

fn histogram(h: &Hist, bounds: &[f64]) -> proto::Histogram {
    let mut out = proto::Histogram::default();
    let mut cumulative = 0;
    let buckets = bounds
        .iter()
        .enumerate()
        .map(|(i, b)| {
            cumulative += h.buckets.get(i).copied().unwrap_or(0);
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(*b);
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    out.set_bucket(buckets);
    out.set_sample_count(h.count);
    out.set_sample_sum(h.sum);
    out
}

/// The three job metric families over all projects, as the `prometheus` crate's protobuf
/// messages: what the page was rendered from before [`super::text`] (its tests compare both).
pub fn families<'a>(
    projects: impl Iterator<Item = (&'a String, &'a ProjectSeries)> + Clone,
    bounds: &Bounds,
    layout: &Layout,
) -> Vec<MetricFamily> {
    let mut total = family(
        JOBS_TOTAL,
        super::text::JOBS_TOTAL_HELP,
        MetricType::COUNTER,
    );
    let mut duration = family(DURATION, super::text::DURATION_HELP, MetricType::HISTOGRAM);
    let mut queued = family(QUEUED, super::text::QUEUED_HELP, MetricType::HISTOGRAM);
    let (mut t, mut d, mut q) = (Vec::new(), Vec::new(), Vec::new());
    for (project, series) in projects {
        for (key, n) in &series.total {
            let mut m = proto::Metric::from_label(labels(project, &layout.names[0], key));
            let mut c = proto::Counter::default();
            c.set_value(*n as f64);
            m.set_counter(c);
            t.push(m);
        }
        for (key, h) in &series.duration {
            let mut m = proto::Metric::from_label(labels(project, &layout.names[1], key));
            m.set_histogram(histogram(h, &bounds.duration));
            d.push(m);
        }
        for (key, h) in &series.queued {
            let mut m = proto::Metric::from_label(labels(project, &layout.names[2], key));
            m.set_histogram(histogram(h, &bounds.queued));
            q.push(m);
        }
    }
    total.set_metric(t);
    duration.set_metric(d);
    queued.set_metric(q);
    // The text encoder refuses a family without samples.
    [total, duration, queued]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let bounds = [1.0, 5.0];
        let mut h = Hist::default();
        for v in [0.5, 1.0, 1.5, 5.0, 9.0] {
            h.observe(&bounds, v);
        }
        assert_eq!(h.buckets, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        let p = histogram(&h, &bounds);
        let cumulative: Vec<u64> = p
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(cumulative, vec![2, 4]);
    }

    use crate::labels::{Droppable, RunnerMode};
    use crate::model::{JobRunner, JobStatus};

    fn completed(ref_: &str, name: &str, runner: Option<&str>, status: JobStatus) -> Event {
        Event::Completed {
            labels: JobLabels {
                ref_: ref_.into(),
                stage: "test".into(),
                name: name.into(),
                tag: false,
                runner: runner.map(|t| JobRunner {
                    description: format!("{t}-runner"),
                    runner_type: t.into(),
                }),
            },
            failure_reason: if status == JobStatus::Failed {
                "script_failure".into()
            } else {
                String::new()
            },
            duration: runner.map(|_| 5.0),
            status,
            finished_at: None,
        }
    }

    fn events() -> Vec<Event> {
        let mut ev = Vec::new();
        for (i, r) in ["main", "feature", "refs/merge-requests/1/head"]
            .iter()
            .enumerate()
        {
            for name in ["lint", "rspec"] {
                ev.push(completed(
                    r,
                    name,
                    Some("instance_type"),
                    JobStatus::Success,
                ));
                ev.push(completed(r, name, Some("group_type"), JobStatus::Failed));
                if i == 0 {
                    ev.push(completed(r, name, None, JobStatus::Skipped));
                }
            }
        }
        ev
    }

    fn series(policy: &LabelsConfig, max: usize) -> (ProjectSeries, Layout, bool) {
        let layout = Layout::new(policy);
        let bounds = Bounds {
            duration: vec![10.0],
            queued: vec![10.0],
        };
        let mut room = Room {
            max,
            used: [0; 3],
            folded: false,
        };
        let mut s = ProjectSeries::default();
        s.apply(&events(), &bounds, &layout, &mut room);
        (s, layout, room.folded)
    }

    #[test]
    fn dropped_labels_vanish_and_their_series_fold_with_every_count() {
        let (full, ..) = series(&LabelsConfig::default(), usize::MAX);
        let policy = LabelsConfig {
            runner: RunnerMode::Type,
            drop: vec![Droppable::Ref, Droppable::FailureReason],
            ..Default::default()
        };
        let (folded, layout, _) = series(&policy, usize::MAX);
        assert_eq!(layout.names[0], ["stage", "job", "runner", "status"]);
        assert_eq!(layout.names[1], ["stage", "job", "runner", "status"]);
        assert_eq!(layout.names[2], ["stage", "job", "runner"]);
        assert_eq!(
            folded.total.values().sum::<u64>(),
            full.total.values().sum::<u64>()
        );
        assert_eq!(folded.total.values().sum::<u64>(), 14);
        assert!(folded.total.len() < full.total.len());
        let count = |s: &ProjectSeries| s.duration.values().map(|h| h.count).sum::<u64>();
        assert_eq!(count(&folded), count(&full));
        // A job without a runner has runner="".
        let skipped = vec![
            "test".to_string(),
            "lint".into(),
            String::new(),
            "skipped".into(),
        ];
        assert_eq!(folded.total.get(&skipped), Some(&1));
        let block = folded
            .total
            .keys()
            .find(|k| ***k == skipped)
            .and_then(Key::block);
        assert_eq!(
            block.map(Block::halves),
            Some((
                r#"job="lint","#,
                r#",runner="",stage="test",status="skipped""#
            ))
        );
        let fams = families(
            std::iter::once((&"g/p".to_string(), &folded)),
            &Bounds {
                duration: vec![10.0],
                queued: vec![10.0],
            },
            &layout,
        );
        for m in fams[0].get_metric() {
            let names: Vec<&str> = m.get_label().iter().map(|l| l.name()).collect();
            assert_eq!(names, ["job", "project", "runner", "stage", "status"]);
        }
    }

    #[test]
    fn overflow_with_job_dropped_folds_the_other_varying_labels() {
        let policy = LabelsConfig {
            runner: RunnerMode::Description,
            drop: vec![Droppable::Job],
            ..Default::default()
        };
        let (s, layout, folded) = series(&policy, 2);
        assert!(folded);
        assert_eq!(
            layout.names[0],
            ["ref", "stage", "runner", "status", "failure_reason"]
        );
        assert_eq!(s.total.values().sum::<u64>(), 14, "no count lost");
        let other: u64 = s
            .total
            .iter()
            .filter(|(k, _)| k[0] == OVERFLOW && k[1] == OVERFLOW && k[2] == OVERFLOW)
            .map(|(_, n)| n)
            .sum();
        assert!(other > 0, "{:?}", s.total);
        // With only status (and failure_reason) left there is nothing to fold: admitted as is.
        let bare = LabelsConfig {
            drop: vec![Droppable::Ref, Droppable::Stage, Droppable::Job],
            ..Default::default()
        };
        let (s, _, folded) = series(&bare, 1);
        assert!(!folded);
        assert_eq!(s.total.len(), 3);
        assert_eq!(s.total.values().sum::<u64>(), 14);
    }
}
