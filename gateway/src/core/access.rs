//! What a request may reach: the projects of the federation (each a set of sites, the
//! permissions it grants and its own pseudonyms) and, per request, the [`Access`] that
//! authentication and authorization settled on before the handler runs.

use std::sync::Arc;

use crate::config::{AccessCondition, Permission};
use crate::core::privacy::deidentify::Privacy;
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::{Site, SiteIndex};

/// A project as the gateway runs it.
#[derive(Debug)]
pub(crate) struct Project {
    pub(crate) id: String,
    /// The project's sites, in configuration order.
    pub(crate) sites: Vec<SiteIndex>,
    pub(crate) permissions: Vec<Permission>,
    /// The project's de-identification (its keys and options), when `[deid]` is configured.
    pub(crate) privacy: Option<Privacy>,
    /// What the cache keys this project's entries by: the project and everything that shapes
    /// what it is answered (its sites, the de-identification's options, keys and revision), so
    /// that nothing made under another configuration is served (docs/CACHE.md).
    pub(crate) cache_scope: String,
    /// Whether its search results name the sites that hold them ((0009,1010)).
    pub(crate) show_sites: bool,
    /// Whether one of its sites is sent the caller's own credentials (a DICOMweb site with
    /// `auth = "forward"`): then what that site answers depends on the caller, not only on the
    /// project, and is cached per caller (docs/TWO-TIER.md).
    pub(crate) forwards_credentials: bool,
    /// What its callers may have of the data (EUCAIM's access conditions).
    pub(crate) access: AccessCondition,
    /// Under `remote-processing`, the callers (token subject or client) that may have it.
    pub(crate) service_clients: Vec<String>,
}

impl Project {
    pub(crate) fn grants(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// Why this project's access condition refuses a caller (`subject`, `client`) a resource
    /// (`takes_away`: instances or bulk data, whole); `None` when it does not.
    pub(crate) fn refuses(&self, subject: &str, client: Option<&str>, takes_away: bool) -> Option<String> {
        match self.access {
            AccessCondition::Download => None,
            AccessCondition::InSitu if takes_away => Some(format!(
                "project {} is viewed in situ: its instances and bulk data are not downloaded (metadata, frames, \
                 rendered images and thumbnails are)",
                self.id
            )),
            AccessCondition::InSitu => None,
            AccessCondition::RemoteProcessing => {
                let service = self.service_clients.iter().any(|s| s == subject || Some(s.as_str()) == client);
                (!service).then(|| {
                    format!("project {} is for remote processing: only its service clients have its data", self.id)
                })
            }
        }
    }
}

/// How a request was addressed before routing: `{base}/projects/{id}/...` and
/// `{base}/sites/{id}/...` (in that order when both) name the same resources, in one project
/// or at one site.
#[derive(Debug, Clone, Default)]
pub(crate) struct Addressed {
    pub(crate) project: Option<String>,
    pub(crate) site: Option<String>,
}

impl Addressed {
    /// The path prefix (after `base_path`) that addresses the same project and site.
    pub(crate) fn prefix(&self) -> String {
        let mut prefix = String::new();
        if let Some(project) = &self.project {
            prefix.push_str("/projects/");
            prefix.push_str(project);
        }
        if let Some(site) = &self.site {
            prefix.push_str("/sites/");
            prefix.push_str(site);
        }
        prefix
    }
}

/// Which of the request's sites a piece of its work is for. A gateway with `[deid]` de-identifies
/// what its sites send, but for sites that de-identify their data themselves (`deidentified =
/// true`, typically edge gateways): their data, pseudonyms included, is passed on as it comes
/// (docs/TWO-TIER.md). A request over both kinds of site is served as two, one per handling, and
/// the two answers joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handling {
    /// Every site of the request, each as the gateway's configuration says (a gateway without
    /// `[deid]`, or a request whose sites are all of one kind).
    Every,
    /// Only the sites whose data the gateway de-identifies.
    Deidentifying,
    /// Only the sites whose data is de-identified already, passed on as it comes.
    PassingOn,
}

