//! The Boxyard stack on one machine, as processes: a private PostgreSQL cluster ([`postgres`]), the S3 endpoint
//! ([`s3`]), control-plane replicas ([`controlplane`]) and runners ([`runner`]), with the plumbing they share
//! ([`process`]: start-up, pid files, clean-up by command line, free ports; [`paths`]: the workspace and the built
//! binaries; [`nested`]: the real-VM tests again on the `kvm` backend, inside the nested-KVM harness here).
//!
//! One library for every user of a local stack: `boxyard dev up|down|status` (long-lived, detached processes with pid
//! files), the whole-system tests in `tests/` and the runner's tests (processes owned by the test, ended on drop), and
//! the control-plane benchmarks. It starts and stops things; it knows nothing of the REST API (the callers bring
//! their own client).

#![warn(missing_docs)]

pub mod controlplane;
pub mod error;
pub mod nested;
pub mod paths;
pub mod postgres;
pub mod process;
pub mod runner;
pub mod s3;

pub use error::{Error, Result};
