//! Wiring: the exporter's metrics observe the GitLab client. The impl lives here, above both,
//! so that neither `gitlab` nor `metrics` depends on the other (`tests/layers.rs`).

use std::time::Duration;

use crate::gitlab::ClientObserver;
use crate::metrics::Metrics;

impl ClientObserver for Metrics {
    fn request(&self, endpoint: &'static str, status: Option<u16>, seconds: f64) {
        // The `code` label: the answer's status, or `error` when none came.
        let code = status.map_or_else(|| "error".to_string(), |s| s.to_string());
        Metrics::observe_request(self, endpoint, &code, seconds);
    }

    fn api_error(&self, kind: &'static str) {
        Metrics::api_error(self, kind);
    }

    fn rate_limit_remaining(&self, remaining: f64) {
        Metrics::rate_limit_remaining(self, remaining);
    }

    fn rate_limited(&self, pause: Duration) {
        Metrics::rate_limited(self, pause.as_secs_f64());
    }
}
