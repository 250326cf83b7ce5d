//! Generates the protobuf types (prost) and their proto3 JSON mapping (pbjson) from `proto/`
//! with a pure-Rust proto compiler (protox), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_files = [
        "proto/gridwatch/v1/event.proto",
        "proto/gridwatch/v1/output.proto",
    ];
    for proto_file in proto_files {
        println!("cargo:rerun-if-changed={proto_file}");
    }
    let file_descriptor_set = protox::compile(proto_files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("gridwatch_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&file_descriptor_set),
    )?;

    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(file_descriptor_set)?;

    let descriptor_bytes = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .ignore_unknown_fields()
        .build(&[".gridwatch"])?;
    Ok(())
}
