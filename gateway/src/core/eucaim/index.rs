//! The datasets' index: for each dataset, the studies its sites held when last asked, each with
//! what the federated search asks of it (the patient's sex and age, and per series the
//! modality, the body part and the manufacturer), so that a count query is answered from
//! memory, never by C-FINDs.
//!
//! It is kept in memory (every row: some 100 bytes a study plus 20 a series) and, when the
//! gateway has a state directory, in `eucaim.redb` there, so that a restart answers at once
//! with what was last seen. A row names its study by the site's UID and its patient only by a
//! salted hash of the site and the patient's id (the salt made once, kept in the store): enough
//! to count distinct subjects, nothing to find a patient by. Rows of datasets or sites no longer
//! configured are dropped at start-up.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::DatasetConfig;
use crate::core::eucaim::vocabulary::Manufacturer;

const STUDIES: TableDefinition<&str, &[u8]> = TableDefinition::new("studies");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// One study of a dataset as the search sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StudyRow {
    pub(crate) site: String,
    /// The study's UID at the site.
    pub(crate) study: String,
    /// The patient, as a salted hash (see the module's documentation).
    pub(crate) subject: String,
    /// PatientSex: M, F or O; `None` when empty or another value.
    pub(crate) sex: Option<char>,
    /// The patient's age at the study, in days.
    pub(crate) age_days: Option<u32>,
    /// NumberOfStudyRelatedInstances when the site gave it: a study whose count is unchanged
    /// keeps its series at the next refresh without asking for them again.
    pub(crate) instances: Option<u64>,
    pub(crate) series: Vec<SeriesRow>,
}

/// One series of a study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SeriesRow {
    pub(crate) modality: Option<String>,
    /// BodyPartExamined, normalised (crate::core::eucaim::vocabulary::normalised_body_part).
    pub(crate) body_part: Option<String>,
    pub(crate) manufacturer: Option<Manufacturer>,
}

/// A dataset's studies at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct DatasetStudies {
    /// By site id, then by study UID.
    /// (Each site's rows shared between snapshots: a change to one site copies only its own.)
    pub(crate) by_site: BTreeMap<String, Arc<BTreeMap<String, StudyRow>>>,
    /// Each site's last whole reading, by site id.
    pub(crate) refreshed: BTreeMap<String, SiteRead>,
    /// What the studies hold, made once for this snapshot (every answer shows it; made by
    /// crate::core::eucaim::answer::describe).
    pub(crate) described: std::sync::OnceLock<Description>,
}

/// What a dataset holds, over all its studies (also the catalogue record's figures).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Description {
    pub(crate) studies: u64,
    pub(crate) subjects: u64,
    /// Whole years; 0 when no study has an age.
    pub(crate) age_min: u64,
    pub(crate) age_max: u64,
    /// "Male", "Female", "Other", "Unknown".
    pub(crate) sexes: Vec<&'static str>,
    pub(crate) modalities: Vec<String>,
    /// Normalised BodyPartExamined terms, "Unknown" for series without one.
    pub(crate) body_parts: Vec<String>,
    /// "Siemens", "General Electric", "Philips", "Toshiba", "Other".
    pub(crate) manufacturers: Vec<&'static str>,
}

/// One whole reading of a site into a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SiteRead {
    pub(crate) at: SystemTime,
    /// The site's answer was complete (not cut at `federation.max_matches`).
    pub(crate) complete: bool,
    /// How long the reading took.
    pub(crate) took: std::time::Duration,
}

impl DatasetStudies {
    pub(crate) fn rows(&self) -> impl Iterator<Item = &StudyRow> {
        self.by_site.values().flat_map(|rows| rows.values())
    }
}

/// The index of every configured dataset. Cheap to share; readers take a snapshot.
#[derive(Debug)]
pub(crate) struct Index {
    datasets: RwLock<BTreeMap<String, Arc<DatasetStudies>>>,
    store: Option<redb::Database>,
    salt: [u8; 32],
}

fn key(dataset: &str, site: &str, study: &str) -> String {
    format!("{dataset}\u{0}{site}\u{0}{study}")
}

