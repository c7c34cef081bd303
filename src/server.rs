//! The HTTP side: `/metrics`, `/healthz`, `/readyz`, and the status page (`/` and
//! `/status.json`, see [`crate::status`]).
//!
//! Served through hyper's HTTP/1 connection builder rather than `axum::serve`, which has no
//! header-read timeout: a client that sends half a request head and goes quiet must neither
//! hold its connection (and file descriptor) forever nor hold up a shutdown. Nor may one that
//! sends requests and stops reading the replies: writes that make no progress for
//! [`WRITE_TIMEOUT`] close the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::ServerSettings;
use crate::fleet::runner::Readiness;
use crate::health::Health;
use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::status::Status;
use crate::webhook::endpoint::WebhookState;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    pub health: Arc<Health>,
    /// What `/` and `/status.json` show.
    pub status: Arc<Status>,
    /// `POST /webhook` beside `/metrics` (webhooks on, without a listener of their own).
    pub webhook: Option<WebhookState>,
}

/// What one client, or many, may take of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once (`server.max_connections`); more wait in the backlog.
    pub max_connections: NonZeroUsize,
    /// Time to send a request head, and for an idle keep-alive connection to send the next
    /// one (`server.header_read_timeout`).
    pub header_read_timeout: Duration,
    /// How long a write to a client may make no progress before the connection is closed:
    /// a client that sends requests and never reads the replies must not keep its slot.
    pub write_timeout: Duration,
    /// After shutdown: how long in-flight requests may take before their connections are
    /// dropped, so a stuck client never keeps the process alive.
    pub drain_timeout: Duration,
}

/// How long, at most, a shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a reply may sit unread: a healthy scraper reads far faster, and a connection held
/// longer only holds a slot of `server.max_connections`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

impl Limits {
    pub fn from_config(cfg: &ServerSettings) -> Self {
        Self {
            max_connections: cfg.max_connections,
            header_read_timeout: cfg.header_read_timeout,
            write_timeout: WRITE_TIMEOUT,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from_config(&ServerSettings::default())
    }
}

pub fn router(state: AppState) -> Router {
    let hooks = state.webhook.clone().map(crate::webhook::endpoint::router);
    let main = Router::new()
        .route("/", get(index))
        .route("/status.json", get(status_json))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state);
    match hooks {
        Some(hooks) => main.merge(hooks),
        None => main,
    }
}

/// Serves with the default [`Limits`] until `shutdown` completes; see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, Limits::default(), shutdown).await
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
/// for at most `limits.drain_timeout` and drops the connections still open.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), limits, shutdown).await
}

/// [`serve_with`] for any router (the webhook listener serves only `/webhook`).
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut connections = Connections::new(router, &limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections.get()));
    let mut accept_failing = false;
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set holds only live ones.
        while connections.set.try_join_next().is_some() {}
        // At the cap, wait for a connection to end before accepting another: the kernel's
        // backlog queues the rest, and file descriptors stay bounded.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // Never closed; should it be, serve without a cap rather than stop serving.
                Err(_) => continue,
            },
        };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            stream = accept(&listener, &mut accept_failing) => stream,
        };
        if let Some(stream) = stream {
            connections.spawn(stream, permit);
        }
    }
    // No new connections from here on; ask the open ones to finish their request and close.
    drop(listener);
    connections.drain(limits.drain_timeout).await;
    Ok(())
}

