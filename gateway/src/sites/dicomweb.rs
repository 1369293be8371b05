//! A site reached by DICOMweb (PS3.18): an origin server, such as a gateway de-identifying
//! inside a hospital, or an archive or cloud store that speaks DICOMweb natively. Its searches
//! are QIDO-RS (the identifier the core built becomes a query string: matching keys with values,
//! the others includefield), its retrievals WADO-RS multipart responses read part by part as they
//! arrive (one instance held at a time, as a DIMSE retrieval holds one), its stores STOW-RS, and
//! its echo a search for one study. crate::sites::Site wraps each call with the site's health
//! and accounting, as it wraps DIMSE.
//!
//! How the gateway authenticates to the origin (`[[sites]] auth`, crate::config::OriginAuth) is the site's configuration;
//! what a caller may see is decided at the origin when the caller's own token is forwarded, and
//! by the gateway's projects in every case (docs/TWO-TIER.md).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dicom_core::value::Value;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_model::multipart::{boundary_of, MultipartReader};
use dicomweb_model::{SeriesInstanceUid, SiteId, SopInstanceUid, StudyInstanceUid};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use pacs_adapter::{PlannedInstance, QueryLevel, RetrieveTarget, RetrievedInstance};

use crate::config::{ClientCredentials, DicomwebSiteConfig, OriginAuth, SiteConfig};
use crate::sites::pace::{self, Pace};
use crate::sites::touched::Touched;

/// Why a DICOMweb operation did not reach an answer. Messages name the site, the operation and
/// the HTTP status, never a URL (it holds UIDs) or anything of a response's body.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WebError {
    #[error("site {site}: cannot connect: {detail}")]
    Connect { site: SiteId, detail: String },
    #[error("site {site}: {operation} did not answer within {after:?}")]
    Timeout { site: SiteId, operation: &'static str, after: Duration },
    #[error("site {site} answered {operation} with HTTP {status}")]
    Status { site: SiteId, operation: &'static str, status: u16 },
    /// The origin is at its bounds (429, or 503 with Retry-After) and asks to be asked again.
    #[error("site {site} is busy ({operation}: HTTP {status}); retry in {} s", retry_after.as_secs())]
    Busy { site: SiteId, operation: &'static str, status: u16, retry_after: Duration },
    /// The origin refused the gateway's own credentials (401, 403): a configuration fault.
    #[error("site {site} refused the gateway's credentials ({operation}: HTTP {status})")]
    CredentialsRefused { site: SiteId, operation: &'static str, status: u16 },
    #[error("site {site}: {operation}: {detail}")]
    Malformed { site: SiteId, operation: &'static str, detail: String },
    #[error("site {site}: the gateway's credentials cannot be had: {detail}")]
    Credentials { site: SiteId, detail: String },
    /// A retrieval answered with only part of what was asked (206 Partial Content, or a
    /// Warning), where that can no longer be said before the response (a later request of it).
    #[error("site {site} sent only part of what was asked ({operation}: {how})")]
    Partly { site: SiteId, operation: &'static str, how: String },
    /// STOW-RS stored nothing of the instance: the origin's failure reason (PS3.18 Table I.2-2).
    #[error("site {site} did not store the instance (reason {reason:#06x})")]
    Refused { site: SiteId, reason: u16 },
}

impl WebError {
    /// The site that failed.
    pub(crate) fn site(&self) -> &SiteId {
        match self {
            WebError::Connect { site, .. }
            | WebError::Timeout { site, .. }
            | WebError::Status { site, .. }
            | WebError::Busy { site, .. }
            | WebError::CredentialsRefused { site, .. }
            | WebError::Malformed { site, .. }
            | WebError::Credentials { site, .. }
            | WebError::Partly { site, .. }
            | WebError::Refused { site, .. } => site,
        }
    }

    /// The origin itself is at fault (unreachable, timed out, broke the protocol, failing with
    /// a 5xx, refusing the gateway's own credentials): it counts against the site's health.
    pub(crate) fn is_site_fault(&self) -> bool {
        match self {
            WebError::Connect { .. }
            | WebError::Timeout { .. }
            | WebError::Malformed { .. }
            | WebError::CredentialsRefused { .. }
            | WebError::Credentials { .. } => true,
            // A redirect is not followed: the site's URL is wrong (as http for https), which
            // only its configuration can put right.
            WebError::Status { status, .. } | WebError::Busy { status, .. } => {
                *status >= 500 || (300..400).contains(status)
            }
            WebError::Refused { .. } | WebError::Partly { .. } => false,
        }
    }

    /// Why the origin itself is at fault, when it is (see [`Self::is_site_fault`]).
    pub(crate) fn fault(&self) -> Option<&'static str> {
        self.is_site_fault().then(|| self.fault_reason())
    }

    /// How long the origin asked to be left alone, when it is busy.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            WebError::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    pub(crate) fn fault_reason(&self) -> &'static str {
        match self {
            WebError::Connect { .. } => "unreachable",
            WebError::Timeout { .. } => "timed out",
            WebError::Malformed { .. } => "broke the DICOMweb protocol",
            WebError::CredentialsRefused { .. } => "refused the gateway's credentials",
            WebError::Credentials { .. } => "the gateway's credentials cannot be had",
            WebError::Status { .. } => "failed",
            WebError::Busy { .. } => "busy",
            WebError::Refused { .. } => "refused",
            WebError::Partly { .. } => "sent only part of what was asked",
        }
    }

    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, WebError::Timeout { .. })
    }

    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, WebError::Status { status: 404, .. })
    }

    /// The origin answered 403 about what was asked (withheld instances), not about the caller.
    pub(crate) fn is_forbidden(&self) -> bool {
        matches!(self, WebError::Status { status: 403, .. })
    }
}

/// The instances of one WADO-RS answer, as its parts arrive.
type InstanceParts = BoxStream<'static, Result<RetrievedInstance, WebError>>;

/// The longest wait passed on from a busy origin's Retry-After, in seconds.
const MAX_RETRY_AFTER: u64 = 60;

/// The failure reason of an instance the origin refused the caller to store: "Refused: Not
/// Authorized" (PS3.7 Annex C).
pub(crate) const NOT_AUTHORIZED: u16 = 0x0124;

/// The most matches asked of an origin at once when it pages its answers.
const PAGE: usize = 1000;

/// Below this many matches, a page short of what was asked is taken as the last: origins that
/// cap their QIDO-RS answers cap them at 100 or more (dcm4chee and the cloud stores at hundreds
/// to thousands), so a shorter page is all there is. A longer short page costs one more request.
const SHORTEST_CAP: usize = 100;

