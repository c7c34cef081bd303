//! The job families written straight from [`ProjectSeries`] in the text exposition format,
//! byte for byte what the `prometheus` crate's `TextEncoder` writes for the same series (see
//! [`super::jobs::families`] and the tests): no protobuf copy of every series per scrape, and
//! each series' label block is copied as it was rendered when the series was made.

use std::collections::BTreeMap;
use std::io::Write as _;

use super::jobs::{self, Block, Bounds, Hist, Key, Layout, ProjectSeries};

/// Job series by project path, in path order: the metrics' own map, or a checkpoint's series
/// borrowed (so a checkpoint renders its page without copying every series once more).
pub trait Projects {
    fn each(&self) -> impl Iterator<Item = (&str, &ProjectSeries)>;
}

impl Projects for BTreeMap<String, ProjectSeries> {
    fn each(&self) -> impl Iterator<Item = (&str, &ProjectSeries)> {
        self.iter().map(|(p, s)| (p.as_str(), s))
    }
}

impl Projects for BTreeMap<&str, &ProjectSeries> {
    fn each(&self) -> impl Iterator<Item = (&str, &ProjectSeries)> {
        self.iter().map(|(p, s)| (*p, *s))
    }
}

/// Help texts of the job families.
pub const JOBS_TOTAL_HELP: &str = "GitLab CI jobs that reached a completed status (success, failed, canceled, skipped), each counted once.";
pub const DURATION_HELP: &str =
    "Run time of each completed GitLab CI job that ran, observed once at completion.";
pub const QUEUED_HELP: &str = "Time each GitLab CI job waited in the queue before a runner started it, observed once when first seen started.";

/// Appends `v` escaped as the text format wants it (as the `prometheus` crate does): `\` and
/// newline always, `"` in label values.
pub fn escape_into(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn escaped(v: &str, quote: bool) -> String {
    let mut s = String::with_capacity(v.len());
    escape_into(&mut s, v, quote);
    s
}

/// Where the page goes: the bytes themselves, or only their count (to size the buffer once).
pub trait Out {
    fn put(&mut self, b: &[u8]);
    /// A count, written as the encoder writes `count as f64`.
    fn count(&mut self, n: u64);
    fn float(&mut self, x: f64);
}

/// Counts below this are exact as `f64`, so they print as their integer digits.
const EXACT: u64 = 1 << 53;

impl Out for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }

    fn count(&mut self, n: u64) {
        if n < EXACT {
            self.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        } else {
            self.float(n as f64);
        }
    }

    fn float(&mut self, x: f64) {
        // Writing to a Vec cannot fail.
        let _ = write!(self, "{x}");
    }
}

/// An upper bound of the bytes written (exact but for some float sums).
#[derive(Debug, Default)]
pub struct Len(pub usize);

impl Out for Len {
    fn put(&mut self, b: &[u8]) {
        self.0 += b.len();
    }

    fn count(&mut self, n: u64) {
        self.0 += if n < EXACT {
            n.checked_ilog10().unwrap_or(0) as usize + 1
        } else {
            float_len(n as f64)
        };
    }

    fn float(&mut self, x: f64) {
        // Shortest round-trip form: at most 17 significant digits, a point and a sign while
        // no leading or trailing zeros are needed; else count exactly (rare).
        let a = x.abs();
        self.0 += if a == 0.0 || (1e-5..1e16).contains(&a) {
            24
        } else {
            float_len(x)
        };
    }
}

fn float_len(x: f64) -> usize {
    x.to_string().len()
}

/// What changes per family: its name with `_bucket{` and the like, ready to copy.
struct Names {
    plain: Vec<u8>,
    bucket: Vec<u8>,
    sum: Vec<u8>,
    count: Vec<u8>,
}

impl Names {
    fn new(name: &str) -> Self {
        let with = |suffix: &str| format!("{name}{suffix}{{").into_bytes();
        Self {
            plain: with(""),
            bucket: with("_bucket"),
            sum: with("_sum"),
            count: with("_count"),
        }
    }
}

fn header(out: &mut impl Out, name: &str, help: &str, kind: &str) {
    out.put(
        format!(
            "# HELP {name} {}\n# TYPE {name} {kind}\n",
            escaped(help, false)
        )
        .as_bytes(),
    );
}

