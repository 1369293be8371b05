//! Site health: what the gateway has seen of each site (C-ECHO round trips and the outcome of
//! every operation) and a circuit breaker per site.
//!
//! The circuit is closed while the site answers. After `circuit_failures` consecutive faults
//! (the site unreachable, timing out, aborting, refusing the association, breaking the
//! protocol; not a PACS answering "no" with a status) it opens: requests leave the site out
//! (QIDO reports it in the Warning header, retrieval tries another holder or fails with 503)
//! for `circuit_open`. Then it is half-open: the next C-ECHO probe, or the next request, is let
//! through; success closes the circuit, failure opens it again for twice as long (at most ten
//! times `circuit_open`). Periodic C-ECHOes (`echo_interval`) keep the picture current while no
//! request reaches a site.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use pacs_adapter::{DimseError, Phase};

/// The thresholds of one site's breaker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BreakerPolicy {
    pub(crate) failures_to_open: u32,
    pub(crate) open_for: Duration,
}

/// The state of a site's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Circuit {
    /// Requests go to the site.
    Closed,
    /// Requests leave the site out until `until`.
    Open { until: Instant, open_for: Duration },
    /// The open period is over: the next operation is a probe.
    HalfOpen { open_for: Duration },
}

/// Why a site was left out of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CircuitOpen {
    pub(crate) last_fault: String,
    pub(crate) retry_in: Duration,
}

impl std::fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "circuit open after repeated failures ({}); next try in {} s",
            self.last_fault,
            self.retry_in.as_secs()
        )
    }
}

#[derive(Debug)]
struct Observed {
    circuit: Circuit,
    consecutive_faults: u32,
    last_fault: Option<(SystemTime, String)>,
    last_success: Option<SystemTime>,
    last_echo: Option<(SystemTime, Result<Duration, String>)>,
    next_echo: Instant,
}

/// What the gateway knows of one site's health. Shared by every request.
#[derive(Debug)]
pub(crate) struct SiteHealth {
    /// The site's id, for the log.
    site: String,
    policy: BreakerPolicy,
    echo_interval: Duration,
    observed: Mutex<Observed>,
}

/// A copy of a site's health for `/admin/sites` and `/readyz`.
#[derive(Debug, Clone)]
pub(crate) struct HealthReport {
    pub(crate) circuit: Circuit,
    pub(crate) consecutive_faults: u32,
    pub(crate) last_fault: Option<(SystemTime, String)>,
    pub(crate) last_success: Option<SystemTime>,
    pub(crate) last_echo: Option<(SystemTime, Result<Duration, String>)>,
}

impl HealthReport {
    /// Up: the circuit is closed and the last thing seen of the site was an answer.
    pub(crate) fn is_up(&self) -> bool {
        self.circuit == Circuit::Closed && self.consecutive_faults == 0 && self.last_success.is_some()
    }

    pub(crate) fn state(&self) -> &'static str {
        match self.circuit {
            Circuit::Open { .. } => "down",
            Circuit::HalfOpen { .. } => "probing",
            Circuit::Closed if self.is_up() => "up",
            Circuit::Closed if self.consecutive_faults > 0 => "failing",
            Circuit::Closed => "unknown",
        }
    }
}

/// True when an error says something about the site (it is unreachable, slow or broken), as
/// opposed to the PACS answering with a status, or the gateway's own budget running out.
pub(crate) fn is_site_fault(error: &DimseError) -> bool {
    match error {
        DimseError::Timeout { phase: Phase::AssociationBudget, .. } => false,
        DimseError::AssociationRejected { .. }
        | DimseError::Tls { .. }
        | DimseError::Protocol { .. }
        | DimseError::NoPresentationContext { .. } => true,
        other => other.is_unavailable(),
    }
}

/// A short reason for a fault, without anything a PACS sent as free text.
pub(crate) fn fault_reason(error: &DimseError) -> &'static str {
    match error {
        DimseError::Timeout { .. } => "timed out",
        DimseError::Connect { .. } | DimseError::ConnectionClosed { .. } | DimseError::Aborted { .. } => "unreachable",
        DimseError::AssociationRejected { .. } => "association rejected",
        DimseError::Tls { .. } => "TLS failure",
        DimseError::Failed { .. } => "refused",
        DimseError::Protocol { .. } | DimseError::Transport { .. } => "broke the DICOM protocol or connection",
        _ => "failed",
    }
}

const MAX_OPEN_FACTOR: u32 = 10;

