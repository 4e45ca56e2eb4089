//! Boxyard snapshots: named, immutable root filesystem images that boxes boot from.
//!
//! - [`image`]: the format (an ext4 image plus metadata: default command, env, working directory, user) and the
//!   reproducible builder from a directory; [`oci`]: import of an OCI layout or `docker save` archive.
//! - [`s3`]: storing images in S3 and fetching them, through mountpoint-s3-client.

pub mod image;
pub mod oci;
#[cfg(feature = "s3")]
pub mod s3;

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of a file's bytes.
pub fn digest_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(h.finalize())))
}
