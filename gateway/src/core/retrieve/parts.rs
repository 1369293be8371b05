//! A plan's parts retrieved side by side (up to [`PARTS_AT_ONCE`] at once) and merged into one
//! stream of instances in the order they arrive. A part is retrieved from its first holder whose
//! circuit is closed; a holder that cannot be reached gives way to the next. Every part must
//! yield what it lists (at least one instance of a study or series, every instance it names),
//! each instance once, within `[dataset_limits]` and of the study and series asked as its own
//! data set says: a part that falls short ends the stream with an error, so a response is
//! never presented as complete without it.

use std::collections::BTreeSet;
use std::sync::Arc;

use dicomweb_model::SopInstanceUid;
use futures::{stream, FutureExt, Stream, StreamExt};
use pacs_adapter::{QueryLevel, RetrieveTarget, RetrievedInstance};

use crate::core::retrieve::plan::Part;
use crate::core::retrieve::Retriever;
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::{InstanceStream, SiteIndex, Unanswered};

/// A retrieval under way at the sites: its first instance (with the index of the site that
/// sent it) and the rest.
pub(super) type Started = ((SiteIndex, RetrievedInstance), SitedInstances);

/// Starts the retrieval of a part from its first holder that can be reached; the site it
/// comes from, and its instances.
async fn retrieve_part(
    retriever: &Retriever,
    touched: &Touched,
    part: &Part,
) -> Result<(SiteIndex, InstanceStream), Error> {
    let mut last: Option<Unanswered> = None;
    for &site in &part.holders {
        match retriever.sites[site].retrieve(touched, part.target.clone()).await {
            Ok(instances) => return Ok((site, instances)),
            // The site answered (a failure, not found): that is the answer.
            Err(e) if e.is_from_site() && e.fault().is_none() => return Err(e.into()),
            Err(unreachable) => {
                tracing::warn!(site = %retriever.sites[site].id(), error = %unreachable, "holder unavailable; trying the next");
                last = Some(unreachable);
            }
        }
    }
    Err(last.map(Error::from).unwrap_or_else(|| Error::NotFound("no site holds it".into())))
}

/// Instances with the index of the site each came from.
pub(super) type SitedInstances =
    std::pin::Pin<Box<dyn Stream<Item = Result<(SiteIndex, RetrievedInstance), Error>> + Send>>;

/// A part's instances as they arrive, ending in an error when the site did not deliver what it
/// listed: nothing of a study or series, or any one instance the part names. What it sends that
/// the part does not name is left out: a PACS may take an IMAGE-level request for the whole
/// series, a DICOMweb origin an instance's URL for more.
fn as_listed(site: SiteIndex, part: CheckedInstances, target: &RetrieveTarget) -> SitedInstances {
    let what = describe(target);
    let asked = target.instances.len();
    let missing: BTreeSet<SopInstanceUid> = target.instances.iter().cloned().collect();
    stream::unfold(Some((part, missing, false)), move |state| {
        let what = what.clone();
        async move {
            let (mut part, mut missing, mut yielded) = state?;
            if asked > 0 && missing.is_empty() {
                // Every instance named has come: what else the site would send is not waited
                // for (dropping the part ends its retrieval at the site).
                return None;
            }
            let mut skipped = 0usize;
            loop {
                match part.next().await {
                    Some(Ok(instance)) => {
                        if asked > 0 && !missing.remove(&instance.sop_instance_uid) {
                            tracing::warn!("a site sent an instance it was not asked for, or sent it again; left out");
                            skipped += 1;
                            if skipped > MAX_SKIPPED {
                                let error =
                                    format!("a site sent more than {MAX_SKIPPED} instances it was not asked for");
                                return Some((Err(Error::Partly(error)), None));
                            }
                            continue;
                        }
                        yielded = true;
                        return Some((Ok((site, instance)), Some((part, missing, yielded))));
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        let short = if asked > 0 { missing.len() } else { usize::from(!yielded) };
                        if short == 0 {
                            return None;
                        }
                        let what = if asked > 1 { format!("{short} of the {asked} instances") } else { what };
                        let error = Error::NotFound(format!("{what} listed by a site was not delivered by it"));
                        return Some((Err(error), None));
                    }
                }
            }
        }
    })
    .boxed()
}