impl SiteHealth {
    pub(crate) fn new(site: &str, policy: BreakerPolicy, echo_interval: Duration) -> Self {
        SiteHealth {
            site: site.to_owned(),
            policy,
            echo_interval,
            observed: Mutex::new(Observed {
                circuit: Circuit::Closed,
                consecutive_faults: 0,
                last_fault: None,
                last_success: None,
                last_echo: None,
                next_echo: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.observed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// May a request use the site now? An open circuit whose time is up turns half-open and
    /// lets this request through as the probe.
    pub(crate) fn admit(&self) -> Result<(), CircuitOpen> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Result<(), CircuitOpen> {
        let mut observed = self.lock();
        match observed.circuit {
            Circuit::Closed | Circuit::HalfOpen { .. } => Ok(()),
            Circuit::Open { until, open_for } if now >= until => {
                observed.circuit = Circuit::HalfOpen { open_for };
                Ok(())
            }
            Circuit::Open { until, .. } => Err(CircuitOpen {
                last_fault: observed.last_fault.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
                retry_in: until.saturating_duration_since(now),
            }),
        }
    }

    /// Records an answer from the site: the circuit closes.
    pub(crate) fn record_success(&self) {
        let mut observed = self.lock();
        observed.circuit = Circuit::Closed;
        observed.consecutive_faults = 0;
        observed.last_success = Some(SystemTime::now());
    }

    pub(crate) fn record_fault(&self, reason: &str) {
        self.record_fault_at(reason, Instant::now())
    }

    fn record_fault_at(&self, reason: &str, now: Instant) {
        let mut observed = self.lock();
        observed.consecutive_faults = observed.consecutive_faults.saturating_add(1);
        observed.last_fault = Some((SystemTime::now(), reason.to_owned()));
        let open_for = match observed.circuit {
            // A failed probe: open again, for longer.
            Circuit::HalfOpen { open_for } => Some((open_for * 2).min(self.policy.open_for * MAX_OPEN_FACTOR)),
            Circuit::Closed if observed.consecutive_faults >= self.policy.failures_to_open => {
                Some(self.policy.open_for)
            }
            Circuit::Closed | Circuit::Open { .. } => None,
        };
        if let Some(open_for) = open_for {
            if !matches!(observed.circuit, Circuit::Open { .. }) {
                tracing::warn!(site = self.site.as_str(), reason, open_s = open_for.as_secs(), "site circuit opened");
            }
            observed.circuit = Circuit::Open { until: now + open_for, open_for };
        }
    }

    /// Is a C-ECHO due: the interval has passed, or an open circuit's time is up.
    pub(crate) fn echo_due(&self, now: Instant) -> bool {
        let observed = self.lock();
        match observed.circuit {
            Circuit::Open { until, .. } => now >= until,
            _ => now >= observed.next_echo,
        }
    }

    /// Records a C-ECHO (periodic or probe).
    /// Records an echo's round trip or why it failed, as the site's latest echo (the caller
    /// records the outcome itself).
    pub(crate) fn record_echo(&self, outcome: Result<Duration, &'static str>) {
        let mut observed = self.lock();
        observed.next_echo = Instant::now() + self.echo_interval;
        observed.last_echo = Some((SystemTime::now(), outcome.map_err(str::to_owned)));
        if let Circuit::Open { until, open_for } = observed.circuit {
            if Instant::now() >= until {
                observed.circuit = Circuit::HalfOpen { open_for };
            }
        }
    }

    pub(crate) fn report(&self) -> HealthReport {
        let observed = self.lock();
        HealthReport {
            circuit: observed.circuit,
            consecutive_faults: observed.consecutive_faults,
            last_fault: observed.last_fault.clone(),
            last_success: observed.last_success,
            last_echo: observed.last_echo.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> SiteHealth {
        SiteHealth::new(
            "site-1",
            BreakerPolicy { failures_to_open: 2, open_for: Duration::from_secs(10) },
            Duration::from_secs(30),
        )
    }

    #[test]
    fn opens_after_consecutive_faults_and_closes_after_a_successful_probe() {
        let h = health();
        let t0 = Instant::now();
        h.record_fault_at("timed out", t0);
        assert!(h.admit_at(t0).is_ok(), "one fault is not enough");
        h.record_fault_at("timed out", t0);
        let refused = h.admit_at(t0 + Duration::from_secs(1)).expect_err("open");
        assert_eq!(refused.last_fault, "timed out");
        assert_eq!(refused.retry_in, Duration::from_secs(9));
        assert_eq!(h.report().state(), "down");
        // Time is up: one request goes through as the probe.
        assert!(h.admit_at(t0 + Duration::from_secs(10)).is_ok());
        assert_eq!(h.report().state(), "probing");
        h.record_success();
        assert_eq!(h.report().state(), "up");
        assert!(h.admit_at(t0 + Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_the_circuit_for_longer() {
        let h = health();
        let t0 = Instant::now();
        h.record_fault_at("unreachable", t0);
        h.record_fault_at("unreachable", t0);
        let t1 = t0 + Duration::from_secs(10);
        assert!(h.admit_at(t1).is_ok());
        h.record_fault_at("unreachable", t1);
        let refused = h.admit_at(t1).expect_err("open again");
        assert_eq!(refused.retry_in, Duration::from_secs(20));
    }

    #[test]
    fn a_status_from_the_pacs_is_not_a_fault() {
        let site = dicomweb_model::SiteId::new("s").expect("id");
        let cancelled = DimseError::Cancelled { site: site.clone(), operation: pacs_adapter::Operation::Find };
        let budget = DimseError::Timeout { site, phase: Phase::AssociationBudget, after: Duration::from_secs(1) };
        assert!(!is_site_fault(&cancelled) && !is_site_fault(&budget));
    }
}
