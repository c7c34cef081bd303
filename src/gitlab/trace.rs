//! `GET /projects/:id/jobs/:job_id/trace`: the end of a job's log, for its failure class.
//!
//! GitLab answers this path with the whole log in one body (`build.trace.raw`, no `Range`
//! handling: a `Range` header is ignored and the answer is always 200 with everything), so no
//! `Range` is sent: the body is streamed chunk by chunk into a [`TailBuffer`] that keeps only
//! the last `tail_bytes`, and the connection is dropped once more than `max_log_bytes` came.
//! Nothing of the log leaves this function but those tail bytes: never a log line, an error
//! message or a metric (an error body of a refused request is GitLab's JSON message, not log).

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{ApiError, GitlabClient, Method, describe, read_capped};
use crate::failures::TailBuffer;

const ENDPOINT: &str = "trace";

/// What reading a job's log gave. Its `Debug` shows the tail's length only: logs hold secrets.
#[derive(PartialEq, Eq)]
pub enum Trace {
    /// The last bytes of the log (at most `tail_bytes`; empty for an erased log).
    Tail(Vec<u8>),
    /// More than `max_log_bytes`: reading stopped there.
    TooLarge,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tail(tail) => write!(f, "Tail({} bytes)", tail.len()),
            Self::TooLarge => f.write_str("TooLarge"),
        }
    }
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
        self.retrying(
            ENDPOINT,
            || self.trace_once(url.clone(), tail_bytes, max_log_bytes),
            ApiError::is_transient,
        )
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
        // A log may be megabytes where a JSON page is kilobytes: `gitlab.timeout` plus a
        // second per MiB allowed, so a long log on a slow link is read rather than timed out
        // and downloaded again by every retry.
        let timeout = self.timeout + Duration::from_secs(max_log_bytes.div_ceil(1 << 20));
        let (status, headers, mut resp) = self
            .open_within(ENDPOINT, url, &Method::Get, timeout)
            .await?;
        if !status.is_success() {
            // An error answer is GitLab's JSON message (bounded), never the log.
            let body = read_capped(resp)
                .await
                .map_err(|message| ApiError::Transport {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::gitlab::RetryPolicy;
    use crate::metrics::Metrics;

    const LOG_BYTES: usize = 5 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    const LAST_LINE: &[u8] = b"\x1b[31;1mERROR: Job failed: exit code 1\x1b[0;m\n";

    /// Log bytes written to connections, and trace requests answered.
    #[derive(Default)]
    struct Served {
        bytes: AtomicU64,
        requests: AtomicU64,
        /// A connection's writes ended (finished or refused).
        ended: tokio::sync::Notify,
    }

    /// A 5 MiB log ending in [`LAST_LINE`].
    fn log() -> Vec<u8> {
        let mut log = vec![b'.'; LOG_BYTES];
        let at = log.len() - LAST_LINE.len();
        log[at..].copy_from_slice(LAST_LINE);
        log
    }

    /// A bare HTTP/1.1 server, as GitLab answers the trace path: job 1 its 5 MiB log in
    /// 64 KiB writes; job 2 404, job 3 403, job 4 an empty (erased) log, job 6 a 256 MiB
    /// log (written chunk by chunk, never held), others 502.
    async fn serve(served: Arc<Served>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let served = served.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    served.requests.fetch_add(1, Ordering::Relaxed);
                    let head = String::from_utf8_lossy(&head).to_string();
                    let job = head
                        .split("/jobs/")
                        .nth(1)
                        .and_then(|r| r.split('/').next())
                        .and_then(|j| j.parse::<u64>().ok());
                    let big = job == Some(6);
                    let (status, body) = match job {
                        Some(1) => ("200 OK", log()),
                        Some(6) => ("200 OK", vec![b'.'; CHUNK]),
                        Some(2) => ("404 Not Found", br#"{"message":"404 Not found"}"#.to_vec()),
                        Some(3) => ("403 Forbidden", br#"{"message":"403 Forbidden"}"#.to_vec()),
                        Some(4) => ("200 OK", Vec::new()),
                        _ => ("502 Bad Gateway", b"<html>502</html>".to_vec()),
                    };
                    let repeat = if big { 4096 } else { 1 };
                    let head = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len() * repeat
                    );
                    if conn.write_all(head.as_bytes()).await.is_ok() {
                        'write: for _ in 0..repeat {
                            for chunk in body.chunks(CHUNK) {
                                if conn.write_all(chunk).await.is_err() {
                                    break 'write;
                                }
                                served
                                    .bytes
                                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            }
                        }
                    }
                    if big {
                        served.ended.notify_one();
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    async fn client(served: &Arc<Served>) -> (GitlabClient, Arc<Metrics>) {
        let base = serve(served.clone()).await;
        let mut cfg = crate::config::Config::new(&base, "t0ken".to_string().into(), vec![]);
        cfg.gitlab.max_requests_per_minute = 1e9;
        cfg.gitlab.timeout = Duration::from_secs(5);
        let gitlab = cfg.gitlab.validate().expect("gitlab settings");
        let metrics = Arc::new(
            Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics"),
        );
        let retry = RetryPolicy {
            retries: 2,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let client = GitlabClient::new(&gitlab, "t0ken".to_string().into(), retry, metrics.clone())
            .expect("client");
        (client, metrics)
    }

    #[tokio::test]
    async fn the_tail_of_a_log_is_kept_and_a_larger_one_is_dropped_early() {
        let served = Arc::new(Served::default());
        let (client, metrics) = client(&served).await;
        let Trace::Tail(tail) = client
            .trace("7", 1, 1024, 64 * 1024 * 1024)
            .await
            .expect("read")
        else {
            panic!("not a tail");
        };
        assert_eq!(tail.len(), 1024);
        assert!(tail.ends_with(LAST_LINE));
        // Over max_log_bytes: given up, the connection dropped long before the end (what
        // the server got written is its socket buffers' worth, not the 256 MiB).
        let before = served.bytes.load(Ordering::Relaxed);
        let read = client.trace("7", 6, 1024, 256 * 1024).await.expect("read");
        assert_eq!(read, Trace::TooLarge);
        served.ended.notified().await;
        let sent = served.bytes.load(Ordering::Relaxed) - before;
        assert!(sent < 64 * 1024 * 1024, "{sent} bytes sent");
        let page = metrics.render().expect("render");
        assert!(
            page.contains(
                r#"gitlab_jobs_exporter_api_requests_total{code="200",endpoint="trace"} 2"#
            ),
            "{page}"
        );
    }

    #[tokio::test]
    async fn refusals_are_returned_at_once_and_5xx_retried() {
        let served = Arc::new(Served::default());
        let (client, _) = client(&served).await;
        for (job, status) in [(2, 404), (3, 403)] {
            let e = client
                .trace("7", job, 1024, 1 << 20)
                .await
                .expect_err("refused");
            assert_eq!(e.status(), Some(status));
            assert!(!e.to_string().contains("....."), "{e}");
        }
        assert_eq!(served.requests.load(Ordering::Relaxed), 2, "not retried");
        assert_eq!(
            client.trace("7", 4, 1024, 1 << 20).await.expect("empty"),
            Trace::Tail(Vec::new())
        );
        let e = client.trace("7", 5, 1024, 1 << 20).await.expect_err("502");
        assert_eq!(e.status(), Some(502));
        assert_eq!(
            served.requests.load(Ordering::Relaxed),
            3 + 3,
            "502 retried twice"
        );
    }

    /// CPU time of this thread, seconds.
    fn thread_cpu() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    }

    /// On demand (`cargo test --lib cpu_per_classification -- --ignored --nocapture`): the CPU
    /// one classification of a 5 MiB log costs here, apart from the network: streaming it
    /// through the TailBuffer in 16 KiB chunks (as reqwest hands them over), then classifying
    /// the 64 KiB tail (strip and rules).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cpu_per_classification_of_a_5_mib_log() {
        let log = log();
        let classifier = crate::failures::Classifier::with_defaults();
        let runs = 20;
        let start = thread_cpu();
        let mut classes = 0;
        for _ in 0..runs {
            let mut tail = TailBuffer::new(64 * 1024, 32 * 1024 * 1024);
            for chunk in log.chunks(16 * 1024) {
                assert!(tail.push(chunk).is_ok());
            }
            let verdict = classifier.classify(&tail.into_tail());
            classes += usize::from(!verdict.class.is_empty());
        }
        let per = (thread_cpu() - start) / runs as f64;
        assert_eq!(classes, runs);
        println!(
            "CPU per classification of a 5 MiB log: {:.2} ms",
            per * 1000.0
        );
    }

    /// A log within `max_log_bytes` that takes longer than `gitlab.timeout` to arrive is read,
    /// not cut off and downloaded again by every retry.
    #[tokio::test]
    async fn a_slow_log_within_the_limit_is_read_once() {
        let requests = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let total = 24 * CHUNK;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
                    );
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    // 24 writes 60 ms apart: longer than the 1 s `gitlab.timeout` below.
                    for _ in 0..24 {
                        if conn.write_all(&[b'.'; CHUNK]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(60)).await;
                    }
                });
            }
        });
        let mut cfg = crate::config::Config::new(
            format!("http://{addr}"),
            "t0ken".to_string().into(),
            vec![],
        );
        cfg.gitlab.max_requests_per_minute = 1e9;
        cfg.gitlab.timeout = Duration::from_secs(1);
        let gitlab = cfg.gitlab.validate().expect("gitlab settings");
        let metrics = Arc::new(
            Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics"),
        );
        let retry = RetryPolicy {
            retries: 3,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        };
        let client =
            GitlabClient::new(&gitlab, "t0ken".to_string().into(), retry, metrics).expect("client");
        let read = client.trace("7", 1, 1024, 32 * 1024 * 1024).await;
        let n = requests.load(Ordering::Relaxed);
        assert!(
            matches!(read, Ok(Trace::Tail(_))),
            "{read:?} after {n} downloads"
        );
        assert_eq!(n, 1);
    }
}
