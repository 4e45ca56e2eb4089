//! An embedded S3-compatible server for the local stack and the tests: the s3s protocol layer over s3s-fs (objects
//! are files under a directory), on loopback.
//!
//! Two fixes over s3s-fs as shipped, both needed by mountpoint-s3-client:
//! - `TCP_NODELAY` on accepted sockets (without it every ranged GET stalls ~40 ms on delayed ACKs);
//! - `ListObjectsV2` entries carry ETags (s3s-fs leaves them out; the Mountpoint client requires them).
//!
//! Not for production: production points the control plane and runners at a real S3-compatible store.

use std::net::SocketAddr;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result};
use s3s_fs::FileSystem;
use tokio::net::TcpListener;

/// The S3 service: s3s-fs, with ETags filled into listings.
pub struct DevS3 {
    fs: FileSystem,
}

impl DevS3 {
    pub fn new(root: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let fs = FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(DevS3 { fs })
    }
}

// Every operation s3s-fs implements is delegated to it; only ListObjectsV2 is changed.
#[async_trait::async_trait]
impl S3 for DevS3 {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.fs.delete_bucket(req).await
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let bucket = req.input.bucket.clone();
        let (method, uri, credentials, region, service) =
            (req.method.clone(), req.uri.clone(), req.credentials.clone(), req.region.clone(), req.service.clone());
        let mut resp = self.fs.list_objects_v2(req).await?;
        for obj in resp.output.contents.iter_mut().flatten() {
            if obj.e_tag.is_some() {
                continue;
            }
            let Some(key) = obj.key.clone() else { continue };
            let input = HeadObjectInput::builder()
                .bucket(bucket.clone())
                .key(key)
                .build()
                .map_err(|e| s3s::s3_error!(InternalError, "cannot build a HEAD for the listing: {e}"))?;
            let head = S3Request {
                input,
                method: method.clone(),
                uri: uri.clone(),
                headers: Default::default(),
                extensions: Default::default(),
                credentials: credentials.clone(),
                region: region.clone(),
                service: service.clone(),
                trailing_headers: None,
            };
            // The object may be gone since the listing: leave its entry as it is then.
            if let Ok(h) = self.fs.head_object(head).await {
                obj.e_tag = h.output.e_tag;
            }
        }
        Ok(resp)
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// http://addr
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves the objects under `root` on `listener` (path-style addressing, SigV4 with one static key pair), with
/// `bucket` created if missing.
pub async fn serve(
    root: &Path,
    listener: TcpListener,
    bucket: &str,
    access_key: &str,
    secret_key: &str,
) -> std::io::Result<Server> {
    std::fs::create_dir_all(root.join(bucket))?;
    let mut b = s3s::service::S3ServiceBuilder::new(DevS3::new(root)?);
    b.set_auth(s3s::auth::SimpleAuth::from_single(access_key, secret_key));
    let service = b.build();
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else { continue };
            let _ = socket.set_nodelay(true);
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    Ok(Server { addr, task })
}
