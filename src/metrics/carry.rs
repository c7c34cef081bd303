//! Carrying the exporter's own counters and histograms across restarts. The `prometheus` crate
//! cannot set a counter or histogram to a value, so the values saved in a checkpoint become a
//! base that is added to the live (restarted-from-zero) values when rendering.

use std::collections::BTreeMap;

use prometheus::proto::{MetricFamily, MetricType};
use serde::{Deserialize, Serialize};

/// Sorted `(name, value)` label pairs.
pub type LabelSet = Vec<(String, String)>;

/// One counter or histogram series' accumulated value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// Counter value, or histogram sample sum.
    pub value: f64,
    /// Histogram sample count and cumulative bucket counts by upper bound (empty for counters).
    pub count: u64,
    pub buckets: Vec<(f64, u64)>,
}

/// Family name → label set → carried value.
pub type Carry = BTreeMap<String, Series>;

/// One family's carried series, with what it takes to show the family again before the
/// restarted process has touched it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub help: String,
    pub histogram: bool,
    /// A list of pairs on disk: JSON keys must be strings.
    #[serde(with = "super::jobs::pairs")]
    pub series: BTreeMap<LabelSet, Carried>,
}

fn label_set(m: &prometheus::proto::Metric) -> LabelSet {
    let mut l: LabelSet = m
        .get_label()
        .iter()
        .map(|p| (p.name().to_string(), p.value().to_string()))
        .collect();
    l.sort();
    l
}

/// Whether a family is carried: counters and histograms of the exporter itself (process_*
/// metrics describe this process and reset with it, as everywhere).
fn carried(f: &MetricFamily) -> bool {
    matches!(
        f.get_field_type(),
        MetricType::COUNTER | MetricType::HISTOGRAM
    ) && f.name().starts_with("gitlab_jobs_exporter_")
}

/// The carried values of `families` (already including any base).
pub fn capture(families: &[MetricFamily]) -> Carry {
    let mut out = Carry::new();
    for f in families.iter().filter(|f| carried(f)) {
        let entry = out.entry(f.name().to_string()).or_default();
        entry.help = f.help().to_string();
        entry.histogram = f.get_field_type() == MetricType::HISTOGRAM;
        let series = &mut entry.series;
        for m in f.get_metric() {
            let c = match f.get_field_type() {
                MetricType::COUNTER => Carried {
                    value: m.get_counter().get_value(),
                    ..Carried::default()
                },
                _ => {
                    let h = m.get_histogram();
                    Carried {
                        value: h.get_sample_sum(),
                        count: h.get_sample_count(),
                        buckets: h
                            .get_bucket()
                            .iter()
                            .map(|b| (b.upper_bound(), b.cumulative_count()))
                            .collect(),
                    }
                }
            };
            series.insert(label_set(m), c);
        }
    }
    out
}

/// Adds `base` to the live `families`; base series (and families) with no live twin are added
/// as they are.
pub fn add_base(families: &mut Vec<MetricFamily>, base: &Carry) {
    for (name, saved) in base {
        if !families.iter().any(|f| f.name() == name) {
            let mut f = MetricFamily::default();
            f.set_name(name.clone());
            f.set_help(saved.help.clone());
            f.set_field_type(if saved.histogram {
                MetricType::HISTOGRAM
            } else {
                MetricType::COUNTER
            });
            families.push(f);
        }
    }
    for f in families.iter_mut().filter(|f| carried(f)) {
        let Some(saved) = base.get(f.name()).map(|s| &s.series) else {
            continue;
        };
        let kind = f.get_field_type();
        let mut seen = std::collections::BTreeSet::new();
        for m in f.mut_metric().iter_mut() {
            let key = label_set(m);
            if let Some(b) = saved.get(&key) {
                add(m, kind, b);
                seen.insert(key);
            }
        }
        for (key, b) in saved.iter().filter(|(k, _)| !seen.contains(*k)) {
            let labels = key
                .iter()
                .map(|(n, v)| {
                    let mut p = prometheus::proto::LabelPair::default();
                    p.set_name(n.clone());
                    p.set_value(v.clone());
                    p
                })
                .collect();
            let mut m = prometheus::proto::Metric::from_label(labels);
            match kind {
                MetricType::COUNTER => m.set_counter(prometheus::proto::Counter::default()),
                _ => {
                    let mut h = prometheus::proto::Histogram::default();
                    h.set_bucket(
                        b.buckets
                            .iter()
                            .map(|(ub, _)| {
                                let mut bucket = prometheus::proto::Bucket::default();
                                bucket.set_upper_bound(*ub);
                                bucket
                            })
                            .collect(),
                    );
                    m.set_histogram(h);
                }
            }
            add(&mut m, kind, b);
            f.mut_metric().push(m);
        }
    }
}

fn add(m: &mut prometheus::proto::Metric, kind: MetricType, b: &Carried) {
    match kind {
        MetricType::COUNTER => {
            let mut c = m.get_counter().clone();
            c.set_value(c.get_value() + b.value);
            m.set_counter(c);
        }
        _ => {
            let mut h = m.get_histogram().clone();
            h.set_sample_sum(h.get_sample_sum() + b.value);
            h.set_sample_count(h.get_sample_count() + b.count);
            let buckets = h
                .get_bucket()
                .iter()
                .map(|bucket| {
                    let mut bucket = bucket.clone();
                    let extra = b
                        .buckets
                        .iter()
                        .find(|(ub, _)| *ub == bucket.upper_bound())
                        .map_or(0, |(_, n)| *n);
                    bucket.set_cumulative_count(bucket.cumulative_count() + extra);
                    bucket
                })
                .collect();
            h.set_bucket(buckets);
            m.set_histogram(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector;

    #[test]
    fn base_is_added_to_live_counters_and_histograms() {
        let c = prometheus::IntCounterVec::new(
            prometheus::Opts::new("gitlab_jobs_exporter_x_total", "x"),
            &["k"],
        )
        .unwrap();
        c.with_label_values(&["a"]).inc_by(3);
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("gitlab_jobs_exporter_h_seconds", "h")
                .buckets(vec![1.0, 2.0]),
        )
        .unwrap();
        h.observe(1.5);
        let mut fams = c.collect();
        fams.extend(h.collect());
        let base = capture(&fams);
        // After a restart: fresh metrics, one new increment each.
        let c2 = prometheus::IntCounterVec::new(
            prometheus::Opts::new("gitlab_jobs_exporter_x_total", "x"),
            &["k"],
        )
        .unwrap();
        c2.with_label_values(&["b"]).inc();
        let h2 = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("gitlab_jobs_exporter_h_seconds", "h")
                .buckets(vec![1.0, 2.0]),
        )
        .unwrap();
        h2.observe(0.5);
        let mut live = c2.collect();
        live.extend(h2.collect());
        add_base(&mut live, &base);
        let now = capture(&live);
        let counters = &now["gitlab_jobs_exporter_x_total"].series;
        assert_eq!(counters[&vec![("k".into(), "a".into())]].value, 3.0);
        assert_eq!(counters[&vec![("k".into(), "b".into())]].value, 1.0);
        let hist = &now["gitlab_jobs_exporter_h_seconds"].series[&vec![]];
        // A family the restarted process has not touched yet still shows its base.
        let mut empty = Vec::new();
        add_base(&mut empty, &base);
        assert_eq!(capture(&empty), base);
        assert_eq!(hist.count, 2);
        assert_eq!(hist.value, 2.0);
        assert_eq!(hist.buckets, vec![(1.0, 1), (2.0, 2)]);
    }
}
