//! Control-plane processes (`boxyard-controlplane serve`): the command line of one ([`Spec`]), its addresses once
//! serving ([`Addresses`], from its address file), and a replica owned by the caller that can be killed and
//! restarted on the same addresses ([`ControlPlane`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Process, Startup};
use crate::{Error, Result};

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The `boxyard-controlplane` binary.
    pub program: PathBuf,
    /// Its database.
    pub database_url: String,
    /// The API address (`127.0.0.1:0`: any free port).
    pub listen: String,
    /// The runner registry's address.
    pub registry_listen: String,
    /// The platform admin key it is bootstrapped with.
    pub bootstrap_key: String,
    /// More flags (S3, timings).
    pub args: Vec<String>,
    /// `RUST_LOG` for it (None: inherited).
    pub log_filter: Option<String>,
}

impl Spec {
    /// The command, writing its addresses to `addr_file` once serving.
    pub fn command(&self, addr_file: &Path) -> Command {
        let mut c = Command::new(&self.program);
        c.args(["serve", "--database-url", &self.database_url])
            .args(["--listen", &self.listen, "--registry-listen", &self.registry_listen])
            .arg("--addr-file")
            .arg(addr_file)
            .args(["--bootstrap-key", &self.bootstrap_key])
            .args(&self.args);
        if let Some(f) = &self.log_filter {
            c.env("RUST_LOG", f);
        }
        c
    }
}

/// Where a serving control plane listens, as URLs (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// The REST and WebSocket API.
    pub api: String,
    /// The runner registry (gRPC).
    pub registry: String,
}

impl Addresses {
    /// Reads the address file a control plane wrote.
    pub fn read(addr_file: &Path) -> Result<Addresses> {
        let bytes = std::fs::read(addr_file).map_err(|e| Error::io(format!("reading {}", addr_file.display()), e))?;
        let bad = || Error::AddrFile { path: addr_file.to_path_buf(), content: String::from_utf8_lossy(&bytes).into() };
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let field = |k: &str| v[k].as_str().map(|a| format!("http://{a}")).ok_or_else(bad);
        Ok(Addresses { api: field("api")?, registry: field("registry")? })
    }
}

/// A control-plane replica owned by the caller (killed when dropped), logging to `<dir>/cp.log`.
#[derive(Debug)]
pub struct ControlPlane {
    /// Where it listens.
    pub addrs: Addresses,
    spec: Spec,
    dir: PathBuf,
    process: Option<Process>,
}

impl ControlPlane {
    /// Starts it with its address and log files in `dir`; returns once it serves.
    pub fn start(spec: Spec, dir: &Path) -> Result<ControlPlane> {
        let mut cp = ControlPlane {
            addrs: Addresses { api: String::new(), registry: String::new() },
            spec,
            dir: dir.to_path_buf(),
            process: None,
        };
        cp.spawn()?;
        Ok(cp)
    }

    fn spawn(&mut self) -> Result<()> {
        let s = Startup {
            what: "the control plane".into(),
            log: self.log_file(),
            ready_file: self.dir.join("addr.json"),
            timeout: Duration::from_secs(60),
            log_lines: 200,
        };
        self.process = Some(Process::start(&mut self.spec.command(&s.ready_file), &s)?);
        self.addrs = Addresses::read(&s.ready_file)?;
        Ok(())
    }

    /// Kills it (SIGKILL) and starts it again on the same addresses.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spec.listen = self.addrs.api.trim_start_matches("http://").into();
        self.spec.registry_listen = self.addrs.registry.trim_start_matches("http://").into();
        self.spawn()
    }

    /// SIGKILL (no graceful shutdown).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Its log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("cp.log")
    }

    /// Everything it has logged (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_file_gives_urls_and_a_bad_one_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("addr.json");
        std::fs::write(&f, r#"{"api": "127.0.0.1:1", "registry": "127.0.0.1:2"}"#).unwrap();
        let a = Addresses::read(&f).unwrap();
        assert_eq!((a.api.as_str(), a.registry.as_str()), ("http://127.0.0.1:1", "http://127.0.0.1:2"));
        std::fs::write(&f, r#"{"api": "127.0.0.1:1"}"#).unwrap();
        assert!(matches!(Addresses::read(&f), Err(Error::AddrFile { .. })));
    }
}
