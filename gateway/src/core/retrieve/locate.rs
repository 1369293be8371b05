//! A retrieval, the core's one entry point for every WADO-RS resource: from the cache, or joined
//! to a flight under way, or planned (crate::core::retrieve::plan: the directory, the request's
//! one site, or a C-FIND) and started (crate::core::retrieve::parts); a remembered plan that
//! yields nothing is forgotten and the target located anew. Each instance is de-identified,
//! cleaned or withheld before any handler sees it, and the syntaxes it was stored in are noted
//! in the directory.

use std::collections::BTreeSet;
use std::sync::Arc;

use dicomweb_model::{SeriesInstanceUid, SiteId, SopInstanceUid, StudyInstanceUid};
use futures::{stream, StreamExt};
use pacs_adapter::{DimseError, RetrieveTarget, RetrievedInstance};

use crate::core::access::{Access, Project};
use crate::core::privacy::deidentify::{Privacy, Processed};
use crate::core::privacy::pseudonyms::Original;
use crate::core::retrieve::parts::{start, Started};
use crate::core::retrieve::plan::{allowed_sites, locate_by_find, remembered_plan, Part};
use crate::core::retrieve::{in_site_terms, Retrieval, Retriever};
use crate::core::Error;
use crate::sites::touched::Touched;

/// The retrieval of a target named as the client sees it (pseudonymous UIDs when
/// de-identifying): from the cache when it holds the whole target, else shared with a request
/// retrieving the same target in the same project, else planned and started; it waits for the
/// first instance, so that a missing study is a 404 and a failing PACS a 502 / 503 / 504 before
/// any byte of the response is sent (docs/CACHE.md).
pub(crate) async fn retrieve(
    retriever: &Arc<Retriever>,
    scope: &Access,
    target: RetrieveTarget,
) -> Result<Retrieval, Error> {
    let (scope, target) = in_site_terms(&retriever.sites, scope, &target).await?;
    let scope = &scope;
    let key = crate::core::retrieve::cache::TargetKey::new(&scope.cache_scope, &target);
    let shown = |uid: &SopInstanceUid| match scope.privacy() {
        Some(privacy) => SopInstanceUid::from_peer(&privacy.engine.keys().uid(uid.as_str())).ok(),
        None => Some(uid.clone()),
    };
    if let Some(cached) = retriever.cache.cached(&key, shown).await {
        return Ok(cached);
    }
    let (gw_for_flight, scope) = (retriever.clone(), scope.clone());
    retriever.cache.join_or_start(key, async move { at_sites(&gw_for_flight, &scope, target).await }).await
}

/// The same for a target named by the sites' own UIDs.
async fn at_sites(retriever: &Arc<Retriever>, scope: &Access, target: RetrieveTarget) -> Result<Retrieval, Error> {
    let allowed = allowed_sites(retriever, scope)?;
    let study = target.study.clone();
    let remembered =
        retriever.directory.study(&study).and_then(|record| remembered_plan(retriever, &allowed, &record, &target));
    let from_directory = remembered.is_some();
    // A plan taken on trust: remembered, or the only site the request may use (then nothing
    // is to be learnt from a C-FIND first). One that yields nothing is checked by C-FIND.
    let assumed = from_directory || allowed.len() == 1;
    let plan = match remembered {
        Some(plan) => plan,
        None if assumed => vec![Part { target: target.clone(), holders: allowed.clone() }],
        None => locate_by_find(retriever, &scope.touched, &allowed, &target).await?,
    };
    let started = match start(retriever, &scope.touched, plan).await {
        Ok(Some(started)) => started,
        Ok(None) | Err(Error::Pacs(DimseError::Failed { .. }) | Error::NotFound(_)) if assumed => {
            // What was remembered is no longer so, or the one site does not have it: locate
            // anew (a 404 when no site lists it).
            if from_directory {
                retriever.directory.forget(&study);
            }
            let plan = locate_by_find(retriever, &scope.touched, &allowed, &target).await?;
            start(retriever, &scope.touched, plan)
                .await?
                .ok_or_else(|| Error::NotFound("no such study, series or instance".into()))?
        }
        Ok(None) => return Err(Error::NotFound("no such study, series or instance".into())),
        Err(e) => return Err(e),
    };
    let started = noting_stored(retriever, &target, started);
    let retrieval = match scope.privacy() {
        None => {
            let ((_, first), rest) = started;
            Ok(Retrieval {
                first,
                rest: rest.map(|item| item.map(|(_, instance)| instance)).boxed(),
                withheld: 0,
                withheld_reasons: Vec::new(),
                partly: Vec::new(),
                etag: None,
            })
        }
        Some(_) => deidentified(retriever, scope.project.clone(), scope.touched.clone(), started).await,
    };
    retrieval.map(|retrieval| noting_partly(retrieval, scope.touched.clone()))
}

