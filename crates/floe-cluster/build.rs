//! Compiles `proto/floe_cluster.proto` into Rust (messages, tonic clients
//! and servers) without a system `protoc`: protox parses the file into a
//! descriptor set in Rust, and tonic-prost-build generates code from it.
//! A fresh machine with only Rust and a C compiler builds Floe.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/floe_cluster.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Opaque payloads stay `Bytes`: handed to the handlers without a copy.
        .bytes(".floe.cluster.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
