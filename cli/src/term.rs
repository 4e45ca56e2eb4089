//! Streaming an execution to this terminal, and interactive executions (`-i`, `-t`): the local terminal in raw
//! mode while a remote pseudo-terminal runs, window size changes forwarded, local stdin forwarded.

use std::io::Write;

use boxyard::TtySize;
use boxyard::attach::{Attach, Event, OutputStream};

/// The local terminal's size, if stdin is a terminal.
pub fn size() -> Option<TtySize> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0 && ws.ws_col > 0).then_some(TtySize { rows: ws.ws_row.into(), cols: ws.ws_col.into() })
}

/// Raw mode on the local terminal until dropped.
pub struct RawMode(Option<libc::termios>);

impl RawMode {
    pub fn enter() -> RawMode {
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) == 0 {
                return RawMode(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return RawMode(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            RawMode(Some(saved))
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = self.0 {
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        }
    }
}

/// Streams output to stdout/stderr, forwarding stdin (when `stdin`) and window size changes (when `tty`); returns
/// the exit status to use (the remote one; 137 when a signal killed it; 125 when unknown).
pub async fn interactive(mut a: Attach, stdin: bool, tty: bool) -> anyhow::Result<i32> {
    use tokio::io::AsyncReadExt;
    let _raw = tty.then(RawMode::enter);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(8);
    if stdin {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None).await;
                        return;
                    }
                    Ok(n) => {
                        if tx.send(Some(buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let mut stdin_open = stdin;
    // Input can only be sent on a connection: connect before the command prints anything.
    a.open().await?;
    let connected = true;
    loop {
        enum Step {
            Ev(Option<boxyard::Result<Event>>),
            Input(Option<Option<Vec<u8>>>),
            Resize,
        }
        let step = tokio::select! {
            ev = a.next() => Step::Ev(ev),
            i = rx.recv(), if stdin_open && connected => Step::Input(i),
            _ = winch.recv(), if tty && connected => Step::Resize,
        };
        match step {
            Step::Ev(None) => anyhow::bail!("the output ended without an exit status"),
            Step::Ev(Some(ev)) => match ev? {
                Event::Output { stream: OutputStream::Stdout, data, .. } => {
                    out.write_all(&data)?;
                    out.flush()?;
                }
                Event::Output { stream: OutputStream::Stderr, data, .. } => {
                    err.write_all(&data)?;
                    err.flush()?;
                }
                Event::Gap { .. } => {}
                Event::Exit(x) => {
                    return Ok(match (x.exit_code, x.signal.as_deref()) {
                        (Some(c), _) => c,
                        (None, Some(_)) => 137,
                        _ => 125,
                    });
                }
            },
            Step::Input(Some(Some(data))) => a.send_stdin(&data).await?,
            Step::Input(_) => {
                stdin_open = false;
                a.close_stdin().await?;
            }
            Step::Resize => {
                if let Some(s) = size() {
                    a.resize(s).await?;
                }
            }
        }
    }
}
