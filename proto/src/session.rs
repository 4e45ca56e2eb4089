//! The session handshake on the agent channel.
//!
//! The agent channel is a byte pipe that survives the host going away: a virtio-serial port whose host end (a unix
//! socket served by QEMU) is closed when the runner dies and reopened when it comes back. Bytes of the old session can
//! still be in flight in either direction when a new one starts, so HTTP/2 cannot simply start on the first byte.
//! Every session therefore begins with:
//!
//! ```text
//! host  → agent:  "BOXYARD-AGENT/1 HELLO <nonce>\n"     (nonce: 32 lowercase hex digits, fresh per session)
//! agent → host:   "BOXYARD-AGENT/1 READY <nonce>\n"
//! ```
//!
//! The agent discards everything before a well-formed HELLO; the host discards everything before the READY that
//! carries its own nonce. HTTP/2 (gRPC) starts right after. A side that sees its session end (EOF, error) returns to
//! the handshake; a host that gets no READY in time reconnects and says HELLO again.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const HELLO: &[u8] = b"BOXYARD-AGENT/1 HELLO ";
const READY: &[u8] = b"BOXYARD-AGENT/1 READY ";
const NONCE_LEN: usize = 32;

/// A per-session random token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// A fresh random nonce.
    pub fn random() -> Self {
        let mut raw = [0u8; NONCE_LEN / 2];
        getrandom::fill(&mut raw).expect("the OS random number generator is unavailable");
        let mut hex = [0u8; NONCE_LEN];
        for (i, b) in raw.iter().enumerate() {
            hex[2 * i] = HEX[(b >> 4) as usize];
            hex[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        Nonce(hex)
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; NONCE_LEN] = bytes.try_into().ok()?;
        arr.iter().all(|c| HEX.contains(c)).then_some(Nonce(arr))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("the agent channel closed before the handshake completed")]
    Closed,
    #[error("the agent did not answer the session handshake within {0:?}; is the guest agent running?")]
    Timeout(Duration),
    #[error("I/O error on the agent channel: {0}")]
    Io(#[from] std::io::Error),
}

/// Host side: says HELLO and waits for the matching READY, discarding stale bytes before it.
pub async fn client_handshake<S>(io: &mut S, timeout: Duration) -> Result<Nonce, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce = Nonce::random();
    let mut line = Vec::with_capacity(HELLO.len() + NONCE_LEN + 1);
    line.extend_from_slice(HELLO);
    line.extend_from_slice(&nonce.0);
    line.push(b'\n');
    let work = async {
        io.write_all(&line).await?;
        io.flush().await?;
        loop {
            let got = read_line_after(io, READY).await?;
            if got == nonce {
                return Ok(nonce);
            }
            // A READY of an older session: keep looking.
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(HandshakeError::Timeout(timeout)),
    }
}

/// Agent side: waits for a HELLO (discarding anything before it) and answers READY.
pub async fn server_handshake<S>(io: &mut S) -> Result<Nonce, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let nonce = read_line_after(io, HELLO).await?;
    let mut line = Vec::with_capacity(READY.len() + NONCE_LEN + 1);
    line.extend_from_slice(READY);
    line.extend_from_slice(&nonce.0);
    line.push(b'\n');
    io.write_all(&line).await?;
    io.flush().await?;
    Ok(nonce)
}

/// Reads byte by byte until `prefix` followed by a nonce and a newline has been seen; returns the nonce.
///
/// Byte-at-a-time reads are deliberate: nothing after the newline may be consumed, because HTTP/2 starts there.
/// The handshake is a few dozen bytes, so the cost does not matter.
async fn read_line_after<S>(io: &mut S, prefix: &[u8]) -> Result<Nonce, HandshakeError>
where
    S: AsyncRead + Unpin,
{
    let want = prefix.len() + NONCE_LEN + 1;
    let mut window: Vec<u8> = Vec::with_capacity(want);
    let mut byte = [0u8; 1];
    loop {
        if io.read(&mut byte).await? == 0 {
            return Err(HandshakeError::Closed);
        }
        window.push(byte[0]);
        // Keep the window a prefix of the expected line; on mismatch slide to the next possible start.
        while !window.is_empty() && !matches_so_far(&window, prefix) {
            window.remove(0);
        }
        if window.len() == want {
            if let Some(nonce) = Nonce::parse(&window[prefix.len()..want - 1]) {
                return Ok(nonce);
            }
            window.clear();
        }
    }
}

fn matches_so_far(window: &[u8], prefix: &[u8]) -> bool {
    let n = window.len().min(prefix.len());
    if window[..n] != prefix[..n] {
        return false;
    }
    if window.len() <= prefix.len() {
        return true;
    }
    let rest = &window[prefix.len()..];
    let (hex, tail) = rest.split_at(rest.len().min(NONCE_LEN));
    hex.iter().all(|c| HEX.contains(c)) && tail.iter().all(|&c| c == b'\n') && tail.len() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn handshake_skips_stale_bytes_in_both_directions() {
        let (mut host, mut agent) = duplex(4096);
        // Stale bytes of an old session on both sides, including a partial HELLO and an old READY.
        agent.write_all(b"\x00\x00garbage BOXYARD-AGENT/1 READY 0123456789abcdef0123456789abcdef\n").await.unwrap();
        host.write_all(b"PRI * HTTP/2.0 BOXYARD-AGENT/1 HEL").await.unwrap();
        let server = tokio::spawn(async move {
            let n = server_handshake(&mut agent).await.unwrap();
            agent.write_all(b"after").await.unwrap();
            n
        });
        let n = client_handshake(&mut host, Duration::from_secs(5)).await.unwrap();
        assert_eq!(server.await.unwrap(), n);
        let mut buf = [0u8; 5];
        host.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"after", "nothing after READY may be consumed");
    }

    #[tokio::test]
    async fn handshake_times_out_without_agent() {
        let (mut host, _agent) = duplex(4096);
        let err = client_handshake(&mut host, Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn server_reports_closed_channel() {
        let (host, mut agent) = duplex(64);
        drop(host);
        assert!(matches!(server_handshake(&mut agent).await, Err(HandshakeError::Closed)));
    }
}
