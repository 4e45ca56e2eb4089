//! A private PostgreSQL cluster: `initdb` and `pg_ctl` on a data directory, as the `postgres` user when we are root
//! (initdb refuses root), listening on loopback only. [`Cluster`] is a cluster that outlives the caller
//! (`boxyard dev`); [`TempCluster`] is a throwaway one in a temporary directory, removed on drop (tests, benches).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::error::IoContext;
use crate::process::{free_port, is_root};
use crate::{Error, Result};

/// A PostgreSQL program: from PATH, else from the newest of Debian's versioned directories.
pub fn program(tool: &str) -> Result<PathBuf> {
    let in_path =
        std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|p| p.exists()));
    in_path
        .or_else(|| {
            let mut dirs: Vec<PathBuf> =
                std::fs::read_dir("/usr/lib/postgresql").ok()?.flatten().map(|e| e.path()).collect();
            dirs.sort();
            dirs.into_iter().rev().map(|d| d.join("bin").join(tool)).find(|p| p.exists())
        })
        .ok_or_else(|| Error::MissingPostgres { tool: tool.into() })
}

/// Runs a PostgreSQL program, as the `postgres` user when we are root.
fn run(tool: &str, args: &[&str]) -> Result<Output> {
    let path = program(tool)?;
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    c.args(args).stdin(Stdio::null()).output().ctx(|| format!("running {}", path.display()))
}

/// Runs a PostgreSQL program that must succeed.
fn run_ok(tool: &str, what: &str, args: &[&str], log: Option<&Path>) -> Result<()> {
    let out = run(tool, args)?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if let Some(log) = log {
        output.push('\n');
        output.push_str(&crate::process::log_tail(log, 30));
    }
    Err(Error::Tool { tool: format!("{tool} {what}"), status: out.status, output })
}

/// Server settings beyond the port and the socket directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settings {
    /// PostgreSQL's defaults: data survives a crash (`boxyard dev`).
    Durable,
    /// fsync off and 300 connections: fast, for data that dies with the test.
    Throwaway,
}

/// How `pg_ctl stop` ends the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, shut down cleanly.
    Fast,
    /// Abort: no shutdown checkpoint (crash recovery on the next start).
    Immediate,
}

/// A cluster in a data directory, served on 127.0.0.1:`port` (its Unix socket in the data directory).
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

impl Cluster {
    /// A cluster in `data_dir` on `port` (nothing is created or started).
    pub fn new(data_dir: impl Into<PathBuf>, port: u16) -> Cluster {
        Cluster { data_dir: data_dir.into(), port }
    }

    fn dir(&self) -> Result<&str> {
        self.data_dir.to_str().ok_or_else(|| {
            Error::io(
                format!("using {} as a data directory", self.data_dir.display()),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"),
            )
        })
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("server.log")
    }

    /// Whether `initdb` has run in the data directory.
    pub fn is_initialized(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
    }

    /// Creates the data directory and runs `initdb` (superuser `postgres`, trust authentication). As root, the
    /// directory is given to the `postgres` user, which must be able to traverse every directory above it.
    pub fn init(&self) -> Result<()> {
        std::fs::create_dir_all(&self.data_dir).ctx(|| format!("creating {}", self.data_dir.display()))?;
        if is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.data_dir)
                .status()
                .ctx(|| "running chown".into())?;
            if !st.success() {
                return Err(Error::Tool {
                    tool: format!("chown postgres {}", self.data_dir.display()),
                    status: st,
                    output: String::new(),
                });
            }
            let parents = self.data_dir.ancestors().skip(1).take_while(|d| d.parent().is_some());
            for d in parents {
                let mode = std::fs::metadata(d).ctx(|| format!("reading {}", d.display()))?.permissions().mode();
                if mode & 0o001 == 0 {
                    return Err(Error::Unreachable {
                        data_dir: self.data_dir.clone(),
                        blocking: d.to_path_buf(),
                        mode: mode & 0o777,
                    });
                }
            }
        }
        run_ok("initdb", "", &["-D", self.dir()?, "-U", "postgres", "-A", "trust", "--no-sync"], None)
    }

    /// Starts the server and waits (at most `timeout`) until it accepts connections.
    pub fn start(&self, settings: Settings, timeout: Duration) -> Result<()> {
        let mut opts = format!("-c listen_addresses=127.0.0.1 -p {} -k {}", self.port, self.data_dir.display());
        if settings == Settings::Throwaway {
            opts.push_str(" -c fsync=off -c max_connections=300");
        }
        let log = self.log_file();
        let log_s = log.to_string_lossy().to_string();
        let secs = timeout.as_secs().max(1).to_string();
        run_ok(
            "pg_ctl",
            "start",
            &["-D", self.dir()?, "-w", "-t", &secs, "-l", &log_s, "-o", &opts, "start"],
            Some(&log),
        )
    }

    /// Stops the server and waits until it is down.
    pub fn stop(&self, mode: StopMode) -> Result<()> {
        let m = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        run_ok("pg_ctl", "stop", &["-D", self.dir()?, "-w", "-m", m, "stop"], None)
    }

    /// Whether a server runs on the data directory.
    pub fn is_running(&self) -> bool {
        self.dir().is_ok_and(|d| run("pg_ctl", &["-D", d, "status"]).is_ok_and(|o| o.status.success()))
    }

    /// The connection URL of the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

/// A throwaway cluster on a free port in a temporary directory: fast settings, stopped (immediate) and removed on
/// drop.
#[derive(Debug)]
pub struct TempCluster {
    cluster: Cluster,
    _tmp: tempfile::TempDir,
}

impl TempCluster {
    /// Creates and starts a cluster.
    pub fn start() -> Result<TempCluster> {
        let tmp = tempfile::Builder::new().prefix("boxyard-pg-").tempdir().ctx(|| "creating a temporary dir".into())?;
        if is_root() {
            // The postgres user must traverse it to reach the data directory.
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711))
                .ctx(|| format!("chmod {}", tmp.path().display()))?;
        }
        let cluster = Cluster::new(tmp.path().join("data"), free_port()?);
        cluster.init()?;
        let pg = TempCluster { cluster, _tmp: tmp };
        pg.cluster.start(Settings::Throwaway, Duration::from_secs(30))?;
        Ok(pg)
    }

    /// The cluster (to stop and start it again on the same port).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl std::ops::Deref for TempCluster {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.cluster
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop(StopMode::Immediate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_cluster_starts_stops_restarts_and_goes_away() {
        let pg = TempCluster::start().unwrap();
        let data = pg.data_dir.clone();
        assert!(pg.is_initialized() && pg.is_running());
        assert_eq!(pg.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port));
        std::net::TcpStream::connect(("127.0.0.1", pg.port)).expect("the server listens on its port");
        pg.stop(StopMode::Fast).unwrap();
        assert!(!pg.is_running());
        assert!(pg.stop(StopMode::Fast).is_err(), "stopping a stopped server is an error");
        pg.start(Settings::Throwaway, Duration::from_secs(30)).unwrap();
        assert!(pg.is_running());
        drop(pg);
        assert!(!data.exists());
    }
}
