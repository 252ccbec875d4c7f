//! Snapshot files on the wire: a header chunk (the encoded MsgSnapshot, size, crc32),
//! then the image in chunks. Neither side ever holds the image in memory: the sender
//! reads the file chunk by chunk, the receiver writes a `recv-*.snap` file in the
//! node's snapshot directory, checks size and crc32, and only then hands it over.
//! Any failure, including the RPC being dropped, deletes the partial file.

use std::path::{Path, PathBuf};

use prost::bytes::Bytes;
use protobuf::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};
use trireme_raft::eraftpb::{Message, MessageType};
use trireme_raft::{Mailbox, SnapshotFile};

use crate::identity::PeerIdentity;
use crate::proto::peer_client::PeerClient;
use crate::proto::snapshot_chunk::Chunk;
use crate::proto::{SnapshotChunk, SnapshotHeader};
use crate::service::authorized;

/// Size of a data chunk.
pub(crate) const CHUNK: usize = 1024 * 1024;

/// Deletes the file when dropped, unless disarmed.
struct PartialFile(Option<PathBuf>);

impl PartialFile {
    fn disarm(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn io_status(what: &str, path: &Path, e: std::io::Error) -> Status {
    tracing::warn!(path = %path.display(), "snapshot {what}: {e}");
    Status::internal(format!("snapshot {what} failed"))
}

/// Receives one snapshot into a verified file and hands it to the node.
pub(crate) async fn receive(
    peer: &PeerIdentity,
    mut stream: Streaming<SnapshotChunk>,
    mailbox: &Mailbox,
) -> Result<(), Status> {
    let header = match stream.message().await? {
        Some(SnapshotChunk {
            chunk: Some(Chunk::Header(h)),
        }) => h,
        _ => {
            return Err(Status::invalid_argument(
                "the first chunk must be the header",
            ))
        }
    };
    let msg = Message::parse_from_bytes(&header.message)
        .map_err(|_| Status::invalid_argument("undecodable MsgSnapshot"))?;
    if msg.get_msg_type() != MessageType::MsgSnapshot {
        return Err(Status::invalid_argument(
            "the header does not carry a MsgSnapshot",
        ));
    }
    if !authorized(peer, &msg, mailbox) {
        return Err(Status::permission_denied(
            "from/to do not match the connection",
        ));
    }
    let path = mailbox
        .snapshot_dir()
        .join(format!("recv-{:016x}.snap", rand::random::<u64>()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| io_status("create", &path, e))?;
    let partial = PartialFile(Some(path.clone()));
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.message().await? {
        let Some(Chunk::Data(data)) = chunk.chunk else {
            return Err(Status::invalid_argument("a second header"));
        };
        size += data.len() as u64;
        if size > header.size {
            return Err(Status::invalid_argument(
                "more data than the header announced",
            ));
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| io_status("write", &path, e))?;
    }
    file.flush()
        .await
        .map_err(|e| io_status("flush", &path, e))?;
    if let Err(e) = file.sync_all().await {
        // Fail-stop: a replica whose fsync fails stops; it never retries and carries on.
        mailbox.fatal(format!(
            "fsync of received snapshot {}: {e}",
            path.display()
        ));
        return Err(io_status("sync", &path, e));
    }
    drop(file);
    if size != header.size {
        return Err(Status::invalid_argument(format!(
            "snapshot truncated: {size} of {} bytes",
            header.size
        )));
    }
    if hasher.finalize() != header.crc32 {
        return Err(Status::data_loss("snapshot crc32 mismatch"));
    }
    let path = partial.disarm();
    tracing::info!(peer = %peer.name, size, path = %path.display(), "received snapshot");
    mailbox.receive_snapshot(msg, path);
    Ok(())
}

/// Why a snapshot did not reach a peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encode: {0}")]
    Encode(#[from] protobuf::ProtobufError),
    #[error("rpc: {0}")]
    Rpc(#[from] Status),
    #[error("refused by the receiver")]
    Refused,
}

/// Streams `file` then `msg` to the peer behind `channel`.
pub(crate) async fn send(
    channel: Channel,
    max_message_size: usize,
    msg: Message,
    file: SnapshotFile,
) -> Result<(), SendError> {
    let header = SnapshotHeader {
        message: Bytes::from(msg.write_to_bytes()?),
        size: file.size,
        crc32: file.crc32,
    };
    let mut f = tokio::fs::File::open(&file.path)
        .await
        .map_err(|source| SendError::Open {
            path: file.path.clone(),
            source,
        })?;
    // Two chunks in flight at most: memory stays bounded whatever the file's size.
    let (tx, rx) = mpsc::channel(2);
    let _ = tx
        .send(SnapshotChunk {
            chunk: Some(Chunk::Header(header)),
        })
        .await;
    let path = file.path.clone();
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                let n = f.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            let chunk = SnapshotChunk {
                chunk: Some(Chunk::Data(Bytes::from(buf))),
            };
            if tx.send(chunk).await.is_err() || filled < CHUNK {
                // The RPC ended (its error tells why), or the file did.
                return Ok::<(), std::io::Error>(());
            }
        }
    });
    let mut client = PeerClient::new(channel)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    let response = client.snapshot(ReceiverStream::new(rx)).await;
    let read_error = |r: Result<std::io::Result<()>, tokio::task::JoinError>| match r {
        Ok(Ok(())) => None,
        Ok(Err(source)) => Some(SendError::Read {
            path: path.clone(),
            source,
        }),
        Err(e) => Some(SendError::Read {
            path: path.clone(),
            source: std::io::Error::other(e),
        }),
    };
    match response {
        // The receiver saw the end of the stream: the reader has returned.
        Ok(r) if r.get_ref().accepted => match read_error(reader.await) {
            None => Ok(()),
            Some(e) => Err(e),
        },
        Ok(_) => {
            reader.abort();
            Err(SendError::Refused)
        }
        Err(status) => {
            // A read error ends the stream early; it explains the RPC's failure.
            if reader.is_finished() {
                if let Some(e) = read_error(reader.await) {
                    return Err(e);
                }
            } else {
                reader.abort();
            }
            Err(SendError::Rpc(status))
        }
    }
}
