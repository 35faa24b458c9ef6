//! Key material: a CA and serving certificates generated with rcgen, and the hot-swappable
//! certificate the TLS server presents.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// Why key material could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generating a key or a certificate failed.
    #[error("cannot generate the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM certificate or key does not parse.
    #[error("the webhook {what} does not parse as PEM: {message}")]
    Pem {
        /// Which part (certificate, key).
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The key is of a type rustls cannot sign with.
    #[error("the webhook key cannot be used for TLS: {0}")]
    Key(#[source] rustls::Error),
}

/// Back-dating of every certificate, for clocks slightly behind ours.
const BACKDATE: Duration = Duration::from_secs(60);

fn ca_params(
    operator: &str,
    not_after: Option<SystemTime>,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{operator}-webhook-ca"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Some(not_after) = not_after {
        params.not_before = (SystemTime::now() - BACKDATE).into();
        params.not_after = not_after.into();
    }
    Ok(params)
}

/// A PEM certificate and its PEM key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pair {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// A new self-signed CA for `operator`, valid until `now + validity`.
pub(crate) fn new_ca(operator: &str, validity: Duration) -> Result<Pair, CertError> {
    let key = KeyPair::generate()?;
    let params = ca_params(operator, Some(SystemTime::now() + validity))?;
    let cert = params.self_signed(&key)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate for `hosts` (DNS names or IP addresses), signed by the CA whose key is
/// `ca_key_pem`, valid until `now + validity`.
pub(crate) fn issue(
    operator: &str,
    ca_key_pem: &str,
    hosts: &[String],
    validity: Duration,
) -> Result<Pair, CertError> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params(operator, None)?, ca_key);
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{operator}-webhook"));
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = (SystemTime::now() - BACKDATE).into();
    params.not_after = (SystemTime::now() + validity).into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Pair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate chain and key, ready for rustls.
pub(crate) fn certified_key(pair: &Pair) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|err| CertError::Pem {
                what: "certificate",
                message: err.to_string(),
            })?;
    if chain.is_empty() {
        return Err(CertError::Pem {
            what: "certificate",
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key =
        PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).map_err(|err| CertError::Pem {
            what: "key",
            message: err.to_string(),
        })?;
    let signer = any_supported_type(&key).map_err(CertError::Key)?;
    Ok(CertifiedKey::new(chain, signer))
}

/// The certificate the server presents, swapped in place: a new handshake gets the newest,
/// a connection already open keeps the one it was opened with.
#[derive(Debug, Default)]
pub(crate) struct CertSlot {
    current: RwLock<Option<(Pair, Arc<CertifiedKey>)>>,
}

impl CertSlot {
    /// Present `pair` from the next handshake on (no-op if it already is presented).
    pub(crate) fn install(&self, pair: &Pair) -> Result<bool, CertError> {
        if self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|(current, _)| current == pair)
        {
            return Ok(false);
        }
        let key = Arc::new(certified_key(pair)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some((pair.clone(), key));
        Ok(true)
    }

    /// The pair presented now.
    #[cfg(test)]
    pub(crate) fn current_pair(&self) -> Option<Pair> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(pair, _)| pair.clone())
    }

    /// Whether a certificate is loaded.
    pub(crate) fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, key)| key.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_loads_and_swaps() {
        let ca = new_ca("widgets", Duration::from_secs(3600)).unwrap();
        let hosts = vec!["widgets-webhook.ops.svc".to_owned(), "127.0.0.1".to_owned()];
        let first = issue("widgets", &ca.key_pem, &hosts, Duration::from_secs(60)).unwrap();
        let slot = CertSlot::default();
        assert!(!slot.is_loaded());
        assert!(slot.install(&first).unwrap());
        assert!(
            !slot.install(&first).unwrap(),
            "the same pair is not swapped twice"
        );
        let second = issue("widgets", &ca.key_pem, &hosts, Duration::from_secs(60)).unwrap();
        assert!(slot.install(&second).unwrap());
        assert!(slot.is_loaded());
    }

    #[test]
    fn a_broken_key_is_named() {
        let err = certified_key(&Pair {
            cert_pem: "nope".into(),
            key_pem: "nope".into(),
        })
        .unwrap_err();
        assert!(err.to_string().contains("certificate"), "{err}");
    }
}
