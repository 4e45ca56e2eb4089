//! `boxyard-s3dev`: the embedded S3 endpoint of the local stack (development and tests only).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "boxyard-s3dev",
    version,
    about = "A local S3-compatible endpoint for Boxyard development and tests (objects are files under --root)"
)]
struct Args {
    /// Directory holding the buckets (one subdirectory each).
    #[arg(long)]
    root: PathBuf,
    /// Address to listen on (port 0: any free port; see --addr-file).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Bucket created at start if missing.
    #[arg(long, default_value = "boxyard")]
    bucket: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "boxyard")]
    access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", default_value = "boxyard-secret", hide_env_values = true)]
    secret_key: String,
    /// Writes the address ("host:port") here once serving.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let a = Args::parse();
    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    let server = boxyard_s3dev::serve(&a.root, listener, &a.bucket, &a.access_key, &a.secret_key).await?;
    if let Some(f) = &a.addr_file {
        std::fs::write(f, server.addr.to_string())?;
    }
    eprintln!("boxyard-s3dev: serving {} on {} (bucket {})", a.root.display(), server.endpoint(), a.bucket);
    tokio::signal::ctrl_c().await?;
    Ok(())
}