/// A part's instances as they pass [`checked`].
type CheckedInstances = futures::stream::BoxStream<'static, Result<RetrievedInstance, Error>>;

/// The most instances a part naming instances passes over, not asked for, before one it
/// named (a PACS that answers an instance with its whole series sends that many at most):
/// past it, the site is sending without end.
const MAX_SKIPPED: usize = 10_000;

/// Each instance from a site checked before anything parses it: within `[dataset_limits]`
/// (docs/RELIABILITY.md, Limits: one past them ends the stream with 502), and, by what its data
/// set says, of the study (and series) asked for, else left out: a site that answers with
/// another study's instances (another patient's) must not have them served, or cached, as this
/// study's. Its SOP Instance UID is its data set's.
fn checked(
    part: InstanceStream,
    target: &RetrieveTarget,
    limits: crate::config::DataSetLimitsConfig,
) -> CheckedInstances {
    let (study, series) = (target.study.clone(), target.series.clone());
    part.then(move |item| {
        let (study, series) = (study.clone(), series.clone());
        async move {
            let instance = item?;
            tokio::task::spawn_blocking(move || {
                let syntax = instance.transfer_syntax_uid.as_str();
                let says = crate::core::dataset_limits::check_identified(instance.data_set(), syntax, &limits)?;
                let is = |said: &Option<String>, uid: &str| said.as_deref() == Some(uid);
                let asked = is(&says.study, study.as_str())
                    && series.as_ref().is_none_or(|series| is(&says.series, series.as_str()));
                if !asked {
                    return Ok::<_, Error>(None);
                }
                // The instance is what its data set says, whatever the file meta group it was
                // served with says (files whose two UIDs differ exist, and an origin could use
                // one to pass a data set off as another instance).
                let mut instance = instance;
                if let Some(uid) = says.instance.as_deref().and_then(|uid| SopInstanceUid::from_peer(uid).ok()) {
                    instance.sop_instance_uid = uid;
                }
                Ok(Some(instance))
            })
            .await
            .map_err(|e| Error::Internal(format!("checking an instance failed: {e}")))?
        }
    })
    .filter_map(|item| async move {
        match item {
            Ok(Some(instance)) => Some(Ok(instance)),
            Ok(None) => {
                tracing::warn!(
                    "a site sent an instance whose data set names another study or series than asked; left out"
                );
                None
            }
            Err(e) => Some(Err(e)),
        }
    })
    .boxed()
}

/// How many parts of a plan are retrieved at once; parts at one site share its association
/// budget, parts at different sites run side by side.
const PARTS_AT_ONCE: usize = 4;