/// A DICOMweb origin: its base URL (the `/studies` resource's parent), the HTTP client (its
/// pool and TLS), the credentials, and the bounds.
#[derive(Debug)]
pub(crate) struct Dicomweb {
    pub(crate) site: SiteId,
    base: String,
    client: reqwest::Client,
    credentials: OriginAuth,
    /// The token file's token, and the file's modification time it was read at.
    token: std::sync::Mutex<Option<(std::time::SystemTime, Arc<str>)>>,
    /// The identity provider's token and when to fetch another (client credentials).
    granted: tokio::sync::Mutex<Option<(Instant, Arc<str>)>>,
    /// The client the identity provider is asked with (the system's anchors: the origin's
    /// pinned CA is the origin's).
    identity_provider: reqwest::Client,
    /// Requests at once (`max_connections`).
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    /// The most requests in flight at once so far.
    peak: std::sync::atomic::AtomicUsize,
    /// The largest instance held while it is read (one at a time per retrieval).
    max_instance: usize,
    timeout: Duration,
}

impl Dicomweb {
    /// The origin of a configured DICOMweb site; its TLS files are read here.
    pub(crate) fn new(site: &SiteConfig, web: &DicomwebSiteConfig) -> Result<Dicomweb, String> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(site.timeout.min(Duration::from_secs(10)))
            .read_timeout(site.timeout)
            .pool_max_idle_per_host(web.max_connections)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dicomweb-gateway/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &web.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("ca {}: {e}", ca.display()))?;
            let certificates =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("ca {}: {e}", ca.display()))?;
            if certificates.is_empty() {
                return Err(format!("ca {}: no certificate in it", ca.display()));
            }
            // Pinned: only these anchors, not the system's.
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some((cert, key)) = &web.cert_and_key {
            let mut pem = std::fs::read(cert).map_err(|e| format!("cert {}: {e}", cert.display()))?;
            pem.extend(std::fs::read(key).map_err(|e| format!("key {}: {e}", key.display()))?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| format!("cert and key: {e}"))?;
            builder = builder.identity(identity);
        }
        let client = builder.build().map_err(|e| format!("the HTTP client: {e}"))?;
        let identity_provider = reqwest::Client::builder()
            .timeout(site.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the HTTP client: {e}"))?;
        Ok(Dicomweb {
            site: site.id.clone(),
            base: web.url.trim_end_matches('/').to_owned(),
            client,
            credentials: web.auth.clone(),
            token: std::sync::Mutex::new(None),
            granted: tokio::sync::Mutex::new(None),
            identity_provider,
            slots: Arc::new(tokio::sync::Semaphore::new(web.max_connections)),
            max_connections: web.max_connections,
            peak: std::sync::atomic::AtomicUsize::new(0),
            max_instance: usize::try_from(web.max_instance_size).unwrap_or(usize::MAX),
            timeout: site.timeout,
        })
    }

    /// Requests in flight now, and the most at once so far.
    pub(crate) fn in_use(&self) -> (usize, usize) {
        let in_use = self.max_connections - self.slots.available_permits();
        (in_use, self.peak.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The Authorization header for a request made for `touched`'s caller.
    async fn authorization(&self, touched: &Touched) -> Result<Option<Arc<str>>, WebError> {
        self.authorization_forwarding(touched.authorization()).await
    }

    /// The Authorization header for a request made for a caller whose own is `forwarded`.
    async fn authorization_forwarding(&self, forwarded: Option<Arc<str>>) -> Result<Option<Arc<str>>, WebError> {
        match &self.credentials {
            OriginAuth::None => Ok(None),
            OriginAuth::Forward => Ok(forwarded),
            OriginAuth::ClientCredentials(grant) => self.granted(grant).await.map(Some),
            OriginAuth::TokenFile(path) => self.token_file(path).await.map(Some),
        }
    }

    /// The token file's token, read again when the file changes.
    async fn token_file(&self, path: &Path) -> Result<Arc<str>, WebError> {
        let modified = tokio::fs::metadata(path).await.and_then(|m| m.modified()).map_err(|e| self.token_error(e))?;
        if let Some((_, token)) =
            self.token.lock().unwrap_or_else(|p| p.into_inner()).as_ref().filter(|(at, _)| *at == modified)
        {
            return Ok(token.clone());
        }
        let text = tokio::fs::read_to_string(path).await.map_err(|e| self.token_error(e))?;
        let token = text.trim();
        if token.is_empty() || token.chars().any(|c| c.is_control()) {
            return Err(self.credentials_error("the token file is empty or not one line"));
        }
        let header: Arc<str> = format!("Bearer {token}").into();
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((modified, header.clone()));
        Ok(header)
    }

    fn token_error(&self, e: std::io::Error) -> WebError {
        self.credentials_error(format!("the token file: {}", e.kind()))
    }

    fn credentials_error(&self, detail: impl Into<String>) -> WebError {
        WebError::Credentials { site: self.site.clone(), detail: detail.into() }
    }

    /// The identity provider's token (client credentials grant, RFC 6749 §4.4), fetched when
    /// there is none or it is about to expire; one fetch at a time.
    async fn granted(&self, grant: &ClientCredentials) -> Result<Arc<str>, WebError> {
        let mut granted = self.granted.lock().await;
        if let Some((_, token)) = granted.as_ref().filter(|(refresh_at, _)| Instant::now() < *refresh_at) {
            return Ok(token.clone());
        }
        let secret = tokio::fs::read_to_string(&grant.secret_file)
            .await
            .map_err(|e| self.credentials_error(format!("the client secret file: {}", e.kind())))?;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", grant.client_id.as_str()),
            ("client_secret", secret.trim()),
        ];
        if let Some(scope) = &grant.scope {
            form.push(("scope", scope.as_str()));
        }
        let response = self
            .identity_provider
            .post(&grant.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| self.credentials_error(format!("the identity provider: {}", cause(&e))))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(self.credentials_error(format!("the identity provider answered HTTP {status}")));
        }
        let body = self.body(response, "token", 1 << 20).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| self.credentials_error("the token answer is not JSON"))?;
        let token = answer["access_token"]
            .as_str()
            .filter(|t| !t.is_empty() && !t.chars().any(|c| c.is_control() || c == ' '))
            .ok_or_else(|| self.credentials_error("the token answer has no access_token"))?;
        // Fetched again before it expires: at most 30 s before, and at half its life for a short one.
        // Its lifetime as the provider says, within 2 s (not a fetch per request) and a day.
        let lifetime = Duration::from_secs(answer["expires_in"].as_u64().unwrap_or(300).clamp(2, 86_400));
        let refresh_at = Instant::now() + lifetime - (lifetime / 2).min(Duration::from_secs(30));
        let header: Arc<str> = format!("Bearer {token}").into();
        *granted = Some((refresh_at, header.clone()));
        Ok(header)
    }

    /// Sends a request and waits for its status line and headers (within the site's timeout),
    /// holding one of the site's slots for as long as the response is read.
    async fn send(
        &self,
        authorization: Option<Arc<str>>,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::Response, tokio::sync::OwnedSemaphorePermit), WebError> {
        self.send_within(authorization, operation, request, self.timeout).await
    }

    /// [`Self::send`], the request sent and answered `within` (longer than the site's timeout
    /// for one whose body takes time to send).
    async fn send_within(
        &self,
        authorization: Option<Arc<str>>,
        operation: &'static str,
        request: reqwest::RequestBuilder,
        within: Duration,
    ) -> Result<(reqwest::Response, tokio::sync::OwnedSemaphorePermit), WebError> {
        let permit = tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| WebError::Timeout { site: self.site.clone(), operation, after: self.timeout })?
            .map_err(|_| WebError::Connect { site: self.site.clone(), detail: "the site is shut down".into() })?;
        self.peak.fetch_max(self.in_use().0, std::sync::atomic::Ordering::Relaxed);
        let request = match authorization {
            Some(authorization) => request.header(reqwest::header::AUTHORIZATION, authorization.as_ref()),
            None => request,
        };
        let request = request.build().map_err(|e| self.transport(operation, &e))?;
        // A GET the origin closed a kept-alive connection under, before answering, is sent once
        // more on a new connection: an origin may close an idle connection just as it is reused,
        // and a GET changes nothing there. Any other request is not repeated.
        let is_get = request.method() == reqwest::Method::GET;
        let again = || is_get.then(|| request.try_clone()).flatten();
        let (closed_again, refused_again) = (again(), again());
        let response = match (self.execute(operation, request, within).await?, closed_again) {
            (Err(e), Some(again)) if closed_unanswered(&e) => {
                tracing::debug!(site = %self.site, operation, "the origin closed a kept-alive connection; asked again");
                self.execute(operation, again, within).await?
            }
            (answer, _) => answer,
        }
        .map_err(|e| self.transport(operation, &e))?;
        // The gateway's own credentials refused (a 403 without a Bearer challenge is about what
        // was asked, such as withheld instances, and is the caller's answer).
        if refuses_the_caller(&response) && self.credentials != OriginAuth::Forward {
            let OriginAuth::ClientCredentials(grant) = &self.credentials else {
                return Err(self.credentials_refused(operation, &response));
            };
            // A granted token the origin no longer takes (revoked, or expired before its
            // time): a GET is asked once more with a new one.
            *self.granted.lock().await = None;
            let Some(mut again) = refused_again else { return Err(self.credentials_refused(operation, &response)) };
            let token = self.granted(grant).await?;
            let header = reqwest::header::HeaderValue::from_str(&token)
                .map_err(|_| self.credentials_error("the granted token is not a header value"))?;
            again.headers_mut().insert(reqwest::header::AUTHORIZATION, header);
            let response = self.execute(operation, again, within).await?.map_err(|e| self.transport(operation, &e))?;
            if refuses_the_caller(&response) {
                *self.granted.lock().await = None;
                return Err(self.credentials_refused(operation, &response));
            }
            return Ok((response, permit));
        }
        Ok((response, permit))
    }

    fn credentials_refused(&self, operation: &'static str, response: &reqwest::Response) -> WebError {
        WebError::CredentialsRefused { site: self.site.clone(), operation, status: response.status().as_u16() }
    }

    /// Sends a built request and waits for its status line and headers, `within` that (the
    /// outer error); the inner one is the transport's.
    async fn execute(
        &self,
        operation: &'static str,
        request: reqwest::Request,
        within: Duration,
    ) -> Result<Result<reqwest::Response, reqwest::Error>, WebError> {
        tokio::time::timeout(within, self.client.execute(request)).await.map_err(|_| WebError::Timeout {
            site: self.site.clone(),
            operation,
            after: within,
        })
    }

    /// The failure an answer's status says: busy (429; 503 with Retry-After) with how long to
    /// wait, or any other status.
    fn status_error(&self, operation: &'static str, response: &reqwest::Response) -> WebError {
        let status = response.status().as_u16();
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match (status, wait) {
            (429, _) | (503, Some(_)) => WebError::Busy {
                site: self.site.clone(),
                operation,
                status,
                // An HTTP-date or no value: a second; never more than a minute.
                retry_after: Duration::from_secs(wait.unwrap_or(1).clamp(1, MAX_RETRY_AFTER)),
            },
            _ => WebError::Status { site: self.site.clone(), operation, status },
        }
    }

    fn transport(&self, operation: &'static str, e: &reqwest::Error) -> WebError {
        if e.is_timeout() {
            WebError::Timeout { site: self.site.clone(), operation, after: self.timeout }
        } else if e.is_connect() {
            // The chain says why (refused, TLS, name) without the URL.
            WebError::Connect { site: self.site.clone(), detail: cause(e) }
        } else {
            WebError::Malformed { site: self.site.clone(), operation, detail: cause(e) }
        }
    }

    /// A QIDO-RS search: the matches of `identifier` at `level`, at most `at_most` of them
    /// (then true: there were more). A caller the origin refuses (401, 403, its own token
    /// forwarded) has no matches there.
    pub(crate) async fn find(
        &self,
        touched: &Touched,
        level: QueryLevel,
        identifier: &InMemDicomObject,
        at_most: usize,
    ) -> Result<(Vec<InMemDicomObject>, bool), WebError> {
        let resource = match level {
            QueryLevel::Study => "studies",
            QueryLevel::Series => "series",
            QueryLevel::Image => "instances",
        };
        let parameters = query_of(identifier);
        let mut found = Vec::new();
        let mut first_of_last_page: Option<serde_json::Value> = None;
        // Paged: some origins cap `limit` below what was asked and say nothing.
        loop {
            let wanted = (at_most + 1 - found.len()).min(PAGE);
            let mut page = parameters.clone();
            page.push(("limit".into(), wanted.to_string()));
            if !found.is_empty() {
                page.push(("offset".into(), found.len().to_string()));
            }
            let request = self
                .client
                .get(format!("{}/{resource}", self.base))
                .query(&page)
                .header(reqwest::header::ACCEPT, "application/dicom+json");
            let (response, _permit) = self.send(self.authorization(touched).await?, "QIDO-RS", request).await?;
            let status = response.status().as_u16();
            match status {
                204 => break,
                200 => {}
                404 => return Ok((Vec::new(), false)),
                _ if refuses_the_caller(&response) => return Ok((Vec::new(), false)),
                _ => return Err(self.status_error("QIDO-RS", &response)),
            }
            // A page's answer is held whole, within 16 KiB a match on average (a match is a
            // few KiB), 1 to 16 MiB: parsed JSON takes several times its text.
            let body = self.body(response, "QIDO-RS", wanted.saturating_mul(16 << 10).clamp(1 << 20, 16 << 20)).await?;
            // A large page is read off the async runtime.
            let (matches, first) = if body.len() > 1 << 20 {
                tokio::task::spawn_blocking(move || read_page(&body)).await.map_err(|e| self.malformed("QIDO-RS", e))?
            } else {
                read_page(&body)
            }
            .map_err(|e| self.malformed("QIDO-RS", e))?;
            // An origin that takes no `offset` answers each page with its first again: what it
            // has past that page cannot be had, so the answer is taken as cut short.
            if first.is_some() && first_of_last_page.is_some() && first == first_of_last_page {
                return Ok((found, true));
            }
            let got = matches.len();
            found.extend(matches);
            if found.len() > at_most {
                found.truncate(at_most);
                return Ok((found, true));
            }
            // A page short of what was asked is the last when it is shorter than any cap an
            // origin is known to put on its answers; a longer one may be such a cap (and say
            // nothing of it), so the next page is asked.
            if got == 0 || (got < wanted && got < SHORTEST_CAP) {
                break;
            }
            first_of_last_page = first;
        }
        Ok((found, false))
    }

    /// Reads a whole (small) body within `max` bytes.
    async fn body(&self, response: reqwest::Response, operation: &'static str, max: usize) -> Result<Bytes, WebError> {
        let mut body = bytes::BytesMut::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.transport(operation, &e))?;
            if body.len() + chunk.len() > max {
                return Err(self.malformed(operation, format!("the answer is larger than {max} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    fn malformed(&self, operation: &'static str, detail: impl std::fmt::Display) -> WebError {
        WebError::Malformed { site: self.site.clone(), operation, detail: detail.to_string() }
    }

    /// A WADO-RS retrieval of `target` in the instances' stored transfer syntaxes: instances
    /// as the origin's multipart response delivers them, one held at a time. A list of
    /// instances is asked one instance at a time, in order.
    pub(crate) async fn retrieve(
        self: &Arc<Self>,
        touched: &Touched,
        target: RetrieveTarget,
    ) -> Result<BoxStream<'static, Result<RetrievedInstance, WebError>>, WebError> {
        let base = format!("{}/studies/{}", self.base, target.study);
        let urls: Vec<String> = match (&target.series, target.instances.as_slice()) {
            (None, []) => vec![base],
            (Some(series), []) => vec![format!("{base}/series/{series}")],
            (Some(series), instances) => {
                instances.iter().map(|i| format!("{base}/series/{series}/instances/{i}")).collect()
            }
            // An instance without its series: every instance resource needs it.
            (None, _) => return Err(self.malformed("WADO-RS", "an instance asked without its series")),
        };
        // The credentials are had for each request: a granted token may expire during a long
        // list of instances.
        let forwarded = touched.authorization();
        let authorization = self.authorization_forwarding(forwarded.clone()).await?;
        // The first response is awaited here, so that a missing study or a failing origin is
        // known before the caller's response starts, and so is an answer that says it is
        // partial: the request's response says so too.
        let mut urls = urls.into_iter();
        let first = urls.next().map(|url| self.clone().instances_at(url, authorization));
        let Some(first) = first else { return Ok(stream::empty().boxed()) };
        let (first, partly) = first.await?;
        if let Some(how) = partly {
            touched.note_partly(format!("site {} sent only part of what was asked ({how})", self.site));
        }
        let this = self.clone();
        let rest = stream::iter(urls)
            .then(move |url| {
                let this = this.clone();
                let forwarded = forwarded.clone();
                async move {
                    let authorization = this.authorization_forwarding(forwarded).await?;
                    let (instances, partly) = this.clone().instances_at(url, authorization).await?;
                    // Past the first answer, a partial one can only end the retrieval.
                    let end =
                        partly.map(|how| Err(WebError::Partly { site: this.site.clone(), operation: "WADO-RS", how }));
                    Ok::<_, WebError>(instances.chain(stream::iter(end)))
                }
            })
            .try_flatten();
        Ok(first.chain(rest).boxed())
    }

    /// The instances of one WADO-RS resource, read part by part; the request has been answered
    /// when this returns. With them, how the origin said its answer is partial, when it did
    /// (206 Partial Content, or a Warning such as a gateway's for instances it withheld).
    async fn instances_at(
        self: Arc<Self>,
        url: String,
        authorization: Option<Arc<str>>,
    ) -> Result<(InstanceParts, Option<String>), WebError> {
        let request = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "multipart/related; type=\"application/dicom\"; transfer-syntax=*");
        let (response, permit) = self.send(authorization, "WADO-RS", request).await?;
        let status = response.status().as_u16();
        match status {
            200 | 206 => {}
            204 | 404 => return Ok((stream::empty().boxed(), None)),
            // The caller (its own token forwarded) is not let see it there: nothing of it.
            _ if refuses_the_caller(&response) => return Ok((stream::empty().boxed(), None)),
            _ => return Err(self.status_error("WADO-RS", &response)),
        }
        // The origin's own words are not passed on (they are its free text).
        let partly = match (status, response.headers().contains_key(reqwest::header::WARNING)) {
            (206, _) => Some("HTTP 206 Partial Content".to_owned()),
            (_, true) => Some(format!("HTTP {status} with a Warning")),
            _ => None,
        };
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let Some(boundary) = boundary_of(content_type) else {
            return Err(self.malformed("WADO-RS", "the answer is not multipart/related"));
        };
        let site = self.site.clone();
        // The body's bytes counted as they come (each part keeps a pace), and whether a read of
        // it timed out (the multipart reader keeps only a failure's message).
        let (moved, timed_out) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (counting, noting) = (moved.clone(), timed_out.clone());
        let body = response.bytes_stream().inspect(move |chunk| match chunk {
            Ok(bytes) => _ = counting.fetch_add(bytes.len() as u64, Ordering::Relaxed),
            Err(e) if e.is_timeout() => noting.store(true, Ordering::Relaxed),
            Err(_) => {}
        });
        let reader = MultipartReader::new(body, &boundary, self.max_instance, u64::MAX);
        let timeout = self.timeout;
        let parts = stream::try_unfold((reader, permit), move |(mut reader, permit)| {
            let (site, moved, timed_out) = (site.clone(), moved.clone(), timed_out.clone());
            async move {
                // A part may take the site's timeout and what its bytes need at the slowest rate.
                let at_start = moved.load(Ordering::Relaxed);
                let since_start = || moved.load(Ordering::Relaxed) - at_start;
                let timed_out_after = |after| WebError::Timeout { site: site.clone(), operation: "WADO-RS", after };
                let part = Pace::from_now(timeout)
                    .keep(reader.next_part(), since_start)
                    .await
                    .ok_or_else(|| timed_out_after(timeout + pace::allowance(since_start())))?
                    .map_err(|e| match timed_out.load(Ordering::Relaxed) {
                        true => timed_out_after(timeout),
                        false => {
                            WebError::Malformed { site: site.clone(), operation: "WADO-RS", detail: e.to_string() }
                        }
                    })?;
                let Some(part) = part else { return Ok(None) };
                let instance = RetrievedInstance::from_served(part.body).map_err(|e| WebError::Malformed {
                    site: site.clone(),
                    operation: "WADO-RS",
                    detail: format!("a part is not a DICOM instance: {e}"),
                })?;
                Ok(Some((instance, (reader, permit))))
            }
        })
        .boxed();
        Ok((parts, partly))
    }

    /// The metadata of `target` (a study, a series or one instance) as the origin gives it: its
    /// DICOM JSON text, checked to be an array of objects each of the target's study (none when
    /// the origin has nothing or refuses the caller); `None` when the answer is larger than
    /// `max` bytes (the caller then takes the instances instead).
    pub(crate) async fn metadata(
        &self,
        touched: &Touched,
        target: &RetrieveTarget,
        max: usize,
    ) -> Result<Option<OriginMetadata>, WebError> {
        let mut url = format!("{}/studies/{}", self.base, target.study);
        match (&target.series, target.instances.as_slice()) {
            (None, []) => {}
            (Some(series), []) => url.push_str(&format!("/series/{series}")),
            (Some(series), [instance]) => url.push_str(&format!("/series/{series}/instances/{instance}")),
            _ => return Err(self.malformed("WADO-RS metadata", "a list of instances has no one metadata resource")),
        }
        url.push_str("/metadata");
        let request = self.client.get(url).header(reqwest::header::ACCEPT, "application/dicom+json");
        let (response, _permit) = self.send(self.authorization(touched).await?, "WADO-RS metadata", request).await?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            204 | 404 => return Ok(Some(OriginMetadata::none())),
            _ if refuses_the_caller(&response) => return Ok(Some(OriginMetadata::none())),
            _ => return Err(self.status_error("WADO-RS metadata", &response)),
        }
        if response.content_length().is_some_and(|n| n > max as u64) {
            return Ok(None);
        }
        let json = match self.body(response, "WADO-RS metadata", max).await {
            Ok(json) => json,
            Err(WebError::Malformed { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Up to `max` bytes of JSON, checked object by object off the async runtime: nothing of
        // another study, whatever the origin sends.
        let study = target.study.clone();
        let checked = tokio::task::spawn_blocking(move || OriginMetadata::checked(json, &study))
            .await
            .map_err(|e| self.malformed("WADO-RS metadata", e))?
            .map_err(|e| self.malformed("WADO-RS metadata", e))?;
        Ok(Some(checked))
    }

    /// One instance's resource below its URL (`suffix`: `/frames/1,2`, `/rendered`, with the
    /// caller's `query` and `accept`) as the origin answers it: its Content-Type and its body,
    /// read as the caller reads it and cut with an error past `max_instance_size`. `None` when the
    /// origin has nothing for it, cannot give it as accepted or refuses the caller: the caller
    /// then makes it from the instance.
    pub(crate) async fn relay(
        &self,
        touched: &Touched,
        instance: &RetrieveTarget,
        asked: &Relay,
    ) -> Result<Option<Relayed>, WebError> {
        let (Some(series), [sop]) = (&instance.series, instance.instances.as_slice()) else {
            return Err(self.malformed("WADO-RS", "one instance is relayed at a time"));
        };
        let mut url =
            format!("{}/studies/{}/series/{series}/instances/{sop}{}", self.base, instance.study, asked.suffix);
        if let Some(query) = asked.query.as_deref().filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(query);
        }
        let mut request = self.client.get(url);
        if let Some(accept) = &asked.accept {
            request = request.header(reqwest::header::ACCEPT, accept);
        }
        let (response, permit) = self.send(self.authorization(touched).await?, "WADO-RS", request).await?;
        let status = response.status().as_u16();
        match status {
            200 => {}
            204 | 400 | 404 | 406 | 415 => return Ok(None),
            _ if refuses_the_caller(&response) => return Ok(None),
            _ => return Err(self.status_error("WADO-RS", &response)),
        }
        let Some(content_type) = response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
        else {
            return Err(self.malformed("WADO-RS", "the answer has no Content-Type"));
        };
        let content_type = content_type.to_owned();
        let (site, timeout, max) = (self.site.clone(), self.timeout, self.max_instance as u64);
        // The whole answer keeps a pace from here: the site's timeout and what its bytes need.
        let pace = Pace::from_now(timeout);
        let body = stream::try_unfold((response.bytes_stream(), 0u64, permit), move |(mut chunks, read, permit)| {
            let site = site.clone();
            async move {
                let after = timeout + pace::allowance(read);
                let timed_out = || WebError::Timeout { site: site.clone(), operation: "WADO-RS", after };
                let chunk = pace.keep(chunks.next(), || read).await.ok_or_else(timed_out)?;
                let Some(chunk) = chunk else { return Ok(None) };
                let chunk = chunk.map_err(|e| match e.is_timeout() {
                    true => timed_out(),
                    false => WebError::Malformed { site: site.clone(), operation: "WADO-RS", detail: cause(&e) },
                })?;
                let read = read + chunk.len() as u64;
                if read > max {
                    let detail = format!("the answer is larger than {max} bytes");
                    return Err(WebError::Malformed { site, operation: "WADO-RS", detail });
                }
                Ok(Some((chunk, (chunks, read, permit))))
            }
        })
        .boxed();
        Ok(Some(Relayed { content_type, body }))
    }

    /// The instances under `scope` (a study or series), by QIDO-RS.
    pub(crate) async fn list_instances(
        &self,
        touched: &Touched,
        scope: &RetrieveTarget,
        at_most: usize,
    ) -> Result<Vec<PlannedInstance>, WebError> {
        let mut identifier = scope.identifier();
        identifier.put(dicom_core::DataElement::new(
            tags::SERIES_INSTANCE_UID,
            dicom_core::VR::UI,
            dicom_core::PrimitiveValue::Str(scope.series.as_ref().map(|s| s.to_string()).unwrap_or_default()),
        ));
        identifier.put(dicom_core::DataElement::new(
            tags::SOP_INSTANCE_UID,
            dicom_core::VR::UI,
            dicom_core::PrimitiveValue::Empty,
        ));
        let (found, _) = self.find(touched, QueryLevel::Image, &identifier, at_most).await?;
        Ok(found
            .iter()
            .filter_map(|obj| {
                let uid = |tag| obj.get(tag)?.to_str().ok().map(|s| s.trim_end_matches(['\0', ' ']).to_owned());
                Some(PlannedInstance {
                    series: SeriesInstanceUid::from_peer(&uid(tags::SERIES_INSTANCE_UID)?).ok()?,
                    sop_instance: SopInstanceUid::from_peer(&uid(tags::SOP_INSTANCE_UID)?).ok()?,
                })
            })
            .collect())
    }

    /// A STOW-RS of one Part-10 instance: the warning it was stored with, if any, and the
    /// UIDs the origin says it is retrieved by (another gateway de-identifying stores it under
    /// pseudonyms); [`WebError::Refused`] with the origin's reason when it was not stored.
    pub(crate) async fn store(&self, touched: &Touched, part10: Bytes) -> Result<StowAnswer, WebError> {
        // The instance is sent before the answer is waited for: it takes what its bytes need.
        let within = self.timeout + pace::allowance(part10.len() as u64);
        let boundary = dicomweb_model::multipart::fresh_boundary();
        let body: Vec<Bytes> = vec![
            Bytes::from(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n")),
            part10,
            Bytes::from(format!("\r\n--{boundary}--\r\n")),
        ];
        let request = self
            .client
            .post(format!("{}/studies", self.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
            )
            .header(reqwest::header::ACCEPT, "application/dicom+json")
            .body(reqwest::Body::wrap_stream(stream::iter(body.into_iter().map(Ok::<_, std::io::Error>))));
        let (response, _permit) =
            self.send_within(self.authorization(touched).await?, "STOW-RS", request, within).await?;
        let status = response.status().as_u16();
        // The caller's own token forwarded and refused there: the caller may not store there.
        if refuses_the_caller(&response) {
            return Err(WebError::Refused { site: self.site.clone(), reason: NOT_AUTHORIZED });
        }
        let failed = self.status_error("STOW-RS", &response);
        let answer = self.body(response, "STOW-RS", 16 << 20).await?;
        let module = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|json| dicomweb_model::dicom_json_read::read_object(&json).ok());
        let first_item = |sequence| {
            let element = module.as_ref()?.get(sequence)?;
            let Value::Sequence(items) = element.value() else { return None };
            items.items().first().cloned()
        };
        let reason = || first_item(tags::FAILED_SOP_SEQUENCE)?.get(tags::FAILURE_REASON)?.to_int::<u16>().ok();
        let retrieved_by = || {
            let url = first_item(tags::REFERENCED_SOP_SEQUENCE)?.get(tags::RETRIEVE_URL)?.to_str().ok()?.into_owned();
            uids_of_instance_url(&url)
        };
        match status {
            200 => Ok(StowAnswer { warning: None, retrieved_by: retrieved_by() }),
            202 => match reason() {
                Some(reason) => Err(WebError::Refused { site: self.site.clone(), reason }),
                None => Ok(StowAnswer { warning: Some(0xB000), retrieved_by: retrieved_by() }),
            },
            409 | 400 | 415 => Err(WebError::Refused { site: self.site.clone(), reason: reason().unwrap_or(0xC000) }),
            _ => Err(failed),
        }
    }

    /// A search for one study: the origin answers DICOMweb. Any answer counts (even one
    /// refusing the caller-less request), as a C-ECHO answered counts.
    pub(crate) async fn echo(&self) -> Result<Duration, WebError> {
        let began = Instant::now();
        let request = self
            .client
            .get(format!("{}/studies", self.base))
            .query(&[("limit", "1"), ("includefield", "00080020")])
            .header(reqwest::header::ACCEPT, "application/dicom+json");
        // A forwarding site is echoed without a caller: any answer but a 5xx shows it is there.
        let authorization = match self.credentials {
            OriginAuth::Forward => None,
            _ => self.authorization(&Touched::default()).await?,
        };
        let (response, _permit) = self.send(authorization, "echo", request).await?;
        let status = response.status().as_u16();
        if status >= 500 {
            return Err(WebError::Status { site: self.site.clone(), operation: "echo", status });
        }
        Ok(began.elapsed())
    }
}

/// What of an instance is asked of an origin as the caller asked it (frames, rendered).
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    /// The path below the instance's URL, from `/`.
    pub(crate) suffix: String,
    /// The caller's query string (rendering parameters), checked by the gateway first.
    pub(crate) query: Option<String>,
    pub(crate) accept: Option<String>,
}

/// An origin's metadata answer: its JSON text, an array of DICOM JSON objects of the study
/// asked for, kept as text (parsed, it would take several times the memory), and how many.
#[derive(Debug)]
pub(crate) struct OriginMetadata {
    pub(crate) json: Bytes,
    pub(crate) objects: usize,
}

impl OriginMetadata {
    /// The origin has nothing of what was asked (or nothing for the caller).
    fn none() -> OriginMetadata {
        OriginMetadata { json: Bytes::from_static(b"[]"), objects: 0 }
    }

    /// An origin's answer, checked object by object to be a JSON array of objects each of
    /// `study`: nothing of another study passes, whatever the origin sends.
    pub(crate) fn checked(json: Bytes, study: &StudyInstanceUid) -> Result<OriginMetadata, serde_json::Error> {
        let mut objects = 0;
        dicomweb_model::dicom_json_read::each_in_array(&json, |object| {
            let of = object.pointer("/0020000D/Value/0").and_then(|v| v.as_str());
            if of.map(|uid| uid.trim_end_matches(['\0', ' '])) != Some(study.as_str()) {
                return Err("an object is not of the study asked for".into());
            }
            objects += 1;
            Ok(())
        })?;
        Ok(OriginMetadata { json, objects })
    }
}

/// An origin's answer relayed: its Content-Type and its body as it arrives.
pub(crate) struct Relayed {
    pub(crate) content_type: String,
    pub(crate) body: BoxStream<'static, Result<Bytes, WebError>>,
}

impl std::fmt::Debug for Relayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relayed").field("content_type", &self.content_type).finish()
    }
}

