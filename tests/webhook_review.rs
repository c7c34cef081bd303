//! Review findings about `POST /webhook` as a hostile client sees it (raw TCP, no harness).

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use gitlab_jobs_exporter::metrics::Metrics;
use gitlab_jobs_exporter::server::{Limits, serve_router};
use gitlab_jobs_exporter::webhook::endpoint::{WebhookState, router};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "review-secret";
/// Only guards against a hang: far above any answer's time, and no assertion on it.
const HANG: Duration = Duration::from_secs(60);

/// `/webhook` alone, with one connection slot, like a busy exporter's last one.
async fn serve_one_slot() -> (std::net::SocketAddr, CancellationToken) {
    let metrics = Arc::new(
        Metrics::new(&Default::default(), usize::MAX, &Default::default()).expect("metrics"),
    );
    let (tx, rx) = gitlab_jobs_exporter::webhook::queue(16);
    // Kept alive: a closed queue would only change what is counted.
    std::mem::forget(rx);
    let state = WebhookState::new(
        SECRET.to_string().into(),
        tx,
        metrics,
        false,
        Duration::from_secs(60),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = Limits {
        max_connections: NonZeroUsize::MIN,
        ..Limits::default()
    };
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(serve_router(listener, router(state), limits, async move {
        s.cancelled().await
    }));
    (addr, stop)
}

/// Sends a request head announcing a body that never comes; returns the connection.
async fn head_without_body(addr: std::net::SocketAddr, token: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /webhook HTTP/1.1\r\nhost: x\r\nx-gitlab-token: {token}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.expect("write");
    c
}

/// The status line of the first answer on `c` (empty if it closed without one).
async fn status_line(c: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(HANG, c.read(&mut buf))
        .await
        .expect("an answer, not a hang")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A client without the secret announces a body and never sends it. The body was read
/// before the token was checked, with no read deadline: the connection (here the only slot
/// of `server.max_connections`) was held for good, so a few hundred such connections shut
/// GitLab's deliveries (and `/metrics` beside them) out, and GitLab disables its hook after
/// its deliveries time out. Now: 401 at once, from the head alone.
#[tokio::test]
async fn a_forger_announcing_a_body_it_never_sends_is_refused_at_once() {
    let (addr, stop) = serve_one_slot().await;
    let mut forger = head_without_body(addr, "wrong").await;
    assert!(
        status_line(&mut forger).await.contains(" 401 "),
        "refused from its head"
    );
    // The slot is free again: the next client is answered (GET: 405).
    let mut next = TcpStream::connect(addr).await.expect("connect");
    next.write_all(b"GET /webhook HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(status_line(&mut next).await.contains(" 405 "));
    drop(forger);
    stop.cancel();
}

/// The same from a client that has the secret (a broken proxy, a stalled GitLab worker):
/// the body is awaited for a bounded time only, then refused (408).
#[tokio::test]
async fn an_authenticated_body_that_never_comes_is_given_up() {
    let (addr, stop) = serve_one_slot().await;
    let mut slow = head_without_body(addr, SECRET).await;
    assert!(status_line(&mut slow).await.contains(" 408 "));
    stop.cancel();
}
