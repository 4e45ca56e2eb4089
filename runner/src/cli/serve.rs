//! `boxyard-runner serve`: the runner agent — the gRPC runner API over TLS, backed by a state directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use boxyard_runner::boxes::BoxManager;
use boxyard_runner::config::RunnerConfig;
use boxyard_runner::execlog::LogConfig;
use boxyard_runner::paths::StatePaths;
use boxyard_runner::registration;
use boxyard_runner::service::{self, tls};
use boxyard_runner::vm::VmBackend;
use boxyard_runner::vm::local::LocalBackend;

use super::GuestOptions;
use super::units::{parse_duration, parse_size};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    /// kvm where the CPU has hardware virtualization (and boxyard-vmm is installed), QEMU otherwise.
    Auto,
    /// QEMU microVMs (KVM acceleration with hardware virtualization, TCG otherwise).
    Qemu,
    /// Our own KVM monitor, boxyard-vmm (needs hardware virtualization; see --vmm-binary).
    Kvm,
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
    #[arg(long, value_enum, env = "BOXYARD_RUNNER_BACKEND", default_value = "auto")]
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
    /// How long one call to a box's guest agent may take (Exec, Signal, Resize, ...) before it fails as UNAVAILABLE
    /// (a frozen VM or a hung agent). stdin writes wait for the process instead.
    #[arg(long, value_parser = parse_duration, default_value = "10s", env = "BOXYARD_RUNNER_AGENT_TIMEOUT")]
    pub agent_timeout: Duration,
    #[command(flatten)]
    pub guest: GuestOptions,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Off when not given.
    #[arg(long, env = "BOXYARD_RUNNER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub fleet: FleetOptions,
    #[command(flatten)]
    pub s3: boxyard_snapshot::s3::S3Args,
    /// Disk the snapshot image cache may use; least recently used images beyond it are evicted (never one in use).
    #[arg(long, value_parser = parse_size, default_value = "20GiB", env = "BOXYARD_RUNNER_SNAPSHOT_CACHE")]
    pub snapshot_cache: u64,
    /// Ranged GETs in flight per snapshot image download.
    #[arg(long, default_value_t = 8)]
    pub snapshot_fetch_parallel: usize,
}

/// Joining a control plane. Without --controlplane the runner is standalone and its API needs no token (tests and
/// development; keep it on loopback).
#[derive(Args, Debug)]
pub struct FleetOptions {
    /// The control plane's runner registry, http://host:port or https://host:port.
    #[arg(long, env = "BOXYARD_CONTROLPLANE")]
    pub controlplane: Option<String>,
    /// CA certificate (PEM) that signs the registry's certificate (https only; default: the host's trust store).
    #[arg(long, env = "BOXYARD_CONTROLPLANE_CA")]
    pub controlplane_ca: Option<PathBuf>,
    /// Join token for the first registration (from a platform admin). Not needed once registered.
    #[arg(long, env = "BOXYARD_JOIN_TOKEN", hide_env_values = true)]
    pub join_token: Option<String>,
    /// This runner's name in the fleet (default: the host name).
    #[arg(long, env = "BOXYARD_RUNNER_NAME")]
    pub name: Option<String>,
    /// host:port the control plane reaches the runner API at (default: the listen address, when it is not a
    /// wildcard).
    #[arg(long, env = "BOXYARD_RUNNER_ADVERTISE")]
    pub advertise: Option<String>,
    /// The name the runner's TLS certificate is valid for (default: the host of --advertise).
    #[arg(long, env = "BOXYARD_RUNNER_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
    /// CA (PEM) the control plane should trust for this runner's certificate (default: the certificate itself,
    /// right for self-signed certificates such as --tls-dev's).
    #[arg(long, env = "BOXYARD_RUNNER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A label for box placement, key=value (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// vCPUs offered to boxes (default: the host's CPUs).
    #[arg(long, env = "BOXYARD_RUNNER_CAPACITY_VCPUS")]
    pub capacity_vcpus: Option<u32>,
    /// Memory offered to boxes (default: the host's memory minus 1 GiB).
    #[arg(long, value_parser = parse_size, env = "BOXYARD_RUNNER_CAPACITY_MEMORY")]
    pub capacity_memory: Option<u64>,
    /// Disk offered to boxes' writable disks.
    #[arg(long, value_parser = parse_size, default_value = "100GiB", env = "BOXYARD_RUNNER_CAPACITY_DISK")]
    pub capacity_disk: u64,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not key=value")),
    }
}

fn host_memory_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "runner".into());
    let n: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' })
        .collect();
    if n.is_empty() { "runner".into() } else { n }
}

