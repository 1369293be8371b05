//! WADO-RS (PS3.18 §10.4): study, series and instance retrieval as multipart/related
//! application/dicom, streamed instance by instance as the PACS delivers them, and metadata as
//! DICOM JSON or, asked for, as multipart/related application/dicom+xml (PS3.19), streamed the
//! same way. The target is located across the request's sites first
//! (docs/FEDERATION.md).
//!
//! A failure after the response has started aborts the connection instead of closing the
//! multipart body, so a client never mistakes a partial study for a whole one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicomweb_model::dicom_json::{write_object, JsonOptions};

use futures::{stream, Stream, StreamExt};
use pacs_adapter::{RetrieveTarget, RetrievedInstance};

use super::{accept_ranges, accepts, parse_uid, TargetPath};
use crate::config::DataSetLimitsConfig;
use crate::core::access::Access;
use crate::core::pixels::decode_budget::DecodeBudget;

use crate::core::retrieve::transcoded_cache::TranscodedCache;
use crate::core::retrieve::Instances;
use crate::core::Error;
use crate::http::multipart::OutgoingPart;
use crate::state::Gateway;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// A transfer syntax a client accepts instances in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Wanted {
    /// `transfer-syntax=*`: as the PACS holds them.
    AsStored,
    /// An uncompressed syntax: Explicit VR Little Endian (also what no transfer-syntax
    /// parameter means, PS3.18 §8.7.3.5.2) or Implicit VR Little Endian. Instances stored
    /// otherwise are transcoded (decompressed where the gateway can decode them).
    Uncompressed(&'static str),
    /// Any other syntax, named: only instances stored in it (the gateway encodes nothing).
    Exactly(String),
}

/// The transfer syntaxes the client accepts, most preferred first (a client may list several,
/// e.g. JPEG 2000 with Explicit VR Little Endian as the fallback); 406 when none is a DICOM one.
fn negotiate(headers: &HeaderMap) -> Result<Vec<Wanted>, Error> {
    let ranges = accept_ranges(headers);
    if ranges.is_empty() {
        return Ok(vec![Wanted::Uncompressed(EXPLICIT_VR_LE)]);
    }
    let mut wanted = Vec::new();
    for range in &ranges {
        let dicom = match range.media_type.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => range.parameter("type").is_none_or(|t| t.eq_ignore_ascii_case("application/dicom")),
            _ => false,
        };
        if !dicom {
            continue;
        }
        let one = match range.parameter("transfer-syntax") {
            Some("*") => Wanted::AsStored,
            None | Some(EXPLICIT_VR_LE) => Wanted::Uncompressed(EXPLICIT_VR_LE),
            Some(IMPLICIT_VR_LE) => Wanted::Uncompressed(IMPLICIT_VR_LE),
            Some(other) => Wanted::Exactly(other.to_owned()),
        };
        if !wanted.contains(&one) {
            wanted.push(one);
        }
    }
    if wanted.is_empty() {
        return Err(Error::NotAcceptable(format!(
            "instances are available as multipart/related; type=\"application/dicom\" with transfer-syntax=* (as \
             stored), {EXPLICIT_VR_LE} or {IMPLICIT_VR_LE}"
        )));
    }
    Ok(wanted)
}

pub(crate) fn target(study: &str, series: Option<&str>, instance: Option<&str>) -> Result<RetrieveTarget, Error> {
    Ok(RetrieveTarget {
        study: parse_uid("study", study)?,
        series: series.map(|s| parse_uid("series", s)).transpose()?,
        instances: instance.map(|i| parse_uid("instance", i)).transpose()?.into_iter().collect(),
    })
}

fn all(first: RetrievedInstance, rest: Instances) -> impl Stream<Item = Result<RetrievedInstance, std::io::Error>> {
    stream::once(async move { Ok(first) }).chain(rest.map(|item| item.map_err(std::io::Error::other)))
}

/// Whether an instance stored in transfer syntax `stored` can be given in one of `wanted`: as
/// stored, or decoded into an uncompressed syntax (every syntax instances arrive in is one the
/// gateway decodes; a broken codestream is found only when decoding it).
fn producible(wanted: &[Wanted], stored: &str) -> bool {
    wanted.iter().any(|one| match one {
        Wanted::AsStored => true,
        Wanted::Exactly(target) => target == stored,
        Wanted::Uncompressed(_) => pacs_adapter::syntax::PASS_THROUGH_TRANSFER_SYNTAXES.contains(&stored),
    })
}

/// How a response gives its instances: the syntaxes wanted, and what transcoding them uses.
#[derive(Clone)]
struct Representation {
    wanted: Arc<Vec<Wanted>>,
    limits: DataSetLimitsConfig,
    budget: Arc<DecodeBudget>,
    transcoded: Arc<TranscodedCache>,
    /// The project's cache scope (docs/CACHE.md).
    scope: String,
}

