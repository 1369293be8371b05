//! The codes EUCAIM's federated search sends (SNOMED CT, RadLex, NCIt and BIRNLex, as its
//! explorer's catalogue writes them) and the DICOM values each stands for, with the
//! normalising of what archives actually hold (docs/EUCAIM.md lists them).

/// The search keys DICOM metadata answers.
pub(crate) const SEX: &str = "SNOMEDCT263495000";
pub(crate) const AGE: &str = "SNOMEDCT423493009";
pub(crate) const MODALITY: &str = "RID10311";
pub(crate) const BODY_PART: &str = "SNOMEDCT123037004";
pub(crate) const MANUFACTURER: &str = "C25392";

/// PatientSex (M, F, O) of a sex code; `Some(None)` for "unknown" (no or another value).
pub(crate) fn sex(code: &str) -> Option<Option<char>> {
    match code {
        "SNOMEDCT248153007" => Some(Some('M')),
        "SNOMEDCT248152002" => Some(Some('F')),
        "SNOMEDCT74964007" => Some(Some('O')),
        "SNOMEDCT261665006" => Some(None),
        _ => None,
    }
}

/// How a sex is shown in a collection's description.
pub(crate) fn sex_label(sex: Option<char>) -> &'static str {
    match sex {
        Some('M') => "Male",
        Some('F') => "Female",
        Some('O') => "Other",
        _ => "Unknown",
    }
}

/// The DICOM Modality of a RadLex modality code (SPECT is NM in DICOM).
pub(crate) fn modality(code: &str) -> Option<&'static str> {
    match code {
        "RID10312" => Some("MR"),
        "RID10321" => Some("CT"),
        "RID10337" => Some("PT"),
        "RID10334" => Some("NM"),
        _ => None,
    }
}

/// The normalised BodyPartExamined terms a body-part code stands for. Lung cancer is imaged
/// as CHEST (CID 4031's term for a thoracic CT) as often as LUNG, so the lung code matches
/// both; both pelvis codes in use match PELVIS.
pub(crate) fn body_parts(code: &str) -> Option<&'static [&'static str]> {
    Some(match code {
        "SNOMEDCT76752008" => &["BREAST"],
        "SNOMEDCT71854001" => &["COLON"],
        "SNOMEDCT39607008" => &["LUNG", "CHEST"],
        "SNOMEDCT12921003" | "SNOMEDCT816092008" => &["PELVIS"],
        "SNOMEDCT41216001" => &["PROSTATE"],
        "SNOMEDCT818981001" => &["ABDOMEN"],
        "SNOMEDCT69536005" => &["HEAD"],
        _ => return None,
    })
}

/// BodyPartExamined as archives write it ("Pelvis^Masculin", "TORAX", "Mamma") as a CID 4031
/// term: upper case, its first component, and the common translations of the terms the
/// search asks for. `None` when empty.
pub(crate) fn normalised_body_part(value: &str) -> Option<String> {
    let first = value.split(['^', '\\']).next().unwrap_or("").trim().to_uppercase();
    let first = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if first.is_empty() {
        return None;
    }
    let term = match first.as_str() {
        "TORAX" | "THORAX" | "TÓRAX" | "THORAKS" => "CHEST",
        "LUNGS" | "PULMON" | "PULMÓN" | "POUMON" | "LUNGE" | "POLMONE" => "LUNG",
        "MAMMA" | "MAMA" | "SEIN" | "BRUST" | "BREASTS" | "MAMMO" => "BREAST",
        "PROSTATA" | "PRÓSTATA" => "PROSTATE",
        "BECKEN" | "BASSIN" | "PELVIS MASCULIN" | "PELVE" => "PELVIS",
        "KOPF" | "CABEZA" | "TETE" | "TÊTE" | "SKULL" => "HEAD",
        "ABDOMEN PELVIS" => "ABDOMENPELVIS",
        "ABDOMEN" | "ABDOMINAL" | "BAUCH" => "ABDOMEN",
        "COLON" | "KOLON" | "COLOR" => "COLON",
        other => other,
    };
    Some(term.to_owned())
}

/// The manufacturers the search asks for, as DICOM Manufacturer values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Manufacturer {
    Siemens,
    GeneralElectric,
    Philips,
    Toshiba,
    Other,
}

/// The manufacturer a code stands for.
pub(crate) fn manufacturer(code: &str) -> Option<Manufacturer> {
    match code {
        "C200140" | "birnlex_3066" => Some(Manufacturer::Siemens),
        "birnlex_12833" => Some(Manufacturer::GeneralElectric),
        "birnlex_3065" => Some(Manufacturer::Philips),
        "birnlex_3067" => Some(Manufacturer::Toshiba),
        _ => None,
    }
}

