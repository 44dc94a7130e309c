//! Compiles `adep/v1/*.proto` with protox (no system `protoc`) and writes the
//! encoded descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "adep/v1/common.proto",
        "adep/v1/federation.proto",
        "adep/v1/national.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out.join("adep_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        // Digests arrive by the tens of thousands per Match: borrow them from the
        // message buffer instead of allocating each.
        .bytes(".adep.v1.MatchKey.digest")
        .bytes(".adep.v1.BlindedSubject.elements")
        .bytes(".adep.v1.EvaluatedSubject.elements")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
