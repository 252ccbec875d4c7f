//! # trireme-transport: the peer network of a replica
//!
//! Owns everything that travels between replicas: Raft messages and snapshot files over
//! tonic gRPC streams, under mutual TLS (rustls, ring) with certificates from the
//! cluster CA; and the small PKI that makes those certificates.
//!
//! ## Layout
//! - `identity`: [`member_id`] (from `trireme-raft`), the stable Raft id of a member
//!   name (the Subject CN of its peer certificate), and [`PeerIdentity`], who is at the
//!   other end of a connection.
//! - `pki`: [`pki::generate_ca`], [`pki::issue_peer`], [`pki::issue_api_server`],
//!   [`pki::issue_client`], [`pki::load_certs`] / [`pki::load_key`] (rcgen; errors name
//!   the file).
//! - `tls`: [`PeerTls`], the rustls server and client configurations of one member, and
//!   the check that a leaf certificate is a *peer* certificate (EKU serverAuth and
//!   clientAuth, CN = member name).
//! - `server`: [`PeerServer`], its own accept loop (TCP, TLS handshake with a timeout,
//!   peer check) feeding verified streams to tonic; [`MailboxSlot`], where the node's
//!   `Mailbox` is plugged in once the node runs.
//! - `service`: the gRPC handlers; every message's `from` must be the member id of the
//!   certificate's name and its `to` this node; a sender the node does not count as a
//!   member is told so (its stream ends with "not a member" and the applied index),
//!   which the sending side hands to its node (`Mailbox::not_a_member`).
//! - `client`: [`PeerTransport`], the `trireme_raft::Transport`: one task and one
//!   long-lived stream per peer, bounded queue, batching, reconnect with backoff.
//! - `snapshot`: streaming a snapshot file in chunks, and receiving one into a
//!   `recv-*.snap` file verified by size and crc32.
//!
//! ## Boundaries
//! prost and tonic types never leave this crate: the API speaks `eraftpb::Message`,
//! `Mailbox`, paths and PEM. Knows nothing of the state machine, the MVCC store or the
//! HTTP API. raft-rs bytes are parsed only on mutually authenticated peer connections
//! (RUSTSEC-2024-0437).

#![cfg_attr(test, allow(clippy::unwrap_used))]
// raft-rs's protobuf messages are built with `default()` and assignments.
#![allow(clippy::field_reassign_with_default)]

mod client;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod identity;
pub mod pki;
mod proto;
mod server;
mod service;
mod snapshot;
mod tls;

#[cfg(test)]
mod tests;

pub use client::{PeerTransport, TransportConfig};
pub use error::{PeerError, PkiError, ServerError, TlsError, TransportError};
pub use identity::{member_id, PeerIdentity};
pub use server::{MailboxSlot, PeerServer, ServerConfig};
pub use tls::{install_crypto_provider, PeerTls};
