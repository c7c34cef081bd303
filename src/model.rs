//! The parts of GitLab's job and project JSON that the exporter reads. Decoding is lenient:
//! GitLab adds fields and statuses over versions, and a proxy may mangle a body; nothing here
//! panics, and one bad job does not poison its page.
//!
//! The bottom of the module graph: plain data, no HTTP, nothing else of the crate, so the
//! client, the tracker, labels and metrics can all depend on it without depending on each
//! other (`tests/layers.rs` keeps it that way).

pub mod hook;
mod lenient;
pub mod text;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// A project's numeric id: the one key of a project once known (its path is data, it changes
/// on a rename or transfer). An alias for now, not a newtype: discovery, shards, the
/// checkpoint and the client all carry it as `u64`, and a newtype would ripple through them.
pub type ProjectId = u64;

/// A job status. GitLab grows this list over versions, so unknown values are kept verbatim and
/// treated as non-final (followed until they turn into a known final status).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub enum JobStatus {
    Created,
    WaitingForResource,
    Preparing,
    WaitingForCallback,
    Pending,
    Running,
    Success,
    Failed,
    Canceling,
    Canceled,
    Skipped,
    Manual,
    Scheduled,
    Unknown(String),
}

impl JobStatus {
    /// The known non-final statuses: what a `scope[]` listing of the unfinished population asks for.
    pub const NON_FINAL: [JobStatus; 9] = [
        JobStatus::Created,
        JobStatus::WaitingForResource,
        JobStatus::Preparing,
        JobStatus::WaitingForCallback,
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Canceling,
        JobStatus::Manual,
        JobStatus::Scheduled,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "created",
            Self::WaitingForResource => "waiting_for_resource",
            Self::Preparing => "preparing",
            Self::WaitingForCallback => "waiting_for_callback",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Canceling => "canceling",
            Self::Canceled => "canceled",
            Self::Skipped => "skipped",
            Self::Manual => "manual",
            Self::Scheduled => "scheduled",
            Self::Unknown(s) => s,
        }
    }

    /// The value of a `status` label: the status, or `unknown` for any status outside GitLab's
    /// 13 (a label value per invented status would grow the series without bound).
    pub fn label(&self) -> &str {
        match self {
            Self::Unknown(_) => "unknown",
            known => known.as_str(),
        }
    }

    /// Completed: the job will not change any more and is counted.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::Canceled | Self::Skipped
        )
    }

    /// Statuses that GitLab versions before 17.x reject in `scope[]` (they did not exist yet).
    pub fn is_recent_scope(&self) -> bool {
        matches!(self, Self::WaitingForCallback | Self::Canceling)
    }
}

impl JobStatus {
    /// One of GitLab's 13 statuses, by name.
    fn known(s: &str) -> Option<Self> {
        Some(match s {
            "created" => Self::Created,
            "waiting_for_resource" => Self::WaitingForResource,
            "preparing" => Self::Preparing,
            "waiting_for_callback" => Self::WaitingForCallback,
            "pending" => Self::Pending,
            "running" => Self::Running,
            "success" => Self::Success,
            "failed" => Self::Failed,
            "canceling" => Self::Canceling,
            "canceled" => Self::Canceled,
            "skipped" => Self::Skipped,
            "manual" => Self::Manual,
            "scheduled" => Self::Scheduled,
            _ => return None,
        })
    }
}

impl From<String> for JobStatus {
    fn from(s: String) -> Self {
        Self::known(&s).unwrap_or(Self::Unknown(s))
    }
}

/// A string, as `From<String>`, without copying the known statuses' names.
impl<'de> Deserialize<'de> for JobStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Status;
        impl serde::de::Visitor<'_> for Status {
            type Value = JobStatus;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a job status")
            }

            fn visit_str<E>(self, s: &str) -> Result<JobStatus, E> {
                Ok(JobStatus::known(s).unwrap_or_else(|| JobStatus::Unknown(s.to_owned())))
            }

            fn visit_string<E>(self, s: String) -> Result<JobStatus, E> {
                Ok(JobStatus::from(s))
            }
        }
        d.deserialize_string(Status)
    }
}

