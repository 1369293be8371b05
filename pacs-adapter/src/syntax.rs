//! SOP classes, transfer syntaxes and the presentation contexts proposed for each kind of
//! association, planned so that instances pass through in the transfer syntax the PACS holds.

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// Study Root Query/Retrieve Information Model - FIND / MOVE / GET.
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";

pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// Transfer syntaxes an instance may arrive in and leave in untouched, most common first.
/// Uncompressed, deflate, the JPEG family, JPEG-LS, JPEG 2000, RLE and HTJ2K.
pub const PASS_THROUGH_TRANSFER_SYNTAXES: &[&str] = &[
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    "1.2.840.10008.1.2.4.70",  // JPEG Lossless, First-Order Prediction
    "1.2.840.10008.1.2.4.50",  // JPEG Baseline
    "1.2.840.10008.1.2.4.51",  // JPEG Extended
    "1.2.840.10008.1.2.4.57",  // JPEG Lossless
    "1.2.840.10008.1.2.4.90",  // JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  // JPEG 2000
    "1.2.840.10008.1.2.4.80",  // JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  // JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.5",     // RLE Lossless
    "1.2.840.10008.1.2.4.201", // HTJ2K Lossless
    "1.2.840.10008.1.2.4.202", // HTJ2K with RPCL Options Lossless
    "1.2.840.10008.1.2.4.203", // HTJ2K
    "1.2.840.10008.1.2.1.99",  // Deflated Explicit VR Little Endian
    EXPLICIT_VR_BE,            // Explicit VR Big Endian (retired, still found in archives)
];

/// Storage SOP classes proposed when the classes of a retrieval are not known in advance,
/// most common in cancer imaging first.
pub const COMMON_STORAGE_SOP_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.2",      // CT Image
    "1.2.840.10008.5.1.4.1.1.4",      // MR Image
    "1.2.840.10008.5.1.4.1.1.128",    // PET Image
    "1.2.840.10008.5.1.4.1.1.20",     // NM Image
    "1.2.840.10008.5.1.4.1.1.1",      // CR Image
    "1.2.840.10008.5.1.4.1.1.1.1",    // Digital X-Ray for presentation
    "1.2.840.10008.5.1.4.1.1.1.2",    // Digital Mammography for presentation
    "1.2.840.10008.5.1.4.1.1.7",      // Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.2",    // Multi-frame Grayscale Byte SC
    "1.2.840.10008.5.1.4.1.1.7.3",    // Multi-frame Grayscale Word SC
    "1.2.840.10008.5.1.4.1.1.7.4",    // Multi-frame True Color SC
    "1.2.840.10008.5.1.4.1.1.6.1",    // US Image
    "1.2.840.10008.5.1.4.1.1.3.1",    // US Multi-frame Image
    "1.2.840.10008.5.1.4.1.1.2.1",    // Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.1",    // Enhanced MR
    "1.2.840.10008.5.1.4.1.1.130",    // Enhanced PET
    "1.2.840.10008.5.1.4.1.1.12.1",   // X-Ray Angiographic
    "1.2.840.10008.5.1.4.1.1.481.1",  // RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  // RT Dose
    "1.2.840.10008.5.1.4.1.1.481.3",  // RT Structure Set
    "1.2.840.10008.5.1.4.1.1.481.5",  // RT Plan
    "1.2.840.10008.5.1.4.1.1.66.4",   // Segmentation
    "1.2.840.10008.5.1.4.1.1.66",     // Raw Data
    "1.2.840.10008.5.1.4.1.1.66.1",   // Spatial Registration
    "1.2.840.10008.5.1.4.1.1.88.11",  // Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  // Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  // Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.59",  // Key Object Selection
    "1.2.840.10008.5.1.4.1.1.11.1",   // Grayscale Softcopy Presentation State
    "1.2.840.10008.5.1.4.1.1.104.1",  // Encapsulated PDF
    "1.2.840.10008.5.1.4.1.1.9.1.1",  // 12-lead ECG
    "1.2.840.10008.5.1.4.1.1.9.1.2",  // General ECG
    "1.2.840.10008.5.1.4.1.1.77.1.6", // VL Whole Slide Microscopy
    "1.2.840.10008.5.1.4.1.1.77.1.4", // VL Photographic
    "1.2.840.10008.5.1.4.1.1.2.2",    // Legacy Converted Enhanced CT
    "1.2.840.10008.5.1.4.1.1.4.4",    // Legacy Converted Enhanced MR
];

/// An association may carry at most 128 presentation contexts (odd ids 1..=255).
pub const MAX_PRESENTATION_CONTEXTS: usize = 128;

/// One proposed presentation context: an abstract syntax and the transfer syntaxes offered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposedContext {
    pub abstract_syntax: String,
    pub transfer_syntaxes: Vec<String>,
    /// Whether we ask for the SCP role (C-STORE sub-operations of C-GET come to us).
    pub scp_role: bool,
}

impl ProposedContext {
    fn new(abstract_syntax: &str, transfer_syntaxes: &[&str], scp_role: bool) -> Self {
        ProposedContext {
            abstract_syntax: abstract_syntax.to_owned(),
            transfer_syntaxes: transfer_syntaxes.iter().map(|s| (*s).to_owned()).collect(),
            scp_role,
        }
    }
}

