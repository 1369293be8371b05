//! HTTPS (`server.tls`): rustls with its ring provider, TLS 1.3 preferred and 1.2 accepted,
//! only ECDHE key exchange and AEAD ciphers (the provider's defaults, which BCP 195 allows),
//! HTTP/2 and HTTP/1.1 by ALPN, client certificates verified against `client_ca` when set.
//! SIGHUP reloads the certificate, key and client CA for new connections; a reload that fails
//! is logged and the files in use stay.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use crate::config::ServerTlsFiles;

fn read_pem(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read server.tls.{what} {}: {e}", path.display()))
}

/// Builds the rustls configuration from the files.
pub fn server_config(files: &ServerTlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = rustls_pemfile::certs(&mut read_pem(&files.cert, "cert")?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("server.tls.cert {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("server.tls.cert {} holds no certificate", files.cert.display());
    }
    let key = rustls_pemfile::private_key(&mut read_pem(&files.key, "key")?.as_slice())
        .map_err(|e| anyhow::anyhow!("server.tls.key {}: {e}", files.key.display()))?
        .ok_or_else(|| anyhow::anyhow!("server.tls.key {} holds no private key", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut read_pem(ca, "client_ca")?.as_slice()) {
                roots.add(cert.map_err(|e| anyhow::anyhow!("server.tls.client_ca {}: {e}", ca.display()))?)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("server.tls: the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS configuration from `files`, replaced on every SIGHUP (a reload that fails keeps the
/// one in use), for the connections to use.
pub(crate) fn reloaded_on_hangup(files: ServerTlsFiles) -> anyhow::Result<crate::http::connections::Tls> {
    let current = Arc::new(RwLock::new(server_config(&files)?));
    tokio::spawn(reload_on_hangup(files, current.clone()));
    Ok(Some(current))
}

/// Reloads the certificate files on every SIGHUP.
async fn reload_on_hangup(files: ServerTlsFiles, current: Arc<RwLock<Arc<ServerConfig>>>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hangup.recv().await.is_some() {
        match server_config(&files) {
            Ok(config) => {
                *current.write().unwrap_or_else(|p| p.into_inner()) = config;
                tracing::info!("server.tls reloaded: new connections use the new certificate");
                crate::startup::say("server.tls reloaded");
            }
            Err(e) => tracing::error!(error = %e, "server.tls reload failed: the certificate in use stays"),
        }
    }
}
