//! The storage SCP on `dimse.listen` that receives C-MOVE sub-operations (PS3.4 §C.4.2.2) and
//! hands each instance to the C-MOVE waiting for it.
//!
//! Who may send: each move registers the site it is asked of (`MoveSource`: the AE title its
//! sub-operations come from and the addresses of its host). A connection from an address no
//! move in flight expects is closed unread; an association whose calling AE title and address
//! are not those of a site with a move in flight is rejected (A-ASSOCIATE-RJ, calling AE title
//! not recognized). The storage SCP speaks plain TCP only, so a site reached over TLS is never
//! moved from (`c_move` refuses it).
//!
//! Routing, only among the moves of the association's site, in order: the Move Originator
//! Message ID of the C-STORE request (unique across the process); else the one move expecting
//! that SOP Instance UID; else the one move that does not list its instances, or lists this
//! one. An instance no move of that site claims is refused (0124H, not authorized), never kept.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dicom_ul::association::server::AccessControl;
use dicom_ul::association::ServerAssociationOptions;
use dicom_ul::pdu::{AssociationRJServiceUserReason, UserIdentity};
use dicom_ul::Pdu;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use dicomweb_model::{AeTitle, SiteId};

use crate::association::{trim_uid, MessageChannel, Received};
use crate::dimse::{Command, CommandField, Status};
use crate::instance::RetrievedInstance;
use crate::operation::next_message_id;
use crate::site::SiteEndpoint;
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

/// The site a C-MOVE is asked of, as its sub-operations must show it: the calling AE title of
/// the associations the PACS opens to the storage SCP, and the addresses of its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveSource {
    pub site: SiteId,
    pub ae_title: AeTitle,
    /// What the host of the site's `address` resolves to (IPv4-mapped addresses as IPv4).
    pub hosts: Vec<IpAddr>,
}

impl MoveSource {
    /// The source of moves from `endpoint`: its `move_calling_ae_title` (else the PACS's own AE
    /// title) and its host, resolved now so that a changed DNS record is followed.
    pub async fn resolve(endpoint: &SiteEndpoint) -> Result<MoveSource, crate::DimseError> {
        let addresses = tokio::net::lookup_host(endpoint.address.as_str())
            .await
            .map_err(|source| crate::DimseError::Connect { site: endpoint.id.clone(), source })?;
        let mut hosts: Vec<IpAddr> = addresses.map(|a| a.ip().to_canonical()).collect();
        hosts.sort();
        hosts.dedup();
        Ok(MoveSource {
            site: endpoint.id.clone(),
            ae_title: endpoint.move_calling_ae_title.clone().unwrap_or_else(|| endpoint.called_ae_title.clone()),
            hosts,
        })
    }

    fn admits(&self, caller: &Caller) -> bool {
        self.ae_title.as_str() == caller.ae_title && self.hosts.contains(&caller.ip)
    }
}

/// Who opened an incoming association: its calling AE title (cleaned) and peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Caller {
    ae_title: String,
    ip: IpAddr,
}

impl Caller {
    fn new(ae_title: &str, ip: IpAddr) -> Self {
        Caller { ae_title: ae_title.trim_matches([' ', '\0']).to_owned(), ip: ip.to_canonical() }
    }
}

/// What a registered move accepts: instances from its site, and only those it lists when it
/// lists any.
#[derive(Debug)]
struct Claim {
    source: MoveSource,
    expected: Option<HashSet<String>>,
}

impl Claim {
    fn lists(&self, instance: &str) -> bool {
        self.expected.as_ref().is_some_and(|e| e.contains(instance))
    }
}

#[derive(Debug)]
struct Route {
    claim: Claim,
    tx: mpsc::Sender<RetrievedInstance>,
}

/// The move a C-STORE from `caller` belongs to: among the moves whose site is the caller's,
/// the one its Move Originator Message ID names; else the one listing its SOP Instance UID;
/// else the one that could hold it (lists no instances, or this one). `None`: no move of the
/// caller's site claims it, or more than one could.
fn choose_move<'a>(
    claims: impl IntoIterator<Item = (u16, &'a Claim)>,
    caller: &Caller,
    originator_id: Option<u16>,
    instance: Option<&str>,
) -> Option<u16> {
    let candidates: Vec<(u16, &Claim)> = claims.into_iter().filter(|(_, c)| c.source.admits(caller)).collect();
    if let Some(id) = originator_id {
        if candidates.iter().any(|(candidate, _)| *candidate == id) {
            return Some(id);
        }
    }
    if let Some(instance) = instance {
        if let Some(id) = only(candidates.iter().filter(|(_, c)| c.lists(instance)).map(|(id, _)| *id)) {
            return Some(id);
        }
    }
    only(
        candidates
            .iter()
            .filter(|(_, c)| c.expected.is_none() || instance.is_some_and(|i| c.lists(i)))
            .map(|(id, _)| *id),
    )
}

