//! Kubernetes mode: the policy API and the pure index that turns cluster objects into the same
//! rules and cgroup selection the standalone mode reads from its file.

pub mod agent;
pub mod cgroups;
pub mod convert;
pub mod crd;
pub mod index;
pub mod model;
pub mod report;
pub mod selector;
pub mod watch;
