//! TLS for the native client (cargo feature `tls`): rustls with the ring provider.
//!
//! Server certificates are always verified. By default they must chain to one of the webpki
//! roots (Mozilla's root store, compiled in); [`ClientBuilder::add_root_certificate`] trusts an
//! extra CA (a private or test CA) and [`ClientBuilder::tls_built_in_root_certs`] turns the
//! built-in roots off, as in reqwest.
//!
//! [`ClientBuilder::add_root_certificate`]: crate::ClientBuilder::add_root_certificate
//! [`ClientBuilder::tls_built_in_root_certs`]: crate::ClientBuilder::tls_built_in_root_certs

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::sync::Arc;

/// A TLS setup problem found while building the client (a bad certificate, no trusted roots).
/// Failures while connecting are reported in the client's state instead
/// ([`WsErrorInfo::tls`](crate::WsErrorInfo::tls), [`HttpFailure::Tls`](crate::HttpFailure::Tls)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The PEM or DER data holds no usable certificate.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The built-in roots are off and no root certificate was added: nothing could be trusted.
    #[error("no trusted root certificates (built-in roots off and none added)")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// A certificate to trust as a root (a CA), for
/// [`ClientBuilder::add_root_certificate`](crate::ClientBuilder::add_root_certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate(CertificateDer<'static>);

impl Certificate {
    /// The first certificate of a PEM document (`-----BEGIN CERTIFICATE-----`).
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Certificate, TlsError> {
        Self::from_pem_bundle(pem)?
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::InvalidCertificate("no certificate in the PEM data".into()))
    }

    /// Every certificate of a PEM bundle (at least one).
    pub fn from_pem_bundle(pem: impl AsRef<[u8]>) -> Result<Vec<Certificate>, TlsError> {
        let certs = CertificateDer::pem_slice_iter(pem.as_ref())
            .map(|c| c.map(Certificate))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::InvalidCertificate(e.to_string()))?;
        if certs.is_empty() {
            return Err(TlsError::InvalidCertificate(
                "no certificate in the PEM data".into(),
            ));
        }
        Ok(certs)
    }

    /// A DER-encoded certificate (checked when the client is built).
    pub fn from_der(der: impl AsRef<[u8]>) -> Result<Certificate, TlsError> {
        let der = der.as_ref();
        if der.is_empty() {
            return Err(TlsError::InvalidCertificate("empty DER data".into()));
        }
        Ok(Certificate(CertificateDer::from(der.to_vec())))
    }
}

/// What the builder collected about TLS.
#[derive(Clone, Debug)]
pub(crate) struct TlsOptions {
    pub(crate) roots: Vec<Certificate>,
    pub(crate) built_in_roots: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            roots: Vec::new(),
            built_in_roots: true,
        }
    }
}

impl TlsOptions {
    /// The rustls client configuration (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN
    /// omitted: both the WebSocket upgrade and the Ajax requests are HTTP/1.1).
    pub(crate) fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let mut store = rustls::RootCertStore::empty();
        if self.built_in_roots {
            store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.roots {
            store
                .add(cert.0.clone())
                .map_err(|e| TlsError::InvalidCertificate(e.to_string()))?;
        }
        if store.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// Whether an error chain comes from TLS (a rustls error somewhere in it). `io::Error`s are
/// opened with `get_ref`, since their `source` skips the error they wrap.
pub(crate) fn is_tls_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        && is_tls_error(inner)
    {
        return true;
    }
    e.source().is_some_and(is_tls_error)
}
