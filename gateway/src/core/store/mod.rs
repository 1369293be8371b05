//! STOW-RS as the core does it (PS3.18 §10.5): each instance checked within `[dataset_limits]`
//! and parsed whole (an instance the gateway cannot read is refused here rather than stored into
//! a PACS that may choke on it later), put into the site's terms when de-identifying
//! (crate::core::privacy::stow_deid), and sent by C-STORE to the request's storing site; then
//! what the retrieval cache holds of the studies stored into is forgotten. The edge reads the
//! body part by part and writes the Store Instances Response Module.

use dicom_dictionary_std::tags;
use dicomweb_model::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};
use pacs_adapter::{part10, DimseError};

use crate::config::DataSetLimitsConfig;
use crate::core::access::Access;
use crate::core::attributes::text_of;
use crate::core::dataset_limits::{check_encoded, ContentLimitError};
use crate::core::privacy::pseudonyms::{Kind, Original};
use crate::core::retrieve::cache::RetrievalCache;
use crate::core::Error;
use crate::sites::dicomweb::WebError;
use crate::sites::{Site, Unanswered};

/// PS3.18 Table I.2-2 failure reasons.
const OUT_OF_RESOURCES: u16 = 0xA700;
const DATA_SET_MISMATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;
const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
const PROCESSING_FAILURE: u16 = 0x0110;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Why an instance is refused before it is parsed: a bound of `[dataset_limits]` (PS3.18
/// Table I.2-2: A700 when the gateway will not spend that much, C000 when the data set
/// contradicts itself).
fn limit_reason(e: &ContentLimitError) -> u16 {
    match e {
        ContentLimitError::TooDeep(_)
        | ContentLimitError::InflatedTooLarge(_)
        | ContentLimitError::FrameTooLarge { .. }
        | ContentLimitError::DecodedTooLarge { .. } => OUT_OF_RESOURCES,
        ContentLimitError::LengthPastEnd { .. }
        | ContentLimitError::PartialValue { .. }
        | ContentLimitError::Inflate(_)
        | ContentLimitError::Malformed(_) => CANNOT_UNDERSTAND,
    }
}

/// An instance stored: its SOP class, the SOP Instance UID the client sent, the UIDs it is
/// retrieved by (pseudonyms when de-identifying), and the PACS's warning status, if any.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) class: String,
    pub(crate) sent: String,
    pub(crate) study: StudyInstanceUid,
    pub(crate) series: Option<SeriesInstanceUid>,
    pub(crate) instance: SopInstanceUid,
    pub(crate) warning: Option<u16>,
}

/// An instance (or a part that is none) refused, with its PS3.18 Table I.2-2 reason.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) class: String,
    pub(crate) instance: String,
    pub(crate) reason: u16,
}

/// What a STOW-RS request stored and refused.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) stored: Vec<Stored>,
    pub(crate) refused: Vec<Refused>,
    /// The studies stored into, as the client retrieves them.
    pub(crate) studies: Vec<StudyInstanceUid>,
    /// The studies stored into, in the site's UIDs (what the caches know them by).
    pub(crate) site_studies: Vec<StudyInstanceUid>,
    /// Failures that say the PACS could not be used at all.
    pub(crate) unavailable: Option<Unanswered>,
    /// De-identifying: the pseudonyms the response's URLs name.
    pseudonyms: Vec<(String, Original)>,
}

impl Outcome {
    fn fail(&mut self, class: &str, instance: &str, reason: u16) {
        self.refused.push(Refused { class: class.to_owned(), instance: instance.to_owned(), reason });
    }
}

/// The site a request stores into: the first of its sites that takes instances.
pub(crate) fn storing_site<'a>(sites: &'a [Site], access: &Access) -> Result<&'a Site, Error> {
    crate::core::retrieve::sites_for(sites, access)?
        .into_iter()
        .find(|s| s.config.store)
        .ok_or_else(|| Error::Forbidden("no site of this request takes stored instances (store = true)".into()))
}

/// One STOW-RS request's instances, stored one by one as they arrive.
#[derive(Debug)]
pub(crate) struct Storing<'a> {
    /// The request's piece for the site (a site de-identified already is stored into as the
    /// caller sends, crate::core::access::Handling).
    access: Access,
    site: &'a Site,
    limits: DataSetLimitsConfig,
    target_study: Option<StudyInstanceUid>,
    outcome: Outcome,
}