impl From<JobStatus> for String {
    fn from(s: JobStatus) -> Self {
        s.as_str().to_string()
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One job from `GET /projects/:id/jobs` or `GET /projects/:id/jobs/:job_id`.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// The job's `pipeline` object, as far as it is read (`id`, `created_at`).
    #[serde(default, deserialize_with = "lenient_pipeline")]
    pub pipeline: JobPipeline,
    #[serde(deserialize_with = "job_id")]
    pub id: u64,
    pub status: JobStatus,
    #[serde(default, deserialize_with = "label_text")]
    pub stage: String,
    #[serde(default, deserialize_with = "label_text")]
    pub name: String,
    #[serde(default, rename = "ref", deserialize_with = "label_text")]
    pub ref_: String,
    /// The ref is a tag.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tag: bool,
    #[serde(default, deserialize_with = "lenient_time")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_time")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub duration: Option<f64>,
    #[serde(default, deserialize_with = "lenient_seconds")]
    pub queued_duration: Option<f64>,
    /// Present only when the job failed.
    #[serde(default)]
    pub failure_reason: Option<String>,
    /// The runner that picked the job up; `None` for a job that never ran.
    #[serde(default, deserialize_with = "lenient_runner")]
    pub runner: Option<JobRunner>,
}

/// The parts of a job's `runner` object that may label its metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobRunner {
    pub description: String,
    /// `instance_type`, `group_type` or `project_type`.
    pub runner_type: String,
}

/// `runner`, if it is an object; a field of the wrong type reads as empty. Anything else
/// (null, a string, a list) → `None`: a mangled runner must not make the job unreadable.
fn lenient_runner<'de, D: Deserializer<'de>>(d: D) -> Result<Option<JobRunner>, D::Error> {
    let fields = lenient::object_fields(d, ["description", "runner_type"])?;
    let text = |f: &Option<lenient::Scalar<'_>>| {
        f.as_ref()
            .and_then(lenient::Scalar::as_str)
            .map(cap_label)
            .unwrap_or_default()
    };
    Ok(fields.map(|[description, runner_type]| JobRunner {
        description: text(&description),
        runner_type: text(&runner_type),
    }))
}

impl Job {
    /// Its pipeline's id, if it names one.
    pub fn pipeline_id(&self) -> Option<u64> {
        self.pipeline.id
    }

    /// The job ran (a runner picked it up): only then do its durations mean anything.
    pub fn has_started(&self) -> bool {
        self.started_at.is_some()
    }
}

/// What the exporter reads of a job's `pipeline` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobPipeline {
    pub id: Option<u64>,
    /// When the pipeline was created: its jobs (retries included) were all created after it,
    /// so a pipeline created after a job was listed holds no job older than that one.
    pub created_at: Option<DateTime<Utc>>,
}

/// `pipeline.id` and `pipeline.created_at`, if the job names a pipeline (a field of another
/// shape reads as absent).
fn lenient_pipeline<'de, D: Deserializer<'de>>(d: D) -> Result<JobPipeline, D::Error> {
    let fields = lenient::object_fields(d, ["id", "created_at"])?;
    Ok(fields
        .map(|[id, created_at]| JobPipeline {
            id: id.and_then(|v| v.as_u64()),
            created_at: created_at.and_then(|v| v.as_str().and_then(parse_time)),
        })
        .unwrap_or_default())
}

/// `GET /projects/:id`.
#[derive(Debug, Clone, Deserialize)]
pub struct Project {
    pub id: u64,
    pub path_with_namespace: String,
    /// Absent for a project without a repository. Compared with refs (`labels.ref = kind`),
    /// so capped like them.
    #[serde(default, deserialize_with = "capped_option")]
    pub default_branch: Option<String>,
    /// Absent from `simple=true` lists (those filter with `archived=` instead).
    #[serde(default, deserialize_with = "null_as_default")]
    pub archived: bool,
}

/// Longest `path_with_namespace` accepted (GitLab's own paths stay far below: it goes into
/// every series label and log line of the project).
pub const MAX_PATH_BYTES: usize = 1024;

impl Project {
    /// A path GitLab could have sent: not empty, bounded, no control or bidi characters (GitLab
    /// allows only letters, digits, `_-./`), so it is safe as a label and in a log line.
    pub fn is_plausible(&self) -> bool {
        let p = &self.path_with_namespace;
        !p.is_empty() && p.len() <= MAX_PATH_BYTES && !p.chars().any(text::needs_escape)
    }
}

/// Decodes a project list leniently: the items that are valid projects, and how many were not.
/// A page of more than `max_items` items is refused whole without decoding the rest (a server
/// that ignores `per_page`).
pub fn decode_projects(
    body: &[u8],
    max_items: usize,
) -> Result<(Vec<Project>, usize), DecodeError> {
    let (mut projects, mut bad) = decode_lenient::<Project>(body, Some(max_items))?;
    projects.retain(|p| {
        let ok = p.is_plausible();
        bad += usize::from(!ok);
        ok
    });
    Ok((projects, bad))
}

/// Decodes any GitLab list leniently, as the job and project lists are: the items that decode
/// as `T` (unknown fields ignored), and how many did not. A page of more than `max_items`
/// items is refused whole.
pub fn decode_list<T: serde::de::DeserializeOwned>(
    body: &[u8],
    max_items: usize,
) -> Result<(Vec<T>, usize), DecodeError> {
    decode_lenient(body, Some(max_items))
}

