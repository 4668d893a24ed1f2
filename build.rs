//! Generates the Open Inference Protocol message types (`proto/*.proto`) with prost.
//! protox compiles the `.proto` in Rust, so no `protoc` is needed to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/open_inference_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    prost_build::Config::new()
        // BYTES tensors as `Bytes`: decoded from a `Bytes` payload they are slices of
        // it, not one allocation per value.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
