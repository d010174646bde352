//! Certificates for the TLS fixtures, generated in the test process: certificate authorities
//! and a loopback identity that serves as both server and client certificate.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A self-signed certificate authority named `name`.
pub fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
        .expect("self-sign the CA")
}

/// The PEM files of a CA and of one identity it issued.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The identity's certificate.
    pub cert: PathBuf,
    /// The identity's private key (PKCS#8).
    pub key: PathBuf,
}

/// Writes `ca.pem`, and `identity.pem` with its key `identity.key`, into `dir`: a new CA and a
/// certificate for `127.0.0.1` it issued, good for both server and client authentication.
pub fn write_loopback_identity(dir: &Path) -> TlsFiles {
    let ca = new_ca("calico-test-ca");
    let mut params =
        CertificateParams::new(Vec::<String>::new()).expect("loopback certificate params");
    params
        .subject_alt_names
        .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("loopback key");
    let cert = params
        .signed_by(&key, &ca)
        .expect("sign the loopback certificate");
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("identity.pem"),
        key: dir.join("identity.key"),
    };
    for (path, pem) in [
        (&files.ca, ca.pem()),
        (&files.cert, cert.pem()),
        (&files.key, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
    files
}
