//! Retrieval: the plan (where a target's instances are) and its stream (`locate`), the
//! retrieval cache with its flights and disk tier, the cache of decoded instances, the
//! instance a thumbnail shows (`representative`), and what a DICOMweb origin passed on is
//! asked directly (`origin`).

pub(crate) mod cache;
pub(crate) mod disk_cache;
pub(crate) mod flight;
mod locate;
mod origin;
mod parts;
mod plan;
mod representative;

pub(crate) use locate::{known_stored_syntaxes, retrieve};
pub(crate) use origin::{origin_metadata, origin_relay};
pub(crate) use representative::representative;
pub(crate) mod transcoded_cache;

use std::sync::Arc;

use futures::Stream;
use pacs_adapter::{RetrieveTarget, RetrievedInstance};

use crate::config::DataSetLimitsConfig;
use crate::core::access::Access;
use crate::core::directory::Directory;
use crate::core::Error;
use crate::sites::Site;

/// What a retrieval reaches, shared by every request: the sites, the directory of where studies
/// live, the retrieval cache, and the bounds on what a site may send.
#[derive(Debug)]
pub(crate) struct Retriever {
    /// Every configured site, in configuration order.
    pub(crate) sites: Arc<Vec<Site>>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) cache: Arc<cache::RetrievalCache>,
    pub(crate) limits: DataSetLimitsConfig,
}

/// The sites a request may use, of `sites`: its project's, or the one it addressed under
/// `/sites/{id}` (404 when that is not one of the project's).
pub(crate) fn sites_for<'a>(sites: &'a [Site], access: &Access) -> Result<Vec<&'a Site>, crate::core::Error> {
    Ok(access.site_indexes(sites)?.into_iter().map(|i| &sites[i]).collect())
}

/// The piece of the request (crate::core::access::Handling) a target named as the client sees
/// it is for, and the target in that piece's sites' terms. De-identifying, a pseudonym the
/// gateway handed out names data of the sites it de-identifies; any other UID names data of the
/// sites passed on as they come (the gateway hands out no pseudonyms for theirs). 404 when the
/// target names nothing either could hold.
pub(crate) async fn in_site_terms(
    sites: &[Site],
    access: &Access,
    target: &RetrieveTarget,
) -> Result<(Access, RetrieveTarget), Error> {
    let pieces = access.pieces(sites)?;
    let last = pieces.len().saturating_sub(1);
    for (i, piece) in pieces.into_iter().enumerate() {
        let Some(privacy) = piece.privacy() else { return Ok((piece, target.clone())) };
        match privacy.site_target(target).await {
            Ok(in_site_terms) => return Ok((piece, in_site_terms)),
            Err(Error::NotFound(_)) if i < last => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::NotFound("no such study, series or instance".into()))
}

/// Instances of a retrieval, from one or several sites.
pub(crate) type Instances = std::pin::Pin<Box<dyn Stream<Item = Result<RetrievedInstance, Error>> + Send>>;

/// A retrieval under way: its first instance (already received, so that errors are a status
/// code), the rest, and how many instances were withheld before the first (their pixels may
/// show identity; later ones are withheld too, and logged).
pub(crate) struct Retrieval {
    pub(crate) first: RetrievedInstance,
    pub(crate) rest: Instances,
    pub(crate) withheld: usize,
    /// Why they were withheld: each reason once (no patient data in them).
    pub(crate) withheld_reasons: Vec<String>,
    /// An entity tag of what the retrieval yields, when that is known before it starts
    /// (served from the cache).
    pub(crate) etag: Option<String>,
}

impl std::fmt::Debug for Retrieval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrieval")
            .field("first", &self.first.sop_instance_uid)
            .field("withheld", &self.withheld)
            .finish()
    }
}
