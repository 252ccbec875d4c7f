//! Arbitrary bytes off a peer connection (after gRPC framing): as a `MessageBatch` and
//! each raft `eraftpb::Message` in it (the service's decode path), as the first
//! `SnapshotChunk` of a snapshot RPC, and as a raft message alone. Never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_transport::fuzzing;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decode_batch(data);
    let _ = fuzzing::decode_snapshot_header(data);
    let _ = fuzzing::decode_raft_message(data);
});
