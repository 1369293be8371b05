//! De-identification as the gateway runs it (`[deid]`): the project's keys and options, the
//! pseudonym map, and the two jobs on every response: de-identifying what leaves (instances,
//! QIDO results) and translating what comes in (pseudonymous UIDs and patients back to the
//! site's values). docs/DEIDENTIFICATION.md tells the rules.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_deid::burned_in::Withheld;
use dicomweb_deid::{Deidentifier, Options, ProjectKeys, Report};
use dicomweb_model::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};
use pacs_adapter::{RetrieveTarget, RetrievedInstance};

use crate::config::{DataSetLimitsConfig, DeidConfig};
use crate::core::privacy::clean_pixels::Cleaner;
use crate::core::privacy::pseudonyms::{Kind, Original, PseudonymStore, Unavailable};
use crate::core::Error;

/// The project of a gateway without authentication: every site, one set of pseudonyms.
pub(crate) const IMPLICIT_PROJECT: &str = "all-sites";

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

#[derive(Debug)]
pub struct Privacy {
    pub(crate) project: String,
    pub(crate) engine: Deidentifier,
    pub(crate) store: Arc<dyn PseudonymStore>,
    /// Cleans the pixels of instances that may show identity, when the project's burned_in is
    /// "clean"; `None`: they are withheld.
    pub(crate) cleaner: Option<Arc<Cleaner>>,
    /// Bounds the decoding a cleaning does.
    limits: DataSetLimitsConfig,
}

/// What became of a retrieved instance.
#[derive(Debug)]
pub enum Processed {
    Deidentified(RetrievedInstance),
    /// De-identified after its burned-in text was cleaned.
    Cleaned(RetrievedInstance),
    Withheld(Withheld),
}

/// Reads the secret, creating it (32 random bytes, mode 0600) on first start.
fn secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) => anyhow::bail!("deid.key_file {} is shorter than 32 bytes", path.display()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            anyhow::bail!("cannot read deid.key_file {}: {e}", path.display())
        }
        Err(_) => {}
    }
    let mut secret = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut secret))
        .map_err(|e| anyhow::anyhow!("cannot read random bytes for a new secret: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::core::private_files::create_dir(dir)?;
    }
    use std::io::Write;
    let mut file = crate::core::private_files::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create deid.key_file {}: {e}", path.display()))?;
    file.write_all(&secret)?;
    file.sync_all()?;
    tracing::warn!(path = %path.display(), "created a new de-identification secret: keep it, or every pseudonym changes");
    Ok(secret)
}

/// What every project's de-identification shares: the secret and the pseudonym map.
#[derive(Debug)]
pub struct Shared {
    secret: Secret,
    store: Arc<dyn PseudonymStore>,
}