/// The one id `ids` yields; `None` when there is none or more than one.
fn only(mut ids: impl Iterator<Item = u16>) -> Option<u16> {
    match (ids.next(), ids.next()) {
        (Some(id), None) => Some(id),
        _ => None,
    }
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
            if !self.inner.expects_host(peer.ip()) {
                // Only a site with a move in flight may send; nothing is read from anyone else.
                tracing::warn!(%peer, "storage SCP refused a connection from an address no C-MOVE in flight expects");
                continue;
            }
            let inner = self.inner.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_association(inner, stream, peer.ip()).await {
                    tracing::debug!(%peer, error = %e, "storage SCP association ended with an error");
                }
                drop(permit);
            });
        }
        self.inner.running.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn register(&self, source: MoveSource, expected: Option<HashSet<String>>) -> MoveTicket {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let mut routes = self.inner.lock_routes();
        let message_id = loop {
            let id = next_message_id();
            if !routes.contains_key(&id) {
                break id;
            }
        };
        routes.insert(message_id, Route { claim: Claim { source, expected }, tx });
        MoveTicket { message_id, rx, scp: self.inner.clone() }
    }
}

impl ScpInner {
    fn lock_routes(&self) -> std::sync::MutexGuard<'_, HashMap<u16, Route>> {
        self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True when a move in flight expects sub-operations from `ip`.
    fn expects_host(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.lock_routes().values().any(|r| r.claim.source.hosts.contains(&ip))
    }

    /// The site of a move in flight whose sub-operations `caller` may send.
    fn site_of(&self, caller: &Caller) -> Option<SiteId> {
        self.lock_routes().values().find(|r| r.claim.source.admits(caller)).map(|r| r.claim.source.site.clone())
    }

    fn route_for(&self, request: &Command, caller: &Caller) -> Option<(mpsc::Sender<RetrievedInstance>, String)> {
        let routes = self.lock_routes();
        let id = choose_move(
            routes.iter().map(|(id, route)| (*id, &route.claim)),
            caller,
            request.move_originator_message_id,
            request.affected_sop_instance_uid.as_deref(),
        )?;
        let route = routes.get(&id)?;
        Some((route.tx.clone(), route.claim.source.ae_title.as_str().to_owned()))
    }
}

/// Admits an association when its calling AE title and peer address are those of a site with a
/// move in flight, and it calls our AE title.
struct MoveAccess {
    scp: Arc<ScpInner>,
    ip: IpAddr,
}

impl AccessControl for MoveAccess {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if this_ae_title != called_ae_title {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        match self.scp.site_of(&Caller::new(calling_ae_title, self.ip)) {
            Some(_) => Ok(()),
            None => Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized),
        }
    }
}

