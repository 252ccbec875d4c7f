//! The generated peer protocol (`proto/peer.proto`). Private to this crate.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("trireme.peer.v1");
