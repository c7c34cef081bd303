//! The HTTP side: `/metrics`, `/healthz`, `/readyz` and a small index page.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::error;

use crate::metrics::{CONTENT_TYPE, Metrics};
use crate::scheduler::Readiness;

#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>GitLab jobs exporter</title></head>",
        "<body><h1>GitLab jobs exporter</h1><p>Version ",
        env!("CARGO_PKG_VERSION"),
        "</p><ul><li><a href=\"metrics\">Metrics</a></li>",
        "<li><a href=\"healthz\">Health</a></li><li><a href=\"readyz\">Readiness</a></li></ul></body></html>\n"
    ))
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            error!(error = %e, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
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
