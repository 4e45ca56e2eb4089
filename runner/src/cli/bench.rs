//! `boxyard-runner vm bench`: boot-to-agent-ready and exec round-trip medians, on either VM backend (`--backend qemu`
//! or `--backend kvm`, our own monitor), so `scripts/bench-vmm.sh` can print both side by side from one machine.
//!
//! The exec round trip is one `Exec` of `true` plus the `Wait` for its result over the agent channel, measured in
//! the runner (what a box's caller sees, minus the control plane), N times on the last booted VM.
//!
//! A benchmark, not a test: it prints numbers and asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Context;
use boxyard_proto::agent::{ExecRequest, PingRequest, ShutdownRequest, WaitRequest};
use boxyard_runner::launch::launch;
use boxyard_runner::vm::{VmBackend, VmSpec};
use clap::Args;

use super::VmOptions;
use super::vm_run::RunBackend;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub vm: VmOptions,
    /// VM backend: QEMU, or our own KVM monitor (boxyard-vmm; needs hardware virtualization).
    #[arg(long, value_enum, default_value = "qemu")]
    pub backend: RunBackend,
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
    percentile(v, 50)
}

/// The `p`th percentile (nearest rank) of `v`; NaN when empty.
fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[((v.len() - 1) * p).div_ceil(100).min(v.len() - 1)] }
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let backend: std::sync::Arc<dyn VmBackend> = match args.backend {
        RunBackend::Auto => args.vm.guest.auto_backend(),
        RunBackend::Qemu => std::sync::Arc::new(args.vm.guest.backend()),
        RunBackend::Kvm => std::sync::Arc::new(args.vm.guest.kvm_backend()?),
    };
    let image = args.vm.guest.image();
    println!(
        "backend {}, {} vCPU, {} MiB, {} boots, {} execs",
        backend.name(),
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
        let mut l = launch(backend.as_ref(), spec, Duration::from_secs(args.vm.guest.boot_timeout)).await?;
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
    if let Some(first) = exec_ms.first().copied() {
        let n = exec_ms.len();
        let p90 = percentile(&mut exec_ms, 90);
        println!(
            "exec round trip of `true` ({}): median {:.2} ms, p90 {p90:.2} ms, min {:.2} ms, first {first:.2} ms ({n} execs)",
            backend.name(),
            median(&mut exec_ms),
            exec_ms[0],
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(median(&mut v), 11.0);
        assert_eq!(percentile(&mut v, 90), 19.0);
        assert_eq!(percentile(&mut v, 100), 20.0);
        assert_eq!(percentile(&mut [3.0], 90), 3.0);
        assert!(percentile(&mut [], 50).is_nan());
    }
}
