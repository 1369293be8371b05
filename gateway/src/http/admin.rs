//! Operational resources outside `base_path`: `/readyz` (ready while at least one site is up)
//! and `/admin/sites` (each site's state, circuit, latest C-ECHO, operations sent, associations
//! in use).
//! Both answer from what the periodic C-ECHO and the requests have observed; neither sends
//! anything to a PACS. With authentication on, `/admin/sites` needs a valid token and lists the
//! sites of the projects it grants; `/readyz` (for load balancers) says only how many are up.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value as Json};

use crate::config::SiteProtocol;
use crate::sites::health::Circuit;
use crate::sites::Site;
use crate::sites::SiteIndex;
use crate::state::Gateway;

/// Ready while at least one site is up (answered its latest C-ECHO or operation).
pub(crate) async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let up = gateway.sites.iter().filter(|site| site.health.report().is_up()).count();
    let status = if up > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{up} of {} sites up\n", gateway.sites.len())).into_response()
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// One site's state; its AE title and address (where the hospital's PACS is) for an
/// administrator only.
fn site_json(site: &Site, admin: bool) -> Json {
    let report = site.health.report();
    let connections = site.connections();
    let (open, idle) = (connections.open, connections.idle);
    let retry_in_s = match report.circuit {
        Circuit::Open { until, .. } => Some(until.saturating_duration_since(Instant::now()).as_secs_f64()),
        _ => None,
    };
    let mut json = json!({
        "id": site.id().as_str(),
        "retrieve": match site.config.dimse() {
            Some(dimse) => dimse.retrieve.to_string(),
            None => "wado-rs".to_owned(),
        },
        "state": report.state(),
        "circuit": match report.circuit {
            Circuit::Closed => "closed",
            Circuit::Open { .. } => "open",
            Circuit::HalfOpen { .. } => "half-open",
        },
        "retry_in_s": retry_in_s,
        "consecutive_failures": report.consecutive_faults,
        "last_failure": report.last_fault.map(|(at, reason)| json!({"at": time(at), "reason": reason})),
        "last_success": report.last_success.map(time),
        "last_echo": report.last_echo.map(|(at, outcome)| match outcome {
            Ok(latency) => json!({"at": time(at), "ok": true, "latency_ms": latency.as_secs_f64() * 1000.0}),
            Err(reason) => json!({"at": time(at), "ok": false, "reason": reason}),
        }),
        "operations_sent": {
            "find": site.sent.find.load(Ordering::Relaxed),
            "retrieve": site.sent.retrieve.load(Ordering::Relaxed),
            "store": site.sent.store.load(Ordering::Relaxed),
            "echo": site.sent.echo.load(Ordering::Relaxed),
        },
        "associations": {
            "in_use": open.saturating_sub(idle),
            "idle": idle,
            "peak_in_use": connections.peak_in_use,
            "max": site.max_connections(),
        },
    });
    if admin {
        match &site.config.protocol {
            SiteProtocol::Dimse(dimse) => {
                json["ae_title"] = json!(dimse.ae_title.as_str());
                json["address"] = json!(dimse.address);
            }
            SiteProtocol::Dicomweb(web) => json["url"] = json!(web.url),
        }
    }
    json
}

/// The 401 or 403 for a caller who is not an administrator (`auth.admin_role`).
pub(crate) async fn administrators_only(
    gateway: &Gateway,
    headers: &axum::http::HeaderMap,
    route: &str,
) -> Option<Response> {
    match crate::http::authorize::caller(gateway, headers, route).await {
        Ok(caller) if caller.admin => None,
        Ok(_) => Some(
            crate::core::Error::Forbidden(format!("{route} is for administrators (auth.admin_role)")).into_response(),
        ),
        Err(refused) => Some(refused),
    }
}

/// The health of every site the caller may see, in configuration order.
pub(crate) async fn sites(State(gateway): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    let caller = match crate::http::authorize::caller(&gateway, &headers, "/admin/sites").await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let visible = (0..gateway.sites.len())
        .map(SiteIndex)
        .filter(|i| caller.admin || caller.granted.iter().any(|p| p.sites.contains(i)));
    let sites: Vec<Json> = visible.map(|i| site_json(&gateway.sites[i], caller.admin)).collect();
    ([(header::CONTENT_TYPE, "application/json")], json!({ "sites": sites }).to_string()).into_response()
}

/// The retrieval cache's counters and size (docs/CACHE.md); with authentication on, for an
/// administrator only.
pub(crate) async fn cache(State(gateway): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    if let Some(refused) = administrators_only(&gateway, &headers, "/admin/cache").await {
        return refused;
    }
    let mut report = gateway.cache.report();
    report["searches"] = json!({
        "hits": gateway.search_cache.hits.load(Ordering::Relaxed),
        "misses": gateway.search_cache.misses.load(Ordering::Relaxed),
    });
    ([(header::CONTENT_TYPE, "application/json")], report.to_string()).into_response()
}
