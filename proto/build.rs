//! Generates the tonic/prost code for every .proto file. protoc comes from protoc-bin-vendored unless `PROTOC` names
//! another one.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed=proto");
    // The crate flattens the packages into `crate::agent`, `crate::runner`, `crate::registry`: the registry's
    // references to runner messages point at the module generated below.
    tonic_prost_build::configure()
        .extern_path(".boxyard.runner.v1", "crate::runner")
        .compile_protos(&["proto/boxyard/registry/v1/registry.proto"], &["proto"])?;
    // Second, so that its full boxyard.runner.v1.rs replaces the one the registry pass wrote (services only).
    tonic_prost_build::configure()
        .compile_protos(&["proto/boxyard/agent/v1/agent.proto", "proto/boxyard/runner/v1/runner.proto"], &["proto"])?;
    Ok(())
}