/// The instance in the first transfer syntax of `wanted` it can be given in, as Part-10 bytes.
async fn represent(instance: RetrievedInstance, how: Representation) -> Result<(Bytes, String), std::io::Error> {
    let ts = instance.transfer_syntax_uid.as_str().to_owned();
    let mut failure = None;
    for one in how.wanted.iter() {
        match one {
            Wanted::AsStored => return Ok((instance.part10, ts)),
            Wanted::Exactly(target) if *target == ts => return Ok((instance.part10, ts)),
            Wanted::Uncompressed(target) if *target == ts => return Ok((instance.part10, ts)),
            Wanted::Exactly(_) => {}
            Wanted::Uncompressed(target) => {
                let uid = instance.sop_instance_uid.as_str();
                if let Some(kept) = how.transcoded.get(&how.scope, uid, target) {
                    return Ok((kept, (*target).to_owned()));
                }
                match transcode(instance.clone(), target, how.limits, &how.budget).await {
                    Ok(bytes) => {
                        how.transcoded.keep(&how.scope, uid, target, bytes.clone());
                        return Ok((bytes, (*target).to_owned()));
                    }
                    Err(e) => failure = Some(e),
                }
            }
        }
    }
    Err(failure.unwrap_or_else(|| {
        std::io::Error::other(format!(
            "an instance is stored in transfer syntax {ts}, which was not asked for and cannot be produced from it; \
             ask for transfer-syntax=* or {EXPLICIT_VR_LE}"
        ))
    }))
}

/// Re-encodes an instance in an uncompressed transfer syntax, decoding compressed pixel data
/// (crate::core::pixels) within the gateway's decode budget; what cannot be decoded is an error, so
/// the response is refused or aborted rather than sent with a wrong or missing image.
async fn transcode(
    instance: RetrievedInstance,
    target: &'static str,
    limits: DataSetLimitsConfig,
    budget: &DecodeBudget,
) -> Result<Bytes, std::io::Error> {
    budget
        .decode_instance(instance, limits, "transfer-syntax=*", move |object, instance| {
            encoded(object, &instance, target)
        })
        .await
}

/// The parsed instance with its pixel data decoded, written in `target` as Part-10 bytes.
fn encoded(
    mut object: FileDicomObject<InMemDicomObject>,
    instance: &RetrievedInstance,
    target: &str,
) -> Result<Bytes, std::io::Error> {
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    let syntax = TransferSyntaxRegistry.get(target).ok_or_else(|| std::io::Error::other("unknown transfer syntax"))?;
    crate::core::pixels::decode_into(&mut object, target)
        .map_err(|e| std::io::Error::other(format!("{e}; ask for transfer-syntax=*")))?;
    let mut data_set = Vec::with_capacity(instance.data_set().len() + 1024);
    object.write_dataset_with_ts(&mut data_set, syntax).map_err(std::io::Error::other)?;
    Ok(Bytes::from(pacs_adapter::part10::wrap(
        instance.sop_class_uid.as_str(),
        instance.sop_instance_uid.as_str(),
        target,
        "",
        &data_set,
    )))
}

/// How many instances of one response are decoded at once: one per core, at most four.
fn decoding_at_once() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 4)
}

