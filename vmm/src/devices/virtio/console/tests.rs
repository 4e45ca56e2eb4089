//! virtio-console driven through hand-built chains: the multiport handshake, both data directions, malformed
//! chains, and the worker thread with a real unix socket client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::AGENT_PORT_NAME;
use super::control::*;
use super::event_handler::ConsoleHandler;
use super::ports::*;
use crate::devices::virtio::Interrupt;
use crate::devices::virtio::event_loop::Worker;
use crate::devices::virtio::test_utils::TestQueue;

const BUF: u64 = 0x40000;

struct Guest {
    q: Vec<TestQueue>,
    next_buf: u64,
}

impl Guest {
    fn new() -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let q = (0..NUM_QUEUES).map(|i| TestQueue::at(mem.clone(), i as u64 * 0x4000, 16)).collect();
        Self { q, next_buf: BUF }
    }

    fn mem(&self) -> GuestMemoryMmap {
        self.q[0].mem.clone()
    }

    fn ports(&self) -> Ports {
        Ports::new(self.mem(), self.q.iter().map(|t| t.queue()).collect(), AGENT_PORT_NAME)
    }

    fn buf(&mut self, len: u32) -> u64 {
        let a = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(0x100);
        a
    }

    /// Posts a writable buffer of `len` bytes on queue `qi` as descriptor `desc`.
    fn post_writable(&mut self, qi: usize, desc: u16, len: u32) -> u64 {
        let a = self.buf(len);
        self.q[qi].add_chain(desc, &[(a, len, true)]);
        a
    }

    /// Sends `data` on queue `qi` as descriptor `desc`.
    fn send(&mut self, qi: usize, desc: u16, data: &[u8]) {
        let a = self.buf(data.len() as u32);
        self.q[qi].write(a, data);
        self.q[qi].add_chain(desc, &[(a, data.len() as u32, false)]);
    }

    /// Control messages the device put in control rx buffers `bufs` (in used order).
    fn control_received(&self, bufs: &[u64]) -> Vec<ControlMessage> {
        let q = &self.q[CTRL_RX];
        (0..q.used_idx())
            .map(|i| {
                let (head, len) = q.used(i);
                ControlMessage::decode(&q.read(bufs[head as usize], len as usize)).unwrap()
            })
            .collect()
    }
}

#[test]
fn handshake_adds_names_and_opens_the_agent_port() {
    let mut g = Guest::new();
    let mut p = g.ports();
    let bufs: Vec<u64> = (0..6).map(|i| g.post_writable(CTRL_RX, i, 64)).collect();
    g.send(CTRL_TX, 0, &ControlMessage::new(0xffff_ffff, DEVICE_READY, 1).encode());
    assert!(p.process_control());
    assert_eq!(g.control_received(&bufs), vec![ControlMessage::new(AGENT_PORT_ID, PORT_ADD, 0)]);

    g.send(CTRL_TX, 1, &ControlMessage::new(AGENT_PORT_ID, PORT_READY, 1).encode());
    assert!(p.process_control());
    let got = g.control_received(&bufs);
    assert_eq!(got.len(), 2, "no PORT_OPEN while the host is away: {got:?}");
    assert_eq!(got[1].event, PORT_NAME);
    assert_eq!(got[1].payload, b"boxyard.agent");
    assert!(p.port_ready());

    p.set_host_connected(true);
    p.process_control();
    p.set_host_connected(false);
    p.process_control();
    let got = g.control_received(&bufs);
    assert_eq!(got[2..], [ControlMessage::new(1, PORT_OPEN, 1), ControlMessage::new(1, PORT_OPEN, 0)]);

    g.send(CTRL_TX, 2, &ControlMessage::new(AGENT_PORT_ID, PORT_OPEN, 1).encode());
    p.process_control();
    assert!(p.guest_open());
}

