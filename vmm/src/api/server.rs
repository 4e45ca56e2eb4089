//! The control socket's listener: one thread accepts connections (one at a time), reads request lines, hands each
//! parsed request to the main thread as a [`Job`] over a bounded channel (waking it through an eventfd) and writes
//! the answer back. Malformed lines are answered here without bothering the main thread. A client idle for
//! [`IDLE_TIMEOUT`] is dropped, so a stuck client cannot keep others out for long.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use serde_json::Value;
use vmm_sys_util::eventfd::EventFd;

use super::protocol::{self, ApiRequest, ErrorCode, MAX_LINE};

/// How long a connection may stay silent before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the listener waits for the main thread's answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One request for the main thread, with where its answer goes.
pub struct Job {
    /// The request.
    pub request: ApiRequest,
    /// Where the main thread sends the answer.
    pub reply: SyncSender<Value>,
    /// Signalled once the answer is written to the client (a `kill` waits for it before the process ends).
    pub written: Receiver<()>,
}

/// The bound control socket, before its thread starts.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` (a stale socket file from an earlier VMM is replaced).
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        Ok(Self { listener: UnixListener::bind(path)?, path: path.to_path_buf() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the listener thread: requests go to `jobs`, and `wake` is written after each one.
    pub fn spawn(self, jobs: SyncSender<Job>, wake: Arc<EventFd>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name("vmm-api".into()).spawn(move || {
            loop {
                match self.listener.accept() {
                    Ok((conn, _)) => serve(conn, &jobs, &wake),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("boxyard-vmm: control socket accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
    }
}

/// Waits until `conn` is readable or the idle timeout passes.
fn readable(conn: &UnixStream) -> bool {
    let mut pfd = libc::pollfd { fd: conn.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, IDLE_TIMEOUT.as_millis() as libc::c_int) };
        if n < 0 && std::io::Error::last_os_error().kind() == ErrorKind::Interrupted {
            continue;
        }
        return n > 0;
    }
}

/// Serves one connection until the client closes it, goes idle, or sends an over-long line.
fn serve(mut conn: UnixStream, jobs: &SyncSender<Job>, wake: &EventFd) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            if !answer(&mut conn, &line[..nl], jobs, wake) {
                return;
            }
        }
        if buf.len() > MAX_LINE {
            let e = protocol::error(ErrorCode::BadRequest, format!("request line over {MAX_LINE} bytes"));
            let _ = conn.write_all(&protocol::encode(&e));
            return;
        }
        if !readable(&conn) {
            return;
        }
        match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Answers one line; false when the connection is unusable.
fn answer(conn: &mut UnixStream, line: &[u8], jobs: &SyncSender<Job>, wake: &EventFd) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    let (answer, written) = match protocol::parse_request(line) {
        Err(msg) => (protocol::error(ErrorCode::BadRequest, msg), None),
        Ok(request) => {
            let (reply, answer_rx) = sync_channel(1);
            let (written_tx, written) = sync_channel(1);
            if jobs.send(Job { request, reply, written }).is_err() {
                return false;
            }
            let _ = wake.write(1);
            let answer = match answer_rx.recv_timeout(ANSWER_TIMEOUT) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => protocol::error(
                    ErrorCode::Failed,
                    format!("the VMM did not answer within {} s", ANSWER_TIMEOUT.as_secs()),
                ),
                Err(RecvTimeoutError::Disconnected) => protocol::error(ErrorCode::Failed, "the VMM is ending"),
            };
            (answer, Some(written_tx))
        }
    };
    let ok = conn.write_all(&protocol::encode(&answer)).is_ok();
    if let Some(w) = written {
        let _ = w.try_send(());
    }
    ok
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use serde_json::json;

    use super::*;

    /// A server whose "main thread" answers every job with the request's name.
    fn server() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, rx) = sync_channel::<Job>(4);
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        ControlServer::bind(&path).unwrap().spawn(tx, wake).unwrap();
        std::thread::spawn(move || {
            while let Ok(job) = rx.recv() {
                let _ = job.reply.send(protocol::ok(json!({ "did": format!("{:?}", job.request) })));
            }
        });
        (dir, path)
    }

    fn lines(conn: &UnixStream, n: usize) -> Vec<Value> {
        let mut r = BufReader::new(conn);
        (0..n)
            .map(|_| {
                let mut l = String::new();
                r.read_line(&mut l).unwrap();
                serde_json::from_str(&l).unwrap()
            })
            .collect()
    }

    #[test]
    fn requests_on_one_connection_are_answered_in_order_and_bad_lines_get_an_error() {
        let (_d, path) = server();
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Split across writes, with a blank line, CRLF and a malformed request in between.
        c.write_all(b"{\"op\":\"sta").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        c.write_all(b"tus\"}\n\n{\"op\":\"nope\"}\n{\"op\":\"pause\"}\r\n").unwrap();
        let got = lines(&c, 3);
        assert_eq!(got[0], json!({"ok": true, "did": "Status"}));
        assert_eq!((got[1]["ok"].as_bool(), got[1]["error"]["code"].as_str()), (Some(false), Some("bad_request")));
        assert_eq!(got[2], json!({"ok": true, "did": "Pause"}));
        // A second client after the first leaves.
        drop(c);
        let c2 = UnixStream::connect(&path).unwrap();
        c2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (&c2).write_all(b"{\"op\":\"metrics\"}\n").unwrap();
        assert_eq!(lines(&c2, 1)[0]["did"], "Metrics");
    }

    #[test]
    fn an_over_long_line_is_refused_and_the_connection_closed() {
        let (_d, path) = server();
        let mut c = UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(&vec![b'x'; MAX_LINE + 2000]);
        let got = lines(&c, 1);
        assert_eq!(got[0]["error"]["code"], "bad_request");
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0, "closed after the refusal");
    }
}
