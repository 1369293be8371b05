//! The HTTP server: routes under `base_path`, CORS for browser viewers, one log line per
//! request (route template, status, duration: never the URL, which carries UIDs), graceful
//! shutdown, and the shedding of requests past the gateway's bounds (503, [`Admission`]).

use std::future::Future;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowHeaders, Any, CorsLayer};

use crate::config::Config;
use crate::core::access::Addressed;
use crate::core::Error;
use crate::http::admin;
use crate::http::admission::{Admission, Holding};
use crate::http::api::{frames, qido, rendered, stow, wado};
use crate::http::authorize::authorize;
use crate::http::eucaim;
use crate::http::ledger::Ledger;
use crate::state::Gateway;

pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let admission = gateway.admission.clone();
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
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), authorize))
        .route_layer(axum::middleware::from_fn_with_state(admission, admit))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), record_request))
        .with_state(gateway.clone())
        // STOW-RS bodies are bounded by `server.stow_limit` as they stream, not by axum's
        // default of buffering at most 2 MB.
        .layer(axum::extract::DefaultBodyLimit::disable());
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // The headers a preflight asks for, echoed: `*` would not cover Authorization, which a
        // browser viewer sends with its bearer token.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers([
            header::CONTENT_TYPE,
            header::CONTENT_LENGTH,
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            header::ETAG,
            HeaderName::from_static("warning"),
        ]);
    let base_path = gateway.config.server.base_path.clone();
    // The EUCAIM data holder's resources, recorded and shed as the DICOMweb ones are; they
    // authorize their callers themselves (the federated search has its own secret).
    let eucaim = Router::new()
        .route(&gateway.config.eucaim.path, post(eucaim::search))
        .route("/datasets", get(eucaim::view))
        .route("/datasets/{id}/catalogue", get(eucaim::catalogue))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(gateway.admission.clone(), admit))
        .route_layer(axum::middleware::from_fn_with_state(gateway.clone(), record_request))
        .with_state(gateway.clone());
    let eucaim = if gateway.datasets.is_some() { eucaim } else { Router::new() };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(admin::readyz))
        .route("/admin/sites", get(admin::sites))
        .route("/admin/cache", get(admin::cache))
        .route("/metrics", get(crate::http::metrics::metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gateway)
        .nest(&base_path, dicomweb)
        .merge(eucaim)
        .fallback(no_such_resource)
        .layer(axum::middleware::map_response(no_sniffing))
        .layer(cors)
}

/// Every response is taken as the media type it says (`X-Content-Type-Options: nosniff`): a
/// browser must not run what an origin relayed as an image as a page of the gateway's.
async fn no_sniffing(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, axum::http::HeaderValue::from_static("nosniff"));
    response
}

/// A path that names no resource of the gateway: 404 with a reason (the path is not repeated,
/// as it may carry UIDs).
async fn no_such_resource() -> Error {
    Error::NotFound("no resource of this gateway has this path (PS3.18 resources are under the base path)".into())
}

/// A resource asked with a method it does not take: 405 with a reason (axum adds `Allow`).
async fn method_not_allowed() -> Response {
    crate::http::error::plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "this resource does not take this method (see the Allow header)",
    )
}

/// Opens the request's [`Ledger`] (who asked, sites contacted, bytes sent) and meters the
/// response body: one log line, and one audit line when the trail is
/// on, are written when the body ends.
async fn record_request(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let site = request.extensions().get::<Addressed>().and_then(|a| a.site.clone());
    // The UIDs of the path, as the client named them (path segments of digits and dots).
    let resources: Vec<String> = request
        .uri()
        .path()
        .split('/')
        .filter(|s| s.contains('.') && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .map(str::to_owned)
        .collect();
    let ledger = Ledger::new(request.method().as_str(), route.as_deref().unwrap_or("(no route)"), site, resources);
    request.extensions_mut().insert(ledger.clone());
    let response = next.run(request).await;
    ledger.meter(response, gateway.audit.clone(), gateway.metrics.clone())
}

/// Sheds a request with 503 when `server.max_requests_in_flight` are in flight for all of
/// `server.queue_wait` (before authorization and before any PACS is contacted); otherwise it
/// holds its slot until its response body ends.
async fn admit(State(admission): State<Arc<Admission>>, request: Request, next: Next) -> Response {
    let slot = match admission.admit().await {
        Ok(slot) => slot,
        Err(overload) => {
            crate::http::admission::discard(request.into_body()).await;
            return overload.into_response();
        }
    };
    let (parts, body) = next.run(request).await.into_parts();
    Response::from_parts(parts, axum::body::Body::new(Holding::new(body, slot)))
}

/// Sets how the request was addressed ([`Addressed`]) before routing:
/// `{base}/projects/{id}/...` and `{base}/sites/{id}/...` (or both, in that order) name the
/// same resources as `{base}/...`, in one project or at one site.
fn address(base_path: String) -> impl Fn(Request) -> Request + Clone + Send + Sync + 'static {
    move |mut request: Request| {
        let mut addressed = Addressed::default();
        let mut rest = request.uri().path().strip_prefix(&base_path).map(str::to_owned);
        for (segment, slot) in [("/projects/", &mut addressed.project), ("/sites/", &mut addressed.site)] {
            let Some(path) = rest.as_deref() else { break };
            if let Some((id, remainder)) = path.strip_prefix(segment).and_then(|r| r.split_once('/')) {
                *slot = Some(id.to_owned());
                rest = Some(format!("/{remainder}"));
            }
        }
        if addressed.project.is_some() || addressed.site.is_some() {
            let query = request.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            let path = rest.unwrap_or_default();
            if let Ok(uri) = format!("{base_path}{path}{query}").parse::<axum::http::Uri>() {
                *request.uri_mut() = uri;
            }
        }
        request.extensions_mut().insert(addressed);
        request
    }
}