#[test]
fn host_connected_before_port_ready_opens_it_with_the_name() {
    let mut g = Guest::new();
    let mut p = g.ports();
    p.set_host_connected(true);
    let bufs: Vec<u64> = (0..4).map(|i| g.post_writable(CTRL_RX, i, 64)).collect();
    g.send(CTRL_TX, 0, &ControlMessage::new(AGENT_PORT_ID, PORT_READY, 1).encode());
    p.process_control();
    let events: Vec<u16> = g.control_received(&bufs).iter().map(|m| m.event).collect();
    assert_eq!(events, vec![PORT_NAME, PORT_OPEN]);
}

#[test]
fn host_bytes_fill_guest_buffers_and_stop_when_none_are_left() {
    let mut g = Guest::new();
    let mut p = g.ports();
    let early = g.post_writable(PORT_RX, 3, 8);
    assert_eq!(p.fill_rx(b"early"), (0, false), "nothing while the guest has the port closed");
    g.send(CTRL_TX, 0, &ControlMessage::new(AGENT_PORT_ID, PORT_OPEN, 1).encode());
    p.process_control();
    let a = g.post_writable(PORT_RX, 0, 8);
    let b = g.post_writable(PORT_RX, 1, 8);
    let (n, used) = p.fill_rx(b"0123456789abcdefXYZ0123");
    assert_eq!((n, used), (23, true));
    assert_eq!(g.q[PORT_RX].read(early, 8), b"01234567");
    assert_eq!(g.q[PORT_RX].read(a, 8), b"89abcdef");
    assert_eq!(g.q[PORT_RX].read(b, 7), b"XYZ0123");
    assert_eq!(g.q[PORT_RX].used(2), (1, 7));
    assert_eq!(p.fill_rx(b"XYZ"), (0, false));
}

#[test]
fn guest_bytes_are_taken_chain_by_chain() {
    let mut g = Guest::new();
    let mut p = g.ports();
    let (a, b) = (g.buf(3), g.buf(3));
    g.q[PORT_TX].write(a, b"abc");
    g.q[PORT_TX].write(b, b"def");
    g.q[PORT_TX].add_chain(0, &[(a, 3, false), (b, 3, false)]);
    g.send(PORT_TX, 2, b"ghi");
    assert_eq!(p.take_tx().as_deref(), Some(&b"abcdef"[..]));
    assert_eq!(p.take_tx().as_deref(), Some(&b"ghi"[..]));
    assert_eq!(p.take_tx(), None);
    assert_eq!(g.q[PORT_TX].used_idx(), 2);
}

