//! The checkpoint: what survives a restart when `state.dir` is set. One JSON file, replaced
//! atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves either the
//! old or the new checkpoint, never a mix.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{error, warn};

use crate::metrics::carry::Carry;
use crate::metrics::jobs::ProjectSeries;
use crate::tracker::Tracker;
use crate::tracker::attempts::Attempts;

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

/// One project's progress, taken under its state lock so tracker and series agree.
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
    /// Failed jobs waiting for their failure class (`project::followups`); none in older
    /// checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub followups: Vec<PendingClass>,
    /// Failed attempts and undecided successes for flaky jobs, taken with the tracker;
    /// absent from older checkpoints (then nothing below the next cycle's pages is certain).
    #[serde(default, skip_serializing_if = "Attempts::is_empty")]
    pub attempts: Attempts,
}

/// A failed job waiting for its failure class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingClass {
    pub job: u64,
    /// As counted in `gitlab_ci_jobs_total` (the label policy applied).
    pub labels: crate::tracker::JobLabels,
    pub failure_reason: String,
    /// Failed reads of its log so far.
    #[serde(default)]
    pub tries: u32,
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
    create_fresh(&probe)
        .and_then(|mut f| f.write_all(b"ok"))
        .map_err(io(dir))?;
    std::fs::remove_file(&probe).map_err(io(dir))
}

/// Creates `path` as a new regular file of our own: whatever was there (a stale temp file, or
/// a symlink or FIFO planted in its place) is removed, never written through, and the
/// exclusive create fails rather than follow a link planted in between.
fn create_fresh(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    // create_new is O_CREAT|O_EXCL, which never follows a symlink, even a dangling one.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Reads the checkpoint file if it is a regular file of at most [`MAX_BYTES`].
fn read_regular(path: &Path) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // A FIFO would block the open until a writer comes; non-blocking, it opens at once and
    // is refused below. (Regular files ignore the flag.)
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let f = options.open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Ok(Err(format!(
            "it is not a regular file ({:?})",
            meta.file_type()
        )));
    }
    if meta.len() > MAX_BYTES {
        return Ok(Err(format!("it is {} bytes, over {MAX_BYTES}", meta.len())));
    }
    let mut bytes = Vec::new();
    // Bounded even if the file grows while being read.
    f.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Ok(Err(format!("it grew over {MAX_BYTES} bytes")));
    }
    Ok(Ok(bytes))
}

/// Reads the checkpoint in `dir`. A missing file is a first start (`None`); a corrupt,
/// truncated or newer one is moved aside with a clear log line and also gives `None`: the
/// exporter starts fresh with the backfill window rather than crash-looping.
pub fn load(dir: &Path, gitlab_url: &str) -> Option<Checkpoint> {
    let path = dir.join(FILE_NAME);
    let problem = match read_regular(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => format!("cannot read it: {e}"),
        Ok(Err(problem)) => problem,
        Ok(Ok(bytes)) => match decode(&bytes) {
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
    let cp: Checkpoint = serde_json::from_slice(bytes).map_err(|e| format!("damaged: {e}"))?;
    validate(&cp)?;
    Ok(cp)
}

/// Values no run of the exporter writes: restoring them would show negative or NaN sums and
/// counters that go down from there on.
fn validate(cp: &Checkpoint) -> Result<(), String> {
    let sum_ok = |v: f64| v.is_finite() && v >= 0.0;
    for (key, p) in &cp.projects {
        for (family, hists) in [
            ("duration", &p.series.duration),
            ("queued", &p.series.queued),
        ] {
            if let Some(labels) = hists
                .iter()
                .find_map(|(labels, h)| (!sum_ok(h.sum)).then_some(labels))
            {
                return Err(format!(
                    "damaged: project {key:?}: a {family} histogram {labels:?} has a negative or non-finite sum"
                ));
            }
        }
        if p.retired_at.is_some_and(|t| !t.is_finite()) {
            return Err(format!(
                "damaged: project {key:?}: retired_at is not finite"
            ));
        }
    }
    for (family, series) in &cp.own {
        for c in series.series.values() {
            if !sum_ok(c.value) || c.buckets.iter().any(|(bound, _)| bound.is_nan()) {
                return Err(format!(
                    "damaged: {family}: a negative or non-finite value or bound"
                ));
            }
        }
    }
    Ok(())
}

fn set_aside(path: &Path, why: &str) {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let target = path.with_file_name(format!("{FILE_NAME}.{why}-{stamp}"));
    if let Err(e) = std::fs::rename(path, &target) {
        error!(path = %path.display(), error = %e, "cannot move the checkpoint aside");
    }
}

/// Writes the checkpoint atomically. Encoded straight into the file through a small buffer:
/// the whole JSON is never held in memory.
pub fn save(dir: &Path, cp: &Checkpoint) -> Result<(), StateError> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let f = create_fresh(&tmp).map_err(io(dir))?;
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
    serde_json::to_writer(&mut w, cp).map_err(|e| match e.io_error_kind() {
        Some(kind) => io(dir)(std::io::Error::new(kind, e)),
        None => StateError::Encode(e),
    })?;
    let f = w.into_inner().map_err(|e| io(dir)(e.into_error()))?;
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
                    status: crate::model::JobStatus::Failed,
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
        let job: crate::model::Job = serde_json::from_value(serde_json::json!({
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
                followups: Vec::new(),
                attempts: Default::default(),
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

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_temp_path_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(format!("{FILE_NAME}.tmp"))).unwrap();
        // A dangling one too (the exclusive create must not follow it either).
        std::os::unix::fs::symlink(outside.path().join("new"), dir.path().join(".write-test"))
            .unwrap();
        prepare(dir.path()).unwrap();
        let cp = sample();
        save(dir.path(), &cp).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!outside.path().join("new").exists());
        assert_eq!(load(dir.path(), "https://gitlab.example.com"), Some(cp));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_checkpoint_is_set_aside_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(load(&d, "https://gitlab.example.com"));
        });
        // A hang is the bug; the bound only keeps a regression from stalling the suite.
        let loaded = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("load returns instead of waiting for a FIFO writer");
        assert_eq!(loaded, None);
        assert!(std::fs::symlink_metadata(&path).is_err(), "moved aside");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn negative_or_non_finite_sums_are_refused_and_set_aside() {
        let mut negative_hist = sample();
        for p in negative_hist.projects.values_mut() {
            for h in p.series.duration.values_mut() {
                h.sum = -4.0;
            }
        }
        let mut negative_own = sample();
        for s in negative_own.own.values_mut() {
            for c in s.series.values_mut() {
                c.value = -12.0;
            }
        }
        for cp in [negative_hist, negative_own] {
            let bytes = serde_json::to_vec(&cp).unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(FILE_NAME), &bytes).unwrap();
            assert_eq!(load(dir.path(), "https://gitlab.example.com"), None);
            assert!(!dir.path().join(FILE_NAME).exists(), "moved aside");
        }
        // JSON has no NaN or infinity; a number too large for f64 is refused as well.
        let text = String::from_utf8(serde_json::to_vec(&sample()).unwrap()).unwrap();
        let huge = text.replacen("\"sum\":4.0", "\"sum\":1e999", 1);
        assert_ne!(huge, text, "{text}");
        assert!(decode(huge.as_bytes()).is_err());
        let mut nan = sample();
        for p in nan.projects.values_mut() {
            for h in p.series.duration.values_mut() {
                h.sum = f64::NAN;
            }
        }
        assert!(validate(&nan).is_err());
        assert!(validate(&sample()).is_ok());
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
