//! Search: C-FIND fanned out over sites and merged (`federation`), and the counts and
//! modalities a PACS leaves out computed from lower levels (`rollup`).

pub mod federation;
pub mod rollup;
