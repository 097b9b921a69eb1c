//! Builds pool-core's source with `cfg(shuttle)`: its shell then synchronizes through shuttle.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cfg=shuttle");
}
