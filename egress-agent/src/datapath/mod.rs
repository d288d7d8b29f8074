//! The kernel side as userspace sees it: loading and attaching the programs, the pinned maps,
//! and carrying state over from older map layouts.

mod codec;
mod error;
mod loader;
mod maps;
mod migrate;
mod sys;
mod table;

pub use error::DatapathError;
pub use loader::{Attachment, Loaded, attachments, load, preflight, uninstall};
pub use maps::{LearnedEntries, Maps};
pub use migrate::{Carried, carry_learned, carry_over, previous_layout};
pub use sys::wait_for_programs;

/// The eBPF object built by build.rs.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-ebpf"));