impl<'a> Storing<'a> {
    /// Stores into `site` for `access`; every instance must be of `target_study` when the URL
    /// names one. De-identifying, that study is put in the site's terms as the instances' own
    /// study UIDs will be: the study a pseudonym stands for, or the caller's UID kept under the
    /// project's upload key.
    pub(crate) async fn start(
        access: &'a Access,
        site: &'a Site,
        limits: DataSetLimitsConfig,
        target_study: Option<StudyInstanceUid>,
    ) -> Result<Storing<'a>, Error> {
        let access = access.for_site(site);
        let target_study = match (access.privacy(), target_study) {
            (Some(privacy), Some(study)) => {
                let in_site_terms = match privacy.lookup(study.as_str()).await? {
                    Some(original) if original.kind == Kind::Study => original.value,
                    _ => privacy.engine.keys().stored_uid(study.as_str()),
                };
                Some(StudyInstanceUid::from_peer(&in_site_terms).map_err(|e| {
                    Error::Internal(format!("the study in the path stands for no UID at the site: {e}"))
                })?)
            }
            (_, target_study) => target_study,
        };
        Ok(Storing { access, site, limits, target_study, outcome: Outcome::default() })
    }

    /// A part that is not a DICOM instance.
    pub(crate) fn refuse_part(&mut self) {
        self.outcome.fail("", "", CANNOT_UNDERSTAND);
    }

    /// Checks, puts into the site's terms and C-STOREs one instance (Part-10 bytes).
    pub(crate) async fn instance(&mut self, bytes: bytes::Bytes) {
        let target_study = self.target_study.clone();
        store_one(&self.access, self.site, self.limits, target_study.as_ref(), bytes, &mut self.outcome).await;
    }

    /// Ends the request: the retrieval cache forgets the studies stored into (what it held of
    /// them no longer shows all of them), and the pseudonyms the answer names are committed
    /// before it is sent.
    pub(crate) async fn finish(mut self, cache: &RetrievalCache) -> Result<Outcome, Error> {
        for study in &self.outcome.site_studies {
            cache.forget_study(study);
        }
        if let Some(privacy) = self.access.privacy() {
            privacy.record(std::mem::take(&mut self.outcome.pseudonyms)).await?;
        }
        Ok(self.outcome)
    }
}

