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

use crate::health::Circuit;
use crate::site::Site;
use crate::state::Gateway;

/// Ready while at least one site is up (answered its latest C-ECHO or operation).
pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let up = gateway.sites.iter().filter(|site| site.health.report().is_up()).count();
    let status = if up > 0 { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, format!("{up} of {} sites up\n", gateway.sites.len())).into_response()
}

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn site_json(site: &Site) -> Json {
    let report = site.health.report();
    let open = site.pool.open_associations();
    let idle = site.pool.idle_associations();
    let retry_in_s = match report.circuit {
        Circuit::Open { until, .. } => Some(until.saturating_duration_since(Instant::now()).as_secs_f64()),
        _ => None,
    };
    json!({
        "id": site.id().as_str(),
        "ae_title": site.config.ae_title.as_str(),
        "address": site.config.address,
        "retrieve": site.config.retrieve.to_string(),
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
            "peak_in_use": site.pool.peak_in_use(),
            "max": site.config.max_associations,
        },
    })
}

/// The health of every site the caller may see, in configuration order.
pub async fn sites(State(gateway): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    let granted = match crate::authorize::caller(&gateway, &headers, "/admin/sites").await {
        Ok((_, granted)) => granted,
        Err(refused) => return refused,
    };
    let visible = (0..gateway.sites.len()).filter(|i| granted.iter().any(|p| p.sites.contains(i)));
    let sites: Vec<Json> = visible.map(|i| site_json(&gateway.sites[i])).collect();
    ([(header::CONTENT_TYPE, "application/json")], json!({ "sites": sites }).to_string()).into_response()
}

/// The retrieval cache's counters and size (docs/CACHE.md); with authentication on, for a
/// valid token only.
pub async fn cache(State(gateway): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    if let Err(refused) = crate::authorize::caller(&gateway, &headers, "/admin/cache").await {
        return refused;
    }
    let mut report = gateway.cache.report();
    report["searches"] = json!({
        "hits": gateway.search_cache.hits.load(Ordering::Relaxed),
        "misses": gateway.search_cache.misses.load(Ordering::Relaxed),
    });
    ([(header::CONTENT_TYPE, "application/json")], report.to_string()).into_response()
}
