//! The gate every DICOMweb request passes before its handler: who is asking (a bearer token,
//! or nobody without authentication), which project the request acts in, whether that project
//! grants what the route does (search, retrieve, store), and whether the caller is within its
//! limits. What passes is the request's [`Access`]; what does not is answered here:
//!
//! - no or bad token: 401 with `WWW-Authenticate: Bearer` (RFC 6750), no detail;
//! - a valid token that grants no project of this gateway: 403 (`insufficient_scope`);
//! - a project the token does not grant, or a site outside the project: 404, as if absent;
//! - a token granting several projects on a path that names none: 400 naming the form to use;
//! - a permission the project lacks: 403;
//! - what the project's access condition withholds (EUCAIM's: in situ, no instance or bulk
//!   data taken away; remote processing, nothing but to its service clients): 403;
//! - a caller over its limits: 429 with Retry-After.
//!
//! A caller's projects are those its token grants (`projects_claim`, read through
//! `project_pattern`) and those `[[grants]]` give its subject until their time.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Permission;
use crate::core::access::{Access, Addressed, Project};
use crate::core::Error;
use crate::http::auth::Refused;
use crate::http::ledger::Ledger;
use crate::http::limits::Shed;
use crate::state::Gateway;

/// The subject of every request when authentication is off.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// What a route does, by method and route template.
fn permission_of(method: &Method, route: &str) -> Permission {
    if method == Method::POST {
        Permission::Store
    } else if route.ends_with("/studies") || route.ends_with("/series") || route.ends_with("/instances") {
        Permission::Search
    } else {
        Permission::Retrieve
    }
}

fn unauthorized(refused: &Refused) -> Response {
    let challenge = match refused {
        Refused::Missing => "Bearer realm=\"dicomweb-gateway\"",
        Refused::Invalid(_) => "Bearer realm=\"dicomweb-gateway\", error=\"invalid_token\"",
    };
    let mut response = Error::Unauthorized("a valid bearer token is required".into()).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn insufficient_scope() -> Response {
    let mut response = Error::Forbidden("the token grants no project of this gateway".into()).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"dicomweb-gateway\", error=\"insufficient_scope\""),
    );
    response
}

fn shed(why: Shed) -> Response {
    let (text, retry_after) = match why {
        Shed::TooFast(wait) => ("too many requests per second from this caller", wait),
        Shed::TooMany => ("too many requests in flight from this caller", std::time::Duration::from_secs(1)),
    };
    crate::http::error::too_many_requests(text, retry_after)
}

/// The projects `granted` names, in configuration order.
fn granted_projects<'a>(gw: &'a Gateway, granted: &[String]) -> Vec<&'a Arc<Project>> {
    gw.projects.iter().filter(|p| granted.iter().any(|g| *g == p.id)).collect()
}

/// The projects a token's identity is given by `[[grants]]` now (its subject, of its issuer
/// when the grant names one, before the grant's time).
fn projects_granted_until(gw: &Gateway, identity: &crate::http::auth::Identity) -> Vec<String> {
    let now = std::time::SystemTime::now();
    gw.config
        .grants
        .iter()
        .filter(|g| g.subject == identity.subject && g.issuer.as_ref().is_none_or(|i| *i == identity.issuer))
        .filter(|g| g.until > now)
        .map(|g| g.project.clone())
        .collect()
}

/// Whether a route hands out instances or bulk data whole (what in-situ access withholds).
fn takes_away(method: &Method, route: &str) -> bool {
    method == Method::GET
        && (route.ends_with("/studies/{study}")
            || route.ends_with("/series/{series}")
            || route.ends_with("/instances/{instance}")
            || route.ends_with("/bulkdata/{tag}"))
}

/// Who asks.
#[derive(Debug)]
pub(crate) struct Caller<'a> {
    pub(crate) subject: String,
    /// The client its token was issued to, when it says.
    pub(crate) client: Option<String>,
    /// The projects of this gateway the caller is granted.
    pub(crate) granted: Vec<&'a Arc<Project>>,
    /// An administrator (`auth.admin_role`; everyone without authentication, which listens on
    /// loopback only): may see the sites' addresses, `/metrics` and `/admin/cache`.
    pub(crate) admin: bool,
}