/// Accepts one connection; `None`: none this time (a per-connection error, or a pause after
/// another error, logged once per episode).
async fn accept(listener: &TcpListener, failing: &mut bool) -> Option<tokio::net::TcpStream> {
    match listener.accept().await {
        Ok((stream, _)) => {
            if *failing {
                *failing = false;
                info!("accepting connections again");
            }
            Some(stream)
        }
        Err(e) => {
            // Per-connection errors (reset before accept) are routine; others (out of file
            // descriptors) are logged once per episode, then retried gently.
            if !is_connection_error(&e) {
                if !*failing {
                    *failing = true;
                    error!(error = %e, "cannot accept connections; retrying");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None
        }
    }
}

/// The connections being served, each on its own task.
struct Connections {
    set: JoinSet<()>,
    http: hyper::server::conn::http1::Builder,
    service: TowerToHyperService<Router>,
    write_timeout: Duration,
    /// Asks every open connection to finish its request and close.
    drain: CancellationToken,
}

impl Connections {
    fn new(router: Router, limits: &Limits) -> Self {
        let mut http = hyper::server::conn::http1::Builder::new();
        // The timer is what makes header_read_timeout work (hyper panics without one). The
        // timeout also runs while a keep-alive connection waits for its next request, so idle
        // connections are closed after it too.
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        Self {
            set: JoinSet::new(),
            http,
            service: TowerToHyperService::new(router),
            write_timeout: limits.write_timeout,
            drain: CancellationToken::new(),
        }
    }

    /// Serves `stream` until it ends or the drain asks it to finish; `permit` is its slot.
    fn spawn(&mut self, stream: tokio::net::TcpStream, permit: tokio::sync::OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        // header_read_timeout only guards the request head; a client that never reads its
        // replies would otherwise hold its slot for as long as it likes. Pinned on the heap
        // because TimeoutStream holds its timers in place.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(self.write_timeout));
        let conn = self
            .http
            .serve_connection(TokioIo::new(Box::pin(stream)), self.service.clone());
        let drain = self.drain.clone();
        self.set.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(error = %e, "connection ended with an error");
            }
        });
    }

    /// Lets the open connections finish for at most `timeout`, then drops the rest.
    async fn drain(mut self, timeout: Duration) {
        self.drain.cancel();
        let open = self.set.len();
        let drained = tokio::time::timeout(timeout, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                connections = self.set.len(),
                of = open,
                timeout = %humantime::format_duration(timeout),
                "connections still open at the end of the shutdown drain; closing them"
            );
            self.set.shutdown().await;
        }
    }
}

/// Errors that concern one connection only (as hyper-util and axum classify them).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// The status page (taking the snapshot is synchronous and O(projects); rendering it too).
async fn index(State(state): State<AppState>) -> Html<String> {
    let snapshot = state.status.snapshot(crate::status::MAX_HTML_ROWS);
    Html(crate::status::html::render(&snapshot))
}

