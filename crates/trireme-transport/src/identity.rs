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

    #[test]
    fn member_ids_are_stable_nonzero_and_63_bit() {
        // Fixed values: the daemon persists these as Raft ids; they must never change.
        assert_eq!(member_id(""), 0xcbf2_9ce4_8422_2325 & (u64::MAX >> 1));
        assert_eq!(member_id("a"), 0xaf63_dc4c_8601_ec8c & (u64::MAX >> 1));
        for name in ["replica-1", "replica-2", "replica-3", "x"] {
            let id = member_id(name);
            assert_ne!(id, 0);
            assert_eq!(id >> 63, 0);
            assert_eq!(id, member_id(name));
        }
        assert_ne!(member_id("replica-1"), member_id("replica-2"));
    }
}