async fn serve_association(inner: Arc<ScpInner>, stream: TcpStream, ip: IpAddr) -> Result<(), crate::DimseError> {
    let _ = stream.set_nodelay(true);
    let options = &inner.options;
    let mut scp_options = ServerAssociationOptions::new()
        .ae_access_control(MoveAccess { scp: inner.clone(), ip })
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
        .map_err(|e| {
            if let dicom_ul::association::Error::Rejected { .. } = &e {
                tracing::warn!(%ip, "storage SCP rejected an association from an AE title and address no C-MOVE in flight expects");
            }
            crate::DimseError::from_ul(&scp_site, e)
        })?;
    let caller = Caller::new(dicom_ul::association::Association::peer_ae_title(&association), ip);
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
                    inner.route_for(&message.command, &caller),
                    contexts.get(&message.presentation_context_id),
                    message.data_set,
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
                        tracing::warn!(
                            calling_ae = %caller.ae_title,
                            %ip,
                            "refusing a C-STORE that no C-MOVE in flight of its site claims"
                        );
                        Status::STORE_NOT_AUTHORIZED
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

#[cfg(test)]
mod tests {
    use super::*;

    const PACS_A: &str = "10.0.0.1";
    const PACS_B: &str = "10.0.0.2";
    const ELSEWHERE: &str = "10.0.0.9";

    fn source(site: &str, ae_title: &str, host: &str) -> MoveSource {
        MoveSource {
            site: SiteId::new(site).expect("site id"),
            ae_title: AeTitle::new(ae_title).expect("AE title"),
            hosts: vec![host.parse().expect("address")],
        }
    }

    fn claim(source: MoveSource, expected: &[&str]) -> Claim {
        let expected = (!expected.is_empty()).then(|| expected.iter().map(|uid| (*uid).to_owned()).collect());
        Claim { source, expected }
    }

    fn caller(ae_title: &str, ip: &str) -> Caller {
        Caller::new(ae_title, ip.parse().expect("address"))
    }

    /// Moves 1 and 2 of site A (2 lists instance 1.1), 3 of site B, 4 of site C (another AE
    /// title on site A's host).
    fn moves() -> HashMap<u16, Claim> {
        HashMap::from([
            (1, claim(source("a", "PACS_A", PACS_A), &[])),
            (2, claim(source("a", "PACS_A", PACS_A), &["1.1"])),
            (3, claim(source("b", "PACS_B", PACS_B), &[])),
            (4, claim(source("c", "PACS_C", PACS_A), &["1.4"])),
        ])
    }

    /// What is tested; the caller; the Move Originator Message ID and SOP Instance UID of its
    /// C-STORE; the move chosen.
    type Case = (&'static str, Caller, Option<u16>, Option<&'static str>, Option<u16>);

    #[test]
    fn a_c_store_goes_only_to_a_move_of_the_callers_site() {
        let moves = moves();
        let cases: &[Case] = &[
            ("originator id of a move of the site", caller("PACS_A", PACS_A), Some(2), Some("1.2"), Some(2)),
            ("originator id of another site's move", caller("PACS_B", PACS_B), Some(1), Some("1.2"), Some(3)),
            ("another site's move, none of its own", caller("PACS_C", PACS_A), Some(1), Some("1.2"), None),
            ("the site's AE title from another host", caller("PACS_A", ELSEWHERE), Some(1), Some("1.2"), None),
            ("another AE title from the site's host", caller("INTRUDER", PACS_A), Some(1), Some("1.1"), None),
            ("the site's AE title from another site's host", caller("PACS_A", PACS_B), Some(1), None, None),
            ("the instance a move of the site lists", caller("PACS_A", PACS_A), Some(99), Some("1.1"), Some(2)),
            ("an instance another site's move lists", caller("PACS_B", PACS_B), None, Some("1.4"), Some(3)),
            ("one move of the site could hold it", caller("PACS_A", PACS_A), None, Some("1.2"), Some(1)),
            ("the site's only move lists others", caller("PACS_C", PACS_A), None, Some("1.2"), None),
            ("the site's only move lists it", caller("PACS_C", PACS_A), None, Some("1.4"), Some(4)),
            ("padded AE title, IPv4-mapped address", caller("PACS_B \0", "::ffff:10.0.0.2"), None, None, Some(3)),
        ];
        for (what, caller, originator_id, instance, chosen) in cases {
            let claims = moves.iter().map(|(id, claim)| (*id, claim));
            assert_eq!(choose_move(claims, caller, *originator_id, *instance), *chosen, "{what}");
        }
    }

    #[test]
    fn two_moves_of_the_site_that_both_could_hold_an_instance_claim_none() {
        let moves = HashMap::from([
            (1, claim(source("a", "PACS_A", PACS_A), &[])),
            (2, claim(source("a", "PACS_A", PACS_A), &[])),
            (3, claim(source("a", "PACS_A", PACS_A), &["1.3"])),
            (4, claim(source("a", "PACS_A", PACS_A), &["1.3"])),
        ]);
        let claims = || moves.iter().map(|(id, claim)| (*id, claim));
        assert_eq!(choose_move(claims(), &caller("PACS_A", PACS_A), None, Some("1.1")), None);
        assert_eq!(choose_move(claims(), &caller("PACS_A", PACS_A), None, Some("1.3")), None);
        assert_eq!(choose_move(claims(), &caller("PACS_A", PACS_A), Some(4), Some("1.3")), Some(4));
    }

    #[test]
    fn only_a_site_with_a_move_in_flight_is_admitted() {
        let scp = StoreScp::new(StoreScpOptions::new(AeTitle::new("FEDGW").expect("AE title")));
        let access = |ae_title: &str, ip: &str| {
            MoveAccess { scp: scp.inner.clone(), ip: ip.parse().expect("address") }
                .check_access("FEDGW", ae_title, "FEDGW", None)
        };
        let refused = Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        assert!(!scp.inner.expects_host(PACS_A.parse().expect("address")));
        assert_eq!(access("PACS_A", PACS_A), refused, "no move in flight");
        let ticket = scp.register(source("a", "PACS_A", PACS_A), None);
        assert!(scp.inner.expects_host(PACS_A.parse().expect("address")));
        assert!(scp.inner.expects_host("::ffff:10.0.0.1".parse().expect("address")));
        assert!(!scp.inner.expects_host(ELSEWHERE.parse().expect("address")));
        assert_eq!(access("PACS_A", PACS_A), Ok(()));
        assert_eq!(access("PACS_B", PACS_A), refused, "another AE title");
        assert_eq!(access("PACS_A", ELSEWHERE), refused, "another host");
        let other_called = MoveAccess { scp: scp.inner.clone(), ip: PACS_A.parse().expect("address") }
            .check_access("FEDGW", "PACS_A", "OTHER", None);
        assert_eq!(other_called, Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized));
        drop(ticket);
        assert_eq!(access("PACS_A", PACS_A), refused, "the move is over");
        assert!(!scp.inner.expects_host(PACS_A.parse().expect("address")));
    }
}
