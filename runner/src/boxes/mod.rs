//! The runner's boxes: their lifecycle, their executions, and their recovery after a runner restart.
//!
//! On disk (`<state>/boxes/<box id>/`):
//!
//! ```text
//! box.json       the box's record (spec, desired state): see [`record`]
//! vm/            the VM's runtime files (agent socket, pid file, console log): see crate::vm
//! rw.ext4        the writable disk (backends that boot images)
//! executions/    one directory per execution: see crate::executions
//! ```
//!
//! VMs run in their own sessions and outlive the runner process. [`BoxManager::open`] re-adopts the VMs of boxes that
//! should run, reconnects to their guest agents and resumes every unfinished execution's output pump from its log's
//! end; executions that finished meanwhile are still complete, because the guest keeps unacknowledged output.

pub mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use boxyard_proto::agent as ag;
use boxyard_proto::runner as pb;
use tokio::sync::watch;

use crate::agent::{self, Agent};
use crate::config::RunnerConfig;
use crate::error::{Result, RunnerError};
use crate::executions::{self, ExecMeta, Execution, pump};
use crate::launch;
use crate::store;
use crate::vm::{Vm, VmBackend, VmSpec, VmStatus};
use record::{BoxRecord, Spec, validate_box_id};

/// How often a running box's VM is checked for an unexpected exit.
const MONITOR_INTERVAL: Duration = Duration::from_millis(500);
/// How long a re-adopted VM's agent gets to answer after a runner restart.
const READOPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the guest agent gets to sync its disks when a box stops, before the VM is powered off.
const SHUTDOWN_RPC_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping box's executions get after SIGTERM (at most; half the stop timeout when that is shorter).
const EXEC_TERM_GRACE: Duration = Duration::from_secs(5);
/// How long they get after SIGKILL for their last output to be stored.
const EXEC_KILL_WAIT: Duration = Duration::from_secs(2);

struct Status {
    state: pb::BoxState,
    reason: String,
    started_unix_ms: u64,
    /// Counts boots, so that a monitor of an earlier boot stops.
    generation: u64,
}

/// One box.
pub struct BoxEntry {
    pub id: String,
    dir: PathBuf,
    record: Mutex<BoxRecord>,
    /// Serializes lifecycle operations and holds the VM while it runs.
    vm: tokio::sync::Mutex<Option<Box<dyn Vm>>>,
    status: Mutex<Status>,
    /// The agent of the running VM; None while the box is not running. Pumps follow it.
    session: watch::Sender<Option<Agent>>,
    pumps: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set while DestroyBox runs.
    destroying: std::sync::atomic::AtomicBool,
}

