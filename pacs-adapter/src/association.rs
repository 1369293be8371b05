//! One DIMSE association: establishing it (plain TCP or DICOM TLS) with a context plan, and
//! sending and receiving whole DIMSE messages over it with deadlines.

use std::future::Future;
use std::time::{Duration, Instant};

use dicom_ul::association::client::AsyncTlsStream;
use dicom_ul::association::{
    AsyncAssociation, AsyncClientAssociation, AsyncServerAssociation, ClientAssociationOptions,
};
use dicom_ul::pdu::PresentationContextNegotiated;
use dicom_ul::Pdu;
use tokio::net::TcpStream;

use dicomweb_model::SiteId;

use crate::dimse::{pdus_for, Command, DimseProtocolError, Message, MessageAssembler};
use crate::error::{DimseError, Phase};
use crate::incoming::{self, Incoming, ReadError};
use crate::site::SiteEndpoint;
use crate::syntax::ContextPlan;

type UlResult<T> = Result<T, dicom_ul::association::Error>;

/// Sends and receives PDUs; implemented by client associations (plain and TLS) and by the
/// server association of the storage SCP, so message handling is written once.
pub(crate) trait PduLink: Send {
    fn send_pdu(&mut self, pdu: &Pdu) -> impl Future<Output = UlResult<()>> + Send;
    /// Reads the next PDU: a P-DATA-TF's values go to `assembler`, any other PDU is returned.
    fn receive_into(
        &mut self,
        assembler: &mut MessageAssembler,
    ) -> impl Future<Output = Result<Incoming, ReadError>> + Send;
    fn peer_max_pdu_length(&self) -> u32;
}

/// Reads the next PDU of `association` through its own read buffer, at most `max_pdu_length`
/// (the maximum this side offered) long.
async fn receive_into<S, A>(
    association: &mut A,
    max_pdu_length: u32,
    assembler: &mut MessageAssembler,
) -> Result<Incoming, ReadError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    A: AsyncAssociation<S> + Send,
{
    let (socket, buffer) = association.get_mut();
    incoming::read_pdu(socket, buffer, max_pdu_length, &mut |pdv| assembler.push(pdv)).await
}

/// Asks the kernel to acknowledge what arrives next at once. DCMTK-based peers write a PDU as
/// two segments (header, then body); with Nagle's algorithm on their side the body waits for
/// the header's acknowledgement, which a delayed ACK holds back for about 40 ms, so every
/// response would cost 40 ms. Quick-ack mode is not sticky, so it is set before every read.
fn quick_ack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

impl PduLink for AsyncServerAssociation<TcpStream> {
    fn send_pdu(&mut self, pdu: &Pdu) -> impl Future<Output = UlResult<()>> + Send {
        self.send(pdu)
    }
    async fn receive_into(&mut self, assembler: &mut MessageAssembler) -> Result<Incoming, ReadError> {
        quick_ack(self.inner_stream());
        let max = self.acceptor_max_pdu_length();
        receive_into(self, max, assembler).await
    }
    fn peer_max_pdu_length(&self) -> u32 {
        self.requestor_max_pdu_length()
    }
}

/// What arrived when a message was expected. Short-lived, so the size difference between the
/// variants does not matter.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    Message(Message),
    /// The peer asked to release the association (A-RELEASE-RQ).
    ReleaseRequested,
}

/// Message framing over a PDU link: reassembles incoming messages, splits outgoing ones.
#[derive(Debug)]
pub(crate) struct MessageChannel<L> {
    pub(crate) link: L,
    assembler: MessageAssembler,
    site: SiteId,
}

impl<L: PduLink> MessageChannel<L> {
    pub(crate) fn new(link: L, site: SiteId, max_data_set_len: usize) -> Self {
        MessageChannel { link, assembler: MessageAssembler::new(max_data_set_len), site }
    }

    pub(crate) fn is_at_message_boundary(&self) -> bool {
        self.assembler.is_idle()
    }

    pub(crate) async fn send(
        &mut self,
        presentation_context_id: u8,
        command: &Command,
        data_set: Option<&[u8]>,
    ) -> Result<(), DimseError> {
        let encoded = command.encode();
        for pdu in pdus_for(presentation_context_id, &encoded, data_set, self.link.peer_max_pdu_length()) {
            self.link.send_pdu(&pdu).await.map_err(|e| DimseError::from_ul(&self.site, e))?;
        }
        Ok(())
    }