/// What an origin answered a STOW-RS of one instance with.
#[derive(Debug, Clone)]
pub(crate) struct StowAnswer {
    pub(crate) warning: Option<u16>,
    /// The study, series and instance UIDs of the instance's RetrieveURL, when it gave one.
    pub(crate) retrieved_by: Option<(StudyInstanceUid, SeriesInstanceUid, SopInstanceUid)>,
}

/// The UIDs of a WADO-RS instance URL (`.../studies/{s}/series/{se}/instances/{i}`).
fn uids_of_instance_url(url: &str) -> Option<(StudyInstanceUid, SeriesInstanceUid, SopInstanceUid)> {
    let mut segments = url.rsplit('/');
    let instance = segments.next()?;
    (segments.next()? == "instances").then_some(())?;
    let series = segments.next()?;
    (segments.next()? == "series").then_some(())?;
    let study = segments.next()?;
    (segments.next()? == "studies").then_some(())?;
    Some((
        StudyInstanceUid::from_peer(study).ok()?,
        SeriesInstanceUid::from_peer(series).ok()?,
        SopInstanceUid::from_peer(instance).ok()?,
    ))
}

/// A QIDO-RS page's matches, each read as it is parsed (never the whole page's JSON at once),
/// and its first match's JSON (to know the page again).
pub(crate) fn read_page(text: &[u8]) -> Result<(Vec<InMemDicomObject>, Option<serde_json::Value>), serde_json::Error> {
    let (mut matches, mut first) = (Vec::new(), None);
    dicomweb_model::dicom_json_read::each_in_array(text, |json| {
        matches.push(dicomweb_model::dicom_json_read::read_object(&json).map_err(|e| e.to_string())?);
        first.get_or_insert(json);
        Ok(())
    })?;
    Ok((matches, first))
}

