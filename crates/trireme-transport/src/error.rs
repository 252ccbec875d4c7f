//! Error types, one per operation family.

use std::path::PathBuf;

/// Making or loading certificates and keys.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("invalid {what}: {reason}")]
    InvalidPem { what: &'static str, reason: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: String },
}

/// Building the TLS configuration of a member.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("this member's certificate is not a peer certificate: {0}")]
    NotPeer(#[from] PeerError),
}

/// Why a certificate presented on the peer port is not a member's peer certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("no certificate presented")]
    NoCertificate,
    #[error("unparsable certificate: {0}")]
    Unparsable(String),
    #[error("extended key usage lacks {0} (not a peer certificate)")]
    MissingUsage(&'static str),
    #[error("no Subject CN (member name)")]
    NoCommonName,
    #[error("certificate of {name} (member id {got}) presented for member id {expected}")]
    WrongMember {
        name: String,
        got: u64,
        expected: u64,
    },
}

/// Running the peer server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error("serve: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Configuring the client side.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid peer url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("peer id must not be 0")]
    ZeroId,
}
