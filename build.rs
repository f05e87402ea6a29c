//! Compiles `proto/` with protox (no system protoc) into tonic code and a descriptor set, and
//! `proto-reflection/` (the reflection-only `google.rpc.BadRequest` subset) into a descriptor set.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// The wire contract: what users generate code from. Holds only `neurograph/v1/`.
const PROTO_ROOT: &str = "proto";
const PROTO_FILES: &[&str] = &[
    "proto/neurograph/v1/common.proto",
    "proto/neurograph/v1/token.proto",
    "proto/neurograph/v1/grid.proto",
    "proto/neurograph/v1/cdna.proto",
    "proto/neurograph/v1/system.proto",
];

/// Served by reflection only; kept out of `proto/` so that generating code from `proto/`
/// never shadows googleapis' own `google.rpc` (e.g. Python's googleapis-common-protos).
const REFLECTION_ONLY_ROOT: &str = "proto-reflection";
const STATUS_DETAILS_FILE: &str = "proto-reflection/google/rpc/error_details.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Cargo scans a listed directory recursively: a change to any file below either root (an
    // added one too) reruns this script.
    for root in [PROTO_ROOT, REFLECTION_ONLY_ROOT] {
        println!("cargo:rerun-if-changed={root}");
    }
    for file in PROTO_FILES.iter().chain([&STATUS_DETAILS_FILE]) {
        println!("cargo:rerun-if-changed={file}");
    }

    // protox::compile keeps every imported file (FieldMask, Timestamp) in the set,
    // which reflection needs so that grpcurl can resolve them.
    let descriptors = protox::compile(PROTO_FILES, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("neurograph_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    // Served by reflection only, so that grpcurl can decode the BadRequest status details.
    let details = protox::compile([STATUS_DETAILS_FILE], [REFLECTION_ONLY_ROOT])?;
    fs::write(
        out_dir.join("status_details_descriptor.bin"),
        details.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .generate_default_stubs(true)
        // prost's codec plus token counts taken before decoding (src/api/codec.rs).
        .codec_path("crate::api::codec::BoundedCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
