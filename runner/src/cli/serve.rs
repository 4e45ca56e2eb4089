//! `boxyard-runner serve`: the runner agent — the gRPC runner API over TLS, backed by a state directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use boxyard_runner::boxes::BoxManager;
use boxyard_runner::config::RunnerConfig;
use boxyard_runner::execlog::LogConfig;
use boxyard_runner::service::{self, tls};
use boxyard_runner::vm::VmBackend;
use boxyard_runner::vm::local::LocalBackend;

use super::GuestOptions;
use super::units::{parse_duration, parse_size};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    /// QEMU microVMs (KVM acceleration with hardware virtualization, TCG otherwise).
    Qemu,
    /// TESTS AND DEVELOPMENT ONLY: the guest agent runs as a host process, with no VM and no isolation.
    Local,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where the runner keeps boxes, disks, executions and their output logs.
    #[arg(long, env = "BOXYARD_RUNNER_STATE_DIR", default_value = "/var/lib/boxyard-runner")]
    pub state_dir: PathBuf,
    /// Address to serve the runner API on (port 0: any free port; the chosen address is written to
    /// STATE_DIR/runner.addr).
    #[arg(long, env = "BOXYARD_RUNNER_LISTEN", default_value = "127.0.0.1:7443")]
    pub listen: String,
    /// VM backend.
    #[arg(long, value_enum, env = "BOXYARD_RUNNER_BACKEND", default_value = "qemu")]
    pub backend: BackendArg,
    /// The guest agent binary for the local backend (default: boxyard-guest beside this binary).
    #[arg(long, env = "BOXYARD_GUEST_BIN")]
    pub guest_binary: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "BOXYARD_RUNNER_TLS_CERT", requires = "tls_key", conflicts_with = "tls_dev")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "BOXYARD_RUNNER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Development: use a self-signed certificate for localhost, generated once into STATE_DIR/tls/ (clients
    /// trust STATE_DIR/tls/dev-cert.pem).
    #[arg(long)]
    pub tls_dev: bool,
    /// Output retained per execution; older output is dropped and readers get a gap record.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    pub log_retention: u64,
    /// Size of one execution log segment file (retention drops whole segments).
    #[arg(long, value_parser = parse_size, default_value = "8MiB")]
    pub log_segment: u64,
    /// How long the output and result of a finished execution are kept.
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub finished_ttl: Duration,
    /// How often finished executions are checked against --finished-ttl.
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub gc_interval: Duration,
    #[command(flatten)]
    pub guest: GuestOptions,
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("can install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    if args.log_segment == 0 || args.log_retention < args.log_segment {
        bail!("--log-retention must be at least --log-segment (a whole segment is the unit of retention)");
    }
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state directory {}", args.state_dir.display()))?;
    let tls = match (&args.tls_cert, &args.tls_key, args.tls_dev) {
        (Some(c), Some(k), _) => tls::CertPair::load(c, k)?,
        (_, _, true) => tls::dev_certificate(&args.state_dir)?,
        _ => bail!("the runner API is served over TLS: pass --tls-cert and --tls-key, or --tls-dev for development"),
    };
    let backend: Arc<dyn VmBackend> = match args.backend {
        BackendArg::Qemu => Arc::new(args.guest.backend()),
        BackendArg::Local => {
            let b = match &args.guest_binary {
                Some(p) => LocalBackend { guest_binary: p.clone() },
                None => LocalBackend::beside_current_exe()
                    .context("no boxyard-guest beside this binary: build it or pass --guest-binary")?,
            };
            tracing::warn!("LOCAL BACKEND: commands run on this host with no isolation (tests and development only)");
            Arc::new(b)
        }
    };
    let mut config = RunnerConfig::new(args.state_dir.clone());
    config.guest = args.guest.image();
    config.default_root_image = Some(args.guest.rootfs.clone());
    config.kernel_args = args.guest.kernel_args.clone();
    config.boot_timeout = Duration::from_secs(args.guest.boot_timeout);
    config.log = LogConfig { segment_bytes: args.log_segment, retention_bytes: args.log_retention };
    config.finished_ttl = args.finished_ttl;
    config.gc_interval = args.gc_interval;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is another runner using it?", args.listen))?;
    let addr = listener.local_addr()?;
    let backend_name = backend.name();
    let mgr = BoxManager::open(config, backend).await?;
    let inv = mgr.inventory();
    let running = inv.boxes.iter().filter(|b| b.state == boxyard_proto::runner::BoxState::Running as i32).count();
    // Written once recovery is done and the listener is bound: tests and tools wait for this file.
    let addr_file = args.state_dir.join("runner.addr");
    boxyard_runner::store::write_json(&addr_file, &addr.to_string())?;
    eprintln!(
        "boxyard-runner: serving the runner API on {addr} (TLS, backend {backend_name}); {} boxes, {running} running",
        inv.boxes.len()
    );
    let shutdown = async {
        shutdown_signal().await;
        eprintln!("boxyard-runner: shutting down; boxes keep running and are re-adopted on the next start");
    };
    // Long-lived attach streams would hold a graceful shutdown open: give them a few seconds.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve = service::serve(mgr, listener, tls.server_config(), async move {
        let _ = rx.await;
    });
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r.context("the runner API server failed")?,
        _ = shutdown => {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
        }
    }
    let _ = std::fs::remove_file(addr_file);
    Ok(0)
}
