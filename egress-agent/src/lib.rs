//! egress-agent: sends selected workloads' connections to an egress gateway by rewriting the
//! destination at `connect()`/`sendmsg()` with cgroup eBPF programs.
//!
//! The binary (`main.rs`) is a thin shell over these modules.

pub mod admin;
pub mod bpffs;
pub mod cgroupfs;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod desired;
pub mod dns;
pub mod inspect;
pub mod k8s;
pub mod reconcile;
pub mod run;
pub mod status;
