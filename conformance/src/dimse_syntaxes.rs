//! Which transfer syntaxes a PACS accepts, learnt from association negotiation alone (PS3.8
//! 9.3.2.2: the acceptor answers each proposed presentation context): for the storage
//! sub-operations of a C-GET (the gateway as Storage SCP, SCP/SCU role selection) and for
//! C-STORE into the PACS (STOW-RS through the gateway). No data set is sent.

use std::time::Duration;

use pacs_adapter::syntax::{
    ContextPlan, ProposedContext, IMPLICIT_VR_LE, PASS_THROUGH_TRANSFER_SYNTAXES, STUDY_ROOT_GET,
};
use pacs_adapter::{DimseAssociation, SiteEndpoint};

use crate::{Check, Outcome};

/// CT Image Storage: the class a federation for cancer imaging retrieves most.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

/// Short names of the transfer syntaxes the gateway passes through.
fn name_of(uid: &str) -> &str {
    match uid {
        "1.2.840.10008.1.2.1" => "Explicit VR LE",
        "1.2.840.10008.1.2" => "Implicit VR LE",
        "1.2.840.10008.1.2.4.70" => "JPEG Lossless SV1",
        "1.2.840.10008.1.2.4.50" => "JPEG Baseline",
        "1.2.840.10008.1.2.4.51" => "JPEG Extended",
        "1.2.840.10008.1.2.4.57" => "JPEG Lossless",
        "1.2.840.10008.1.2.4.90" => "JPEG 2000 Lossless",
        "1.2.840.10008.1.2.4.91" => "JPEG 2000",
        "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless",
        "1.2.840.10008.1.2.4.81" => "JPEG-LS Near-Lossless",
        "1.2.840.10008.1.2.5" => "RLE Lossless",
        "1.2.840.10008.1.2.1.99" => "Deflated Explicit VR LE",
        "1.2.840.10008.1.2.2" => "Explicit VR Big Endian",
        other => other,
    }
}

/// One presentation context per transfer syntax for `sop_class` (as Storage SCP when
/// `scp_role`), after `first` if any.
fn one_context_per_syntax(first: Option<ProposedContext>, sop_class: &str, scp_role: bool) -> ContextPlan {
    let per_syntax = PASS_THROUGH_TRANSFER_SYNTAXES.iter().map(|ts| ProposedContext {
        abstract_syntax: sop_class.to_owned(),
        transfer_syntaxes: vec![(*ts).to_owned()],
        scp_role,
    });
    ContextPlan { contexts: first.into_iter().chain(per_syntax).collect() }
}

/// The transfer syntaxes accepted for `sop_class` in `plan`, or why the association failed.
async fn accepted(
    site: &SiteEndpoint,
    plan: &ContextPlan,
    sop_class: &str,
    timeout: Duration,
) -> Result<Vec<&'static str>, String> {
    let association = DimseAssociation::establish(site, plan).await.map_err(|e| e.to_string())?;
    let syntaxes = PASS_THROUGH_TRANSFER_SYNTAXES
        .iter()
        .copied()
        .filter(|ts| association.accepted_context(sop_class, Some(ts)).is_some())
        .collect();
    association.release(timeout).await;
    Ok(syntaxes)
}

fn listed(syntaxes: &[&str]) -> String {
    syntaxes.iter().map(|ts| name_of(ts)).collect::<Vec<_>>().join(", ")
}

/// The two checks, for instances of `sop_class`.
pub async fn checks(site: &SiteEndpoint, sop_class: &str, timeout: Duration) -> Vec<Check> {
    let get = ProposedContext {
        abstract_syntax: STUDY_ROOT_GET.to_owned(),
        transfer_syntaxes: vec![PASS_THROUGH_TRANSFER_SYNTAXES[0].to_owned(), IMPLICIT_VR_LE.to_owned()],
        scp_role: false,
    };
    let retrieval = one_context_per_syntax(Some(get), sop_class, true);
    let name = format!("transfer syntaxes for C-GET sub-operations ({sop_class})");
    let retrieval_check = match accepted(site, &retrieval, sop_class, timeout).await {
        Ok(syntaxes) if syntaxes.is_empty() => Check::new(
            name,
            "PS3.4 C.4.3.1, PS3.7 D.3.3.4",
            Outcome::NotApplicable,
            "no storage context accepted with the SCP role: this PACS does not send by C-GET (use c-move)",
        ),
        Ok(syntaxes) => {
            Check::new(name, "PS3.4 C.4.3.1, PS3.7 D.3.3.4", Outcome::Pass, format!("accepted: {}", listed(&syntaxes)))
        }
        Err(e) => Check::new(
            name,
            "PS3.4 C.4.3.1, PS3.7 D.3.3.4",
            Outcome::NotApplicable,
            format!("association refused: {e}"),
        ),
    };
    // A Storage SCP must accept Implicit VR Little Endian, the default transfer syntax
    // (PS3.5 10.1).
    let store = one_context_per_syntax(None, sop_class, false);
    let name = format!("transfer syntaxes for C-STORE ({sop_class})");
    let store_check = match accepted(site, &store, sop_class, timeout).await {
        Ok(syntaxes) if syntaxes.contains(&IMPLICIT_VR_LE) => {
            Check::new(name, "PS3.4 B, PS3.5 10.1", Outcome::Pass, format!("accepted: {}", listed(&syntaxes)))
        }
        Ok(syntaxes) if syntaxes.is_empty() => {
            Check::new(name, "PS3.4 B", Outcome::NotApplicable, "the PACS takes no instances of this class from us")
        }
        Ok(syntaxes) => Check::new(
            name,
            "PS3.4 B, PS3.5 10.1",
            Outcome::Fail,
            format!("Implicit VR Little Endian, the default, refused; accepted: {}", listed(&syntaxes)),
        ),
        Err(e) => Check::new(name, "PS3.4 B", Outcome::NotApplicable, format!("association refused: {e}")),
    };
    vec![retrieval_check, store_check]
}
