//! Mutual TLS 1.3 for both transports: every peer proves it holds a certificate from the
//! pair's private CA; nothing else is trusted, not even the system roots.
//!
//! An [`Identity`] is immutable. Rotation is the caller's: it reads the files again
//! ([`PemFiles::read`]), builds a new [`Identity`] (which [`Identity::from_files`] checks the
//! way a handshake would use it) and hands it to the server through
//! [`crate::net::Server::bind_watching`], or dials with it; connections already up keep the
//! material they were made with.

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

/// The largest identity file read: a certificate chain or key is a few KiB; anything this big
/// is not one, and is not read into memory whole.
pub const MAX_PEM_FILE: u64 = 1 << 20;

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
    /// The private key is not the certificate's (e.g. a rotation replaced one and not yet the
    /// other).
    #[error("{dir}: {KEY_FILE} is not the private key of {CERT_FILE}")]
    KeyMismatch {
        /// The identity directory.
        dir: PathBuf,
    },
    /// A file is larger than [`MAX_PEM_FILE`].
    #[error("{path} is larger than {MAX_PEM_FILE} bytes: not a certificate or key")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
}

/// The raw contents of an identity directory's three files, as read at one moment.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFiles {
    /// `ca.pem`.
    pub ca: Vec<u8>,
    /// `cert.pem`.
    pub cert: Vec<u8>,
    /// `key.pem`.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PemFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key's bytes stay out of logs.
        f.debug_struct("PemFiles")
            .field("ca", &self.ca.len())
            .field("cert", &self.cert.len())
            .field("key", &self.key.len())
            .finish()
    }
}

impl PemFiles {
    /// Reads `ca.pem`, `cert.pem` and `key.pem` from `dir`, each at most [`MAX_PEM_FILE`]
    /// bytes.
    ///
    /// # Security
    /// Symlinks are followed: the directory is the operator's configuration, not a peer's or
    /// the state directory's, and a mounted Kubernetes Secret is symlinks by design
    /// (`cert.pem -> ..data/cert.pem`, `..data -> ..2026_11_29_23_00_00.123`).
    ///
    /// # Errors
    /// [`IdentityError::Read`] or [`IdentityError::TooLarge`] naming the file.
    pub fn read(dir: &Path) -> Result<PemFiles, IdentityError> {
        Ok(PemFiles {
            ca: read_bounded(&dir.join(CA_FILE))?,
            cert: read_bounded(&dir.join(CERT_FILE))?,
            key: read_bounded(&dir.join(KEY_FILE))?,
        })
    }
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
    /// Loads `ca.pem`, `cert.pem` and `key.pem` from `dir` ([`PemFiles::read`], then
    /// [`Identity::from_files`]).
    ///
    /// # Errors
    /// [`IdentityError`] naming the file that is missing or malformed, or saying the key is
    /// not the certificate's.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        Identity::from_files(dir, &PemFiles::read(dir)?)
    }

    /// Parses the files read from `dir` and checks them as both sides' handshakes would use
    /// them: the key must be the certificate's and the CA usable as a trust anchor. What
    /// passes here cannot fail later when a server or client configuration is built from it.
    ///
    /// # Errors
    /// [`IdentityError`] naming the file that holds nothing usable, or
    /// [`IdentityError::KeyMismatch`].
    pub fn from_files(dir: &Path, files: &PemFiles) -> Result<Identity, IdentityError> {
        let ca = certs(&dir.join(CA_FILE), &files.ca)?;
        let chain = certs(&dir.join(CERT_FILE), &files.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&files.key)
            .map_err(|_| IdentityError::Empty { path: dir.join(KEY_FILE), what: "private key" })?;
        let id = Identity { ca, chain, key };
        let mismatch = |e: IdentityError| match e {
            IdentityError::Tls(rustls::Error::InconsistentKeys(_)) => {
                IdentityError::KeyMismatch { dir: dir.to_path_buf() }
            }
            e => e,
        };
        id.server_config().map_err(mismatch)?;
        id.client_config().map_err(mismatch)?;
        Ok(id)
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

fn read_bounded(path: &Path) -> Result<Vec<u8>, IdentityError> {
    use std::io::Read;
    let err = |source| IdentityError::Read { path: path.into(), source };
    let f = std::fs::File::open(path).map_err(err)?;
    let mut out = Vec::new();
    f.take(MAX_PEM_FILE + 1).read_to_end(&mut out).map_err(err)?;
    if out.len() as u64 > MAX_PEM_FILE {
        return Err(IdentityError::TooLarge { path: path.into() });
    }
    Ok(out)
}

fn certs(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let v: Vec<_> = CertificateDer::pem_slice_iter(bytes).filter_map(Result::ok).collect();
    if v.is_empty() {
        return Err(IdentityError::Empty { path: path.into(), what: "certificate" });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A CA and a leaf it signed, as PEM: (ca, cert, key).
    fn leaf() -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    fn files(ca: &str, cert: &str, key: &str) -> PemFiles {
        PemFiles { ca: ca.into(), cert: cert.into(), key: key.into() }
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_named() {
        let (ca, cert, key) = leaf();
        let (_, _, other_key) = leaf();
        let dir = Path::new("/id");
        assert!(Identity::from_files(dir, &files(&ca, &cert, &key)).is_ok());
        let e = Identity::from_files(dir, &files(&ca, &cert, &other_key)).unwrap_err();
        assert!(matches!(e, IdentityError::KeyMismatch { .. }), "{e}");
        assert_eq!(e.to_string(), "/id: key.pem is not the private key of cert.pem");
        let e = Identity::from_files(dir, &files(&ca, "-----BEGIN CERTIFICATE-----\n", &key));
        assert!(
            matches!(&e, Err(IdentityError::Empty { path, .. }) if path.ends_with(CERT_FILE)),
            "{e:?}"
        );
    }

    #[test]
    fn files_are_read_up_to_a_bound() {
        let t = tempfile::tempdir().unwrap();
        let (ca, cert, key) = leaf();
        std::fs::write(t.path().join(CA_FILE), ca).unwrap();
        std::fs::write(t.path().join(CERT_FILE), cert).unwrap();
        std::fs::write(t.path().join(KEY_FILE), key).unwrap();
        assert!(Identity::load(t.path()).is_ok());
        let big = std::fs::File::create(t.path().join(CA_FILE)).unwrap();
        big.set_len(MAX_PEM_FILE + 1).unwrap();
        let e = PemFiles::read(t.path()).unwrap_err();
        assert!(matches!(e, IdentityError::TooLarge { .. }), "{e}");
    }
}
