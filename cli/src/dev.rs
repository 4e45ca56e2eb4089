//! `boxyard dev up|down|status`: the whole stack on one machine with no configuration — a private PostgreSQL
//! cluster, the embedded S3 endpoint, the control plane, one runner (QEMU: KVM with hardware virtualization, TCG
//! otherwise), a public `base` snapshot, and a `dev` profile. Idempotent: `up` starts what is not running and keeps
//! what is; data survives `down`. The processes are started and stopped by boxyard-devstack (detached, with pid
//! files in the data directory); this module decides what runs where and remembers it in `state.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use boxyard_devstack::postgres::{Cluster, Settings, StopMode};
use boxyard_devstack::process::{self, Startup, is_root, pid_alive};
use boxyard_devstack::{controlplane, paths, runner, s3};
use serde::{Deserialize, Serialize};

use crate::profile::{Profile, Profiles};

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the stack keeps its data and logs.
    #[arg(long, env = "BOXYARD_DEV_DIR")]
    pub dir: Option<PathBuf>,
    /// Guest kernel and initramfs (scripts/build-guest.sh).
    #[arg(long, env = "BOXYARD_GUEST_DIR", default_value = "build/guest/current")]
    pub guest_dir: PathBuf,
    /// Root image pushed as the `base` snapshot (scripts/build-rootfs.sh).
    #[arg(long, env = "BOXYARD_ROOTFS", default_value = "build/rootfs/busybox.ext4")]
    pub rootfs: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    pg_port: u16,
    s3_port: u16,
    api_port: u16,
    registry_port: u16,
    runner_port: u16,
    admin_key: String,
}

