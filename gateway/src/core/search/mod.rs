//! Search: C-FIND fanned out over sites and merged (`federation`), and answers reused.

pub mod federation;
pub mod search_cache;
