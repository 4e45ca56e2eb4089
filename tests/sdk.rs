//! The Rust SDK against a real stack: `run`, and attaches through a TCP proxy that cuts the connection every few
//! hundred kilobytes: a command streaming 20 MB gives the caller exactly the bytes and the exit code, and 3 MB of
//! input reach the process exactly once.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use boxyard::attach::{Event, OutputStream, Retry};
use boxyard::{Client, CreateBox, ExecRequest};
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Copies `r` to `w` until `limit` bytes have passed (then counts a cut), EOF or an error.
async fn pipe_until(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    limit: u64,
    cuts: Arc<AtomicU32>,
) {
    let mut sent = 0u64;
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(k) = r.read(&mut buf).await {
        if k == 0 {
            return;
        }
        let k = k.min((limit - sent) as usize);
        if w.write_all(&buf[..k]).await.is_err() {
            return;
        }
        sent += k as u64;
        if sent >= limit {
            cuts.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Forwards connections to `upstream`, cutting each one after 100-500 KB in either direction.
async fn cutting_proxy(upstream: String) -> (String, Arc<AtomicU32>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let cuts = Arc::new(AtomicU32::new(0));
    let c = cuts.clone();
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            let Ok((client, _)) = l.accept().await else { continue };
            n += 1;
            let limit = 100_000 + (n * 7919 % 400_000);
            let (up, cuts) = (upstream.clone(), c.clone());
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&up).await else { return };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                // Whichever direction ends first (a cut, EOF) drops both connections abruptly.
                tokio::select! {
                    _ = pipe_until(cr, sw, limit, cuts.clone()) => {}
                    _ = pipe_until(sr, cw, limit, cuts) => {}
                }
            });
        }
    });
    (addr, cuts)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attach_through_a_cutting_proxy_yields_exactly_the_bytes_and_the_exit_code() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let direct = Client::new(&s.cp.api, &api.key).unwrap();
    let b = direct.create_box(&CreateBox::default()).await.unwrap();
    assert_eq!(b.state, "running");
    const N: u64 = 2_600_000;
    let x = direct
        .exec(&b.id, &ExecRequest::new(["sh", "-c", &format!("seq 1 {N}; echo tail >&2; exit 7")]))
        .await
        .unwrap();

    let (proxy, cuts) = cutting_proxy(s.cp.api.trim_start_matches("http://").to_string()).await;
    let via_proxy = Client::new(format!("http://{proxy}"), &api.key).unwrap().with_attach_retry(Retry {
        max_retries: 20,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
    });
    let mut attach = via_proxy.attach(b.id, x.id, 0);
    let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), None);
    while let Some(ev) = attach.next().await {
        match ev.unwrap() {
            Event::Output { stream: OutputStream::Stdout, data, .. } => stdout.extend_from_slice(&data),
            Event::Output { stream: OutputStream::Stderr, data, .. } => stderr.extend_from_slice(&data),
            Event::Gap { from, to } => panic!("gap {from}..{to}"),
            Event::Exit(e) => exit = Some(e),
        }
    }
    let expected: Vec<u8> = (1..=N).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    assert!(expected.len() > 19_000_000);
    assert_eq!(stdout.len(), expected.len(), "stdout length");
    assert!(stdout == expected, "stdout differs");
    assert_eq!(stderr, b"tail\n");
    let exit = exit.expect("no exit event");
    assert_eq!(exit.exit_code, Some(7));
    assert_eq!(exit.output_end, attach.cursor());
    let cuts = cuts.load(Ordering::SeqCst);
    assert!(cuts >= 20, "only {cuts} cuts happened");
    assert!(attach.reconnects >= cuts, "{} reconnects for {cuts} cuts", attach.reconnects);
    eprintln!("20 MB through {cuts} cuts, {} reconnects", attach.reconnects);

    // run() end to end, and API errors carry the code.
    let out = direct.run(&b.id, &ExecRequest::new(["sh", "-c", "echo out; echo err >&2; exit 3"])).await.unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit.exit_code),
        (&b"out\n"[..], &b"err\n"[..], Some(3))
    );
    let e = direct.get_box("00000000-0000-0000-0000-000000000000").await.unwrap_err();
    assert_eq!(e.code(), Some("not_found"));
}

