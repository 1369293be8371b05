//! What a DICOMweb origin whose data is passed on as it comes is asked directly rather than
//! derived from its whole instances: the metadata of a study, a series or an instance (a
//! viewer's first request: kilobytes an instance where the instances are megabytes, across a
//! long link), and an instance's frames and rendered images (a frame of a multi-frame instance
//! rather than all of them). Only when nothing is to be done to the data here (the gateway
//! does not de-identify it), the retrieval cache does not hold the target already (then its
//! instances are at hand), and one site holds all of it; otherwise the resource is made from
//! the instances, as for every other site.

use std::sync::Arc;

use pacs_adapter::RetrieveTarget;

use crate::core::access::Access;
use crate::core::retrieve::cache::TargetKey;
use crate::core::retrieve::plan::{allowed_sites, locate_by_find, narrowed, remembered_plan, Part};
use crate::core::retrieve::{in_site_terms, sites_for, Retriever};
use crate::core::Error;
use crate::sites::dicomweb::{OriginMetadata, Relay, Relayed};
use crate::sites::SiteIndex;

/// The most metadata held from one origin's answer: some 6,000 instances of 10 KiB; a larger
/// answer is made from the instances instead.
const MAX_METADATA: usize = 64 << 20;

/// `named`'s metadata (named as the client sees it) as the origin holding it gives it, in its
/// terms (its BulkDataURIs are the caller's to rewrite); `None` when the metadata is to be made
/// from the instances.
pub(crate) async fn origin_metadata(
    retriever: &Arc<Retriever>,
    access: &Access,
    named: &RetrieveTarget,
) -> Result<Option<OriginMetadata>, Error> {
    let Some((piece, target, holder)) = origin_of(retriever, access, named).await? else { return Ok(None) };
    match retriever.sites[holder].origin_metadata(&piece.touched, &target, MAX_METADATA).await? {
        // Nothing there: the instances' path says 404, or finds where the target went.
        Some(answer) if answer.objects == 0 => Ok(None),
        answer => Ok(answer),
    }
}

/// One instance's frames or rendered image (`asked`) as the origin holding it answers; `None`
/// when it is to be made from the instance.
pub(crate) async fn origin_relay(
    retriever: &Arc<Retriever>,
    access: &Access,
    named: &RetrieveTarget,
    asked: &Relay,
) -> Result<Option<Relayed>, Error> {
    if named.series.is_none() || named.instances.len() != 1 {
        return Ok(None);
    }
    let Some((piece, target, holder)) = origin_of(retriever, access, named).await? else { return Ok(None) };
    Ok(retriever.sites[holder].relay(&piece.touched, &target, asked).await?)
}

/// The piece of the request, the target in its sites' terms and the DICOMweb site to ask,
/// when the origin is to be asked (see the module's documentation).
async fn origin_of(
    retriever: &Arc<Retriever>,
    access: &Access,
    named: &RetrieveTarget,
) -> Result<Option<(Access, RetrieveTarget, SiteIndex)>, Error> {
    if !sites_for(&retriever.sites, access)?.iter().any(|site| site.speaks_dicomweb()) {
        return Ok(None);
    }
    let (piece, target) = in_site_terms(&retriever.sites, access, named).await?;
    if piece.privacy().is_some() || target.instances.len() > 1 {
        return Ok(None);
    }
    let allowed = allowed_sites(retriever, &piece)?;
    let key = TargetKey::new(&piece.cache_scope, &target);
    if retriever.cache.holds(&key, |uid| Some(uid.clone())).await {
        return Ok(None);
    }
    let remembered = retriever
        .directory
        .study(&target.study)
        .and_then(|record| remembered_plan(retriever, &allowed, &record, &target));
    let plan = match remembered {
        Some(plan) => plan,
        None if allowed.len() == 1 => vec![Part { target: target.clone(), holders: allowed.clone() }],
        None => {
            // The whole study is located (and remembered, also when the request's sites are
            // not every site), so that a viewer's later requests of its series and instances,
            // a few hundred of them, each plan without asking the sites again.
            let study = RetrieveTarget::study(target.study.clone());
            let study_plan = locate_by_find(retriever, &piece.touched, &allowed, &study).await?;
            let Some(plan) = narrowed(&study_plan, &target) else { return Ok(None) };
            plan
        }
    };
    // Spread over sites, or over parts of the target: made from the instances.
    let [part] = plan.as_slice() else { return Ok(None) };
    match part.holders.first() {
        Some(&holder) if part.target == target && retriever.sites[holder].speaks_dicomweb() => {
            Ok(Some((piece, target, holder)))
        }
        _ => Ok(None),
    }
}
