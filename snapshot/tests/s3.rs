//! The S3 path against the embedded S3 server on loopback, through mountpoint-s3-client: streamed multipart upload
//! with its digest, parallel ranged download, an interrupted upload leaving nothing behind, listings with ETags.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use boxyard_snapshot::s3::{S3Config, S3Store};
use futures::StreamExt;

async fn server(dir: &std::path::Path) -> (boxyard_s3dev::Server, S3Store) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = boxyard_s3dev::serve(dir, l, "snaps", "ak", "sk").await.unwrap();
    let cfg = S3Config {
        endpoint: Some(srv.endpoint()),
        bucket: "snaps".into(),
        access_key: Some("ak".into()),
        secret_key: Some("sk".into()),
        path_style: true,
        part_size: 5 << 20,
        ..Default::default()
    };
    (srv, S3Store::new(&cfg).unwrap())
}

fn data(n: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_then_parallel_download_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, store) = server(dir.path()).await;
    let bytes = data(23 << 20);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        bytes.chunks(1 << 20).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
    let up = store.upload("images/a", futures::stream::iter(chunks)).await.unwrap();
    assert_eq!(up.size, bytes.len() as u64);
    let expected = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)));
    assert_eq!(up.digest, expected);
    assert_eq!(store.size("images/a").await.unwrap(), Some(bytes.len() as u64));
    assert_eq!(store.size("images/none").await.unwrap(), None);
    let out = dir.path().join("out.img");
    let got = store.download("images/a", up.size, &out, 4).await.unwrap();
    assert_eq!(got, expected);
    assert!(std::fs::read(&out).unwrap() == bytes);
    store.delete("images/a").await.unwrap();
    assert_eq!(store.size("images/a").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_upload_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_srv, store) = server(dir.path()).await;
    let good = futures::stream::iter((0..12).map(|_| Ok(bytes::Bytes::from(vec![7u8; 1 << 20]))));
    let broken = good.chain(futures::stream::iter([Err(std::io::Error::other("client went away"))]));
    let err = store.upload("images/b", broken).await.unwrap_err();
    assert!(err.to_string().contains("client went away"), "{err}");
    assert_eq!(store.size("images/b").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn listings_carry_etags() {
    use mountpoint_s3_client::ObjectClient;
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = boxyard_s3dev::serve(dir.path(), l, "lst", "ak", "sk").await.unwrap();
    let cfg = S3Config {
        endpoint: Some(srv.endpoint()),
        bucket: "lst".into(),
        access_key: Some("ak".into()),
        secret_key: Some("sk".into()),
        path_style: true,
        ..Default::default()
    };
    let store = S3Store::new(&cfg).unwrap();
    store.upload("x/1", futures::stream::iter([Ok(bytes::Bytes::from_static(b"hello"))])).await.unwrap();
    let client = store.client();
    let list = client.list_objects("lst", None, "/", 100, "x/").await.unwrap();
    assert_eq!(list.objects.len(), 1);
    assert!(!list.objects[0].etag.is_empty());
}