    /// Waits at most `timeout` for the next PDU each time one is needed.
    pub(crate) async fn receive(&mut self, timeout: Duration) -> Result<Received, DimseError> {
        loop {
            if let Some(message) = self.assembler.next_message() {
                return Ok(Received::Message(message));
            }
            let incoming = tokio::time::timeout(timeout, self.link.receive_into(&mut self.assembler))
                .await
                .map_err(|_| DimseError::Timeout { site: self.site.clone(), phase: Phase::Response, after: timeout })?
                .map_err(|e| DimseError::from_read(&self.site, e))?;
            match incoming {
                Incoming::PData => {}
                Incoming::Other(Pdu::ReleaseRQ) => return Ok(Received::ReleaseRequested),
                Incoming::Other(Pdu::AbortRQ { .. }) => return Err(DimseError::Aborted { site: self.site.clone() }),
                Incoming::Other(other) => {
                    return Err(DimseError::Protocol {
                        site: self.site.clone(),
                        source: DimseProtocolError::UnexpectedMessage(format!("PDU {}", pdu_name(&other))),
                    })
                }
            }
        }
    }

    /// Like [`receive`](Self::receive), but a release request is an error: an SCU expects
    /// responses, and the PACS hanging up mid-operation means the operation is lost.
    pub(crate) async fn receive_message(&mut self, timeout: Duration) -> Result<Message, DimseError> {
        match self.receive(timeout).await? {
            Received::Message(message) => Ok(message),
            Received::ReleaseRequested => Err(DimseError::ConnectionClosed { site: self.site.clone() }),
        }
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "of unknown type",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

/// The transport under a client association.
#[derive(Debug)]
pub(crate) enum Transport {
    Plain(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<AsyncTlsStream>>),
}

#[derive(Debug)]
pub(crate) struct ClientLink {
    transport: Transport,
    quick_ack: bool,
}

impl PduLink for ClientLink {
    async fn send_pdu(&mut self, pdu: &Pdu) -> UlResult<()> {
        match &mut self.transport {
            Transport::Plain(a) => a.send(pdu).await,
            Transport::Tls(a) => a.send(pdu).await,
        }
    }
    async fn receive_into(&mut self, assembler: &mut MessageAssembler) -> Result<Incoming, ReadError> {
        match &mut self.transport {
            Transport::Plain(a) => {
                if self.quick_ack {
                    quick_ack(a.inner_stream());
                }
                let max = a.requestor_max_pdu_length();
                receive_into(a.as_mut(), max, assembler).await
            }
            Transport::Tls(a) => {
                if self.quick_ack {
                    quick_ack(a.inner_stream().get_ref().0);
                }
                let max = a.requestor_max_pdu_length();
                receive_into(a.as_mut(), max, assembler).await
            }
        }
    }
    fn peer_max_pdu_length(&self) -> u32 {
        match &self.transport {
            Transport::Plain(a) => a.acceptor_max_pdu_length(),
            Transport::Tls(a) => a.acceptor_max_pdu_length(),
        }
    }
}

/// An established association to a PACS, as the pool hands it out.
#[derive(Debug)]
pub struct DimseAssociation {
    pub(crate) channel: MessageChannel<ClientLink>,
    contexts: Vec<PresentationContextNegotiated>,
    pub(crate) plan: ContextPlan,
    pub(crate) site: SiteId,
    pub(crate) last_used: Instant,
}

impl DimseAssociation {
    /// Connects and negotiates `plan`, all within the site's connect deadline.
    pub async fn establish(site: &SiteEndpoint, plan: &ContextPlan) -> Result<Self, DimseError> {
        let deadline = site.connect_timeout;
        tokio::time::timeout(deadline, Self::establish_inner(site, plan)).await.map_err(|_| DimseError::Timeout {
            site: site.id.clone(),
            phase: Phase::Connect,
            after: deadline,
        })?
    }

    async fn establish_inner(site: &SiteEndpoint, plan: &ContextPlan) -> Result<Self, DimseError> {
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(site.calling_ae_title.as_str().to_owned())
            .called_ae_title(site.called_ae_title.as_str().to_owned())
            .max_pdu_length(site.max_pdu_length)
            .strict(true);
        for context in &plan.contexts {
            options =
                options.with_presentation_context(context.abstract_syntax.clone(), context.transfer_syntaxes.clone());
            if context.scp_role {
                options = options.with_role_selection(context.abstract_syntax.clone(), true, true);
            }
        }
        let transport = match &site.tls {
            None => {
                let mut association =
                    options.establish_async(site.address.as_str()).await.map_err(|e| no_association(&site.id, e))?;
                // Small command PDUs must not wait for Nagle's algorithm: with delayed ACKs on the
                // peer that costs up to 40 ms per DIMSE round trip.
                let _ = association.inner_stream().set_nodelay(site.tcp_nodelay);
                Transport::Plain(Box::new(association))
            }
            Some(tls) => {
                let mut association = options
                    .tls_config(tls.config.clone())
                    .server_name(&tls.server_name)
                    .establish_tls_async(site.address.as_str())
                    .await
                    .map_err(|e| DimseError::from_ul(&site.id, e))?;
                let _ = association.inner_stream().get_ref().0.set_nodelay(site.tcp_nodelay);
                Transport::Tls(Box::new(association))
            }
        };
        let contexts = match &transport {
            Transport::Plain(a) => a.presentation_contexts().to_vec(),
            Transport::Tls(a) => a.presentation_contexts().to_vec(),
        };
        let link = ClientLink { transport, quick_ack: site.tcp_quickack };
        Ok(DimseAssociation {
            channel: MessageChannel::new(link, site.id.clone(), site.max_data_set_len),
            contexts,
            plan: plan.clone(),
            site: site.id.clone(),
            last_used: Instant::now(),
        })
    }

    /// The accepted context for an abstract syntax, preferring the given transfer syntax.
    pub fn accepted_context(&self, abstract_syntax: &str, transfer_syntax: Option<&str>) -> Option<(u8, &str)> {
        let mut candidates = self.contexts.iter().filter(|c| trim_uid(&c.abstract_syntax) == abstract_syntax);
        let found = match transfer_syntax {
            Some(ts) => candidates.find(|c| trim_uid(&c.transfer_syntax) == ts),
            None => candidates.next(),
        }?;
        Some((found.id, trim_uid(&found.transfer_syntax)))
    }

    /// Transfer syntax accepted on a presentation context.
    pub fn transfer_syntax_of(&self, presentation_context_id: u8) -> Option<&str> {
        self.contexts.iter().find(|c| c.id == presentation_context_id).map(|c| trim_uid(&c.transfer_syntax))
    }

    /// The context for an abstract syntax, or a typed error naming it.
    pub(crate) fn require_context(&self, abstract_syntax: &str) -> Result<(u8, String), DimseError> {
        self.accepted_context(abstract_syntax, None).map(|(id, ts)| (id, ts.to_owned())).ok_or_else(|| {
            DimseError::NoPresentationContext { site: self.site.clone(), what: abstract_syntax.to_owned() }
        })
    }

    /// Graceful A-RELEASE; errors are ignored since the association is finished either way.
    pub async fn release(self, timeout: Duration) {
        let release = async {
            match self.channel.link.transport {
                Transport::Plain(a) => a.release().await,
                Transport::Tls(a) => a.release().await,
            }
        };
        let _ = tokio::time::timeout(timeout, release).await;
    }

    /// A-ABORT and close.
    pub async fn abort(self) {
        let abort = async {
            match self.channel.link.transport {
                Transport::Plain(a) => a.abort().await,
                Transport::Tls(a) => a.abort().await,
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), abort).await;
    }
}

/// The error of a plain association that was not established. dicom-ul reports every failure
/// to read the A-ASSOCIATE response (the connection closed or reset, a malformed PDU) as "TLS
/// not enabled, but peer seems to be sending TLS data", whatever came; that would send an
/// administrator looking for a TLS problem, so it is named for what is known.
fn no_association(site: &SiteId, error: dicom_ul::association::Error) -> DimseError {
    match error {
        dicom_ul::association::Error::TlsNotSupported => DimseError::Transport {
            site: site.clone(),
            detail: "no A-ASSOCIATE response: the connection closed or failed while associating, or the PACS \
                     answered with something else (DICOM TLS?)"
                .into(),
        },
        other => DimseError::from_ul(site, other),
    }
}

/// Peers pad UIDs with NUL; comparisons are on the cleaned value.
pub(crate) fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}
