//! Snapshot images in S3, through the AWS Mountpoint client library (`mountpoint-s3-client`): streamed multipart
//! uploads that compute the SHA-256 on the way, and downloads with parallel ranged GETs into a file.
//!
//! Works with any S3-compatible endpoint: region, endpoint URL, bucket, static credentials or the AWS default chain,
//! path-style or virtual-host addressing.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use mountpoint_s3_client::config::{
    AddressingStyle, Allocator, CredentialsProvider, CredentialsProviderStaticOptions, EndpointConfig,
    S3ClientAuthConfig, S3ClientConfig, Uri,
};
use mountpoint_s3_client::types::{GetObjectParams, HeadObjectParams, PutObjectParams};
use mountpoint_s3_client::{ObjectClient, PutObjectRequest, S3CrtClient};
use sha2::{Digest, Sha256};

/// Where snapshot images live.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL (e.g. http://127.0.0.1:9000); None: AWS S3 for `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Static credentials; None: the AWS default chain (environment, profile, instance metadata).
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Path-style addressing (most self-hosted S3-compatible stores need it).
    pub path_style: bool,
    /// Size of the multipart upload parts and of the ranged GETs.
    pub part_size: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: "boxyard".into(),
            access_key: None,
            secret_key: None,
            path_style: false,
            part_size: 8 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 configuration: {0}")]
    Config(String),
    #[error("S3 {op} of {key}: {message}")]
    Request { op: &'static str, key: String, message: String },
    #[error("the upload body failed: {0}")]
    Body(std::io::Error),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

fn req_err(op: &'static str, key: &str, e: impl std::error::Error) -> S3Error {
    // Include the sources: the top-level messages of the client are generic ("Service error").
    let mut message = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        message.push_str(": ");
        message.push_str(&s.to_string());
        src = s.source();
    }
    S3Error::Request { op, key: key.to_string(), message }
}

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
}

#[derive(Clone)]
pub struct S3Store {
    client: Arc<S3CrtClient>,
    pub bucket: String,
    part_size: usize,
}

impl S3Store {
    pub fn new(cfg: &S3Config) -> Result<Self, S3Error> {
        let mut endpoint = EndpointConfig::new(&cfg.region);
        if let Some(url) = &cfg.endpoint {
            let uri = Uri::new_from_str(&Allocator::default(), url)
                .map_err(|e| S3Error::Config(format!("endpoint {url:?}: {e}")))?;
            endpoint = endpoint.endpoint(uri);
        }
        if cfg.path_style {
            endpoint = endpoint.addressing_style(AddressingStyle::Path);
        }
        let auth = match (&cfg.access_key, &cfg.secret_key) {
            (Some(ak), Some(sk)) => {
                let opts =
                    CredentialsProviderStaticOptions { access_key_id: ak, secret_access_key: sk, session_token: None };
                let p = CredentialsProvider::new_static(&Allocator::default(), opts)
                    .map_err(|e| S3Error::Config(format!("static credentials: {e}")))?;
                S3ClientAuthConfig::Provider(p)
            }
            (None, None) => S3ClientAuthConfig::Default,
            _ => return Err(S3Error::Config("give both the access key and the secret key, or neither".into())),
        };
        let config = S3ClientConfig::new()
            .endpoint_config(endpoint)
            .auth_config(auth)
            .part_size(cfg.part_size)
            .throughput_target_gbps(10.0);
        let client = S3CrtClient::new(config).map_err(|e| S3Error::Config(e.to_string()))?;
        Ok(S3Store { client: Arc::new(client), bucket: cfg.bucket.clone(), part_size: cfg.part_size })
    }

    /// The underlying Mountpoint client.
    pub fn client(&self) -> &S3CrtClient {
        &self.client
    }