const S3_KEY: &str = "boxyard-dev";
const S3_SECRET: &str = "boxyard-dev-secret";
const BUCKET: &str = "boxyard";
/// How long a part of the stack may take to start (a runner's first start generates its certificate).
const START_TIMEOUT: Duration = Duration::from_secs(120);

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// The data directory: --dir, else /var/lib/boxyard/dev for root (PostgreSQL runs as the `postgres` user there and
/// must reach it, which a 0700 home directory forbids), else $XDG_DATA_HOME/boxyard/dev.
fn dir_of(a: &DevArgs) -> PathBuf {
    if a.dir.is_none() && is_root() {
        return PathBuf::from("/var/lib/boxyard/dev");
    }
    a.dir.clone().unwrap_or_else(|| {
        std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("boxyard/dev")
    })
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// How the process `name` of the stack starts: its log is `<dir>/<name>.log`.
fn startup(dir: &Path, name: &str, what: &str, ready_file: PathBuf) -> Startup {
    Startup {
        what: what.into(),
        log: dir.join(format!("{name}.log")),
        ready_file,
        timeout: START_TIMEOUT,
        log_lines: 15,
    }
}

fn postgres(dir: &Path, st: &State) -> Cluster {
    Cluster::new(dir.join("pg"), st.pg_port)
}

fn s3_endpoint(st: &State) -> s3::Endpoint {
    s3::Endpoint {
        url: format!("http://127.0.0.1:{}", st.s3_port),
        bucket: BUCKET.into(),
        access_key: S3_KEY.into(),
        secret_key: S3_SECRET.into(),
    }
}

pub async fn up(a: &DevArgs) -> anyhow::Result<()> {
    let dir = dir_of(a);
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    if is_root() {
        use std::os::unix::fs::PermissionsExt;
        // Traversable by the postgres user (listing stays private).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    }
    let state_path = dir.join("state.json");
    let st: State = match std::fs::read(&state_path) {
        Ok(b) => {
            serde_json::from_slice(&b).context("state.json is corrupt: `boxyard dev down` and delete the dev dir")?
        }
        Err(_) => State {
            pg_port: process::free_port()?,
            s3_port: process::free_port()?,
            api_port: process::free_port()?,
            registry_port: process::free_port()?,
            runner_port: process::free_port()?,
            admin_key: format!("byk_{}_{}", random_hex(6)?, random_hex(24)?),
        },
    };
    std::fs::write(&state_path, serde_json::to_vec_pretty(&st)?)?;
    let guest = std::fs::canonicalize(&a.guest_dir)
        .with_context(|| format!("no guest image at {}: run scripts/build-guest.sh", a.guest_dir.display()))?;
    let rootfs = std::fs::canonicalize(&a.rootfs)
        .with_context(|| format!("no root image at {}: run scripts/build-rootfs.sh", a.rootfs.display()))?;

    // PostgreSQL.
    let pg = postgres(&dir, &st);
    if !pg.is_initialized() {
        step("PostgreSQL: creating a private cluster");
        pg.init()?;
    }
    if pg.is_running() {
        step("PostgreSQL: running");
    } else {
        step(&format!("PostgreSQL: starting on 127.0.0.1:{}", st.pg_port));
        pg.start(Settings::Durable, Duration::from_secs(60))?;
    }
    let s3 = s3_endpoint(&st);

    // S3.
    if pid_alive(&dir.join("s3.pid")).is_some() {
        step("S3 endpoint: running");
    } else {
        step(&format!("S3 endpoint: starting on {}", s3.url));
        let s = startup(&dir, "s3", "the S3 endpoint", dir.join("s3.addr"));
        let mut cmd = s3::command(&paths::binary("boxyard-s3dev")?, &s3, &dir.join("s3"), &s.ready_file);
        process::start_detached(&mut cmd, &s, &dir.join("s3.pid"))?;
    }

    // Control plane.
    let api = format!("http://127.0.0.1:{}", st.api_port);
    if pid_alive(&dir.join("controlplane.pid")).is_some() {
        step("control plane: running");
    } else {
        step(&format!("control plane: starting (API {api})"));
        let spec = controlplane::Spec {
            program: paths::binary("boxyard-controlplane")?,
            database_url: pg.url(),
            listen: format!("127.0.0.1:{}", st.api_port),
            registry_listen: format!("127.0.0.1:{}", st.registry_port),
            bootstrap_key: st.admin_key.clone(),
            args: s3.args(),
            log_filter: None,
        };
        let s = startup(&dir, "controlplane", "the control plane", dir.join("controlplane.addr"));
        process::start_detached(&mut spec.command(&s.ready_file), &s, &dir.join("controlplane.pid"))?;
    }
    let client = boxyard::Client::new(&api, &st.admin_key)?;

    // Runner.
    let runner_dir = dir.join("runner");
    if pid_alive(&dir.join("runner.pid")).is_some() {
        step("runner: running");
    } else {
        std::fs::create_dir_all(&runner_dir)?;
        let mut args: Vec<String> = vec!["--backend".into(), "qemu".into(), "--guest-dir".into()];
        args.push(guest.display().to_string());
        args.extend(["--rootfs".into(), rootfs.display().to_string()]);
        args.extend(["--controlplane".into(), format!("http://127.0.0.1:{}", st.registry_port)]);
        args.extend(["--name".into(), "dev-runner".into()]);
        args.extend(s3.args());
        if !runner_dir.join("registration.json").exists() {
            let t = client
                .create_join_token(&boxyard::CreateJoinToken { description: "boxyard dev".into(), ttl_seconds: None })
                .await?;
            args.extend(["--join-token".into(), t.secret.clone()]);
        }
        let spec = runner::Spec {
            program: paths::binary("boxyard-runner")?,
            state_dir: runner_dir.clone(),
            listen: format!("127.0.0.1:{}", st.runner_port),
            args,
            log_filter: None,
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let accel = if cpuinfo.contains(" vmx") || cpuinfo.contains(" svm") {
            "KVM"
        } else {
            "TCG (no hardware virtualization here)"
        };
        step(&format!("runner: starting (QEMU, {accel})"));
        let s = startup(&dir, "runner", "the runner", spec.addr_file());
        process::start_detached(&mut spec.command(), &s, &dir.join("runner.pid"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client.list_runners().await?;
        if r.items.iter().any(|x| x.state == "ready") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the runner did not register within 60 s; see {}", dir.join("runner.log").display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The base snapshot.
    let snaps = client.list_snapshots().await?;
    match snaps.iter().find(|s| s.name == "base") {
        Some(s) if s.state == "active" => step("snapshot base: active"),
        existing => {
            let s = match existing {
                Some(s) => s.clone(),
                None => client.create_snapshot("base", &boxyard::SnapshotMetadata::default(), true).await?,
            };
            step(&format!("snapshot base: pushing {}", rootfs.display()));
            let bytes = std::fs::read(&rootfs)?;
            client.upload_snapshot_image(&s.id, bytes).await?;
        }
    }

    let mut profiles = Profiles::load()?;
    profiles.put("dev", Profile { url: api.clone(), key: st.admin_key.clone() });
    profiles.save()?;
    std::fs::write(&state_path, serde_json::to_vec_pretty(&st)?)?;
    eprintln!("boxyard dev: up (API {api}, profile \"dev\", data in {})", dir.display());
    Ok(())
}

/// Stops the process of `<dir>/<name>.pid` (SIGTERM, SIGKILL after 10 s).
fn stop_pid(dir: &Path, name: &str) {
    let pid_file = dir.join(format!("{name}.pid"));
    if pid_alive(&pid_file).is_some() {
        step(&format!("{name}: stopping"));
    }
    process::stop_pid_file(&pid_file, Duration::from_secs(10));
}

pub async fn down(a: &DevArgs) -> anyhow::Result<()> {
    let dir = dir_of(a);
    let Ok(b) = std::fs::read(dir.join("state.json")) else {
        eprintln!("boxyard dev: nothing to stop ({} has no stack)", dir.display());
        return Ok(());
    };
    let st: State = serde_json::from_slice(&b)?;
    let dir = std::fs::canonicalize(&dir)?;
    stop_pid(&dir, "runner");
    step("boxes: stopping their VMs");
    process::signal_mentioning(&dir.join("runner").display().to_string(), libc::SIGKILL);
    stop_pid(&dir, "controlplane");
    stop_pid(&dir, "s3");
    let pg = postgres(&dir, &st);
    if pg.is_initialized() && pg.is_running() {
        step("PostgreSQL: stopping");
        pg.stop(StopMode::Fast)?;
    }
    eprintln!("boxyard dev: down (data kept in {})", dir.display());
    Ok(())
}

pub async fn status(a: &DevArgs) -> anyhow::Result<bool> {
    let dir = dir_of(a);
    let Ok(b) = std::fs::read(dir.join("state.json")) else {
        println!("no local stack in {} (boxyard dev up)", dir.display());
        return Ok(false);
    };
    let st: State = serde_json::from_slice(&b)?;
    let mut all = true;
    let pg_up = postgres(&dir, &st).is_running();
    let mut line = |name: &str, up: bool, detail: String| {
        all &= up;
        println!("{name:<14} {:<8} {detail}", if up { "running" } else { "stopped" });
    };
    line("postgres", pg_up, format!("127.0.0.1:{}", st.pg_port));
    line("s3", pid_alive(&dir.join("s3.pid")).is_some(), format!("http://127.0.0.1:{}", st.s3_port));
    line(
        "controlplane",
        pid_alive(&dir.join("controlplane.pid")).is_some(),
        format!("http://127.0.0.1:{}", st.api_port),
    );
    line("runner", pid_alive(&dir.join("runner.pid")).is_some(), format!("127.0.0.1:{}", st.runner_port));
    Ok(all)
}
