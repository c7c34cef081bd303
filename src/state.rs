//! The checkpoint: what survives a restart when `state.dir` is set. One JSON file, replaced
//! atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves either the
//! old or the new checkpoint, never a mix.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{error, warn};

use crate::metrics::carry::Carry;
use crate::metrics::jobs::ProjectSeries;
use crate::tracker::Tracker;

/// Bumped when the format changes incompatibly; a newer file is set aside, never misread.
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "checkpoint.json";
/// Larger checkpoints are refused on load (a corrupted length, or a runaway).
pub const MAX_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// The GitLab the state belongs to: another URL means another set of job ids.
    pub gitlab_url: String,
    /// By the project's configuration entry (its path, or `id N`).
    pub projects: BTreeMap<String, ProjectCheckpoint>,
    /// The exporter's own counters and histograms.
    #[serde(default)]
    pub own: Carry,
}

/// One project's progress, taken under its poll lock so tracker and series agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectCheckpoint {
    /// Numeric id and `path_with_namespace`.
    pub resolved: Option<(u64, String)>,
    pub tracker: Tracker,
    pub series: ProjectSeries,
    pub completed_cycles: u64,
    #[serde(default)]
    pub default_branch: Option<String>,
    /// Found by discovery rather than configured.
    #[serde(default)]
    pub discovered: bool,
    /// When discovery stopped finding it (unix seconds); its series go after the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<f64>,
    /// [`crate::labels::LabelsConfig::fingerprint`] of the policy the series were written
    /// under; checkpoints from before it was recorded used the default policy.
    #[serde(default = "crate::labels::default_fingerprint")]
    pub label_policy: String,
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("state.dir {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode the checkpoint: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io(dir: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Creates `dir` if needed and checks that it is writable, so a bad `state.dir` fails at start.
pub fn prepare(dir: &Path) -> Result<(), StateError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(io(dir))?;
    std::fs::remove_file(&probe).map_err(io(dir))
}

/// Reads the checkpoint in `dir`. A missing file is a first start (`None`); a corrupt,
/// truncated or newer one is moved aside with a clear log line and also gives `None`: the
/// exporter starts fresh with the backfill window rather than crash-looping.
pub fn load(dir: &Path, gitlab_url: &str) -> Option<Checkpoint> {
    let path = dir.join(FILE_NAME);
    let problem = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => format!("cannot read it: {e}"),
        Ok(m) if m.len() > MAX_BYTES => format!("it is {} bytes, over {MAX_BYTES}", m.len()),
        Ok(_) => match std::fs::read(&path) {
            Err(e) => format!("cannot read it: {e}"),
            Ok(bytes) => match decode(&bytes) {
                Ok(cp) if cp.gitlab_url != gitlab_url => {
                    warn!(
                        saved = %cp.gitlab_url, configured = %gitlab_url,
                        "the checkpoint belongs to another GitLab URL; starting fresh"
                    );
                    set_aside(&path, "other-gitlab");
                    return None;
                }
                Ok(cp) => return Some(cp),
                Err(e) => e,
            },
        },
    };
    error!(path = %path.display(), problem = %problem,
        "unusable checkpoint moved aside; starting fresh with the backfill window");
    set_aside(&path, "corrupt");
    None
}

