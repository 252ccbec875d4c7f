//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, may change).
//!
//! They run the decoding steps of the peer service on bytes as they come off the wire
//! (after gRPC framing): `service::PeerService::deliver` for a `MessageBatch`, and the
//! header checks of `snapshot::receive` for the first `SnapshotChunk`. Only the
//! decoding and the type checks: the `from`/`to` check needs a node's `Mailbox`.

use prost::Message as _;
use protobuf::Message as _;
use trireme_raft::eraftpb::{Message, MessageType};

use crate::proto::snapshot_chunk::Chunk;
use crate::proto::{MessageBatch, SnapshotChunk};

/// What a decoded batch held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchSummary {
    /// Raft messages that would be stepped (decoded, not `MsgSnapshot`).
    pub delivered: usize,
    /// `MsgSnapshot`s sent without their file (dropped by the service).
    pub dropped_snapshots: usize,
}

/// Decodes a `MessageBatch` and each raft message in it as the service does; `Err` when
/// the batch or one of its messages is undecodable (the service ends the stream).
pub fn decode_batch(bytes: &[u8]) -> Result<BatchSummary, String> {
    let batch = MessageBatch::decode(bytes).map_err(|e| format!("batch: {e}"))?;
    let mut summary = BatchSummary::default();
    for bytes in batch.messages {
        let msg = Message::parse_from_bytes(&bytes).map_err(|e| format!("raft message: {e}"))?;
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            summary.dropped_snapshots += 1;
        } else {
            summary.delivered += 1;
        }
    }
    Ok(summary)
}

/// Decodes `bytes` as the first `SnapshotChunk` of a snapshot RPC and checks it as the
/// receiver does: a header whose message is a `MsgSnapshot`. Returns the announced size.
pub fn decode_snapshot_header(bytes: &[u8]) -> Result<u64, String> {
    let header = match SnapshotChunk::decode(bytes).map_err(|e| format!("chunk: {e}"))? {
        SnapshotChunk {
            chunk: Some(Chunk::Header(h)),
        } => h,
        _ => return Err("the first chunk must be the header".into()),
    };
    let msg = Message::parse_from_bytes(&header.message)
        .map_err(|_| "undecodable MsgSnapshot".to_string())?;
    if msg.get_msg_type() != MessageType::MsgSnapshot {
        return Err("the header does not carry a MsgSnapshot".into());
    }
    Ok(header.size)
}

/// Decodes a raft message alone (raft-rs's protobuf-2 bytes).
pub fn decode_raft_message(bytes: &[u8]) -> Result<Message, String> {
    Message::parse_from_bytes(bytes).map_err(|e| e.to_string())
}
