//! The instance a series or study thumbnail shows (PS3.18 §9.5.1.2.2): the middle instance of
//! the series (of the first series of a study), as the first of the request's sites that lists
//! it says.

use std::sync::Arc;

use pacs_adapter::RetrieveTarget;

use crate::core::access::Access;
use crate::core::retrieve::{in_site_terms, sites_for, Retriever};
use crate::core::Error;

/// The representative instance of `named` (a study or series as the client names it), named
/// as the client names things (pseudonyms when de-identifying).
pub(crate) async fn representative(
    retriever: &Arc<Retriever>,
    access: &Access,
    named: RetrieveTarget,
) -> Result<RetrieveTarget, Error> {
    let (access, scope) = in_site_terms(&retriever.sites, access, &named).await?;
    let mut planned = Vec::new();
    for site in sites_for(&retriever.sites, &access)? {
        if let Ok(found) = site.list_instances(&access.touched, &scope).await {
            if !found.is_empty() {
                planned = found;
                break;
            }
        }
    }
    let first_series = planned.first().map(|p| p.series.clone());
    planned.retain(|p| Some(&p.series) == first_series.as_ref());
    let chosen = planned.get(planned.len() / 2).ok_or_else(|| Error::NotFound("no instance to show".into()))?;
    let at_site =
        RetrieveTarget::instances(scope.study.clone(), Some(chosen.series.clone()), vec![chosen.sop_instance.clone()]);
    match access.privacy() {
        Some(privacy) => privacy.client_target(&at_site).await,
        None => Ok(at_site),
    }
}
