//! How often each project is polled, sharing one request budget.
//!
//! A project with jobs in flight or activity in its last cycle is polled every `poll.interval`;
//! an idle one waits about as long as it has been quiet (so its delay doubles cycle by cycle),
//! up to `poll.max_interval`, and the first sign of activity brings it back to `poll.interval`.
//! When the demand at those targets exceeds the budget, the delays are stretched: idle
//! projects' first (up to 4×), then busy ones' too, idle projects keeping at most a fifth of
//! the budget. Nothing is ever skipped: a stretched project is polled later, and the tracker
//! reads everything that happened in between. The stretch is exported and logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};

use crate::model::Activity;

/// Share of the budget planned for polling; the rest absorbs retries, lookups and discovery.
const USABLE_SHARE: f64 = 0.9;
/// Idle projects alone are slowed down by up to this factor before busy ones slow down too.
const IDLE_STRETCH_FIRST: f64 = 4.0;
/// Share of the usable budget idle projects keep, at most, once busy ones slow down too (so
/// thousands of idle projects cannot starve the busy ones, nor the reverse).
const IDLE_FLOOR_SHARE: f64 = 0.2;
/// Stretch factors stop here (10 min → a week): only an absurd budget gets near it, and
/// `Duration` arithmetic must not overflow.
const MAX_STRETCH: f64 = 1_000.0;
/// Weight of the newest cycle in a project's average rate of extra requests.
const COST_WEIGHT: f64 = 0.3;
/// The running sums are recomputed from every project after this many updates, so float
/// rounding cannot build up over a long run.
const RESUM_EVERY: u32 = 4096;

/// A project's demand is modelled as one request per cycle (the top page: all an idle project
/// costs) plus extra requests at a rate set by its activity (more pages, listings, single
/// fetches), which does not depend on how often it is polled: polling less often brings more
/// work per cycle. Counting whole cycles instead would feed back (stretch → costlier cycles →
/// more stretch).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Average extra requests per second.
    extra_rate: f64,
    /// The delay planned before this cycle (`None` before the first: its backfill is no
    /// measure of steady work).
    last_delay: Option<Duration>,
    /// How long the project has been seen idle (the delays of its idle cycles in a row).
    idle_for: Duration,
    activity: Activity,
    /// Delay before stretching.
    target: Duration,
}

/// Which target a cycle's next delay is planned at.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// `poll.interval`, backing off to `poll.max_interval` while idle.
    Normal,
    /// Idle back-off up to this longer cap.
    Quiet(Duration),
    /// Exactly this (a project whose hooks arrive).
    Reconcile(Duration),
}

/// Delays are multiplied by these; 1.0 means every project is polled at its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub busy: f64,
    pub idle: f64,
}

/// What the pacer currently plans, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaceSnapshot {
    pub busy_projects: usize,
    pub idle_projects: usize,
    /// Requests per second all projects need at their target delays.
    pub demand_per_second: f64,
    /// The budget in requests per second.
    pub budget_per_second: f64,
    pub stretch: Stretch,
}

#[derive(Debug)]
pub struct Pacer {
    interval: Duration,
    max_interval: Duration,
    inner: Mutex<Inner>,
}

impl Entry {
    /// Requests per second at its target delay (one per cycle).
    fn rate(&self) -> f64 {
        1.0 / self.target.as_secs_f64().max(1e-3)
    }
}

/// The demand of every project, summed as entries change (planning after each cycle would
/// otherwise walk every project: O(projects) per cycle, O(projects²) per round).
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    busy: f64,
    idle: f64,
    extra: f64,
    busy_projects: usize,
    idle_projects: usize,
    /// Updates since the sums were last recomputed from scratch.
    updates: u32,
}

