//! What GitLab's response headers say: rate-limit state, `Retry-After`, its clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::throttle;
use crate::model::text;

pub(super) fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

/// `RateLimit-Reset` (unix time) as a wait from GitLab's now.
pub(super) fn reset_in(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_f64(headers, "ratelimit-reset")?;
    let now = server_time(headers).unwrap_or_else(Utc::now).timestamp() as f64;
    (reset > now).then(|| Duration::from_secs_f64((reset - now).min(24.0 * 3600.0)))
}

/// A header's raw value for a log line (bounded, escaped).
pub(super) fn raw_header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map_or_else(String::new, |v| text::bounded_bytes(v.as_bytes()))
}

/// `Retry-After` in seconds from GitLab's now: delay-seconds or an HTTP date.
fn retry_after_secs(headers: &HeaderMap) -> Option<f64> {
    let text = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then_some(secs);
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(text).ok()?.into();
    let now = server_time(headers).unwrap_or_else(Utc::now);
    Some(((at - now).num_milliseconds() as f64 / 1000.0).max(0.0))
}

/// The later of `Retry-After` and `RateLimit-Reset` (unix time), as a wait from now, at most
/// [`throttle::MAX_PAUSE`] (a wait of a day would stop the exporter for a day); `true` when
/// GitLab asked for more.
pub(super) fn retry_after(headers: &HeaderMap) -> (Option<Duration>, bool) {
    let after = retry_after_secs(headers);
    let reset = reset_in(headers).map(|d| d.as_secs_f64());
    let wait = match (after, reset) {
        (Some(a), Some(r)) => Some(a.max(r)),
        (a, r) => a.or(r),
    };
    let max = throttle::MAX_PAUSE.as_secs_f64();
    (
        wait.map(|s| Duration::from_secs_f64(s.min(max))),
        wait.is_some_and(|s| s > max),
    )
}

pub(super) fn server_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_takes_the_later_of_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Wed, 25 Nov 2026 08:50:00 GMT"),
        );
        h.insert("retry-after", HeaderValue::from_static("5"));
        // 08:50:30 GMT
        let reset = DateTime::parse_from_rfc2822("Wed, 25 Nov 2026 08:50:30 GMT")
            .unwrap()
            .timestamp();
        h.insert(
            "ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        assert_eq!(retry_after(&h).0, Some(Duration::from_secs(30)));
        h.remove("ratelimit-reset");
        assert_eq!(retry_after(&h).0, Some(Duration::from_secs(5)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h).0, None);
    }
}
