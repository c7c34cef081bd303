//! `POST /webhook`: secret, size, shape, queue; then 200 at once (see the module above).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tracing::warn;

use super::{Delivery, FORWARDED_HEADER, HookSender, MAX_BODY_BYTES, Queued};
use crate::metrics::Metrics;
use crate::model::hook::{decode_job_hook, object_kind};

/// Longest `Idempotency-Key` kept (GitLab's are UUIDs).
const MAX_KEY_BYTES: usize = 128;
/// Refused deliveries are logged at most this often.
const REJECTED_LOG_EVERY_SECS: i64 = 60;
/// How long a body may take to arrive once its head has (GitLab gives up after 10 s): the
/// server has no read deadline, and a body that never comes must not hold its connection.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handler needs.
#[derive(Clone)]
pub struct WebhookState {
    secret: SecretString,
    queue: HookSender,
    metrics: Arc<Metrics>,
    /// Events may belong to another shard: keep their bodies to forward them.
    sharded: bool,
    /// When a refused delivery was last logged (unix seconds).
    rejected_logged: Arc<AtomicI64>,
    /// `gitlab.max_clock_skew`: a sender's `Date` further off is not believed.
    max_clock_skew: Duration,
}

impl WebhookState {
    pub fn new(
        secret: SecretString,
        queue: HookSender,
        metrics: Arc<Metrics>,
        sharded: bool,
        max_clock_skew: Duration,
    ) -> Self {
        Self {
            secret,
            queue,
            metrics,
            sharded,
            rejected_logged: Arc::new(AtomicI64::new(i64::MIN)),
            max_clock_skew,
        }
    }
}

/// The `/webhook` route (other methods: 405), to merge into a router.
pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/webhook", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The `event` label: from the body's `object_kind`, else the `X-Gitlab-Event` header.
fn event_label(headers: &HeaderMap, body: Option<&[u8]>) -> &'static str {
    let kind = body.and_then(object_kind);
    match kind.as_deref() {
        Some("build") => return "job",
        Some("pipeline") => return "pipeline",
        Some(_) => return "other",
        None => {}
    }
    match headers.get("x-gitlab-event").and_then(|v| v.to_str().ok()) {
        Some("Job Hook") => "job",
        Some("Pipeline Hook") => "pipeline",
        _ => "other",
    }
}

async fn receive(State(state): State<WebhookState>, req: Request) -> Response {
    let headers = req.headers().clone();
    let given = headers
        .get("x-gitlab-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let expected = state.secret.expose_secret().as_bytes();
    if !bool::from(given.ct_eq(expected)) {
        state
            .metrics
            .webhook_event(event_label(&headers, None), "rejected");
        log_rejected(&state, given.is_empty());
        return (StatusCode::UNAUTHORIZED, "invalid X-Gitlab-Token\n").into_response();
    }
    // Only now, the secret checked, is the body read: a forger can neither make us buffer
    // it nor hold a connection by never sending it.
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(status) => {
            state
                .metrics
                .webhook_event(event_label(&headers, None), "malformed");
            return (status, "body too large, unreadable or too slow\n").into_response();
        }
    };
    // Decoded once: a Job Hook is the common case. Only what is not one is looked at again,
    // for what kind of event it is.
    let hook = match decode_job_hook(&body) {
        Ok(hook) => hook,
        Err(_) => {
            let event = event_label(&headers, Some(&body));
            if event != "job" {
                // Not used (pipeline hooks included: job hooks carry every change they would).
                state.metrics.webhook_event(event, "ignored");
                return (StatusCode::OK, "ignored\n").into_response();
            }
            state.metrics.webhook_event(event, "malformed");
            return (
                StatusCode::BAD_REQUEST,
                "not a Job Hook: build_id, build_status and project_id are required\n",
            )
                .into_response();
        }
    };
    let event = "job";
    let forwarded = headers.contains_key(FORWARDED_HEADER);
    let delivery = Delivery {
        hook,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .filter(|k| !k.is_empty() && k.len() <= MAX_KEY_BYTES)
            .map(str::to_string),
        received_at: sender_clock(&headers, state.max_clock_skew),
        body: (state.sharded && !forwarded).then_some(body),
    };
    if state.queue.send(delivery) == Queued::Dropped {
        // Still 200: a 5xx would count towards GitLab disabling the hook; the project's
        // reconciliation poll catches up instead.
        state.metrics.webhook_event(event, "dropped");
    }
    (StatusCode::OK, "ok\n").into_response()
}

/// The body (at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`]), or the status refusing it.
async fn read_body(req: Request) -> Result<Bytes, StatusCode> {
    match tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(req, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) => Err(rejection.status()),
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
    }
}

/// When the event was sent, on the sender's clock (unix seconds): its `Date` header when it
/// sends one within `max_clock_skew` of ours (GitLab's does not; then our clock, which a
/// hook reaches within moments of the change).
fn sender_clock(headers: &HeaderMap, max_clock_skew: Duration) -> f64 {
    let now = SystemTime::now();
    let local = crate::tracker::secs(chrono::DateTime::<chrono::Utc>::from(now));
    headers
        .get("date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .filter(|t| {
            let skew = t.duration_since(now).or_else(|_| now.duration_since(*t));
            skew.is_ok_and(|d| d <= max_clock_skew)
        })
        .map_or(local, |t| {
            crate::tracker::secs(chrono::DateTime::<chrono::Utc>::from(t))
        })
}

/// Logs a refused delivery, at most once a minute; never what was sent.
fn log_rejected(state: &WebhookState, missing: bool) {
    let now = chrono::Utc::now().timestamp();
    let last = state.rejected_logged.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= REJECTED_LOG_EVERY_SECS
        && state
            .rejected_logged
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let why = if missing {
            "no X-Gitlab-Token"
        } else {
            "a wrong X-Gitlab-Token"
        };
        warn!(
            reason = why,
            "refused a webhook delivery with {why} (answered 401; logged at most once a minute): check the hook's secret token in GitLab against GITLAB_WEBHOOK_SECRET / webhook.secret_file"
        );
    }
}
