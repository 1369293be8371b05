//! C-GET (PS3.4 §C.4.3) with SCP role selection: the PACS sends each instance back as a C-STORE
//! sub-operation on the same association, and each is yielded as soon as it arrives.

use std::time::Instant;

use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;

use crate::dimse::{Command, CommandField, Message, Status};
use crate::error::{DimseError, Operation};
use crate::find::{find, FindRequest};
use crate::instance::{RetrievedInstance, SubOperations};
use crate::operation::{cancel, next_message_id, start, status_of, unexpected, Deadlines, Started};
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
pub async fn get(pool: &AssociationPool, request: RetrieveRequest) -> Result<DimseStream<RetrievedInstance>, DimseError> {
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
        let data = encode_identifier(&identifier, ts).map_err(|source| DimseError::Protocol { site: site.clone(), source })?;
        Ok((Command::query_rq(CommandField::CGetRq, STUDY_ROOT_GET, message_id), Some(data)))
    })
    .await?;
    let (tx, stream) = DimseStream::channel();
    tokio::spawn(drive(pool.clone(), started, deadlines, tx));
    Ok(stream)
}

async fn drive(
    pool: AssociationPool,
    started: Started,
    deadlines: Deadlines,
    tx: tokio::sync::mpsc::Sender<Result<RetrievedInstance, DimseError>>,
) {
    let Started { mut pooled, presentation_context_id, message_id, first } = started;
    let site = pool.site().id.clone();
    let source_ae = pool.site().called_ae_title.as_str().to_owned();
    let mut sub_operations = SubOperations::default();
    let mut message: Message = first;
    loop {
        match message.command.field {
            CommandField::CStoreRq => {
                let association = pooled.association();
                let instance = match (message.data_set.as_deref(), association.transfer_syntax_of(message.presentation_context_id)) {
                    (Some(data_set), Some(ts)) => {
                        RetrievedInstance::from_c_store(&message.command, ts, &source_ae, data_set)
                            .map_err(|source| DimseError::Protocol { site: site.clone(), source })
                    }
                    _ => Err(unexpected(&pool, &message)),
                };
                let status = match instance {
                    Ok(instance) => {
                        sub_operations.received += 1;
                        if tx.send(Ok(instance)).await.is_err() {
                            let refusal = Command::c_store_rsp(&message.command, Status::STORE_OUT_OF_RESOURCES.0);
                            let _ = pooled.association().channel.send(message.presentation_context_id, &refusal, None).await;
                            return cancel(pooled, presentation_context_id, message_id, deadlines.response).await;
                        }
                        Status::SUCCESS
                    }
                    Err(e) => {
                        tracing::warn!(site = %site, error = %e, "refusing a C-GET sub-operation we cannot read");
                        Status::STORE_CANNOT_UNDERSTAND
                    }
                };
                let response = Command::c_store_rsp(&message.command, status.0);
                if let Err(e) = pooled.association().channel.send(message.presentation_context_id, &response, None).await {
                    let _ = tx.send(Err(e)).await;
                    return pooled.discard().await;
                }
            }
            CommandField::CGetRsp if message.command.message_id_responded_to == Some(message_id) => {
                let status = match status_of(&pool, &message) {
                    Ok(status) => status,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return pooled.discard().await;
                    }
                };
                sub_operations.update(&message.command);
                if !status.is_pending() {
                    if let Err(e) = sub_operations.outcome(&site, Operation::Get, &message.command) {
                        let _ = tx.send(Err(e)).await;
                    }
                    return pooled.done();
                }
            }
            _ => {
                let _ = tx.send(Err(unexpected(&pool, &message))).await;
                return pooled.discard().await;
            }
        }
        message = tokio::select! {
            _ = tx.closed() => {
                return cancel(pooled, presentation_context_id, message_id, deadlines.response).await;
            }
            received = pooled.association().channel.receive_message(deadlines.next_wait()) => match received {
                Ok(message) => message,
                Err(e) => {
                    let _ = tx.send(Err(deadlines.timeout_error(&pool, e))).await;
                    return pooled.discard().await;
                }
            },
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
        .filter_map(|f| f.element(tags::SOP_CLASSES_IN_STUDY).ok())
        .filter_map(|e| e.to_multi_str().ok().map(|v| v.to_vec()))
        .flatten()
        .map(|c| c.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    classes.sort_unstable();
    classes.dedup();
    Ok(classes)
}