/// The presentation contexts of one kind of association. Two equal plans give interchangeable
/// associations, which is what the pool keys on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContextPlan {
    pub contexts: Vec<ProposedContext>,
}

impl ContextPlan {
    /// C-ECHO, C-FIND and C-MOVE (the C-MOVE sub-operations arrive on a separate association).
    pub fn query() -> Self {
        let uncompressed = [EXPLICIT_VR_LE, IMPLICIT_VR_LE];
        ContextPlan {
            contexts: [VERIFICATION, STUDY_ROOT_FIND, STUDY_ROOT_MOVE]
                .iter()
                .map(|a| ProposedContext::new(a, &uncompressed, false))
                .collect(),
        }
    }

    /// C-GET of instances of the given SOP classes. A SCP can send an instance untouched only
    /// on a context accepted with that instance's transfer syntax, and the acceptor picks one
    /// transfer syntax per context, so each known class gets one context per pass-through
    /// transfer syntax. Remaining room goes to the common storage classes with one context
    /// each offering every pass-through syntax, so an instance of an unexpected class still
    /// arrives, possibly transcoded by the PACS.
    pub fn retrieve(known_sop_classes: &[String]) -> Self {
        let mut contexts = vec![ProposedContext::new(STUDY_ROOT_GET, &[EXPLICIT_VR_LE, IMPLICIT_VR_LE], false)];
        let mut known: Vec<&str> = known_sop_classes.iter().map(String::as_str).collect();
        known.sort_unstable();
        known.dedup();
        let per_class = PASS_THROUGH_TRANSFER_SYNTAXES.len();
        let max_exact = (MAX_PRESENTATION_CONTEXTS - 1) / per_class;
        for class in known.iter().take(max_exact) {
            for ts in PASS_THROUGH_TRANSFER_SYNTAXES {
                contexts.push(ProposedContext::new(class, &[ts], true));
            }
        }
        for class in COMMON_STORAGE_SOP_CLASSES {
            if contexts.len() >= MAX_PRESENTATION_CONTEXTS {
                break;
            }
            if !known.iter().take(max_exact).any(|k| k == class) {
                contexts.push(ProposedContext::new(class, PASS_THROUGH_TRANSFER_SYNTAXES, true));
            }
        }
        ContextPlan { contexts }
    }

    /// C-STORE of instances of one SOP class in one transfer syntax, sent untouched.
    pub fn store(sop_class_uid: &str, transfer_syntax_uid: &str) -> Self {
        ContextPlan { contexts: vec![ProposedContext::new(sop_class_uid, &[transfer_syntax_uid], false)] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieve_plan_stays_within_the_context_limit() {
        for known in [0usize, 1, 3, 9, 40] {
            let classes: Vec<String> = (0..known).map(|i| format!("1.2.3.{i}")).collect();
            let plan = ContextPlan::retrieve(&classes);
            assert!(plan.contexts.len() <= MAX_PRESENTATION_CONTEXTS, "{known}: {}", plan.contexts.len());
            assert_eq!(plan.contexts[0].abstract_syntax, STUDY_ROOT_GET);
        }
    }

    #[test]
    fn known_classes_get_one_context_per_transfer_syntax() {
        let ct = "1.2.840.10008.5.1.4.1.1.2".to_owned();
        let plan = ContextPlan::retrieve(std::slice::from_ref(&ct));
        let ct_contexts: Vec<_> = plan.contexts.iter().filter(|c| c.abstract_syntax == ct).collect();
        assert_eq!(ct_contexts.len(), PASS_THROUGH_TRANSFER_SYNTAXES.len());
        assert!(ct_contexts.iter().all(|c| c.transfer_syntaxes.len() == 1 && c.scp_role));
        // The same classes in another order give the same plan, so pooled associations match.
        let a = ContextPlan::retrieve(&["1.2".into(), "1.3".into()]);
        let b = ContextPlan::retrieve(&["1.3".into(), "1.2".into(), "1.2".into()]);
        assert_eq!(a, b);
    }

    /// The UIDs of a marked table of docs/CONFORMANCE-STATEMENT.md, in order.
    fn statement_uids(block: &str) -> Vec<String> {
        let statement = include_str!("../../docs/CONFORMANCE-STATEMENT.md");
        let start = statement.find(&format!("<!-- {block} -->")).expect("the block's start marker");
        let end = statement.find(&format!("<!-- /{block} -->")).expect("the block's end marker");
        statement[start..end]
            .lines()
            .filter_map(|line| {
                line.split('|')
                    .map(str::trim)
                    .find(|cell| cell.starts_with("1.2.840.") && cell.chars().all(|c| c.is_ascii_digit() || c == '.'))
                    .map(str::to_owned)
            })
            .collect()
    }

    #[test]
    fn the_conformance_statement_lists_exactly_what_is_proposed_and_accepted() {
        let listed = |uids: &[&str]| uids.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
        assert_eq!(statement_uids("transfer-syntaxes"), listed(PASS_THROUGH_TRANSFER_SYNTAXES));
        assert_eq!(statement_uids("common-storage-classes"), listed(COMMON_STORAGE_SOP_CLASSES));
        assert_eq!(
            statement_uids("scu-sop-classes"),
            listed(&[VERIFICATION, STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET])
        );
    }
}
