//! The label policy (`[labels]`): how `ref`, `job` and `runner` values are written and which
//! labels are dropped. Its types are configuration (checked when the file is read); applying
//! the policy to jobs is [`crate::labels`]' work.

use regex::Regex;
use serde::{Deserialize, Serialize};

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
