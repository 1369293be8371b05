//! QIDO-RS answers reused for the same search in the same project for `cache.search_ttl`
//! (default 30 s; `0s` turns it off): a viewer's study list, asked again and again, costs one
//! fan-out. Only complete answers are kept (every site answered); a STOW-RS through the gateway
//! forgets every answer that may show the studies it stored into: all but those of searches
//! confined to another study (`/studies/{uid}/series`, `/studies/{uid}/instances`...). Bounded in
//! bytes (an eighth of `cache.memory`); an answer over 16 MiB goes out uncached.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use bytes::Bytes;
use dicomweb_model::StudyInstanceUid;

use crate::config::CacheConfig;
use crate::core::Error;

/// A search as the cache knows it: the project, the site addressed, the resource and the
/// query parameters in a normal order; and the study it is confined to, if its path names one
/// (in the sites' UIDs, as a STOW-RS knows them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SearchKey {
    project: String,
    site: Option<String>,
    /// The prefix of the URLs the answer writes (RetrieveURL): with or without
    /// `/projects/{id}` and `/sites/{id}`, the same search answers with other URLs.
    base_url: String,
    resource: String,
    query: Vec<(String, String)>,
    study: Option<StudyInstanceUid>,
}

impl SearchKey {
    pub(crate) fn new(
        project: &str,
        site: Option<&str>,
        base_url: &str,
        resource: String,
        raw_query: Option<&str>,
        study: Option<&StudyInstanceUid>,
    ) -> SearchKey {
        let mut query: Vec<(String, String)> = form_urlencoded::parse(raw_query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        query.sort();
        SearchKey {
            project: project.to_owned(),
            site: site.map(str::to_owned),
            base_url: base_url.to_owned(),
            resource,
            query,
            study: study.cloned(),
        }
    }
}

/// A response that is not the whole answer (a site did not answer): not kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Partial;

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

#[derive(Debug)]
pub(crate) struct SearchCache {
    answers: Option<moka::sync::Cache<SearchKey, std::sync::Arc<Answer>>>,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

/// Answers larger than this are not kept.
const LARGEST_KEPT: usize = 16 << 20;

impl SearchCache {
    pub(crate) fn new(config: &CacheConfig) -> SearchCache {
        let answers = (!config.search_ttl.is_zero() && config.memory_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity((config.memory_bytes / 8).max(1 << 20))
                .weigher(|_: &SearchKey, answer: &std::sync::Arc<Answer>| {
                    u32::try_from(answer.body.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(config.search_ttl)
                .support_invalidation_closures()
                .build()
        });
        SearchCache { answers, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The kept answer to `key`, if any.
    pub(crate) fn get(&self, key: &SearchKey) -> Option<Response> {
        let answer = self.answers.as_ref()?.get(key)?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(axum::body::Body::from(answer.body.clone()));
        *response.status_mut() = answer.status;
        for (name, value) in &answer.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
        Some(response)
    }

    /// Keeps a complete answer to `key` and gives it back.
    pub(crate) async fn keep(&self, key: SearchKey, response: Response) -> Response {
        let Some(answers) = &self.answers else { return response };
        self.misses.fetch_add(1, Ordering::Relaxed);
        if response.extensions().get::<Partial>().is_some() || !response.status().is_success() {
            return response;
        }
        // An answer too large to keep (or of a size not known before reading it) goes out as it
        // is, uncached.
        let size = http_body::Body::size_hint(response.body()).exact();
        if size.is_none_or(|n| n > LARGEST_KEPT as u64) {
            return response;
        }
        let (parts, body) = response.into_parts();
        let Ok(body) = axum::body::to_bytes(body, LARGEST_KEPT).await else {
            return Error::Internal("the search answer could not be read".into()).into_response();
        };
        let headers = parts
            .headers
            .iter()
            .filter(|(name, _)| *name == axum::http::header::CONTENT_TYPE || name.as_str() == "warning")
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        answers.insert(key, std::sync::Arc::new(Answer { status: parts.status, headers, body: body.clone() }));
        Response::from_parts(parts, axum::body::Body::from(body))
    }

    /// Forgets every answer that may show one of `studies` (sites' UIDs; instances were stored
    /// into them): all but the answers of searches confined to another study.
    pub(crate) fn forget_studies(&self, studies: &[StudyInstanceUid]) {
        let Some(answers) = &self.answers else { return };
        let studies = studies.to_vec();
        let shows_them = move |key: &SearchKey, _: &std::sync::Arc<Answer>| {
            key.study.as_ref().is_none_or(|confined| studies.contains(confined))
        };
        if answers.invalidate_entries_if(shows_them).is_err() {
            answers.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache() -> SearchCache {
        SearchCache::new(&CacheConfig {
            memory_bytes: 64 << 20,
            disk_dir: None,
            disk_bytes: 0,
            ttl: Duration::from_secs(60),
            search_ttl: Duration::from_secs(60),
            transcoded_bytes: 0,
        })
    }

    fn key(resource: &str, study: Option<&str>) -> SearchKey {
        let study = study.map(|uid| StudyInstanceUid::new(uid).expect("uid"));
        SearchKey::new("project", None, "http://gw/dicom-web", resource.to_owned(), Some("limit=20"), study.as_ref())
    }

    #[tokio::test]
    async fn a_store_forgets_the_answers_that_may_show_its_study_and_keeps_the_others() {
        let cache = cache();
        let every_study = key("studies", None);
        let stored_into = key("instances of 1.2.3", Some("1.2.3"));
        let another = key("instances of 4.5.6", Some("4.5.6"));
        for k in [&every_study, &stored_into, &another] {
            cache.keep(k.clone(), Response::new(axum::body::Body::from("[]"))).await;
            assert!(cache.get(k).is_some());
        }
        cache.forget_studies(&[StudyInstanceUid::new("1.2.3").expect("uid")]);
        assert!(cache.get(&every_study).is_none());
        assert!(cache.get(&stored_into).is_none());
        assert!(cache.get(&another).is_some());
        // Kept again afterwards, an answer is found again.
        tokio::time::sleep(Duration::from_millis(5)).await;
        cache.keep(every_study.clone(), Response::new(axum::body::Body::from("[]"))).await;
        assert!(cache.get(&every_study).is_some());
    }

    #[tokio::test]
    async fn an_answer_too_large_to_keep_is_served_whole_and_not_kept() {
        let cache = cache();
        let k = key("/studies", None);
        let large = vec![b' '; LARGEST_KEPT + 1];
        let served = cache.keep(k.clone(), Response::new(axum::body::Body::from(large))).await;
        assert_eq!(served.status(), StatusCode::OK);
        let body = axum::body::to_bytes(served.into_body(), usize::MAX).await.expect("body");
        assert_eq!(body.len(), LARGEST_KEPT + 1);
        assert!(cache.get(&k).is_none());
    }
}
