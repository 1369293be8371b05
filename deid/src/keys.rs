//! Keyed pseudonyms. Each project has keys of its own, derived from the gateway's secret with
//! HKDF-SHA-256 (RFC 5869, the project id in the info), so pseudonyms of one project cannot be
//! linked to another's; without the secret they cannot be linked to the site's values at all.
//!
//! - A UID becomes `2.25.` and the decimal form of 128 bits of HMAC-SHA-256(uid key, UID),
//!   shaped as a version 8 UUID (RFC 9562), which is what `2.25` UIDs are (PS3.5 §B.2). The
//!   same UID gets the same pseudonym in every response of a project, at whichever site it is.
//! - A patient (the issuer of its PatientID, else the site, and the PatientID) becomes a short
//!   token used as PatientID and PatientName.
//! - Dates of a patient shift by a number of days between 1 and [`MAX_SHIFT_DAYS`] back, the
//!   same for every date of that patient (keyed by PatientID alone, so that a study held by two
//!   sites keeps one timeline).

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A text value without its padding: the spaces (and NULs) DICOM puts around LO, SH, CS and PN
/// values are not part of them (PS3.5 §6.2), so `id11111` and `id11111 ` are one PatientID.
/// The one rule that merging, matching and pseudonyms all use.
pub fn unpadded(value: &str) -> &str {
    value.trim_matches([' ', '\0'])
}

/// `2.25.` and the decimal form of 128 bits of HMAC(key, value), shaped as a version 8 UUID.
fn uuid_uid(key: &[u8; 32], value: &str) -> String {
    let digest = hmac(key, &[value.trim_end_matches(['\0', ' ']).as_bytes()]);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0F) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3F) | 0x80; // variant 10
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

/// `prefix` and 14 letters and digits (70 bits) of a digest.
fn token(prefix: &str, digest: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::from(prefix);
    let mut bits: u128 = u128::from_be_bytes(digest[..16].try_into().unwrap_or([0; 16]));
    for _ in 0..14 {
        out.push(ALPHABET[(bits & 31) as usize] as char);
        bits >>= 5;
    }
    out
}

/// The largest date shift, in days (about ten years).
pub const MAX_SHIFT_DAYS: i64 = 3652;

/// The keys of one project.
#[derive(Clone)]
pub struct ProjectKeys {
    uid: [u8; 32],
    patient: [u8; 32],
    date: [u8; 32],
    /// Keys values a caller stores that are not this project's pseudonyms (see
    /// [`ProjectKeys::stored_uid`]).
    upload: [u8; 32],
}

impl std::fmt::Debug for ProjectKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProjectKeys(..)")
    }
}

