//! Member ids: the Raft id of a replica is derived from its name, so every layer (the
//! daemon, the transport's certificate check, the store's member table) agrees on it
//! without a registry.

/// The Raft id of the member called `name`: FNV-1a 64 of the name's bytes, masked to
/// 63 bits, never 0. Stable across versions and platforms; the daemon derives its
/// Raft ids with it, and the transport checks every message's `from` against the id of
/// the name in the sender's certificate.
pub fn member_id(name: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    match h & (u64::MAX >> 1) {
        0 => 1,
        id => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
