//! Label cardinality controls for the job metrics: how `ref`, `job` and `runner` values are
//! written, and which labels are dropped. Merge-request refs, parallel job names and per-host
//! runners multiply series; these policies fold them.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::JobRunner;
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

/// How the `job` label is written (before `labels.job_rewrites`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    #[default]
    Raw,
    /// Parallel and matrix suffixes stripped: `rspec 3/8` → `rspec`, `build: [linux, arm]` → `build`.
    Normalized,
}

/// Whether the job metrics carry a `runner` label, and what it holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerMode {
    /// No `runner` label.
    #[default]
    None,
    /// The runner's description.
    Description,
    /// `instance_type`, `group_type` or `project_type`.
    Type,
}

impl RunnerMode {
    /// The label value for a job's runner; `""` for a job that never got one.
    pub fn value(self, runner: Option<&JobRunner>) -> &str {
        match (self, runner) {
            (Self::Description, Some(r)) => &r.description,
            (Self::Type, Some(r)) => &r.runner_type,
            _ => "",
        }
    }
}

/// A label that `labels.drop` may remove. `project` and `status` are not among them: without
/// them the counts mean nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Droppable {
    Ref,
    Stage,
    Job,
    Runner,
    FailureReason,
}

impl Droppable {
    pub const ALL: [Droppable; 5] = [
        Self::Ref,
        Self::Stage,
        Self::Job,
        Self::Runner,
        Self::FailureReason,
    ];

    /// The label name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ref => "ref",
            Self::Stage => "stage",
            Self::Job => "job",
            Self::Runner => "runner",
            Self::FailureReason => "failure_reason",
        }
    }
}

impl TryFrom<String> for Droppable {
    type Error = LabelsError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if let Some(d) = Self::ALL.into_iter().find(|d| d.as_str() == s) {
            return Ok(d);
        }
        Err(if matches!(s.as_str(), "project" | "status") {
            LabelsError::Undroppable(s)
        } else {
            LabelsError::UnknownLabel(s)
        })
    }
}

impl From<Droppable> for String {
    fn from(d: Droppable) -> Self {
        d.as_str().to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("`{0}` cannot be dropped: every job series needs it")]
    Undroppable(String),
    #[error("unknown label `{0}`; droppable: ref, stage, job, runner, failure_reason")]
    UnknownLabel(String),
    #[error("invalid regex: {0}")]
    Regex(#[from] regex::Error),
    #[error(
        "the replacement refers to `${0}`, which the regex does not capture (write `${{1}}x`, not `$1x`, before letters, digits or `_`)"
    )]
    MissingGroup(String),
}

/// A `labels.job_rewrites[].match` regex, anchored at both ends (like Prometheus relabelling):
/// a rule applies only to a job name it matches whole.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    anchored: Regex,
}