fn hmac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    for part in parts {
        // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl ProjectKeys {
    /// Derives a project's keys from the gateway's secret.
    pub fn derive(secret: &[u8], project: &str) -> ProjectKeys {
        let hkdf = Hkdf::<Sha256>::new(Some(b"dicomweb-gateway pseudonyms v1"), secret);
        let expand = |purpose: &str| {
            let mut key = [0u8; 32];
            let info = format!("project={project}; purpose={purpose}");
            // 32 bytes is far below HKDF-SHA-256's limit of 255 * 32: this cannot fail.
            hkdf.expand(info.as_bytes(), &mut key).unwrap_or_else(|_| unreachable!("32 bytes is a valid length"));
            key
        };
        ProjectKeys {
            uid: expand("uid"),
            patient: expand("patient"),
            date: expand("date-shift"),
            upload: expand("upload"),
        }
    }

    /// The pseudonymous UID of a UID: `2.25.` + a version 8 UUID as a decimal integer.
    pub fn uid(&self, uid: &str) -> String {
        uuid_uid(&self.uid, uid)
    }

    /// The UID a site keeps for a UID a caller stored through the gateway that is not one of
    /// this project's pseudonyms. A caller's own values are never stored as they are: one equal
    /// to a site's UID would otherwise come back as that UID's pseudonym, linking the two.
    pub fn stored_uid(&self, uid: &str) -> String {
        uuid_uid(&self.upload, uid)
    }

    /// The PatientID a site keeps for a PatientID a caller stored through the gateway that is
    /// not one of this project's patient pseudonyms (`UP` and 14 letters and digits), for the
    /// same reason: a chosen MRN must not come back as that patient's pseudonym and shift.
    pub fn stored_patient(&self, patient_id: &str) -> String {
        token("UP", &hmac(&self.upload, &[b"patient", unpadded(patient_id).as_bytes()]))
    }

    /// The pseudonym of a patient: `issuer` is the IssuerOfPatientID, or the site when there
    /// is none. 16 characters, letters and digits.
    pub fn patient(&self, issuer: &str, patient_id: &str) -> String {
        token("PX", &hmac(&self.patient, &[unpadded(issuer).as_bytes(), unpadded(patient_id).as_bytes()]))
    }

    /// A short fingerprint of these keys, to tell what was made with them from what was made
    /// with others (another secret, another project) without revealing anything of them.
    pub fn fingerprint(&self) -> String {
        hmac(&self.uid, &[b"fingerprint"])[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The number of days a patient's dates move back: 1 to [`MAX_SHIFT_DAYS`].
    pub fn date_shift_days(&self, patient_id: &str) -> i64 {
        let digest = hmac(&self.date, &[unpadded(patient_id).as_bytes()]);
        let n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        1 + (n % MAX_SHIFT_DAYS as u64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_stable_per_project_and_unlinkable_across_projects() {
        let a = ProjectKeys::derive(b"secret", "lung-ai");
        let b = ProjectKeys::derive(b"secret", "other");
        let uid = a.uid("1.2.840.113619.2.55.3.1");
        assert_eq!(uid, ProjectKeys::derive(b"secret", "lung-ai").uid("1.2.840.113619.2.55.3.1\0"));
        assert_ne!(uid, b.uid("1.2.840.113619.2.55.3.1"));
        assert_ne!(uid, ProjectKeys::derive(b"other secret", "lung-ai").uid("1.2.840.113619.2.55.3.1"));
        assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
        let value: u128 = uid[5..].parse().expect("decimal");
        assert_eq!((value >> 76) & 0xF, 8, "UUID version 8");
        assert_eq!((value >> 62) & 0x3, 2, "RFC variant");
    }

    /// Known answers, computed outside this code from the documented construction (HKDF-SHA-256
    /// of the secret, HMAC-SHA-256 of length-prefixed parts): pseudonyms already handed out must
    /// never change.
    #[test]
    fn pseudonyms_are_the_documented_construction() {
        let keys = ProjectKeys::derive(b"secret", "p");
        assert_eq!(keys.uid("1.2.3"), "2.25.332479654506366853076211345353494179761");
        assert_eq!(keys.patient("site-1", "12345"), "PXFXK2QL9Q98WGJJ");
    }

    #[test]
    fn what_a_caller_stores_is_kept_under_values_of_its_own() {
        let keys = ProjectKeys::derive(b"secret", "p");
        let stored = keys.stored_uid("1.2.3.4");
        assert!(stored.starts_with("2.25.") && stored != keys.uid("1.2.3.4"));
        assert_eq!(stored, ProjectKeys::derive(b"secret", "p").stored_uid("1.2.3.4 "));
        let patient = keys.stored_patient("MRN-1");
        assert!(patient.starts_with("UP") && patient.len() == 16);
        assert_ne!(&patient[2..], &keys.patient("site-1", "MRN-1")[2..]);
        assert_ne!(patient, ProjectKeys::derive(b"secret", "q").stored_patient("MRN-1"));
    }

    #[test]
    fn patient_pseudonyms_depend_on_the_issuer_and_shifts_stay_in_range() {
        let keys = ProjectKeys::derive(b"secret", "p");
        let one = keys.patient("site-1", "12345");
        assert_eq!(one.len(), 16);
        assert_eq!(one, keys.patient("site-1", "12345 "));
        assert_eq!(one, keys.patient("site-1", " 12345\0"));
        assert_eq!(keys.date_shift_days("12345"), keys.date_shift_days("12345 "));
        assert_ne!(one, keys.patient("site-2", "12345"));
        for id in ["a", "b", "c", "12345", ""] {
            let days = keys.date_shift_days(id);
            assert!((1..=MAX_SHIFT_DAYS).contains(&days));
        }
    }
}
