//! Label cardinality controls for the job metrics: how `ref` and `job` values are written.
//! Merge-request refs and parallel job names multiply series; these policies fold them.

use serde::{Deserialize, Serialize};

use crate::tracker::Event;

/// How the `ref` label is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefMode {
    /// The ref as GitLab names it.
    #[default]
    Raw,
    /// `default_branch`, `branch`, `tag` or `merge_request`.
    Kind,
    /// Always empty.
    None,
}

/// How the `job` label is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    #[default]
    Raw,
    /// Parallel and matrix suffixes stripped: `rspec 3/8` → `rspec`, `build: [linux, arm]` → `build`.
    Normalized,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    #[serde(default, rename = "ref")]
    pub ref_: RefMode,
    #[serde(default)]
    pub job: JobMode,
}

impl LabelsConfig {
    /// Rewrites the labels of `events` for a project whose default branch is `default_branch`.
    pub fn apply(&self, events: &mut [Event], default_branch: Option<&str>) {
        if *self == Self::default() {
            return;
        }
        for e in events {
            let labels = match e {
                Event::Started { labels, .. } | Event::Completed { labels, .. } => labels,
            };
            labels.ref_ = match self.ref_ {
                RefMode::Raw => std::mem::take(&mut labels.ref_),
                RefMode::None => String::new(),
                RefMode::Kind => ref_kind(&labels.ref_, labels.tag, default_branch).to_string(),
            };
            if self.job == JobMode::Normalized {
                labels.name = normalize_job(&labels.name).to_string();
            }
        }
    }
}

pub fn ref_kind(ref_: &str, tag: bool, default_branch: Option<&str>) -> &'static str {
    if tag {
        "tag"
    } else if ref_.starts_with("refs/merge-requests/") {
        "merge_request"
    } else if default_branch == Some(ref_) {
        "default_branch"
    } else {
        "branch"
    }
}

/// Strips GitLab's `parallel: N` suffix (` 3/8`) and `parallel:matrix` suffix (`: [a, b]`).
pub fn normalize_job(name: &str) -> &str {
    let name = match name.rsplit_once(' ') {
        Some((base, suffix))
            if suffix
                .split_once('/')
                .is_some_and(|(i, n)| is_digits(i) && is_digits(n)) =>
        {
            base
        }
        _ => name,
    };
    match name.find(": [") {
        Some(i) if name.ends_with(']') => &name[..i],
        _ => name,
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::JobLabels;

    #[test]
    fn job_names_are_normalized() {
        assert_eq!(normalize_job("rspec 3/8"), "rspec");
        assert_eq!(normalize_job("rspec unit 10/12"), "rspec unit");
        assert_eq!(normalize_job("build: [linux, arm64]"), "build");
        assert_eq!(normalize_job("deploy 1/x"), "deploy 1/x");
        assert_eq!(normalize_job("lint"), "lint");
        assert_eq!(normalize_job(""), "");
    }

    #[test]
    fn refs_fold_into_kinds() {
        assert_eq!(ref_kind("main", false, Some("main")), "default_branch");
        assert_eq!(ref_kind("feature/x", false, Some("main")), "branch");
        assert_eq!(ref_kind("v1.2.3", true, Some("main")), "tag");
        assert_eq!(
            ref_kind("refs/merge-requests/12/head", false, Some("main")),
            "merge_request"
        );
        let mut events = vec![Event::Started {
            labels: JobLabels {
                ref_: "refs/merge-requests/3/head".into(),
                stage: "test".into(),
                name: "rspec 2/4".into(),
                tag: false,
            },
            queued_duration: 1.0,
        }];
        let cfg = LabelsConfig {
            ref_: RefMode::Kind,
            job: JobMode::Normalized,
        };
        cfg.apply(&mut events, Some("main"));
        let Event::Started { labels, .. } = &events[0] else {
            unreachable!("built above")
        };
        assert_eq!(
            (labels.ref_.as_str(), labels.name.as_str()),
            ("merge_request", "rspec")
        );
    }
}