impl Pattern {
    pub fn new(source: impl Into<String>) -> Result<Self, LabelsError> {
        let source = source.into();
        // Compiled alone first, so that an error shows the pattern as the user wrote it.
        Regex::new(&source)?;
        let anchored = Regex::new(&format!("^(?:{source})$"))?;
        Ok(Self { source, anchored })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl TryFrom<String> for Pattern {
    type Error = LabelsError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One `labels.job_rewrites` rule: a job name matching `match` whole becomes `replace`, with
/// `$1`, `${name}` expanded from the match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRewrite {
    #[serde(rename = "match")]
    pub pattern: Pattern,
    pub replace: String,
}

impl JobRewrite {
    pub fn new(pattern: &str, replace: &str) -> Result<Self, LabelsError> {
        let rewrite = Self {
            pattern: Pattern::new(pattern)?,
            replace: replace.to_string(),
        };
        rewrite.check_replacement()?;
        Ok(rewrite)
    }

    /// Every group the replacement names exists: the regex crate silently expands a missing one
    /// to nothing, and `$1_x` (group `1_x`) is an easy mistake.
    pub fn check_replacement(&self) -> Result<(), LabelsError> {
        let re = &self.pattern.anchored;
        let exists = |name: &str| match name.parse::<usize>() {
            Ok(i) => i < re.captures_len(),
            Err(_) => re.capture_names().flatten().any(|n| n == name),
        };
        let mut rest = self.replace.as_str();
        while let Some(i) = rest.find('$') {
            rest = &rest[i + 1..];
            let name = if let Some(braced) = rest.strip_prefix('{') {
                match braced.find('}') {
                    Some(end) => {
                        rest = &braced[end + 1..];
                        &braced[..end]
                    }
                    // No closing brace: the regex crate writes it literally.
                    None => continue,
                }
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                // `$$` is a literal dollar.
                rest = rest.strip_prefix('$').unwrap_or(&rest[end..]);
                name
            };
            if !name.is_empty() && !exists(name) {
                return Err(LabelsError::MissingGroup(name.to_string()));
            }
        }
        Ok(())
    }

    /// The rewritten name, if this rule matches `name`.
    pub fn rewrite(&self, name: &str) -> Option<String> {
        let caps = self.pattern.anchored.captures(name)?;
        let mut out = String::new();
        caps.expand(&self.replace, &mut out);
        Some(out)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsConfig {
    #[serde(default, rename = "ref")]
    pub ref_: RefMode,
    #[serde(default)]
    pub job: JobMode,
    #[serde(default)]
    pub runner: RunnerMode,
    /// Applied after `job`; the first rule that matches wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_rewrites: Vec<JobRewrite>,
    /// Labels removed from the job metrics altogether.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<Droppable>,
}

impl LabelsConfig {
    /// Rewrites the labels of `events` for a project whose default branch is `default_branch`.
    /// (Dropped labels and the runner value are left to the metric layout.)
    pub fn apply(&self, events: &mut [Event], default_branch: Option<&str>) {
        if self.ref_ == RefMode::Raw && self.job == JobMode::Raw && self.job_rewrites.is_empty() {
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
            if let Some(name) = self.rewrite_job(&labels.name) {
                labels.name = name;
            }
        }
    }

    /// The first matching rewrite of a job name (after normalization), if any.
    pub fn rewrite_job(&self, name: &str) -> Option<String> {
        self.job_rewrites.iter().find_map(|r| r.rewrite(name))
    }

    /// Whether the job metrics carry label `name` (where the family has it at all).
    pub fn keeps(&self, name: &str) -> bool {
        let dropped = self.drop.iter().any(|d| d.as_str() == name);
        match name {
            "project" | "status" => true,
            "runner" => self.runner != RunnerMode::None && !dropped,
            _ => !dropped,
        }
    }

    /// A stable description of everything that decides the job series' label names and
    /// values, kept in the checkpoint: series restored under another policy would mix label
    /// sets (or value schemes) in one family.
    pub fn fingerprint(&self) -> String {
        let mut drop: Vec<&str> = self.drop.iter().map(|d| d.as_str()).collect();
        drop.sort_unstable();
        drop.dedup();
        let rewrites: Vec<String> = self
            .job_rewrites
            .iter()
            .map(|r| format!("{:?}=>{:?}", r.pattern.as_str(), r.replace))
            .collect();
        format!(
            "ref={:?} job={:?} runner={:?} job_rewrites=[{}] drop=[{}]",
            self.ref_,
            self.job,
            self.runner,
            rewrites.join(","),
            drop.join(",")
        )
    }
}

/// The fingerprint of the default policy: what checkpoints written before it was recorded used.
pub fn default_fingerprint() -> String {
    LabelsConfig::default().fingerprint()
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
                runner: None,
            },
            queued_duration: 1.0,
        }];
        let cfg = LabelsConfig {
            ref_: RefMode::Kind,
            job: JobMode::Normalized,
            ..Default::default()
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

    fn started(name: &str) -> Event {
        Event::Started {
            labels: JobLabels {
                ref_: "main".into(),
                stage: "test".into(),
                name: name.into(),
                tag: false,
                runner: None,
            },
            queued_duration: 1.0,
        }
    }

    fn names(cfg: &LabelsConfig, names: &[&str]) -> Vec<String> {
        let mut events: Vec<Event> = names.iter().map(|n| started(n)).collect();
        cfg.apply(&mut events, Some("main"));
        events
            .into_iter()
            .map(|e| match e {
                Event::Started { labels, .. } | Event::Completed { labels, .. } => labels.name,
            })
            .collect()
    }

    fn rules(rules: &[(&str, &str)]) -> Vec<JobRewrite> {
        rules
            .iter()
            .map(|(m, r)| JobRewrite::new(m, r).unwrap())
            .collect()
    }

    #[test]
    fn rewrites_are_anchored_and_the_first_match_wins() {
        let cfg = LabelsConfig {
            job_rewrites: rules(&[
                (r"deploy-(\w+)-\d+", "deploy-$1"),
                (r"(?P<kind>unit|e2e)-shard", "${kind}-tests"),
                (r"deploy-.*", "deploy"),
                ("lint", "$$lint"),
            ]),
            ..Default::default()
        };
        assert_eq!(
            names(
                &cfg,
                &[
                    "deploy-eu-17",
                    "deploy-eu",
                    "e2e-shard",
                    "my-e2e-shard",
                    "lint",
                    "rspec 1/2"
                ]
            ),
            [
                "deploy-eu",
                "deploy",
                "e2e-tests",
                "my-e2e-shard",
                "$lint",
                "rspec 1/2"
            ]
        );
    }

    #[test]
    fn rewrites_apply_after_normalization() {
        let cfg = LabelsConfig {
            job: JobMode::Normalized,
            job_rewrites: rules(&[("rspec", "test"), ("rspec 1/2", "never")]),
            ..Default::default()
        };
        assert_eq!(
            names(&cfg, &["rspec 1/2", "build: [a, b]"]),
            ["test", "build"]
        );
    }

    #[test]
    fn replacements_must_name_existing_groups() {
        for (m, r) in [
            ("a(b)", "$1"),
            ("a(b)", "${1}_x"),
            ("a(?P<x>b)", "$x-$0"),
            ("a", "$$1 and $ and ${unclosed"),
        ] {
            assert!(JobRewrite::new(m, r).is_ok(), "{m} => {r}");
        }
        for (m, r, group) in [
            ("a(b)", "$2", "2"),
            ("a(b)", "$1_x", "1_x"),
            ("a", "${y}", "y"),
        ] {
            match JobRewrite::new(m, r) {
                Err(LabelsError::MissingGroup(g)) => assert_eq!(g, group),
                other => panic!("{m} => {r}: {other:?}"),
            }
        }
        assert!(matches!(
            JobRewrite::new("a(", "x"),
            Err(LabelsError::Regex(_))
        ));
    }

    #[test]
    fn drop_and_runner_decide_the_labels() {
        let mut cfg = LabelsConfig::default();
        assert!(!cfg.keeps("runner") && cfg.keeps("ref") && cfg.keeps("status"));
        cfg.runner = RunnerMode::Type;
        cfg.drop = vec![Droppable::Ref, Droppable::FailureReason];
        assert!(cfg.keeps("runner") && !cfg.keeps("ref") && !cfg.keeps("failure_reason"));
        assert!(cfg.keeps("job") && cfg.keeps("project"));
        cfg.drop.push(Droppable::Runner);
        assert!(
            !cfg.keeps("runner"),
            "dropping runner wins over labels.runner"
        );
        assert!(matches!(
            Droppable::try_from("project".to_string()),
            Err(LabelsError::Undroppable(_))
        ));
        assert!(matches!(
            Droppable::try_from("host".to_string()),
            Err(LabelsError::UnknownLabel(_))
        ));
    }

    #[test]
    fn runner_values() {
        let r = JobRunner {
            description: "docker-7".into(),
            runner_type: "group_type".into(),
        };
        assert_eq!(RunnerMode::Description.value(Some(&r)), "docker-7");
        assert_eq!(RunnerMode::Type.value(Some(&r)), "group_type");
        assert_eq!(RunnerMode::Type.value(None), "");
        assert_eq!(RunnerMode::None.value(Some(&r)), "");
    }

    #[test]
    fn fingerprint_tells_policies_apart() {
        let default = LabelsConfig::default();
        assert_eq!(default.fingerprint(), default_fingerprint());
        let a = LabelsConfig {
            drop: vec![Droppable::Ref, Droppable::Stage, Droppable::Ref],
            ..Default::default()
        };
        let b = LabelsConfig {
            drop: vec![Droppable::Stage, Droppable::Ref],
            ..Default::default()
        };
        assert_eq!(
            a.fingerprint(),
            b.fingerprint(),
            "order and repeats do not matter"
        );
        let variants = [
            default.clone(),
            a,
            LabelsConfig {
                runner: RunnerMode::Type,
                ..Default::default()
            },
            LabelsConfig {
                runner: RunnerMode::Description,
                ..Default::default()
            },
            LabelsConfig {
                ref_: RefMode::Kind,
                ..Default::default()
            },
            LabelsConfig {
                job_rewrites: rules(&[("a", "b")]),
                ..Default::default()
            },
            LabelsConfig {
                job_rewrites: rules(&[("a", "c")]),
                ..Default::default()
            },
        ];
        let prints: std::collections::BTreeSet<String> =
            variants.iter().map(LabelsConfig::fingerprint).collect();
        assert_eq!(prints.len(), variants.len(), "{prints:#?}");
    }
}
