//! `boxyard-runner vm bench`: boot-to-agent-ready and exec round-trip medians.
//!
//! A benchmark, not a test: it prints numbers and asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Context;
use boxyard_proto::agent::{ExecRequest, PingRequest, ShutdownRequest, WaitRequest};
use boxyard_runner::launch::launch;
use boxyard_runner::vm::{VmBackend, VmSpec};
use clap::Args;

use super::VmOptions;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub vm: VmOptions,
    /// Number of VM boots.
    #[arg(long, default_value_t = 5)]
    pub boots: usize,
    /// Number of `true` executions on a running VM.
    #[arg(long, default_value_t = 20)]
    pub execs: usize,
    /// Boot with a writable disk (as boxes do).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub with_disk: bool,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let backend = args.vm.guest.backend();
    let image = args.vm.guest.image();
    println!(
        "backend {} machine {:?}, {} vCPU, {} MiB, {} boots, {} execs",
        backend.name(),
        backend.machine,
        args.vm.cpus,
        args.vm.memory,
        args.boots,
        args.execs
    );
    let mut boot_ms = Vec::new();
    let mut kernel_ms = Vec::new();
    let mut ready_ms = Vec::new();
    let mut exec_ms = Vec::new();
    for i in 0..args.boots {
        let dir = tempfile::Builder::new().prefix("boxyard-bench-").tempdir()?;
        let disk = if args.with_disk {
            let d = boxyard_runner::paths::VmPaths::new(dir.path()).scratch_disk();
            boxyard_runner::disk::create_ext4(&d, 256 << 20).await?;
            Some(d)
        } else {
            None
        };
        let spec = VmSpec {
            id: format!("bench-{i}"),
            kernel: image.kernel.clone(),
            initramfs: image.initramfs.clone(),
            root_image: args.vm.guest.rootfs.clone(),
            writable_disk: disk,
            vcpus: args.vm.cpus,
            memory_mib: args.vm.memory,
            run_dir: dir.path().to_path_buf(),
            extra_kernel_args: args.vm.guest.kernel_args.clone(),
        };
        let mut l = launch(&backend, spec, Duration::from_secs(args.vm.guest.boot_timeout)).await?;
        let ping = l.agent.ping(PingRequest {}).await.context("ping")?.into_inner();
        boot_ms.push(l.boot_time.as_secs_f64() * 1000.0);
        kernel_ms.push(ping.kernel_boot_ms as f64);
        ready_ms.push(ping.ready_ms as f64);
        println!(
            "boot {i}: agent ready after {:.0} ms wall (guest: kernel to init {} ms, init {} ms, ready at {} ms uptime)",
            l.boot_time.as_secs_f64() * 1000.0,
            ping.kernel_boot_ms,
            ping.init_ms,
            ping.ready_ms
        );
        if i + 1 == args.boots {
            for _ in 0..args.execs {
                let t = Instant::now();
                let id = l
                    .agent
                    .exec(ExecRequest { argv: vec!["true".into()], ..Default::default() })
                    .await?
                    .into_inner()
                    .exec_id;
                l.agent.wait(WaitRequest { exec_id: id }).await?;
                exec_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), l.agent.shutdown(ShutdownRequest {})).await;
        l.vm.stop(Duration::from_secs(10)).await?;
    }
    println!("median boot to agent ready (wall): {:.0} ms", median(&mut boot_ms));
    println!("median guest uptime at init: {:.0} ms", median(&mut kernel_ms));
    println!("median guest uptime at agent ready: {:.0} ms", median(&mut ready_ms));
    if !exec_ms.is_empty() {
        println!("median exec round trip of `true`: {:.1} ms", median(&mut exec_ms));
    }
    Ok(())
}
