//! TLS for the gRPC port (API.md §7) with rustls on ring: the certificate, key and optional
//! client CA (mTLS) are read from PEM files into one `ServerConfig`, which SIGHUP replaces
//! whole. tonic's own TLS setting cannot be swapped, so connections are accepted here through
//! a `tokio-rustls` acceptor that takes the config in force at each handshake; connections
//! already open keep the session they negotiated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{version, RootCertStore, ServerConfig};

use crate::config::AccessConfig;

/// The TLS config in force, swapped whole on SIGHUP.
pub type LiveTls = Arc<ArcSwap<ServerConfig>>;

/// Caller name of a verified client certificate without a common name.
const UNNAMED_CLIENT: &str = "client-certificate";

/// The PEM files TLS is read from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf.
    pub key: PathBuf,
    /// CA certificates that sign client certificates (mTLS), if required.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// The files `config` names, if TLS is on.
    pub fn from_config(config: &AccessConfig) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: config.tls_cert.clone()?,
            key: config.tls_key.clone()?,
            client_ca: config.tls_client_ca.clone(),
        })
    }
}

/// Why TLS could not be set up; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Reads the files into a server config: TLS 1.2 and 1.3, ALPN h2, and with a client CA a
/// verifier that refuses a handshake without a valid client certificate.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let certs = read_certificates(&files.cert, "TLS certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError(format!(
            "TLS key {}: no usable PEM private key: {e}",
            files.key.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in read_certificates(path, "TLS client CA")? {
                roots
                    .add(certificate)
                    .map_err(|e| TlsError(format!("TLS client CA {}: {e}", path.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(format!("TLS client CA {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError(format!(
            "TLS certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Every PEM certificate in `path` (at least one).
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let fail = |reason: String| TlsError(format!("{what} {}: {reason}", path.display()));
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certificates.is_empty() {
        return Err(fail("no PEM certificate in the file".into()));
    }
    Ok(certificates)
}

/// The caller name of a verified client certificate: its subject's common name.
pub fn client_name(leaf: &CertificateDer<'_>) -> Arc<str> {
    use x509_cert::der::Decode;
    x509_cert::Certificate::from_der(leaf)
        .ok()
        .and_then(|certificate| {
            certificate
                .tbs_certificate()
                .subject()
                .common_name()
                .ok()
                .flatten()
        })
        .map(|name| Arc::from(name.value().as_ref()))
        .unwrap_or_else(|| UNNAMED_CLIENT.into())
}