async fn store_one(
    access: &Access,
    site: &Site,
    limits: DataSetLimitsConfig,
    target_study: Option<&StudyInstanceUid>,
    bytes: bytes::Bytes,
    outcome: &mut Outcome,
) {
    let Ok(header) = part10::parse_header(&bytes) else {
        outcome.fail("", "", CANNOT_UNDERSTAND);
        return;
    };
    // The data set within `[dataset_limits]` first (nesting, lengths, inflated size), then
    // parsed whole: an instance the gateway cannot read is refused here rather than stored into
    // a PACS that may choke on it later.
    let keep_parsed = access.privacy().is_some();
    let parsed = {
        let bytes = bytes.clone();
        let (offset, syntax) = (header.data_set_offset, header.transfer_syntax_uid.clone());
        tokio::task::spawn_blocking(move || {
            let inflated = check_encoded(&bytes[offset..], &syntax, &limits).map_err(|e| limit_reason(&e))?;
            let obj = dicom_object::from_reader(&bytes[128..]).map_err(|_| CANNOT_UNDERSTAND)?;
            let uids =
                [tags::SOP_CLASS_UID, tags::SOP_INSTANCE_UID, tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID]
                    .map(|tag| text_of(&obj, tag));
            // The parsed instance is kept only to be put into the site's terms.
            Ok((inflated, uids, keep_parsed.then(|| obj.into_inner())))
        })
        .await
        .unwrap_or(Err(PROCESSING_FAILURE))
    };
    let (inflated, [data_set_class, data_set_instance, study, series], object) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => {
            outcome.fail(&header.sop_class_uid, &header.sop_instance_uid, reason);
            return;
        }
    };
    // The data set, not the file meta group, says what the instance is; a file whose meta group
    // disagrees with it (pydicom has one) is framed anew around its untouched data set.
    let (Some(class), Some(instance)) = (data_set_class, data_set_instance) else {
        outcome.fail(&header.sop_class_uid, &header.sop_instance_uid, DATA_SET_MISMATCH);
        return;
    };
    let bytes = if class != header.sop_class_uid || instance != header.sop_instance_uid {
        let data_set = &bytes[header.data_set_offset..];
        bytes::Bytes::from(part10::wrap(&class, &instance, &header.transfer_syntax_uid, "", data_set))
    } else {
        bytes
    };
    let Some(study) = study else {
        outcome.fail(&class, &instance, DATA_SET_MISMATCH);
        return;
    };
    // De-identifying, the instance is stored in the site's terms (crate::core::privacy::stow_deid), framed
    // anew; the response names it by what it sent (`sent`) and the pseudonyms of what is kept.
    let sent = instance.clone();
    let (bytes, study, series, instance) = match (access.privacy(), object) {
        (Some(privacy), Some(object)) => {
            let syntax = if inflated.is_some() { EXPLICIT_VR_LE } else { header.transfer_syntax_uid.as_str() };
            match in_site_terms(privacy, object, &class, syntax, site.id().as_str()).await {
                Ok(stored) => stored,
                Err(reason) => {
                    outcome.fail(&class, &sent, reason);
                    return;
                }
            }
        }
        _ => (bytes, study, series, instance),
    };
    let inflated = if access.privacy().is_some() { None } else { inflated };
    // UIDs are digits and dots: an instance whose study or own UID is not one is not stored.
    let (Ok(study), Ok(instance_uid)) = (StudyInstanceUid::from_peer(&study), SopInstanceUid::from_peer(&instance))
    else {
        outcome.fail(&class, &instance, DATA_SET_MISMATCH);
        return;
    };
    let series = series.and_then(|s| SeriesInstanceUid::from_peer(&s).ok());
    if target_study.is_some_and(|t| *t != study) {
        // PS3.18 §10.5.1: every instance must belong to the study the URL names.
        outcome.fail(&class, &instance, DATA_SET_MISMATCH);
        return;
    }
    // Deflated Explicit VR Little Endian is a raw deflate stream of an Explicit VR Little Endian
    // data set, so inflating it is lossless and exact. It is inflated (within the limit, above)
    // before C-STORE because DCMTK-based PACS (Orthanc 1.10) accept a deflated presentation
    // context and then never answer the C-STORE; DCMTK's own storescu inflates too.
    let bytes = match inflated {
        Some(data_set) => bytes::Bytes::from(part10::wrap(&class, &instance, EXPLICIT_VR_LE, "", &data_set)),
        None => bytes,
    };
    if outcome.unavailable.is_some() {
        // The site failed this request already (unreachable, timed out, aborted, its circuit
        // open): the rest is not sent to wait out the same deadline once per instance.
        outcome.fail(&class, &instance, OUT_OF_RESOURCES);
        return;
    }
    match site.store(&access.touched, bytes).await {
        Ok(result) => {
            // A site that stores under UIDs of its own (a gateway de-identifying inside its
            // hospital) is retrieved by those; without de-identification here they are the
            // site's UIDs and the client's.
            let (study, series, instance_uid) = match (result.retrieved_by, access.privacy()) {
                (Some((study, series, instance)), None) => (study, Some(series), instance),
                _ => (study, series, instance_uid),
            };
            // De-identifying, the instance is retrieved (like everything) by its pseudonyms.
            let (study_shown, series_shown, instance_shown) = match access.privacy() {
                Some(privacy) => {
                    let mut shown = |kind: Kind, uid: &str| {
                        let pseudonym = privacy.engine.keys().uid(uid);
                        let original = Original { kind, value: uid.to_owned(), issuer: None };
                        outcome.pseudonyms.push((pseudonym.clone(), original));
                        pseudonym
                    };
                    (
                        StudyInstanceUid::from_peer(&shown(Kind::Study, study.as_str())),
                        series.as_ref().map(|s| SeriesInstanceUid::from_peer(&shown(Kind::Series, s.as_str()))),
                        SopInstanceUid::from_peer(&shown(Kind::Instance, instance_uid.as_str())),
                    )
                }
                None => (Ok(study.clone()), series.clone().map(Ok), Ok(instance_uid.clone())),
            };
            // Pseudonyms are UIDs (2.25 and digits), so these hold.
            let (Ok(study_shown), Ok(series_shown), Ok(instance_shown)) =
                (study_shown, series_shown.transpose(), instance_shown)
            else {
                outcome.fail(&class, &instance, PROCESSING_FAILURE);
                return;
            };
            outcome.stored.push(Stored {
                class: class.clone(),
                sent: sent.clone(),
                study: study_shown.clone(),
                series: series_shown,
                instance: instance_shown,
                warning: result.warning,
            });
            if !outcome.site_studies.contains(&study) {
                outcome.site_studies.push(study.clone());
            }
            if !outcome.studies.contains(&study_shown) {
                outcome.studies.push(study_shown);
            }
        }
        Err(Unanswered::Dimse(DimseError::NoPresentationContext { .. })) => {
            outcome.fail(&class, &instance, TRANSFER_SYNTAX_NOT_SUPPORTED)
        }
        Err(Unanswered::Dimse(DimseError::Failed { status, .. })) => {
            outcome.fail(&class, &instance, stored_reason(status.0))
        }
        Err(Unanswered::Web(WebError::Refused { reason, .. })) => {
            outcome.fail(&class, &instance, stored_reason(reason))
        }
        Err(e @ Unanswered::CircuitOpen { .. }) => {
            outcome.fail(&class, &instance, OUT_OF_RESOURCES);
            outcome.unavailable.get_or_insert(e);
        }
        Err(e) if e.is_unavailable() => {
            tracing::warn!(site = %site.config.id, error = %e, "store failed: the site is unavailable");
            outcome.fail(&class, &instance, OUT_OF_RESOURCES);
            outcome.unavailable.get_or_insert(e);
        }
        Err(e) => {
            tracing::warn!(site = %site.config.id, error = %e, "store failed");
            outcome.fail(&class, &instance, PROCESSING_FAILURE);
        }
    }
}

