//! `boxyard dev up|down|status`: the whole stack on one machine with no configuration — a private PostgreSQL
//! cluster, the embedded S3 endpoint, the control plane, one runner (QEMU: KVM with hardware virtualization, TCG
//! otherwise), a public `base` snapshot, and a `dev` profile. Idempotent: `up` starts what is not running and keeps
//! what is; data survives `down`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name(name);
    if !p.exists() {
        bail!("{} is missing: build the workspace (cargo build --workspace)", p.display());
    }
    Ok(p)
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn pg_bin(tool: &str) -> PathBuf {
    let in_path =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|p| p.exists()));
    in_path.unwrap_or_else(|| {
        let mut dirs: Vec<PathBuf> =
            std::fs::read_dir("/usr/lib/postgresql").into_iter().flatten().flatten().map(|e| e.path()).collect();
        dirs.sort();
        dirs.into_iter().rev().map(|d| d.join("bin").join(tool)).find(|p| p.exists()).unwrap_or_else(|| tool.into())
    })
}

fn pg(tool: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let t = pg_bin(tool);
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&t);
        c
    } else {
        Command::new(&t)
    };
    c.args(args).stdin(Stdio::null()).output().with_context(|| format!("cannot run {tool}: install PostgreSQL"))
}

fn pid_alive(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    (unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
}

/// Starts a detached process (own session, output to `log`) and records its pid.
fn spawn(dir: &Path, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.log")))?;
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    std::fs::write(dir.join(format!("{name}.pid")), child.id().to_string())?;
    Ok(())
}

fn wait_file(path: &Path, what: &str, log: &Path, pidfile: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !path.exists() {
        if pid_alive(pidfile).is_none() {
            let mut s = String::new();
            let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut s));
            let tail: Vec<&str> = s.lines().rev().take(15).collect();
            bail!(
                "{what} exited during start-up; {}:\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!("{what} did not start within 120 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
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
    let mut st: State = match std::fs::read(&state_path) {
        Ok(b) => {
            serde_json::from_slice(&b).context("state.json is corrupt: `boxyard dev down` and delete the dev dir")?
        }
        Err(_) => State {
            pg_port: free_port(),
            s3_port: free_port(),
            api_port: free_port(),
            registry_port: free_port(),
            runner_port: free_port(),
            admin_key: format!("byk_{}_{}", random_hex(6)?, random_hex(24)?),
        },
    };
    std::fs::write(&state_path, serde_json::to_vec_pretty(&st)?)?;
    let guest = std::fs::canonicalize(&a.guest_dir)
        .with_context(|| format!("no guest image at {}: run scripts/build-guest.sh", a.guest_dir.display()))?;
    let rootfs = std::fs::canonicalize(&a.rootfs)
        .with_context(|| format!("no root image at {}: run scripts/build-rootfs.sh", a.rootfs.display()))?;

    // PostgreSQL.
    let pgdata = dir.join("pg");
    if !pgdata.join("PG_VERSION").exists() {
        step("PostgreSQL: creating a private cluster");
        std::fs::create_dir_all(&pgdata)?;
        if is_root() {
            Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pgdata).status()?;
            // The postgres user must traverse every directory above its data directory.
            for d in dir.ancestors().take_while(|d| d.parent().is_some()) {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(d)?.permissions().mode();
                if mode & 0o001 == 0 {
                    bail!(
                        "the postgres user cannot reach {} ({} is mode {:o}): pick another --dir",
                        pgdata.display(),
                        d.display(),
                        mode & 0o777
                    );
                }
            }
        }
        let out = pg("initdb", &["-D", pgdata.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync"])?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let running = pg("pg_ctl", &["-D", pgdata.to_str().unwrap(), "status"])?.status.success();
    if running {
        step("PostgreSQL: running");
    } else {
        step(&format!("PostgreSQL: starting on 127.0.0.1:{}", st.pg_port));
        let opts = format!("-c listen_addresses=127.0.0.1 -p {} -k {}", st.pg_port, pgdata.display());
        let log = pgdata.join("server.log");
        let out =
            pg("pg_ctl", &["-D", pgdata.to_str().unwrap(), "-w", "-l", log.to_str().unwrap(), "-o", &opts, "start"])?;
        if !out.status.success() {
            bail!("pg_ctl start failed: {}; see {}", String::from_utf8_lossy(&out.stderr), log.display());
        }
    }
    let db_url = format!("postgres://postgres@127.0.0.1:{}/postgres", st.pg_port);
    let s3 = format!("http://127.0.0.1:{}", st.s3_port);
    let s3_args = [
        "--s3-bucket",
        BUCKET,
        "--s3-endpoint",
        &s3,
        "--s3-access-key",
        S3_KEY,
        "--s3-secret-key",
        S3_SECRET,
        "--s3-path-style",
    ];

    // S3.
    if pid_alive(&dir.join("s3.pid")).is_some() {
        step("S3 endpoint: running");
    } else {
        step(&format!("S3 endpoint: starting on {s3}"));
        let _ = std::fs::remove_file(dir.join("s3.addr"));
        spawn(
            &dir,
            "s3",
            Command::new(bin("boxyard-s3dev")?)
                .arg("--root")
                .arg(dir.join("s3"))
                .args(["--listen", &format!("127.0.0.1:{}", st.s3_port), "--bucket", BUCKET])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg("--addr-file")
                .arg(dir.join("s3.addr")),
        )?;
        wait_file(&dir.join("s3.addr"), "the S3 endpoint", &dir.join("s3.log"), &dir.join("s3.pid"))?;
    }

    // Control plane.
    let api = format!("http://127.0.0.1:{}", st.api_port);
    if pid_alive(&dir.join("controlplane.pid")).is_some() {
        step("control plane: running");
    } else {
        step(&format!("control plane: starting (API {api})"));
        let _ = std::fs::remove_file(dir.join("controlplane.addr"));
        spawn(
            &dir,
            "controlplane",
            Command::new(bin("boxyard-controlplane")?)
                .args(["serve", "--database-url", &db_url])
                .args(["--listen", &format!("127.0.0.1:{}", st.api_port)])
                .args(["--registry-listen", &format!("127.0.0.1:{}", st.registry_port)])
                .arg("--addr-file")
                .arg(dir.join("controlplane.addr"))
                .args(["--bootstrap-key", &st.admin_key])
                .args(s3_args),
        )?;
        wait_file(
            &dir.join("controlplane.addr"),
            "the control plane",
            &dir.join("controlplane.log"),
            &dir.join("controlplane.pid"),
        )?;
    }
    let client = boxyard::Client::new(&api, &st.admin_key)?;

    // Runner.
    let runner_dir = dir.join("runner");
    if pid_alive(&dir.join("runner.pid")).is_some() {
        step("runner: running");
    } else {
        std::fs::create_dir_all(&runner_dir)?;
        let mut cmd = Command::new(bin("boxyard-runner")?);
        cmd.arg("serve")
            .arg("--state-dir")
            .arg(&runner_dir)
            .args(["--listen", &format!("127.0.0.1:{}", st.runner_port), "--tls-dev", "--backend", "qemu"])
            .arg("--guest-dir")
            .arg(&guest)
            .arg("--rootfs")
            .arg(&rootfs)
            .args(["--controlplane", &format!("http://127.0.0.1:{}", st.registry_port), "--name", "dev-runner"])
            .args(s3_args);
        if !runner_dir.join("registration.json").exists() {
            let t = client
                .create_join_token(&boxyard::CreateJoinToken { description: "boxyard dev".into(), ttl_seconds: None })
                .await?;
            cmd.args(["--join-token", &t.secret]);
        }
        let accel = if std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().contains(" vmx")
            || std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().contains(" svm")
        {
            "KVM"
        } else {
            "TCG (no hardware virtualization here)"
        };
        step(&format!("runner: starting (QEMU, {accel})"));
        let _ = std::fs::remove_file(runner_dir.join("runner.addr"));
        spawn(&dir, "runner", &mut cmd)?;
        wait_file(&runner_dir.join("runner.addr"), "the runner", &dir.join("runner.log"), &dir.join("runner.pid"))?;
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
    st.admin_key = st.admin_key.clone();
    std::fs::write(&state_path, serde_json::to_vec_pretty(&st)?)?;
    eprintln!("boxyard dev: up (API {api}, profile \"dev\", data in {})", dir.display());
    Ok(())
}

fn stop_pid(dir: &Path, name: &str) {
    let pidfile = dir.join(format!("{name}.pid"));
    if let Some(pid) = pid_alive(&pidfile) {
        step(&format!("{name}: stopping"));
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Every process whose command line mentions `needle` (the VMs of the dev runner).
fn kill_mentioning(needle: &str) {
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
            && pid != std::process::id() as i32
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

pub async fn down(a: &DevArgs) -> anyhow::Result<()> {
    let dir = dir_of(a);
    if !dir.join("state.json").exists() {
        eprintln!("boxyard dev: nothing to stop ({} has no stack)", dir.display());
        return Ok(());
    }
    let dir = std::fs::canonicalize(&dir)?;
    stop_pid(&dir, "runner");
    step("boxes: stopping their VMs");
    kill_mentioning(&dir.join("runner").display().to_string());
    stop_pid(&dir, "controlplane");
    stop_pid(&dir, "s3");
    let pgdata = dir.join("pg");
    if pgdata.join("PG_VERSION").exists() && pg("pg_ctl", &["-D", pgdata.to_str().unwrap(), "status"])?.status.success()
    {
        step("PostgreSQL: stopping");
        pg("pg_ctl", &["-D", pgdata.to_str().unwrap(), "-m", "fast", "-w", "stop"])?;
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
    let pg_up =
        pg("pg_ctl", &["-D", dir.join("pg").to_str().unwrap(), "status"]).map(|o| o.status.success()).unwrap_or(false);
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
