//! The cluster PKI: a CA, and the three kinds of certificates it issues.
//!
//! | kind | EKU | Subject | used by |
//! | --- | --- | --- | --- |
//! | peer | serverAuth + clientAuth | CN = member name | the peer port, both ways |
//! | API server | serverAuth | CN = name | the HTTPS API port |
//! | client | clientAuth | CN = user, O = each group | kubectl, ctl, admin |
//!
//! The peer port accepts only peer certificates: both usages are what tells a member
//! from an API server or a user, all signed by the same CA. Every certificate is valid
//! for ten years from a day ago (a development and small-cluster tool; rotate by
//! re-issuing).

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::PkiError;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster CA: signs every peer, API server and client certificate.
pub struct Ca {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads a CA written earlier from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::InvalidPem {
            what: "CA key",
            reason: e.to_string(),
        })?;
        // Certificates signed with a key that is not the CA's would be refused by
        // every peer: check the pair before issuing anything.
        let der = parse_certs(cert_pem.as_bytes(), Path::new("CA certificate"))?;
        let first = der.first().ok_or_else(|| PkiError::InvalidPem {
            what: "CA certificate",
            reason: "no certificate in it".into(),
        })?;
        let (_, cert) = x509_parser::parse_x509_certificate(first.as_ref()).map_err(|e| {
            PkiError::InvalidPem {
                what: "CA certificate",
                reason: e.to_string(),
            }
        })?;
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::InvalidPem {
                what: "CA key",
                reason: "it is not the key of the CA certificate".into(),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| PkiError::InvalidPem {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}

/// Ten years from a day ago (the day absorbs clock skew between machines).
fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
}

fn serial(params: &mut CertificateParams) {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&bytes));
}

/// Generates a new self-signed cluster CA.
pub fn generate_ca(common_name: &str) -> Result<Ca, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params);
    serial(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let key_pem = key.serialize_pem();
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem,
        issuer: Issuer::new(params, key),
    })
}

/// Subject alternative names: IP addresses as IP SANs, everything else as DNS names.
fn sans(hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => h
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e: rcgen::Error| PkiError::Name {
                    name: h.clone(),
                    reason: e.to_string(),
                }),
        })
        .collect()
}

fn leaf(
    ca: &Ca,
    dn: DistinguishedName,
    hosts: &[String],
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> Result<CertifiedKey, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = sans(hosts)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = usages;
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    serial(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn check_name(name: &str) -> Result<(), PkiError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(PkiError::Name {
            name: name.to_string(),
            reason: "must be non-empty printable text".into(),
        });
    }
    Ok(())
}

