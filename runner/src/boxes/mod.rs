//! The runner's boxes: a thin facade ([`BoxManager`]) over one actor per box.
//!
//! On disk (`<state>/boxes/<box id>/`, see [`crate::paths`]):
//!
//! ```text
//! box.json       the box's record (spec, desired state): see [`record`]
//! vm/            the VM's runtime files (agent socket, pid file, console log): see crate::vm
//! rw.ext4        the writable disk (backends that boot images)
//! executions/    one directory per execution: see crate::executions
//! ```
//!
//! - [`actor`]: the task that owns one box (VM, status, record, output pumps) and its command channel.
//! - [`lifecycle`]: the actor's create, start, stop and destroy. [`monitor`]: noticing a VM that exited by itself.
//! - [`recovery`]: reading the state directory back and re-adopting VMs after a runner restart.
//! - [`exec`]: starting, killing, signalling and resizing executions (the facade's side).
//! - [`record`]: the box record and its validation.
//!
//! VMs run in their own sessions and outlive the runner process. [`BoxManager::open`] re-adopts the VMs of boxes that
//! should run and resumes every unfinished execution's output pump from its log's end.

pub mod actor;
pub mod exec;
pub mod lifecycle;
pub mod monitor;
pub mod record;
pub mod recovery;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use boxyard_proto::runner as pb;

use crate::agent::Agent;
use crate::cleanup::Cleanup;
use crate::config::RunnerConfig;
use crate::error::{Result, RunnerError};
use crate::executions::registry::Registry;
use crate::executions::{Execution, gc};
use crate::store;
use crate::vm::VmBackend;
use actor::{BoxHandle, Command, Shared};
use record::{BoxRecord, Spec, validate_box_id};

/// How long a stopping box's VM gets to power off when the caller gives no timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

type Boxes = Arc<RwLock<HashMap<String, Arc<BoxHandle>>>>;

/// Everything the runner holds: its boxes (each an actor) and their executions.
pub struct BoxManager {
    shared: Arc<Shared>,
    boxes: Boxes,
    /// Box directories whose record this runner cannot read (a newer runner wrote it): their ids are refused.
    unreadable: HashMap<String, String>,
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RunnerError::Internal(format!("blocking task failed: {e}")))?
}

/// Runs a multi-step operation in its own task: a caller that goes away does not cut it short.
async fn detached<T: Send + 'static>(f: impl std::future::Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(f).await.map_err(|e| RunnerError::Internal(format!("the operation's task failed: {e}")))?
}

impl BoxManager {
    /// Opens the state directory: loads every box and execution, re-adopts running VMs, resumes output pumps, and
    /// starts collecting old execution logs.
    pub async fn open(config: RunnerConfig, backend: Arc<dyn VmBackend>) -> Result<Arc<Self>> {
        let boxes_dir = config.paths().boxes();
        std::fs::create_dir_all(&boxes_dir).map_err(|e| lifecycle::io_internal("create", &boxes_dir, e))?;
        let shared = Arc::new(Shared { config, backend, registry: Arc::new(Registry::new()) });
        let loaded = {
            let s = shared.clone();
            blocking(move || recovery::load_all(&s)).await?
        };
        let mgr = Arc::new(BoxManager { shared: shared.clone(), boxes: Arc::default(), unreadable: loaded.unreadable });
        let handles: Vec<Arc<BoxHandle>> = loaded
            .records
            .into_iter()
            .map(|r| actor::spawn(shared.clone(), r, pb::BoxState::Stopped, String::new()))
            .collect();
        mgr.boxes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(handles.iter().map(|h| (h.id.clone(), h.clone())));
        futures::future::join_all(handles.iter().map(|h| h.request(|reply| Command::Recover { reply }))).await;
        let (ttl, interval) = (shared.config.finished_ttl, shared.config.gc_interval);
        gc::collect(&shared.registry, ttl).await;
        gc::spawn(Arc::downgrade(&shared.registry), ttl, interval);
        Ok(mgr)
    }

    /// The VM backend's name ("qemu-kvm", "local", ...).
    pub fn backend_name(&self) -> String {
        self.shared.backend.name()
    }