/// Input resumes too: 3 MB sent through cuts (interleaved with reading, as `boxyard run -i` does, so reads are
/// cancelled half way too) reach `cat` exactly once, and the EOF after them.
#[tokio::test(flavor = "multi_thread")]
async fn stdin_through_a_cutting_proxy_arrives_exactly_once() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let direct = Client::new(&s.cp.api, &api.key).unwrap();
    let b = direct.create_box(&CreateBox::default()).await.unwrap();
    let mut req = ExecRequest::new(["sh", "-c", "cat; echo closed >&2"]);
    req.stdin = true;
    let x = direct.exec(&b.id, &req).await.unwrap();

    let (proxy, cuts) = cutting_proxy(s.cp.api.trim_start_matches("http://").to_string()).await;
    let via_proxy = Client::new(format!("http://{proxy}"), &api.key).unwrap().with_attach_retry(Retry {
        max_retries: 20,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
    });
    let input: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut chunks = input.chunks(20 * 1024);
    let mut attach = via_proxy.attach(b.id, x.id, 0);
    attach.open().await.unwrap();
    let (mut stdout, mut stderr, mut exit, mut closed) = (Vec::new(), Vec::new(), None, false);
    loop {
        tokio::select! {
            ev = attach.next() => match ev {
                None => break,
                Some(ev) => match ev.unwrap() {
                    Event::Output { stream: OutputStream::Stdout, data, .. } => stdout.extend_from_slice(&data),
                    Event::Output { stream: OutputStream::Stderr, data, .. } => stderr.extend_from_slice(&data),
                    Event::Gap { from, to } => panic!("gap {from}..{to}"),
                    Event::Exit(e) => exit = Some(e),
                },
            },
            _ = std::future::ready(()), if !closed => match chunks.next() {
                Some(c) => attach.send_stdin(c).await.unwrap(),
                None => {
                    attach.close_stdin().await.unwrap();
                    closed = true;
                }
            },
        }
    }
    assert_eq!(stdout.len(), input.len(), "stdout length");
    assert!(stdout == input, "cat's output differs from the input: input was lost, duplicated or reordered");
    assert_eq!(stderr, b"closed\n");
    assert_eq!(exit.expect("no exit event").exit_code, Some(0));
    let cuts = cuts.load(Ordering::SeqCst);
    assert!(cuts >= 5, "only {cuts} cuts happened");
    eprintln!("3 MB of input (and 3 MB of output) through {cuts} cuts, {} reconnects", attach.reconnects);
}

/// A client that writes all its input before reading any output (`cat big | boxyard run -i …` can) must not wedge
/// the attach: the gateway reads input while output waits for the client, so 24 MB go through `cat` and back.
#[tokio::test(flavor = "multi_thread")]
async fn writing_everything_before_reading_does_not_wedge_the_attach() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let c = Client::new(&s.cp.api, &api.key).unwrap();
    let b = c.create_box(&CreateBox::default()).await.unwrap();
    let mut req = ExecRequest::new(["cat"]);
    req.stdin = true;
    let x = c.exec(&b.id, &req).await.unwrap();
    let input: Vec<u8> = (0..24_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    let mut attach = c.attach(b.id, x.id, 0);
    let write_all = async {
        for chunk in input.chunks(256 * 1024) {
            attach.send_stdin(chunk).await.unwrap();
        }
        attach.close_stdin().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(120), write_all)
        .await
        .expect("writing stdin stalled: input stopped flowing while output was not read");
    let mut out = Vec::new();
    let read_all = async {
        while let Some(ev) = attach.next().await {
            match ev.unwrap() {
                Event::Output { data, .. } => out.extend_from_slice(&data),
                Event::Gap { from, to } => panic!("gap {from}..{to}"),
                Event::Exit(e) => assert_eq!(e.exit_code, Some(0)),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read_all).await.expect("reading the output stalled");
    assert_eq!(out.len(), input.len());
    assert!(out == input, "cat's output differs from its input");
}

/// A runner error on the attach (stdin to an execution started without it) reaches the client with its code,
/// instead of looking like a cut; input after `close_stdin` is refused by the SDK itself.
#[tokio::test(flavor = "multi_thread")]
async fn attach_errors_reach_the_client_with_their_code() {
    let s = Stack::start(&[("r1", 4)]).await;
    let (_, api) = s.admin.org("alpha").await;
    let c = Client::new(&s.cp.api, &api.key).unwrap();
    let b = c.create_box(&CreateBox::default()).await.unwrap();
    let x = c.exec(&b.id, &ExecRequest::new(["sleep", "30"])).await.unwrap();
    let mut attach = c.attach(b.id, x.id, 0);
    attach.send_stdin(b"not wanted").await.unwrap();
    let err = match tokio::time::timeout(Duration::from_secs(30), attach.next()).await.expect("no answer") {
        Some(Ok(ev)) => panic!("unexpected event {ev:?}"),
        Some(Err(e)) => e,
        None => panic!("the attach ended without the error"),
    };
    assert_eq!(err.code(), Some("failed_precondition"), "{err}");
    assert!(err.to_string().contains("without stdin"), "{err}");

    let mut req = ExecRequest::new(["cat"]);
    req.stdin = true;
    let x = c.exec(&b.id, &req).await.unwrap();
    let mut attach = c.attach(b.id, x.id, 0);
    attach.send_stdin(b"last words\n").await.unwrap();
    attach.close_stdin().await.unwrap();
    assert!(attach.send_stdin(b"more").await.is_err(), "input after close_stdin must be refused");
    let mut out = Vec::new();
    while let Some(ev) = attach.next().await {
        if let Event::Output { data, .. } = ev.unwrap() {
            out.extend_from_slice(&data);
        }
    }
    assert_eq!(out, b"last words\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attach_gives_up_with_a_clear_error_after_its_retries() {
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = Client::new(format!("http://127.0.0.1:{port}"), "byk_x").unwrap().with_attach_retry(Retry {
        max_retries: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
    });
    let mut a = c.attach("b", "e", 42);
    let err = a.next().await.unwrap().unwrap_err();
    assert!(matches!(err, boxyard::Error::AttachGaveUp { attempts: 4, cursor: 42, .. }), "{err}");
    assert!(a.next().await.is_none());
}
