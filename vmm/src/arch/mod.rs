//! x86_64 specifics: how a Linux kernel is placed in guest memory and entered ([`boot`]), and the register state
//! every vCPU starts with ([`cpu`]).

pub mod boot;
pub mod cpu;
