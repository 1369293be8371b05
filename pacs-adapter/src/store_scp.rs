//! The storage SCP on `dimse.listen` that receives C-MOVE sub-operations (PS3.4 §C.4.2.2) and
//! hands each instance to the C-MOVE waiting for it.
//!
//! Routing, in order: the Move Originator Message ID of the C-STORE request (unique across the
//! process); else the one move expecting that SOP Instance UID; else the one move in flight
//! from the sending AE. An instance no move claims is refused, never kept.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::association::ServerAssociationOptions;
use dicom_ul::Pdu;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use dicomweb_model::{AeTitle, SiteId};

use crate::association::{trim_uid, MessageChannel, Received};
use crate::dimse::{Command, CommandField, Status};
use crate::instance::RetrievedInstance;
use crate::operation::next_message_id;
use crate::stream::STREAM_BUFFER;
use crate::syntax::PASS_THROUGH_TRANSFER_SYNTAXES;

/// Settings of the storage SCP.
#[derive(Debug, Clone)]
pub struct StoreScpOptions {
    /// Our AE title: the C-MOVE destination the PACS must know.
    pub ae_title: AeTitle,
    pub max_pdu_length: u32,
    pub max_data_set_len: usize,
    /// Longest wait for the next message on an incoming association.
    pub idle_timeout: Duration,
    /// At most this many incoming associations at once.
    pub max_associations: usize,
}

impl StoreScpOptions {
    pub fn new(ae_title: AeTitle) -> Self {
        StoreScpOptions {
            ae_title,
            max_pdu_length: 1024 * 1024,
            max_data_set_len: 2 * 1024 * 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_associations: 64,
        }
    }
}

/// Handle to the storage SCP; cheap to clone.
#[derive(Debug, Clone)]
pub struct StoreScp {
    inner: Arc<ScpInner>,
}

