//! Arbitrary bytes as a Raft entry's payload: `Proposal::decode` (postcard) must return
//! an error or a proposal, never panic; a decoded proposal re-encodes to one that
//! decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_store::Proposal;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Proposal::decode(data) {
        let again = Proposal::decode(&p.encode());
        assert_eq!(again.as_ref().ok(), Some(&p), "re-encoding changed {p:?}");
    }
});
