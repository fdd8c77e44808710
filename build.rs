//! Compiles `proto/` with protox (a pure-Rust protobuf compiler, no system `protoc`)
//! and generates the tonic/prost code plus a file descriptor set for gRPC reflection.

use std::{env, error::Error, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    let files = [
        "proto/integrations/v1/integrations.proto",
        "proto/integrations/v1/subscriptions.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("integrations_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Webhook bodies travel gateway → service → store as one shared buffer: the
        // gateway's collected body is sent, and the service decodes a slice of the frame,
        // without copying either side.
        .bytes(".integrations.v1.ReceiveWebhookRequest.body")
        .compile_fds(descriptors)?;
    Ok(())
}
