//! Rebuild the eBPF object when bpf-linker changes.
//!
//! aya-build runs cargo for this crate with bpf-linker as the linker, but cargo does not know
//! that the linker is an input. Tracking the binary's path makes an upgraded or rebuilt
//! bpf-linker produce a fresh object.
fn main() {
    let bpf_linker =
        which::which("bpf-linker").expect("bpf-linker is not on PATH: run `cargo xtask setup`");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
