//! Search: a QIDO-RS search over the request's sites (`query`), C-FIND fanned out over sites
//! and merged (`federation`), and the counts and modalities a PACS leaves out computed from
//! lower levels (`rollup`).

pub(crate) mod federation;
pub(crate) mod query;
pub(crate) mod rollup;
