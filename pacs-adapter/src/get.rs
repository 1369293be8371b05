//! C-GET (PS3.4 §C.4.3) with SCP role selection: the PACS sends each instance back as a C-STORE
//! sub-operation on the same association, and each is yielded as soon as it arrives.

use std::time::Instant;

use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use crate::dimse::{Command, CommandField, Message, Status};
use crate::error::{DimseError, Operation};
use crate::find::{find, FindRequest};
use crate::instance::{RetrievedInstance, SubOperations};
use crate::operation::{next_message_id, start, unexpected, Deadlines, Exchange};
use crate::pool::AssociationPool;
use crate::query::{encode_identifier, QueryLevel, RetrieveTarget};
use crate::stream::DimseStream;
use crate::syntax::{ContextPlan, STUDY_ROOT_GET};

/// A retrieval (C-GET or C-MOVE) of a study, a series or a list of instances.
#[derive(Debug, Clone)]
pub struct RetrieveRequest {
    pub target: RetrieveTarget,
    /// SOP classes the retrieved instances belong to, when known (from an earlier C-FIND).
    /// C-GET needs them to propose storage contexts; when empty, a C-FIND finds them first.
    pub sop_classes: Vec<String>,
    pub deadline: Option<Instant>,
}

impl RetrieveRequest {
    pub fn new(target: RetrieveTarget) -> Self {
        RetrieveRequest { target, sop_classes: Vec::new(), deadline: None }
    }
}

/// Starts a C-GET and returns the stream of instances once the PACS has answered the first
/// time. The stream ends with an `Err` when any sub-operation failed, so a partial retrieval is
/// never mistaken for a complete one. Dropping the stream cancels the C-GET.
pub async fn get(
    pool: &AssociationPool,
    request: RetrieveRequest,
) -> Result<DimseStream<RetrievedInstance>, DimseError> {
    let deadlines = Deadlines::new(pool, request.deadline);
    let sop_classes = if request.sop_classes.is_empty() {
        sop_classes_of(pool, &request.target, request.deadline).await?
    } else {
        request.sop_classes.clone()
    };
    let plan = ContextPlan::retrieve(&sop_classes);
    let identifier = request.target.identifier();
    let message_id = next_message_id();
    let site = pool.site().id.clone();
    let started = start(pool, &plan, STUDY_ROOT_GET, message_id, deadlines, |ts| {
        let data =
            encode_identifier(&identifier, ts).map_err(|source| DimseError::Protocol { site: site.clone(), source })?;
        Ok((Command::query_rq(CommandField::CGetRq, STUDY_ROOT_GET, message_id), Some(data)))
    })
    .await?;
    let (tx, stream) = DimseStream::channel();
    let (exchange, first) = Exchange::new(pool, started, deadlines, tx);
    tokio::spawn(drive(exchange, first));
    Ok(stream)
}

async fn drive(mut exchange: Exchange<RetrievedInstance>, first: Message) {
    let site = exchange.pool.site().id.clone();
    let source_ae = exchange.pool.site().called_ae_title.as_str().to_owned();
    let mut sub_operations = SubOperations::default();
    let mut message = first;
    loop {
        if message.command.field == CommandField::CStoreRq {
            let association = exchange.association();
            let instance =
                match (message.data_set.take(), association.transfer_syntax_of(message.presentation_context_id)) {
                    (Some(data_set), Some(ts)) => {
                        RetrievedInstance::from_c_store(&message.command, ts, &source_ae, data_set)
                            .map_err(|source| DimseError::Protocol { site: site.clone(), source })
                    }
                    _ => Err(unexpected(&exchange.pool, &message)),
                };
            let status = match instance {
                Ok(instance) => {
                    sub_operations.received += 1;
                    if !exchange.deliver(Ok(instance)).await {
                        let refusal = Command::c_store_rsp(&message.command, Status::STORE_OUT_OF_RESOURCES.0);
                        let _ =
                            exchange.association().channel.send(message.presentation_context_id, &refusal, None).await;
                        return exchange.cancel().await;
                    }
                    Status::SUCCESS
                }
                Err(e) => {
                    tracing::warn!(site = %site, error = %e, "refusing a C-GET sub-operation we cannot read");
                    Status::STORE_CANNOT_UNDERSTAND
                }
            };
            let response = Command::c_store_rsp(&message.command, status.0);
            if let Err(e) = exchange.association().channel.send(message.presentation_context_id, &response, None).await
            {
                return exchange.fail(e).await;
            }
        } else {
            let status = match exchange.status(&message, CommandField::CGetRsp) {
                Ok(status) => status,
                Err(e) => return exchange.fail(e).await,
            };
            sub_operations.update(&message.command);
            if !status.is_pending() {
                let outcome = sub_operations.outcome(&site, Operation::Get, &message.command);
                return exchange.finish(outcome).await;
            }
        }
        message = match exchange.next().await {
            Some(message) => message,
            None => return,
        };
    }
}

/// The SOP classes of the study a retrieval targets, from SOPClassesInStudy (0008,0062) at the
/// STUDY level: one cheap query. Empty when the PACS does not return it (dcmqrscp does not) or
/// refuses the query: the retrieval then proposes the common storage classes.
pub async fn sop_classes_of(
    pool: &AssociationPool,
    target: &RetrieveTarget,
    deadline: Option<Instant>,
) -> Result<Vec<String>, DimseError> {
    let mut identifier = RetrieveTarget::study(target.study.clone()).identifier();
    identifier.put(DataElement::new(tags::SOP_CLASSES_IN_STUDY, VR::UI, ""));
    let found = match find(pool, FindRequest { level: QueryLevel::Study, identifier, deadline }).await {
        Ok(stream) => stream.try_collect_all().await,
        Err(e) => Err(e),
    };
    let found = match found {
        Ok(found) => found,
        Err(DimseError::Failed { status, .. }) => {
            tracing::debug!(site = %pool.site().id, %status, "SOP class lookup refused; proposing common classes");
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut classes: Vec<String> = found
        .iter()
        .filter_map(|f| f.get(tags::SOP_CLASSES_IN_STUDY))
        .filter_map(|e| e.to_multi_str().ok().map(|v| v.to_vec()))
        .flatten()
        .map(|c| c.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    Ok(classes)
}
