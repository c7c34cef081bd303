//! `GET /projects/:id/jobs/:job_id/trace`: the end of a job's log, for its failure class.
//!
//! GitLab answers this path with the whole log in one body (`build.trace.raw`, no `Range`
//! handling: a `Range` header is ignored and the answer is always 200 with everything), so no
//! `Range` is sent: the body is streamed chunk by chunk into a [`TailBuffer`] that keeps only
//! the last `tail_bytes`, and the connection is dropped once more than `max_log_bytes` came.
//! Nothing of the log leaves this function but those tail bytes: never a log line, an error
//! message or a metric (an error body of a refused request is GitLab's JSON message, not log).

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use tracing::warn;

use super::{ApiError, GitlabClient, Method, describe, read_capped};
use crate::failures::TailBuffer;

const ENDPOINT: &str = "trace";

/// What reading a job's log gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Trace {
    /// The last bytes of the log (at most `tail_bytes`; empty for an erased log).
    Tail(Vec<u8>),
    /// More than `max_log_bytes`: reading stopped there.
    TooLarge,
}

impl GitlabClient {
    /// The tail of job `job_id`'s log (`project`: id or URL-encoded path), at most
    /// `tail_bytes`, giving up after `max_log_bytes`. Through the one budget, reported as
    /// `endpoint="trace"`; 5xx, 429, timeouts and bodies cut short are retried with the
    /// client's backoff; other statuses (404 unknown job, 403 log not readable) are returned.
    pub async fn trace(
        &self,
        project: &str,
        job_id: u64,
        tail_bytes: usize,
        max_log_bytes: u64,
    ) -> Result<Trace, ApiError> {
        let url = self
            .url(ENDPOINT, &format!("projects/{project}/jobs/{job_id}/trace"))
            .inspect_err(|e| self.observer.api_error(e.kind()))?;
        let policy = &self.retry;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_max_times(policy.retries)
            .with_jitter();
        (|| self.trace_once(url.clone(), tail_bytes, max_log_bytes))
            .retry(backoff)
            .when(ApiError::is_transient)
            .notify(|e: &ApiError, wait: Duration| {
                warn!(
                    endpoint = ENDPOINT,
                    kind = e.kind(),
                    status = e.status(),
                    wait_ms = wait.as_millis() as u64,
                    "GitLab request failed; retrying"
                );
            })
            .await
    }

    async fn trace_once(
        &self,
        url: url::Url,
        tail_bytes: usize,
        max_log_bytes: u64,
    ) -> Result<Trace, ApiError> {
        let started = Instant::now();
        let result = self.read_trace(url, tail_bytes, max_log_bytes).await;
        let status = match &result {
            Ok(_) => Some(StatusCode::OK.as_u16()),
            Err(e) => e.status(),
        };
        self.observer
            .request(ENDPOINT, status, started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.observer.api_error(e.kind());
        }
        result
    }

    async fn read_trace(
        &self,
        url: url::Url,
        tail_bytes: usize,
        max_log_bytes: u64,
    ) -> Result<Trace, ApiError> {
        let (status, headers, mut resp) = self.open(ENDPOINT, url, &Method::Get).await?;
        if !status.is_success() {
            // An error answer is GitLab's JSON message (bounded), never the log.
            let body = read_capped(resp).await.map_err(|message| ApiError::Transport {
                endpoint: ENDPOINT,
                message,
            })?;
            return self.answer(ENDPOINT, status, headers, body).map(|_| {
                // `answer` turns every non-success into an error; a 1xx/3xx cannot get here
                // (no redirects followed), but would be no log either.
                Trace::Tail(Vec::new())
            });
        }
        self.answer(ENDPOINT, status, headers, Vec::new())?;
        let mut tail = TailBuffer::new(tail_bytes, max_log_bytes);
        loop {
            let chunk = resp.chunk().await.map_err(|e| ApiError::Transport {
                endpoint: ENDPOINT,
                message: describe(&e),
            })?;
            let Some(chunk) = chunk else {
                return Ok(Trace::Tail(tail.into_tail()));
            };
            if tail.push(&chunk).is_err() {
                // Dropping the response closes the connection: the rest is never read.
                drop(resp);
                return Ok(Trace::TooLarge);
            }
        }
    }
}
