//! The fuzz harnesses: one function per parser that reads outside bytes, called by the
//! libFuzzer binaries in `fuzz_targets/` and, over the committed corpus, by this crate's test
//! (so every input that once crashed stays a test). Each harness feeds the bytes through the
//! gateway's own entry point and checks what must hold whatever the input; a panic, an endless
//! loop or an allocation the size a length field claims is a finding.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;

/// A harness: one input, checked.
pub type Harness = fn(&[u8]);

/// The harnesses by target name, as `fuzz_targets/` names its binaries.
pub const TARGETS: &[(&str, Harness)] = &[
    ("qido_query", qido_query),
    ("media_types", media_types),
    ("multipart", multipart),
    ("part10", part10),
    ("dimse", dimse),
    ("jwt", jwt),
    ("eucaim_query", eucaim_query),
    ("origin_json", origin_json),
];

/// A DICOMweb origin's JSON answer (a site the gateway federates: an edge gateway, an archive,
/// a cloud store): read as a search page, and as the metadata of a study, checked and written
/// again with the gateway's own URLs; what is written is one JSON array of as many objects as
/// the check let through, and every URL in it (a BulkDataURI, a value of VR UR as written or by
/// the dictionary) is the gateway's.
pub fn origin_json(data: &[u8]) {
    let _ = gateway::fuzzing::origin_search_page(data);
    // The study the seeds' objects are of.
    if let Some((objects, written)) = gateway::fuzzing::origin_metadata(data, "1.2.3") {
        let written: serde_json::Value = serde_json::from_slice(&written).expect("the metadata written is JSON");
        let written = written.as_array().expect("the metadata written is an array");
        assert_eq!(written.len(), objects, "as many objects as were checked");
        written.iter().for_each(only_the_gateways_urls);
        // What is neither a URL nor a sequence nor bulk data is written as the origin sent it.
        let sent: Vec<serde_json::Value> = serde_json::from_slice(data).expect("checked, so JSON");
        for (sent, written) in sent.iter().zip(written) {
            let (Some(sent), Some(written)) = (sent.as_object(), written.as_object()) else { continue };
            for (key, attribute) in sent {
                let vr = attribute.get("vr").and_then(|v| v.as_str()).unwrap_or("");
                let plain =
                    vr.parse::<dicom_core::VR>().is_ok_and(|vr| vr != dicom_core::VR::UR && vr != dicom_core::VR::SQ);
                // Values of text and numbers, or a person name's groups of text.
                let values = attribute.get("Value").and_then(|v| v.as_array()).into_iter().flatten();
                let flat = values.clone().all(|v| match v.as_object() {
                    Some(groups) => vr == "PN" && groups.values().all(|g| g.is_string()),
                    None => true,
                });
                if plain
                    && flat
                    && !has_a_float(attribute)
                    && attribute.get("BulkDataURI").is_none()
                    && !is_a_url_tag(key)
                {
                    assert_eq!(written.get(key), Some(attribute), "attribute {key} was changed");
                }
            }
        }
    }
}

/// Whether a float is anywhere in `value` (serde_json parses a long mantissa roughly, so it
/// may be written back as a neighbouring float).
fn has_a_float(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(values) => values.iter().any(has_a_float),
        serde_json::Value::Object(members) => members.values().any(has_a_float),
        _ => false,
    }
}

/// Whether the dictionary says the attribute `key` names is a URL (VR UR).
fn is_a_url_tag(key: &str) -> bool {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    u32::from_str_radix(key, 16)
        .ok()
        .filter(|_| key.len() == 8)
        .and_then(|t| dicom_dictionary_std::StandardDataDictionary.by_tag(dicom_core::Tag((t >> 16) as u16, t as u16)))
        .is_some_and(|entry| entry.vr().relaxed() == dicom_core::VR::UR)
}

/// The gateway's URL, as `gateway::fuzzing::origin_metadata` writes metadata.
const GATEWAY_URL: &str = "http://gw/dicom-web/";