/// The QIDO-RS query of a C-FIND identifier: each attribute with a value a matching key
/// (`GGGGEEEE=value`, `SSSSSSSS.GGGGEEEE=value` inside a sequence), each without one
/// `includefield`. QueryRetrieveLevel and SpecificCharacterSet say nothing to QIDO-RS.
pub(crate) fn query_of(identifier: &InMemDicomObject) -> Vec<(String, String)> {
    let key = |tag: Tag| format!("{:04X}{:04X}", tag.group(), tag.element());
    let mut query = Vec::new();
    for element in identifier.iter() {
        let tag = element.header().tag;
        if tag == tags::QUERY_RETRIEVE_LEVEL || tag == tags::SPECIFIC_CHARACTER_SET {
            continue;
        }
        match element.value() {
            Value::Sequence(sequence) => {
                let mut matched = false;
                for item in sequence.items().iter().take(1) {
                    for inner in item.iter() {
                        if let Ok(text) = inner.to_str() {
                            let text = text.trim_end_matches(['\0', ' ']);
                            if !text.is_empty() {
                                query.push((format!("{}.{}", key(tag), key(inner.header().tag)), text.to_owned()));
                                matched = true;
                            }
                        }
                    }
                }
                if !matched {
                    query.push(("includefield".into(), key(tag)));
                }
            }
            _ => {
                let text = element.to_str().map(|t| t.trim_end_matches(['\0', ' ']).to_owned()).unwrap_or_default();
                if text.is_empty() {
                    query.push(("includefield".into(), key(tag)));
                } else {
                    query.push((key(tag), text));
                }
            }
        }
    }
    query
}