impl FleetOptions {
    fn membership(
        &self,
        listen: std::net::SocketAddr,
        cert_pem: &str,
        api_token: String,
        backend: &str,
        snapshots_enabled: bool,
    ) -> anyhow::Result<Option<registration::Membership>> {
        let Some(cp) = &self.controlplane else { return Ok(None) };
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => {
                bail!("the runner listens on a wildcard address: pass --advertise host:port for the control plane")
            }
            None => listen.to_string(),
        };
        let host =
            advertise.rsplit_once(':').map(|(h, _)| h.trim_matches(['[', ']'])).unwrap_or(&advertise).to_string();
        let read = |p: &PathBuf| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
        let ca = match &self.tls_ca {
            Some(p) => read(p)?,
            None => cert_pem.to_string(),
        };
        let mem_mib = self.capacity_memory.unwrap_or_else(|| host_memory_bytes().saturating_sub(1 << 30)) >> 20;
        let vcpus =
            self.capacity_vcpus.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        if vcpus == 0 || mem_mib == 0 {
            bail!("--capacity-vcpus and --capacity-memory must be positive");
        }
        Ok(Some(registration::Membership {
            controlplane: cp.clone(),
            controlplane_ca: self.controlplane_ca.as_ref().map(read).transpose()?,
            join_token: self.join_token.clone(),
            name: self.name.clone().unwrap_or_else(host_name),
            endpoint: boxyard_proto::registry::Endpoint {
                address: advertise,
                tls_server_name: self.tls_server_name.clone().unwrap_or(host),
                tls_ca_pem: ca,
                api_token,
            },
            labels: self.labels.iter().cloned().collect(),
            capacity: boxyard_proto::registry::Capacity {
                vcpus,
                memory_mib: mem_mib,
                disk_mib: self.capacity_disk >> 20,
            },
            backend: backend.to_string(),
            snapshots_enabled,
        }))
    }
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
        BackendArg::Auto => args.guest.auto_backend(),
        BackendArg::Qemu => Arc::new(args.guest.backend()),
        BackendArg::Kvm => Arc::new(args.guest.kvm_backend()?),
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
    config.agent_timeout = args.agent_timeout;
    if let Some(store) = args.s3.store().context("the snapshot bucket (--s3-*) is misconfigured")? {
        let dir = StatePaths::new(&args.state_dir).snapshots();
        let snaps = boxyard_runner::snapshots::SnapshotStore::new(
            dir,
            store,
            args.snapshot_cache,
            args.snapshot_fetch_parallel,
        )?;
        config.snapshots = Some(Arc::new(snaps));
    }

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}: is another runner using it?", args.listen))?;
    let addr = listener.local_addr()?;
    let backend_name = backend.name();
    let mgr = BoxManager::open(config, backend).await?;
    let inv = mgr.inventory();
    let running = inv.boxes.iter().filter(|b| b.state == boxyard_proto::runner::BoxState::Running as i32).count();
    // Written once recovery is done and the listener is bound: tests and tools wait for this file.
    let addr_file = StatePaths::new(&args.state_dir).addr_file();
    boxyard_runner::store::write_json(&addr_file, &addr.to_string())?;
    eprintln!(
        "boxyard-runner: serving the runner API on {addr} (TLS, backend {backend_name}); {} boxes, {running} running",
        inv.boxes.len()
    );
    let api_token = match &args.fleet.controlplane {
        Some(_) => Some(registration::api_token(&args.state_dir)?),
        None => None,
    };
    let membership = args.fleet.membership(
        addr,
        &tls.cert_pem,
        api_token.clone().unwrap_or_default(),
        &backend_name,
        mgr.snapshots_enabled(),
    )?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let counters = Arc::new(boxyard_runner::metrics::Counters::default());
    if let Some(m) = &args.metrics_listen {
        let l = tokio::net::TcpListener::bind(m).await.with_context(|| format!("cannot listen on {m} (metrics)"))?;
        eprintln!("boxyard-runner: metrics on http://{}/metrics", l.local_addr()?);
        let mut stop = stop_rx.clone();
        tokio::spawn(boxyard_runner::metrics::serve(l, mgr.clone(), counters.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let fleet = membership.map(|m| {
        eprintln!("boxyard-runner: joining the control plane at {} as {:?}", m.controlplane, m.name);
        let mut stop = stop_rx.clone();
        tokio::spawn(registration::run(m, args.state_dir.clone(), mgr.clone(), counters.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    });
    boxyard_telemetry::systemd::ready(&format!("runner API on {addr}; {} boxes, {running} running", inv.boxes.len()));
    let _watchdog = boxyard_telemetry::systemd::spawn_watchdog();
    let shutdown = async {
        shutdown_signal().await;
        eprintln!("boxyard-runner: shutting down; boxes keep running and are re-adopted on the next start");
        boxyard_telemetry::systemd::stopping();
    };
    // Long-lived attach streams would hold a graceful shutdown open: give them a few seconds.
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve = service::serve(mgr, listener, tls.server_config(), api_token, async move {
        let _ = rx.await;
    });
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r.context("the runner API server failed")?,
        r = async {
            match fleet {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        } => {
            // Only a permanent registration failure ends the membership task.
            match r {
                Ok(Err(e)) => bail!("{e}"),
                Ok(Ok(())) => {}
                Err(e) => bail!("the membership task failed: {e}"),
            }
        }
        _ = shutdown => {
            let _ = stop_tx.send(true);
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), serve).await;
        }
    }
    let _ = std::fs::remove_file(addr_file);
    Ok(0)
}
