//! `boxyard-vmm`: Boxyard's KVM microVM monitor, built on the rust-vmm crates.
//!
//! One process runs one VM (like Firecracker), so VMs outlive the runner that started them. The crate is laid out by
//! concern:
//! - [`memory`]: the guest physical address map and the memfd-backed guest RAM;
//! - [`arch`]: x86_64 boot (bzImage, boot params, e820, page tables, GDT) and vCPU register state (CPUID, MSRs);
//! - [`acpi`]: the ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) that describe CPUs and devices to the guest;
//! - [`bus`]: dispatch of port I/O and MMIO exits to devices;
//! - [`devices`]: legacy devices (serial, RTC, i8042, ACPI power) and virtio devices behind the virtio-mmio transport;
//! - [`vstate`]: the KVM VM and its vCPU threads;
//! - [`jail`]: the namespaces, empty root and unprivileged ids the running VMM is confined to;
//! - [`seccomp`]: the system-call filter of the running VMM;
//! - [`builder`]: assembles a VM from a [`builder::VmConfig`] and runs it to its end;
//! - [`api`]: the control socket (pause, resume, stop, kill, status, metrics) and the main loop that applies it;
//! - [`metrics`]: the process's counters;
//! - [`timing`]: start-up phase timings (`--timing`).

pub mod acpi;
pub mod api;
pub mod arch;
pub mod builder;
pub mod bus;
pub mod devices;
pub mod jail;
pub mod memory;
pub mod metrics;
pub mod seccomp;
pub mod timing;
pub mod vstate;
