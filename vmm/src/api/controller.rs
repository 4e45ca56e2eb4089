//! The VMM's main loop once the VM runs: it waits for the VM's end and applies control requests, one at a time, on
//! this one thread (the only place requests touch the VM). It owns the VM's lifecycle as the control socket sees it:
//! running ⇄ paused, and stopping once the power button was pressed (a stopping VM can no longer be paused).

use std::os::fd::AsRawFd;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use vmm_sys_util::eventfd::EventFd;

use super::protocol::{self, ApiRequest, ErrorCode};
use super::server::Job;
use crate::builder::RunningVm;
use crate::metrics::METRICS;
use crate::vstate::ExitReason;
use crate::vstate::run_control::RunState;

/// How long a pause may take before it is given up.
pub const PAUSE_DEADLINE: Duration = Duration::from_secs(2);

/// Applies control requests to one running VM.
pub struct Controller<'a> {
    vm: &'a RunningVm,
    started: Instant,
    stopping: bool,
}

impl<'a> Controller<'a> {
    /// A controller of `vm`, which started at `started` (the process start, for the uptime).
    pub fn new(vm: &'a RunningVm, started: Instant) -> Self {
        Self { vm, started, stopping: false }
    }

    fn state(&self) -> &'static str {
        match (self.stopping, self.vm.run_control().state()) {
            (true, _) => "stopping",
            (false, RunState::Paused) => "paused",
            (false, RunState::Running) => "running",
        }
    }

    fn status(&self) -> Value {
        json!({
            "state": self.state(),
            "vcpus": self.vm.vcpus(),
            "memory_mib": self.vm.memory_mib(),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "pid": std::process::id(),
        })
    }

    /// Applies one request: the answer, and the VM's end when the request ends it.
    pub fn apply(&mut self, req: ApiRequest) -> (Value, Option<ExitReason>) {
        let rc = self.vm.run_control();
        match req {
            ApiRequest::Status => (protocol::ok(self.status()), None),
            ApiRequest::Metrics => {
                let m: Map<String, Value> =
                    METRICS.snapshot().into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect();
                (protocol::ok(json!({ "state": self.state(), "metrics": m })), None)
            }
            ApiRequest::Pause if self.stopping => {
                (protocol::error(ErrorCode::InvalidState, "the VM is stopping; it cannot be paused"), None)
            }
            ApiRequest::Pause => match rc.pause(PAUSE_DEADLINE) {
                Ok(()) => {
                    METRICS.pauses.inc();
                    (protocol::ok(self.status()), None)
                }
                Err(e) => (protocol::error(ErrorCode::Failed, e.to_string()), None),
            },
            ApiRequest::Resume => {
                rc.resume();
                (protocol::ok(self.status()), None)
            }
            ApiRequest::Stop => {
                // A paused guest could not react to the button.
                rc.resume();
                match self.vm.press_power_button() {
                    Ok(()) => {
                        self.stopping = true;
                        (protocol::ok(self.status()), None)
                    }
                    Err(e) => (protocol::error(ErrorCode::Failed, format!("pressing the power button: {e}")), None),
                }
            }
            ApiRequest::Kill => (protocol::ok(json!({ "state": "killed" })), Some(ExitReason::Killed)),
        }
    }

    /// Runs until the VM ends, applying requests from `jobs` whenever `wake` is written.
    pub fn run(mut self, jobs: &Receiver<Job>, wake: &EventFd) -> ExitReason {
        loop {
            if let Some(r) = self.vm.exit_signal().reason() {
                return r;
            }
            while let Ok(job) = jobs.try_recv() {
                let (answer, end) = self.apply(job.request);
                let _ = job.reply.send(answer);
                if let Some(r) = end {
                    // Let the client read its answer before the process ends.
                    let _ = job.written.recv_timeout(Duration::from_secs(1));
                    return r;
                }
            }
            let mut pfds = [
                libc::pollfd { fd: self.vm.exit_signal().event().as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: two valid pollfds.
            unsafe { libc::poll(pfds.as_mut_ptr(), 2, 1000) };
            if pfds[1].revents & libc::POLLIN != 0 {
                let _ = wake.read();
            }
        }
    }
}
