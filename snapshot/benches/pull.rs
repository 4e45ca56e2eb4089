//! Snapshot pull throughput: a 1 GiB image from the embedded S3 endpoint on loopback into a local file through
//! mountpoint-s3-client, with 1 and N ranged GETs in flight (8 MiB ranges), digest check included.
//! Prints numbers; nothing passes or fails. Run: `cargo bench -p boxyard-snapshot` (release build).

#![allow(clippy::unwrap_used)] // A benchmark: a failure ends it with its location.

use std::time::Instant;

use boxyard_snapshot::s3::{S3Config, S3Store};

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let size: usize = std::env::var("BOXYARD_BENCH_PULL_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024) << 20;
    let dir = tempfile::tempdir().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let srv = boxyard_s3dev::serve(dir.path(), l, "bench", "ak", "sk").await.unwrap();
    let store = S3Store::new(&S3Config {
        endpoint: Some(srv.endpoint()),
        bucket: "bench".into(),
        access_key: Some("ak".into()),
        secret_key: Some("sk".into()),
        path_style: true,
        ..Default::default()
    })
    .unwrap();
    // Incompressible content, generated on the fly.
    let mut x = 0x2545F4914F6CDD1Du64;
    let chunks = (0..size / (1 << 20)).map(move |_| {
        let mut v = vec![0u8; 1 << 20];
        for c in v.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        Ok::<_, std::io::Error>(bytes::Bytes::from(v))
    });
    let t = Instant::now();
    let up = store.upload("img", futures::stream::iter(chunks)).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!("upload {} MiB (multipart, sha256 on the way): {:.0} MB/s", size >> 20, size as f64 / 1e6 / secs);
    for parallel in [1usize, 4, 8, 16] {
        let out = dir.path().join(format!("pull-{parallel}"));
        let t = Instant::now();
        let digest = store.download("img", up.size, &out, parallel).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(digest, up.digest);
        println!(
            "pull {} MiB into the cache, {parallel:>2} ranges in flight (8 MiB each), digest checked: {:.0} MB/s ({secs:.2} s)",
            size >> 20,
            size as f64 / 1e6 / secs
        );
        std::fs::remove_file(out).unwrap();
    }
}
