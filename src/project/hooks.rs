//! A project's side of GitLab's webhooks: a Job Hook is an observation of one job, applied to
//! the tracker and the job series in one step under the state lock, exactly as a polled page
//! is (so a job is counted once whoever sees it first); and whether the project's hooks can be
//! trusted, which sets how often it is polled.
//!
//! States: a project starts without hooks (polled normally). The first hook makes it
//! *receiving*: polled every `webhook.reconcile_interval` only, to catch what hooks missed.
//! A poll that finds a completion no hook reported makes it *silent* (counted in
//! `webhook_missed_total`): polled normally again, until the next hook.

use tracing::info;

use crate::metrics::Metrics;
use crate::model::hook::JobHook;
use crate::tracker::{Event, Seen};

use super::state::Project;

/// A completion a poll finds this long after it finished, with no hook for it, was missed by
/// the hooks (younger ones may have their hook still on the way: GitLab sends them from a
/// background queue).
pub const MISSED_AFTER_SECS: f64 = 60.0;

/// Whether a project's hooks arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HookState {
    /// No hook seen since start.
    #[default]
    None,
    Receiving,
    /// A poll found what hooks had missed.
    Silent,
}

impl HookState {
    /// The `state` label of `gitlab_jobs_exporter_webhook_projects`.
    pub fn label(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Receiving => Some("receiving"),
            Self::Silent => Some("silent"),
        }
    }
}

impl Project {
    /// Applies one Job Hook's job (`now`: our clock, unix seconds). The caller has checked
    /// that the hook is this project's.
    pub fn feed_hook(&mut self, hook: &JobHook, now: f64, metrics: &Metrics) -> Seen {
        if self.label_unknown() {
            // No series under a placeholder label: its first poll counts the job.
            return Seen::Deferred;
        }
        let job = &hook.job;
        if self.default_branch.is_none() {
            // Before the lookup only the hook says which branch is the default one.
            self.default_branch.clone_from(&hook.default_branch);
        }
        let label = self.label();
        let mut events = Vec::new();
        let seen = self.tracker.observe_hook(job, now, &mut events);
        let mut flaky = Vec::new();
        let first_attempt = hook.retries_count == Some(0);
        self.observe_attempt(job, &events, first_attempt, &mut flaky, metrics);
        events.append(&mut flaky);
        for e in &events {
            if let Event::Completed {
                finished_at: Some(t),
                ..
            } = e
            {
                metrics.observe_lag("webhook", now - t);
            }
        }
        let origin = vec![job.id; events.len()];
        self.publish(&label, events, &origin, metrics);
        if seen == Seen::Changed {
            self.report_active(metrics);
            self.sync_tracked(metrics);
        }
        if self.hooks != HookState::Receiving {
            if self.hooks == HookState::Silent {
                info!(project = %label, "hooks arrive again; polling every webhook.reconcile_interval");
            }
            self.set_hook_state(HookState::Receiving, metrics);
        }
        metrics.webhook_received(&label, now);
        self.last_hook = Some(now);
        seen
    }

    /// A poll counted `completions` jobs whose completion is older than
    /// [`MISSED_AFTER_SECS`]: for a project that has received hooks, those were missed.
    pub(crate) fn polled_completions(&mut self, completions: u64, metrics: &Metrics) {
        if completions == 0 || self.hooks == HookState::None {
            return;
        }
        let label = self.label();
        metrics.webhook_missed(&label, completions);
        if self.hooks == HookState::Receiving {
            info!(project = %label, missed = completions,
                "a poll found job completions no hook reported; polling this project normally until hooks arrive again");
            self.set_hook_state(HookState::Silent, metrics);
        }
    }

    /// Polled only to reconcile: hooks arrive, and polls have nothing else to catch up on.
    pub(crate) fn hooks_suffice(&self) -> bool {
        self.hooks == HookState::Receiving
            && !self.tracker.is_first_cycle()
            && self.tracker.gaps().is_empty()
    }

    pub fn hook_state(&self) -> HookState {
        self.hooks
    }

