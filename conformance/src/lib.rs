//! `dicomweb-conformance`: checks a server point by point against the standard and says, with
//! evidence, what passes, what fails and what does not apply.
//!
//! Today it checks a PACS's DIMSE services as a federation uses them (`dimse`); the DICOMweb
//! checks of a server follow.

#![forbid(unsafe_code)]

pub mod dimse;
pub mod report;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    NotApplicable,
}

/// One check: what was checked, where the standard says so, the outcome and the evidence.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub reference: &'static str,
    pub outcome: Outcome,
    pub evidence: String,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        reference: &'static str,
        outcome: Outcome,
        evidence: impl Into<String>,
    ) -> Self {
        Check { name: name.into(), reference, outcome, evidence: evidence.into() }
    }
}