impl Sums {
    fn of<'a>(entries: impl Iterator<Item = &'a Entry>) -> Self {
        let mut sums = Self::default();
        for e in entries {
            sums.add(e);
        }
        sums.updates = 0;
        sums
    }

    fn add(&mut self, e: &Entry) {
        self.extra += e.extra_rate;
        match e.activity {
            Activity::Busy => {
                self.busy += e.rate();
                self.busy_projects += 1;
            }
            Activity::Idle => {
                self.idle += e.rate();
                self.idle_projects += 1;
            }
        }
        self.updates += 1;
    }

    fn sub(&mut self, e: &Entry) {
        self.extra -= e.extra_rate;
        match e.activity {
            Activity::Busy => {
                self.busy -= e.rate();
                self.busy_projects -= 1;
            }
            Activity::Idle => {
                self.idle -= e.rate();
                self.idle_projects -= 1;
            }
        }
        // An empty class demands nothing, exactly (no rounding left behind).
        if self.busy_projects == 0 {
            self.busy = 0.0;
        }
        if self.idle_projects == 0 {
            self.idle = 0.0;
        }
        if self.busy_projects + self.idle_projects == 0 {
            self.extra = 0.0;
        }
        self.updates += 1;
    }
}

#[derive(Debug, Default)]
struct Inner {
    budget_per_second: f64,
    entries: HashMap<u64, Entry>,
    /// Every entry's demand, summed.
    sums: Sums,
    /// The plan as of the last change, for the metrics.
    last: Option<PaceSnapshot>,
    degraded: bool,
}

impl Inner {
    /// Replaces `key`'s entry (or adds it), keeping the sums.
    fn put(&mut self, key: u64, entry: Entry) {
        if let Some(old) = self.entries.insert(key, entry) {
            self.sums.sub(&old);
        }
        self.sums.add(&entry);
        if self.sums.updates >= RESUM_EVERY {
            self.sums = Sums::of(self.entries.values());
        }
    }
}

impl Pacer {
    pub fn new(interval: Duration, max_interval: Duration, requests_per_minute: f64) -> Self {
        Self {
            interval,
            max_interval: max_interval.max(interval),
            inner: Mutex::new(Inner {
                budget_per_second: requests_per_minute / 60.0,
                ..Inner::default()
            }),
        }
    }

    /// Plans against another budget than the configured one (simulations whose clock runs
    /// faster than the real-time throttle).
    pub fn set_budget(&self, requests_per_minute: f64) {
        let mut inner = self.lock();
        inner.budget_per_second = requests_per_minute / 60.0;
        inner.last = None;
    }

