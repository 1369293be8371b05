//! DICOM TLS (PS3.15 Annex B) for sites that configure it: a rustls client configuration from
//! PEM files, TLS 1.2 and 1.3 only, with an optional client certificate for mutual TLS.

use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} holds no usable {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Read { path: path.display().to_string(), source })
}

/// Builds the client configuration: trust `ca` (PEM bundle), present `cert` + `key` when both
/// are given.
pub fn client_config(
    ca: &Path,
    cert_and_key: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = read_pem(ca)?;
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|source| TlsConfigError::Read { path: ca.display().to_string(), source })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::Empty { path: ca.display().to_string(), what: "CA certificate" });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots);
    let config = match cert_and_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let cert_pem = read_pem(cert)?;
            let chain = rustls_pemfile::certs(&mut &cert_pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| TlsConfigError::Read { path: cert.display().to_string(), source })?;
            if chain.is_empty() {
                return Err(TlsConfigError::Empty { path: cert.display().to_string(), what: "certificate" });
            }
            let key_pem = read_pem(key)?;
            let key_der = rustls_pemfile::private_key(&mut &key_pem[..])
                .map_err(|source| TlsConfigError::Read { path: key.display().to_string(), source })?
                .ok_or_else(|| TlsConfigError::Empty { path: key.display().to_string(), what: "private key" })?;
            builder.with_client_auth_cert(chain, key_der)?
        }
    };
    Ok(Arc::new(config))
}
