//! The parts of GitLab's Job Hook (`object_kind: "build"`) that the exporter reads, decoded
//! into the same [`Job`] a poll reads, so a hooked job goes through the same tracker path.
//!
//! What GitLab sends (`Gitlab::DataBuilder::Build`): `build_*` fields with times as
//! `2023-01-10 13:50:02 UTC` (whole seconds), newer versions adding `build_*_at_iso` twins;
//! exact `build_duration`/`build_queued_duration` floats; `build_failure_reason` that reads
//! `unknown_failure` even for jobs that did not fail; `runner` null until a runner took it.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};

use super::{Job, JobRunner, JobStatus, MAX_PATH_BYTES};

/// A decoded Job Hook: the project it is about and the job as of the event.
#[derive(Debug, Clone)]
pub struct JobHook {
    pub project_id: u64,
    /// `project.path_with_namespace`, when sent and plausible (to find a project configured
    /// by path whose id is not known yet).
    pub project_path: Option<String>,
    /// `project.default_branch` (for `labels.ref = "kind"` before the project's lookup).
    pub default_branch: Option<String>,
    /// `retries_count`: earlier attempts of this job's name in its pipeline that were
    /// retried (GitLab 15.6+; `None` when not sent). 0 means a first attempt.
    pub retries_count: Option<u64>,
    pub job: Job,
}

/// Why a body is not a usable Job Hook.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("object_kind is not \"build\"")]
    NotAJobEvent,
}

#[derive(Deserialize)]
struct Raw {
    object_kind: String,
    #[serde(deserialize_with = "super::job_id")]
    build_id: u64,
    build_status: JobStatus,
    #[serde(default, deserialize_with = "super::label_text")]
    build_name: String,
    #[serde(default, deserialize_with = "super::label_text")]
    build_stage: String,
    #[serde(default, rename = "ref", deserialize_with = "super::label_text")]
    ref_: String,
    #[serde(default, deserialize_with = "super::null_as_default")]
    tag: bool,
    #[serde(default, deserialize_with = "hook_time")]
    build_created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "hook_time")]
    build_started_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "hook_time")]
    build_finished_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "hook_time")]
    build_created_at_iso: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "hook_time")]
    build_started_at_iso: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "hook_time")]
    build_finished_at_iso: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "super::lenient_seconds")]
    build_duration: Option<f64>,
    #[serde(default, deserialize_with = "super::lenient_seconds")]
    build_queued_duration: Option<f64>,
    #[serde(default, deserialize_with = "super::capped_option_lenient")]
    build_failure_reason: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pipeline_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    retries_count: Option<u64>,
    project_id: u64,
    #[serde(default, deserialize_with = "super::lenient_runner")]
    runner: Option<JobRunner>,
    #[serde(default)]
    project: Option<serde_json::Value>,
}

/// Decodes a Job Hook body. Required: `object_kind: "build"`, `build_id`, `build_status`,
/// `project_id`; anything else is read leniently (a mangled field reads as absent).
pub fn decode_job_hook(body: &[u8]) -> Result<JobHook, HookError> {
    let text = String::from_utf8_lossy(body);
    let raw: Raw = serde_json::from_str(&text)?;
    if raw.object_kind != "build" {
        return Err(HookError::NotAJobEvent);
    }
    let project_path = raw
        .project
        .as_ref()
        .and_then(|p| p.get("path_with_namespace"))
        .and_then(serde_json::Value::as_str)
        .filter(|p| !p.is_empty() && p.len() <= MAX_PATH_BYTES)
        .filter(|p| !p.chars().any(super::text::needs_escape))
        .map(str::to_string);
    let default_branch = raw
        .project
        .as_ref()
        .and_then(|p| p.get("default_branch"))
        .and_then(serde_json::Value::as_str)
        .filter(|b| !b.is_empty())
        .map(super::cap_label);
    // Read only for failed jobs: GitLab sends `unknown_failure` for every other one.
    let failure_reason = if raw.build_status == JobStatus::Failed {
        raw.build_failure_reason
    } else {
        None
    };
    let job = Job {
        pipeline: super::JobPipeline {
            id: raw.pipeline_id,
            created_at: None,
        },
        id: raw.build_id,
        status: raw.build_status,
        stage: raw.build_stage,
        name: raw.build_name,
        ref_: raw.ref_,
        tag: raw.tag,
        // The ISO twins, when sent (GitLab 16+; whole seconds too, but with the zone explicit).
        created_at: raw.build_created_at_iso.or(raw.build_created_at),
        started_at: raw.build_started_at_iso.or(raw.build_started_at),
        finished_at: raw.build_finished_at_iso.or(raw.build_finished_at),
        duration: raw.build_duration,
        queued_duration: raw.build_queued_duration,
        failure_reason,
        runner: raw.runner,
    };
    Ok(JobHook {
        project_id: raw.project_id,
        project_path,
        default_branch,
        retries_count: raw.retries_count,
        job,
    })
}