fn only_the_gateways_urls(object: &serde_json::Value) {
    let Some(attributes) = object.as_object() else { return };
    for (key, attribute) in attributes {
        if let Some(uri) = attribute.get("BulkDataURI") {
            assert!(uri.as_str().is_some_and(|u| u.starts_with(GATEWAY_URL)), "an origin's BulkDataURI: {uri}");
        }
        let by_dictionary = is_a_url_tag(key);
        let values = attribute.get("Value").and_then(|v| v.as_array());
        if attribute.get("vr").and_then(|v| v.as_str()) == Some("UR") || by_dictionary {
            for value in values.into_iter().flatten() {
                assert!(value.as_str().is_some_and(|u| u.starts_with(GATEWAY_URL)), "an origin's URL: {value}");
            }
        }
        values.into_iter().flatten().for_each(only_the_gateways_urls);
    }
}

/// A federated search request body (EUCAIM's Focus POSTs it), read and tried on a study.
pub fn eucaim_query(data: &[u8]) {
    gateway::fuzzing::eucaim_query(data);
}

/// A QIDO-RS query string (the raw query of `/studies?...`), parsed and turned into the C-FIND
/// identifiers of the three search levels.
pub fn qido_query(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(identifiers) = gateway::fuzzing::qido_identifiers(text) {
        for identifier in identifiers {
            // The identifier must encode as the C-FIND request will encode it.
            let mut encoded = Vec::new();
            let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
            identifier.write_dataset_with_ts(&mut encoded, &ts).expect("a parsed query encodes as an identifier");
        }
    }
}

/// Accept and Content-Type header values: the media ranges a client accepts, the STOW-RS
/// boundary parameter.
pub fn media_types(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, value.clone());
    for range in gateway::fuzzing::accept_ranges(&headers) {
        assert!(!range.media_type.is_empty(), "an empty media range is skipped");
    }
    let _ = gateway::fuzzing::accepts(&headers, &["application/dicom+json", "application/json"]);
    if let Ok(text) = value.to_str() {
        if let Some(boundary) = gateway::fuzzing::boundary_of(text) {
            assert!(boundary.len() <= text.len());
        }
    }
}

/// Limits of the multipart harness: small, so that size checks are reached.
const MAX_PART: usize = 4096;
const MAX_BODY: u64 = 64 * 1024;

/// A STOW-RS body: the first byte chooses how the body is chunked as it arrives, the second
/// how long the boundary is; every part that comes out is within the limit.
pub fn multipart(data: &[u8]) {
    let [chunking, boundary_len, rest @ ..] = data else { return };
    let boundary_len = usize::from(*boundary_len % 16) + 1;
    if rest.len() < boundary_len {
        return;
    }
    let (boundary, body) = rest.split_at(boundary_len);
    let Ok(boundary) = std::str::from_utf8(boundary) else { return };
    let chunk = usize::from(*chunking).max(1);
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        body.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut reader =
        gateway::fuzzing::MultipartReader::new(futures::stream::iter(chunks), boundary, MAX_PART, MAX_BODY);
    futures::executor::block_on(async {
        let mut parts = 0usize;
        while let Ok(Some(part)) = reader.next_part().await {
            assert!(part.body.len() <= MAX_PART, "a part over the limit came out");
            parts += 1;
            assert!(parts <= body.len(), "more parts than bytes");
        }
    });
}

fn deidentifier() -> &'static dicomweb_deid::Deidentifier {
    static ENGINE: OnceLock<dicomweb_deid::Deidentifier> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let options = dicomweb_deid::Options::parse::<&str>(&[]).expect("no options");
        dicomweb_deid::Deidentifier::new(dicomweb_deid::ProjectKeys::derive(b"fuzzing secret", "fuzz"), options)
    })
}

