//! `GET /projects/:id/jobs/:job_id/trace` as `lib/api/ci/jobs.rb` serves it:
//! `authorize_read_builds!`, `find_build!` (404 `{"message":"404 Not found"}` for a job that is
//! not the project's), `authorize_read_build_trace!` (403), then 200 `text/plain` with
//! `Content-Disposition: infile; filename="<id>.log"` and `build.trace.raw || ''`: the whole
//! log, whatever `Range` says (this path has no Range handling), empty for an erased log or a
//! job that never ran. Faults of its own: queued ([`crate::Simulator::push_trace_fault`]) or
//! standing per job ([`crate::Simulator::set_trace_fault`]).

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::http::{json_response, set};
use super::trace::{CHUNK, Part};
use super::world::{Ms, World};
use super::{Fault, Simulator};

/// A misbehaviour of the trace endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceFault {
    /// Any general fault (a proxy's 5xx page, a 429, 401, 403, a delay, raw bytes).
    Fault(Fault),
    /// 404 `{"message":"404 Not found"}`, as for a job that is gone.
    NotFound,
    /// 403 `{"message":"403 Forbidden"}`: the token may not read this log.
    Forbidden,
    /// 200 with the right `Content-Length`, the first `n` bytes, then the connection is cut.
    CutAfter(u64),
    /// 200 and the whole log, each chunk of about 64 KiB after this much real time.
    Slow(Duration),
}

impl TraceFault {
    /// Whether a trace that always answers this way can never be read.
    pub fn unreadable(&self) -> bool {
        !matches!(self, Self::Slow(_) | Self::Fault(Fault::Delay(_)))
    }
}

/// Trace requests since the last [`Simulator::reset_requests`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Every trace request, faulted ones included.
    pub requests: u64,
    /// Requests per job id (as asked for, when it parses).
    pub by_job: BTreeMap<u64, u64>,
    /// Answers by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Body bytes handed to the connection (the client may have stopped reading earlier).
    pub bytes_sent: u64,
}

impl TraceStats {
    /// The most requests any one job's trace got.
    pub fn max_per_job(&self) -> u64 {
        self.by_job.values().copied().max().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct TraceStore {
    pub faults: VecDeque<TraceFault>,
    pub stats: TraceStats,
    pub bytes: Arc<AtomicU64>,
}

fn err(status: u16, message: &str) -> Response {
    json_response(status, &json!({ "message": message }))
}

/// The answer to an authenticated `GET` of the trace endpoint.
pub(crate) fn answer(sim: &Simulator, world: &World, id: &str, job_id: &str, now: Ms) -> Response {
    // Grape validates `job_id` as an Integer before the endpoint runs.
    let Ok(job_id) = job_id.parse::<u64>() else {
        return json_response(400, &json!({"error": "job_id is invalid"}));
    };
    let Some(project) = world.find_project(id) else {
        return err(404, "404 Project Not Found");
    };
    let job = world
        .job(job_id)
        .filter(|j| j.project_id == project.id && j.visible_at(now));
    let Some(job) = job else {
        return err(404, "404 Not found");
    };
    let logs = world.logs();
    if logs.denied.contains(&project.id) {
        return err(403, "403 Forbidden");
    }
    let fault = sim
        .pop_trace_fault()
        .or_else(|| logs.standing.get(&job_id).cloned());
    let plan = logs.plan(job, &project.path_with_namespace);
    let (mut cut, mut slow) = (None, None);
    match fault {
        None => {}
        Some(TraceFault::NotFound) => return err(404, "404 Not found"),
        Some(TraceFault::Forbidden) => return err(403, "403 Forbidden"),
        Some(TraceFault::CutAfter(n)) => cut = Some(n.min(plan.size.saturating_sub(1))),
        Some(TraceFault::Slow(d)) => slow = Some(d),
        // Here a delay slows the body down (a general queued delay postpones the answer).
        Some(TraceFault::Fault(Fault::Delay(d))) => slow = Some(d),
        Some(TraceFault::Fault(f)) => return super::http::fault_response(&f, now),
    }
    let body = LogBody {
        parts: plan.parts().into(),
        size: plan.size,
        sent: 0,
        cut,
        flushed: false,
        delay: slow,
        sleep: None,
        counter: sim.trace_bytes_counter(),
    };
    let mut resp = Response::new(Body::new(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    set(h, "content-type", "text/plain");
    set(
        h,
        "content-disposition",
        &format!("infile; filename=\"{job_id}.log\""),
    );
    resp
}

/// A log streamed chunk by chunk; `cut` ends it with a reset after that many bytes, `delay`
/// waits before each chunk.
struct LogBody {
    parts: VecDeque<Part>,
    size: u64,
    sent: u64,
    cut: Option<u64>,
    /// Whether the bytes before the cut have had a chance to leave.
    flushed: bool,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    counter: Arc<AtomicU64>,
}

impl LogBody {
    /// The next bytes of the log, at most `max`.
    fn next_bytes(&mut self, max: usize) -> Option<Vec<u8>> {
        loop {
            let part = self.parts.front_mut()?;
            let chunk = match part {
                Part::Bytes(b) if b.is_empty() => None,
                Part::Bytes(b) if b.len() <= max => Some(std::mem::take(b)),
                Part::Bytes(b) => Some(b.drain(..max).collect()),
                Part::Noise(n) => n.next_chunk(),
            };
            match chunk {
                Some(mut c) if !c.is_empty() => {
                    if c.len() > max {
                        // A noise chunk bigger than the room left before a cut.
                        let rest = c.split_off(max);
                        self.parts.push_front(Part::Bytes(rest));
                    }
                    return Some(c);
                }
                _ => drop(self.parts.pop_front()),
            }
        }
    }
}

impl http_body::Body for LogBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Some(delay) = self.delay {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let room = match self.cut {
            Some(cut) if self.sent >= cut && !self.flushed => {
                // Pending once, so the connection sends what it has (headers and the first
                // bytes) before the reset.
                self.flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            Some(cut) if self.sent >= cut => {
                return Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "simulated connection reset mid-log",
                ))));
            }
            Some(cut) => usize::try_from(cut - self.sent).unwrap_or(CHUNK).min(CHUNK),
            None => CHUNK,
        };
        let Some(chunk) = self.next_bytes(room) else {
            return Poll::Ready(None);
        };
        self.sent += chunk.len() as u64;
        self.counter
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.size == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        // The whole log's length, also when cut short (the connection then ends early).
        http_body::SizeHint::with_exact(self.size)
    }
}
