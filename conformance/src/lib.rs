//! `dicomweb-conformance`: checks a server point by point against the standard and says, with
//! evidence, what passes, what fails and what does not apply.
//!
//! `web` checks any DICOMweb server (QIDO-RS, WADO-RS, STOW-RS and HTTP behaviour, the checks
//! read from the case files under `cases/`); `dimse` checks a PACS's DIMSE services as a
//! federation uses them. `report` writes the results as a table, JSON or JUnit XML.

#![forbid(unsafe_code)]

pub mod dimse;
pub mod dimse_syntaxes;
pub mod report;
pub mod web;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    NotApplicable,
}

/// One check: what was checked, where the standard says so, the outcome and the evidence.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub reference: String,
    pub outcome: Outcome,
    pub evidence: String,
}

impl Check {
    pub fn new(
        name: impl Into<String>,
        reference: impl Into<String>,
        outcome: Outcome,
        evidence: impl Into<String>,
    ) -> Self {
        Check { name: name.into(), reference: reference.into(), outcome, evidence: evidence.into() }
    }
}
