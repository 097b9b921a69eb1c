//! Builds pool-core's source with `cfg(loom)`: its shell then synchronizes through loom.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-cfg=loom");
}
