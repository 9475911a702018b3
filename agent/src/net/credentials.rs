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
//!
//! [`IdentityDir`] is the `--identity DIR` of a running agent: rotated files are picked up
//! without a restart. `ferry serve` checks them every `--identity-poll`, a scheduled
//! `push`/`pull` before each round. Files are compared by content, so any way of replacing
//! them counts: an edit in place, a rename over, or Kubernetes swapping a Secret volume's
//! `..data` symlink. A rotation that cannot be used (a key that is not the certificate's, a PEM
//! that does not parse, a missing file) keeps the previous material, is logged once as an
//! error, and counts in `ferry_identity_reloads_total{result="rejected"}`.
//!
//! ```text
//!   files ──read twice, equal?──▶ Identity::from_files ──ok──▶ watch channel ──▶ new handshakes
//!                                        │ error
//!                                        └──▶ log once, keep the previous identity
//! ```

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ferry_transport::tls::{Identity, IdentityError, PemFiles};
use tokio::sync::watch;

use crate::unattended::status::Agent;

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

/// A side's `--identity DIR`, loaded on first use and read again when its files change.
/// Clones share one state: every round of a process sees the same rotation.
#[derive(Clone)]
pub struct IdentityDir {
    inner: Arc<Watched>,
}

/// What [`IdentityDir::refresh`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what is in use (or are being replaced right now: looked at next time).
    Unchanged,
    /// The files changed and the new material is in use for new connections.
    Reloaded,
    /// The files changed but cannot be used; the previous material stays in use.
    Rejected,
    /// Nothing was loaded yet, so there was nothing to compare with.
    NotLoaded,
}

struct Watched {
    dir: PathBuf,
    state: Mutex<Option<InUse>>,
    agent: Mutex<Option<Arc<Agent>>>,
}

/// The identity in use and what its files held.
struct InUse {
    files: blake3::Hash,
    /// The last unusable content seen, so that it is logged and counted once, not every poll.
    rejected: Option<blake3::Hash>,
    tx: watch::Sender<Arc<Identity>>,
}

impl std::fmt::Debug for IdentityDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IdentityDir").field(&self.inner.dir).finish()
    }
}

impl IdentityDir {
    /// The directory `dir`; nothing is read until first use.
    pub fn new(dir: PathBuf) -> IdentityDir {
        IdentityDir {
            inner: Arc::new(Watched { dir, state: Mutex::new(None), agent: Mutex::new(None) }),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// Counts reloads and rejected rotations in `agent`'s metrics from now on.
    pub fn report_to(&self, agent: Arc<Agent>) {
        *crate::lock(&self.inner.agent) = Some(agent);
    }

    /// The identity to use now: loaded on first use, afterwards the files are checked for a
    /// rotation first ([`IdentityDir::refresh`]).
    ///
    /// # Errors
    /// Only on first use, when the files cannot be used; later an unusable rotation keeps the
    /// previous identity.
    pub fn current(&self) -> Result<Arc<Identity>, IdentityError> {
        self.with_in_use(|s| s.tx.borrow().clone())
    }

    /// A receiver of the identity in use, for a server that hands it to each new
    /// connection. Loads the files on first use.
    ///
    /// # Errors
    /// As [`IdentityDir::current`].
    pub fn subscribe(&self) -> Result<watch::Receiver<Arc<Identity>>, IdentityError> {
        self.with_in_use(|s| s.tx.subscribe())
    }

    /// `f` of the identity in use, after a [`IdentityDir::refresh`], or after loading the
    /// files on first use.
    fn with_in_use<R>(&self, f: impl FnOnce(&InUse) -> R) -> Result<R, IdentityError> {
        if self.refresh() != Reload::NotLoaded {
            if let Some(s) = crate::lock(&self.inner.state).as_ref() {
                return Ok(f(s));
            }
        }
        let dir = &self.inner.dir;
        let files = PemFiles::read(dir)?;
        let id = Arc::new(Identity::from_files(dir, &files)?);
        let mut state = crate::lock(&self.inner.state);
        let s = match state.as_mut() {
            // Another thread loaded first: the newest read wins.
            Some(s) => {
                s.files = digest(&files);
                s.tx.send_replace(id);
                s
            }
            None => {
                let (tx, _) = watch::channel(id);
                state.insert(InUse { files: digest(&files), rejected: None, tx })
            }
        };
        Ok(f(s))
    }

    /// Reads the files and, when they hold something other than what is in use, switches to
    /// it if it can be used. The files are read twice and must agree: a rotation seen half
    /// done (a Secret swapped between two reads, files copied one by one) is looked at again
    /// next time instead of being judged.
    pub fn refresh(&self) -> Reload {
        let dir = &self.inner.dir;
        let mut guard = crate::lock(&self.inner.state);
        let Some(state) = guard.as_mut() else { return Reload::NotLoaded };
        let first = PemFiles::read(dir);
        let seen = match &first {
            Ok(f) => digest(f),
            Err(e) => blake3::hash(e.to_string().as_bytes()),
        };
        if seen == state.files {
            // Back to what is in use: the same bad rotation again later is news again.
            state.rejected = None;
            return Reload::Unchanged;
        }
        let again = match PemFiles::read(dir) {
            Ok(f) => digest(&f),
            Err(e) => blake3::hash(e.to_string().as_bytes()),
        };
        if again != seen {
            tracing::debug!(
                "{}: credentials are being replaced; looked at again next time",
                dir.display()
            );
            return Reload::Unchanged;
        }
        let agent = crate::lock(&self.inner.agent).clone();
        match first.and_then(|f| Identity::from_files(dir, &f)) {
            Ok(id) => {
                state.files = seen;
                state.rejected = None;
                state.tx.send_replace(Arc::new(id));
                tracing::info!(
                    "{}: credentials changed; new connections use them (connections up keep theirs)",
                    dir.display()
                );
                if let Some(a) = agent {
                    a.identity_reload(true);
                }
                Reload::Reloaded
            }
            Err(e) => {
                if state.rejected != Some(seen) {
                    state.rejected = Some(seen);
                    tracing::error!(
                        "{}: credentials changed but cannot be used ({e}); still using the previous ones",
                        dir.display()
                    );
                    if let Some(a) = agent {
                        a.identity_reload(false);
                    }
                }
                Reload::Rejected
            }
        }
    }

    /// Checks the files every `every` until the process ends (`ferry serve`); the reads run
    /// on a blocking thread. Spawn it on the runtime.
    pub async fn poll_every(self, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.refresh()).await;
        }
    }
}

/// What the three files hold, as one value to compare (each length-prefixed, so bytes
/// cannot move from one file to the next unnoticed).
fn digest(f: &PemFiles) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    for part in [&f.ca, &f.cert, &f.key] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize()
}
