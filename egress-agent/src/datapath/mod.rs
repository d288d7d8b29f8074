//! The kernel side as userspace sees it: loading and attaching the programs, and the pinned maps.

mod codec;
mod error;
mod loader;
mod maps;

pub(crate) use codec::stored_rule_name;
pub use error::DatapathError;
pub use loader::{Attachment, attach, attachments, uninstall};
pub use maps::{Maps, RouteEntry};

/// The eBPF object built by build.rs.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf"));
