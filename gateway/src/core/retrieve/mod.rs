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
    /// Sites that said, before the first instance, that they sent only part of what was asked
    /// (a DICOMweb origin's 206, or its Warning): the response says so, and is never cached as
    /// whole. One that says so later ends the retrieval with an error.
    pub(crate) partly: Vec<String>,
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

/// Which piece of a request a client's UID names, in a gateway that de-identifies one site and
/// passes another on (no site is reached: both are closed ports on loopback).
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dicomweb_model::StudyInstanceUid;
    use pacs_adapter::RetrieveTarget;

    use crate::config::Config;
    use crate::core::access::{Access, Handling};
    use crate::core::Error;
    use crate::sites::touched::Touched;
    use crate::state::Gateway;

    async fn mixed_gateway() -> Arc<Gateway> {
        let dir = std::env::temp_dir().join(format!("mixed-test-{}", std::process::id()));
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/dicom-web\"\n\
             [dimse]\nae_title = \"MIXEDGW\"\nlisten = \"127.0.0.1:0\"\n\
             [[sites]]\nid = \"pacs\"\nae_title = \"NOBODY\"\naddress = \"127.0.0.1:9\"\nretrieve = \"c-get\"\nstore = true\n\
             [[sites]]\nid = \"edge\"\nprotocol = \"dicomweb\"\nurl = \"http://127.0.0.1:9/dicom-web\"\ndeidentified = true\n\
             [deid]\nprofile = \"basic\"\nkey_file = \"{0}/deid.key\"\nstate_dir = \"{0}/state\"\n\
             [auth]\nmode = \"none\"\n",
            dir.display()
        );
        Gateway::start(Config::parse(&text).expect("valid configuration")).await.expect("the gateway starts")
    }

    fn access(gw: &Gateway) -> Access {
        Access::new(gw.projects[0].clone(), None, String::new(), Arc::new(Touched::default()), None)
    }

    #[tokio::test]
    async fn a_pseudonym_names_the_sites_it_de_identifies_and_any_other_uid_those_passed_on() {
        let gw = mixed_gateway().await;
        let access = access(&gw);
        let pieces = access.pieces(&gw.sites).expect("pieces");
        let handlings: Vec<Handling> = pieces.iter().map(|p| p.handling).collect();
        assert_eq!(handlings, [Handling::Deidentifying, Handling::PassingOn]);
        assert!(pieces[0].privacy().is_some() && pieces[1].privacy().is_none());
        assert_ne!(pieces[0].cache_scope, pieces[1].cache_scope, "cached apart");
        let ids = |piece: &Access| {
            super::sites_for(&gw.sites, piece).expect("sites").iter().map(|s| s.id().to_string()).collect::<Vec<_>>()
        };
        assert_eq!((ids(&pieces[0]), ids(&pieces[1])), (vec!["pacs".to_owned()], vec!["edge".to_owned()]));

        // A study of the PACS, handed out under its pseudonym: back to the PACS's UID.
        let at_pacs = RetrieveTarget::study(StudyInstanceUid::new("1.2.3.4").expect("uid"));
        let privacy = pieces[0].privacy().expect("de-identifying");
        let named = privacy.client_target(&at_pacs).await.expect("pseudonym");
        let (piece, target) = super::in_site_terms(&gw.sites, &access, &named).await.expect("resolved");
        assert_eq!((piece.handling, target), (Handling::Deidentifying, at_pacs));
        // Any other UID is the edge's own, passed on as it is.
        let at_edge = RetrieveTarget::study(StudyInstanceUid::new("2.25.99").expect("uid"));
        let (piece, target) = super::in_site_terms(&gw.sites, &access, &at_edge).await.expect("resolved");
        assert_eq!((piece.handling, target), (Handling::PassingOn, at_edge.clone()));
        // A store goes to its one site as that site's kind says.
        assert_eq!(access.for_site(&gw.sites[0]).handling, Handling::Deidentifying);
        assert_eq!(access.for_site(&gw.sites[1]).handling, Handling::PassingOn);
        // Addressed to the PACS alone, an unknown UID names nothing there.
        let at_pacs_only = Access { site: Some("pacs".into()), ..access.clone() };
        assert_eq!(at_pacs_only.pieces(&gw.sites).expect("pieces").len(), 1);
        assert!(matches!(super::in_site_terms(&gw.sites, &at_pacs_only, &at_edge).await, Err(Error::NotFound(_))));
    }
}