/// The content limits the harness checks with: the defaults, but a smaller inflated size so that
/// a deflate bomb costs the fuzzer little time.
const CONTENT_LIMITS: gateway::config::DataSetLimitsConfig = gateway::config::DataSetLimitsConfig {
    max_sequence_depth: 64,
    max_inflated_size: 16 << 20,
    max_frame_size: 1 << 30,
    max_decoded_size: 1 << 30,
    decode_memory: 2 << 30,
};

/// A Part-10 file as a STOW-RS client or a PACS sends it: the file meta group, the content
/// limits, then (only within them, as the gateway does) the whole data set parsed, written as
/// DICOM JSON, and de-identified as a retrieved instance is.
pub fn part10(data: &[u8]) {
    let Ok(header) = pacs_adapter::part10::parse_header(data) else { return };
    assert!(header.data_set_offset <= data.len());
    let data_set = &data[header.data_set_offset..];
    if gateway::fuzzing::check_encoded(data_set, &header.transfer_syntax_uid, &CONTENT_LIMITS).is_err() {
        return;
    }
    if let Ok(object) = dicom_object::from_reader(&data[128..]) {
        let options = dicomweb_model::dicom_json::JsonOptions::default();
        let _ = dicomweb_model::dicom_json::to_json(&object, &options);
    }
    let Ok(instance) = pacs_adapter::RetrievedInstance::from_part10(Bytes::copy_from_slice(data)) else { return };
    use dicom_encoding::TransferSyntaxIndex;
    let registry = dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    let Some(ts) = registry.get(instance.transfer_syntax_uid.as_str()) else { return };
    if matches!(ts.codec(), dicom_encoding::Codec::Dataset(_)) {
        // Deflated data sets are inflated by dicom-object first (covered above).
        return;
    }
    let _ = dicomweb_deid::instance::deidentify(deidentifier(), instance.data_set(), ts, "site", Vec::new());
}

/// Bytes a PACS sends on an association: PDUs (read as the association reads them, within the
/// maximum PDU length we offer), their PDVs reassembled into DIMSE messages.
pub fn dimse(data: &[u8]) {
    let mut buffer = bytes::BytesMut::from(data);
    let mut assembler = pacs_adapter::dimse::MessageAssembler::new(1 << 20);
    let mut on_pdv = |pdv: pacs_adapter::incoming::Pdv<'_>| {
        assembler.push(pdv)?;
        while assembler.next_message().is_some() {}
        Ok(())
    };
    while let Ok(Some(_)) = pacs_adapter::incoming::take_pdu(&mut buffer, 1 << 20, &mut on_pdv) {}
}

fn authenticator() -> &'static gateway::fuzzing::Authenticator {
    static AUTHENTICATOR: OnceLock<gateway::fuzzing::Authenticator> = OnceLock::new();
    AUTHENTICATOR.get_or_init(|| {
        gateway::fuzzing::authenticator(JWKS, b"a shared secret of at least thirty-two bytes")
            .expect("the fixed JWKS parses")
    })
}

/// A JWKS with one EC P-256 key (a public test key, of no use beyond parsing).
const JWKS: &[u8] = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256",
"x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

/// An `Authorization` header (the first byte picks the harness: header or JWKS document).
pub fn jwt(data: &[u8]) {
    let [which, rest @ ..] = data else { return };
    if which % 4 == 0 {
        let _ = gateway::fuzzing::jwks(rest);
        return;
    }
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let _ = gateway::fuzzing::check_token(authenticator(), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed corpus input (seeds and the reproducers of fixed findings) goes through
    /// its harness in the ordinary test run.
    #[test]
    fn the_corpus_replays_without_a_finding() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for (name, harness) in TARGETS {
            let dir = root.join(name);
            let entries: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
                .map(|e| e.expect("corpus entry").path())
                .collect();
            assert!(!entries.is_empty(), "corpus {name} is empty");
            for path in entries {
                let bytes = std::fs::read(&path).expect("corpus file");
                harness(&bytes);
            }
        }
    }
}
