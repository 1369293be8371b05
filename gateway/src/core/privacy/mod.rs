//! De-identification as the gateway runs it (`deidentify`), the pseudonym map, and burned-in
//! text cleaned out of pixel data with its region rules.

pub(crate) mod clean_pixels;
pub(crate) mod deidentify;
pub mod pseudonyms;
pub(crate) mod qido_deid;
pub(crate) mod region_rules;
pub(crate) mod stow_deid;
