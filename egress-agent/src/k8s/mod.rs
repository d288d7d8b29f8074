//! Kubernetes mode: the policy API, the watches, the pure index that turns cluster objects into
//! rules and pod selection, and the source that turns those into the engine's intent.

pub mod apply;
pub(crate) mod backoff;
pub mod cgroups;
pub mod convert;
pub mod crd;
pub mod events;
#[cfg(test)]
mod fixtures_tests;
pub mod index;
pub mod lease;
pub mod model;
pub mod policy;
pub mod refs;
pub mod report;
pub mod selector;
pub mod source;
pub mod store;
pub mod watch;