/// A Manufacturer value read as EUCAIM's reference provider reads it: "siemens", "philips",
/// "toshiba" anywhere (case aside), "general electric" anywhere or "ge" as its first word.
pub(crate) fn read_manufacturer(value: &str) -> Option<Manufacturer> {
    let lower = value.trim().to_lowercase();
    if lower.is_empty() {
        return None;
    }
    Some(if lower.contains("siemens") {
        Manufacturer::Siemens
    } else if lower.contains("philips") {
        Manufacturer::Philips
    } else if lower.contains("toshiba") {
        Manufacturer::Toshiba
    } else if lower.contains("general electric") || lower == "ge" || lower.starts_with("ge ") {
        Manufacturer::GeneralElectric
    } else {
        Manufacturer::Other
    })
}

impl Manufacturer {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Manufacturer::Siemens => "Siemens",
            Manufacturer::GeneralElectric => "General Electric",
            Manufacturer::Philips => "Philips",
            Manufacturer::Toshiba => "Toshiba",
            Manufacturer::Other => "Other",
        }
    }
}

/// An age in days from PatientAge (`045Y`, `006M`, `010W`, `003D`).
pub(crate) fn age_days(patient_age: &str) -> Option<u32> {
    let text = patient_age.trim();
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let number: u32 = number.trim().parse().ok()?;
    let days = match unit {
        "D" | "d" => f64::from(number),
        "W" | "w" => f64::from(number) * 7.0,
        "M" | "m" => f64::from(number) * 365.25 / 12.0,
        "Y" | "y" => f64::from(number) * 365.25,
        _ => return None,
    };
    // Up, so that "045Y" is 45 whole years however the year's length is counted.
    Some(days.ceil() as u32)
}

/// An age in days from the birth date and the study date (DA values, `YYYYMMDD`).
pub(crate) fn age_days_between(birth: &str, study: &str) -> Option<u32> {
    u32::try_from(day_number(study)? - day_number(birth)?).ok()
}

/// Days since 1970-01-01 of a DA value (the proleptic Gregorian calendar); `None` when it is
/// no valid date.
fn day_number(date: &str) -> Option<i64> {
    let date = date.trim();
    if date.len() < 8 || !date.as_bytes()[..8].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let (year, month, day): (i64, i64, i64) =
        (date[..4].parse().ok()?, date[4..6].parse().ok()?, date[6..8].parse().ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm): years counted from March.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// Years of an age in days, as people say it (whole years lived).
pub(crate) fn years(days: u32) -> f64 {
    f64::from(days) / 365.25
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_parts_are_read_as_cid_4031_terms() {
        assert_eq!(normalised_body_part("Pelvis^Masculin").as_deref(), Some("PELVIS"));
        assert_eq!(normalised_body_part(" torax ").as_deref(), Some("CHEST"));
        assert_eq!(normalised_body_part("Mamma").as_deref(), Some("BREAST"));
        assert_eq!(normalised_body_part("prostate").as_deref(), Some("PROSTATE"));
        assert_eq!(normalised_body_part("").as_deref(), None);
        assert_eq!(normalised_body_part("KNEE").as_deref(), Some("KNEE"));
        assert!(body_parts("SNOMEDCT12921003") == body_parts("SNOMEDCT816092008"), "both pelvis codes");
    }

    #[test]
    fn manufacturers_are_read_as_the_reference_provider_reads_them() {
        assert_eq!(read_manufacturer("SIEMENS Healthineers"), Some(Manufacturer::Siemens));
        assert_eq!(read_manufacturer("GE MEDICAL SYSTEMS"), Some(Manufacturer::GeneralElectric));
        assert_eq!(read_manufacturer("General Electric Company"), Some(Manufacturer::GeneralElectric));
        assert_eq!(read_manufacturer("GEMS"), Some(Manufacturer::Other), "not the word GE");
        assert_eq!(read_manufacturer("Philips Medical Systems"), Some(Manufacturer::Philips));
        assert_eq!(read_manufacturer("TOSHIBA_MEC"), Some(Manufacturer::Toshiba));
        assert_eq!(read_manufacturer(" "), None);
    }

    #[test]
    fn ages_come_from_patient_age_or_the_dates() {
        assert_eq!(age_days("045Y").map(|days| years(days).floor()), Some(45.0));
        assert_eq!(age_days("006M"), Some(183));
        assert_eq!(age_days("010W"), Some(70));
        assert_eq!(age_days("003D"), Some(3));
        assert_eq!(age_days("45"), None);
        assert_eq!(age_days(""), None);
        let days = age_days_between("19700615", "20200614").expect("days");
        assert!(years(days) < 50.0 && years(days) > 49.9);
        assert_eq!(age_days_between("20200101", "19700101"), None, "born after the study");
        assert_eq!(age_days_between("1970", "20200101"), None);
        assert_eq!(day_number("19700101"), Some(0));
        assert_eq!(day_number("20000301"), Some(11_017));
        assert_eq!(age_days_between("20000228", "20000301"), Some(2), "2000 is a leap year");
        assert_eq!(day_number("20201301"), None);
    }
}
