//! A read-only view of the fleet for the status page: every watched project's state as its
//! task left it, and the pacing. Taken in O(projects): the slots' lock once (handles copied),
//! then each project's short state lock in turn, never two at once and never across an
//! `.await`; no project's cycle is waited for.

use std::time::Duration;

use crate::config::ProjectRef;
use crate::fleet::pacing::PaceSnapshot;
use crate::model::Activity;
use crate::project::cycle::ProjectState;
use crate::project::hooks::HookState;

use super::{Scheduler, SharedPoller};

/// One watched project as the status page shows it.
#[derive(Debug, Clone)]
pub struct ProjectView {
    /// As configured (`Id` for a discovered project).
    pub reference: ProjectRef,
    /// Numeric id and `path_with_namespace`, once looked up (discovered: from the start).
    pub resolved: Option<(u64, String)>,
    /// Found by discovery rather than configured.
    pub discovered: bool,
    /// No longer polled (gone, or another shard's).
    pub ended: bool,
    pub state: ProjectState,
    /// Counted towards `/readyz` (its first cycle done, or refused, or gone).
    pub counted_ready: bool,
    /// Still on its first cycle ever (the backfill), checkpoint included.
    pub backfilling: bool,
    pub hooks: HookState,
    pub activity: Activity,
    /// Our clock, unix seconds, since start.
    pub last_success: Option<f64>,
    /// When, and why (already bounded and escaped for a log line; not for HTML).
    pub last_error: Option<(f64, String)>,
    pub last_hook: Option<f64>,
    /// The delay planned before its next cycle (`None`: not polled yet, or not again).
    pub interval: Option<Duration>,
}

/// The fleet as the status page shows it.
#[derive(Debug, Clone)]
pub struct FleetView {
    pub projects: Vec<ProjectView>,
    pub pace: PaceSnapshot,
    /// `poll.interval`, `poll.max_interval`, `webhook.reconcile_interval` (`None` without webhooks).
    pub interval: Duration,
    pub max_interval: Duration,
    pub reconcile_interval: Option<Duration>,
    /// Discovery is on (`[[groups]]` or membership).
    pub discovery: bool,
}

impl Scheduler {
    /// The fleet now (see the module documentation).
    pub fn view(&self) -> FleetView {
        let handles: Vec<(SharedPoller, bool, bool, Option<Duration>)> = {
            let slots = self.slots();
            slots
                .live
                .iter()
                .map(|(key, s)| {
                    let interval = slots.intervals.get(key).copied();
                    (s.poller.clone(), s.discovered.is_some(), s.ended, interval)
                })
                .collect()
        };
        let projects = handles
            .into_iter()
            .map(|(poller, discovered, ended, interval)| {
                let p = poller.project();
                ProjectView {
                    reference: p.reference.clone(),
                    resolved: p.resolved.clone(),
                    discovered,
                    ended,
                    state: p.state,
                    counted_ready: p.counted_ready,
                    backfilling: p.tracker.is_first_cycle(),
                    hooks: p.hooks,
                    activity: p.activity,
                    last_success: p.last_success,
                    last_error: p.last_error.clone(),
                    last_hook: p.last_hook,
                    interval: if ended { None } else { interval },
                }
            })
            .collect();
        FleetView {
            projects,
            pace: self.pacer.snapshot(),
            interval: self.interval,
            max_interval: self.pacer.max_interval(),
            reconcile_interval: self.reconcile_interval,
            discovery: self.discovery.enabled(),
        }
    }
}
