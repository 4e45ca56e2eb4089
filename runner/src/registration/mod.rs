//! Membership in a control plane's fleet: registration with a join token, the heartbeat loop (endpoint, capacity,
//! full inventory), and the API token that the control plane must present to this runner.
//!
//! State files (in the state directory, mode 0600):
//! - `api-token`: the token the runner API requires (`authorization: Bearer <token>`), created on first start with
//!   a control plane and sent to it in Register and every Heartbeat;
//! - `registration.json`: the runner id and credential returned by Register (so a restart keeps its identity).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::paths::StatePaths;
use boxyard_proto::registry as pb;
use boxyard_proto::registry::registry_client::RegistryClient;
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::boxes::BoxManager;

/// Why joining the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// A state file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `registration.json` cannot be read.
    #[error("{path} is corrupt ({reason}); delete it to register again with a join token")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `registration.json` was written by a newer runner (left as it is).
    #[error("{0}")]
    Newer(String),
    /// The `--controlplane` URL is malformed.
    #[error("the control plane URL {0:?} is not valid: {1}")]
    BadUrl(String, String),
    /// Not registered, and no join token to register with.
    #[error(
        "this runner is not registered yet and has no join token: pass --join-token (a platform admin creates one with POST /v1/admin/join-tokens)"
    )]
    NoJoinToken,
    /// Permanent: the control plane said no (bad or revoked join token, name taken, invalid request).
    #[error("registration refused by the control plane: {0}")]
    Refused(String),
    /// Transient: the control plane could not be reached or failed; retried.
    #[error("{0}")]
    Unreachable(String),
}

/// What the runner tells the control plane about itself.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The registry's URL: http://host:port, or https://host:port with `controlplane_ca`.
    pub controlplane: String,
    /// CA (PEM) of the registry's certificate (https only).
    pub controlplane_ca: Option<String>,
    /// The join token for the first registration.
    pub join_token: Option<String>,
    /// The runner's name in the fleet.
    pub name: String,
    /// How the control plane reaches the runner API.
    pub endpoint: pb::Endpoint,
    /// Labels for placement.
    pub labels: BTreeMap<String, String>,
    /// What the runner offers to boxes.
    pub capacity: pb::Capacity,
    /// The VM backend's name.
    pub backend: String,
    /// The runner has a snapshot store.
    pub snapshots_enabled: bool,
}

/// The runner's registration (`registration.json`, mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Registration {
    controlplane: String,
    runner_id: String,
    credential: String,
}

impl crate::store::Record for Registration {
    const KIND: &'static str = "registration (registration.json)";
    const VERSION: u32 = 1;
}

fn write_secret(path: &Path, data: &str) -> Result<(), RegistrationError> {
    let err = |source| RegistrationError::Io { path: path.into(), source };
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(err)?;
    f.write_all(data.as_bytes()).and_then(|_| f.sync_all()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The runner API's token (created once).
pub fn api_token(state_dir: &Path) -> Result<String, RegistrationError> {
    let path = StatePaths::new(state_dir).api_token();
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 32 => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(RegistrationError::Io { path, source }),
    }
    let mut buf = [0u8; 24];
    getrandom::fill(&mut buf).expect("the OS random source works");
    let token: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    write_secret(&path, &token)?;
    Ok(token)
}

async fn connect(m: &Membership) -> Result<RegistryClient<Channel>, RegistrationError> {
    let bad = |e: &dyn std::fmt::Display| RegistrationError::BadUrl(m.controlplane.clone(), e.to_string());
    let mut ep = Endpoint::from_shared(m.controlplane.clone())
        .map_err(|e| bad(&e))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    if m.controlplane.starts_with("https://") {
        let tls = match &m.controlplane_ca {
            Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)),
            // The host's trust store (e.g. a registry behind a publicly trusted certificate).
            None => ClientTlsConfig::new().with_native_roots(),
        };
        ep = ep.tls_config(tls).map_err(|e| bad(&e))?;
    }
    Ok(RegistryClient::new(ep.connect_lazy()))
}