/// A member's peer certificate: CN = the member name, SANs = the hosts its peer port
/// is reached at, EKU serverAuth and clientAuth.
pub fn issue_peer(ca: &Ca, name: &str, hosts: &[String]) -> Result<CertifiedKey, PkiError> {
    check_name(name)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    leaf(
        ca,
        dn,
        hosts,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

/// An API serving certificate: EKU serverAuth only, SANs = every address clients use
/// (each replica and the load balancer).
pub fn issue_api_server(ca: &Ca, name: &str, sans: &[String]) -> Result<CertifiedKey, PkiError> {
    check_name(name)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    leaf(ca, dn, sans, vec![ExtendedKeyUsagePurpose::ServerAuth])
}

/// Groups a client certificate can carry (a limit of rcgen 0.14's subject model).
pub const MAX_GROUPS: usize = 2;

/// A client certificate: CN = user, one O per group (as Kubernetes reads them; at most
/// [`MAX_GROUPS`]), EKU clientAuth only.
pub fn issue_client(ca: &Ca, user: &str, groups: &[String]) -> Result<CertifiedKey, PkiError> {
    check_name(user)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    // rcgen keeps a distinguished name as a map from attribute type: a second O is
    // pushed under a custom type with the same OID (2.5.4.10). A third cannot be.
    if groups.len() > MAX_GROUPS {
        return Err(PkiError::Name {
            name: groups.join(","),
            reason: format!("at most {MAX_GROUPS} groups per client certificate"),
        });
    }
    let types = [
        DnType::OrganizationName,
        DnType::CustomDnType(vec![2, 5, 4, 10]),
    ];
    for (g, ty) in groups.iter().zip(types) {
        check_name(g)?;
        dn.push(ty, g.as_str());
    }
    leaf(ca, dn, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
}

/// Parses every certificate in PEM text; `what` names the source in errors.
pub fn parse_certs(pem: &[u8], what: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid {
            path: what.to_path_buf(),
            reason: format!("not valid PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Invalid {
            path: what.to_path_buf(),
            reason: "contains no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, PKCS#1 or SEC1) in PEM text.
pub fn parse_key(pem: &[u8], what: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| PkiError::Invalid {
        path: what.to_path_buf(),
        reason: format!("contains no valid PEM private key: {e}"),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    std::fs::read(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads the certificates of a PEM file; the error names the file.
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let path = path.as_ref();
    parse_certs(&read(path)?, path)
}

/// Loads the private key of a PEM file; the error names the file.
pub fn load_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, PkiError> {
    let path = path.as_ref();
    parse_key(&read(path)?, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::{parse_x509_certificate, X509Certificate};

    fn with_cert<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let der = parse_certs(pem.as_bytes(), Path::new("test")).unwrap();
        let (_, cert) = parse_x509_certificate(der[0].as_ref()).unwrap();
        f(&cert)
    }

    fn cn(cert: &X509Certificate<'_>) -> String {
        let cn = cert.subject().iter_common_name().next().unwrap();
        cn.as_str().unwrap().to_string()
    }

    fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
        let e = cert.extended_key_usage().unwrap().unwrap().value;
        (e.server_auth, e.client_auth)
    }

    #[test]
    fn a_ca_key_that_is_not_the_certificates_is_refused() {
        let a = generate_ca("a").unwrap();
        let b = generate_ca("b").unwrap();
        assert!(Ca::from_pem(a.cert_pem(), a.key_pem()).is_ok());
        let e = Ca::from_pem(a.cert_pem(), b.key_pem())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the key of the CA certificate"), "{e}");
    }

    #[test]
    fn ca_is_a_ca_and_round_trips_through_pem() {
        let ca = generate_ca("trireme test CA").unwrap();
        with_cert(ca.cert_pem(), |c| {
            assert!(c.is_ca());
            assert_eq!(cn(c), "trireme test CA");
        });
        let loaded = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        // A leaf issued by the reloaded CA names it as issuer.
        let peer = issue_peer(&loaded, "replica-1", &["127.0.0.1".into()]).unwrap();
        with_cert(&peer.cert_pem, |c| {
            assert_eq!(
                c.issuer()
                    .iter_common_name()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap(),
                "trireme test CA"
            );
        });
        assert!(Ca::from_pem("nonsense", ca.key_pem()).is_err());
        assert!(Ca::from_pem(ca.cert_pem(), "nonsense").is_err());
    }

    #[test]
    fn peer_certificates_have_both_usages_the_name_and_ip_and_dns_sans() {
        let ca = generate_ca("ca").unwrap();
        let hosts = vec!["127.0.0.1".to_string(), "replica-1.example".to_string()];
        let peer = issue_peer(&ca, "replica-1", &hosts).unwrap();
        with_cert(&peer.cert_pem, |c| {
            assert_eq!(cn(c), "replica-1");
            assert_eq!(eku(c), (true, true));
            assert!(!c.is_ca());
            let san = c.subject_alternative_name().unwrap().unwrap().value;
            assert!(san
                .general_names
                .contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
            assert!(san
                .general_names
                .contains(&GeneralName::DNSName("replica-1.example")));
        });
        assert!(parse_key(peer.key_pem.as_bytes(), Path::new("k")).is_ok());
    }

    #[test]
    fn api_server_and_client_certificates_have_one_usage_each() {
        let ca = generate_ca("ca").unwrap();
        let api = issue_api_server(&ca, "api", &["10.0.0.1".into(), "lb.local".into()]).unwrap();
        with_cert(&api.cert_pem, |c| assert_eq!(eku(c), (true, false)));
        let groups = vec!["system:masters".to_string(), "ops".to_string()];
        let admin = issue_client(&ca, "admin", &groups).unwrap();
        with_cert(&admin.cert_pem, |c| {
            assert_eq!(eku(c), (false, true));
            assert_eq!(cn(c), "admin");
            let orgs: Vec<&str> = c
                .subject()
                .iter_organization()
                .map(|o| o.as_str().unwrap())
                .collect();
            assert_eq!(orgs, ["system:masters", "ops"]);
        });
    }

    #[test]
    fn bad_names_are_refused() {
        let ca = generate_ca("ca").unwrap();
        assert!(matches!(
            issue_peer(&ca, "", &[]),
            Err(PkiError::Name { .. })
        ));
        assert!(matches!(
            issue_peer(&ca, "x", &["b\u{e4}d.host".into()]),
            Err(PkiError::Name { .. })
        ));
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert!(matches!(
            issue_client(&ca, "u", &three),
            Err(PkiError::Name { .. })
        ));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.crt"), "{e}");
        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let e = load_certs(&garbage).unwrap_err().to_string();
        assert!(e.contains("garbage.crt"), "{e}");
        let e = load_key(&garbage).unwrap_err().to_string();
        assert!(e.contains("garbage.crt"), "{e}");
    }
}
