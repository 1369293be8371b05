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

use crate::admin;
use crate::api::{frames, qido, rendered, stow, wado};
use crate::config::Config;
use crate::state::{Gateway, SiteScope};

pub fn router(gateway: Arc<Gateway>) -> Router {
    let dicomweb = Router::new()
        .route("/studies", get(qido::studies).post(stow::store_studies))
        .route("/series", get(qido::series))
        .route("/instances", get(qido::instances))
        .route("/studies/{study}/series", get(qido::series))
        .route("/studies/{study}/instances", get(qido::instances))
        .route("/studies/{study}/series/{series}/instances", get(qido::instances))
        .route("/studies/{study}", get(wado::resource).post(stow::store_study))
        .route("/studies/{study}/series/{series}", get(wado::resource))
        .route("/studies/{study}/series/{series}/instances/{instance}", get(wado::resource))
        .route("/studies/{study}/metadata", get(wado::resource_metadata))
        .route("/studies/{study}/series/{series}/metadata", get(wado::resource_metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/metadata", get(wado::resource_metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", get(frames::frames))
        .route("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}", get(frames::bulkdata))
        .route("/studies/{study}/series/{series}/instances/{instance}/rendered", get(rendered::instance))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered", get(rendered::frame))
        .route("/studies/{study}/series/{series}/instances/{instance}/thumbnail", get(rendered::instance_thumbnail))
        .route("/studies/{study}/series/{series}/thumbnail", get(rendered::series_thumbnail))
        .route("/studies/{study}/thumbnail", get(rendered::study_thumbnail))
        .route("/studies/{study}/series/{series}/rendered", get(rendered::many))
        .route("/studies/{study}/rendered", get(rendered::many))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), log_request))
        .with_state(gateway.clone())
        // STOW-RS bodies are bounded by `server.stow_limit` as they stream, not by axum's
        // default of buffering at most 2 MB.
        .layer(axum::extract::DefaultBodyLimit::disable());
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any)
        .expose_headers([header::CONTENT_TYPE, header::CONTENT_LENGTH, HeaderName::from_static("warning")]);
    let base_path = gateway.config.base_path.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(admin::readyz))
        .route("/admin/sites", get(admin::sites))
        .with_state(gateway)
        .nest(&base_path, dicomweb)
        .layer(cors)
}

/// One log line per request, and one audit line when the trail is on.
async fn log_request(
    axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let began = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let site = request.extensions().get::<SiteScope>().and_then(|s| s.0.clone());
    // The UIDs of the path, as the client named them (path segments of digits and dots).
    let resources: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| s.contains('.') && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .map(str::to_owned)
        .collect();
    let response = next.run(request).await;
    let (status, ms) = (response.status().as_u16(), began.elapsed().as_millis() as u64);
    let route = route.as_deref().unwrap_or("(no route)");
    tracing::info!(%method, route, status, ms, "request");
    if let Some(audit) = &gateway.audit {
        audit.record(&crate::audit::Event {
            method: method.as_str(),
            route,
            site: site.as_deref(),
            resources,
            status,
            ms,
        });
    }
    response
}

/// Sets the request's [`SiteScope`] before routing: `{base}/sites/{id}/...` is the same resource
/// as `{base}/...`, limited to one site; every other request may use every site.
fn scope_sites(base_path: String) -> impl Fn(Request) -> Request + Clone + Send + Sync + 'static {
    move |mut request: Request| {
        let prefix = format!("{base_path}/sites/");
        let rewritten = request.uri().path().strip_prefix(&prefix).and_then(|rest| {
            let (site, remainder) = rest.split_once('/')?;
            let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let uri = format!("{base_path}/{remainder}{query}").parse::<axum::http::Uri>().ok()?;
            Some((site.to_owned(), uri))
        });
        let scope = match rewritten {
            Some((site, uri)) => {
                *request.uri_mut() = uri;
                SiteScope(Some(site))
            }
            None => SiteScope(None),
        };
        request.extensions_mut().insert(scope);
        request
    }
}

/// Serves until `shutdown` completes, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let base_path = config.base_path.clone();
    let gateway = Gateway::start(config).await?;
    let app = tower::ServiceExt::map_request(router(gateway), scope_sites(base_path));
    axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(app)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
