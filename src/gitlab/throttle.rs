//! The process-wide request budget: every request to GitLab, whatever the project or endpoint,
//! first waits here. A steady rate (`gitlab.max_requests_per_minute`), a full stop after a 429
//! until GitLab's reset, and a slow-down as `RateLimit-Remaining` nears zero.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Longest pause of all requests, whatever GitLab's headers ask for.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);
/// Below this share of the window's budget left, requests are spread over the rest of it.
const SLOW_DOWN_BELOW: f64 = 0.2;
/// While paused, waiting requests wake this often to count the pause served so far, so
/// `rate_limited_seconds_total` grows as the pause runs rather than in one lump up front.
const PAUSE_STEP: Duration = Duration::from_secs(1);

/// The part of the pause that 429s asked for, and how much of it has been counted.
#[derive(Debug)]
struct Limited {
    /// The 429 pause ends here.
    until: Option<Instant>,
    /// Paused time up to here has been added to `pending` (or taken).
    counted: Instant,
    /// Served pause not yet taken by [`Throttle::take_served`].
    pending: Duration,
}

impl Limited {
    /// Moves the pause served up to `now` into `pending`.
    fn settle(&mut self, now: Instant) {
        if let Some(until) = self.until {
            let end = until.min(now);
            if end > self.counted {
                self.pending += end - self.counted;
                self.counted = end;
            }
        }
    }
}

/// The steady rate: one request per `period`, no burst. Each request takes the next free slot
/// and sleeps on tokio's timer until it comes (no timer thread, no polling: one wake-up per
/// request), so the budget holds over any window, not only on average.
#[derive(Debug)]
struct Slots {
    period: Duration,
    /// The earliest instant the next request may start.
    next: Mutex<Instant>,
}

impl Slots {
    fn next(&self) -> std::sync::MutexGuard<'_, Instant> {
        // A plain instant: still valid if a holder panicked.
        self.next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the next free slot and returns when it starts (now, or later).
    fn take(&self) -> Instant {
        let mut next = self.next();
        let at = (*next).max(Instant::now());
        *next = at + self.period;
        at
    }

    /// Takes a slot only if one is free now.
    #[cfg(test)]
    fn try_take(&self) -> bool {
        let mut next = self.next();
        let now = Instant::now();
        if *next > now {
            return false;
        }
        *next = now + self.period;
        true
    }
}

pub struct Throttle {
    /// `None` when the budget is too large to matter (a period under a microsecond).
    slots: Option<Slots>,
    /// No request may start before this instant (a 429's wait, or a slow-down).
    pause_until: Mutex<Option<Instant>>,
    /// The 429 share of the pause, for `rate_limited_seconds_total` (slow-downs not included).
    limited: Mutex<Limited>,
    consecutive_429: AtomicU32,
    /// Pause after a 429 that names no wait: doubled per consecutive 429, up to `max_pause`.
    base_pause: Duration,
    /// Longest pause, whatever GitLab asks for ([`MAX_PAUSE`] unless set otherwise).
    max_pause: Duration,
}

impl Throttle {
    /// `per_minute` may be fractional (e.g. 0.5 = one request every two minutes).
    pub fn new(per_minute: f64, base_pause: Duration) -> Self {
        let period = (per_minute.is_finite() && per_minute > 0.0)
            .then(|| Duration::from_secs_f64(60.0 / per_minute))
            .filter(|p| *p >= Duration::from_micros(1));
        let slots = period.map(|period| Slots {
            period,
            next: Mutex::new(Instant::now()),
        });
        Self {
            slots,
            pause_until: Mutex::new(None),
            limited: Mutex::new(Limited {
                until: None,
                counted: Instant::now(),
                pending: Duration::ZERO,
            }),
            consecutive_429: AtomicU32::new(0),
            base_pause,
            max_pause: MAX_PAUSE,
        }
    }

    /// Caps every pause at `max` instead of [`MAX_PAUSE`].
    pub fn with_max_pause(mut self, max: Duration) -> Self {
        self.max_pause = max;
        self
    }