/// `object_kind`, if the body is a JSON object that has one (for counting other events).
pub fn object_kind(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Kind {
        object_kind: String,
    }
    serde_json::from_slice::<Kind>(body)
        .ok()
        .map(|k| k.object_kind)
}

/// A hook time in any form GitLab sends: RFC 3339 (`2021-02-23T02:41:37.886Z`), or Ruby's
/// `Time#to_s` (`2016-08-12 15:23:28 UTC`, or with a numeric offset). Unparsable → `None`.
pub fn parse_hook_time(s: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = super::parse_time(s) {
        return Some(t);
    }
    let s = s.trim();
    if let Some(naive) = s.strip_suffix(" UTC") {
        return NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S%.f")
            .ok()
            .map(|t| t.and_utc());
    }
    DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f %z")
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn hook_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(parse_hook_time))
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| v.as_u64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/fixtures/webhook_job.json");

    #[test]
    fn the_gitlab_sample_decodes_into_a_job() {
        let hook = decode_job_hook(FIXTURE.as_bytes()).unwrap();
        assert_eq!(hook.project_id, 31537070);
        let j = &hook.job;
        assert_eq!(j.id, 3580121225);
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(
            (j.name.as_str(), j.stage.as_str()),
            ("auto_deploy:start", "coordinated:tag")
        );
        assert_eq!(j.ref_, "main");
        assert_eq!(j.pipeline_id(), Some(743121198));
        assert_eq!(hook.retries_count, Some(1));
        assert_eq!(j.duration, Some(49.503592));
        assert_eq!(j.queued_duration, Some(0.193009));
        assert_eq!(
            j.failure_reason, None,
            "unknown_failure is read only for failed jobs"
        );
        assert_eq!(
            j.finished_at.map(|t| t.to_rfc3339()),
            Some("2023-01-10T13:50:54+00:00".into())
        );
        let runner = j.runner.as_ref().unwrap();
        assert_eq!(runner.runner_type, "instance_type");
    }

    #[test]
    fn iso_twins_win_and_failed_jobs_keep_their_reason() {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        v["build_status"] = "failed".into();
        v["build_failure_reason"] = "script_failure".into();
        v["build_finished_at_iso"] = "2023-01-10T13:50:54.512Z".into();
        v["runner"] = serde_json::Value::Null;
        v["project"] = serde_json::json!({"path_with_namespace": "g/p", "default_branch": "main"});
        let hook = decode_job_hook(v.to_string().as_bytes()).unwrap();
        assert_eq!(hook.default_branch.as_deref(), Some("main"));
        assert_eq!(hook.job.failure_reason.as_deref(), Some("script_failure"));
        assert_eq!(hook.job.finished_at.unwrap().timestamp_millis() % 1000, 512);
        assert!(hook.job.runner.is_none());
        assert_eq!(hook.project_path.as_deref(), Some("g/p"));
    }

    #[test]
    fn what_is_not_a_job_event_is_an_error() {
        let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        for key in ["build_id", "build_status", "project_id", "object_kind"] {
            let mut w = v.clone();
            w.as_object_mut().unwrap().remove(key);
            assert!(decode_job_hook(w.to_string().as_bytes()).is_err(), "{key}");
        }
        v["object_kind"] = "pipeline".into();
        assert!(matches!(
            decode_job_hook(v.to_string().as_bytes()),
            Err(HookError::NotAJobEvent)
        ));
        assert!(decode_job_hook(b"{").is_err());
        assert!(decode_job_hook(b"[]").is_err());
        v["object_kind"] = "build".into();
        v["build_id"] = serde_json::json!(u64::MAX);
        assert!(decode_job_hook(v.to_string().as_bytes()).is_err());
    }

    #[test]
    fn hook_times_in_every_form() {
        let t = |s| parse_hook_time(s).map(|t| t.timestamp_millis());
        assert_eq!(t("2016-08-12 15:23:28 UTC"), Some(1471015408000));
        assert_eq!(t("2016-08-12 17:23:28 +0200"), Some(1471015408000));
        assert_eq!(t("2016-08-12T15:23:28.250Z"), Some(1471015408250));
        assert_eq!(t("yesterday"), None);
    }
}
