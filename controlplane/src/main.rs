//! `boxyard-controlplane`: the control plane binary (`serve`, `migrate`). Benchmarks: `cargo bench -p boxyard-controlplane`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use boxyard_controlplane::config::Config;
use boxyard_controlplane::state::AppState;
use boxyard_controlplane::{api, db, reconciler, registry, telemetry};

#[derive(Parser)]
#[command(
    name = "boxyard-controlplane",
    version,
    about = "The Boxyard control plane: API gateway, runner registry, scheduler and reconciler"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the REST + WebSocket API and the runner registry; lead the reconciler when elected.
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit (serve also applies them).
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Args)]
struct DbArgs {
    /// Postgres URL, e.g. postgres://boxyard@127.0.0.1:5432/boxyard.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "BOXYARD_DB_MAX_CONNECTIONS", default_value_t = 20)]
    db_max_connections: u32,
    /// How long to wait for the database at start.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    db_wait: Duration,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Address of the REST + WebSocket API (port 0: any free port, see --addr-file). Plain HTTP: terminate TLS in
    /// front of it (load balancer or reverse proxy).
    #[arg(long, env = "BOXYARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Address of the runner registry (gRPC).
    #[arg(long, env = "BOXYARD_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    registry_listen: String,
    /// TLS certificate (PEM) for the runner registry; without it the registry is plain HTTP/2 (fine on loopback or
    /// a private network only).
    #[arg(long, env = "BOXYARD_REGISTRY_TLS_CERT", requires = "registry_tls_key")]
    registry_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the runner registry.
    #[arg(long, env = "BOXYARD_REGISTRY_TLS_KEY", requires = "registry_tls_cert")]
    registry_tls_key: Option<PathBuf>,
    /// Writes {"api": "host:port", "registry": "host:port"} here once serving.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// The first platform admin key (byk_<12 hex>_<48 hex>), installed if no platform admin key exists. Without it
    /// one is generated and printed once.
    #[arg(long, env = "BOXYARD_BOOTSTRAP_KEY", hide_env_values = true)]
    bootstrap_key: Option<String>,
    /// Read the bootstrap key from this file instead.
    #[arg(long, env = "BOXYARD_BOOTSTRAP_KEY_FILE", conflicts_with = "bootstrap_key")]
    bootstrap_key_file: Option<PathBuf>,
    /// How often runners send heartbeats.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    heartbeat_interval: Duration,
    /// A runner silent this long is unresponsive (no new boxes).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    runner_unresponsive_after: Duration,
    /// A runner silent this long is lost, with its boxes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "45s")]
    runner_lost_after: Duration,
    /// Interval between reconciler passes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    reconcile_interval: Duration,
    /// A placement left unfinished this long (its replica died) is retried.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    placement_stale_after: Duration,
    /// vCPU overcommit factor (1: none).
    #[arg(long, default_value_t = 1.0)]
    cpu_overcommit: f64,
    /// Memory overcommit factor (1: none).
    #[arg(long, default_value_t = 1.0)]
    memory_overcommit: f64,
    /// Runners tried for one placement.
    #[arg(long, default_value_t = 3)]
    placement_attempts: usize,
    /// Finished executions and deleted boxes are kept this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7days")]
    record_retention: Duration,
    /// Deadline of a call to a runner (other than creating, starting and stopping a box). A runner that does not
    /// answer in time: reads answer from the stored record (header `x-boxyard-stale`), writes answer
    /// 503 runner_unavailable with retry_after.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    runner_call_timeout: Duration,
    /// How long a runner gets to create and boot a box (a snapshot pull included).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    create_timeout: Duration,
    /// How long a runner gets to stop a box (its executions end, its guest powers off).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    stop_timeout: Duration,
    /// The snapshot bucket (runners must be given the same one).
    #[command(flatten)]
    s3: boxyard_snapshot::s3::S3Args,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _guard = telemetry::init("boxyard-controlplane", "info,sqlx=warn,tower_http=info");
    let r = match cli.cmd {
        Cmd::Serve(a) => serve(*a).await,
        Cmd::Migrate { db: d } => {
            async {
                let pool = db::connect(&d.database_url, 2, d.db_wait).await?;
                db::migrate(&pool).await?;
                eprintln!("boxyard-controlplane: database migrated");
                Ok(())
            }
            .await
        }
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("boxyard-controlplane: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
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

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    if !(a.cpu_overcommit >= 1.0 && a.memory_overcommit >= 1.0) {
        anyhow::bail!("--cpu-overcommit and --memory-overcommit must be at least 1");
    }
    if a.runner_lost_after < a.runner_unresponsive_after || a.runner_unresponsive_after < a.heartbeat_interval {
        anyhow::bail!("expected --heartbeat-interval <= --runner-unresponsive-after <= --runner-lost-after");
    }
    let config = Config {
        heartbeat_interval: a.heartbeat_interval,
        runner_unresponsive_after: a.runner_unresponsive_after,
        runner_lost_after: a.runner_lost_after,
        reconcile_interval: a.reconcile_interval,
        placement_stale_after: a.placement_stale_after,
        cpu_overcommit: a.cpu_overcommit,
        memory_overcommit: a.memory_overcommit,
        placement_attempts: a.placement_attempts.max(1),
        record_retention: a.record_retention,
        runner_call_timeout: a.runner_call_timeout,
        create_timeout: a.create_timeout,
        stop_timeout: a.stop_timeout,
        ..Config::default()
    };
    let pool = db::connect(&a.db.database_url, a.db.db_max_connections, a.db.db_wait).await?;
    db::migrate(&pool).await?;
    let key = match (&a.bootstrap_key, &a.bootstrap_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (_, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the bootstrap key file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        _ => None,
    };
    if let Some(generated) = db::bootstrap(&pool, key.as_deref(), &config.default_quota).await? {
        if key.is_none() {
            eprintln!(
                "boxyard-controlplane: created the first platform admin key (shown once, store it now):\n\n    {generated}\n"
            );
        } else {
            eprintln!("boxyard-controlplane: installed the bootstrap platform admin key");
        }
    }
    let s3 = a.s3.store().context("the snapshot bucket (--s3-*) is misconfigured")?;
    if s3.is_none() {
        eprintln!("boxyard-controlplane: no --s3-bucket: snapshots are off (boxes boot the runners' default image)");
    }
    let st = AppState::with_s3(pool, config, s3);

    let api_listener =
        tokio::net::TcpListener::bind(&a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let reg_listener = tokio::net::TcpListener::bind(&a.registry_listen)
        .await
        .with_context(|| format!("cannot listen on {} (registry)", a.registry_listen))?;
    let api_addr = api_listener.local_addr()?;
    let reg_addr = reg_listener.local_addr()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let reconciler = tokio::spawn(reconciler::run(st.clone(), a.db.database_url.clone(), stop_rx.clone()));

    let mut reg_builder = tonic::transport::Server::builder().trace_fn(telemetry::grpc_span);
    if let (Some(c), Some(k)) = (&a.registry_tls_cert, &a.registry_tls_key) {
        let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let id = tonic::transport::Identity::from_pem(read(c)?, read(k)?);
        reg_builder = reg_builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(id))?;
    } else if !reg_addr.ip().is_loopback() {
        tracing::warn!(
            "the runner registry on {reg_addr} is served without TLS: pass --registry-tls-cert/--registry-tls-key"
        );
    }
    let mut reg_stop = stop_rx.clone();
    let registry =
        reg_builder.add_service(registry::RegistryService::new(st.clone()).into_server()).serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(reg_listener).with_nodelay(Some(true)),
            async move {
                let _ = reg_stop.wait_for(|s| *s).await;
            },
        );
    let registry = tokio::spawn(registry);

    let mut api_stop = stop_rx.clone();
    let app = api::router(st.clone());
    let api = axum::serve(api_listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = api_stop.wait_for(|s| *s).await;
        })
        .into_future();
    let api = tokio::spawn(api);

    if let Some(f) = &a.addr_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::json!({"api": api_addr.to_string(), "registry": reg_addr.to_string()}).to_string(),
        )?;
        std::fs::rename(&tmp, f)?;
    }
    eprintln!("boxyard-controlplane: API on http://{api_addr}, runner registry on {reg_addr}");
    telemetry::systemd::ready(&format!("API on {api_addr}, runner registry on {reg_addr}"));
    let watchdog = telemetry::systemd::spawn_watchdog();

    shutdown_signal().await;
    eprintln!("boxyard-controlplane: shutting down");
    telemetry::systemd::stopping();
    if let Some(w) = watchdog {
        w.abort();
    }
    let _ = stop_tx.send(true);
    // Open WebSockets would hold a graceful shutdown open: give them a few seconds.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = api.await;
        let _ = registry.await;
        let _ = reconciler.await;
    })
    .await;
    Ok(())
}
