//! Compiles `proto/*.proto` with protox (a pure-Rust protobuf compiler), so no
//! system `protoc` is needed.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files =
        ["pod.proto", "attest.proto", "capacity.proto", "provision.proto", "control.proto", "blob.proto", "log.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    prost_build::Config::new().compile_fds(fds)?;
    // The proto3 JSON mapping (enum names, base64 bytes), for `--json` output.
    pbjson_build::Builder::new().register_descriptors(&descriptors)?.build(&[".apocryph"])?;
    Ok(())
}
