//! The gRPC handlers of the `Peer` service. They run only on connections the accept
//! loop verified, and trust nothing but the identity it attached: every message must
//! come `from` the member id of the certificate's name and go `to` this node. A
//! stream from a peer the local node does not count as a member is ended with
//! "not a member" and the local applied index, which is how a replica that missed its
//! own removal learns of it.

use protobuf::Message as _;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use trireme_raft::eraftpb::{Message, MessageType};
use trireme_raft::Mailbox;

use crate::identity::PeerIdentity;
use crate::proto::peer_server::Peer;
use crate::proto::{Ack, MessageBatch, SnapshotAck, SnapshotChunk};
use crate::server::{stopped, MailboxSlot};
use crate::snapshot;

pub(crate) struct PeerService {
    mailbox: MailboxSlot,
    /// Turns true when the server stops: open streams end so connections can close.
    stop: watch::Receiver<bool>,
}

impl PeerService {
    pub(crate) fn new(mailbox: MailboxSlot, stop: watch::Receiver<bool>) -> Self {
        PeerService { mailbox, stop }
    }

    /// Delivers one batch; an undecodable message ends the stream.
    fn deliver(&self, peer: &PeerIdentity, batch: MessageBatch) -> Result<(), Status> {
        let Some(mailbox) = self.mailbox.get() else {
            tracing::debug!(peer = %peer.name, "no local node yet: dropping a batch");
            return Ok(());
        };
        for bytes in batch.messages {
            let msg = Message::parse_from_bytes(&bytes).map_err(|e| {
                tracing::warn!(peer = %peer.name, remote = %peer.remote, "undecodable raft message: {e}");
                Status::invalid_argument("undecodable raft message")
            })?;
            if !authorized(peer, &msg, &mailbox) {
                continue;
            }
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                // A snapshot's image travels on the Snapshot RPC; without it the node
                // could not install the snapshot.
                tracing::warn!(peer = %peer.name, remote = %peer.remote, "dropping a MsgSnapshot sent without its file");
                continue;
            }
            mailbox.step(msg);
        }
        // A replica that missed its own removal keeps talking to its old peers: tell
        // it (it checks our applied index against its own before it believes us).
        if let Some(applied) = mailbox.non_member(peer.id) {
            tracing::info!(peer = %peer.name, remote = %peer.remote, applied, "telling a replica that is not a member of the cluster");
            return Err(Status::failed_precondition(not_a_member_message(applied)));
        }
        Ok(())
    }
}

/// How the peer server tells a sender it is not a member: the status message of a
/// `FAILED_PRECONDITION` ending its stream, with the server's applied index.
const NOT_A_MEMBER: &str = "trireme: not a member of this cluster; applied index ";

pub(crate) fn not_a_member_message(applied: u64) -> String {
    format!("{NOT_A_MEMBER}{applied}")
}

/// The applied index in a status from [`not_a_member_message`].
pub(crate) fn parse_not_a_member(status: &Status) -> Option<u64> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    status.message().strip_prefix(NOT_A_MEMBER)?.parse().ok()
}

/// `from` must be the sender's own member id and `to` this node; logs a refusal.
pub(crate) fn authorized(peer: &PeerIdentity, msg: &Message, mailbox: &Mailbox) -> bool {
    if msg.from != peer.id {
        tracing::warn!(
            peer = %peer.name,
            remote = %peer.remote,
            claimed_from = msg.from,
            peer_id = peer.id,
            "dropping a raft message whose from is not the sender's member id"
        );
        return false;
    }
    if msg.to != mailbox.id() {
        tracing::warn!(
            peer = %peer.name,
            remote = %peer.remote,
            to = msg.to,
            local = mailbox.id(),
            "dropping a raft message addressed to another member"
        );
        return false;
    }
    true
}

fn identity<T>(req: &Request<T>) -> Result<PeerIdentity, Status> {
    req.extensions()
        .get::<PeerIdentity>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no verified peer identity"))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: Request<Streaming<MessageBatch>>,
    ) -> Result<Response<Ack>, Status> {
        let peer = identity(&request)?;
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = stopped(&mut stop) => break,
                next = stream.message() => next,
            };
            match next {
                Ok(Some(batch)) => self.deliver(&peer, batch)?,
                Ok(None) => break,
                Err(status) => {
                    tracing::warn!(peer = %peer.name, remote = %peer.remote, "peer stream failed: {status}");
                    return Err(status);
                }
            }
        }
        Ok(Response::new(Ack {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<SnapshotAck>, Status> {
        let peer = identity(&request)?;
        let Some(mailbox) = self.mailbox.get() else {
            return Err(Status::unavailable("no local node yet"));
        };
        let stream = request.into_inner();
        let mut stop = self.stop.clone();
        let result = tokio::select! {
            biased;
            _ = stopped(&mut stop) => Err(Status::unavailable("server stopping")),
            r = snapshot::receive(&peer, stream, &mailbox) => r,
        };
        match result {
            Ok(()) => Ok(Response::new(SnapshotAck { accepted: true })),
            Err(status) => {
                tracing::warn!(peer = %peer.name, remote = %peer.remote, "snapshot refused: {}", status.message());
                Err(status)
            }
        }
    }
}
