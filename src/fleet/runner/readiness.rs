//! `/readyz`: whether every project known at start has been polled once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `/readyz` turns ready once every project known at start (and the first discovery pass's)
/// has completed its first cycle; it then stays ready while projects come and go.
#[derive(Debug)]
pub struct Readiness {
    total: AtomicUsize,
    ready: AtomicUsize,
    latched: AtomicBool,
    /// The first complete discovery pass is done (for the status page's "why not ready").
    discovered: AtomicBool,
}

impl Readiness {
    pub fn new(total: usize) -> Self {
        Self {
            total: AtomicUsize::new(total),
            ready: AtomicUsize::new(0),
            latched: AtomicBool::new(false),
            discovered: AtomicBool::new(false),
        }
    }
    pub fn is_ready(&self) -> bool {
        if self.latched.load(Ordering::Acquire) {
            return true;
        }
        let ready = self.ready.load(Ordering::Acquire) >= self.total.load(Ordering::Acquire);
        if ready {
            self.latched.store(true, Ordering::Release);
        }
        ready
    }
    /// (projects done with their first cycle, projects in all)
    pub fn progress(&self) -> (usize, usize) {
        (
            self.ready.load(Ordering::Acquire),
            self.total.load(Ordering::Acquire),
        )
    }
    pub(super) fn add(&self, n: usize) {
        self.total.fetch_add(n, Ordering::AcqRel);
    }
    /// Whether the first complete discovery pass is done (meaningless without discovery).
    pub fn discovery_done(&self) -> bool {
        self.discovered.load(Ordering::Acquire)
    }
    /// The first complete discovery pass is done: it counts as one ready project.
    pub(super) fn mark_discovered(&self) {
        self.discovered.store(true, Ordering::Release);
        self.mark_one();
    }
    pub(super) fn mark_one(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }
    /// A project that will not be polled any more (counted ready or not).
    pub(super) fn forget(&self, counted: bool) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if counted {
            self.ready.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
