//! `ferry init`: the credentials of a replication pair, like VolSync's generated keys but with
//! certificates: a private CA, a destination identity (server) and a source identity (client).
//!
//! ```text
//!   OUT/destination/{ca.pem, cert.pem, key.pem}   copy to the destination side
//!   OUT/source/{ca.pem, cert.pem, key.pem}        copy to the source side
//! ```
//!
//! The CA's private key is not kept: nobody can mint another identity for this pair. To
//! rotate, run `ferry init` again and replace both directories.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The PEM text of one side's identity.
#[derive(Debug, Clone)]
pub struct IdentityPem {
    /// The pair's CA certificate.
    pub ca: String,
    /// This side's certificate.
    pub cert: String,
    /// This side's private key.
    pub key: String,
}

/// Both sides' credentials.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The destination (server) identity; its certificate names the given hosts.
    pub destination: IdentityPem,
    /// The source (client) identity.
    pub source: IdentityPem,
}

/// Why credentials could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// A name is neither a DNS name nor an IP address.
    #[error("invalid --name {0:?}: give a DNS name or an IP address")]
    Name(String),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// Generates a pair whose certificates are valid from `not_before` to `not_after` (ECDSA
/// P-256). The destination certificate carries `names` as subject alternative names.
///
/// # Errors
/// [`InitError`] for invalid names or generation failures.
pub fn generate(
    names: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Pair, InitError> {
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_key = KeyPair::generate_for(alg)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "ferry replication pair CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str,
                sans: &[String],
                usage: ExtendedKeyUsagePurpose|
     -> Result<IdentityPem, InitError> {
        let key = KeyPair::generate_for(alg)?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.subject_alt_names = sans
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| InitError::Name(n.clone())),
            })
            .collect::<Result<_, _>>()?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.not_before = not_before;
        p.not_after = not_after;
        let cert = p.signed_by(&key, &issuer)?;
        Ok(IdentityPem { ca: ca_cert.pem(), cert: cert.pem(), key: key.serialize_pem() })
    };
    Ok(Pair {
        destination: leaf("ferry destination", names, ExtendedKeyUsagePurpose::ServerAuth)?,
        // The source is a client: its name is not checked, its CA-signed certificate is.
        source: leaf("ferry source", &[], ExtendedKeyUsagePurpose::ClientAuth)?,
    })
}

/// Generates a pair valid for `days` from now (backdated an hour for clock skew).
///
/// # Errors
/// As [`generate`].
pub fn generate_for_days(names: &[String], days: u32) -> Result<Pair, InitError> {
    let now = OffsetDateTime::now_utc();
    generate(names, now - Duration::hours(1), now + Duration::days(i64::from(days)))
}

/// Writes `id` into `dir` (`ca.pem`, `cert.pem`, and `key.pem` with mode 0600).
///
/// # Errors
/// [`InitError::Write`] naming the file.
pub fn write_identity(dir: &Path, id: &IdentityPem) -> Result<(), InitError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    for (name, text, mode) in
        [("ca.pem", &id.ca, 0o644), ("cert.pem", &id.cert, 0o644), ("key.pem", &id.key, 0o600)]
    {
        let p = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&p)
            .map_err(err(&p))?;
        f.write_all(text.as_bytes()).map_err(err(&p))?;
        f.sync_all().map_err(err(&p))?;
    }
    Ok(())
}

/// A Kubernetes Secret (YAML) holding one side's identity under the keys `ca.pem`,
/// `cert.pem` and `key.pem`, to mount as the agent's `--identity` directory.
pub fn k8s_secret(namespace: &str, name: &str, id: &IdentityPem) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/managed-by: ferry\ntype: Opaque\nstringData:\n  ca.pem: |\n{}  cert.pem: |\n{}  key.pem: |\n{}",
        indent(&id.ca),
        indent(&id.cert),
        indent(&id.key)
    )
}