impl Index {
    /// Opens the index: in memory only, or kept in `state_dir/eucaim.redb`, whose rows of the
    /// configured datasets and their sites are read back.
    pub(crate) fn open(state_dir: Option<&Path>, datasets: &[DatasetConfig]) -> anyhow::Result<Index> {
        let mut loaded: BTreeMap<String, DatasetStudies> =
            datasets.iter().map(|d| (d.id.clone(), DatasetStudies::default())).collect();
        let Some(dir) = state_dir else {
            return Ok(Index { datasets: RwLock::new(arc_all(loaded)), store: None, salt: random_salt()? });
        };
        let store = crate::core::private_files::open_database(dir, "federation.state_dir", "eucaim.redb")?;
        let write = store.begin_write()?;
        let salt = {
            let mut meta = write.open_table(META)?;
            let known = meta.get("salt")?.map(|salt| salt.value().to_vec());
            match known.and_then(|salt| <[u8; 32]>::try_from(salt.as_slice()).ok()) {
                Some(salt) => salt,
                None => {
                    let salt = random_salt()?;
                    meta.insert("salt", salt.as_slice())?;
                    salt
                }
            }
        };
        {
            let mut studies = write.open_table(STUDIES)?;
            // What belongs to no configured dataset and site goes; the rest is read back.
            let wanted = |dataset: &str, site: &str| {
                datasets.iter().any(|d| d.id == dataset && d.sites.iter().any(|s| s.as_str() == site))
            };
            studies.retain(|key, row| {
                let mut parts = key.splitn(3, '\u{0}');
                let (Some(dataset), Some(site)) = (parts.next(), parts.next()) else { return false };
                if !wanted(dataset, site) {
                    return false;
                }
                let Ok(row) = serde_json::from_slice::<StudyRow>(row) else { return false };
                if let Some(studies) = loaded.get_mut(dataset) {
                    Arc::make_mut(studies.by_site.entry(row.site.clone()).or_default()).insert(row.study.clone(), row);
                }
                true
            })?;
        }
        write.commit()?;
        Ok(Index { datasets: RwLock::new(arc_all(loaded)), store: Some(store), salt })
    }

    /// The studies of a dataset as last seen.
    pub(crate) fn studies(&self, dataset: &str) -> Option<Arc<DatasetStudies>> {
        self.datasets.read().unwrap_or_else(|poisoned| poisoned.into_inner()).get(dataset).cloned()
    }