    /// The box with this id (UNAVAILABLE while it is being destroyed).
    fn handle(&self, id: &str) -> Result<Arc<BoxHandle>> {
        let h = self
            .boxes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| RunnerError::not_found("box", id))?;
        if h.is_destroying() {
            return Err(RunnerError::Unavailable(format!("box {id:?} is being destroyed; retry to see it gone")));
        }
        Ok(h)
    }

    /// One box as the API shows it.
    pub fn get_box(&self, id: &str) -> Result<pb::BoxInfo> {
        Ok(self.handle(id)?.info(&self.backend_name()))
    }

    /// Every box with its executions.
    pub fn inventory(&self) -> pb::Inventory {
        let backend = self.backend_name();
        // Taken before the boxes are read: a box that changes or appears meanwhile has a newer version.
        let taken_version = crate::version::now();
        let mut handles: Vec<_> = self.boxes.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        handles.sort_by(|a, b| a.id.cmp(&b.id));
        let boxes = handles
            .iter()
            .map(|h| {
                let mut info = h.info(&backend);
                info.executions = self.shared.registry.of_box(&h.id).iter().map(|x| x.to_proto()).collect();
                info
            })
            .collect();
        pb::Inventory { boxes, runner_version: env!("CARGO_PKG_VERSION").into(), backend, taken_version }
    }

    /// Creates a box and boots it; the same id with the same spec returns the existing box.
    pub async fn create_box(&self, id: &str, spec: Option<pb::BoxSpec>) -> Result<pb::BoxInfo> {
        validate_box_id(id)?;
        if let Some(why) = self.unreadable.get(id) {
            return Err(RunnerError::FailedPrecondition(format!(
                "box {id:?} exists on this runner with a record it cannot read, left as it is: {why}"
            )));
        }
        let spec = Spec::from_proto(spec)?;
        if let Some(s) = &spec.snapshot {
            self.snapshot_image(s).await?;
        }
        if self.shared.backend.boots_images() && spec.snapshot.is_none() {
            let root =
                spec.root_image.clone().map(PathBuf::from).or_else(|| self.shared.config.default_root_image.clone());
            match root {
                None => {
                    return Err(RunnerError::InvalidArgument(
                        "the spec names no root_image and the runner has no default (start it with --rootfs)".into(),
                    ));
                }
                Some(p) if !p.is_file() => {
                    return Err(RunnerError::InvalidArgument(format!(
                        "root image {} does not exist on the runner",
                        p.display()
                    )));
                }
                Some(_) => {}
            }
        }
        let handle = {
            let mut boxes = self.boxes.write().unwrap_or_else(PoisonError::into_inner);
            if let Some(existing) = boxes.get(id) {
                if existing.is_destroying() {
                    return Err(RunnerError::Unavailable(format!(
                        "box {id:?} is being destroyed; retry the creation in a moment"
                    )));
                }
                if existing.spec == spec {
                    return Ok(existing.info(&self.backend_name()));
                }
                return Err(RunnerError::AlreadyExists(format!(
                    "box {id:?} already exists with another spec; destroy it first or pick another id"
                )));
            }
            let record =
                BoxRecord { box_id: id.to_string(), spec, created_unix_ms: store::now_ms(), desired_running: true };
            let handle = actor::spawn(self.shared.clone(), record, pb::BoxState::Starting, String::new());
            boxes.insert(id.to_string(), handle.clone());
            handle
        };
        // Until the record is written, a failure forgets the box and deletes what was made of its directory. The
        // rest runs in its own task, so a caller that goes away cannot leave it half done.
        let (boxes, key) = (self.boxes.clone(), id.to_string());
        let dir = self.shared.config.paths().box_dir(id).dir().to_path_buf();
        detached(async move {
            let mut undo = Cleanup::new();
            undo.push("forget the box", move || {
                boxes.write().unwrap_or_else(PoisonError::into_inner).remove(&key);
            });
            // A few empty directories at most: small enough to delete on the spot.
            undo.push("delete the box directory", move || {
                let _ = std::fs::remove_dir_all(&dir);
            });
            handle.request(|reply| Command::Create { reply }).await?;
            undo.disarm();
            handle.request(|reply| Command::Start { reply }).await
        })
        .await
    }

    /// Boots a stopped or failed box; a running box is returned as it is.
    pub async fn start_box(&self, id: &str) -> Result<pb::BoxInfo> {
        let handle = self.handle(id)?;
        if let Some(s) = &handle.spec.snapshot {
            self.snapshot_image(s).await?;
        }
        handle.request(|reply| Command::Start { reply }).await
    }

    /// Stops a box: its executions first, then its VM.
    pub async fn stop_box(&self, id: &str, timeout: Duration) -> Result<pb::BoxInfo> {
        self.handle(id)?.request(|reply| Command::Stop { timeout, reply }).await
    }

    /// Kills the box's VM and deletes all it owns. Returns whether it existed.
    ///
    /// The box stays in the map (refusing other calls as being destroyed) until its directory is moved out of the
    /// way, so that a CreateBox with the same id can never write into a directory that is being deleted.
    pub async fn destroy_box(&self, id: &str) -> Result<bool> {
        let Some(handle) = self.boxes.read().unwrap_or_else(PoisonError::into_inner).get(id).cloned() else {
            return Ok(false);
        };
        if !handle.begin_destroy() {
            return Err(RunnerError::Unavailable(format!("box {id:?} is being destroyed; retry to see it gone")));
        }
        let (registry, boxes, key) = (self.shared.registry.clone(), self.boxes.clone(), id.to_string());
        detached(async move {
            let mut undo = Cleanup::new();
            let h = handle.clone();
            undo.push("clear the box's destroying mark", move || h.end_destroy());
            let trash = handle.request(|reply| Command::Destroy { reply }).await?;
            registry.remove_box(&key);
            boxes.write().unwrap_or_else(PoisonError::into_inner).remove(&key);
            undo.disarm();
            if let Some(trash) = trash {
                blocking(move || {
                    std::fs::remove_dir_all(&trash).map_err(|e| lifecycle::io_internal("delete", &trash, e))
                })
                .await?;
            }
            Ok(true)
        })
        .await
    }

    /// The execution with this id.
    pub fn execution(&self, id: &str) -> Result<Arc<Execution>> {
        self.shared.registry.find(id)
    }

    /// The agent of the box an execution runs in.
    pub fn agent_of(&self, exec: &Execution) -> Result<Agent> {
        self.handle(&exec.meta.box_id)?.agent()
    }

    /// The agent of a running box (for file transfers).
    pub fn box_agent(&self, box_id: &str) -> Result<Agent> {
        self.handle(box_id)?.agent()
    }

    /// How long one call to a guest agent may take.
    pub fn agent_timeout(&self) -> Duration {
        self.shared.config.agent_timeout
    }

    /// Deletes finished executions older than the configured time to live.
    pub async fn collect_garbage(&self) {
        gc::collect(&self.shared.registry, self.shared.config.finished_ttl).await;
    }

    /// Makes a snapshot's image local (fetched and verified once per digest) and returns its path.
    async fn snapshot_image(&self, s: &record::SnapshotSpec) -> Result<PathBuf> {
        let store = self.shared.config.snapshots.as_ref().ok_or_else(|| {
            RunnerError::FailedPrecondition(format!(
                "snapshot {:?}: this runner has no snapshot store; start it with --s3-bucket (and --s3-endpoint, \
                 credentials) to boot boxes from snapshots",
                s.name
            ))
        })?;
        store.ensure(s, || self.snapshots_in_use()).await
    }

    /// Digests of the snapshots that boxes on this runner boot from (their images are never evicted).
    pub fn snapshots_in_use(&self) -> HashSet<String> {
        self.boxes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|h| h.spec.snapshot.as_ref().map(|s| s.digest.clone()))
            .collect()
    }

    /// Whether this runner can boot boxes from snapshots (it has a snapshot store).
    pub fn snapshots_enabled(&self) -> bool {
        self.shared.config.snapshots.is_some()
    }

    /// Snapshot images downloaded since start.
    pub fn snapshot_downloads(&self) -> u64 {
        self.shared.config.snapshots.as_ref().map_or(0, |s| s.downloads.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Digests of the snapshot images in the local cache.
    pub fn cached_snapshots(&self) -> Vec<String> {
        self.shared.config.snapshots.as_ref().map(|s| s.cached()).unwrap_or_default()
    }

    /// Storage operations (execution logs, records) that failed since the runner started.
    pub fn storage_errors(&self) -> u64 {
        self.shared.config.storage.errors()
    }
}
