//! De-identification as the gateway runs it (`deidentify`), the pseudonym map, and burned-in
//! text cleaned out of pixel data with its region rules.

pub mod clean_pixels;
pub mod deidentify;
pub mod pseudonyms;
pub mod qido_deid;
pub mod region_rules;
pub mod stow_deid;
