//! Member names, member ids, and who is at the other end of a peer connection.

use std::net::SocketAddr;

/// Re-exported from `trireme-raft`, where every layer finds it.
pub use trireme_raft::member_id;

/// A peer authenticated by the server's accept loop: it presented a certificate of the
/// cluster CA with both serverAuth and clientAuth usages. Travels to the gRPC handlers
/// as tonic connection info (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The member name: the certificate's Subject CN.
    pub name: String,
    /// `member_id(name)`: the only `from` this connection may carry.
    pub id: u64,
    /// The remote address, for logs.
    pub remote: SocketAddr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_the_raft_crates() {
        assert_eq!(member_id("replica-1"), trireme_raft::member_id("replica-1"));
    }
}
