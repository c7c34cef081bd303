//! `/healthz`: whether the exporter still does its job, as far as it can tell by itself.
//!
//! With `state.dir`, `/metrics` serves the page published with the last checkpoint; the
//! checkpoint loop republishes it at least once per poll interval. A page older than three
//! intervals means the loop is stuck or every write fails (counted in
//! `gitlab_jobs_exporter_checkpoint_failures_total`): scrapes would get stale values, so the
//! exporter is not healthy. Unless GitLab paused polling (a 429): waiting out its pause is the
//! exporter doing its job. Without `state.dir` the page is rendered live on each scrape.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How many poll intervals the published page may be old.
const MAX_AGE_INTERVALS: u32 = 3;

#[derive(Debug)]
pub struct Health {
    max_age: Duration,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// When a page was last published (`None`: live pages, or none yet).
    published: Option<Instant>,
    /// When the pause a 429 asked for ends, as last seen.
    paused_until: Option<Instant>,
}

impl Health {
    pub fn new(poll_interval: Duration) -> Self {
        Self {
            max_age: poll_interval.saturating_mul(MAX_AGE_INTERVALS),
            seen: Mutex::new(Seen::default()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Plain instants: still valid if a holder panicked.
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A page was published just now.
    pub fn published(&self) {
        self.seen().published = Some(Instant::now());
    }

    /// GitLab's pause (a 429) runs until `until` (`None`: no pause).
    pub fn paused_until(&self, until: Option<Instant>) {
        self.seen().paused_until = until;
    }

    /// `Err` with the reason when the exporter is not healthy.
    pub fn check(&self) -> Result<(), String> {
        let now = Instant::now();
        let seen = self.seen();
        let Some(published) = seen.published else {
            return Ok(());
        };
        let age = now.saturating_duration_since(published);
        if age <= self.max_age || seen.paused_until.is_some_and(|u| u > now) {
            return Ok(());
        }
        Err(format!(
            "the published /metrics page is {} old, more than {MAX_AGE_INTERVALS} poll intervals, and GitLab has not paused polling (see gitlab_jobs_exporter_checkpoint_failures_total)",
            humantime::format_duration(Duration::from_secs(age.as_secs()))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stale_page_fails_unless_gitlab_paused_polling() {
        let h = Health::new(Duration::from_secs(10));
        assert!(h.check().is_ok(), "nothing published: live pages");
        h.published();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(h.check().is_ok(), "three intervals is still fine");
        tokio::time::advance(Duration::from_secs(1)).await;
        let e = h.check().expect_err("stale");
        assert!(e.contains("31s old"), "{e}");
        // A 429 pause running: waiting is the job.
        h.paused_until(Some(Instant::now() + Duration::from_secs(60)));
        assert!(h.check().is_ok());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            h.check().is_err(),
            "the pause is over, the page still stale"
        );
        h.published();
        assert!(h.check().is_ok());
    }
}