    /// The subject a patient of `site` is counted as.
    pub(crate) fn subject(&self, site: &str, patient_id: &str, issuer: &str) -> String {
        let mut hash = Sha256::new();
        for part in [&self.salt[..], site.as_bytes(), b"\0", patient_id.as_bytes(), b"\0", issuer.as_bytes()] {
            hash.update(part);
        }
        hash.finalize()[..16].iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Replaces what a dataset holds of one site: every study, or the studies given (stored,
    /// or found gone: `None`). Blocking (the store's commit).
    pub(crate) fn replace(
        &self,
        dataset: &str,
        site: &str,
        change: Change,
        refreshed: Option<SiteRead>,
    ) -> anyhow::Result<()> {
        if let Some(store) = &self.store {
            let write = store.begin_write()?;
            {
                let mut table = write.open_table(STUDIES)?;
                if let Change::Whole(_) = &change {
                    let (from, to) = (key(dataset, site, ""), format!("{dataset}\u{0}{site}\u{1}"));
                    table.retain_in(from.as_str()..to.as_str(), |_, _| false)?;
                }
                for (study, row) in change.rows() {
                    match row {
                        Some(row) => {
                            table.insert(key(dataset, site, study).as_str(), serde_json::to_vec(row)?.as_slice())?
                        }
                        None => table.remove(key(dataset, site, study).as_str())?,
                    };
                }
            }
            write.commit()?;
        }
        let mut datasets = self.datasets.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(current) = datasets.get(dataset) else { return Ok(()) };
        let mut next = (**current).clone();
        next.described = std::sync::OnceLock::new();
        let of_site = next.by_site.entry(site.to_owned()).or_default();
        match change {
            Change::Whole(rows) => *of_site = Arc::new(rows.into_iter().map(|row| (row.study.clone(), row)).collect()),
            Change::Studies(studies) => {
                let rows = Arc::make_mut(of_site);
                for (study, row) in studies {
                    match row {
                        Some(row) => rows.insert(study, row),
                        None => rows.remove(&study),
                    };
                }
            }
        }
        if let Some(refreshed) = refreshed {
            next.refreshed.insert(site.to_owned(), refreshed);
        }
        datasets.insert(dataset.to_owned(), Arc::new(next));
        Ok(())
    }
}

/// A change to what a dataset holds of a site.
#[derive(Debug)]
pub(crate) enum Change {
    /// Every study of the site.
    Whole(Vec<StudyRow>),
    /// Some studies by UID: their rows, or `None` for a study no longer there.
    Studies(Vec<(String, Option<StudyRow>)>),
}

impl Change {
    /// The studies the change writes (`None`: removes), by UID.
    fn rows(&self) -> Vec<(&str, Option<&StudyRow>)> {
        match self {
            Change::Whole(rows) => rows.iter().map(|row| (row.study.as_str(), Some(row))).collect(),
            Change::Studies(studies) => studies.iter().map(|(study, row)| (study.as_str(), row.as_ref())).collect(),
        }
    }
}

/// Writes `studies` synthetic studies of `site` into `dataset`'s index under `state_dir`, as
/// refreshes would have left them: sexes, ages, modalities, body parts and manufacturers in
/// fixed proportions, two studies a subject, one to three series a study (the EUCAIM
/// benchmark).
#[doc(hidden)]
pub fn synthetic(state_dir: &Path, dataset: &str, site: &str, studies: usize) -> anyhow::Result<()> {
    let config = DatasetConfig::synthetic(dataset, site)?;
    let index = Index::open(Some(state_dir), std::slice::from_ref(&config))?;
    let modalities = ["MR", "CT", "PT", "US", "CR"];
    let parts = ["PROSTATE", "BREAST", "CHEST", "PELVIS", "HEAD", "ABDOMEN", "LUNG"];
    let makers = [Manufacturer::Siemens, Manufacturer::GeneralElectric, Manufacturer::Philips, Manufacturer::Toshiba];
    let rows = (0..studies)
        .map(|n| StudyRow {
            site: site.to_owned(),
            study: format!("2.25.{}", 1_000_000 + n),
            subject: index.subject(site, &format!("SUBJECT-{}", n / 2), ""),
            sex: [Some('M'), Some('F'), Some('O'), None][n % 4],
            age_days: (n % 9 != 0).then(|| ((20 + n % 70) as f64 * 365.25).ceil() as u32),
            instances: Some(100),
            series: (0..1 + n % 3)
                .map(|s| SeriesRow {
                    modality: Some(modalities[(n + s) % modalities.len()].to_owned()),
                    body_part: Some(parts[(n / 3 + s) % parts.len()].to_owned()),
                    manufacturer: Some(makers[(n + 2 * s) % makers.len()]),
                })
                .collect(),
        })
        .collect();
    let read = SiteRead { at: SystemTime::now(), complete: true, took: std::time::Duration::ZERO };
    index.replace(dataset, site, Change::Whole(rows), Some(read))
}

fn arc_all(loaded: BTreeMap<String, DatasetStudies>) -> BTreeMap<String, Arc<DatasetStudies>> {
    loaded.into_iter().map(|(id, studies)| (id, Arc::new(studies))).collect()
}

fn random_salt() -> anyhow::Result<[u8; 32]> {
    use std::io::Read;
    let mut salt = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut salt))
        .map_err(|e| anyhow::anyhow!("cannot read random bytes for the index's salt: {e}"))?;
    Ok(salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(id: &str, sites: &[&str]) -> DatasetConfig {
        DatasetConfig::with_defaults(id, sites)
    }

    fn row(site: &str, study: &str) -> StudyRow {
        StudyRow {
            site: site.into(),
            study: study.into(),
            subject: "x".into(),
            sex: Some('F'),
            age_days: Some(20_000),
            instances: Some(3),
            series: vec![SeriesRow { modality: Some("MR".into()), body_part: None, manufacturer: None }],
        }
    }

    #[test]
    fn rows_survive_a_restart_and_those_of_sites_no_longer_configured_go() {
        let dir = std::env::temp_dir().join(format!("eucaim-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let subject;
        {
            let index = Index::open(Some(&dir), &[dataset("d1", &["a", "b"])]).expect("open");
            index.replace("d1", "a", Change::Whole(vec![row("a", "1.1"), row("a", "1.2")]), None).expect("a");
            index.replace("d1", "b", Change::Whole(vec![row("b", "2.1")]), None).expect("b");
            let studies = vec![("1.2".into(), None), ("1.3".into(), Some(row("a", "1.3")))];
            index.replace("d1", "a", Change::Studies(studies), None).expect("one gone, one added");
            assert_eq!(index.studies("d1").expect("d1").rows().count(), 3);
            subject = index.subject("a", "PAT-1", "");
            assert_ne!(subject, index.subject("b", "PAT-1", ""), "one id at two sites is two subjects");
        }
        let index = Index::open(Some(&dir), &[dataset("d1", &["a"])]).expect("reopen");
        let studies = index.studies("d1").expect("d1");
        let uids: Vec<&str> = studies.rows().map(|r| r.study.as_str()).collect();
        assert_eq!(uids, ["1.1", "1.3"], "site b is no longer the dataset's");
        assert_eq!(index.subject("a", "PAT-1", ""), subject, "the salt is kept");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
