//! TLS for `https` etcd endpoints: the configured CA, certificate and key files, read once and
//! checked before any connection is made.

use std::path::Path;
use std::sync::Arc;

use etcd_client::{Certificate, Identity, TlsOptions};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::EtcdSettings;
use crate::error::{Code, Error, Result};
use crate::file::{MAX_PEM_FILE_LEN, read_config_file};

/// TLS options for `https` endpoints from the configured CA, certificate and key files, each
/// read once and checked before any connection is made.
pub(super) fn tls_options(settings: &EtcdSettings) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    let ca = match &settings.ca_cert_file {
        Some(path) => Some((
            path.as_path(),
            read_config_file(path, CA_KEY, MAX_PEM_FILE_LEN)?,
        )),
        None => None,
    };
    let identity = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => Some((
            (
                cert.as_path(),
                read_config_file(cert, CERT_KEY, MAX_PEM_FILE_LEN)?,
            ),
            (
                key.as_path(),
                read_config_file(key, KEY_KEY, MAX_PEM_FILE_LEN)?,
            ),
        )),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("{CERT_KEY} {} given without {KEY_KEY}", cert.display()),
            ));
        }
        (None, Some(key)) => {
            return Err(Error::new(
                Code::InvalidConfig,
                format!("{KEY_KEY} {} given without {CERT_KEY}", key.display()),
            ));
        }
    };
    check_tls_files(ca.as_ref(), identity.as_ref())?;
    if let Some((_, pem)) = ca {
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    if let Some(((_, cert), (_, key))) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(tls)
}

const CA_KEY: &str = "etcd_ca_cert_file";
const CERT_KEY: &str = "etcd_cert_file";
const KEY_KEY: &str = "etcd_key_file";

/// A file's path and contents.
type PemFile<'a> = (&'a Path, Vec<u8>);

/// Checks what the TLS handshake would otherwise find out late and cryptically: the CA file
/// holds at least one CA certificate, the certificate file at least one certificate, the key
/// file a private key, and the key belongs to the certificate (rustls compares the public keys
/// when the client identity is set up). Each failure is an invalid config naming the file.
fn check_tls_files(ca: Option<&PemFile>, identity: Option<&(PemFile, PemFile)>) -> Result<()> {
    let invalid = |key: &str, path: &Path, what: String| {
        Error::new(
            Code::InvalidConfig,
            format!("{key} {}: {what}", path.display()),
        )
    };
    let mut roots = rustls::RootCertStore::empty();
    if let Some((path, pem)) = ca {
        for cert in certificates(CA_KEY, path, pem)? {
            roots.add(cert).map_err(|err| {
                invalid(CA_KEY, path, format!("not a usable CA certificate: {err}"))
            })?;
        }
    }
    let Some(((cert_path, cert_pem), (key_path, key_pem))) = identity else {
        return Ok(());
    };
    let chain = certificates(CERT_KEY, cert_path, cert_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| {
        invalid(
            KEY_KEY,
            key_path,
            format!("no PEM private key in it ({err})"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::internal(format!("set up TLS: {err}")))?
        .with_root_certificates(roots);
    match builder.with_client_auth_cert(chain, key) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(invalid(
                KEY_KEY,
                key_path,
                format!(
                    "the key does not belong to the certificate in {CERT_KEY} {}",
                    cert_path.display()
                ),
            ))
        }
        Err(rustls::Error::InvalidCertificate(err)) => Err(invalid(
            CERT_KEY,
            cert_path,
            format!("not a usable certificate: {err}"),
        )),
        Err(err) => Err(Error::new(
            Code::InvalidConfig,
            format!(
                "{CERT_KEY} {} with {KEY_KEY} {}: unusable as a TLS client identity: {err}",
                cert_path.display(),
                key_path.display()
            ),
        )),
    }
}

/// The PEM certificates in a file; none, or PEM that does not decode, is an error.
fn certificates(key: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|err| {
            Error::new(
                Code::InvalidConfig,
                format!("{key} {}: PEM that does not decode: {err}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::new(
            Code::InvalidConfig,
            format!(
                "{key} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings_with_files(
        ca: Option<&str>,
        cert: Option<&str>,
        key: Option<&str>,
    ) -> EtcdSettings {
        EtcdSettings {
            endpoints: vec!["https://127.0.0.1:1".into()],
            ca_cert_file: ca.map(Into::into),
            cert_file: cert.map(Into::into),
            key_file: key.map(Into::into),
            credentials: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn unreadable_tls_files_are_invalid_config() {
        let settings = settings_with_files(Some("/nonexistent/calico-ca.pem"), None, None);
        let err = tls_options(&settings).err().unwrap();
        assert_eq!(err.code(), Code::InvalidConfig);
        assert!(err.msg().contains("/nonexistent/calico-ca.pem"), "{err:?}");
    }

    #[test]
    fn certificate_and_key_come_together() {
        let cases = [
            (
                Some("/c.pem"),
                None,
                "etcd_cert_file /c.pem given without etcd_key_file",
            ),
            (
                None,
                Some("/k.pem"),
                "etcd_key_file /k.pem given without etcd_cert_file",
            ),
        ];
        for (cert, key, want) in cases {
            let err = tls_options(&settings_with_files(None, cert, key))
                .err()
                .unwrap();
            assert_eq!((err.code(), err.msg()), (Code::InvalidConfig, want));
        }
    }
}
