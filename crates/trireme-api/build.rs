//! Compiles etcd's client API (`proto/etcd/*.proto`) with protox (pure Rust, no
//! `protoc`): the gRPC services etcdctl and clientv3 call.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/etcd");
    let files = [root.join("kv.proto"), root.join("rpc.proto")];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
