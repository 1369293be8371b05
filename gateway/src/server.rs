//! The HTTP server: routes under `base_path`, CORS for browser viewers, one log line per
//! request (route template, status, duration: never the URL, which carries UIDs), graceful
//! shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, HeaderName, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::cors::{Any, CorsLayer};

use crate::api::{frames, qido, rendered, stow, wado};
use crate::config::Config;
use crate::state::Gateway;

pub fn router(gateway: Arc<Gateway>) -> Router {
    let dicomweb = Router::new()
        .route("/studies", get(qido::studies).post(stow::store_studies))
        .route("/series", get(qido::all_series))
        .route("/instances", get(qido::all_instances))
        .route("/studies/{study}/series", get(qido::study_series))
        .route("/studies/{study}/instances", get(qido::study_instances))
        .route("/studies/{study}/series/{series}/instances", get(qido::series_instances))
        .route("/studies/{study}", get(wado::study).post(stow::store_study))
        .route("/studies/{study}/series/{series}", get(wado::series))
        .route("/studies/{study}/series/{series}/instances/{instance}", get(wado::instance))
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/series/{series}/metadata", get(wado::series_metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/metadata", get(wado::instance_metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", get(frames::frames))
        .route("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}", get(frames::bulkdata))
        .route("/studies/{study}/series/{series}/instances/{instance}/rendered", get(rendered::instance))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered", get(rendered::frame))
        .route("/studies/{study}/series/{series}/instances/{instance}/thumbnail", get(rendered::instance_thumbnail))
        .route("/studies/{study}/series/{series}/thumbnail", get(rendered::series_thumbnail))
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
        .route("/studies/{study}/series/{series}/rendered", get(rendered::series))
        .route("/studies/{study}/rendered", get(rendered::study))
        .route_layer(axum::middleware::from_fn(log_request))
        .with_state(gateway.clone())
        // STOW-RS bodies are bounded by `server.stow_limit` as they stream, not by axum's
        // default of buffering at most 2 MB.
        .layer(axum::extract::DefaultBodyLimit::disable());
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([header::CONTENT_TYPE, header::CONTENT_LENGTH, HeaderName::from_static("warning")]);
    Router::new().nest(&gateway.config.base_path, dicomweb).route("/healthz", get(|| async { "ok\n" })).layer(cors)
}

async fn log_request(request: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    tracing::info!(
        %method,
        route = route.as_deref().unwrap_or("(no route)"),
        status = response.status().as_u16(),
        ms = began.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let gateway = Gateway::start(config).await?;
    let app = router(gateway);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
