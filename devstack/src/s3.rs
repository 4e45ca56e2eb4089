//! The S3 endpoint of a local stack (`boxyard-s3dev`): in this process for a test (`Embedded`, feature `embedded-s3`), or as a detached
//! process for `boxyard dev` ([`command`]); and the `--s3-*` flags that point a control plane or a runner at it
//! ([`Endpoint::args`]).

use std::path::Path;
#[cfg(feature = "embedded-s3")]
use std::path::PathBuf;
use std::process::Command;

#[cfg(feature = "embedded-s3")]
use crate::{Result, error::IoContext};

/// Where an S3 endpoint is and how to sign for it (path-style addressing, one static key pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http://host:port`.
    pub url: String,
    /// The one bucket.
    pub bucket: String,
    /// The access key id.
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}

impl Endpoint {
    /// The flags of `boxyard-controlplane serve` and `boxyard-runner serve` that use this endpoint for snapshots.
    pub fn args(&self) -> Vec<String> {
        [
            "--s3-bucket",
            &self.bucket,
            "--s3-endpoint",
            &self.url,
            "--s3-access-key",
            &self.access_key,
            "--s3-secret-key",
            &self.secret_key,
            "--s3-path-style",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// An S3 endpoint served by this process on a free loopback port, its objects in a temporary directory (the server
/// stops and the objects go when dropped). Needs a Tokio runtime and the `embedded-s3` feature.
#[cfg(feature = "embedded-s3")]
pub struct Embedded {
    /// The server (its address is in `server.addr`).
    pub server: boxyard_s3dev::Server,
    /// The directory holding the objects (`<root>/<bucket>/<key>`).
    pub root: tempfile::TempDir,
    /// How to reach it.
    pub endpoint: Endpoint,
}

#[cfg(feature = "embedded-s3")]
impl Embedded {
    /// Serves `bucket` with the key pair (`access_key`, `secret_key`).
    pub async fn start(bucket: &str, access_key: &str, secret_key: &str) -> Result<Embedded> {
        let root =
            tempfile::Builder::new().prefix("boxyard-s3-").tempdir().ctx(|| "creating a temporary dir".into())?;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.ctx(|| "binding 127.0.0.1:0".into())?;
        let server = boxyard_s3dev::serve(root.path(), l, bucket, access_key, secret_key)
            .await
            .ctx(|| "starting the embedded S3 endpoint".into())?;
        let endpoint = Endpoint {
            url: server.endpoint(),
            bucket: bucket.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        };
        Ok(Embedded { server, root, endpoint })
    }

    /// The file holding an object.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(&self.endpoint.bucket).join(key)
    }
}

/// The command of a `boxyard-s3dev` process serving `endpoint` (its port must be in its URL) from `root`, writing
/// its address to `addr_file` once serving.
pub fn command(program: &Path, endpoint: &Endpoint, root: &Path, addr_file: &Path) -> Command {
    let listen = endpoint.url.trim_start_matches("http://");
    let mut c = Command::new(program);
    c.arg("--root")
        .arg(root)
        .args(["--listen", listen, "--bucket", &endpoint.bucket])
        .args(["--access-key", &endpoint.access_key, "--secret-key", &endpoint.secret_key])
        .arg("--addr-file")
        .arg(addr_file);
    c
}