#[test]
fn malformed_chains_are_returned_without_effect() {
    let mut g = Guest::new();
    let mut p = g.ports();
    // A control message shorter than its header, then one outside guest memory.
    g.send(CTRL_TX, 0, &[1, 2, 3]);
    g.q[CTRL_TX].add_chain(1, &[(0x50_0000, 8, false)]);
    assert!(p.process_control());
    assert_eq!(g.q[CTRL_TX].used_idx(), 2);
    assert!(!p.port_ready());
    // A transmit chain outside memory gives no bytes; a receive chain that is read-only takes none.
    g.q[PORT_TX].add_chain(0, &[(0x50_0000, 64, false)]);
    assert_eq!(p.take_tx(), Some(vec![]));
    g.send(CTRL_TX, 3, &ControlMessage::new(AGENT_PORT_ID, PORT_OPEN, 1).encode());
    p.process_control();
    g.send(PORT_RX, 0, b"read-only");
    assert_eq!(p.fill_rx(b"data"), (0, true));
    assert_eq!(g.q[PORT_RX].used(0), (0, 0));
    // DEVICE_READY with no control rx buffer posted: the reply waits, nothing breaks.
    g.send(CTRL_TX, 2, &ControlMessage::new(0, DEVICE_READY, 1).encode());
    p.process_control();
    let buf = g.post_writable(CTRL_RX, 0, 64);
    p.process_control();
    assert_eq!(g.control_received(&[buf]), vec![ControlMessage::new(AGENT_PORT_ID, PORT_ADD, 0)]);
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn worker_joins_the_port_to_a_unix_socket_client() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let console = super::Console::new(&sock, AGENT_PORT_NAME).unwrap();

    let mut g = Guest::new();
    let events: Vec<EventFd> = (0..NUM_QUEUES).map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap()).collect();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let interrupt = Arc::new(Interrupt::new(irq));
    let handler = ConsoleHandler::new(
        g.ports(),
        events.iter().map(|e| e.try_clone().unwrap()).collect(),
        console_listener(&console),
        interrupt.clone(),
    );
    let _worker = Worker::spawn("console-test", handler).unwrap();
    let kick = |q: usize| events[q].write(1).unwrap();

    let bufs: Vec<u64> = (0..8).map(|i| g.post_writable(CTRL_RX, i, 64)).collect();
    g.send(CTRL_TX, 0, &ControlMessage::new(0, DEVICE_READY, 1).encode());
    g.send(CTRL_TX, 1, &ControlMessage::new(AGENT_PORT_ID, PORT_READY, 1).encode());
    kick(CTRL_TX);
    wait_for("PORT_NAME", || g.q[CTRL_RX].used_idx() == 2);

    let mut client = UnixStream::connect(&sock).unwrap();
    wait_for("PORT_OPEN 1", || g.q[CTRL_RX].used_idx() == 3);
    assert_eq!(g.control_received(&bufs)[2], ControlMessage::new(1, PORT_OPEN, 1));

    // Host → guest: bytes wait until the guest posts a buffer and opens the port.
    client.write_all(b"HELLO").unwrap();
    let rx = g.post_writable(PORT_RX, 0, 64);
    kick(PORT_RX);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(g.q[PORT_RX].used_idx(), 0, "port not open in the guest yet");
    g.send(CTRL_TX, 2, &ControlMessage::new(AGENT_PORT_ID, PORT_OPEN, 1).encode());
    kick(CTRL_TX);
    wait_for("rx used", || g.q[PORT_RX].used_idx() == 1);
    assert_eq!(g.q[PORT_RX].used(0), (0, 5));
    assert_eq!(g.q[PORT_RX].read(rx, 5), b"HELLO");
    assert_ne!(interrupt.status() & 1, 0);

    // Guest → host.
    g.send(PORT_TX, 0, b"pong");
    kick(PORT_TX);
    let mut got = [0u8; 4];
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");

    // The host leaves: the guest is told, and a new client is accepted.
    drop(client);
    wait_for("PORT_OPEN 0", || g.q[CTRL_RX].used_idx() == 4);
    assert_eq!(g.control_received(&bufs)[3], ControlMessage::new(1, PORT_OPEN, 0));
    let _again = UnixStream::connect(&sock).unwrap();
    wait_for("PORT_OPEN 1 again", || g.q[CTRL_RX].used_idx() == 5);
}

fn console_listener(c: &super::Console) -> std::os::unix::net::UnixListener {
    c.listener_clone().unwrap()
}

#[test]
fn clients_that_gave_up_in_the_backlog_are_skipped() {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    assert!(super::event_handler::accept_live(&listener).unwrap().is_none(), "nobody waiting");
    // Two attempts that timed out (said HELLO, then closed), then the live one.
    for _ in 0..2 {
        let mut dead = UnixStream::connect(&path).unwrap();
        dead.write_all(b"stale").unwrap();
    }
    let mut live = UnixStream::connect(&path).unwrap();
    live.write_all(b"fresh").unwrap();
    // A client that only shut its write side still waits for an answer: it is served.
    let half = UnixStream::connect(&path).unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = super::event_handler::accept_live(&listener).unwrap().expect("the live client");
    let mut buf = [0u8; 5];
    got.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"fresh");
    assert!(super::event_handler::accept_live(&listener).unwrap().is_some(), "the half-closed client is served");
    assert!(super::event_handler::accept_live(&listener).unwrap().is_none());
    drop(half);
}