/// The origin refuses the caller itself (RFC 6750: 401, or 403 with a Bearer challenge such as
/// `insufficient_scope`), not what was asked (a 403 without one: withheld instances).
fn refuses_the_caller(response: &reqwest::Response) -> bool {
    match response.status().as_u16() {
        401 => true,
        403 => response.headers().contains_key(reqwest::header::WWW_AUTHENTICATE),
        _ => false,
    }
}

/// True when the connection closed after the request was sent and before any answer came
/// (hyper's "connection closed before message completed").
fn closed_unanswered(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        source = inner.source();
    }
    false
}

/// The causes of a transport error, without the URL reqwest puts in its own message.
fn cause(e: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        causes.push(inner.to_string());
        source = inner.source();
    }
    if causes.is_empty() {
        "the connection failed".into()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    #[test]
    fn an_identifier_becomes_matching_keys_and_includefields() {
        let item = InMemDicomObject::from_element_iter([DataElement::new(
            tags::CODE_VALUE,
            VR::SH,
            PrimitiveValue::from("X"),
        )]);
        let identifier = InMemDicomObject::from_element_iter([
            DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from("STUDY")),
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe*")),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20200101-")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3\0")),
            DataElement::new(tags::MODALITIES_IN_STUDY, VR::CS, PrimitiveValue::Empty),
            DataElement::new(tags::ANATOMIC_REGION_SEQUENCE, VR::SQ, DataSetSequence::from(vec![item])),
            DataElement::new(tags::REFERENCED_STUDY_SEQUENCE, VR::SQ, DataSetSequence::from(Vec::new())),
        ]);
        let query = query_of(&identifier);
        let has = |k: &str, v: &str| query.iter().any(|(a, b)| a == k && b == v);
        assert!(has("00100010", "Doe*") && has("00080020", "20200101-") && has("0020000D", "1.2.3"));
        assert!(has("includefield", "00080061") && has("00082218.00080100", "X") && has("includefield", "00081110"));
        assert!(!query.iter().any(|(k, _)| k == "00080052" || k == "00080005"));
    }

    /// An origin on loopback that answers each request with an empty search result, except
    /// that it closes the connection without answering at each (connection, request) of
    /// `closing`, both counted from 0: (n, 1) is an origin closing an idle kept-alive connection
    /// as it is reused. Returns its base URL and the count of requests it read.
    async fn origin_closing(closing: &'static [(usize, usize)]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/dicom-web", listener.local_addr().expect("address"));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            for connection in 0.. {
                let Ok((stream, _)) = listener.accept().await else { return };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    for request in 0.. {
                        // A request's head, to its empty line (the requests have no body).
                        let mut line = String::new();
                        loop {
                            line.clear();
                            match stream.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {}
                            }
                        }
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if closing.contains(&(connection, request)) {
                            return;
                        }
                        let answer =
                            "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\n\r\n[]";
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (base, requests)
    }

    fn origin_at(base: &str) -> Dicomweb {
        origin_configured(base, "")
    }

    /// The origin at `base`, its site configured further with `lines`.
    fn origin_configured(base: &str, lines: &str) -> Dicomweb {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://127.0.0.1/dicom-web\"\n\
             [dimse]\nae_title = \"WEBTEST\"\nlisten = \"127.0.0.1:0\"\n\
             [[sites]]\nid = \"edge\"\nprotocol = \"dicomweb\"\nurl = \"{base}\"\ndeidentified = true\n{lines}\n\
             [auth]\nmode = \"none\"\n"
        );
        let config = crate::config::Config::parse(&text).expect("valid configuration");
        let site = &config.sites[0];
        let crate::config::SiteProtocol::Dicomweb(web) = &site.protocol else { panic!("a DICOMweb site") };
        Dicomweb::new(site, web).expect("the origin")
    }

    #[tokio::test]
    async fn a_get_the_origin_closed_its_kept_alive_connection_under_is_asked_once_more() {
        let (base, requests) = origin_closing(&[(0, 1)]).await;
        let origin = origin_at(&base);
        origin.echo().await.expect("the first search");
        // The second goes over the kept-alive connection, which the origin closes unanswered.
        origin.echo().await.expect("asked again over a new connection");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_get_closed_unanswered_twice_is_a_failure_of_the_site() {
        let (base, requests) = origin_closing(&[(0, 1), (1, 0)]).await;
        let origin = origin_at(&base);
        origin.echo().await.expect("the first search");
        // Closed under it on connection 0, and again on the new connection: asked no more.
        let failed = origin.echo().await.expect_err("closed twice");
        assert!(failed.to_string().contains("connection closed before message completed"), "{failed}");
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    /// An origin on loopback that answers each request (its head read, and a body of
    /// Content-Length) with `answer`'s pieces in turn, each written after its pause, then holds
    /// the connection open.
    async fn origin_sending(answer: Vec<(Duration, Vec<u8>)>) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}/dicom-web", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let (mut line, mut length) = (String::new(), 0usize);
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {
                                let lower = line.to_ascii_lowercase();
                                if let Some(n) = lower.strip_prefix("content-length:") {
                                    length = n.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                    }
                    let mut body = vec![0u8; length];
                    if stream.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    for (pause, bytes) in answer {
                        tokio::time::sleep(pause).await;
                        if stream.get_mut().write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
            }
        });
        base
    }

    /// The head of a multipart WADO-RS answer (chunked) and its first part's opening.
    fn multipart_head() -> Vec<u8> {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\
                    Transfer-Encoding: chunked\r\n\r\n";
        let opening = "--b\r\nContent-Type: application/dicom\r\n\r\n";
        [head.as_bytes(), chunk(opening.as_bytes()).as_slice()].concat()
    }

    /// One HTTP chunk of `bytes`.
    fn chunk(bytes: &[u8]) -> Vec<u8> {
        [format!("{:x}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat()
    }

    async fn first_instance(origin: Arc<Dicomweb>) -> Result<Option<RetrievedInstance>, WebError> {
        let study = StudyInstanceUid::from_peer("2.25.1").expect("uid");
        let mut instances = origin.retrieve(&Touched::default(), RetrieveTarget::study(study)).await?;
        instances.next().await.transpose()
    }

    #[tokio::test]
    async fn an_origin_that_stops_sending_inside_an_instance_has_timed_out() {
        let base = origin_sending(vec![(Duration::ZERO, multipart_head())]).await;
        let origin = Arc::new(origin_configured(&base, "timeout = \"1s\""));
        let began = Instant::now();
        let failed = first_instance(origin).await.expect_err("stopped");
        assert!(failed.is_timeout(), "a timeout (504), not a broken protocol: {failed}");
        assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
    }

    #[tokio::test]
    async fn an_origin_that_trickles_an_instance_is_cut_off_when_it_falls_below_the_slowest_rate() {
        // A byte every 0.7 s: each read within the 1 s timeout, the instance never done.
        let mut answer = vec![(Duration::ZERO, multipart_head())];
        answer.extend((0..40).map(|_| (Duration::from_millis(700), chunk(b"x"))));
        let base = origin_sending(answer).await;
        let origin = Arc::new(origin_configured(&base, "timeout = \"1s\""));
        let began = Instant::now();
        let failed = first_instance(origin).await.expect_err("cut off");
        assert!(failed.is_timeout(), "{failed}");
        let took = began.elapsed();
        assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(4), "cut off after {took:?}");
    }

    #[tokio::test]
    async fn a_large_instance_takes_as_long_as_its_bytes_need_beyond_the_timeout() {
        // 1.5 MiB of an instance in 2 s, at 768 KiB/s: slow, but above the slowest rate.
        let instance = an_instance(3 << 19);
        let mut answer = vec![(Duration::ZERO, multipart_head())];
        for piece in instance.chunks(instance.len() / 8 + 1) {
            answer.push((Duration::from_millis(250), chunk(piece)));
        }
        answer.push((Duration::ZERO, [chunk(b"\r\n--b--\r\n"), b"0\r\n\r\n".to_vec()].concat()));
        let base = origin_sending(answer).await;
        let origin = Arc::new(origin_configured(&base, "timeout = \"1s\""));
        let instance = first_instance(origin).await.expect("the instance").expect("one");
        assert!(instance.part10.len() > 3 << 19);
    }

    /// A Part-10 instance with `pixels` bytes of pixel data, of study 2.25.1.
    fn an_instance(pixels: usize) -> Vec<u8> {
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.3")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.1")),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.2")),
            DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(vec![0u8; pixels])),
        ]);
        let file = object
            .with_meta(
                dicom_object::FileMetaTableBuilder::new()
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid("2.25.3")
                    .transfer_syntax("1.2.840.10008.1.2.1"),
            )
            .expect("meta");
        let mut bytes = Vec::new();
        file.write_all(&mut bytes).expect("written");
        bytes
    }

    #[tokio::test]
    async fn a_store_the_origin_refuses_the_forwarded_caller_is_refused_not_authorized() {
        let refusal = b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n".to_vec();
        let base = origin_sending(vec![(Duration::ZERO, refusal)]).await;
        let origin = origin_configured(&base, "auth = \"forward\"");
        let refused = origin.store(&Touched::default(), Bytes::from(an_instance(16))).await.expect_err("refused");
        assert!(matches!(refused, WebError::Refused { reason: NOT_AUTHORIZED, .. }), "{refused}");
        assert!(!refused.is_site_fault());
    }

    /// A server on loopback that answers each request with `answer` of its head (kept alive).
    async fn answering(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> String {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let (mut head, mut length) = (String::new(), 0usize);
                        loop {
                            let mut line = String::new();
                            match stream.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) if line == "\r\n" => break,
                                Ok(_) => {
                                    if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                                        length = n.trim().parse().unwrap_or(0);
                                    }
                                    head.push_str(&line);
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let answer = answer(&head);
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        base
    }

    #[tokio::test]
    async fn a_granted_token_the_origin_no_longer_takes_is_replaced_and_the_request_asked_again() {
        let granted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counting = granted.clone();
        let identity_provider = answering(move |_| {
            let n = counting.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let body = format!("{{\"access_token\": \"t{n}\", \"expires_in\": 3600}}");
            format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        })
        .await;
        // The origin takes only the second token granted (the first is revoked).
        let origin = answering(|head| match head.contains("authorization: Bearer t2") {
            true => "HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: 2\r\n\r\n[]".into(),
            false => "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nContent-Length: 0\r\n\r\n".into(),
        })
        .await;
        let secret = std::env::temp_dir().join(format!("grant-secret-{}", std::process::id()));
        std::fs::write(&secret, "s3cret\n").expect("secret file");
        let lines = format!(
            "auth = \"client-credentials\"\ntoken_url = \"{identity_provider}/token\"\nclient_id = \"central\"\n\
             client_secret_file = \"{}\"",
            secret.display()
        );
        let origin = origin_configured(&format!("{origin}/dicom-web"), &lines);
        origin.echo().await.expect("answered with the new token");
        assert_eq!(granted.load(std::sync::atomic::Ordering::SeqCst), 2, "one token refused, one more granted");
        origin.echo().await.expect("the new token kept");
        assert_eq!(granted.load(std::sync::atomic::Ordering::SeqCst), 2);
        let _ = std::fs::remove_file(secret);
    }

    #[test]
    fn a_stored_instance_is_retrieved_by_the_uids_of_its_url() {
        let (study, series, instance) =
            uids_of_instance_url("https://edge/dicom-web/studies/2.25.1/series/2.25.2/instances/2.25.3").expect("uids");
        assert_eq!((study.as_str(), series.as_str(), instance.as_str()), ("2.25.1", "2.25.2", "2.25.3"));
        assert!(uids_of_instance_url("https://edge/dicom-web/studies/2.25.1").is_none());
        assert!(uids_of_instance_url("https://edge/studies/x/series/2/instances/3").is_none());
    }

    #[test]
    fn faults_are_the_origins_own_failures() {
        let site = SiteId::new("edge").expect("id");
        let status = |status| WebError::Status { site: site.clone(), operation: "QIDO-RS", status };
        assert!(status(503).is_site_fault() && !status(404).is_site_fault() && !status(400).is_site_fault());
        assert!(status(301).is_site_fault() && status(307).is_site_fault(), "a redirect: the site's URL is wrong");
        assert!(WebError::Connect { site: site.clone(), detail: "refused".into() }.is_site_fault());
        assert!(!WebError::Refused { site: site.clone(), reason: 0xA700 }.is_site_fault());
        assert!(WebError::CredentialsRefused { site: site.clone(), operation: "WADO-RS", status: 401 }.is_site_fault());
        let busy = |status| WebError::Busy {
            site: site.clone(),
            operation: "WADO-RS",
            status,
            retry_after: Duration::from_secs(2),
        };
        assert!(
            !busy(429).is_site_fault() && busy(503).is_site_fault(),
            "a caller over its limits is not the site's fault"
        );
        assert_eq!(busy(429).retry_after(), Some(Duration::from_secs(2)));
    }
}
