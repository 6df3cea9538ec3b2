//! TLS for a TCP listener: the server's certificate, and client certificates verified
//! against `--tlscacert` (no certificate, no connection).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::ServeError;

fn tls_err(file: &Path, what: &str, e: impl std::fmt::Display) -> ServeError {
    ServeError::Tls(format!("{}: {what}: {e}", file.display()))
}

/// An acceptor that demands a client certificate signed by the CA in `ca`.
pub(crate) fn acceptor(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_err(cert, "read the certificate", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(cert, "not a PEM certificate chain", e))?;
    if certs.is_empty() {
        return Err(tls_err(
            cert,
            "read the certificate",
            "no certificate in it",
        ));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| tls_err(key, "not a PEM private key", e))?;
    let mut roots = RootCertStore::empty();
    let ca_certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
        .map_err(|e| tls_err(ca, "read the CA", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_err(ca, "not a PEM certificate", e))?;
    for c in ca_certs {
        roots
            .add(c)
            .map_err(|e| tls_err(ca, "not a usable CA certificate", e))?;
    }
    if roots.is_empty() {
        return Err(tls_err(ca, "read the CA", "no certificate in it"));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_err(ca, "build the client verifier", e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_err(cert, "the certificate does not match the key", e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
