//! `[[projects]]`: what a token may grant: sites, permissions, de-identification options and how
//! burned-in text is handled; ids unique and fit for URLs.

use super::problems::Problems;
use super::{raw, AccessCondition, AuthMode, BurnedIn, Permission, ProjectConfig, SiteConfig};

/// Every project, over the configured `sites`; with `deid` when `[deid]` is configured.
pub(super) fn projects(
    raw: Vec<raw::Project>,
    sites: &[SiteConfig],
    deid: bool,
    auth: &AuthMode,
    problems: &mut Problems,
) -> Vec<ProjectConfig> {
    let mut projects = Vec::new();
    for project in raw {
        let mut permissions = Vec::new();
        for permission in &project.permissions {
            match permission.as_str() {
                "search" => permissions.push(Permission::Search),
                "retrieve" => permissions.push(Permission::Retrieve),
                "store" => permissions.push(Permission::Store),
                other => problems.push(format!("projects {}: unknown permission {other:?}", project.id)),
            }
        }
        let mut project_sites = Vec::new();
        for site in &project.sites {
            match sites.iter().find(|s| s.id.as_str() == site) {
                Some(found) => project_sites.push(found.id.clone()),
                None => problems.push(format!("projects {}: no site {site:?} is configured", project.id)),
            }
        }
        if let Some(options) = &project.deid_options {
            if !deid {
                problems.push(format!("projects {}: deid_options needs a [deid] section", project.id));
            }
            if let Err(wrong) = dicomweb_deid::Options::parse(options) {
                problems.extend(wrong.into_iter().map(|p| format!("projects {}: deid_options: {p}", project.id)));
            }
        }
        if project.id.is_empty() || !project.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            problems
                .push(format!("projects {:?}: an id is letters, digits, '-' and '_' (it is part of URLs)", project.id));
        }
        if projects.iter().any(|p: &ProjectConfig| p.id == project.id) {
            problems.push(format!("projects {}: the id is used twice", project.id));
        }
        let access = project
            .access
            .as_deref()
            .map(|text| {
                problems
                    .take(AccessCondition::parse(text).map_err(|e| format!("projects {}: access {e}", project.id)))
                    .unwrap_or(AccessCondition::Download)
            })
            .unwrap_or(AccessCondition::Download);
        if access == AccessCondition::RemoteProcessing && project.service_clients.is_empty() {
            problems.push(format!(
                "projects {}: access = \"remote-processing\" needs service_clients (the services that may have the data)",
                project.id
            ));
        }
        let burned_in = project.burned_in.as_deref().and_then(|text| {
            if !deid {
                problems.push(format!("projects {}: burned_in needs a [deid] section", project.id));
            }
            problems.take(BurnedIn::parse(text).map_err(|e| format!("projects {}: burned_in {e}", project.id)))
        });
        projects.push(ProjectConfig {
            id: project.id,
            sites: project_sites,
            permissions,
            deid_options: project.deid_options,
            show_sites: project.show_sites,
            burned_in,
            access,
            service_clients: project.service_clients,
        });
    }
    match (auth, projects.is_empty()) {
        (AuthMode::Jwt(_), true) => {
            problems.push("auth.mode = \"jwt\" needs at least one [[projects]]: tokens grant projects")
        }
        (AuthMode::None, false) => problems.push(
            "[[projects]] need auth.mode = \"jwt\": without authentication there is one implicit project over every site",
        ),
        _ => {}
    }
    projects
}