async fn retrieve(
    gw: Arc<Gateway>,
    access: Access,
    headers: HeaderMap,
    target: RetrieveTarget,
) -> Result<Response, Error> {
    if super::instance_bulkdata::wanted(&headers) {
        let crate::core::retrieve::Retrieval { first, rest, withheld, withheld_reasons, partly, .. } =
            crate::core::retrieve::retrieve(&gw.retriever, &access, target).await?;
        let limits = gw.config.dataset_limits;
        let response =
            super::instance_bulkdata::respond(first, rest, access.base_url.clone(), limits, gw.decode_budget.clone())
                .await?;
        return Ok(crate::http::error::with_withheld_warning(response, withheld, &withheld_reasons, &partly));
    }
    let wanted = Arc::new(negotiate(&headers)?);
    // A syntax the target's instances are known to be stored in that none of the wanted ones
    // can be made from: refused now rather than with the response cut off at that instance.
    let known = crate::core::retrieve::known_stored_syntaxes(&gw.retriever, &access, &target).await?;
    if let Some(stored) = known.iter().find(|ts| !producible(&wanted, ts)) {
        return Err(Error::NotAcceptable(format!(
            "instances of this target are stored in transfer syntax {stored}, which was not asked for and cannot be \
             produced from it; ask for transfer-syntax=* or {EXPLICIT_VR_LE}"
        )));
    }
    let crate::core::retrieve::Retrieval { first, rest, withheld, withheld_reasons, partly, etag } =
        crate::core::retrieve::retrieve(&gw.retriever, &access, target).await?;
    let tag = super::entity_tag(etag.as_deref(), &format!("instances {wanted:?}"));
    if let Some(not_modified) = super::not_modified(&headers, tag.as_deref()) {
        return Ok(not_modified);
    }
    // The first instance is represented before the response starts, so one the gateway cannot
    // transcode is a 406 rather than an aborted response.
    let how = Representation {
        wanted,
        limits: gw.config.dataset_limits,
        budget: gw.decode_budget.clone(),
        transcoded: gw.transcoded.clone(),
        scope: access.project.cache_scope.clone(),
    };
    let first = represent(first, how.clone()).await.map_err(|e| Error::NotAcceptable(e.to_string()))?;
    // Instances that need decoding are decoded a few at once (each on a blocking thread) and sent
    // in order: at most that many decoded instances are held at a time.
    let rest = rest
        .map(|item| item.map_err(std::io::Error::other))
        .map(move |item| {
            let how = how.clone();
            async move {
                match item {
                    Ok(instance) => represent(instance, how).await,
                    Err(e) => Err(e),
                }
            }
        })
        .buffered(decoding_at_once());
    let parts = stream::once(async move { Ok(first) }).chain(rest).map(|item| {
        item.map(|(bytes, ts)| vec![OutgoingPart::new(format!("application/dicom; transfer-syntax={ts}"), bytes)])
    });
    let mut response = crate::http::multipart::response("application/dicom", "retrieval", parts);
    super::with_validators(&mut response, tag.as_deref());
    Ok(crate::http::error::with_withheld_warning(response, withheld, &withheld_reasons, &partly))
}

/// Retrieve a study, a series or an instance (the path says which).
pub(crate) async fn resource(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    TargetPath(target): TargetPath,
    headers: HeaderMap,
) -> Result<Response, Error> {
    retrieve(gw, access, headers, target).await
}

