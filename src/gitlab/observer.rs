//! What the client tells the rest of the exporter about its requests. The client does not know
//! the exporter's metrics (that would make `gitlab` and `metrics` depend on each other): it
//! reports through this trait, which `metrics::Metrics` implements.

use std::time::Duration;

/// Told of every request the client sends and every failure it meets. Calls come from the
/// request path, so implementations must be cheap and must not block.
pub trait ClientObserver: Send + Sync {
    /// One HTTP exchange ended: `status` is the answer's status code, `None` when no answer
    /// came (connection, timeout, body cut off).
    fn request(&self, endpoint: &'static str, status: Option<u16>, seconds: f64);
    /// One failure, by a short bounded kind ([`super::ApiError::kind`], or `link`,
    /// `clock_skew` for oddities the client works around).
    fn api_error(&self, kind: &'static str);
    /// GitLab's `RateLimit-Remaining` on the last answer that carried it.
    fn rate_limit_remaining(&self, remaining: f64);
    /// GitLab answered 429: every request now pauses this long.
    fn rate_limited(&self, pause: Duration);
}

/// Observes nothing (tools and tests that need no figures).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl ClientObserver for NoObserver {
    fn request(&self, _: &'static str, _: Option<u16>, _: f64) {}
    fn api_error(&self, _: &'static str) {}
    fn rate_limit_remaining(&self, _: f64) {}
    fn rate_limited(&self, _: Duration) {}
}
