//! egress-agent: sends selected workloads' connections to an egress gateway by rewriting the
//! destination at `connect()`/`sendmsg()` with cgroup eBPF programs.
//!
//! Data flows one way (see docs/design.md):
//!
//! ```text
//! sources (file.rs, k8s) ─► Intent (intent.rs) ─► engine ─► desired maps ─► diff ─► datapath
//! ```
//!
//! The binary (`main.rs`) is a thin shell over these modules.

pub mod admin;
pub mod bpffs;
pub mod cgroupfs;
pub mod cli;
pub mod clock;
pub mod config;
pub mod datapath;
pub mod dns;
pub mod engine;
pub mod explain;
pub mod file;
pub mod health;
pub mod heap;
pub mod inspect;
pub mod intent;
pub mod k8s;
pub mod kernel;
pub mod metrics;
pub mod route;
pub mod run;
pub mod status;