/// The retrieval with what its sites said they left out before its first instance; one that
/// says so only later (another part's first answer) ends it with that site's error, as the
/// response can no longer say it.
fn noting_partly(mut retrieval: Retrieval, touched: Arc<Touched>) -> Retrieval {
    retrieval.partly = touched.partly();
    let said = retrieval.partly.len();
    let end = stream::once(async move { touched.partly().get(said).map(|what| Err(Error::Partly(what.clone()))) })
        .filter_map(|end| async move { end });
    retrieval.rest = retrieval.rest.chain(end).boxed();
    retrieval
}

/// The transfer syntaxes a retrieval's instances came in as stored, told to the directory as
/// each new one is seen (a retrieval seldom holds more than one or two).
struct SeenStored {
    retriever: Arc<Retriever>,
    study: StudyInstanceUid,
    series: Option<SeriesInstanceUid>,
    seen: BTreeSet<String>,
}

impl SeenStored {
    fn note(&mut self, instance: &RetrievedInstance) {
        if !self.seen.contains(instance.transfer_syntax_uid.as_str()) {
            self.seen.insert(instance.transfer_syntax_uid.as_str().to_owned());
            self.retriever.directory.record_stored(&self.study, self.series.as_ref(), &self.seen);
        }
    }
}

/// The retrieval, noting the transfer syntax of each instance as it passes.
fn noting_stored(retriever: &Arc<Retriever>, target: &RetrieveTarget, ((site, first), rest): Started) -> Started {
    let mut seen = SeenStored {
        retriever: retriever.clone(),
        study: target.study.clone(),
        series: target.series.clone(),
        seen: BTreeSet::new(),
    };
    seen.note(&first);
    let rest = rest
        .map(move |item| {
            if let Ok((_, instance)) = &item {
                seen.note(instance);
            }
            item
        })
        .boxed();
    ((site, first), rest)
}

/// The transfer syntaxes instances of a study or series (named as the client sees it) are
/// known to be stored in, from earlier retrievals; empty when nothing is known, and for a
/// single instance (its retrieval shows it before the response starts).
pub(crate) async fn known_stored_syntaxes(
    retriever: &Arc<Retriever>,
    scope: &Access,
    target: &RetrieveTarget,
) -> Result<BTreeSet<String>, Error> {
    if !target.instances.is_empty() {
        return Ok(BTreeSet::new());
    }
    let (_, target) = in_site_terms(&retriever.sites, scope, target).await?;
    let Some(record) = retriever.directory.study(&target.study) else { return Ok(BTreeSet::new()) };
    let only_series = record.series.as_ref().filter(|series| series.len() == 1).and_then(|s| s.keys().next());
    Ok(match &target.series {
        // A study of one series: what its retrievals saw is the series'.
        Some(series) if only_series.is_some_and(|only| only == series) => record.stored.study.clone(),
        Some(series) => record.stored.series.get(series).cloned().unwrap_or_default(),
        None => record.stored.study.clone(),
    })
}

fn log_withheld(why: &dicomweb_deid::burned_in::Withheld) {
    tracing::info!(reason = why.reason, "instance withheld: its pixels may show identity");
}

fn privacy_of(project: &Project) -> Result<&Privacy, Error> {
    project.privacy.as_ref().ok_or_else(|| Error::Internal("de-identification is off".into()))
}

/// One retrieved instance of `site` de-identified, with the map entries of its pseudonyms.
fn deidentify(
    project: &Project,
    instance: RetrievedInstance,
    site: &SiteId,
) -> Result<(Processed, Vec<(String, Original)>), Error> {
    privacy_of(project)?
        .instance(instance, site.as_str())
        .map_err(|e| Error::Internal(format!("cannot de-identify an instance: {e}")))
}

/// How many of a retrieval's instances are de-identified at once (each held in memory until
/// it is passed on).
const DEIDENTIFYING_AT_ONCE: usize = 8;

