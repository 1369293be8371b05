//! Prometheus metrics at `/metrics` (text exposition format 0.0.4): requests by route and
//! status with a latency histogram and body bytes (recorded when a response body ends), each
//! site's state, operations, faults, DIMSE time and associations, and the cache's figures.
//! Labels carry route templates and site ids, never a URL or a UID.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::state::Gateway;

pub(crate) mod requests;
use requests::BUCKETS;

/// A label value, escaped as the exposition format wants.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn render(gw: &Gateway) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let routes = gw.metrics.routes();
    family(&mut out, "dicomweb_gateway_requests_total", "counter", "Requests by method, route template and status.");
    for ((method, route), figures) in &routes {
        for (status, count) in &figures.by_status {
            let _ = writeln!(
                out,
                "dicomweb_gateway_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                label(method),
                label(route)
            );
        }
    }
    family(&mut out, "dicomweb_gateway_request_duration_seconds", "histogram", "Time until the response body ended.");
    for ((method, route), figures) in &routes {
        let labels = format!("method=\"{}\",route=\"{}\"", label(method), label(route));
        for (bound, count) in BUCKETS.iter().zip(figures.buckets) {
            let _ =
                writeln!(out, "dicomweb_gateway_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}");
        }
        let _ =
            writeln!(out, "dicomweb_gateway_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}", figures.count);
        let _ = writeln!(out, "dicomweb_gateway_request_duration_seconds_sum{{{labels}}} {}", figures.seconds);
        let _ = writeln!(out, "dicomweb_gateway_request_duration_seconds_count{{{labels}}} {}", figures.count);
    }
    family(&mut out, "dicomweb_gateway_response_bytes_total", "counter", "Response body bytes sent.");
    for ((method, route), figures) in &routes {
        let _ = writeln!(
            out,
            "dicomweb_gateway_response_bytes_total{{method=\"{}\",route=\"{}\"}} {}",
            label(method),
            label(route),
            figures.bytes
        );
    }

    family(&mut out, "dicomweb_gateway_site_up", "gauge", "1 while the site answered its latest C-ECHO or operation.");
    for site in gw.sites.iter() {
        let _ = writeln!(
            out,
            "dicomweb_gateway_site_up{{site=\"{}\"}} {}",
            label(site.id().as_str()),
            u8::from(site.health.report().is_up())
        );
    }
    family(&mut out, "dicomweb_gateway_site_operations_total", "counter", "DIMSE operations sent to a site, by kind.");
    for site in gw.sites.iter() {
        let id = label(site.id().as_str());
        for (kind, counter) in [
            ("find", &site.sent.find),
            ("retrieve", &site.sent.retrieve),
            ("store", &site.sent.store),
            ("echo", &site.sent.echo),
        ] {
            let _ = writeln!(
                out,
                "dicomweb_gateway_site_operations_total{{site=\"{id}\",operation=\"{kind}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
    family(&mut out, "dicomweb_gateway_site_faults_total", "counter", "Operations that ended in a site fault.");
    for site in gw.sites.iter() {
        let _ = writeln!(
            out,
            "dicomweb_gateway_site_faults_total{{site=\"{}\"}} {}",
            label(site.id().as_str()),
            site.sent.faults.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "dicomweb_gateway_site_dimse_seconds_total",
        "counter",
        "Time spent in C-FIND (whole answers) and in starting C-GET / C-MOVE, per site.",
    );
    for site in gw.sites.iter() {
        let id = label(site.id().as_str());
        for (phase, micros) in [("find", &site.sent.find_micros), ("retrieve_start", &site.sent.retrieve_start_micros)]
        {
            let _ = writeln!(
                out,
                "dicomweb_gateway_site_dimse_seconds_total{{site=\"{id}\",phase=\"{phase}\"}} {}",
                micros.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
    }
    family(
        &mut out,
        "dicomweb_gateway_site_echo_latency_seconds",
        "gauge",
        "Latency of the site's latest successful C-ECHO.",
    );
    for site in gw.sites.iter() {
        if let Some((_, Ok(latency))) = site.health.report().last_echo {
            let _ = writeln!(
                out,
                "dicomweb_gateway_site_echo_latency_seconds{{site=\"{}\"}} {}",
                label(site.id().as_str()),
                latency.as_secs_f64()
            );
        }
    }
    family(&mut out, "dicomweb_gateway_site_associations", "gauge", "Associations to a site, in use or idle.");
    for site in gw.sites.iter() {
        let id = label(site.id().as_str());
        let connections = site.connections();
        let (open, idle) = (connections.open, connections.idle);
        let _ = writeln!(
            out,
            "dicomweb_gateway_site_associations{{site=\"{id}\",state=\"in_use\"}} {}",
            open.saturating_sub(idle)
        );
        let _ = writeln!(out, "dicomweb_gateway_site_associations{{site=\"{id}\",state=\"idle\"}} {idle}");
    }

    let cache = gw.cache.report();
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    family(
        &mut out,
        "dicomweb_gateway_cache_retrievals_total",
        "counter",
        "Retrievals served from the cache, sent to a PACS, or joined to one under way.",
    );
    for (outcome, key) in [("hit", "hits"), ("miss", "misses"), ("coalesced", "coalesced")] {
        let _ = writeln!(
            out,
            "dicomweb_gateway_cache_retrievals_total{{outcome=\"{outcome}\"}} {}",
            number(&cache["retrievals"][key])
        );
    }
    family(&mut out, "dicomweb_gateway_cache_served_bytes_total", "counter", "Instance bytes served from the cache.");
    let _ = writeln!(out, "dicomweb_gateway_cache_served_bytes_total {}", number(&cache["bytes_served"]));
    family(&mut out, "dicomweb_gateway_cache_evictions_total", "counter", "Instances evicted from memory for size.");
    let _ = writeln!(out, "dicomweb_gateway_cache_evictions_total {}", number(&cache["instances"]["evictions"]));
    family(&mut out, "dicomweb_gateway_cache_bytes", "gauge", "Bytes held by the cache, by tier.");
    let _ = writeln!(out, "dicomweb_gateway_cache_bytes{{tier=\"memory\"}} {}", number(&cache["instances"]["bytes"]));
    let _ = writeln!(out, "dicomweb_gateway_cache_bytes{{tier=\"disk\"}} {}", number(&cache["disk"]["bytes"]));
    let _ = writeln!(out, "dicomweb_gateway_cache_bytes{{tier=\"transcoded\"}} {}", gw.transcoded.bytes());
    family(
        &mut out,
        "dicomweb_gateway_cache_transcoded_total",
        "counter",
        "Instances to transcode found already transcoded, or decoded.",
    );
    for (outcome, counter) in [("hit", &gw.transcoded.hits), ("miss", &gw.transcoded.misses)] {
        let _ = writeln!(
            out,
            "dicomweb_gateway_cache_transcoded_total{{outcome=\"{outcome}\"}} {}",
            counter.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "dicomweb_gateway_cache_searches_total",
        "counter",
        "QIDO-RS answers reused or asked of the sites.",
    );
    let _ = writeln!(
        out,
        "dicomweb_gateway_cache_searches_total{{outcome=\"hit\"}} {}",
        gw.search_cache.hits.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "dicomweb_gateway_cache_searches_total{{outcome=\"miss\"}} {}",
        gw.search_cache.misses.load(Ordering::Relaxed)
    );

    // One cleaner serves every project that cleans burned-in text.
    if let Some(cleaner) = gw.projects.iter().find_map(|p| p.privacy.as_ref()?.cleaner.clone()) {
        family(
            &mut out,
            "dicomweb_gateway_burned_in_total",
            "counter",
            "Instances whose pixels may show identity: cleaned, or withheld as they could not be cleaned.",
        );
        for (outcome, counter) in [("cleaned", &cleaner.cleaned), ("uncleanable", &cleaner.uncleanable)] {
            let _ = writeln!(
                out,
                "dicomweb_gateway_burned_in_total{{outcome=\"{outcome}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }

    let budget = &gw.decode_budget;
    family(
        &mut out,
        "dicomweb_gateway_decode_memory_bytes",
        "gauge",
        "Decoded pixel data reserved by decodes in flight (now, the most since start-up, and the limit).",
    );
    for (which, bytes) in [("in_use", budget.in_use()), ("peak", budget.peak()), ("limit", budget.total())] {
        let _ = writeln!(out, "dicomweb_gateway_decode_memory_bytes{{which=\"{which}\"}} {bytes}");
    }
    family(
        &mut out,
        "dicomweb_gateway_decode_waits_total",
        "counter",
        "Decodes that waited for others to give decode memory back.",
    );
    let _ = writeln!(out, "dicomweb_gateway_decode_waits_total {}", budget.waits());
    out
}

/// `/metrics`.
/// `/metrics` on the API listener: for administrators, and not at all when it has a listener of
/// its own (`server.metrics_listen`): it names every site.
pub(crate) async fn metrics(State(gw): State<Arc<Gateway>>, headers: axum::http::HeaderMap) -> Response {
    if gw.config.server.metrics_listen.is_some() {
        return crate::core::Error::NotFound("metrics are served on server.metrics_listen".into()).into_response();
    }
    if let Some(refused) = crate::http::admin::administrators_only(&gw, &headers, "/metrics").await {
        return refused;
    }
    exposition(&gw)
}

/// `/metrics` on `server.metrics_listen`, a listener of its own for the scraper.
pub(crate) async fn metrics_only(State(gw): State<Arc<Gateway>>) -> Response {
    exposition(&gw)
}

fn exposition(gw: &Gateway) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(gw)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use requests::RequestMetrics;

    #[test]
    fn a_request_lands_in_its_buckets_and_labels_are_escaped() {
        let metrics = RequestMetrics::default();
        metrics.observe("GET", "/dicom-web/studies", 200, 0.02, 10);
        metrics.observe("GET", "/dicom-web/studies", 404, 3.0, 5);
        let routes = metrics.routes();
        let figures = &routes[&("GET".to_owned(), "/dicom-web/studies".to_owned())];
        assert_eq!(figures.count, 2);
        assert_eq!(figures.bytes, 15);
        assert_eq!(figures.buckets[2], 1); // 0.025
        assert_eq!(figures.buckets[BUCKETS.len() - 1], 2); // 30
        assert_eq!(figures.by_status[&404], 1);
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
