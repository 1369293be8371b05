//! Search: C-FIND fanned out over sites and merged (`federation`).

pub mod federation;