/// A site's failure status as the STOW-RS failure reason (PS3.18 Table I.2-2): its own when it
/// is one a client can act on, processing failure otherwise.
fn stored_reason(status: u16) -> u16 {
    match status {
        0xA700..=0xA7FF | 0xA900..=0xA9FF | 0xC000..=0xCFFF | 0x0110 | 0x0122 | 0x0124 => status,
        _ => PROCESSING_FAILURE,
    }
}

/// An instance in the site's terms (crate::core::privacy::stow_deid), encoded in `syntax` and framed as Part
/// 10, with its study, series and SOP Instance UIDs as stored; a failure reason otherwise.
async fn in_site_terms(
    privacy: &crate::core::privacy::deidentify::Privacy,
    mut object: dicom_object::InMemDicomObject,
    class: &str,
    syntax: &str,
    storing_site: &str,
) -> Result<(bytes::Bytes, String, Option<String>, String), u16> {
    if let Err(e) = crate::core::privacy::stow_deid::into_site_terms(privacy, &mut object, storing_site).await {
        tracing::warn!(error = %e, "a stored instance could not be put into the site's terms");
        return Err(OUT_OF_RESOURCES);
    }
    let (class, syntax) = (class.to_owned(), syntax.to_owned());
    tokio::task::spawn_blocking(move || {
        use dicom_encoding::TransferSyntaxIndex;
        let ts =
            dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&syntax).ok_or(TRANSFER_SYNTAX_NOT_SUPPORTED)?;
        let mut data_set = Vec::new();
        object.write_dataset_with_ts(&mut data_set, ts).map_err(|_| PROCESSING_FAILURE)?;
        let uid = |tag| text_of(&object, tag);
        let (study, series, instance) =
            (uid(tags::STUDY_INSTANCE_UID), uid(tags::SERIES_INSTANCE_UID), uid(tags::SOP_INSTANCE_UID));
        let (Some(study), Some(instance)) = (study, instance) else { return Err(DATA_SET_MISMATCH) };
        let bytes = bytes::Bytes::from(part10::wrap(&class, &instance, &syntax, "", &data_set));
        Ok((bytes, study, series, instance))
    })
    .await
    .unwrap_or(Err(PROCESSING_FAILURE))
}
