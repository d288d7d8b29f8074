//! Exists so that egress-agent can name this crate as a build-dependency (as the aya template
//! does): cargo then rebuilds the agent, and so the eBPF object, whenever this crate or
//! egress-common changes. The programs themselves are the `egress-ebpf` binary (`main.rs`).
#![no_std]
