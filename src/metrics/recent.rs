//! Requests to GitLab over the last minute, for the status page's "requests/min used vs
//! budget": one counter per second of the last minute, so the figure is exact to the second
//! and costs O(1) per request whether anyone looks or not.

use std::sync::Mutex;
use std::time::Instant;

/// Seconds in the window.
const WINDOW: usize = 60;

#[derive(Debug)]
pub struct RecentRequests {
    start: Instant,
    /// `(second since start, requests in it)`, indexed by that second modulo [`WINDOW`].
    slots: Mutex<[(u64, u64); WINDOW]>,
}

impl Default for RecentRequests {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            slots: Mutex::new([(u64::MAX, 0); WINDOW]),
        }
    }
}

impl RecentRequests {
    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [(u64, u64); WINDOW]> {
        // Plain counts: still usable if a holder panicked.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn record_at(&self, now: Instant) {
        let s = self.second(now);
        let mut slots = self.lock();
        let slot = &mut slots[(s % WINDOW as u64) as usize];
        if slot.0 != s {
            *slot = (s, 0);
        }
        slot.1 += 1;
    }

    /// Requests in the last 60 seconds up to `now` (the current second included).
    pub fn last_minute_at(&self, now: Instant) -> u64 {
        let s = self.second(now);
        let oldest = s.saturating_sub(WINDOW as u64 - 1);
        self.lock()
            .iter()
            .filter(|(at, _)| *at != u64::MAX && *at >= oldest && *at <= s)
            .map(|(_, n)| n)
            .sum()
    }

    /// Seconds since counting began, at most 60: the window the count covers.
    pub fn window_secs_at(&self, now: Instant) -> u64 {
        (self.second(now) + 1).min(WINDOW as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn counts_the_last_minute_only() {
        let r = RecentRequests::default();
        let t0 = r.start;
        let at = |s: u64| t0 + Duration::from_secs(s);
        for _ in 0..3 {
            r.record_at(at(0));
        }
        r.record_at(at(30));
        assert_eq!(r.last_minute_at(at(30)), 4);
        assert_eq!(r.window_secs_at(at(30)), 31);
        assert_eq!(r.last_minute_at(at(59)), 4);
        // Second 0 has left the window; its slot is reused by second 60.
        assert_eq!(r.last_minute_at(at(60)), 1);
        r.record_at(at(60));
        assert_eq!(r.last_minute_at(at(61)), 2);
        assert_eq!(r.window_secs_at(at(61)), 60);
        assert_eq!(r.last_minute_at(at(200)), 0);
    }
}