/// Who asks, from the request's bearer token (without authentication: `anonymous`, every
/// project, an administrator); the 401 to answer when the token is missing or not valid.
pub(crate) async fn caller<'a>(
    gw: &'a Gateway,
    headers: &axum::http::HeaderMap,
    route: &str,
) -> Result<Caller<'a>, Response> {
    let Some(authenticator) = &gw.authenticator else {
        return Ok(Caller {
            subject: ANONYMOUS.to_owned(),
            client: None,
            granted: gw.projects.iter().collect(),
            admin: true,
        });
    };
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match authenticator.authenticate(authorization).await {
        Ok(identity) => {
            let mut projects = identity.projects.clone();
            projects.extend(projects_granted_until(gw, &identity));
            Ok(Caller {
                granted: granted_projects(gw, &projects),
                subject: identity.subject,
                client: identity.client,
                admin: identity.admin,
            })
        }
        Err(refused) => {
            if let Refused::Invalid(why) = &refused {
                tracing::info!(route, reason = why.as_str(), "bearer token refused");
            }
            Err(unauthorized(&refused))
        }
    }
}

pub(crate) async fn authorize(State(gw): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let addressed = request.extensions().get::<Addressed>().cloned().unwrap_or_default();
    let ledger = request.extensions().get::<Arc<Ledger>>().cloned();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let needed = permission_of(request.method(), &route);

    // Who asks.
    let Caller { subject, client, granted, .. } = match caller(&gw, request.headers(), &route).await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    if let Some(ledger) = &ledger {
        ledger.identify(&subject, None);
    }
    // In which project.
    let project = match (&addressed.project, granted.as_slice()) {
        (_, []) => return insufficient_scope(),
        (Some(named), granted) => match granted.iter().find(|p| p.id == *named) {
            Some(project) => (*project).clone(),
            None => return Error::NotFound(format!("no project {named}")).into_response(),
        },
        (None, [only]) => (*only).clone(),
        (None, several) => {
            let ids: Vec<&str> = several.iter().map(|p| p.id.as_str()).collect();
            return Error::BadRequest(format!(
                "this token grants several projects ({}): address one as {}/projects/{{id}}/...",
                ids.join(", "),
                gw.config.server.base_path
            ))
            .into_response();
        }
    };
    if let Some(ledger) = &ledger {
        ledger.identify(&subject, Some(&project.id));
    }
    // May it do this.
    if !project.grants(needed) {
        return Error::Forbidden(format!("project {} does not grant {needed}", project.id)).into_response();
    }
    if let Some(why) = project.refuses(&subject, client.as_deref(), takes_away(request.method(), &route)) {
        return Error::Forbidden(why).into_response();
    }
    if let Some(limits) = &gw.limits {
        match limits.admit(&subject) {
            Ok(slot) => {
                if let Some(ledger) = &ledger {
                    ledger.hold_until_done(Box::new(slot));
                }
            }
            Err(why) => return shed(why),
        }
    }
    let base_url = format!("{}{}", gw.config.server.public_url, addressed.prefix());
    let touched = ledger.as_ref().map(|l| l.touched()).unwrap_or_default();
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let access = Access::new(project, addressed.site, base_url, touched, authorization);
    // A site outside the project is refused here, before any handler (or a cache in front of
    // one) can answer for it.
    if let Err(refused) = gw.sites_for(&access) {
        return refused.into_response();
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_permission_of_what_they_do() {
        assert_eq!(permission_of(&Method::GET, "/dicom-web/studies"), Permission::Search);
        assert_eq!(permission_of(&Method::GET, "/dicom-web/studies/{study}/series"), Permission::Search);
        assert_eq!(
            permission_of(&Method::GET, "/dicom-web/studies/{study}/series/{series}/instances"),
            Permission::Search
        );
        assert_eq!(permission_of(&Method::GET, "/dicom-web/studies/{study}"), Permission::Retrieve);
        assert_eq!(permission_of(&Method::GET, "/dicom-web/studies/{study}/series/{series}"), Permission::Retrieve);
        assert_eq!(permission_of(&Method::GET, "/dicom-web/studies/{study}/metadata"), Permission::Retrieve);
        assert_eq!(permission_of(&Method::POST, "/dicom-web/studies"), Permission::Store);
        assert_eq!(permission_of(&Method::POST, "/dicom-web/studies/{study}"), Permission::Store);
    }

    #[test]
    fn instances_and_bulk_data_are_what_is_taken_away() {
        let base = "/dicom-web/studies/{study}";
        for taken in [
            base.to_owned(),
            format!("{base}/series/{{series}}"),
            format!("{base}/series/{{series}}/instances/{{instance}}"),
            format!("{base}/series/{{series}}/instances/{{instance}}/bulkdata/{{tag}}"),
        ] {
            assert!(takes_away(&Method::GET, &taken), "{taken}");
        }
        for viewed in [
            format!("{base}/metadata"),
            format!("{base}/series/{{series}}/instances/{{instance}}/frames/{{frames}}"),
            format!("{base}/rendered"),
            format!("{base}/thumbnail"),
            "/dicom-web/studies".to_owned(),
        ] {
            assert!(!takes_away(&Method::GET, &viewed), "{viewed}");
        }
        assert!(!takes_away(&Method::POST, base), "a store brings data in");
    }
}