/// Parses a checkpoint, refusing versions this build does not know.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    #[derive(Deserialize)]
    struct Head {
        version: u32,
    }
    let head: Head = serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint: {e}"))?;
    if head.version != VERSION {
        return Err(format!(
            "format version {} (this build reads {VERSION})",
            head.version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("damaged: {e}"))
}

fn set_aside(path: &Path, why: &str) {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let target = path.with_file_name(format!("{FILE_NAME}.{why}-{stamp}"));
    if let Err(e) = std::fs::rename(path, &target) {
        error!(path = %path.display(), error = %e, "cannot move the checkpoint aside");
    }
}

/// Writes the checkpoint atomically.
pub fn save(dir: &Path, cp: &Checkpoint) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(cp)?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(dir))?;
    f.write_all(&bytes).map_err(io(dir))?;
    f.sync_all().map_err(io(dir))?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE_NAME)).map_err(io(dir))?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Checkpoint {
        let mut series = ProjectSeries::default();
        let bounds = crate::metrics::jobs::Bounds {
            duration: vec![1.0, 10.0],
            queued: vec![1.0],
        };
        let labels = crate::tracker::JobLabels {
            ref_: "main".into(),
            stage: "test".into(),
            name: "rspec".into(),
            tag: false,
            runner: None,
        };
        series.apply(
            &[
                crate::tracker::Event::Started {
                    labels: labels.clone(),
                    queued_duration: 0.5,
                },
                crate::tracker::Event::Completed {
                    labels,
                    status: crate::gitlab::JobStatus::Failed,
                    failure_reason: "script_failure".into(),
                    duration: Some(4.0),
                    finished_at: None,
                },
            ],
            &bounds,
            &Default::default(),
            &mut crate::metrics::jobs::Room {
                max: usize::MAX,
                used: [0; 3],
                folded: false,
            },
        );
        let mut tracker = Tracker::new();
        let mut events = Vec::new();
        let job: crate::gitlab::Job = serde_json::from_value(serde_json::json!({
            "id": 7, "status": "running", "pipeline": {"id": 3}
        }))
        .unwrap();
        tracker.observe(&job, 0.0, &mut events);
        tracker.complete_cycle(Some(7), Some(7));
        tracker.take_touched(); // transient, not saved
        let mut own = Carry::new();
        let mut carried = crate::metrics::carry::Series::default();
        carried.series.insert(
            vec![("code".into(), "200".into())],
            crate::metrics::carry::Carried {
                value: 12.0,
                ..Default::default()
            },
        );
        own.insert("gitlab_jobs_exporter_api_requests_total".into(), carried);
        let mut projects = BTreeMap::new();
        projects.insert(
            "group/project".to_string(),
            ProjectCheckpoint {
                resolved: Some((42, "group/project".into())),
                tracker,
                series,
                completed_cycles: 3,
                default_branch: Some("main".into()),
                discovered: true,
                retired_at: Some(1_790_000_000.5),
                label_policy: crate::labels::default_fingerprint(),
            },
        );
        Checkpoint {
            version: VERSION,
            gitlab_url: "https://gitlab.example.com".into(),
            projects,
            own,
        }
    }

    #[test]
    fn round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path()).unwrap();
        assert_eq!(load(dir.path(), "https://gitlab.example.com"), None);
        let cp = sample();
        save(dir.path(), &cp).unwrap();
        assert_eq!(load(dir.path(), "https://gitlab.example.com"), Some(cp));
        assert!(!dir.path().join(format!("{FILE_NAME}.tmp")).exists());
    }

    #[test]
    fn corrupt_truncated_newer_and_foreign_checkpoints_are_set_aside() {
        let good = serde_json::to_vec(&sample()).unwrap();
        let newer = serde_json::to_vec(&Checkpoint {
            version: VERSION + 1,
            ..sample()
        })
        .unwrap();
        for (bytes, url) in [
            (b"{not json".to_vec(), "https://gitlab.example.com"),
            (
                good[..good.len() / 2].to_vec(),
                "https://gitlab.example.com",
            ),
            (newer, "https://gitlab.example.com"),
            (good.clone(), "https://other.example.com"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
            assert_eq!(load(dir.path(), url), None);
            assert!(!dir.path().join(FILE_NAME).exists(), "moved aside");
            let aside = std::fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(aside, 1);
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn damaged_checkpoints_are_refused_or_equal(cut in 0usize..10_000, flip in any::<u8>()) {
            let good = serde_json::to_vec(&sample()).unwrap();
            let mut bytes = good.clone();
            let i = cut % bytes.len();
            bytes[i] ^= flip;
            // Either refused, or (a harmless change, e.g. in a string) decoded without panic.
            let _ = decode(&bytes);
            prop_assert!(decode(&good[..i]).is_err());
        }
    }
}
