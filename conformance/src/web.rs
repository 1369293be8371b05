//! `web`: checks any DICOMweb server against PS3.18 — search (QIDO-RS), retrieve (WADO-RS),
//! store (STOW-RS) and HTTP behaviour.
//!
//! The checks need data whose values are known. Unless told a study, the tool stores its own
//! synthetic study through STOW-RS (`seed`); when the server answers with UIDs of its own (a
//! de-identifying server), it follows them and learns the study's values by searching for it;
//! when the server refuses, it uses what a search finds, and the checks that need what was not
//! found do not apply. The request checks are
//! data (`cases`); the store checks and those that follow a URL from an answer are code.

mod cases;
mod client;
mod dicom_json;
mod media;
mod multipart;
mod retrieve;
mod seed;
mod stow;
mod subject;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Check;
pub use client::WebClient;

/// The server to check.
#[derive(Debug, Clone)]
pub struct WebTarget {
    /// The service root, e.g. `http://127.0.0.1:8080/dicom-web`.
    pub url: String,
    pub token: Option<String>,
    /// Check this study instead of storing one.
    pub study: Option<String>,
    pub timeout: Duration,
}

/// Runs every check, reporting each as it starts through `progress`.
pub async fn run(target: &WebTarget, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Vec<Check>> {
    let mut client = WebClient::new(&target.url, target.token.clone(), target.timeout)?;
    let mut checks = Vec::new();
    progress("test data");
    let mut seeded = None;
    let vars: BTreeMap<String, String> = match &target.study {
        Some(study) => {
            client.redact_patient_values(true);
            subject::discover(&client, Some(study)).await
        }
        None => {
            let study = seed::SeedStudy::new()?;
            match stow::store_seed(&client, &study, &mut checks).await {
                stow::Seeded::AsSent => {
                    let vars = subject::seeded(&study);
                    seeded = Some(study);
                    vars
                }
                // A de-identifying server shows the study under values of its own: they are
                // found by searching for it as the server named it.
                stow::Seeded::Renamed(shown) => {
                    client.redact_patient_values(true);
                    subject::discover(&client, Some(&shown)).await
                }
                stow::Seeded::Refused => {
                    client.redact_patient_values(true);
                    subject::discover(&client, None).await
                }
            }
        }
    };
    for family in ["qido", "wado"] {
        for case in cases::load(family)? {
            progress(&case.name);
            checks.push(cases::run(&client, &case, &vars).await);
        }
    }
    progress("bulk data and RetrieveURL");
    checks.extend(retrieve::checks(&client, &vars).await);
    if target.study.is_none() {
        progress("STOW-RS");
        checks.extend(stow::checks(&client, seeded.as_ref()).await);
    }
    for case in cases::load("http")? {
        progress(&case.name);
        checks.push(cases::run(&client, &case, &vars).await);
    }
    Ok(checks)
}