async fn register(
    client: &mut RegistryClient<Channel>,
    m: &Membership,
    state_dir: &Path,
) -> Result<Registration, RegistrationError> {
    let token = m.join_token.clone().ok_or(RegistrationError::NoJoinToken)?;
    let r = client
        .register(pb::RegisterRequest {
            join_token: token,
            name: m.name.clone(),
            endpoint: Some(m.endpoint.clone()),
            labels: m.labels.clone().into_iter().collect(),
            capacity: Some(m.capacity),
            version: env!("CARGO_PKG_VERSION").into(),
            backend: m.backend.clone(),
            snapshots_enabled: m.snapshots_enabled,
        })
        .await
        .map_err(|s| {
            let msg = format!("{} ({:?})", s.message(), s.code());
            match s.code() {
                tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
                | tonic::Code::AlreadyExists => RegistrationError::Refused(msg),
                _ => RegistrationError::Unreachable(format!("registration failed: {msg}")),
            }
        })?
        .into_inner();
    let reg = Registration { controlplane: m.controlplane.clone(), runner_id: r.runner_id, credential: r.credential };
    let data = crate::store::encode_record(&reg).map_err(|e| RegistrationError::Io {
        path: StatePaths::new(state_dir).registration(),
        source: std::io::Error::other(e),
    })?;
    write_secret(&StatePaths::new(state_dir).registration(), &String::from_utf8_lossy(&data))?;
    tracing::info!(runner_id = %reg.runner_id, "registered with the control plane at {}", m.controlplane);
    Ok(reg)
}

fn load(state_dir: &Path, m: &Membership) -> Result<Option<Registration>, RegistrationError> {
    let path = StatePaths::new(state_dir).registration();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RegistrationError::Io { path, source }),
    };
    let reg: Registration = crate::store::decode_record(&path, &data).map_err(|e| match e {
        crate::error::RunnerError::NewerRecord { .. } => RegistrationError::Newer(e.to_string()),
        e => RegistrationError::Corrupt { path: path.clone(), reason: e.to_string() },
    })?;
    // Registered with another control plane: register again here.
    Ok((reg.controlplane == m.controlplane).then_some(reg))
}

/// Registers if needed, then sends heartbeats until `shutdown` completes. Transient failures are retried forever
/// (a control plane or network outage must not take the runner down); a refusal without a join token to recover
/// with is returned as an error.
pub async fn run(
    m: Membership,
    state_dir: PathBuf,
    mgr: Arc<BoxManager>,
    counters: Arc<crate::metrics::Counters>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RegistrationError> {
    tokio::pin!(shutdown);
    let mut client = connect(&m).await?;
    let mut reg = load(&state_dir, &m)?;
    let mut interval = Duration::from_secs(5);
    let mut failures = 0u32;
    loop {
        let step = async {
            let r = match &reg {
                Some(r) => r.clone(),
                None => register(&mut client, &m, &state_dir).await?,
            };
            let mut req = tonic::Request::new(pb::HeartbeatRequest {
                runner_id: r.runner_id.clone(),
                endpoint: Some(m.endpoint.clone()),
                capacity: Some(m.capacity),
                labels: m.labels.clone().into_iter().collect(),
                version: env!("CARGO_PKG_VERSION").into(),
                backend: m.backend.clone(),
                inventory: Some(mgr.inventory()),
                cached_snapshots: mgr.cached_snapshots(),
                snapshots_enabled: mgr.snapshots_enabled(),
            });
            let auth = format!("Bearer {}", r.credential).parse().expect("the credential is ASCII");
            req.metadata_mut().insert("authorization", auth);
            match client.heartbeat(req).await {
                Ok(resp) => Ok((r, Some(resp.into_inner()))),
                Err(s) if s.code() == tonic::Code::Unauthenticated && m.join_token.is_some() => {
                    tracing::warn!(
                        "the control plane no longer knows this runner ({}); registering again",
                        s.message()
                    );
                    Ok((register(&mut client, &m, &state_dir).await?, None))
                }
                Err(s) if s.code() == tonic::Code::Unauthenticated => {
                    Err(RegistrationError::Refused(format!("{}; pass --join-token to register again", s.message())))
                }
                Err(s) => {
                    Err(RegistrationError::Unreachable(format!("heartbeat failed: {} ({:?})", s.message(), s.code())))
                }
            }
        };
        match step.await {
            Ok((r, resp)) => {
                counters.heartbeats_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if failures > 0 {
                    tracing::info!("heartbeats to the control plane resumed");
                }
                failures = 0;
                reg = Some(r);
                if let Some(resp) = resp {
                    if resp.heartbeat_interval_ms > 0 {
                        interval = Duration::from_millis(resp.heartbeat_interval_ms);
                    }
                    for id in resp.destroy_boxes {
                        let mgr = mgr.clone();
                        tokio::spawn(async move {
                            tracing::info!(box_id = %id, "destroying a box the control plane does not know");
                            if let Err(e) = mgr.destroy_box(&id).await {
                                tracing::warn!(box_id = %id, "destroy failed: {e}");
                            }
                        });
                    }
                }
            }
            Err(e @ RegistrationError::Unreachable(_)) => {
                counters.heartbeats_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                failures += 1;
                // Log the first failures, then every tenth.
                if failures <= 3 || failures.is_multiple_of(10) {
                    tracing::warn!("control plane at {}: {e} (attempt {failures}); retrying", m.controlplane);
                }
            }
            // Refusals, a missing join token, unwritable state: retrying cannot help.
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
}