/// `{pairs}` of one series: its block around the project pair.
fn labels(out: &mut impl Out, project: &[u8], block: &Block) {
    let (before, after) = block.halves();
    out.put(before.as_bytes());
    out.put(project);
    out.put(after.as_bytes());
}

/// A key's block, or one made now for a key read from a checkpoint and not yet labelled.
fn block_of<'k>(key: &'k Key, names: &[&str]) -> std::borrow::Cow<'k, Block> {
    match key.block() {
        Some(b) => std::borrow::Cow::Borrowed(b),
        None => std::borrow::Cow::Owned(Block::new(names, key)),
    }
}

/// One job family of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Total,
    Duration,
    Queued,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Total, Family::Duration, Family::Queued];

    pub fn name(self) -> &'static str {
        match self {
            Self::Total => jobs::JOBS_TOTAL,
            Self::Duration => jobs::DURATION,
            Self::Queued => jobs::QUEUED,
        }
    }

    pub fn is_histogram(self) -> bool {
        self != Self::Total
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether any project has a series of this family (the encoder skips empty families).
    pub fn is_empty(self, jobs: &impl Projects) -> bool {
        jobs.each().all(|(_, s)| match self {
            Self::Total => s.total.is_empty(),
            Self::Duration => s.duration.is_empty(),
            Self::Queued => s.queued.is_empty(),
        })
    }

    /// Writes the family (nothing when it has no series).
    pub fn write(self, out: &mut impl Out, jobs: &impl Projects, bounds: &Bounds, layout: &Layout) {
        if self.is_empty(jobs) {
            return;
        }
        let names = Names::new(self.name());
        let label_names = &layout.names[self.index()];
        let (help, kind) = match self {
            Self::Total => (JOBS_TOTAL_HELP, "counter"),
            Self::Duration => (DURATION_HELP, "histogram"),
            Self::Queued => (QUEUED_HELP, "histogram"),
        };
        header(out, self.name(), help, kind);
        let bounds = match self {
            Self::Queued => &bounds.queued[..],
            _ => &bounds.duration[..],
        };
        let les = Les::new(bounds);
        for (project, series) in jobs.each() {
            let project = format!("project=\"{}\"", escaped(project, true)).into_bytes();
            match self {
                Self::Total => {
                    for (key, n) in &series.total {
                        out.put(&names.plain);
                        labels(out, &project, &block_of(key, label_names));
                        out.put(b"} ");
                        out.count(*n);
                        out.put(b"\n");
                    }
                }
                Self::Duration | Self::Queued => {
                    let map = if self == Self::Queued {
                        &series.queued
                    } else {
                        &series.duration
                    };
                    for (key, h) in map {
                        let block = block_of(key, label_names);
                        histogram(out, &names, &project, &block, h, &les);
                    }
                }
            }
        }
    }
}

/// The `le` pairs of a histogram's buckets, ready to copy: `,le="0.5"} `.
struct Les {
    bounds: Vec<Vec<u8>>,
    /// A bound is +Inf already: no extra `+Inf` bucket (as the encoder does).
    inf_seen: bool,
}

impl Les {
    fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds
                .iter()
                .map(|b| format!(",le=\"{}\"}} ", escaped(&b.to_string(), true)).into_bytes())
                .collect(),
            inf_seen: bounds
                .iter()
                .any(|b| b.is_sign_positive() && b.is_infinite()),
        }
    }
}

fn histogram(
    out: &mut impl Out,
    names: &Names,
    project: &[u8],
    block: &Block,
    h: &Hist,
    les: &Les,
) {
    let mut cumulative = 0;
    for (i, le) in les.bounds.iter().enumerate() {
        cumulative += h.buckets.get(i).copied().unwrap_or(0);
        out.put(&names.bucket);
        labels(out, project, block);
        out.put(le);
        out.count(cumulative);
        out.put(b"\n");
    }
    if !les.inf_seen {
        out.put(&names.bucket);
        labels(out, project, block);
        out.put(b",le=\"+Inf\"} ");
        out.count(h.count);
        out.put(b"\n");
    }
    out.put(&names.sum);
    labels(out, project, block);
    out.put(b"} ");
    out.float(h.sum);
    out.put(b"\n");
    out.put(&names.count);
    labels(out, project, block);
    out.put(b"} ");
    out.count(h.count);
    out.put(b"\n");
}

#[cfg(test)]
mod tests;