impl BoxEntry {
    fn new(dir: PathBuf, record: BoxRecord, state: pb::BoxState, reason: String) -> Arc<Self> {
        Arc::new(BoxEntry {
            id: record.box_id.clone(),
            dir,
            record: Mutex::new(record),
            vm: tokio::sync::Mutex::new(None),
            status: Mutex::new(Status { state, reason, started_unix_ms: 0, generation: 0 }),
            session: watch::channel(None).0,
            pumps: Mutex::new(Vec::new()),
            destroying: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn spec(&self) -> Spec {
        self.record.lock().unwrap().spec.clone()
    }

    fn state(&self) -> pb::BoxState {
        self.status.lock().unwrap().state
    }

    fn set_state(&self, state: pb::BoxState, reason: impl Into<String>) {
        let mut s = self.status.lock().unwrap();
        s.state = state;
        s.reason = reason.into();
    }

    fn set_desired(&self, running: bool) -> Result<()> {
        let mut r = self.record.lock().unwrap();
        if r.desired_running != running {
            r.desired_running = running;
            store::write_json(&self.dir.join("box.json"), &*r)?;
        }
        Ok(())
    }

    fn executions_dir(&self) -> PathBuf {
        self.dir.join("executions")
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.join("vm")
    }

    fn disk_path(&self) -> PathBuf {
        self.dir.join("rw.ext4")
    }

    fn agent(&self) -> Result<Agent> {
        self.session.borrow().clone().ok_or_else(|| {
            RunnerError::FailedPrecondition(format!(
                "box {:?} is {}: start it with StartBox first",
                self.id,
                boxyard_api::BoxState::from(self.state())
            ))
        })
    }

    fn track_pump(&self, h: tokio::task::JoinHandle<()>) {
        let mut p = self.pumps.lock().unwrap();
        p.retain(|h| !h.is_finished());
        p.push(h);
    }

    fn info(&self, backend: &str) -> pb::BoxInfo {
        let s = self.status.lock().unwrap();
        let r = self.record.lock().unwrap();
        pb::BoxInfo {
            box_id: self.id.clone(),
            spec: Some(r.spec.to_proto()),
            state: s.state as i32,
            reason: s.reason.clone(),
            created_unix_ms: r.created_unix_ms,
            started_unix_ms: s.started_unix_ms,
            backend: backend.to_string(),
            executions: Vec::new(),
        }
    }
}

/// Everything the runner holds.
pub struct BoxManager {
    config: RunnerConfig,
    backend: Arc<dyn VmBackend>,
    boxes: RwLock<HashMap<String, Arc<BoxEntry>>>,
    executions: RwLock<HashMap<String, Arc<Execution>>>,
    exec_lock: tokio::sync::Mutex<()>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| RunnerError::Internal(format!("blocking task failed: {e}")))?
}

fn io_internal(what: &str, path: &Path, e: std::io::Error) -> RunnerError {
    RunnerError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

impl BoxManager {
    /// Opens the state directory: loads every box and execution, re-adopts running VMs, resumes output pumps, and
    /// starts collecting old execution logs.
    pub async fn open(config: RunnerConfig, backend: Arc<dyn VmBackend>) -> Result<Arc<Self>> {
        let boxes_dir = config.boxes_dir();
        std::fs::create_dir_all(&boxes_dir).map_err(|e| io_internal("create", &boxes_dir, e))?;
        let mgr = Arc::new(BoxManager {
            config,
            backend,
            boxes: RwLock::new(HashMap::new()),
            executions: RwLock::new(HashMap::new()),
            exec_lock: tokio::sync::Mutex::new(()),
        });
        let loaded = {
            let m = mgr.clone();
            blocking(move || m.load_all()).await?
        };
        let recoveries = loaded.into_iter().map(|(entry, desired)| {
            let m = mgr.clone();
            async move { m.recover(entry, desired).await }
        });
        futures::future::join_all(recoveries).await;
        mgr.collect_garbage().await;
        let weak = Arc::downgrade(&mgr);
        let interval = mgr.config.gc_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(m) = weak.upgrade() else { return };
                m.collect_garbage().await;
            }
        });
        Ok(mgr)
    }

    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    /// Reads every box and its executions from disk (blocking).
    fn load_all(&self) -> Result<Vec<(Arc<BoxEntry>, bool)>> {
        let dir = self.config.boxes_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| io_internal("read", &dir, e))?.flatten() {
            let box_dir = e.path();
            if e.file_name().to_string_lossy().starts_with(".trash-") {
                // A destroy interrupted by a crash: finish it.
                let _ = std::fs::remove_dir_all(&box_dir);
                continue;
            }
            let record = match store::read_json::<BoxRecord>(&box_dir.join("box.json")) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    // A creation that crashed before its record was written.
                    tracing::warn!(dir = %box_dir.display(), "removing a box directory without box.json");
                    let _ = std::fs::remove_dir_all(&box_dir);
                    continue;
                }
                Err(e) => {
                    tracing::error!("skipping a box: {e}");
                    continue;
                }
            };
            let desired = record.desired_running;
            let entry = BoxEntry::new(box_dir, record, pb::BoxState::Stopped, String::new());
            let exec_dir = entry.executions_dir();
            if let Ok(rd) = std::fs::read_dir(&exec_dir) {
                for x in rd.flatten() {
                    match Execution::load(x.path(), self.config.log) {
                        Ok(Some(exec)) => {
                            self.executions.write().unwrap().insert(exec.id().to_string(), exec);
                        }
                        Ok(None) => {
                            let _ = std::fs::remove_dir_all(x.path());
                        }
                        Err(e) => tracing::error!("skipping an execution: {e}"),
                    }
                }
            }
            self.boxes.write().unwrap().insert(entry.id.clone(), entry.clone());
            out.push((entry, desired));
        }
        Ok(out)
    }

    fn box_executions(&self, box_id: &str) -> Vec<Arc<Execution>> {
        let mut v: Vec<_> =
            self.executions.read().unwrap().values().filter(|e| e.meta.box_id == box_id).cloned().collect();
        v.sort_by(|a, b| (a.meta.created_unix_ms, a.id()).cmp(&(b.meta.created_unix_ms, b.id())));
        v
    }

    /// Starts pumps for the box's unfinished executions (they finish as lost if the box has no session).
    fn resume_pumps(&self, entry: &Arc<BoxEntry>) {
        for exec in self.box_executions(&entry.id) {
            if !exec.is_finished() {
                entry.track_pump(pump::spawn(exec, entry.session.subscribe()));
            }
        }
    }

    async fn recover(self: &Arc<Self>, entry: Arc<BoxEntry>, desired: bool) {
        let started = std::time::Instant::now();
        tracing::info!(box_id = %entry.id, "recovering");
        let mut vm_slot = entry.vm.lock().await;
        // Adopt even boxes that should not run: a StopBox interrupted by a crash may have left the VM running.
        match self.backend.adopt(self.vm_spec(&entry)).await {
            Ok(Some(mut vm)) if !desired => {
                tracing::info!(box_id = %entry.id, "finishing a stop that a runner restart interrupted");
                if let Err(e) = vm.stop(DEFAULT_STOP_TIMEOUT).await {
                    tracing::error!(box_id = %entry.id, "cannot stop its VM: {e}");
                }
                entry.set_state(pb::BoxState::Stopped, "");
            }
            Ok(Some(mut vm)) => {
                let socket = vm.spec().agent_socket();
                match agent::connect(&socket, READOPT_TIMEOUT).await {
                    Ok(mut a) => {
                        // Let the guest forget executions whose results were stored before the restart. Only a
                        // clean-up: bounded, so a slow guest cannot hold the runner's start-up (and with it every
                        // other box) hostage.
                        let cleanup = async {
                            if let Ok(list) = a.list_execs(ag::ListExecsRequest {}).await {
                                for info in list.into_inner().execs {
                                    let done =
                                        self.executions.read().unwrap().get(&info.exec_id).map(|e| e.is_finished());
                                    if done == Some(true) {
                                        let _ = a.release(ag::ReleaseRequest { exec_id: info.exec_id }).await;
                                    }
                                }
                            }
                        };
                        if tokio::time::timeout(READOPT_TIMEOUT, cleanup).await.is_err() {
                            tracing::warn!(box_id = %entry.id, "the guest did not list its executions in time; skipped");
                        }
                        tracing::info!(box_id = %entry.id, elapsed_ms = started.elapsed().as_millis() as u64, "re-adopted a running box");
                        *vm_slot = Some(vm);
                        self.mark_running(&entry, a);
                    }
                    Err(e) => {
                        tracing::error!(box_id = %entry.id, "re-adopted VM does not answer: {e}; killing it");
                        let _ = vm.kill().await;
                        entry.set_state(
                            pb::BoxState::Failed,
                            format!("after a runner restart its VM's agent did not answer ({e}); the VM was killed"),
                        );
                    }
                }
            }
            Ok(None) if desired => {
                entry.set_state(pb::BoxState::Stopped, "the VM ended while the runner was not running")
            }
            Ok(None) => entry.set_state(pb::BoxState::Stopped, ""),
            Err(e) => entry.set_state(pb::BoxState::Failed, format!("cannot re-adopt the VM: {e}")),
        }
        drop(vm_slot);
        self.resume_pumps(&entry);
        if entry.state() == pb::BoxState::Running {
            self.spawn_monitor(&entry);
        }
    }

    fn mark_running(&self, entry: &Arc<BoxEntry>, agent: Agent) {
        {
            let mut s = entry.status.lock().unwrap();
            s.state = pb::BoxState::Running;
            s.reason.clear();
            s.started_unix_ms = store::now_ms();
            s.generation += 1;
        }
        entry.session.send_replace(Some(agent));
    }

    /// Watches a running box's VM; an unexpected exit stops the box (its unfinished executions end as lost).
    fn spawn_monitor(&self, entry: &Arc<BoxEntry>) {
        let entry = entry.clone();
        let generation = entry.status.lock().unwrap().generation;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(MONITOR_INTERVAL).await;
                {
                    let s = entry.status.lock().unwrap();
                    if s.generation != generation || s.state != pb::BoxState::Running {
                        return;
                    }
                }
                let Ok(mut slot) = entry.vm.try_lock() else { continue };
                let Some(vm) = slot.as_mut() else { return };
                if let VmStatus::Stopped { detail } = vm.status().await {
                    tracing::warn!(box_id = %entry.id, "the VM exited unexpectedly: {detail}");
                    *slot = None;
                    entry.set_state(pb::BoxState::Stopped, format!("the VM exited unexpectedly ({detail})"));
                    entry.session.send_replace(None);
                    return;
                }
            }
        });
    }

    fn vm_spec(&self, entry: &BoxEntry) -> VmSpec {
        let spec = entry.spec();
        let root = match (&spec.snapshot, &self.config.snapshots) {
            (Some(s), Some(store)) => store.path_of(&s.digest),
            _ => spec
                .root_image
                .map(PathBuf::from)
                .or_else(|| self.config.default_root_image.clone())
                .unwrap_or_default(),
        };
        VmSpec {
            id: entry.id.clone(),
            kernel: self.config.guest.kernel.clone(),
            initramfs: self.config.guest.initramfs.clone(),
            root_image: root,
            writable_disk: self.backend.boots_images().then(|| entry.disk_path()),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            run_dir: entry.run_dir(),
            extra_kernel_args: self.config.kernel_args.clone(),
        }
    }

    fn get_entry(&self, id: &str) -> Result<Arc<BoxEntry>> {
        let entry = self.boxes.read().unwrap().get(id).cloned().ok_or_else(|| RunnerError::not_found("box", id))?;
        if entry.destroying.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(RunnerError::Unavailable(format!("box {id:?} is being destroyed; retry to see it gone")));
        }
        Ok(entry)
    }

    pub fn get_box(&self, id: &str) -> Result<pb::BoxInfo> {
        Ok(self.get_entry(id)?.info(&self.backend_name()))
    }

    /// Every box with its executions.
    pub fn inventory(&self) -> pb::Inventory {
        let backend = self.backend_name();
        let mut entries: Vec<_> = self.boxes.read().unwrap().values().cloned().collect();
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        let boxes = entries
            .iter()
            .map(|e| {
                let mut info = e.info(&backend);
                info.executions = self.box_executions(&e.id).iter().map(|x| x.to_proto()).collect();
                info
            })
            .collect();
        pb::Inventory { boxes, runner_version: env!("CARGO_PKG_VERSION").into(), backend }
    }

    pub async fn create_box(&self, id: &str, spec: Option<pb::BoxSpec>) -> Result<pb::BoxInfo> {
        validate_box_id(id)?;
        let spec = Spec::from_proto(spec)?;
        if let Some(s) = &spec.snapshot {
            self.snapshot_image(s).await?;
        }
        if self.backend.boots_images() && spec.snapshot.is_none() {
            let root = spec.root_image.clone().map(PathBuf::from).or_else(|| self.config.default_root_image.clone());
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
        let entry = {
            let mut boxes = self.boxes.write().unwrap();
            if let Some(existing) = boxes.get(id) {
                if existing.destroying.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(RunnerError::Unavailable(format!(
                        "box {id:?} is being destroyed; retry the creation in a moment"
                    )));
                }
                if existing.spec() == spec {
                    return Ok(existing.info(&self.backend_name()));
                }
                return Err(RunnerError::AlreadyExists(format!(
                    "box {id:?} already exists with another spec; destroy it first or pick another id"
                )));
            }
            let record =
                BoxRecord { box_id: id.to_string(), spec, created_unix_ms: store::now_ms(), desired_running: true };
            let entry = BoxEntry::new(self.config.boxes_dir().join(id), record, pb::BoxState::Starting, String::new());
            boxes.insert(id.to_string(), entry.clone());
            entry
        };
        let e = entry.clone();
        let created = blocking(move || {
            std::fs::create_dir_all(e.run_dir()).map_err(|err| io_internal("create", &e.run_dir(), err))?;
            std::fs::create_dir_all(e.executions_dir())
                .map_err(|err| io_internal("create", &e.executions_dir(), err))?;
            let r = e.record.lock().unwrap().clone();
            store::write_json(&e.dir.join("box.json"), &r)
        })
        .await;
        if let Err(err) = created {
            self.boxes.write().unwrap().remove(id);
            let _ = std::fs::remove_dir_all(&entry.dir);
            return Err(err);
        }
        self.start_entry(&entry).await
    }

    pub async fn start_box(&self, id: &str) -> Result<pb::BoxInfo> {
        let entry = self.get_entry(id)?;
        if let Some(s) = &entry.spec().snapshot {
            self.snapshot_image(s).await?;
        }
        self.start_entry(&entry).await
    }

    /// Makes a snapshot's image local (fetched and verified once per digest) and returns its path.
    async fn snapshot_image(&self, s: &record::SnapshotSpec) -> Result<PathBuf> {
        let store = self.config.snapshots.as_ref().ok_or_else(|| {
            RunnerError::FailedPrecondition(format!(
                "snapshot {:?}: this runner has no snapshot store; start it with --s3-bucket (and --s3-endpoint, \
                 credentials) to boot boxes from snapshots",
                s.name
            ))
        })?;
        store.ensure(s, || self.snapshots_in_use()).await
    }

    /// Digests of the snapshots that boxes on this runner boot from (their images are never evicted).
    pub fn snapshots_in_use(&self) -> std::collections::HashSet<String> {
        self.boxes.read().unwrap().values().filter_map(|e| e.spec().snapshot.map(|s| s.digest)).collect()
    }

    /// Whether this runner can boot boxes from snapshots (it has a snapshot store).
    pub fn snapshots_enabled(&self) -> bool {
        self.config.snapshots.is_some()
    }

    /// Snapshot images downloaded since start.
    pub fn snapshot_downloads(&self) -> u64 {
        self.config.snapshots.as_ref().map_or(0, |s| s.downloads.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Digests of the snapshot images in the local cache.
    pub fn cached_snapshots(&self) -> Vec<String> {
        self.config.snapshots.as_ref().map(|s| s.cached()).unwrap_or_default()
    }

    async fn start_entry(&self, entry: &Arc<BoxEntry>) -> Result<pb::BoxInfo> {
        let mut slot = entry.vm.lock().await;
        if slot.is_some() && entry.state() == pb::BoxState::Running {
            return Ok(entry.info(&self.backend_name()));
        }
        entry.set_state(pb::BoxState::Starting, "");
        {
            let e = entry.clone();
            blocking(move || e.set_desired(true)).await?;
        }
        if self.backend.boots_images() && !entry.disk_path().exists() {
            let size = entry.spec().disk_mib << 20;
            if let Err(e) = crate::disk::create_ext4(&entry.disk_path(), size).await {
                entry.set_state(pb::BoxState::Failed, e.to_string());
                return Err(RunnerError::Internal(format!("box {:?}: {e}", entry.id)));
            }
        }
        let spec = self.vm_spec(entry);
        match launch::launch(self.backend.as_ref(), spec, self.config.boot_timeout).await {
            Ok(l) => {
                tracing::info!(box_id = %entry.id, boot_ms = l.boot_time.as_millis() as u64, "box running");
                *slot = Some(l.vm);
                self.mark_running(entry, l.agent);
                drop(slot);
                self.spawn_monitor(entry);
                Ok(entry.info(&self.backend_name()))
            }
            Err(e) => {
                entry.set_state(pb::BoxState::Failed, format!("boot failed: {e}"));
                Err(RunnerError::Internal(format!("box {:?} failed to boot: {e}", entry.id)))
            }
        }
    }

    pub async fn stop_box(&self, id: &str, timeout: Duration) -> Result<pb::BoxInfo> {
        let entry = self.get_entry(id)?;
        let mut slot = entry.vm.lock().await;
        {
            let e = entry.clone();
            blocking(move || e.set_desired(false)).await?;
        }
        // The VM stays in its slot until it has stopped: if this call is abandoned half way (the client went away),
        // the box still holds its VM and a later stop finds it.
        if let Some(vm) = slot.as_mut() {
            entry.set_state(pb::BoxState::Stopping, "");
            let agent = entry.session.borrow().clone();
            if let Some(mut a) = agent {
                self.end_executions(&entry.id, &a, timeout).await;
                // The agent syncs the box's disks and powers off; the VM stop below then only waits.
                let _ = tokio::time::timeout(SHUTDOWN_RPC_TIMEOUT, a.shutdown(ag::ShutdownRequest {})).await;
            }
            let r = vm.stop(timeout).await;
            *slot = None;
            entry.session.send_replace(None);
            if let Err(e) = r {
                entry.set_state(pb::BoxState::Failed, format!("stopping the VM failed: {e}"));
                return Err(RunnerError::Internal(format!("box {id:?}: stopping the VM failed: {e}")));
            }
        }
        entry.set_state(pb::BoxState::Stopped, "");
        Ok(entry.info(&self.backend_name()))
    }

    /// Ends the box's running executions before its VM goes away, so that each keeps all its output and gets a
    /// real result (the signal that ended it) instead of being cut off: SIGTERM to each process group, up to half
    /// the stop timeout (at most [`EXEC_TERM_GRACE`]) for them to exit and their pumps to store the rest, then
    /// SIGKILL and up to [`EXEC_KILL_WAIT`] more. Whatever is still unfinished after that ends as lost when the
    /// session goes away, with the output stored so far.
    async fn end_executions(&self, box_id: &str, agent: &Agent, timeout: Duration) {
        let running: Vec<Arc<Execution>> = self
            .executions
            .read()
            .unwrap()
            .values()
            .filter(|e| e.meta.box_id == box_id && !e.is_finished())
            .cloned()
            .collect();
        let grace = (timeout / 2).min(EXEC_TERM_GRACE);
        // Each round is bounded as a whole, whatever the number of executions or an agent that does not answer.
        for (signal, wait) in [("TERM", grace), ("KILL", EXEC_KILL_WAIT)] {
            let left: Vec<&Arc<Execution>> = running.iter().filter(|e| !e.is_finished()).collect();
            if left.is_empty() {
                return;
            }
            tracing::info!(box_id, signal, executions = left.len(), "stopping the box: ending its executions");
            let round = async {
                futures::future::join_all(left.iter().map(|e| {
                    let mut agent = agent.clone();
                    let req = ag::SignalRequest { exec_id: e.id().into(), signal: signal.into() };
                    async move {
                        match agent.signal(req).await {
                            Ok(_) => {}
                            // It exited meanwhile.
                            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                            // The wait runs out and the stop goes on.
                            Err(s) => tracing::warn!(box_id, execution = e.id(), "cannot signal: {}", s.message()),
                        }
                    }
                }))
                .await;
                futures::future::join_all(left.iter().map(|e| {
                    let mut r = e.subscribe_result();
                    async move {
                        let _ = r.wait_for(|r| r.is_some()).await;
                    }
                }))
                .await;
            };
            if tokio::time::timeout(wait, round).await.is_err() {
                tracing::warn!(box_id, signal, "executions still running after {wait:?}");
            }
        }
    }

    /// Kills the box's VM and deletes all it owns. Returns whether it existed.
    ///
    /// The box stays in the map (refusing other calls as being destroyed) until its directory is moved out of the
    /// way, so that a CreateBox with the same id can never write into a directory that is being deleted.
    pub async fn destroy_box(&self, id: &str) -> Result<bool> {
        let Some(entry) = self.boxes.read().unwrap().get(id).cloned() else { return Ok(false) };
        if entry.destroying.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(RunnerError::Unavailable(format!("box {id:?} is being destroyed; retry to see it gone")));
        }
        let mut slot = entry.vm.lock().await;
        for p in entry.pumps.lock().unwrap().drain(..) {
            p.abort();
        }
        if let Some(mut vm) = slot.take()
            && let Err(e) = vm.kill().await
        {
            entry.destroying.store(false, std::sync::atomic::Ordering::SeqCst);
            return Err(RunnerError::Internal(format!("box {id:?}: cannot kill its VM: {e}")));
        }
        entry.set_state(pb::BoxState::Stopped, "destroyed");
        entry.session.send_replace(None);
        // Move the directory aside (atomic), then forget the box, then delete.
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let trash = self
            .config
            .boxes_dir()
            .join(format!(".trash-{id}-{}", nonce.iter().map(|b| format!("{b:02x}")).collect::<String>()));
        let moved = match std::fs::rename(&entry.dir, &trash) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                entry.destroying.store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(io_internal("move aside", &entry.dir, e));
            }
        };
        {
            let mut execs = self.executions.write().unwrap();
            execs.retain(|_, e| {
                let keep = e.meta.box_id != id;
                if !keep {
                    e.mark_gone();
                }
                keep
            });
        }
        self.boxes.write().unwrap().remove(id);
        drop(slot);
        if moved {
            blocking(move || match std::fs::remove_dir_all(&trash) {
                Ok(()) => Ok(()),
                Err(e) => Err(io_internal("delete", &trash, e)),
            })
            .await?;
        }
        Ok(true)
    }

    pub fn execution(&self, id: &str) -> Result<Arc<Execution>> {
        self.executions.read().unwrap().get(id).cloned().ok_or_else(|| RunnerError::not_found("execution", id))
    }

    /// The agent of the box an execution runs in.
    pub fn agent_of(&self, exec: &Execution) -> Result<Agent> {
        self.get_entry(&exec.meta.box_id)?.agent()
    }

    pub async fn exec(&self, req: pb::ExecRequest) -> Result<pb::Execution> {
        let entry = self.get_entry(&req.box_id)?;
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(RunnerError::InvalidArgument("argv is empty: give the command to run".into()));
        }
        let id = if req.execution_id.is_empty() { executions::new_id() } else { req.execution_id.clone() };
        executions::validate_id(&id)?;
        // One creation at a time: two Execs with the same id must not both create its directory.
        let _creating = self.exec_lock.lock().await;
        if let Some(existing) = self.executions.read().unwrap().get(&id) {
            return Self::same_exec(existing, &req);
        }
        if let Some(t) = &req.tty
            && (t.rows == 0 || t.cols == 0 || t.rows > u16::MAX as u32 || t.cols > u16::MAX as u32)
        {
            return Err(RunnerError::InvalidArgument(format!(
                "terminal size {}x{} is invalid: rows and cols must be between 1 and 65535",
                t.rows, t.cols
            )));
        }
        let mut agent = entry.agent()?;
        let mut env: BTreeMap<String, String> = entry.spec().env;
        env.extend(req.env);
        let meta = ExecMeta {
            execution_id: id.clone(),
            box_id: entry.id.clone(),
            argv: req.argv,
            env,
            working_dir: req.working_dir,
            user: req.user,
            tty: req.tty.map(|t| (t.rows, t.cols)),
            stdin: req.stdin,
            timeout_ms: req.timeout_ms,
            kill_grace_ms: req.kill_grace_ms,
            created_unix_ms: store::now_ms(),
        };
        let dir = entry.executions_dir().join(&id);
        let log_config = self.config.log;
        let exec = {
            let (dir, meta) = (dir.clone(), meta.clone());
            blocking(move || Execution::create(dir, meta, log_config)).await?
        };
        self.executions.write().unwrap().insert(id.clone(), exec.clone());
        drop(_creating);
        if let Err(s) = agent.exec(meta.agent_request()).await {
            self.executions.write().unwrap().remove(&id);
            exec.mark_gone();
            let _ = std::fs::remove_dir_all(&dir);
            return Err(RunnerError::from_agent(&format!("starting {:?} in box {:?}", meta.argv[0], entry.id), s));
        }
        entry.track_pump(pump::spawn(exec.clone(), entry.session.subscribe()));
        Ok(exec.to_proto())
    }

    fn same_exec(existing: &Execution, req: &pb::ExecRequest) -> Result<pb::Execution> {
        if existing.meta.argv == req.argv && existing.meta.box_id == req.box_id {
            Ok(existing.to_proto())
        } else {
            Err(RunnerError::AlreadyExists(format!(
                "execution {:?} already exists with another command or in another box; pick another execution_id",
                existing.id()
            )))
        }
    }

    pub async fn kill_execution(&self, id: &str) -> Result<pb::Execution> {
        let exec = self.execution(id)?;
        if exec.is_finished() {
            return Ok(exec.to_proto());
        }
        {
            let e = exec.clone();
            blocking(move || e.mark_killed()).await?;
        }
        let mut agent = self.agent_of(&exec)?;
        match agent.signal(ag::SignalRequest { exec_id: id.into(), signal: "KILL".into() }).await {
            Ok(_) => {}
            // It finished in the meantime: nothing to kill.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
            Err(s) => return Err(RunnerError::from_agent("killing the execution", s)),
        }
        Ok(exec.to_proto())
    }

    pub async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let exec = self.execution(id)?;
        if boxyard_proto::signal::parse(signal).is_err() {
            return Err(RunnerError::InvalidArgument(format!(
                "unknown signal {signal:?}: give a name such as TERM, SIGINT or a number"
            )));
        }
        if exec.is_finished() {
            return Err(RunnerError::FailedPrecondition(format!("execution {id:?} has finished")));
        }
        let mut agent = self.agent_of(&exec)?;
        agent
            .signal(ag::SignalRequest { exec_id: id.into(), signal: signal.into() })
            .await
            .map_err(|s| RunnerError::from_agent("sending the signal", s))?;
        Ok(())
    }

    pub async fn resize(&self, id: &str, tty: Option<pb::Tty>) -> Result<()> {
        let exec = self.execution(id)?;
        let Some(t) = tty.filter(|t| t.rows > 0 && t.cols > 0) else {
            return Err(RunnerError::InvalidArgument("resize needs a terminal size with rows and cols above 0".into()));
        };
        if exec.meta.tty.is_none() {
            return Err(RunnerError::FailedPrecondition(format!(
                "execution {id:?} has no terminal: only executions started with tty can be resized"
            )));
        }
        if exec.is_finished() {
            return Err(RunnerError::FailedPrecondition(format!("execution {id:?} has finished")));
        }
        let mut agent = self.agent_of(&exec)?;
        agent
            .resize(ag::ResizeRequest { exec_id: id.into(), tty: Some(ag::Tty { rows: t.rows, cols: t.cols }) })
            .await
            .map_err(|s| RunnerError::from_agent("resizing the terminal", s))?;
        Ok(())
    }

    /// The agent of a running box (for file transfers).
    pub fn box_agent(&self, box_id: &str) -> Result<Agent> {
        self.get_entry(box_id)?.agent()
    }

    /// Deletes finished executions older than the configured time to live.
    pub async fn collect_garbage(&self) {
        let ttl = self.config.finished_ttl.as_millis() as u64;
        let now = store::now_ms();
        let expired: Vec<Arc<Execution>> = {
            let mut map = self.executions.write().unwrap();
            let ids: Vec<String> = map
                .values()
                .filter(|e| e.result().is_some_and(|r| r.finished_unix_ms.saturating_add(ttl) <= now))
                .map(|e| e.id().to_string())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        if expired.is_empty() {
            return;
        }
        tracing::info!(count = expired.len(), "collecting finished executions past their retention time");
        for e in &expired {
            e.mark_gone();
        }
        let _ = blocking(move || {
            for e in expired {
                if let Err(err) = std::fs::remove_dir_all(&e.dir) {
                    tracing::warn!(execution = e.id(), "cannot delete {}: {err}", e.dir.display());
                }
            }
            Ok(())
        })
        .await;
    }
}
