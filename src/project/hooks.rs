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
use crate::model::Job;
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
    pub fn feed_hook(&mut self, job: &Job, now: f64, metrics: &Metrics) -> Seen {
        let label = self.label();
        let mut events = Vec::new();
        let seen = self.tracker.observe_hook(job, now, &mut events);
        for e in &events {
            if let Event::Completed {
                finished_at: Some(t),
                ..
            } = e
            {
                metrics.observe_lag("webhook", now - t);
            }
        }
        self.labels
            .apply(&mut events, self.default_branch.as_deref());
        metrics.apply(&label, &events);
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