/// Why a list body was refused whole.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("more than {0} items in one page")]
    TooManyItems(usize),
}

/// A JSON array, item by item: one odd item (a wrong type, a lone surrogate, a number out of
/// range, nesting beyond serde_json's limit) is counted and skipped, never fatal to the page.
/// Invalid UTF-8 is replaced first (U+FFFD), so it costs at most the field it is in. The array
/// is split without decoding its items (each stays a slice of the body) and is refused past
/// `max_items` without reading further.
fn decode_lenient<T: serde::de::DeserializeOwned>(
    body: &[u8],
    max_items: Option<usize>,
) -> Result<(Vec<T>, usize), DecodeError> {
    let text = String::from_utf8_lossy(body);
    let mut de = serde_json::Deserializer::from_str(&text);
    let items = serde::Deserializer::deserialize_seq(
        &mut de,
        RawItems {
            max: max_items.unwrap_or(usize::MAX),
        },
    )
    .map_err(|e| match max_items {
        Some(max) if e.to_string().starts_with(TOO_MANY) => DecodeError::TooManyItems(max),
        _ => DecodeError::Json(e),
    })?;
    de.end()?;
    let mut ok = Vec::with_capacity(items.len());
    let mut bad = 0;
    for item in items {
        match serde_json::from_str::<T>(item.get()) {
            Ok(v) => ok.push(v),
            Err(_) => bad += 1,
        }
    }
    Ok((ok, bad))
}

const TOO_MANY: &str = "too many items";

/// Collects the items of a JSON array as raw slices, at most `max` of them.
struct RawItems {
    max: usize,
}

impl<'de> serde::de::Visitor<'de> for RawItems {
    type Value = Vec<&'de serde_json::value::RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max).min(1024));
        while let Some(item) = seq.next_element::<&'de serde_json::value::RawValue>()? {
            if items.len() == self.max {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
            items.push(item);
        }
        Ok(items)
    }
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Longest text kept from a field that becomes a label value (job name, stage, ref, runner,
/// default branch). GitLab caps job and stage names at 255 characters; a look-alike that sends
/// megabytes must not make every series (each repeated on every histogram line of every
/// scrape) that large. Longer values are cut on a character boundary.
pub const MAX_LABEL_BYTES: usize = 256;

fn cap_label(s: &str) -> String {
    let mut end = s.len().min(MAX_LABEL_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A string field that labels series: null reads as empty, and the value is capped.
fn label_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s: String = null_as_default(d)?;
    Ok(if s.len() > MAX_LABEL_BYTES {
        cap_label(&s)
    } else {
        s
    })
}

/// A job id: GitLab's are `bigint` (at most `i64::MAX`). A larger one can only come from a
/// broken or hostile peer, and would raise the high-water mark past every real id for good
/// (checkpointed), so such an item is no job.
fn job_id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let id = u64::deserialize(d)?;
    if id > i64::MAX as u64 {
        return Err(serde::de::Error::custom(
            "job id beyond GitLab's bigint range",
        ));
    }
    Ok(id)
}

/// An optional string, capped like [`label_text`].
fn capped_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| {
        if s.len() > MAX_LABEL_BYTES {
            cap_label(&s)
        } else {
            s
        }
    }))
}

/// Like [`capped_option`], but a value of another type reads as absent.
fn capped_option_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(lenient::Scalar::deserialize(d)?.as_str().map(cap_label))
}

/// RFC 3339 with any offset (GitLab renders in the instance's time zone). Unparsable → `None`.
fn lenient_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Ok(lenient::Scalar::deserialize(d)?
        .as_str()
        .and_then(parse_time))
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Longer durations are taken for garbage (a year: beyond any job timeout or queue).
pub const MAX_PLAUSIBLE_SECONDS: f64 = 366.0 * 24.0 * 3600.0;

/// Seconds as a finite, non-negative, plausible float; anything else (strings, negatives, NaN,
/// centuries) → `None`, so one absurd value cannot poison a histogram's sum.
fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(lenient::Scalar::deserialize(d)?
        .as_f64()
        .filter(|s| s.is_finite() && (0.0..=MAX_PLAUSIBLE_SECONDS).contains(s)))
}

/// Decodes a page leniently: the items that are valid jobs, and how many were not. A page of
/// more than `max_items` items is refused whole, without decoding the rest.
pub fn decode_jobs(body: &[u8], max_items: usize) -> Result<(Vec<Job>, usize), DecodeError> {
    decode_lenient(body, Some(max_items))
}

/// Whether a project showed activity in its last cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Jobs in flight, or jobs created or completed since the previous cycle.
    Busy,
    Idle,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "busy",
            Self::Idle => "idle",
        }
    }
}

#[cfg(test)]
mod tests;