async fn status_json(State(state): State<AppState>) -> Response {
    let snapshot = state.status.snapshot(crate::status::MAX_JSON_ROWS);
    match serde_json::to_vec(&snapshot) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            error!(error = %e, "cannot render /status.json");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render status\n").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let gzip = accepts_gzip(&gzip);
    match state.metrics.scrape_as(gzip).await {
        Ok(chunks) => {
            let body = Body::new(Chunks(chunks.into()));
            let vary = (header::VARY, "Accept-Encoding");
            if gzip {
                let encoding = (header::CONTENT_ENCODING, "gzip");
                ([(header::CONTENT_TYPE, CONTENT_TYPE), encoding, vary], body).into_response()
            } else {
                ([(header::CONTENT_TYPE, CONTENT_TYPE), vary], body).into_response()
            }
        }
        Err(e) => {
            error!(error = %e, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}

/// Whether an `Accept-Encoding` value takes gzip (RFC 9110 §12.5.3): `gzip` (or `x-gzip`)
/// with a weight above 0, or else `*` with one, and not weighed below `identity`. Without the
/// header, or with `identity` only, the page goes uncompressed.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let (mut gzip, mut star, mut identity) = (None, None, None);
    for item in accept_encoding.split(',') {
        let mut params = item.split(';');
        let coding = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| v.trim().parse::<f64>().ok())
            // An unreadable weight: as if the coding were not listed.
            .filter(|q| (0.0..=1.0).contains(q));
        let Some(q) = q else { continue };
        match coding.as_str() {
            "gzip" | "x-gzip" => gzip = Some(q),
            "*" => star = Some(q),
            "identity" => identity = Some(q),
            _ => {}
        }
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    gzip > 0.0 && identity.is_none_or(|i| gzip >= i)
}

/// A body of shared chunks, sent as they are: every concurrent scrape of the same page
/// points at the same bytes instead of holding a copy of its own.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.health.check() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {reason}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (done, total) = state.readiness.progress();
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {done} of {total} projects polled\n"),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn start(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        start_with(limits, Arc::new(Health::new(Duration::from_secs(30)))).await
    }

    async fn start_with(
        limits: Limits,
        health: Arc<Health>,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let cfg = crate::config::Config::new(
            "http://127.0.0.1:9",
            "token".to_string().into(),
            vec![crate::config::ProjectRef::Path("g/p".into())],
        )
        .validate()
        .expect("valid configuration");
        let app = crate::app::App::new(&cfg, Default::default()).expect("exporter parts");
        let mut state = app.http_state();
        // Only the test's: the status page keeps the scheduler's.
        state.readiness = Arc::new(Readiness::new(0));
        state.health = health;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let s = stop.clone();
        let server = tokio::spawn(serve_with(listener, state, limits, async move {
            s.cancelled().await
        }));
        (addr, stop, server)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("request");
        let mut out = String::new();
        c.read_to_string(&mut out).await.expect("response");
        out
    }

    /// The drain after shutdown is bounded: a client stuck in the middle of its request head
    /// (here with a header timeout far away) does not keep the server running.
    #[tokio::test]
    async fn shutdown_does_not_wait_for_a_quiet_client() {
        let (addr, stop, server) = start(Limits {
            max_connections: NonZeroUsize::MIN.saturating_add(7),
            header_read_timeout: Duration::from_secs(3600),
            write_timeout: WRITE_TIMEOUT,
            drain_timeout: Duration::from_millis(200),
        })
        .await;
        let mut quiet = tokio::net::TcpStream::connect(addr).await.expect("connect");
        quiet
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a head");
        // Accepted in order: once a later connection is answered, the quiet one is served.
        assert!(get(addr, "/healthz").await.ends_with("ok\n"));
        stop.cancel();
        // A hang is the bug; the bound only keeps a regression from stalling the suite.
        let result = tokio::time::timeout(Duration::from_secs(60), server).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
        drop(quiet);
    }

    /// A request head that does not arrive in time closes the connection.
    #[tokio::test]
    async fn a_slow_request_head_is_cut_off() {
        let (addr, stop, _server) = start(Limits {
            max_connections: NonZeroUsize::MIN.saturating_add(7),
            header_read_timeout: Duration::from_millis(100),
            write_timeout: WRITE_TIMEOUT,
            drain_timeout: Duration::from_secs(1),
        })
        .await;
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\n")
            .await
            .expect("start");
        let mut rest = Vec::new();
        // The server closes it (with a 408 or without an answer); read_to_end returns.
        let read = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the connection was closed");
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
        stop.cancel();
    }

    /// Clients that pipeline requests and never read the replies are cut off once the server's
    /// writes make no progress, so they cannot hold every slot and lock scrapes out.
    #[tokio::test]
    async fn clients_that_never_read_give_their_slots_back() {
        let (addr, stop, _server) = start(Limits {
            max_connections: NonZeroUsize::MIN.saturating_add(1),
            // Far away: only the write timeout can free the slots.
            header_read_timeout: Duration::from_secs(3600),
            write_timeout: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(1),
        })
        .await;
        let hold = CancellationToken::new();
        let mut readers = Vec::new();
        for _ in 0..2 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            // A small receive buffer: the replies pile up on the server's side sooner.
            socket.set_recv_buffer_size(4096).expect("recv buffer");
            let mut c = socket.connect(addr).await.expect("connect");
            let hold = hold.clone();
            readers.push(tokio::spawn(async move {
                let requests = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2000);
                // Fails once the server closes the connection; either way, never read.
                let _ = c.write_all(requests.as_bytes()).await;
                hold.cancelled().await;
                drop(c);
            }));
        }
        // Accepted in order after both: answered only once a slot is given back.
        let page = tokio::time::timeout(Duration::from_secs(60), get(addr, "/healthz")).await;
        assert!(
            matches!(&page, Ok(p) if p.ends_with("ok\n")),
            "a scrape got through: {page:?}"
        );
        hold.cancel();
        for r in readers {
            r.await.expect("reader");
        }
        stop.cancel();
    }

    /// A published page older than the limit (zero here: any page) fails `/healthz`.
    #[tokio::test]
    async fn a_stale_published_page_is_unhealthy() {
        let health = Arc::new(Health::new(Duration::ZERO));
        let (addr, stop, _server) = start_with(Limits::default(), health.clone()).await;
        assert!(
            get(addr, "/healthz").await.ends_with("ok\n"),
            "nothing published yet"
        );
        health.published();
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            answer.contains("unhealthy: the published /metrics page"),
            "{answer}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn metrics_are_served_whole_with_a_length() {
        let (addr, stop, _server) = start(Limits::default()).await;
        let page = get(addr, "/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        let (head, body) = page.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("gitlab_jobs_exporter_build_info"));
        assert!(
            body.ends_with("gitlab_jobs_exporter_checkpoint_failures_total 0\n"),
            "{body}"
        );
        stop.cancel();
    }

    async fn get_raw(addr: std::net::SocketAddr, path: &str, extra: &str) -> (String, Vec<u8>) {
        let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
        c.write_all(request.as_bytes()).await.expect("request");
        let mut out = Vec::new();
        c.read_to_end(&mut out).await.expect("response");
        let at = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head and body");
        let head = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
        (head, out[at + 4..].to_vec())
    }

    #[test]
    fn gzip_is_negotiated_from_accept_encoding() {
        for (header, gzip) in [
            ("", false),
            ("gzip", true),
            ("GZIP", true),
            ("gzip, deflate, br", true),
            ("deflate, gzip;q=0.5", true),
            ("x-gzip", true),
            ("*", true),
            ("gzip;q=0", false),
            ("gzip; q=0.000", false),
            ("identity", false),
            ("br", false),
            ("*;q=0", false),
            ("*, gzip;q=0", false),
            ("gzip;q=0.5, identity", false),
            ("identity;q=0.2, gzip", true),
            ("gzip;q=nonsense", false),
        ] {
            assert_eq!(accepts_gzip(header), gzip, "{header:?}");
        }
    }

    /// Gzip when asked (Prometheus asks), plain otherwise; the same Content-Type either way, a
    /// length, and `Vary` for caches.
    #[tokio::test]
    async fn metrics_are_gzipped_when_asked() {
        use std::io::Read;
        let (addr, stop, _server) = start(Limits::default()).await;
        let (plain_head, plain) = get_raw(addr, "/metrics", "").await;
        for extra in [
            "",
            "Accept-Encoding: identity\r\n",
            "Accept-Encoding: gzip;q=0\r\n",
        ] {
            let (head, body) = get_raw(addr, "/metrics", extra).await;
            assert!(!head.contains("content-encoding"), "{extra}: {head}");
            assert!(head.contains("vary: accept-encoding"), "{head}");
            assert!(String::from_utf8_lossy(&body).contains("gitlab_jobs_exporter_build_info"));
        }
        for extra in ["Accept-Encoding: gzip\r\n", "Accept-Encoding: *\r\n"] {
            let (head, body) = get_raw(addr, "/metrics", extra).await;
            assert!(head.contains("content-encoding: gzip"), "{head}");
            assert!(head.contains("vary: accept-encoding"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            assert!(
                head.contains(&format!(
                    "content-type: {}",
                    CONTENT_TYPE.to_ascii_lowercase()
                )),
                "{head}"
            );
            let mut text = String::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .expect("gzip");
            assert!(text.contains("gitlab_jobs_exporter_build_info"), "{text}");
            assert!(text.ends_with("gitlab_jobs_exporter_checkpoint_failures_total 0\n"));
            assert_eq!(
                text.lines().count(),
                String::from_utf8_lossy(&plain).lines().count()
            );
        }
        assert!(plain_head.contains(&format!(
            "content-type: {}",
            CONTENT_TYPE.to_ascii_lowercase()
        )));
        stop.cancel();
    }
}
