//! TLS for the runner API (rustls through tonic).
//!
//! Production passes a certificate and key (PEM). Development (`--tls-dev`) uses a self-signed certificate for
//! `localhost` and `127.0.0.1`, generated once into the state directory (`tls/dev-cert.pem`, `tls/dev-key.pem`);
//! clients trust it by using `dev-cert.pem` as their CA.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tonic::transport::{Identity, ServerTlsConfig};

/// Why the TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The development certificate could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The development certificate could not be generated.
    #[error("cannot generate the development certificate: {0}")]
    Generate(String),
}

/// A certificate chain and its private key, PEM-encoded.
#[derive(Clone)]
pub struct CertPair {
    /// The certificate chain.
    pub cert_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl CertPair {
    /// Reads a certificate chain and a key from files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| TlsError::Read { path: p.into(), source });
        Ok(CertPair { cert_pem: read(cert)?, key_pem: read(key)? })
    }

    /// The server's TLS configuration with this identity.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// Where the development certificate lives in a state directory.
pub fn dev_cert_path(state_dir: &Path) -> PathBuf {
    crate::paths::StatePaths::new(state_dir).dev_cert()
}

/// The development certificate of a state directory, generated on first use.
pub fn dev_certificate(state_dir: &Path) -> Result<CertPair, TlsError> {
    let cert = dev_cert_path(state_dir);
    let key = crate::paths::StatePaths::new(state_dir).dev_key();
    if cert.is_file() && key.is_file() {
        return CertPair::load(&cert, &key);
    }
    let dir = cert.parent().expect("has a parent");
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.into(), source })?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let pair = CertPair { cert_pem: generated.cert.pem(), key_pem: generated.signing_key.serialize_pem() };
    let write = |p: &Path, data: &str, mode: u32| -> Result<(), TlsError> {
        let err = |source| TlsError::Write { path: p.into(), source };
        let tmp = p.with_extension("tmp");
        let mut f =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(err)?;
        f.write_all(data.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
        std::fs::rename(&tmp, p).map_err(err)
    };
    write(&key, &pair.key_pem, 0o600)?;
    write(&cert, &pair.cert_pem, 0o644)?;
    Ok(pair)
}