    /// Streams `body` into `key` as a multipart upload, hashing it on the way. If the body fails, the upload is
    /// abandoned (aborted) and nothing is stored under `key`.
    pub async fn upload<S>(&self, key: &str, body: S) -> Result<Uploaded, S3Error>
    where
        S: Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send,
    {
        let mut req = self
            .client
            .put_object(&self.bucket, key, &PutObjectParams::new())
            .await
            .map_err(|e| req_err("PutObject", key, e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            // Dropping `req` on an error aborts the multipart upload.
            let chunk = chunk.map_err(S3Error::Body)?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            req.write(&chunk).await.map_err(|e| req_err("PutObject", key, e))?;
        }
        req.complete().await.map_err(|e| req_err("PutObject", key, e))?;
        Ok(Uploaded { size, digest: format!("sha256:{}", hex::encode(hasher.finalize())) })
    }

    /// The size of `key`, or None if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, S3Error> {
        match self.client.head_object(&self.bucket, key, &HeadObjectParams::new()).await {
            Ok(h) => Ok(Some(h.size)),
            Err(mountpoint_s3_client::error::ObjectClientError::ServiceError(
                mountpoint_s3_client::error::HeadObjectError::NotFound,
            )) => Ok(None),
            Err(e) => Err(req_err("HeadObject", key, e)),
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        self.client.delete_object(&self.bucket, key).await.map_err(|e| req_err("DeleteObject", key, e))?;
        Ok(())
    }

    /// Downloads `key` (`size` bytes) into `dest` with up to `parallel` ranged GETs in flight, then returns the
    /// `sha256:<hex>` of what was written.
    pub async fn download(&self, key: &str, size: u64, dest: &Path, parallel: usize) -> Result<String, S3Error> {
        let io = |source| S3Error::Io { path: dest.display().to_string(), source };
        let file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(dest).map_err(io)?;
        file.set_len(size).map_err(io)?;
        let file = Arc::new(file);
        let part = self.part_size as u64;
        let ranges: Vec<std::ops::Range<u64>> =
            (0..size.div_ceil(part)).map(|i| i * part..((i + 1) * part).min(size)).collect();
        let results = futures::stream::iter(ranges)
            .map(|range| {
                let (client, bucket, file) = (self.client.clone(), self.bucket.clone(), file.clone());
                let key = key.to_string();
                async move {
                    let params = GetObjectParams::new().range(Some(range.clone()));
                    let mut resp =
                        client.get_object(&bucket, &key, &params).await.map_err(|e| req_err("GetObject", &key, e))?;
                    let mut got = 0u64;
                    while let Some(part) = resp.next().await {
                        let part = part.map_err(|e| req_err("GetObject", &key, e))?;
                        let (f, data, off) = (file.clone(), part.data, part.offset);
                        got += data.len() as u64;
                        tokio::task::spawn_blocking(move || f.write_all_at(&data, off))
                            .await
                            .map_err(|e| S3Error::Body(std::io::Error::other(e)))?
                            .map_err(|source| S3Error::Io { path: key.clone(), source })?;
                    }
                    if got != range.end - range.start {
                        return Err(S3Error::Request {
                            op: "GetObject",
                            key,
                            message: format!("range {range:?} returned {got} bytes"),
                        });
                    }
                    Ok::<_, S3Error>(())
                }
            })
            .buffer_unordered(parallel.max(1))
            .collect::<Vec<_>>()
            .await;
        for r in results {
            r?;
        }
        file.sync_all().map_err(io)?;
        let path = dest.to_path_buf();
        tokio::task::spawn_blocking(move || crate::digest_file(&path))
            .await
            .map_err(|e| S3Error::Body(std::io::Error::other(e)))?
            .map_err(io)
    }
}

/// Command-line options for the snapshot bucket (the control plane and the runner take the same ones).
#[derive(Debug, Clone, clap::Args)]
pub struct S3Args {
    /// The bucket holding snapshot images. Without it, snapshots are off.
    #[arg(long = "s3-bucket", env = "BOXYARD_S3_BUCKET")]
    pub bucket: Option<String>,
    /// S3 endpoint URL (default: AWS S3 for --s3-region), e.g. http://127.0.0.1:9000 for the local stack.
    #[arg(long = "s3-endpoint", env = "BOXYARD_S3_ENDPOINT")]
    pub endpoint: Option<String>,
    #[arg(long = "s3-region", env = "BOXYARD_S3_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Static credentials (default: the AWS chain: environment, profile, instance metadata).
    #[arg(long = "s3-access-key", env = "BOXYARD_S3_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    #[arg(long = "s3-secret-key", env = "BOXYARD_S3_SECRET_KEY", hide_env_values = true, requires = "access_key")]
    pub secret_key: Option<String>,
    /// Path-style addressing (most self-hosted S3-compatible stores need it).
    #[arg(long = "s3-path-style", env = "BOXYARD_S3_PATH_STYLE")]
    pub path_style: bool,
}

impl S3Args {
    /// The store, or None when no bucket is configured.
    pub fn store(&self) -> Result<Option<S3Store>, S3Error> {
        let Some(bucket) = &self.bucket else { return Ok(None) };
        let cfg = S3Config {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            bucket: bucket.clone(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
            path_style: self.path_style,
            ..Default::default()
        };
        S3Store::new(&cfg).map(Some)
    }
}

impl S3Store {
    /// Streams `key` and returns its size and `sha256:<hex>` (checks an object registered by key).
    pub async fn digest(&self, key: &str) -> Result<(u64, String), S3Error> {
        let mut resp = self
            .client
            .get_object(&self.bucket, key, &GetObjectParams::new())
            .await
            .map_err(|e| req_err("GetObject", key, e))?;
        let mut h = Sha256::new();
        let mut size = 0u64;
        while let Some(part) = resp.next().await {
            let part = part.map_err(|e| req_err("GetObject", key, e))?;
            size += part.data.len() as u64;
            h.update(&part.data);
        }
        Ok((size, format!("sha256:{}", hex::encode(h.finalize()))))
    }
}
