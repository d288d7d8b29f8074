//! Kubernetes mode: the policy API, the watches, the pure index that turns cluster objects into
//! rules and pod selection, and the source that turns those into the engine's intent.

pub mod cgroups;
pub mod convert;
pub mod crd;
pub mod index;
pub mod model;
pub mod report;
pub mod selector;
pub mod source;
pub mod watch;
