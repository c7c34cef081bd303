//! The job metrics' values, kept in plain maps per project rather than in the `prometheus`
//! crate's vectors: its histograms cannot be restored, and counters must survive restarts
//! (a checkpoint holds each project's series next to its tracker, taken under the same lock).

use std::collections::BTreeMap;

use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use serde::{Deserialize, Serialize};

use crate::tracker::Event;

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

/// One project's job series. Keys are label values in the order of the metric's labels
/// after `project`: (ref, stage, job, status, failure_reason), (ref, stage, job, status),
/// (ref, stage, job).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectSeries {
    #[serde(with = "pairs")]
    pub total: BTreeMap<[String; 5], u64>,
    #[serde(with = "pairs")]
    pub duration: BTreeMap<[String; 4], Hist>,
    #[serde(with = "pairs")]
    pub queued: BTreeMap<[String; 3], Hist>,
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
    pub fn apply(&mut self, events: &[Event], bounds: &Bounds, room: &mut Room) {
        for ev in events {
            match ev {
                Event::Started {
                    labels,
                    queued_duration,
                } => {
                    let key = room.admit(
                        2,
                        &self.queued,
                        [
                            labels.ref_.clone(),
                            labels.stage.clone(),
                            labels.name.clone(),
                        ],
                    );
                    self.queued
                        .entry(key)
                        .or_default()
                        .observe(&bounds.queued, *queued_duration);
                }
                Event::Completed {
                    labels,
                    status,
                    failure_reason,
                    duration,
                    ..
                } => {
                    let key = room.admit(
                        0,
                        &self.total,
                        [
                            labels.ref_.clone(),
                            labels.stage.clone(),
                            labels.name.clone(),
                            status.as_str().to_string(),
                            failure_reason.clone(),
                        ],
                    );
                    *self.total.entry(key).or_default() += 1;
                    if let Some(d) = duration {
                        let key = room.admit(
                            1,
                            &self.duration,
                            [
                                labels.ref_.clone(),
                                labels.stage.clone(),
                                labels.name.clone(),
                                status.as_str().to_string(),
                            ],
                        );
                        self.duration
                            .entry(key)
                            .or_default()
                            .observe(&bounds.duration, *d);
                    }
                }
            }
        }
    }

    /// Drops histograms whose buckets do not fit `bounds` (the configuration changed since a
    /// checkpoint): mixing bucket layouts would corrupt them. Returns how many were dropped.
    pub fn drop_mismatched(&mut self, bounds: &Bounds) -> usize {
        let before = self.duration.len() + self.queued.len();
        self.duration
            .retain(|_, h| h.buckets.len() == bounds.duration.len() + 1);
        self.queued
            .retain(|_, h| h.buckets.len() == bounds.queued.len() + 1);
        before - self.duration.len() - self.queued.len()
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
    /// the same key with the job label (index 2) set to [`OVERFLOW`].
    fn admit<const N: usize, V>(
        &mut self,
        f: usize,
        map: &BTreeMap<[String; N], V>,
        mut key: [String; N],
    ) -> [String; N] {
        if map.contains_key(&key) {
            return key;
        }
        if self.used[f] >= self.max {
            key[2] = OVERFLOW.to_string();
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

/// The three job metric families over all projects.
pub fn families<'a>(
    projects: impl Iterator<Item = (&'a String, &'a ProjectSeries)> + Clone,
    bounds: &Bounds,
) -> Vec<MetricFamily> {
    let mut total = family(
        JOBS_TOTAL,
        "GitLab CI jobs that reached a completed status (success, failed, canceled, skipped), each counted once.",
        MetricType::COUNTER,
    );
    let mut duration = family(
        DURATION,
        "Run time of each completed GitLab CI job that ran, observed once at completion.",
        MetricType::HISTOGRAM,
    );
    let mut queued = family(
        QUEUED,
        "Time each GitLab CI job waited in the queue before a runner started it, observed once when first seen started.",
        MetricType::HISTOGRAM,
    );
    let (mut t, mut d, mut q) = (Vec::new(), Vec::new(), Vec::new());
    for (project, series) in projects {
        for (key, n) in &series.total {
            let mut m = proto::Metric::from_label(labels(
                project,
                &["ref", "stage", "job", "status", "failure_reason"],
                key,
            ));
            let mut c = proto::Counter::default();
            c.set_value(*n as f64);
            m.set_counter(c);
            t.push(m);
        }
        for (key, h) in &series.duration {
            let mut m =
                proto::Metric::from_label(labels(project, &["ref", "stage", "job", "status"], key));
            m.set_histogram(histogram(h, &bounds.duration));
            d.push(m);
        }
        for (key, h) in &series.queued {
            let mut m = proto::Metric::from_label(labels(project, &["ref", "stage", "job"], key));
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
}
