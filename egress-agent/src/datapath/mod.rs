//! The kernel side as userspace sees it: loading and attaching the programs, and the pinned maps.

mod error;
mod loader;
mod maps;

pub use error::DatapathError;
pub use loader::{attach, attachments, uninstall};
pub use maps::{Maps, route_value};

/// The eBPF object built by build.rs.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf"));