/// What one request may reach, set by authorization.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    pub(crate) project: Arc<Project>,
    /// The one site the request addressed under `/sites/{id}`, if any.
    pub(crate) site: Option<String>,
    /// The prefix of URLs written into responses (RetrieveURL, BulkDataURI): `public_url` and
    /// the project and site the request was addressed under, so that they resolve alike.
    pub(crate) base_url: String,
    /// What the request caused at the sites (for its log and audit line), and the caller's
    /// credentials for sites that forward them.
    pub(crate) touched: Arc<Touched>,
    /// What the caches key this request's entries by: the project's scope, and the caller's
    /// credentials' digest when the project forwards them ([`Project::forwards_credentials`]).
    pub(crate) cache_scope: String,
    /// Which of its sites this piece of the request is for.
    pub(crate) handling: Handling,
}

impl Access {
    /// The request's access: its cache scope the project's, per caller when the project
    /// forwards the caller's credentials (`authorization`, the request's header) to a site,
    /// which are then carried to the sites in `touched`.
    pub(crate) fn new(
        project: Arc<Project>,
        site: Option<String>,
        base_url: String,
        touched: Arc<Touched>,
        authorization: Option<&str>,
    ) -> Access {
        let mut cache_scope = project.cache_scope.clone();
        if project.forwards_credentials {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(authorization.unwrap_or("").as_bytes());
            cache_scope.push_str(" caller ");
            cache_scope.extend(digest.iter().take(16).map(|b| format!("{b:02x}")));
            if let Some(authorization) = authorization {
                touched.set_authorization(authorization);
            }
        }
        Access { project, site, base_url, touched, cache_scope, handling: Handling::Every }
    }

    /// The project's de-identification, when the gateway de-identifies what this piece of the
    /// request reaches.
    pub(crate) fn privacy(&self) -> Option<&Privacy> {
        match self.handling {
            Handling::PassingOn => None,
            Handling::Every | Handling::Deidentifying => self.project.privacy.as_ref(),
        }
    }

    /// The indexes of the sites the request may use: the project's, or the one addressed; of
    /// those, the ones its handling is for. A site outside the project is as unknown as one
    /// that does not exist.
    pub(crate) fn site_indexes(&self, sites: &[Site]) -> Result<Vec<SiteIndex>, Error> {
        let indexes = match &self.site {
            None => self.project.sites.clone(),
            Some(id) => self
                .project
                .sites
                .iter()
                .copied()
                .find(|&index| sites[index].id().as_str() == id)
                .map(|index| vec![index])
                .ok_or_else(|| Error::NotFound(format!("no site {id}")))?,
        };
        Ok(indexes.into_iter().filter(|&index| self.is_for(&sites[index])).collect())
    }

    /// Whether this piece of the request is for `site`.
    fn is_for(&self, site: &Site) -> bool {
        match self.handling {
            Handling::Every => true,
            Handling::Deidentifying => !site.deidentified(),
            Handling::PassingOn => site.deidentified(),
        }
    }

    /// The request as pieces of one handling each: itself, unless the gateway de-identifies
    /// and the request's sites include sites de-identified already; then one piece for the
    /// sites the gateway de-identifies and one for those passed on as they come, in that
    /// order, the ones without sites left out.
    pub(crate) fn pieces(&self, sites: &[Site]) -> Result<Vec<Access>, Error> {
        let indexes = self.site_indexes(sites)?;
        if self.handling != Handling::Every
            || self.project.privacy.is_none()
            || !indexes.iter().any(|&i| sites[i].deidentified())
        {
            return Ok(vec![self.clone()]);
        }
        let passing_on = self.with(Handling::PassingOn);
        let deidentifying = self.with(Handling::Deidentifying);
        let has_sites = |piece: &Access| indexes.iter().any(|&i| piece.is_for(&sites[i]));
        Ok([deidentifying, passing_on].into_iter().filter(has_sites).collect())
    }

    /// The piece of the request for `site` alone (a store's one site).
    pub(crate) fn for_site(&self, site: &Site) -> Access {
        match (self.handling, self.project.privacy.is_some(), site.deidentified()) {
            (Handling::Every, true, true) => self.with(Handling::PassingOn),
            (Handling::Every, true, false) => self.with(Handling::Deidentifying),
            _ => self.clone(),
        }
    }

    /// This request with another handling; what is passed on as it comes is cached apart from
    /// what the project's de-identification made.
    fn with(&self, handling: Handling) -> Access {
        let mut piece = self.clone();
        piece.handling = handling;
        if handling == Handling::PassingOn {
            piece.cache_scope.push_str(" passed on");
        }
        piece
    }
}
