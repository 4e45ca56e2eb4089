//! `boxyard-runner bench log` and `bench attach`: throughput of the execution output path.
//!
//! - `log`: appends to an execution log the way the pump does (64 KiB records, fsync every MiB), then replays it
//!   from a cursor with one reader.
//! - `attach`: starts a runner (local backend) as a child process, runs a command writing N bytes, attaches from
//!   cursor 0 and reads to the end; reports the throughput and the runner's peak RSS (VmHWM), once for a small and
//!   once for a large output, to show that the runner's memory does not grow with the output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use boxyard_proto::runner as pb;
use boxyard_runner::execlog::{ExecLog, Item, LogConfig};
use boxyard_runner::paths::StatePaths;

use super::units::parse_size;

#[derive(Args, Debug)]
pub struct LogBenchArgs {
    /// Bytes to append and replay.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    pub bytes: u64,
    /// Directory for the log (put it on the disk the runner's state directory uses).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct AttachBenchArgs {
    /// Output of the large run.
    #[arg(long, value_parser = parse_size, default_value = "1GiB")]
    pub bytes: u64,
    /// Output of the small run (for the RSS comparison).
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    pub small_bytes: u64,
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

pub fn log(args: LogBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("boxyard-bench-log-").tempdir_in(&args.dir)?;
    let config = LogConfig { segment_bytes: 8 << 20, retention_bytes: args.bytes.max(64 << 20) * 2 };
    let log = ExecLog::open(tmp.path(), config)?;
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    eprintln!("appending {} MiB in 64 KiB records (fsync every MiB) to {} ...", args.bytes >> 20, tmp.path().display());
    let t0 = Instant::now();
    let mut cursor = 0u64;
    let mut since_sync = 0usize;
    while cursor < args.bytes {
        let n = chunk.len().min((args.bytes - cursor) as usize);
        log.append(1 + (cursor / chunk.len() as u64 % 2) as u8, cursor, &chunk[..n])?;
        cursor += n as u64;
        since_sync += n;
        if since_sync >= 1 << 20 {
            log.sync()?;
            since_sync = 0;
        }
    }
    log.sync()?;
    let append = t0.elapsed();
    println!(
        "log append:  {:8.0} MB/s  ({} MiB in {:.2} s)",
        mb_s(args.bytes, append),
        args.bytes >> 20,
        append.as_secs_f64()
    );

    for (label, from) in [("replay from 0", 0), ("replay from the middle", args.bytes / 2)] {
        let t0 = Instant::now();
        let mut reader = log.reader(from);
        let mut read = 0u64;
        loop {
            let items = reader.read(256 * 1024)?;
            if items.is_empty() {
                break;
            }
            for it in items {
                if let Item::Data { data, .. } = it {
                    read += data.len() as u64;
                }
            }
        }
        let d = t0.elapsed();
        if read != args.bytes - from {
            bail!("replay read {read} bytes, expected {}", args.bytes - from);
        }
        println!("log {label}: {:8.0} MB/s  ({} MiB in {:.2} s)", mb_s(read, d), read >> 20, d.as_secs_f64());
    }
    Ok(())
}

struct ChildRunner {
    child: std::process::Child,
    state: tempfile::TempDir,
}

impl ChildRunner {
    fn start() -> anyhow::Result<Self> {
        let state = tempfile::Builder::new().prefix("boxyard-bench-runner-").tempdir_in("/var/tmp")?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--backend", "local", "--tls-dev", "--listen", "127.0.0.1:0", "--log-retention", "64MiB"])
            .arg("--state-dir")
            .arg(state.path())
            .stderr(std::fs::File::create(StatePaths::new(state.path()).log_file())?)
            .spawn()?;
        let addr = StatePaths::new(state.path()).addr_file();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !addr.exists() {
            if Instant::now() > deadline {
                bail!("the runner did not start; see {}", StatePaths::new(state.path()).log_file().display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(ChildRunner { child, state })
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    async fn client(&self) -> anyhow::Result<boxyard_runner::client::Client> {
        let addr: String = serde_json::from_slice(&std::fs::read(StatePaths::new(self.state.path()).addr_file())?)?;
        let ca = std::fs::read(boxyard_runner::service::tls::dev_cert_path(self.state.path()))?;
        Ok(boxyard_runner::client::connect(&addr, &ca, "localhost").await?)
    }
}

impl Drop for ChildRunner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn attach_run(bytes: u64) -> anyhow::Result<(f64, u64, Duration)> {
    let runner = ChildRunner::start()?;
    let mut c = runner.client().await?;
    c.create_box(pb::CreateBoxRequest { box_id: "bench".into(), spec: None }).await?;
    let e = c
        .exec(pb::ExecRequest {
            box_id: "bench".into(),
            argv: vec!["head".into(), "-c".into(), bytes.to_string(), "/dev/zero".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::AttachRequest {
        msg: Some(pb::attach_request::Msg::Start(pb::AttachStart {
            execution_id: e.execution_id.clone(),
            from_cursor: 0,
        })),
    })
    .await?;
    let t0 = Instant::now();
    let mut s = c.attach(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut got = 0u64;
    let mut exit = None;
    let mut last_report = Instant::now();
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(pb::attach_event::Event::Output(o)) => got += o.data.len() as u64,
            Some(pb::attach_event::Event::Exit(r)) => exit = Some(r),
            Some(pb::attach_event::Event::Gap(g)) => bail!("unexpected gap {g:?}: the reader fell behind retention"),
            _ => {}
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("  ... {} MiB", got >> 20);
            last_report = Instant::now();
        }
    }
    let d = t0.elapsed();
    let exit = exit.context("the attach ended without a result")?;
    if got != bytes || exit.output_end != bytes {
        bail!("received {got} bytes (result says {}), expected {bytes}", exit.output_end);
    }
    let rss = runner.peak_rss_kib();
    let _ = c.destroy_box(pb::BoxRef { box_id: "bench".into() }).await;
    Ok((mb_s(bytes, d), rss, d))
}

pub async fn attach(args: AttachBenchArgs) -> anyhow::Result<()> {
    for bytes in [args.small_bytes, args.bytes] {
        eprintln!("attach: a command writes {} MiB; reading it through the runner API from cursor 0 ...", bytes >> 20);
        let (rate, rss, d) = attach_run(bytes).await?;
        println!(
            "attach end to end: {rate:8.0} MB/s  ({} MiB in {:.2} s); runner peak RSS {} MiB",
            bytes >> 20,
            d.as_secs_f64(),
            rss >> 10
        );
    }
    Ok(())
}
