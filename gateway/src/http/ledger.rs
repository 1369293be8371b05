//! What one request did, gathered while it runs and written (log, audit, metrics) once it ends: who asked (subject,
//! project), which sites were contacted, how many body bytes went out and whether the body was
//! delivered whole. The log line and the audit line are written when the response body ends
//! (or is dropped), so that a streamed WADO-RS response is recorded with its real size and
//! duration.
//!
//! The sites contacted and instances cleaned are gathered below the edge, in the record
//! (crate::sites::touched) the request's `Access` carries to the core.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::core::audit::{AuditLog, Event};
use crate::http::metrics::requests::RequestMetrics;
use crate::sites::touched::Touched;

/// One request's record.
#[derive(Debug)]
pub(crate) struct Ledger {
    began: Instant,
    method: String,
    route: String,
    site: Option<String>,
    resources: Vec<String>,
    status: OnceLock<u16>,
    subject: OnceLock<String>,
    project: OnceLock<String>,
    /// What a federated count query answered (crate::core::eucaim), for the audit.
    search: OnceLock<serde_json::Value>,
    /// The sites contacted and instances cleaned.
    touched: Arc<Touched>,
    /// Held until the body ends: the caller's concurrent-request slot.
    held: Mutex<Option<Box<dyn std::any::Any + Send + Sync>>>,
}

impl Ledger {
    pub(crate) fn new(method: &str, route: &str, site: Option<String>, resources: Vec<String>) -> Arc<Ledger> {
        Arc::new(Ledger {
            began: Instant::now(),
            method: method.to_owned(),
            route: route.to_owned(),
            site,
            resources,
            status: OnceLock::new(),
            subject: OnceLock::new(),
            project: OnceLock::new(),
            search: OnceLock::new(),
            touched: Arc::default(),
            held: Mutex::new(None),
        })
    }

    /// The authenticated caller and the project the request acts in.
    pub(crate) fn identify(&self, subject: &str, project: Option<&str>) {
        let _ = self.subject.set(subject.to_owned());
        if let Some(project) = project {
            let _ = self.project.set(project.to_owned());
        }
    }

    /// Notes what a federated count query answered (its id, each dataset's counts as sent).
    pub(crate) fn note_search(&self, search: serde_json::Value) {
        let _ = self.search.set(search);
    }

    /// Keeps `value` alive until the response body ends.
    pub(crate) fn hold_until_done(&self, value: Box<dyn std::any::Any + Send + Sync>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
    }

    /// Where the core notes what the request causes at the sites.
    pub(crate) fn touched(&self) -> Arc<Touched> {
        self.touched.clone()
    }

    /// The response with its body metered; the record is written when the body ends.
    pub(crate) fn meter(
        self: Arc<Self>,
        response: axum::response::Response,
        audit: Option<Arc<AuditLog>>,
        metrics: Arc<RequestMetrics>,
    ) -> axum::response::Response {
        let _ = self.status.set(response.status().as_u16());
        let (parts, body) = response.into_parts();
        let metered = Metered { inner: body, ledger: self, audit, metrics, bytes: 0, finished: false };
        axum::response::Response::from_parts(parts, Body::new(metered))
    }

    fn finish(&self, audit: Option<&AuditLog>, metrics: &RequestMetrics, bytes: u64, outcome: &str) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take();
        let elapsed = self.began.elapsed();
        let ms = elapsed.as_millis() as u64;
        let status = self.status.get().copied().unwrap_or(0);
        let sites = self.touched.sites();
        let (method, route) = (self.method.as_str(), self.route.as_str());
        let cleaned = self.touched.cleaned();
        tracing::info!(method, route, status, ms, bytes, outcome, sites = sites.join(","), cleaned, "request");
        metrics.observe(method, route, status, elapsed.as_secs_f64(), bytes);
        if let Some(audit) = audit {
            audit.record(&Event {
                subject: self.subject.get().map(String::as_str),
                project: self.project.get().map(String::as_str),
                method,
                route,
                site: self.site.as_deref(),
                resources: &self.resources,
                sites: &sites,
                status,
                outcome,
                bytes,
                ms,
                cleaned,
                search: self.search.get(),
            });
        }
    }
}

/// A response body that counts what it yields, runs inside the request's ledger scope (the
/// retrieval behind a streamed body contacts sites while it is polled) and writes the record
/// when it ends, fails or is dropped unfinished.
struct Metered {
    inner: Body,
    ledger: Arc<Ledger>,
    audit: Option<Arc<AuditLog>>,
    metrics: Arc<RequestMetrics>,
    bytes: u64,
    finished: bool,
}

impl Metered {
    fn end(&mut self, outcome: &str) {
        if !self.finished {
            self.finished = true;
            self.ledger.finish(self.audit.as_deref(), &self.metrics, self.bytes, outcome);
        }
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => this.end("aborted"),
            Poll::Ready(None) => this.end("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // A body dropped before its end: the client went away, or the body was empty and
        // never polled (HEAD, 204).
        let outcome = if self.inner.is_end_stream() { "complete" } else { "aborted" };
        self.end(outcome);
    }
}