/// The secret, never printed.
struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Privacy {
    /// Reads (or creates) the secret and opens the pseudonym map.
    pub fn open_shared(config: &DeidConfig) -> anyhow::Result<Shared> {
        Ok(Shared { secret: Secret(secret(&config.key_file)?), store: crate::core::privacy::pseudonyms::open(config)? })
    }

    /// One project's de-identification: keys derived for the project, its options, and the
    /// cleaner of burned-in text when the project cleans.
    pub fn start(
        shared: &Shared,
        project: &str,
        options: &[String],
        cleaner: Option<Arc<Cleaner>>,
        limits: DataSetLimitsConfig,
    ) -> anyhow::Result<Privacy> {
        let options = Options::parse(options).map_err(|problems| anyhow::anyhow!(problems.join("; ")))?;
        let keys = ProjectKeys::derive(&shared.secret.0, project);
        Ok(Privacy {
            project: project.to_owned(),
            engine: Deidentifier::new(keys, options),
            store: shared.store.clone(),
            cleaner,
            limits,
        })
    }

    /// What a pseudonym this project handed out stands for, of whatever kind; `None` when it
    /// never handed it out.
    pub(crate) async fn lookup(&self, pseudonym: &str) -> Result<Option<Original>, Error> {
        let store = self.store.clone();
        let (project, pseudonym) = (self.project.clone(), pseudonym.to_owned());
        tokio::task::spawn_blocking(move || store.resolve(&project, &pseudonym))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(map_error)
    }

    /// The site's value of a pseudonym this project handed out; 404 when it never did.
    pub(crate) async fn resolve(&self, pseudonym: &str, kind: Kind) -> Result<Original, Error> {
        let found = self.lookup(pseudonym).await?;
        found.filter(|o| o.kind == kind).ok_or_else(|| Error::NotFound("no such study, series or instance".into()))
    }

    /// A retrieval target named by pseudonyms, in the site's UIDs; 404 when a pseudonym was
    /// never handed out (in this project).
    pub(crate) async fn site_target(&self, target: &RetrieveTarget) -> Result<RetrieveTarget, Error> {
        // The sites' UIDs as a peer's: an archive's UID may break the strict rules.
        let invalid = |e: dicomweb_model::UidError| Error::Internal(format!("pseudonym map holds an invalid UID: {e}"));
        let study = StudyInstanceUid::from_peer(&self.resolve(target.study.as_str(), Kind::Study).await?.value)
            .map_err(invalid)?;
        let series = match &target.series {
            Some(series) => Some(
                SeriesInstanceUid::from_peer(&self.resolve(series.as_str(), Kind::Series).await?.value)
                    .map_err(invalid)?,
            ),
            None => None,
        };
        let mut instances = Vec::with_capacity(target.instances.len());
        for instance in &target.instances {
            instances.push(
                SopInstanceUid::from_peer(&self.resolve(instance.as_str(), Kind::Instance).await?.value)
                    .map_err(invalid)?,
            );
        }
        Ok(RetrieveTarget { study, series, instances })
    }

    /// A target named by the site's UIDs, in pseudonyms (recorded, so that they resolve).
    pub(crate) async fn client_target(&self, target: &RetrieveTarget) -> Result<RetrieveTarget, Error> {
        let keys = self.engine.keys();
        let invalid = |e: dicomweb_model::UidError| Error::Internal(format!("invalid pseudonym: {e}"));
        let mut entries = Vec::new();
        let mut pseudonym = |kind: Kind, value: &str| {
            let pseudonym = keys.uid(value);
            entries.push((pseudonym.clone(), Original { kind, value: value.to_owned(), issuer: None }));
            pseudonym
        };
        let study = StudyInstanceUid::new(&pseudonym(Kind::Study, target.study.as_str())).map_err(invalid)?;
        let series = match &target.series {
            Some(series) => Some(SeriesInstanceUid::new(&pseudonym(Kind::Series, series.as_str())).map_err(invalid)?),
            None => None,
        };
        let instances = target
            .instances
            .iter()
            .map(|i| SopInstanceUid::new(&pseudonym(Kind::Instance, i.as_str())).map_err(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        self.record(entries).await?;
        Ok(RetrieveTarget { study, series, instances })
    }

    /// Records pseudonyms before the response carrying them goes out.
    pub(crate) async fn record(&self, entries: Vec<(String, Original)>) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.store.recording(&self.project, entries).await.map_err(map_error)
    }

    /// Records pseudonyms from a thread off the async runtime (a benchmark's loop) before the
    /// instance carrying them goes out.
    pub fn record_blocking(&self, entries: Vec<(String, Original)>) -> Result<(), Error> {
        self.store.record(&self.project, entries).map_err(map_error)
    }

    /// The pseudonyms a de-identified data set's report names, as map entries.
    pub(crate) fn entries(report: &Report) -> Vec<(String, Original)> {
        let mut entries: Vec<(String, Original)> = report
            .identity
            .iter()
            .filter_map(|m| {
                let kind = match m.tag {
                    t if t == tags::STUDY_INSTANCE_UID => Kind::Study,
                    t if t == tags::SERIES_INSTANCE_UID => Kind::Series,
                    t if t == tags::SOP_INSTANCE_UID => Kind::Instance,
                    _ => return None,
                };
                Some((m.pseudonym.clone(), Original { kind, value: m.original.clone(), issuer: None }))
            })
            .collect();
        if let (Some(pseudonym), Some((id, issuer))) = (&report.patient, &report.patient_id) {
            entries.push((
                pseudonym.clone(),
                Original { kind: Kind::Patient, value: id.clone(), issuer: Some(issuer.clone()) },
            ));
        }
        entries
    }

    /// De-identifies a data set held at `site` (a QIDO result) of `patient` when the data set
    /// does not name its own, returning the map entries.
    pub(crate) fn data_set(
        &self,
        obj: &mut InMemDicomObject,
        site: &str,
        patient: Option<&dicomweb_deid::KnownPatient>,
    ) -> Vec<(String, Original)> {
        Privacy::entries(&self.engine.apply_for(obj, site, patient))
    }

    /// Whether [`Privacy::instance`] is quick enough for the async runtime: its head rewritten
    /// and nothing more (tens of microseconds). Cleaning burned-in text and inflating a
    /// deflated data set are not, and go to a blocking thread.
    pub fn deidentifies_quickly(&self, instance: &RetrievedInstance) -> bool {
        use dicom_encoding::TransferSyntaxIndex;
        self.cleaner.is_none()
            && dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(instance.transfer_syntax_uid.as_str())
                .is_some_and(|ts| !matches!(ts.codec(), dicom_encoding::Codec::Dataset(_)))
    }

    /// De-identifies one retrieved instance of `site` (CPU work: call it off the async
    /// runtime unless [`Privacy::deidentifies_quickly`]): withheld when its pixels may show identity, else the de-identified Part-10
    /// file (new file meta group, empty preamble) and the map entries of its UIDs. The pixel
    /// data stays where it arrived when nothing else holds the instance
    /// ([`RetrievedInstance::with_front`]).
    pub fn instance(
        &self,
        instance: RetrievedInstance,
        site: &str,
    ) -> Result<(Processed, Vec<(String, Original)>), std::io::Error> {
        use dicom_encoding::TransferSyntaxIndex;
        use dicomweb_deid::instance::Rewrite;
        let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
        let source_ts = instance.transfer_syntax_uid.as_str();
        let unknown = || std::io::Error::other(format!("transfer syntax {source_ts} is not known to the gateway"));
        let ts = registry.get(source_ts).ok_or_else(unknown)?;
        let data_set = instance.data_set();
        // Deflate is not written back: such a data set is inflated and goes out uncompressed.
        let (inflated, ts) = if matches!(ts.codec(), dicom_encoding::Codec::Dataset(_)) {
            let obj = dicom_object::from_reader(&instance.part10[128..]).map_err(std::io::Error::other)?;
            let explicit = registry.get(EXPLICIT_VR_LE).ok_or_else(unknown)?;
            let mut plain = Vec::with_capacity(data_set.len() * 2);
            obj.write_dataset_with_ts(&mut plain, explicit).map_err(std::io::Error::other)?;
            (Some(plain), explicit)
        } else {
            (None, ts)
        };
        let source = inflated.as_deref().unwrap_or(data_set);
        // The new file meta group names the pseudonym the profile gives the SOP Instance UID.
        let pseudonym = self.engine.keys().uid(instance.sop_instance_uid.as_str());
        let meta = pacs_adapter::part10::file_meta(instance.sop_class_uid.as_str(), &pseudonym, ts.uid(), "", 0);
        let rewrite =
            dicomweb_deid::instance::rewrite(&self.engine, source, ts, site, meta).map_err(std::io::Error::other)?;
        let (part10, report, cleaned) = match (rewrite, &self.cleaner) {
            (Rewrite::Rewritten { front, unchanged_from, report, .. }, _) => {
                let part10 = match inflated {
                    Some(plain) => [&front[..], &plain[unchanged_from..]].concat().into(),
                    None => instance.with_front(&front, unchanged_from),
                };
                (part10, report, false)
            }
            (Rewrite::Withheld(withheld), None) => return Ok((Processed::Withheld(withheld), Vec::new())),
            // The project cleans: the instance's text is blanked and the clean one de-identified.
            (Rewrite::Withheld(_), Some(cleaner)) => {
                let (clean, syntax) = match cleaner.clean(&instance, &self.limits) {
                    Ok(clean) => clean,
                    Err(reason) => return Ok((Processed::Withheld(Withheld { reason }), Vec::new())),
                };
                let ts = registry.get(syntax).ok_or_else(unknown)?;
                let meta = pacs_adapter::part10::wrap(instance.sop_class_uid.as_str(), &pseudonym, syntax, "", &[]);
                match dicomweb_deid::instance::deidentify_cleaned(&self.engine, &clean, ts, site, meta)
                    .map_err(std::io::Error::other)?
                {
                    dicomweb_deid::instance::Outcome::Deidentified { bytes, report, .. } => {
                        (Bytes::from(bytes), report, true)
                    }
                    dicomweb_deid::instance::Outcome::Withheld(withheld) => {
                        return Ok((Processed::Withheld(withheld), Vec::new()))
                    }
                }
            }
        };
        let entries = Privacy::entries(&report);
        let deidentified = RetrievedInstance::from_part10(part10).map_err(std::io::Error::other)?;
        let processed = if cleaned { Processed::Cleaned(deidentified) } else { Processed::Deidentified(deidentified) };
        Ok((processed, entries))
    }
}

/// How long a client is asked to wait when the pseudonym map is unreachable.
const MAP_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// A failure of the pseudonym map as a response: 503 with Retry-After when the store is
/// unreachable (the request may be retried; nothing it would have emitted was sent), else 500.
pub(crate) fn map_error(e: anyhow::Error) -> Error {
    match e.downcast_ref::<Unavailable>() {
        Some(_) => Error::Unavailable {
            message: "the pseudonym map is unreachable; retry later".into(),
            retry_after: MAP_RETRY_AFTER,
        },
        None => Error::Internal(format!("pseudonym map: {e:#}")),
    }
}