/// The DICOM JSON of a retrieved instance, its pixel data and large top-level binary values
/// by BulkDataURI (`.../bulkdata/{tag}`). Large values inside sequences have no URI of their
/// own and are left out.
fn metadata_of(instance: &RetrievedInstance, public_url: &str) -> Result<Vec<u8>, std::io::Error> {
    let obj = dicom_object::from_reader(&instance.part10[128..]).map_err(std::io::Error::other)?;
    let study = super::text_of(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let series = super::text_of(&obj, dicom_dictionary_std::tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let base = format!("{public_url}/studies/{study}/series/{series}/instances/{}/bulkdata", instance.sop_instance_uid);
    let uri = |path: &[dicom_core::Tag]| match path {
        [tag] => Some(format!("{base}/{:04X}{:04X}", tag.group(), tag.element())),
        _ => None,
    };
    let mut out = Vec::with_capacity(8 * 1024);
    write_object(&mut out, &obj, &JsonOptions { inline_binary_max: 1024, bulk_data_uri: Some(&uri) });
    Ok(out)
}

async fn metadata(
    gw: Arc<Gateway>,
    access: Access,
    headers: HeaderMap,
    target: RetrieveTarget,
) -> Result<Response, Error> {
    let xml = wants_xml_metadata(&headers);
    if !xml {
        accepts(&headers, &["application/dicom+json", "application/json"])?;
    }
    // A DICOMweb origin passed on is asked for the metadata itself, when nothing here holds
    // the instances already.
    if let Some(answer) = crate::core::retrieve::origin_metadata(&gw.retriever, &access, &target).await? {
        // Rewritten and written off the async runtime: up to 64 MiB of JSON.
        let base_url = access.base_url.clone();
        return tokio::task::spawn_blocking(move || super::from_origin::metadata(&answer.json, &base_url, xml))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
    }
    let crate::core::retrieve::Retrieval { first, rest, withheld, withheld_reasons, partly, etag } =
        crate::core::retrieve::retrieve(&gw.retriever, &access, target).await?;
    if xml {
        let response = metadata_xml(first, rest, access.base_url.clone());
        return Ok(crate::http::error::with_withheld_warning(response, withheld, &withheld_reasons, &partly));
    }
    let tag = super::entity_tag(etag.as_deref(), &format!("metadata {}", access.base_url));
    if let Some(not_modified) = super::not_modified(&headers, tag.as_deref()) {
        return Ok(not_modified);
    }
    let validators = |mut response: Response| {
        super::with_validators(&mut response, tag.as_deref());
        crate::http::error::with_withheld_warning(response, withheld, &withheld_reasons, &partly)
    };
    // Served from the cache: the JSON made last time, if it is still kept.
    let kept = tag.as_ref().map(|tag| (access.project.id.clone(), tag.clone()));
    if let Some(body) = kept.as_ref().and_then(|(project, tag)| gw.cache.metadata(project, tag)) {
        return Ok(validators(([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response()));
    }
    let mut index = 0usize;
    let public_url = access.base_url.clone();
    // What is sent is also collected when it can be kept (a retrieval served from the cache).
    let collected = Arc::new(std::sync::Mutex::new(kept.as_ref().map(|_| Vec::new())));
    let collecting = collected.clone();
    let objects = all(first, rest)
        .then(move |item| {
            let public_url = public_url.clone();
            async move {
                let instance = item?;
                tokio::task::spawn_blocking(move || metadata_of(&instance, &public_url))
                    .await
                    .map_err(std::io::Error::other)?
            }
        })
        .inspect(|item| {
            if let Err(e) = item {
                tracing::warn!(error = %e, "metadata failed after the response started; aborting it");
            }
        })
        .map(move |item| {
            let separator: &[u8] = if index == 0 { b"[" } else { b"," };
            index += 1;
            let mut collected = collecting.lock().unwrap_or_else(|p| p.into_inner());
            match item {
                Ok(json) => {
                    let mut chunk = Vec::with_capacity(json.len() + 1);
                    chunk.extend_from_slice(separator);
                    chunk.extend_from_slice(&json);
                    if let Some(all) = collected.as_mut() {
                        all.extend_from_slice(&chunk);
                    }
                    Ok(Bytes::from(chunk))
                }
                Err(e) => {
                    *collected = None;
                    Err(e)
                }
            }
        })
        .chain(stream::once(async move {
            let all = collected.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let (Some(mut all), Some((project, tag))) = (all, kept) {
                all.push(b']');
                gw.cache.keep_metadata(&project, &tag, Bytes::from(all));
            }
            Ok(Bytes::from_static(b"]"))
        }));
    Ok(validators(([(header::CONTENT_TYPE, "application/dicom+json")], Body::from_stream(objects)).into_response()))
}

/// Whether the client takes metadata only as XML: no Accept range that JSON satisfies, and
/// one for `multipart/related; type="application/dicom+xml"`.
fn wants_xml_metadata(headers: &HeaderMap) -> bool {
    let ranges = accept_ranges(headers);
    let json = ranges.is_empty()
        || ranges.iter().any(|r| {
            matches!(r.media_type.as_str(), "*/*" | "application/*" | "application/dicom+json" | "application/json")
        });
    !json
        && ranges.iter().any(|r| {
            r.media_type == "multipart/related"
                && r.parameter("type").is_some_and(|t| t.eq_ignore_ascii_case("application/dicom+xml"))
        })
}

/// Metadata as multipart/related: one PS3.19 Native DICOM Model part per instance, made from
/// the same DICOM JSON as the JSON answer.
fn metadata_xml(first: RetrievedInstance, rest: Instances, public_url: String) -> Response {
    let parts = all(first, rest)
        .then(move |item| {
            let public_url = public_url.clone();
            async move {
                let instance = item?;
                tokio::task::spawn_blocking(move || {
                    let json = metadata_of(&instance, &public_url)?;
                    super::metadata_xml::native_dicom_model(&json).map_err(std::io::Error::other)
                })
                .await
                .map_err(std::io::Error::other)?
            }
        })
        .map(|item| item.map(|xml| vec![OutgoingPart::new("application/dicom+xml", Bytes::from(xml))]));
    crate::http::multipart::response("application/dicom+xml", "metadata", parts)
}

/// The metadata of a study, a series or an instance (the path says which).
pub(crate) async fn resource_metadata(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    TargetPath(target): TargetPath,
    headers: HeaderMap,
) -> Result<Response, Error> {
    metadata(gw, access, headers, target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const J2K: &str = "1.2.840.10008.1.2.4.90";
    const JLS: &str = "1.2.840.10008.1.2.4.80";

    fn accepting(accept: &str) -> Vec<Wanted> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, accept.parse().expect("header"));
        negotiate(&headers).expect("acceptable")
    }

    #[test]
    fn what_can_be_produced_from_a_stored_syntax() {
        let only_j2k = accepting(&format!("multipart/related; type=\"application/dicom\"; transfer-syntax={J2K}"));
        assert!(producible(&only_j2k, J2K));
        assert!(!producible(&only_j2k, JLS), "the gateway encodes nothing");
        let j2k_or_default = accepting(&format!(
            "multipart/related; type=\"application/dicom\"; transfer-syntax={J2K}, multipart/related; type=\"application/dicom\"; q=0.5"
        ));
        assert!(producible(&j2k_or_default, JLS), "decoded into Explicit VR Little Endian");
        assert!(!producible(&j2k_or_default, "1.2.840.10008.1.2.4.102"), "MPEG-4 video is not decoded");
        let as_stored = accepting("multipart/related; type=\"application/dicom\"; transfer-syntax=*");
        assert!(producible(&as_stored, "1.2.840.10008.1.2.4.102"));
    }
}
