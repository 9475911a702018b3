//! Mutual TLS 1.3 for both transports: every peer proves it holds a certificate from the
//! pair's private CA; nothing else is trusted, not even the system roots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN protocol id every Ferry connection negotiates.
pub const ALPN: &[u8] = b"ferry/1";

/// File names inside an identity directory (as `ferry init` writes them).
pub const CA_FILE: &str = "ca.pem";
/// This side's certificate chain.
pub const CERT_FILE: &str = "cert.pem";
/// This side's private key (mode 0600).
pub const KEY_FILE: &str = "key.pem";

/// Why credentials could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM object.
    #[error("{path} holds no {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The CA certificate is unusable as a trust anchor.
    #[error("CA certificate: {0}")]
    Verifier(String),
}

/// One side's credentials: the pair's CA, this side's certificate chain and key.
#[derive(Debug)]
pub struct Identity {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity { ca: self.ca.clone(), chain: self.chain.clone(), key: self.key.clone_key() }
    }
}

impl Identity {
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from `dir`.
    ///
    /// # Errors
    /// [`IdentityError`] naming the file that is missing or malformed.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let ca = certs(&dir.join(CA_FILE))?;
        let chain = certs(&dir.join(CERT_FILE))?;
        let kp = dir.join(KEY_FILE);
        let bytes = std::fs::read(&kp)
            .map_err(|source| IdentityError::Read { path: kp.clone(), source })?;
        let key = PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|_| IdentityError::Empty { path: kp, what: "private key" })?;
        Ok(Identity { ca, chain, key })
    }

    /// Builds an identity from PEM text (for tests and embedded credentials).
    ///
    /// # Errors
    /// [`IdentityError::Empty`] when a PEM holds nothing usable.
    pub fn from_pem(ca: &str, cert: &str, key: &str) -> Result<Identity, IdentityError> {
        let parse = |pem: &str, what| {
            let v: Vec<_> =
                CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok).collect();
            if v.is_empty() {
                Err(IdentityError::Empty { path: PathBuf::from("<pem>"), what })
            } else {
                Ok(v)
            }
        };
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
            IdentityError::Empty { path: PathBuf::from("<pem>"), what: "private key" }
        })?;
        Ok(Identity { ca: parse(ca, "CA certificate")?, chain: parse(cert, "certificate")?, key })
    }

    /// The pair's CA certificates (DER): what a server's certificate must chain to, so they
    /// tell apart two servers that share an address (a client keys what it remembers about a
    /// server by them).
    pub fn ca_der(&self) -> impl Iterator<Item = &[u8]> {
        self.ca.iter().map(|c| c.as_ref())
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, IdentityError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone()).map_err(IdentityError::Tls)?;
        }
        Ok(Arc::new(roots))
    }

    /// A server configuration: TLS 1.3 only, ALPN `ferry/1`, no 0-RTT, client certificates
    /// required and verified against the pair's CA.
    ///
    /// # Errors
    /// When the certificate, key or CA is unusable.
    pub fn server_config(&self) -> Result<ServerConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| IdentityError::Verifier(e.to_string()))?;
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.max_early_data_size = 0;
        Ok(cfg)
    }

    /// A client configuration: TLS 1.3 only, ALPN `ferry/1`, no 0-RTT, the server verified
    /// against the pair's CA (and its name against the certificate), our certificate presented.
    ///
    /// # Errors
    /// When the certificate, key or CA is unusable.
    pub fn client_config(&self) -> Result<ClientConfig, IdentityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| IdentityError::Verifier(e.to_string()))?;
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.enable_early_data = false;
        Ok(cfg)
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let bytes =
        std::fs::read(path).map_err(|source| IdentityError::Read { path: path.into(), source })?;
    let v: Vec<_> = CertificateDer::pem_slice_iter(&bytes).filter_map(Result::ok).collect();
    if v.is_empty() {
        return Err(IdentityError::Empty { path: path.into(), what: "certificate" });
    }
    Ok(v)
}