    fn paused_until(&self) -> Option<Instant> {
        *self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limited(&self) -> std::sync::MutexGuard<'_, Limited> {
        // Plain instants: still valid if a holder panicked.
        self.limited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a request may be sent. While paused it wakes every `PAUSE_STEP` and calls
    /// `tick`, which counts the pause served so far ([`Throttle::take_served`]).
    pub async fn wait(&self, mut tick: impl FnMut()) {
        loop {
            if let Some(until) = self.paused_until()
                && until > Instant::now()
            {
                tokio::time::sleep_until(until.min(Instant::now() + PAUSE_STEP)).await;
                tick();
                continue;
            }
            if let Some(slots) = &self.slots {
                let at = slots.take();
                if at > Instant::now() {
                    tokio::time::sleep_until(at).await;
                }
            }
            // A 429 may have arrived while this request waited for its slot.
            match self.paused_until() {
                Some(until) if until > Instant::now() => continue,
                _ => return,
            }
        }
    }

    /// Stops every request for `wait` (or a growing backoff when GitLab named none), at most
    /// the maximum pause. Returns how much the pause grew, for `rate_limited_seconds_total`.
    pub fn rate_limited(&self, wait: Option<Duration>) -> Duration {
        let n = self.consecutive_429.fetch_add(1, Ordering::AcqRel);
        let wait = wait.unwrap_or_else(|| {
            self.base_pause
                .saturating_mul(2u32.saturating_pow(n.min(16)))
        });
        let wait = wait.min(self.max_pause);
        let now = Instant::now();
        let mut limited = self.limited();
        limited.settle(now);
        let end = now + wait;
        match limited.until {
            Some(until) if until >= end => {}
            Some(until) if until > now => limited.until = Some(end),
            // A new pause: the time since the last one ended was not paused.
            _ => {
                limited.until = Some(end);
                limited.counted = now;
            }
        }
        drop(limited);
        self.extend_pause(wait)
    }

    /// The pause 429s asked for that has been served since the last call: counted as it is
    /// served, so a scrape during a long pause shows it growing.
    pub fn take_served(&self) -> Duration {
        let mut limited = self.limited();
        limited.settle(Instant::now());
        std::mem::take(&mut limited.pending)
    }

    /// When the pause a 429 asked for ends, while it runs.
    pub fn rate_limited_until(&self) -> Option<Instant> {
        self.limited().until.filter(|u| *u > Instant::now())
    }

    /// A request went through without a 429.
    pub fn succeeded(&self) {
        self.consecutive_429.store(0, Ordering::Release);
    }

    /// `RateLimit-Remaining` requests may still be sent before `reset_in`: when few are left,
    /// spread them out so the window is never exhausted. Returns how much the pause grew.
    pub fn remaining(
        &self,
        remaining: f64,
        limit: Option<f64>,
        reset_in: Option<Duration>,
    ) -> Duration {
        let (Some(limit), Some(reset_in)) = (limit, reset_in) else {
            return Duration::ZERO;
        };
        if limit <= 0.0 || remaining >= limit * SLOW_DOWN_BELOW {
            return Duration::ZERO;
        }
        let spacing = reset_in.div_f64(remaining.max(1.0));
        self.extend_pause(spacing.min(self.max_pause))
    }

    fn extend_pause(&self, wait: Duration) -> Duration {
        let now = Instant::now();
        let mut guard = self
            .pause_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = guard.filter(|u| *u > now).unwrap_or(now);
        let wanted = now + wait;
        if wanted > current {
            *guard = Some(wanted);
            wanted - current
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(5);

    #[test]
    fn holds_the_configured_rate_without_burst() {
        let t = Throttle::new(0.5, BASE); // one request every two minutes
        let slots = t.slots.as_ref().expect("limited");
        assert!(slots.try_take());
        assert!(!slots.try_take(), "no second request in the same period");
        let fast = Throttle::new(6000.0, BASE);
        let slots = fast.slots.as_ref().expect("limited");
        assert!(slots.try_take());
        assert!(!slots.try_take(), "no burst above one");
        assert!(Throttle::new(1e12, BASE).slots.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_requests_take_one_slot_each_on_tokios_timer() {
        let t = std::sync::Arc::new(Throttle::new(60.0, BASE)); // one a second
        let start = Instant::now();
        let waits: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                tokio::spawn(async move {
                    t.wait(|| {}).await;
                    Instant::now() - start
                })
            })
            .collect();
        let mut at = Vec::new();
        for w in waits {
            at.push(w.await.expect("wait"));
        }
        at.sort();
        // The first at once, then one per period: never two in the same second.
        assert_eq!(at, (0..4).map(Duration::from_secs).collect::<Vec<_>>());
        // A request after a quiet spell goes at once (no slots saved up: no burst).
        tokio::time::advance(Duration::from_secs(10)).await;
        let before = Instant::now();
        t.wait(|| {}).await;
        t.wait(|| {}).await;
        assert_eq!(Instant::now() - before, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_stops_every_request_until_its_wait_is_over() {
        let t = Throttle::new(1_000_000.0, BASE);
        let grown = t.rate_limited(Some(Duration::from_secs(30)));
        assert_eq!(grown, Duration::from_secs(30));
        // A shorter wait inside the pause does not shorten or extend it.
        assert_eq!(
            t.rate_limited(Some(Duration::from_secs(10))),
            Duration::ZERO
        );
        let start = Instant::now();
        let mut ticks = Vec::new();
        t.wait(|| ticks.push(t.take_served())).await;
        assert!(Instant::now() - start >= Duration::from_secs(30));
        // Counted as served, a second at a time, never more than the pause.
        assert_eq!(ticks.len(), 30, "{ticks:?}");
        assert!(
            ticks.iter().all(|d| *d <= Duration::from_secs(1)),
            "{ticks:?}"
        );
        assert_eq!(ticks.iter().sum::<Duration>(), Duration::from_secs(30));
        assert_eq!(t.take_served(), Duration::ZERO);
        assert_eq!(t.rate_limited_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_time_paused_is_counted() {
        let t = Throttle::new(1_000_000.0, BASE);
        t.rate_limited(Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(t.take_served(), Duration::from_secs(4));
        // Extended from its end, then left to run out and well past it.
        t.rate_limited(Some(Duration::from_secs(20)));
        tokio::time::advance(Duration::from_secs(100)).await;
        assert_eq!(t.take_served(), Duration::from_secs(20));
        // A new pause long after: the time in between was not paused.
        t.rate_limited(Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(t.take_served(), Duration::from_secs(2));
        assert!(t.rate_limited_until().is_some());
    }

    #[test]
    fn no_pause_is_longer_than_the_maximum() {
        let t = Throttle::new(1_000_000.0, BASE);
        assert_eq!(t.rate_limited(Some(Duration::from_secs(86_400))), MAX_PAUSE);
        assert!(t.paused_until().expect("paused") <= Instant::now() + MAX_PAUSE);
        let t = Throttle::new(1_000_000.0, BASE);
        assert_eq!(
            t.remaining(0.0, Some(600.0), Some(Duration::from_secs(1_000_000))),
            MAX_PAUSE
        );
    }

    #[test]
    fn unnamed_waits_back_off_exponentially() {
        let t = Throttle::new(1_000_000.0, BASE);
        let first = t.rate_limited(None);
        assert_eq!(first, BASE);
        let second = t.rate_limited(None);
        // The second pause (10 s from now) extends the first (5 s from now) by about 5 s.
        assert!(second > Duration::from_secs(4) && second < Duration::from_secs(6));
        t.succeeded();
        assert_eq!(t.consecutive_429.load(Ordering::Acquire), 0);
    }

    #[test]
    fn slows_down_when_few_requests_remain() {
        let t = Throttle::new(1_000_000.0, BASE);
        t.remaining(500.0, Some(600.0), Some(Duration::from_secs(30)));
        assert!(t.paused_until().is_none(), "plenty left: no slow-down");
        t.remaining(10.0, Some(600.0), Some(Duration::from_secs(30)));
        let until = t.paused_until().expect("slowed down");
        let spacing = until - Instant::now();
        assert!(spacing > Duration::from_secs(2) && spacing <= Duration::from_secs(3));
    }
}
