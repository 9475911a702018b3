//! The agent's HTTP endpoint (`--http ADDR`): status, probes, metrics and the manual trigger.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::status::Agent;

/// Serves `/status`, `/healthz`, `/readyz`, `/metrics` and `POST /trigger` on `listener`
/// until the process ends.
///
/// # Errors
/// When serving fails.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    agent: Arc<Agent>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/status", get(|State(a): State<Arc<Agent>>| async move { Json(a.status()) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(a): State<Arc<Agent>>| async move {
                if a.ready() {
                    (StatusCode::OK, "ready: the last round succeeded\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready: no successful last round\n")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(a): State<Arc<Agent>>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    a.metrics_text(),
                )
            }),
        )
        .route(
            "/trigger",
            post(|State(a): State<Arc<Agent>>| async move {
                if a.schedules() {
                    a.trigger();
                    (StatusCode::ACCEPTED, "a round starts now (or right after the current one)\n")
                        .into_response()
                } else {
                    (StatusCode::CONFLICT, "this agent serves rounds; trigger the source's agent\n")
                        .into_response()
                }
            }),
        )
        .with_state(agent);
    axum::serve(listener, app).await
}
