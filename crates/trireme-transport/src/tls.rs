//! The TLS side of a member: one CA, one peer certificate, used both to serve and to
//! dial; and the check that makes a certificate a *peer* certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use x509_parser::prelude::parse_x509_certificate;

use crate::error::{PeerError, PkiError, TlsError};
use crate::identity::member_id;
use crate::pki;

/// Installs ring as the process's rustls crypto provider, once; later calls (and a
/// provider installed by someone else) are fine. The configurations built here name
/// ring explicitly, so this only matters for other rustls users in the process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configurations of one member, built from the cluster CA and the member's
/// peer certificate and key. Cheap to clone.
#[derive(Clone)]
pub struct PeerTls {
    /// This member's name (its certificate's CN).
    name: String,
    /// Requires a client certificate chaining to the CA; ALPN h2.
    server: Arc<ServerConfig>,
    /// Verifies the server against the CA and the dialled host; presents our
    /// certificate; ALPN h2.
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads the CA certificate, the peer certificate (chain) and its key from PEM
    /// files; errors name the file at fault.
    pub fn from_files(
        ca: impl AsRef<Path>,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<PeerTls, TlsError> {
        let ca_certs = pki::load_certs(ca)?;
        let chain = pki::load_certs(cert.as_ref())?;
        let key = pki::load_key(key)?;
        PeerTls::new(ca_certs, chain, key).map_err(|e| match e {
            TlsError::NotPeer(p) => TlsError::Pki(PkiError::Invalid {
                path: cert.as_ref().to_path_buf(),
                reason: format!("not a peer certificate: {p}"),
            }),
            e => e,
        })
    }

    /// The same from PEM text.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<PeerTls, TlsError> {
        PeerTls::new(
            pki::parse_certs(ca, Path::new("<CA PEM>"))?,
            pki::parse_certs(cert, Path::new("<peer certificate PEM>"))?,
            pki::parse_key(key, Path::new("<peer key PEM>"))?,
        )
    }

    /// From DER: the CA certificates, this member's chain (leaf first) and its key.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<PeerTls, TlsError> {
        install_crypto_provider();
        let leaf = chain.first().ok_or(PeerError::NoCertificate)?;
        let name = peer_name(leaf)?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c)?;
        }
        let roots = Arc::new(roots);

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::clone(&roots), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(server_verifier)
            .with_client_auth_cert(chain, key)?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(PeerTls {
            name,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// This member's name, from its certificate.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This member's id: `member_id(name)`.
    pub fn member_id(&self) -> u64 {
        member_id(&self.name)
    }

    pub(crate) fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.client)
    }
}

/// The member name of a peer certificate: its extended key usage must contain both
/// serverAuth and clientAuth (an API client certificate has clientAuth only, an API
/// serving certificate serverAuth only), and its Subject CN is the name. Chain
/// validation is rustls's job; this is the policy on top.
pub(crate) fn peer_name(leaf: &CertificateDer<'_>) -> Result<String, PeerError> {
    let (_, cert) =
        parse_x509_certificate(leaf.as_ref()).map_err(|e| PeerError::Unparsable(e.to_string()))?;
    let eku = cert
        .extended_key_usage()
        .map_err(|e| PeerError::Unparsable(e.to_string()))?
        .ok_or(PeerError::MissingUsage("serverAuth and clientAuth"))?
        .value;
    if !eku.server_auth {
        return Err(PeerError::MissingUsage("serverAuth"));
    }
    if !eku.client_auth {
        return Err(PeerError::MissingUsage("clientAuth"));
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .ok_or(PeerError::NoCommonName)?
        .as_str()
        .map_err(|e| PeerError::Unparsable(e.to_string()))?;
    if cn.is_empty() {
        return Err(PeerError::NoCommonName);
    }
    Ok(cn.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{generate_ca, issue_api_server, issue_client, issue_peer};

    fn der(pem: &str) -> CertificateDer<'static> {
        pki::parse_certs(pem.as_bytes(), Path::new("t")).unwrap()[0].clone()
    }

    #[test]
    fn only_peer_certificates_name_a_member() {
        let ca = generate_ca("ca").unwrap();
        let peer = issue_peer(&ca, "replica-1", &["127.0.0.1".into()]).unwrap();
        assert_eq!(peer_name(&der(&peer.cert_pem)).unwrap(), "replica-1");
        let admin = issue_client(&ca, "admin", &["system:masters".into()]).unwrap();
        assert_eq!(
            peer_name(&der(&admin.cert_pem)),
            Err(PeerError::MissingUsage("serverAuth"))
        );
        let api = issue_api_server(&ca, "api", &["127.0.0.1".into()]).unwrap();
        assert_eq!(
            peer_name(&der(&api.cert_pem)),
            Err(PeerError::MissingUsage("clientAuth"))
        );
        assert_eq!(
            peer_name(&der(ca.cert_pem())),
            Err(PeerError::MissingUsage("serverAuth and clientAuth"))
        );
    }

    #[test]
    fn peer_tls_is_built_from_files_and_refuses_a_non_peer_certificate() {
        let ca = generate_ca("ca").unwrap();
        let peer = issue_peer(&ca, "replica-1", &["127.0.0.1".into()]).unwrap();
        let admin = issue_client(&ca, "admin", &[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(p("peer.crt"), &peer.cert_pem).unwrap();
        std::fs::write(p("peer.key"), &peer.key_pem).unwrap();
        std::fs::write(p("admin.crt"), &admin.cert_pem).unwrap();
        std::fs::write(p("admin.key"), &admin.key_pem).unwrap();
        let tls = PeerTls::from_files(p("ca.crt"), p("peer.crt"), p("peer.key")).unwrap();
        assert_eq!(tls.name(), "replica-1");
        assert_eq!(tls.member_id(), member_id("replica-1"));
        let e = PeerTls::from_files(p("ca.crt"), p("admin.crt"), p("admin.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("admin.crt") && e.contains("peer"), "{e}");
        let e = PeerTls::from_files(p("nope.crt"), p("peer.crt"), p("peer.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.crt"), "{e}");
        // A key that does not match the certificate.
        let e = PeerTls::from_files(p("ca.crt"), p("peer.crt"), p("admin.key"));
        assert!(e.is_err());
    }
}
