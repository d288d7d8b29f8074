//! Kubernetes mode: the policy API and the pure index that turns cluster objects into the same
//! rules and cgroup selection the standalone mode reads from its file.

pub mod cgroups;
pub mod crd;
pub mod index;
pub mod model;
pub mod selector;