    pub fn max_interval(&self) -> Duration {
        self.max_interval
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding this lock leaves plain numbers behind: still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a completed (or failed) cycle of project `key` that cost `requests`, and returns
    /// the delay until its next cycle.
    pub fn after_cycle(&self, key: u64, requests: usize, activity: Activity) -> Duration {
        self.plan_next(key, requests, activity, Pace::Normal)
    }

    /// Like [`Pacer::after_cycle`] for a project whose hooks arrive: polled only to reconcile,
    /// every `reconcile`, never stretched (its demand is planned with the idle projects').
    pub fn after_reconcile(&self, key: u64, requests: usize, reconcile: Duration) -> Duration {
        self.plan_next(key, requests, Activity::Idle, Pace::Reconcile(reconcile))
    }

    /// Like [`Pacer::after_cycle`] for an idle project that would announce its next job by a
    /// hook: it backs off as idle projects do, but up to `cap` (the reconcile interval, when
    /// longer than `poll.max_interval`).
    pub fn after_quiet(&self, key: u64, requests: usize, cap: Duration) -> Duration {
        self.plan_next(
            key,
            requests,
            Activity::Idle,
            Pace::Quiet(cap.max(self.max_interval)),
        )
    }

    fn plan_next(&self, key: u64, requests: usize, activity: Activity, pace: Pace) -> Duration {
        let mut inner = self.lock();
        let mut entry = inner.entries.get(&key).copied().unwrap_or(Entry {
            extra_rate: 0.0,
            last_delay: None,
            idle_for: Duration::ZERO,
            activity,
            target: self.interval,
        });
        if let Some(d) = entry.last_delay {
            let sample = requests.saturating_sub(1) as f64 / d.as_secs_f64().max(1e-3);
            entry.extra_rate += COST_WEIGHT * (sample - entry.extra_rate);
        }
        entry.activity = activity;
        let max = match pace {
            Pace::Quiet(cap) => cap,
            Pace::Normal | Pace::Reconcile(_) => self.max_interval,
        };
        entry.idle_for = match activity {
            Activity::Busy => Duration::ZERO,
            Activity::Idle => (entry.idle_for + entry.last_delay.unwrap_or_default()).min(max),
        };
        // Wait about as long as the project has been quiet: the delay doubles cycle by cycle
        // (30 s, 30 s, 60 s, 120 s, …), and a stretched cycle counts for what it really lasted.
        entry.target = match pace {
            Pace::Reconcile(r) => r,
            Pace::Normal | Pace::Quiet(_) => entry.idle_for.clamp(self.interval, max),
        };
        let target = entry.target;
        inner.put(key, entry);
        let snapshot = self.plan(&inner);
        inner.last = Some(snapshot);
        // Logged on a clear change only (stretch above 1.1, or back to none), so a demand
        // hovering at the limit does not flood the log.
        let stretched = snapshot.stretch.idle.max(snapshot.stretch.busy);
        let degraded = if inner.degraded {
            stretched > 1.0
        } else {
            stretched > 1.1
        };
        if degraded != inner.degraded {
            inner.degraded = degraded;
            if degraded {
                warn!(
                    demand_per_minute = (snapshot.demand_per_second * 60.0).round(),
                    budget_per_minute = (snapshot.budget_per_second * 60.0).round(),
                    idle_stretch = snapshot.stretch.idle,
                    busy_stretch = snapshot.stretch.busy,
                    "the request budget cannot poll every project at its target interval; polling less often (idle projects first), nothing is skipped"
                );
            } else {
                info!("the request budget covers every project's target interval again");
            }
        }
        let factor = match (activity, pace) {
            // A reconciliation is the safety net under hooks and costs one request per
            // interval: not stretched (its demand is planned, so other idle projects give way).
            // The idle stretch is sized for idle projects polled every `poll.interval` right
            // after a start (26× in the 1,000-project benchmark) and would push it hours away.
            (_, Pace::Reconcile(_)) => 1.0,
            (Activity::Busy, _) => snapshot.stretch.busy,
            (Activity::Idle, _) => snapshot.stretch.idle,
        };
        let delay = target.mul_f64(factor.clamp(1.0, MAX_STRETCH));
        if let Some(e) = inner.entries.get_mut(&key) {
            e.last_delay = Some(delay);
        }
        delay
    }

    /// Forgets a project that is no longer polled (gone, another shard's, or denied).
    pub fn remove(&self, key: u64) {
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(&key) {
            inner.sums.sub(&old);
            inner.last = None;
        }
    }

    pub fn snapshot(&self) -> PaceSnapshot {
        let mut inner = self.lock();
        match inner.last {
            Some(s) => s,
            None => {
                let s = self.plan(&inner);
                inner.last = Some(s);
                s
            }
        }
    }

    fn plan(&self, inner: &Inner) -> PaceSnapshot {
        // Only the one request per cycle shrinks when cycles are stretched; the extra work
        // (deep jobs completing, bursts of new jobs) comes at its own rate whatever the delay.
        let sums = inner.sums;
        // Rounding of the running sums must not make a demand negative.
        let (busy, idle, extra) = (sums.busy.max(0.0), sums.idle.max(0.0), sums.extra.max(0.0));
        let (busy_projects, idle_projects) = (sums.busy_projects, sums.idle_projects);
        let usable = inner.budget_per_second * USABLE_SHARE;
        // Work beyond the budget cannot be planned away; the throttle spreads it out. Cycles
        // keep a tenth of the budget so that every project is still polled.
        let for_cycles = (usable - extra).max(usable * 0.1);
        PaceSnapshot {
            busy_projects,
            idle_projects,
            demand_per_second: busy + idle + extra,
            budget_per_second: inner.budget_per_second,
            stretch: stretch(busy, idle, for_cycles),
        }
    }
}

/// How much to stretch busy and idle delays so that `busy + idle` requests per second fit in
/// `usable`: idle projects give way first (down to `idle_floor`), then both.
fn stretch(busy: f64, idle: f64, usable: f64) -> Stretch {
    if busy + idle <= usable {
        return Stretch {
            busy: 1.0,
            idle: 1.0,
        };
    }
    let idle_floor = (idle / IDLE_STRETCH_FIRST).min(usable * IDLE_FLOOR_SHARE);
    if busy <= usable - idle_floor {
        Stretch {
            busy: 1.0,
            idle: idle / (usable - busy),
        }
    } else {
        Stretch {
            busy: busy / (usable - idle_floor),
            idle: if idle_floor > 0.0 {
                (idle / idle_floor).max(1.0)
            } else {
                1.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn idle_projects_back_off_gradually_and_return_at_once() {
        let p = Pacer::new(30 * S, 600 * S, 1e9);
        assert_eq!(p.after_cycle(1, 1, Activity::Busy), 30 * S);
        let idle: Vec<u64> = (0..7)
            .map(|_| p.after_cycle(1, 1, Activity::Idle).as_secs())
            .collect();
        assert_eq!(idle, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(p.after_cycle(1, 1, Activity::Busy), 30 * S);
        assert_eq!(p.after_cycle(1, 1, Activity::Idle), 30 * S);
        assert_eq!(p.after_cycle(1, 1, Activity::Idle), 60 * S);
    }

    #[test]
    fn within_budget_nothing_is_stretched() {
        // 10 projects × 1 request / 30 s = 20/min, budget 300/min.
        let p = Pacer::new(30 * S, 600 * S, 300.0);
        for k in 0..10 {
            assert_eq!(p.after_cycle(k, 1, Activity::Busy), 30 * S);
        }
        let s = p.snapshot();
        assert_eq!(
            s.stretch,
            Stretch {
                busy: 1.0,
                idle: 1.0
            }
        );
        assert!((s.demand_per_second * 60.0 - 20.0).abs() < 1e-9);
    }

    #[test]
    fn over_budget_idle_projects_give_way_first() {
        // Budget 60/min → 0.9 usable per second. 10 busy projects at 1 req / 30 s = 0.33/s;
        // 300 idle projects settled at 600 s = 0.5/s: 0.83/s fits. 600 idle: 1.0 + 0.33 doesn't.
        let p = Pacer::new(30 * S, 600 * S, 60.0);
        for k in 0..10 {
            p.after_cycle(k, 1, Activity::Busy);
        }
        for k in 100..700 {
            for _ in 0..7 {
                p.after_cycle(k, 1, Activity::Idle);
            }
        }
        let s = p.snapshot();
        assert_eq!(s.stretch.busy, 1.0, "{s:?}");
        // Idle get the rest: 0.9 - 0.333 = 0.567/s for a demand of 1.0/s.
        assert!(
            (s.stretch.idle - 1.0 / (0.9 - 1.0 / 3.0)).abs() < 1e-6,
            "{s:?}"
        );
        assert_eq!(p.after_cycle(0, 1, Activity::Busy), 30 * S);
        let idle_delay = p.after_cycle(100, 1, Activity::Idle);
        assert!(idle_delay > 600 * S, "{idle_delay:?}");
        // Planned requests now fit the usable budget.
        let planned = 10.0 / 30.0 + 600.0 / (600.0 * s.stretch.idle);
        assert!(planned <= 0.9 + 1e-6, "{planned}");
    }

    #[test]
    fn busy_projects_stretch_only_when_they_alone_exceed_the_budget() {
        // 100 busy projects × 1 request / 30 s = 3.3/s against 0.9 usable.
        let p = Pacer::new(30 * S, 600 * S, 60.0);
        for k in 0..100 {
            p.after_cycle(k, 1, Activity::Busy);
        }
        p.after_cycle(1000, 1, Activity::Idle);
        let s = p.snapshot();
        assert!(s.stretch.busy > 1.0 && s.stretch.idle >= 1.0, "{s:?}");
        let planned = (100.0 / 30.0) / s.stretch.busy + (1.0 / 30.0) / s.stretch.idle;
        assert!(planned <= 0.9 + 1e-6, "{planned}");
        // Removing them brings the target rate back.
        for k in 0..100 {
            p.remove(k);
        }
        assert_eq!(
            p.snapshot().stretch,
            Stretch {
                busy: 1.0,
                idle: 1.0
            }
        );
    }

    #[test]
    fn slower_polling_with_costlier_cycles_does_not_raise_the_demand() {
        // Extra work arrives at 0.1 requests/s whatever the delay: 3 extra per 30 s cycle, 6
        // per 60 s cycle. The demand stays 1/30 + 0.1 at the 30 s target.
        let p = Pacer::new(30 * S, 600 * S, 1e9);
        p.after_cycle(1, 40, Activity::Busy); // the backfill: not a measure
        for _ in 0..30 {
            p.after_cycle(1, 4, Activity::Busy);
        }
        let at_30 = p.snapshot().demand_per_second;
        assert!((at_30 - (1.0 / 30.0 + 0.1)).abs() < 1e-3, "{at_30}");
    }

    #[test]
    fn running_sums_match_a_walk_of_every_project() {
        let p = Pacer::new(30 * S, 600 * S, 60.0);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let key = rng.u64(0..300);
            match rng.u8(0..10) {
                0 => p.remove(key),
                1..=4 => {
                    p.after_cycle(key, rng.usize(1..6), Activity::Busy);
                }
                5..=7 => {
                    p.after_cycle(key, 1, Activity::Idle);
                }
                8 => {
                    p.after_reconcile(key, 1, 3600 * S);
                }
                _ => {
                    p.after_quiet(key, 1, 1800 * S);
                }
            }
        }
        let inner = p.lock();
        let walked = Sums::of(inner.entries.values());
        let kept = inner.sums;
        assert_eq!(
            (kept.busy_projects, kept.idle_projects),
            (walked.busy_projects, walked.idle_projects)
        );
        for (a, b) in [
            (kept.busy, walked.busy),
            (kept.idle, walked.idle),
            (kept.extra, walked.extra),
        ] {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{a} vs {b}");
        }
    }

    #[test]
    fn stretch_always_fits_the_usable_budget() {
        for (busy, idle) in [(0.0, 5.0), (5.0, 0.0), (0.5, 0.5), (2.0, 0.1), (0.1, 2.0)] {
            let s = stretch(busy, idle, 1.0);
            let planned = busy / s.busy + idle / s.idle;
            assert!(planned <= 1.0 + 1e-9, "{busy} {idle} {s:?}");
            assert!(s.busy >= 1.0 && s.idle >= 1.0);
        }
    }

    #[test]
    fn projects_with_hooks_are_polled_at_the_reconcile_interval_and_counted_in_demand() {
        let p = Pacer::new(30 * S, 600 * S, 300.0);
        assert_eq!(p.after_reconcile(1, 1, 3600 * S), 3600 * S);
        assert_eq!(p.after_reconcile(1, 1, 3600 * S), 3600 * S);
        let s = p.snapshot();
        assert_eq!(s.idle_projects, 1);
        assert!((s.demand_per_second * 3600.0 - 1.0).abs() < 1e-9, "{s:?}");
        // Hooks go silent: back to the normal pace at once.
        assert_eq!(p.after_cycle(1, 1, Activity::Busy), 30 * S);
    }

    #[test]
    fn a_reconciliation_is_not_stretched() {
        // Right after a start every idle project is planned at 30 s: 600 of them against a
        // 60/min budget stretch idle delays far beyond 4×.
        let p = Pacer::new(30 * S, 600 * S, 60.0);
        for k in 0..600 {
            p.after_cycle(k, 1, Activity::Idle);
        }
        assert!(p.snapshot().stretch.idle > 4.0, "{:?}", p.snapshot());
        let idle = p.after_cycle(1000, 1, Activity::Idle);
        assert!(idle > 4 * 30 * S, "{idle:?}");
        // A project whose hooks arrive is still reconciled every 10 min.
        assert_eq!(p.after_reconcile(2000, 1, 600 * S), 600 * S);
    }

    #[test]
    fn a_quiet_project_backs_off_up_to_the_reconcile_interval() {
        let p = Pacer::new(30 * S, 600 * S, 1e9);
        let quiet: Vec<u64> = (0..10)
            .map(|_| p.after_quiet(1, 1, 3600 * S).as_secs())
            .collect();
        assert_eq!(quiet, [30, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        // A cap below poll.max_interval never shortens the normal back-off.
        let quiet: Vec<u64> = (0..7)
            .map(|_| p.after_quiet(2, 1, 60 * S).as_secs())
            .collect();
        assert_eq!(quiet, [30, 30, 60, 120, 240, 480, 600]);
        // Its first job: back to `poll.interval` at once; then the normal cap again.
        assert_eq!(p.after_cycle(1, 1, Activity::Busy), 30 * S);
        let idle: Vec<u64> = (0..7)
            .map(|_| p.after_cycle(1, 1, Activity::Idle).as_secs())
            .collect();
        assert_eq!(idle, [30, 60, 120, 240, 480, 600, 600]);
    }
}
