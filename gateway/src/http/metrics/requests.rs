//! What every request's end records for `/metrics`: counts by status, a latency histogram and
//! body bytes, by method and route template.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Upper bounds (seconds) of the request latency histogram.
pub(crate) const BUCKETS: [f64; 12] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

#[derive(Debug, Default, Clone)]
pub(crate) struct RouteFigures {
    pub(crate) by_status: BTreeMap<u16, u64>,
    pub(crate) buckets: [u64; BUCKETS.len()],
    pub(crate) count: u64,
    pub(crate) seconds: f64,
    pub(crate) bytes: u64,
}

/// What every request's end records.
#[derive(Debug, Default)]
pub(crate) struct RequestMetrics {
    routes: Mutex<BTreeMap<(String, String), RouteFigures>>,
}

impl RequestMetrics {
    pub(crate) fn observe(&self, method: &str, route: &str, status: u16, seconds: f64, bytes: u64) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let figures = routes.entry((method.to_owned(), route.to_owned())).or_default();
        *figures.by_status.entry(status).or_default() += 1;
        for (bucket, bound) in figures.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        figures.count += 1;
        figures.seconds += seconds;
        figures.bytes += bytes;
    }

    /// Each route's figures so far, by method and route template.
    pub(crate) fn routes(&self) -> BTreeMap<(String, String), RouteFigures> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
