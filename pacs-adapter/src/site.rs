//! How to reach one PACS: its AE, address, limits, deadlines and optional DICOM TLS.

use std::sync::Arc;
use std::time::Duration;

use dicomweb_model::{AeTitle, SiteId};

/// DICOM TLS settings of a site (PS3.15 Annex B), already loaded into a rustls config.
#[derive(Clone)]
pub struct SiteTls {
    pub config: Arc<rustls::ClientConfig>,
    /// Name the PACS certificate must carry: a DNS name or an IP address.
    pub server_name: String,
}

impl std::fmt::Debug for SiteTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// Everything the adapter needs to talk to one PACS.
#[derive(Debug, Clone)]
pub struct SiteEndpoint {
    pub id: SiteId,
    /// Called AE title of the PACS.
    pub called_ae_title: AeTitle,
    /// Our calling AE title (also the C-MOVE destination).
    pub calling_ae_title: AeTitle,
    /// The calling AE title of the associations the PACS opens to the storage SCP for C-MOVE
    /// sub-operations, when it is not `called_ae_title`.
    pub move_calling_ae_title: Option<AeTitle>,
    /// `host:port`.
    pub address: String,
    /// At most this many associations are open to the site at once.
    pub max_associations: usize,
    /// TCP connect, TLS handshake and association negotiation.
    pub connect_timeout: Duration,
    /// Longest wait for any single response (or sub-operation) from the PACS.
    pub response_timeout: Duration,
    /// An idle pooled association older than this is released instead of reused.
    pub idle_timeout: Duration,
    /// Largest PDU we accept (strict reading rejects larger ones).
    pub max_pdu_length: u32,
    /// Largest single instance or identifier accepted from the PACS.
    pub max_data_set_len: usize,
    pub tls: Option<SiteTls>,
    /// TCP_NODELAY on the association's socket. On by default; off only to measure what
    /// Nagle's algorithm costs a DIMSE exchange.
    pub tcp_nodelay: bool,
    /// Ask for immediate acknowledgements before each read (Linux TCP_QUICKACK). On by default;
    /// see `association::quick_ack` for the 40 ms per response it saves with DCMTK-based PACS.
    pub tcp_quickack: bool,
}

impl SiteEndpoint {
    /// An endpoint with the defaults used when a configuration does not say otherwise.
    pub fn new(id: SiteId, calling_ae_title: AeTitle, called_ae_title: AeTitle, address: impl Into<String>) -> Self {
        SiteEndpoint {
            id,
            called_ae_title,
            calling_ae_title,
            move_calling_ae_title: None,
            address: address.into(),
            max_associations: 4,
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(20),
            max_pdu_length: 1024 * 1024,
            max_data_set_len: 2 * 1024 * 1024 * 1024,
            tls: None,
            tcp_nodelay: true,
            tcp_quickack: true,
        }
    }
}
