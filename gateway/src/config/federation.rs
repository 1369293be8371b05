//! `[federation]`: how long where studies live is remembered, the circuit breaker and its
//! C-ECHO, and the most matches one C-FIND collects.

use super::problems::Problems;
use super::{raw, DeidConfig, FederationConfig};

pub(super) fn federation(
    raw: Option<raw::Federation>,
    deid: Option<&DeidConfig>,
    problems: &mut Problems,
) -> FederationConfig {
    let text = |pick: fn(&raw::Federation) -> Option<&String>| raw.as_ref().and_then(pick).map(String::as_str);
    let remember = problems.duration("federation.remember", text(|f| f.remember.as_ref()), "10m");
    let echo_interval = problems.duration("federation.echo_interval", text(|f| f.echo_interval.as_ref()), "30s");
    let circuit_open = problems.duration("federation.circuit_open", text(|f| f.circuit_open.as_ref()), "30s");
    if echo_interval.is_zero() || circuit_open.is_zero() {
        problems.push("federation.echo_interval and federation.circuit_open must be longer than 0s");
    }
    let max_matches = raw.as_ref().and_then(|f| f.max_matches).unwrap_or(10_000);
    if max_matches == 0 {
        problems.push("federation.max_matches must be at least 1");
    }
    let circuit_failures = raw.as_ref().and_then(|f| f.circuit_failures).unwrap_or(3);
    if circuit_failures == 0 {
        problems.push("federation.circuit_failures must be at least 1");
    }
    FederationConfig {
        remember,
        remember_studies: raw.as_ref().and_then(|f| f.remember_studies).unwrap_or(100_000),
        state_dir: raw.and_then(|f| f.state_dir).or_else(|| deid.map(|d| d.state_dir.clone())),
        echo_interval,
        circuit_failures,
        circuit_open,
        max_matches,
    }
}