/// Serves until `shutdown` completes, then finishes the requests in flight: HTTPS when
/// `server.tls` is configured, else HTTP.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let base_path = config.server.base_path.clone();
    let tls = config.server.tls.clone();
    let limits = crate::http::connections::ConnectionLimits {
        max_connections: config.server.max_connections,
        header_timeout: config.server.header_timeout,
        max_header_size: config.server.http_limits.max_header_size,
    };
    let metrics_listen = config.server.metrics_listen;
    let gateway = Gateway::start(config).await?;
    tokio::spawn(crate::startup::report_reachability(gateway.clone()));
    if let Some(address) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on server.metrics_listen {address}: {e}"))?;
        let metrics =
            Router::new().route("/metrics", get(crate::http::metrics::metrics_only)).with_state(gateway.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, metrics).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let app = tower::ServiceExt::map_request(router(gateway), address(base_path));
    let tls = match tls {
        Some(files) => crate::http::https::reloaded_on_hangup(files)?,
        None => None,
    };
    crate::http::connections::serve(listener, tls, limits, app, shutdown).await
}

/// The router in-process (tower's `oneshot`, no socket): routing, refusals and how errors
/// become statuses. The one site is a closed port on loopback: nothing here reaches a PACS.
#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    /// A gateway over one unreachable site, with `auth` as its `[auth]` section (and more).
    async fn gateway(auth: &str) -> Arc<Gateway> {
        let dir =
            std::env::temp_dir().join(format!("router-test-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        std::fs::write(dir.join("jwks.json"), r#"{"keys": []}"#).expect("jwks");
        std::fs::write(dir.join("secret"), "a shared secret of at least thirty-two bytes").expect("secret");
        let auth = auth.replace("DIR", &dir.to_string_lossy());
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/dicom-web\"\n\
             [dimse]\nae_title = \"ROUTERGW\"\nlisten = \"127.0.0.1:0\"\n\
             [[sites]]\nid = \"site\"\nae_title = \"NOBODY\"\naddress = \"127.0.0.1:9\"\nretrieve = \"c-get\"\n{auth}"
        );
        let config = Config::parse(&text).expect("valid configuration");
        Gateway::start(config).await.expect("the gateway starts")
    }

    async fn ask(gateway: &Arc<Gateway>, method: Method, uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let app =
            tower::ServiceExt::map_request(router(gateway.clone()), address(gateway.config.server.base_path.clone()));
        app.oneshot(request.body(Body::empty()).expect("request")).await.expect("infallible")
    }

    async fn text(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn paths_methods_and_bad_requests_get_their_statuses() {
        let gw = gateway("[auth]\nmode = \"none\"\n").await;
        assert_eq!(ask(&gw, Method::GET, "/healthz", &[]).await.status(), StatusCode::OK);
        let unknown = ask(&gw, Method::GET, "/dicom-web/nowhere", &[]).await;
        assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
        assert_eq!(unknown.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(!text(unknown).await.contains("nowhere"), "the path is not repeated");
        let delete = ask(&gw, Method::DELETE, "/dicom-web/studies", &[]).await;
        assert_eq!(delete.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(delete.headers().contains_key(header::ALLOW));
        let bad_uid = ask(&gw, Method::GET, "/dicom-web/studies/not-a-uid/metadata", &[]).await;
        assert_eq!(bad_uid.status(), StatusCode::BAD_REQUEST);
        let long = format!("/dicom-web/studies?PatientID={}", "9".repeat(10_000));
        assert_eq!(ask(&gw, Method::GET, &long, &[]).await.status(), StatusCode::URI_TOO_LONG);
        let png = ask(&gw, Method::GET, "/dicom-web/studies/1.2.3/metadata", &[("accept", "image/png")]).await;
        assert_eq!(png.status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[tokio::test]
    async fn a_site_that_cannot_be_reached_is_a_bad_gateway_named_by_its_id() {
        let gw = gateway("[auth]\nmode = \"none\"\n").await;
        let response = ask(&gw, Method::GET, "/dicom-web/studies/1.2.3/series", &[]).await;
        assert!(
            matches!(response.status(), StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE),
            "{}",
            response.status()
        );
        assert!(text(response).await.contains("site"), "the site is named");
    }

    #[tokio::test]
    async fn without_a_valid_token_nothing_is_served() {
        let gw = gateway(
            "[auth]\nmode = \"jwt\"\nissuer = \"https://idp.example\"\naudience = \"gateway\"\n\
             jwks_file = \"DIR/jwks.json\"\nalgorithms = [\"HS256\"]\nhs256_secret_file = \"DIR/secret\"\n\
             [[projects]]\nid = \"p\"\nsites = [\"site\"]\npermissions = [\"search\"]\n",
        )
        .await;
        let anonymous = ask(&gw, Method::GET, "/dicom-web/studies", &[]).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        assert!(anonymous.headers()[header::WWW_AUTHENTICATE].to_str().expect("ascii").starts_with("Bearer"));
        let forged = ask(&gw, Method::GET, "/dicom-web/studies", &[("authorization", "Bearer a.b.c")]).await;
        assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
        // Health needs no token.
        assert_eq!(ask(&gw, Method::GET, "/healthz", &[]).await.status(), StatusCode::OK);
    }
}