/// Starts the plan's parts, up to [`PARTS_AT_ONCE`] at a time, merged into one stream in the
/// order instances arrive; waits for the first instance. `None` when the plan is empty.
pub(super) async fn start(
    retriever: &Arc<Retriever>,
    touched: &Arc<Touched>,
    plan: Vec<Part>,
) -> Result<Option<Started>, Error> {
    let (retriever, touched) = (retriever.clone(), touched.clone());
    let parts = plan.into_iter().map(move |part| {
        let (retriever, touched) = (retriever.clone(), touched.clone());
        async move {
            match retrieve_part(&retriever, &touched, &part).await {
                Ok((site, instances)) => {
                    as_listed(site, checked(instances, &part.target, retriever.limits), &part.target)
                }
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        }
    });
    first_of(once_each(merged(parts))).await
}

/// Each instance once: a site may send one twice (listed twice, or asked for twice), and a
/// response never carries two parts of one SOP Instance UID.
fn once_each(instances: SitedInstances) -> SitedInstances {
    let mut seen: BTreeSet<SopInstanceUid> = BTreeSet::new();
    instances
        .filter(move |item| {
            let again = matches!(item, Ok((_, instance)) if !seen.insert(instance.sop_instance_uid.clone()));
            if again {
                tracing::warn!("an instance sent twice; passed on once");
            }
            futures::future::ready(!again)
        })
        .boxed()
}

/// Parts (each a future of its stream) merged as their instances arrive, up to
/// [`PARTS_AT_ONCE`] parts polled at a time.
fn merged<P>(parts: impl Iterator<Item = P> + Send + 'static) -> SitedInstances
where
    P: std::future::Future<Output = SitedInstances> + Send + 'static,
{
    stream::iter(parts).map(|part| part.flatten_stream().boxed()).flatten_unordered(PARTS_AT_ONCE).boxed()
}

/// The first instance of a stream and the rest; an error before any instance is the
/// retrieval's error.
async fn first_of(mut instances: SitedInstances) -> Result<Option<Started>, Error> {
    match instances.next().await {
        Some(Ok(first)) => Ok(Some((first, instances))),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
}

fn describe(target: &RetrieveTarget) -> String {
    match target.level() {
        QueryLevel::Study => "a study".into(),
        QueryLevel::Series => "a series".into(),
        QueryLevel::Image => "an instance".into(),
    }
}

#[cfg(test)]
mod tests {
    use dicom_core::{DataElement, VR};
    use dicom_dictionary_std::tags;

    use super::*;

    fn instance(uid: &str) -> RetrievedInstance {
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7"));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, uid));
        let file = obj
            .with_meta(
                dicom_object::FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid(uid),
            )
            .expect("file meta");
        let mut part10 = Vec::new();
        file.write_all(&mut part10).expect("part 10");
        RetrievedInstance::from_part10(bytes::Bytes::from(part10)).expect("instance")
    }

    type PartFuture = std::pin::Pin<Box<dyn std::future::Future<Output = SitedInstances> + Send>>;

    fn uids(items: &[Result<(SiteIndex, RetrievedInstance), Error>]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Ok((_, instance)) => instance.sop_instance_uid.as_str().to_owned(),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn parts_run_side_by_side_and_instances_come_in_the_order_they_arrive() {
        // The first part sends nothing until the second part's first instance has been taken
        // from the merged stream: one part after the other would never get there.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow: PartFuture = Box::pin(async move {
            let _ = released.await;
            stream::iter([Ok((SiteIndex(0), instance("1.2.3.1.1")))]).boxed()
        });
        let fast: PartFuture = Box::pin(async {
            stream::iter([Ok((SiteIndex(2), instance("1.2.3.2.1"))), Ok((SiteIndex(2), instance("1.2.3.2.2")))]).boxed()
        });
        let retrieval = async move {
            let ((site, first), rest) = first_of(merged(vec![slow, fast].into_iter())).await?.expect("an instance");
            release.send(()).expect("the first part waits");
            let rest: Vec<_> = rest.collect().await;
            Ok::<_, Error>((site, first.sop_instance_uid.as_str().to_owned(), uids(&rest)))
        };
        let (site, first, rest) = tokio::time::timeout(std::time::Duration::from_secs(10), retrieval)
            .await
            .expect("no deadlock")
            .expect("ok");
        assert_eq!((site, first.as_str()), (SiteIndex(2), "1.2.3.2.1"));
        assert_eq!(rest, vec!["1.2.3.2.2".to_owned(), "1.2.3.1.1".to_owned()]);
    }

    #[tokio::test]
    async fn an_instance_sent_twice_is_passed_on_once() {
        let twice: PartFuture = Box::pin(async {
            stream::iter([
                Ok((SiteIndex(0), instance("1.2.3.1.1"))),
                Ok((SiteIndex(0), instance("1.2.3.1.2"))),
                Ok((SiteIndex(0), instance("1.2.3.1.1"))),
            ])
            .boxed()
        });
        let all: Vec<_> = once_each(merged(vec![twice].into_iter())).collect().await;
        assert_eq!(uids(&all), vec!["1.2.3.1.1".to_owned(), "1.2.3.1.2".to_owned()]);
    }

    #[tokio::test]
    async fn a_part_naming_instances_yields_those_it_names_or_ends_in_an_error() {
        let study = dicomweb_model::StudyInstanceUid::new("1.2.3").expect("uid");
        let series = dicomweb_model::SeriesInstanceUid::new("1.2.3.1").expect("uid");
        let named = |uids: &[&str]| {
            let uids = uids.iter().map(|u| SopInstanceUid::new(u).expect("uid")).collect();
            RetrieveTarget::instances(study.clone(), Some(series.clone()), uids)
        };
        let sent = |uids: &[&str]| -> CheckedInstances {
            let instances: Vec<_> = uids.iter().map(|u| Ok(instance(u))).collect();
            stream::iter(instances).boxed()
        };
        // The whole series sent for one instance: the one alone.
        let one: Vec<_> =
            as_listed(SiteIndex(1), sent(&["1.2.3.1.1", "1.2.3.1.2", "1.2.3.1.3"]), &named(&["1.2.3.1.2"]))
                .collect()
                .await;
        assert_eq!(uids(&one), vec!["1.2.3.1.2".to_owned()]);
        // Once every one named has come, what else the site sends is not waited for.
        let endless = stream::iter([Ok(instance("1.2.3.1.2"))]).chain(stream::pending()).boxed();
        let named_one = named(&["1.2.3.1.2"]);
        let one = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            as_listed(SiteIndex(1), endless, &named_one).collect::<Vec<_>>(),
        )
        .await
        .expect("ends without waiting for the rest");
        assert_eq!(uids(&one), vec!["1.2.3.1.2".to_owned()]);
        // Two of three named: the two, then an error naming what is missing.
        let short: Vec<_> = as_listed(
            SiteIndex(1),
            sent(&["1.2.3.1.1", "1.2.3.1.3"]),
            &named(&["1.2.3.1.1", "1.2.3.1.2", "1.2.3.1.3"]),
        )
        .collect()
        .await;
        let outcomes = uids(&short);
        assert_eq!(outcomes[..2], ["1.2.3.1.1".to_owned(), "1.2.3.1.3".to_owned()]);
        assert!(outcomes[2].contains("1 of the 3 instances"), "{outcomes:?}");
        // A series that yields nothing: an error.
        let whole = RetrieveTarget::series(study.clone(), series.clone());
        let none: Vec<_> = as_listed(SiteIndex(1), sent(&[]), &whole).collect().await;
        assert_eq!(uids(&none), vec!["error: a series listed by a site was not delivered by it".to_owned()]);
    }

    #[tokio::test]
    async fn a_failing_part_ends_the_merged_stream_in_its_error_and_an_empty_plan_yields_none() {
        let good: PartFuture = Box::pin(async { stream::iter([Ok((SiteIndex(0), instance("1.2.3.1.1")))]).boxed() });
        let bad: PartFuture = Box::pin(async {
            stream::once(async { Err(Error::NotFound("a series listed by a site was not delivered by it".into())) })
                .boxed()
        });
        let all: Vec<_> = merged(vec![good, bad].into_iter()).collect().await;
        let outcomes = uids(&all);
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.contains(&"1.2.3.1.1".to_owned()));
        assert!(outcomes.iter().any(|o| o.starts_with("error:")), "{outcomes:?}");
        let none: Vec<PartFuture> = Vec::new();
        assert!(first_of(merged(none.into_iter())).await.expect("no error").is_none());
    }
}
