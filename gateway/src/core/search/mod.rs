//! Search: a QIDO-RS search over the request's sites (`query`), C-FIND fanned out over sites
//! and merged (`federation`), and the counts and modalities a PACS leaves out computed from
//! lower levels (`rollup`).

pub mod federation;
pub mod query;
pub mod rollup;
