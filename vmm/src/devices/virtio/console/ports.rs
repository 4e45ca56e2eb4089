//! The device side of the console's queues, independent of sockets so it can be driven by tests.
//!
//! Queues (multiport layout with two ports): 0/1 port 0 rx/tx (unused: port 0 is never added), 2 control rx
//! (device → driver), 3 control tx (driver → device), 4/5 the agent port's rx (host → guest) and tx (guest → host).
//! The handshake: the driver sends DEVICE_READY, the device answers PORT_ADD for the agent port; the driver sends
//! PORT_READY, the device answers PORT_NAME and, if the host end is connected, PORT_OPEN 1. Host connects and
//! disconnects later become PORT_OPEN 1/0, which the guest sees as the port's host end coming and going.
//! Host bytes are delivered only while the guest has the port open (the driver's PORT_OPEN 1): the Linux driver
//! discards data that arrives on a port no guest process holds open.

use std::collections::VecDeque;
use std::io::{Read, Write};

use vm_memory::GuestMemoryMmap;

use super::control::*;
use crate::devices::virtio::{DeviceQueue, Queue, QueueT};

/// Control receive queue (device → driver).
pub const CTRL_RX: usize = 2;
/// Control transmit queue (driver → device).
pub const CTRL_TX: usize = 3;
/// The agent port's receive queue (host → guest).
pub const PORT_RX: usize = 4;
/// The agent port's transmit queue (guest → host).
pub const PORT_TX: usize = 5;
/// Number of queues.
pub const NUM_QUEUES: usize = 6;
/// Ports in the config space (port 0 unused, port 1 the agent).
pub const MAX_PORTS: u32 = 2;
/// Id of the agent port.
pub const AGENT_PORT_ID: u32 = 1;
/// Largest guest → host chain taken in one piece; bytes past it are dropped (the Linux driver sends ≤ 32 KiB).
pub const MAX_TX_CHAIN: usize = 1 << 20;
/// Most control messages kept for the driver (a guest that never posts control buffers cannot grow this).
const MAX_PENDING_CONTROL: usize = 64;

/// The console's queues and port state.
pub struct Ports {
    queues: Vec<Queue>,
    mem: GuestMemoryMmap,
    name: String,
    port_ready: bool,
    host_connected: bool,
    guest_open: bool,
    to_driver: VecDeque<Vec<u8>>,
}

impl Ports {
    /// Takes over the activated queues.
    pub fn new(mem: GuestMemoryMmap, queues: Vec<Queue>, name: &str) -> Self {
        Self {
            queues,
            mem,
            name: name.into(),
            port_ready: false,
            host_connected: false,
            guest_open: false,
            to_driver: VecDeque::new(),
        }
    }

    /// From the transport's queues.
    pub fn from_device_queues(mem: GuestMemoryMmap, queues: Vec<DeviceQueue>, name: &str) -> Self {
        Self::new(mem, queues.into_iter().map(|q| q.queue).collect(), name)
    }

    /// Whether the guest has the agent port open.
    pub fn guest_open(&self) -> bool {
        self.guest_open
    }

    /// Whether the guest set the port up (PORT_READY).
    pub fn port_ready(&self) -> bool {
        self.port_ready
    }

    fn send(&mut self, m: ControlMessage) {
        if self.to_driver.len() < MAX_PENDING_CONTROL {
            self.to_driver.push_back(m.encode());
        }
    }

    /// The host end connected or went away.
    pub fn set_host_connected(&mut self, connected: bool) {
        self.host_connected = connected;
        if self.port_ready {
            self.send(ControlMessage::new(AGENT_PORT_ID, PORT_OPEN, connected.into()));
        }
    }

    /// Handles the driver's control messages and delivers pending ones; returns whether a queue was used.
    pub fn process_control(&mut self) -> bool {
        let mut used = false;
        let mem = self.mem.clone();
        while let Some(chain) = self.queues[CTRL_TX].pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let mut buf = Vec::new();
            if let Ok(r) = chain.reader(&mem) {
                let _ = r.take(256).read_to_end(&mut buf);
            }
            if let Some(m) = ControlMessage::decode(&buf) {
                self.handle(m);
            }
            used |= self.queues[CTRL_TX].add_used(&mem, head, 0).is_ok();
        }
        while let Some(msg) = self.to_driver.front() {
            let Some(chain) = self.queues[CTRL_RX].pop_descriptor_chain(&mem) else { break };
            let head = chain.head_index();
            let mut n = 0;
            if let Ok(mut w) = chain.writer(&mem) {
                let len = msg.len().min(w.available_bytes());
                if w.write_all(&msg[..len]).is_ok() {
                    n = len;
                }
            }
            self.to_driver.pop_front();
            used |= self.queues[CTRL_RX].add_used(&mem, head, n as u32).is_ok();
        }
        used
    }

    fn handle(&mut self, m: ControlMessage) {
        match (m.event, m.id) {
            (DEVICE_READY, _) if m.value == 1 => self.send(ControlMessage::new(AGENT_PORT_ID, PORT_ADD, 0)),
            (PORT_READY, AGENT_PORT_ID) if m.value == 1 => {
                self.port_ready = true;
                let mut name = ControlMessage::new(AGENT_PORT_ID, PORT_NAME, 1);
                name.payload = self.name.as_bytes().to_vec();
                self.send(name);
                if self.host_connected {
                    self.send(ControlMessage::new(AGENT_PORT_ID, PORT_OPEN, 1));
                }
            }
            (PORT_OPEN, AGENT_PORT_ID) => self.guest_open = m.value == 1,
            _ => {}
        }
    }

    /// Copies from the front of `data` into the guest's receive buffers; returns (bytes consumed, queue used).
    /// Nothing is delivered while the guest does not have the port open.
    pub fn fill_rx(&mut self, data: &[u8]) -> (usize, bool) {
        if !self.guest_open {
            return (0, false);
        }
        let mem = self.mem.clone();
        let (mut done, mut used) = (0, false);
        while done < data.len() {
            let Some(chain) = self.queues[PORT_RX].pop_descriptor_chain(&mem) else { break };
            let head = chain.head_index();
            let mut n = 0;
            if let Ok(mut w) = chain.writer(&mem) {
                n = w.available_bytes().min(data.len() - done);
                if w.write_all(&data[done..done + n]).is_err() {
                    n = 0;
                }
            }
            done += n;
            used |= self.queues[PORT_RX].add_used(&mem, head, n as u32).is_ok();
        }
        (done, used)
    }

    /// Takes the next chain the guest sent on the agent port: `Some(bytes)` (possibly empty), or `None` when the
    /// queue is empty. The chain is returned to the guest at once.
    pub fn take_tx(&mut self) -> Option<Vec<u8>> {
        let mem = self.mem.clone();
        let chain = self.queues[PORT_TX].pop_descriptor_chain(&mem)?;
        let head = chain.head_index();
        let mut buf = Vec::new();
        if let Ok(r) = chain.reader(&mem) {
            let _ = r.take(MAX_TX_CHAIN as u64).read_to_end(&mut buf);
        }
        let _ = self.queues[PORT_TX].add_used(&mem, head, 0);
        Some(buf)
    }

    /// Discards what the guest sent on port 0's transmit queue (port 0 is never added, so a driver should not).
    pub fn drain_unused(&mut self) -> bool {
        let mem = self.mem.clone();
        let mut used = false;
        while let Some(chain) = self.queues[1].pop_descriptor_chain(&mem) {
            used |= self.queues[1].add_used(&mem, chain.head_index(), 0).is_ok();
        }
        used
    }
}