    pub(crate) fn set_hook_state(&mut self, state: HookState, metrics: &Metrics) {
        metrics.webhook_project_state(self.hooks.label(), state.label());
        self.hooks = state;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ProjectRef;
    use crate::project::state::NextPoll;

    /// A Job Hook of project 5 (default branch `main`) about job `id`, now `status`.
    fn job(id: u64, status: &str) -> JobHook {
        JobHook {
            project_id: 5,
            project_path: None,
            default_branch: Some("main".into()),
            retries_count: None,
            job: serde_json::from_value(serde_json::json!({
                "id": id, "status": status, "stage": "test", "name": "rspec", "ref": "main",
                "created_at": "2026-01-01T10:00:00.000Z", "finished_at": "2026-01-01T10:01:00.000Z",
            }))
            .expect("job"),
        }
    }

    fn gauge(metrics: &Metrics, state: &str) -> bool {
        let page = metrics.render().expect("render");
        page.contains(&format!(
            "gitlab_jobs_exporter_webhook_projects{{state=\"{state}\"}} 1"
        ))
    }

    #[test]
    fn hooks_set_the_pace_until_a_poll_finds_what_they_missed() {
        let metrics =
            Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics");
        let mut p = Project::new(
            ProjectRef::Id(5),
            Duration::from_secs(3600),
            Default::default(),
            (0, 1),
        );
        p.resolved = Some((5, "g/p".into()));
        let interval = Duration::from_secs(30);
        assert_eq!(p.hook_state(), HookState::None);
        assert_eq!(
            p.feed_hook(&job(1, "success"), 0.0, &metrics),
            Seen::Changed
        );
        assert_eq!(p.hook_state(), HookState::Receiving);
        assert!(gauge(&metrics, "receiving"));
        // Not before the backfill is done: it must read the history first.
        assert!(matches!(p.next_poll(interval), NextPoll::Paced(_)));
        p.tracker.complete_cycle(Some(1), Some(1));
        assert_eq!(p.next_poll(interval), NextPoll::Reconcile);
        // A poll found completions no hook reported.
        p.polled_completions(2, &metrics);
        assert_eq!(p.hook_state(), HookState::Silent);
        assert!(gauge(&metrics, "silent") && !gauge(&metrics, "receiving"));
        assert!(matches!(p.next_poll(interval), NextPoll::Paced(_)));
        let page = metrics.render().expect("render");
        assert!(
            page.contains("gitlab_jobs_exporter_webhook_missed_total{project=\"g/p\"} 2"),
            "{page}"
        );
        // The next hook: receiving again.
        assert_eq!(p.feed_hook(&job(2, "failed"), 0.0, &metrics), Seen::Changed);
        assert_eq!(p.next_poll(interval), NextPoll::Reconcile);
        // A project retired by discovery leaves the gauge.
        p.pause(&metrics);
        assert!(!gauge(&metrics, "receiving") && !gauge(&metrics, "silent"));
    }

    /// Review: with `labels.ref = "kind"`, a hook applied before the project's first lookup
    /// (configured by id, bfa4b32) is labelled without the default branch, which only the
    /// lookup gives: a job on `main` is counted for good as `ref="branch"`.
    #[test]
    fn a_hook_before_the_lookup_labels_the_default_branch_as_such() {
        use crate::labels::{LabelsConfig, RefMode};
        let metrics =
            Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics");
        let labels = LabelsConfig {
            ref_: RefMode::Kind,
            ..Default::default()
        };
        // Configured by path (by id, a hook waits for the lookup: no label yet).
        let mut p = Project::new(
            ProjectRef::Path("G/P".into()),
            Duration::from_secs(3600),
            labels.clone(),
            (0, 1),
        );
        assert_eq!(
            p.feed_hook(&job(1, "success"), 0.0, &metrics),
            Seen::Changed
        );
        let mut by_id = Project::new(ProjectRef::Id(5), Duration::from_secs(3600), labels, (0, 1));
        assert_eq!(
            by_id.feed_hook(&job(2, "success"), 0.0, &metrics),
            Seen::Deferred
        );
        assert!(!metrics.render().expect("render").contains("id 5"));
        // The first lookup (ProjectPoller::resolve): GitLab says `main` is the default branch.
        let before = p.label();
        p.resolved = Some((5, "g/p".into()));
        p.default_branch = Some("main".into());
        metrics.rename_project(&before, "g/p", crate::project::state::ProjectState::ALL);
        let page = metrics.render().expect("render");
        let line = page
            .lines()
            .find(|l| l.starts_with("gitlab_ci_jobs_total{"))
            .unwrap_or_default()
            .to_string();
        assert!(line.contains("ref=\"default_branch\""), "{line}\n{page}");
    }

    /// A project that sends no hook and has only a job left `pending` (no runner takes it)
    /// is quiet: with webhooks on, the job's next change sends a hook, so polling every
    /// `poll.interval` for it is waste. A running job keeps it busy.
    #[test]
    fn only_unchanged_pending_jobs_make_a_project_quiet() {
        use crate::model::Activity;
        let metrics =
            Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics");
        let mut p = Project::new(
            ProjectRef::Id(5),
            Duration::from_secs(3600),
            Default::default(),
            (0, 1),
        );
        p.resolved = Some((5, "g/p".into()));
        let interval = Duration::from_secs(30);
        let mut events = Vec::new();
        p.tracker.observe(&job(1, "pending").job, 0.0, &mut events);
        p.tracker.complete_cycle(Some(1), Some(1));
        // A cycle that counted something is busy.
        p.cycle_completed(1, &metrics);
        assert_eq!(p.next_poll(interval), NextPoll::Paced(Activity::Busy));
        // Nothing counted, only a pending job: quiet (still busy for polling without webhooks).
        p.cycle_completed(events.len(), &metrics);
        assert_eq!(p.next_poll(interval), NextPoll::Quiet(Activity::Busy));
        // Another job running: busy again.
        p.tracker.observe(&job(2, "running").job, 0.0, &mut events);
        p.cycle_completed(0, &metrics);
        assert_eq!(p.next_poll(interval), NextPoll::Paced(Activity::Busy));
        // Both done: idle, and quiet.
        p.tracker.observe(&job(1, "success").job, 0.0, &mut events);
        p.tracker.observe(&job(2, "success").job, 0.0, &mut events);
        p.cycle_completed(0, &metrics);
        assert_eq!(p.next_poll(interval), NextPoll::Quiet(Activity::Idle));
        // Once its hooks arrive it is reconciled instead; once they miss, paced normally.
        p.feed_hook(&job(3, "success"), 0.0, &metrics);
        assert_eq!(p.next_poll(interval), NextPoll::Reconcile);
        p.polled_completions(1, &metrics);
        assert_eq!(p.next_poll(interval), NextPoll::Paced(Activity::Idle));
    }
}
