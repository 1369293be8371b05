//! De-identification for the DICOMweb federation gateway: the PS3.15 Annex E Basic Application
//! Level Confidentiality Profile from the standard's own table (`table`), the options a project
//! selects (`options`), keyed pseudonyms for UIDs and patients and per-patient date shifts
//! (`keys`, `dates`), the profile applied to a data set (`profile`), and the rule that withholds
//! instances whose pixels may show identity (`burned_in`). No IO.

#![forbid(unsafe_code)]

pub mod beyond_table;
pub mod burned_in;
pub mod dates;
pub mod instance;
pub mod keys;
pub mod options;
pub mod profile;
pub mod safe_private;
pub mod table;

pub use keys::ProjectKeys;

/// The revision of what the profile writes. Raised whenever a change makes the output differ
/// for the same input (a rule added or changed), so that what an older revision produced (the
/// gateway's disk cache) is not served as this one's.
pub const PROFILE_REVISION: u32 = 3;
pub use options::Options;
pub use profile::{Deidentifier, KnownPatient, Report, UidMapping};
