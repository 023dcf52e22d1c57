//! HTTP endpoints: /metrics (Prometheus text), /healthz (alive), /readyz (see `Health`).
use super::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Readiness of the process. Ready means "doing its job": running the controllers as
/// leader, or standing by as a healthy non-leader (so rollouts of several replicas finish),
/// and holding every permission it needs where it was told to work (see `access`).
#[derive(Clone, Default)]
pub struct Health(Arc<AtomicU8>, Arc<Mutex<Option<String>>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    StandingBy = 1,
    Leading = 2,
    Stopping = 3,
}

impl Health {
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        match self.0.load(Ordering::Acquire) {
            1 => Phase::StandingBy,
            2 => Phase::Leading,
            3 => Phase::Stopping,
            _ => Phase::Starting,
        }
    }

    /// Permissions the start-up check found missing (None: all granted).
    pub fn set_missing_permissions(&self, missing: Option<String>) {
        *self.1.lock().unwrap_or_else(|e| e.into_inner()) = missing;
    }

    pub fn missing_permissions(&self) -> Option<String> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn ready(&self) -> bool {
        matches!(self.phase(), Phase::StandingBy | Phase::Leading)
            && self.missing_permissions().is_none()
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.render() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let phase = state.health.phase();
    let text = match phase {
        Phase::Starting => "starting",
        Phase::StandingBy => "ok: standing by (not the leader)",
        Phase::Leading => "ok: leading",
        Phase::Stopping => "stopping",
    };
    if let Some(missing) = state.health.missing_permissions() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("missing permissions: {missing}"),
        );
    }
    let code = if state.health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get_path(app: Router, path: &str) -> (StatusCode, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let resp = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("get");
        let status = resp.status();
        let body = resp.text().await.expect("body");
        server.abort();
        (StatusCode::from_u16(status.as_u16()).expect("status"), body)
    }

    #[tokio::test]
    async fn readiness_follows_the_phase_and_metrics_are_served() {
        let metrics = Metrics::new();
        let health = Health::default();
        let app = router(metrics.clone(), health.clone());
        assert_eq!(get_path(app.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get_path(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.set(Phase::StandingBy);
        assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::OK);
        health.set_missing_permissions(Some("namespace team-a: list secrets".into()));
        let (code, body) = get_path(app.clone(), "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("namespace team-a: list secrets"), "{body}");
        health.set_missing_permissions(None);
        assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::OK);
        health.set(Phase::Stopping);
        assert_eq!(
            get_path(app.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        metrics.set_leader(true);
        let (code, body) = get_path(app, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("orgops_leader 1"), "{body}");
    }
}
