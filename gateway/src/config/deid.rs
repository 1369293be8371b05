//! `[deid]`: the de-identification profile and options, the secret, where the pseudonym map
//! lives, and how burned-in text is handled.

use std::path::PathBuf;

use super::problems::Problems;
use super::{raw, BurnedIn, ConnectionString, DeidConfig};

pub(super) fn deid(raw: Option<raw::Deid>, problems: &mut Problems) -> Option<DeidConfig> {
    let deid = raw?;
    if deid.profile != "basic" {
        problems.push(format!("deid.profile {:?}: only \"basic\" (PS3.15 Annex E) exists", deid.profile));
    }
    if let Err(wrong) = dicomweb_deid::Options::parse(&deid.options) {
        problems.extend(wrong.into_iter().map(|p| format!("deid.options: {p}")));
    }
    let store = deid.store.as_deref().and_then(|store| problems.take(ConnectionString::parse(store)));
    let burned_in = problems
        .take(
            BurnedIn::parse(deid.burned_in.as_deref().unwrap_or("withhold")).map_err(|e| format!("deid.burned_in {e}")),
        )
        .unwrap_or(BurnedIn::Withhold);
    Some(DeidConfig {
        options: deid.options,
        key_file: deid.key_file,
        state_dir: deid.state_dir.unwrap_or_else(|| PathBuf::from("state")),
        store,
        show_sites: deid.show_sites.unwrap_or(false),
        burned_in,
        burned_in_rules: deid.burned_in_rules,
    })
}
