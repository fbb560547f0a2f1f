//! Generates the Rust code for the wire contract from `proto/sluiceway/v1/*.proto`.
//!
//! `protoc` comes from the `protoc-bin-vendored` build-dependency so that nothing has to be
//! installed on the machine; a `PROTOC` already set in the environment wins.

// Edition 2024 makes `std::env::set_var` unsafe; this is a single-threaded build script.
#![allow(unsafe_code)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let files = [
        "proto/sluiceway/v1/errors.proto",
        "proto/sluiceway/v1/registry.proto",
        "proto/sluiceway/v1/admin.proto",
        "proto/sluiceway/v1/log.proto",
        "proto/sluiceway/v1/group.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    // Cargo features `client` and `server` choose the stubs, so a client-only build neither
    // compiles server stubs nor needs tonic's server. The build script sees them as environment
    // variables (and is re-run by cargo when they change).
    let client = std::env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = std::env::var_os("CARGO_FEATURE_SERVER").is_some();
    tonic_prost_build::configure()
        .build_server(server)
        .build_client(client)
        // Message sets as `bytes::Bytes`: the client hands its batch to the request without a
        // copy, and a fetched set is sliced from the response buffer rather than copied out.
        .bytes(".sluiceway.v1.ProducePartition.message_set")
        .bytes(".sluiceway.v1.FetchPartitionResult.message_set")
        .compile_protos(&files, &["proto"])?;
    Ok(())
}