#[derive(Debug)]
struct ScpInner {
    options: StoreScpOptions,
    routes: Mutex<HashMap<u16, Route>>,
    running: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Route {
    site_ae: AeTitle,
    expected: Option<HashSet<String>>,
    tx: mpsc::Sender<RetrievedInstance>,
}

/// A registered C-MOVE: its message id and the instances the SCP routes to it. Dropping it
/// unregisters the move; instances arriving later are refused.
#[derive(Debug)]
pub(crate) struct MoveTicket {
    pub message_id: u16,
    pub rx: mpsc::Receiver<RetrievedInstance>,
    scp: Arc<ScpInner>,
}

impl Drop for MoveTicket {
    fn drop(&mut self) {
        self.scp.lock_routes().remove(&self.message_id);
    }
}

impl StoreScp {
    pub fn new(options: StoreScpOptions) -> Self {
        StoreScp {
            inner: Arc::new(ScpInner {
                options,
                routes: Mutex::new(HashMap::new()),
                running: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Binds `address` and serves in a background task until the returned handle is aborted.
    pub async fn spawn(
        address: &str,
        options: StoreScpOptions,
    ) -> std::io::Result<(Self, std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = TcpListener::bind(address).await?;
        let local = listener.local_addr()?;
        let scp = StoreScp::new(options);
        // The listener is bound: moves may start now, before the task first runs.
        scp.inner.running.store(true, std::sync::atomic::Ordering::Relaxed);
        let serving = scp.clone();
        let handle = tokio::spawn(async move { serving.run(listener, std::future::pending()).await });
        Ok((scp, local, handle))
    }

    pub fn ae_title(&self) -> &AeTitle {
        &self.inner.options.ae_title
    }

    pub fn is_running(&self) -> bool {
        self.inner.running.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Accepts associations on `listener` until `shutdown` completes.
    pub async fn run(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(tokio::sync::Semaphore::new(self.inner.options.max_associations));
        self.inner.running.store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "storage SCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "storage SCP association limit reached; closing connection");
                continue;
            };
            let inner = self.inner.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_association(inner, stream).await {
                    tracing::debug!(%peer, error = %e, "storage SCP association ended with an error");
                }
                drop(permit);
            });
        }
        self.inner.running.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn register(&self, site_ae: &AeTitle, expected: Option<HashSet<String>>) -> MoveTicket {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut routes = self.inner.lock_routes();
        let message_id = loop {
            let id = next_message_id();
            if !routes.contains_key(&id) {
                break id;
            }
        };
        routes.insert(message_id, Route { site_ae: site_ae.clone(), expected, tx });
        MoveTicket { message_id, rx, scp: self.inner.clone() }
    }
}

impl ScpInner {
    fn lock_routes(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Route>> {
        self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn route_for(&self, request: &Command, calling_ae: &str) -> Option<(mpsc::Sender<RetrievedInstance>, String)> {
        let routes = self.lock_routes();
        let by_id = request.move_originator_message_id.and_then(|id| routes.get(&id));
        let route = by_id.or_else(|| {
            let instance = request.affected_sop_instance_uid.as_deref()?;
            let mut expecting = routes.values().filter(|r| r.expected.as_ref().is_some_and(|e| e.contains(instance)));
            match (expecting.next(), expecting.next()) {
                (Some(route), None) => Some(route),
                _ => None,
            }
        });
        let route = route.or_else(|| {
            let mut from_peer = routes.values().filter(|r| r.site_ae.as_str() == calling_ae.trim());
            match (from_peer.next(), from_peer.next()) {
                (Some(route), None) => Some(route),
                _ => None,
            }
        })?;
        Some((route.tx.clone(), route.site_ae.as_str().to_owned()))
    }
}

async fn serve_association(inner: Arc<ScpInner>, stream: TcpStream) -> Result<(), crate::DimseError> {
    let _ = stream.set_nodelay(true);
    let options = &inner.options;
    let mut scp_options = ServerAssociationOptions::new()
        .accept_called_ae_title()
        .ae_title(options.ae_title.as_str().to_owned())
        .promiscuous(true)
        .max_pdu_length(options.max_pdu_length)
        .strict(true);
    for ts in PASS_THROUGH_TRANSFER_SYNTAXES {
        scp_options = scp_options.with_transfer_syntax(*ts);
    }
    let scp_site = SiteId::new("store-scp").map_err(|_| crate::DimseError::StoreScpUnavailable)?;
    let association = tokio::time::timeout(options.idle_timeout, scp_options.establish_async(stream))
        .await
        .map_err(|_| crate::DimseError::Timeout {
            site: scp_site.clone(),
            phase: crate::error::Phase::Connect,
            after: options.idle_timeout,
        })?
        .map_err(|e| crate::DimseError::from_ul(&scp_site, e))?;
    let calling_ae = dicom_ul::association::Association::peer_ae_title(&association).to_owned();
    let contexts: HashMap<u8, String> =
        association.presentation_contexts().iter().map(|c| (c.id, trim_uid(&c.transfer_syntax).to_owned())).collect();
    let mut channel = MessageChannel::new(association, scp_site, options.max_data_set_len);
    loop {
        let message = match channel.receive(options.idle_timeout).await? {
            Received::Message(message) => message,
            Received::ReleaseRequested => {
                let _ = channel.link.send(&Pdu::ReleaseRP).await;
                return Ok(());
            }
        };
        let response = match message.command.field {
            CommandField::CEchoRq => Command::c_echo_rsp(&message.command),
            CommandField::CStoreRq => {
                let status = match (
                    inner.route_for(&message.command, &calling_ae),
                    contexts.get(&message.presentation_context_id),
                    message.data_set.as_deref(),
                ) {
                    (Some((tx, source_ae)), Some(ts), Some(data_set)) => {
                        match RetrievedInstance::from_c_store(&message.command, ts, &source_ae, data_set) {
                            Ok(instance) => {
                                if tx.send(instance).await.is_ok() {
                                    Status::SUCCESS
                                } else {
                                    Status::STORE_OUT_OF_RESOURCES
                                }
                            }
                            Err(_) => Status::STORE_CANNOT_UNDERSTAND,
                        }
                    }
                    (None, _, _) => {
                        tracing::warn!(calling_ae = %calling_ae, "refusing a C-STORE that no C-MOVE in flight claims");
                        Status::STORE_OUT_OF_RESOURCES
                    }
                    _ => Status::STORE_CANNOT_UNDERSTAND,
                };
                Command::c_store_rsp(&message.command, status.0)
            }
            other => {
                tracing::warn!(field = ?other, "storage SCP received an unsupported request; aborting");
                let _ = channel.link.send(&Pdu::AbortRQ { source: dicom_ul::pdu::AbortRQSource::ServiceUser }).await;
                return Ok(());
            }
        };
        channel.send(message.presentation_context_id, &response, None).await?;
    }
}