/// The retrieval's instances de-identified off the async runtime, a few at a time, in order,
/// the withheld ones left out.
async fn deidentified(
    retriever: &Arc<Retriever>,
    project: Arc<Project>,
    touched: Arc<Touched>,
    ((site, first), rest): Started,
) -> Result<Retrieval, Error> {
    let deid_retriever = retriever.clone();
    let mut processed = stream::once(async move { Ok((site, first)) })
        .chain(rest)
        .map(move |item| {
            let (retriever, project, touched) = (deid_retriever.clone(), project.clone(), touched.clone());
            async move {
                let (site, instance) = item?;
                let site = retriever.sites[site].id().clone();
                let privacy = privacy_of(&project)?;
                // Most instances here and now: handing one to another thread and back costs
                // more than rewriting its head.
                let (processed, entries) = if privacy.deidentifies_quickly(&instance) {
                    deidentify(&project, instance, &site)?
                } else {
                    let project = project.clone();
                    tokio::task::spawn_blocking(move || deidentify(&project, instance, &site))
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))??
                };
                privacy.record(entries).await?;
                // The request that retrieves (a flight is its starter's) is the one whose audit
                // line counts the instances cleaned for it.
                Ok(match processed {
                    Processed::Cleaned(instance) => {
                        touched.note_cleaned();
                        Processed::Deidentified(instance)
                    }
                    other => other,
                })
            }
        })
        // A few at a time, in order: instances go on arriving, and are de-identified, while
        // one waits for its pseudonyms to be committed (the store commits what is waiting
        // together).
        .buffered(DEIDENTIFYING_AT_ONCE)
        .boxed();
    let (mut withheld, mut withheld_reasons) = (0usize, Vec::<String>::new());
    let first = loop {
        match processed.next().await {
            Some(Ok(Processed::Deidentified(instance) | Processed::Cleaned(instance))) => break instance,
            Some(Ok(Processed::Withheld(why))) => {
                log_withheld(&why);
                withheld += 1;
                if !withheld_reasons.iter().any(|r| r == why.reason) {
                    withheld_reasons.push(why.reason.to_owned());
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::Forbidden(format!(
                    "withheld: {withheld} instance(s) whose pixels may show identity (burned-in annotation): {}",
                    withheld_reasons.join("; ")
                )))
            }
        }
    };
    let rest = processed
        .filter_map(|item| async move {
            match item {
                Ok(Processed::Deidentified(instance) | Processed::Cleaned(instance)) => Some(Ok(instance)),
                Ok(Processed::Withheld(why)) => {
                    log_withheld(&why);
                    None
                }
                Err(e) => Some(Err(e)),
            }
        })
        .boxed();
    Ok(Retrieval { first, rest, withheld, withheld_reasons, partly: Vec::new(), etag: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(uid: &str) -> RetrievedInstance {
        // A data set of one element: (0008,0060) Modality "OT".
        let data_set = [0x08, 0x00, 0x60, 0x00, b'C', b'S', 0x02, 0x00, b'O', b'T'];
        let part10 = pacs_adapter::part10::wrap("1.2.840.10008.5.1.4.1.1.7", uid, "1.2.840.10008.1.2.1", "", &data_set);
        RetrievedInstance::from_part10(bytes::Bytes::from(part10)).expect("instance")
    }

    fn retrieval(rest: crate::core::retrieve::Instances) -> Retrieval {
        Retrieval {
            first: instance("1.2.3.1"),
            rest,
            withheld: 0,
            withheld_reasons: Vec::new(),
            partly: Vec::new(),
            etag: None,
        }
    }

    #[tokio::test]
    async fn what_a_site_leaves_out_is_said_before_the_first_instance_or_ends_the_retrieval() {
        // Said before the first instance: in the retrieval, which then ends as it is.
        let touched = Arc::new(Touched::default());
        touched.note_partly("site a sent only part of what was asked (HTTP 206 Partial Content)".into());
        let said = noting_partly(retrieval(stream::iter([Ok(instance("1.2.3.2"))]).boxed()), touched);
        assert_eq!(said.partly.len(), 1);
        let rest: Vec<_> = said.rest.collect().await;
        assert!(rest.len() == 1 && rest[0].is_ok());
        // Said by a later part, once the response could no longer: the retrieval ends in an error.
        let touched = Arc::new(Touched::default());
        let later = touched.clone();
        let rest = stream::iter([Ok(instance("1.2.3.2"))])
            .chain(stream::once(async move {
                later.note_partly("site b sent only part of what was asked (HTTP 200 with a Warning)".into());
                Ok(instance("1.2.3.3"))
            }))
            .boxed();
        let said = noting_partly(retrieval(rest), touched);
        assert!(said.partly.is_empty());
        let rest: Vec<_> = said.rest.collect().await;
        assert_eq!(rest.len(), 3);
        assert!(matches!(&rest[2], Err(Error::Partly(what)) if what.starts_with("site b")), "{:?}", rest[2]);
    }
}
