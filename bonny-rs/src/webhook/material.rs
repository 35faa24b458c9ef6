//! The self-managed key material as the shared Secret holds it, and the pure decisions of when
//! to renew what.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use k8s_openapi::ByteString;

use super::{
    SelfManaged,
    certs::{self, CertError, Pair},
};

pub(crate) const CA_CERT: &str = "ca.crt";
pub(crate) const CA_KEY: &str = "ca.key";
pub(crate) const CA_BUNDLE: &str = "ca-bundle.crt";
pub(crate) const TLS_CERT: &str = "tls.crt";
pub(crate) const TLS_KEY: &str = "tls.key";
/// Which CA signed the serving certificate (its PEM).
pub(crate) const TLS_ISSUER: &str = "tls.issuer";
pub(crate) const TLS_EXPIRES: &str = "bonny.dev/webhook-cert-expires";
pub(crate) const CA_EXPIRES: &str = "bonny.dev/webhook-ca-expires";
pub(crate) const CA_SINCE: &str = "bonny.dev/webhook-ca-since";
pub(crate) const HOSTS: &str = "bonny.dev/webhook-hosts";

/// Everything the replicas share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Material {
    pub(crate) ca: Pair,
    /// The CAs the API server must trust: the current one, and the previous one until the
    /// serving certificate it signed is replaced.
    pub(crate) bundle: String,
    pub(crate) serving: Pair,
    pub(crate) issuer: String,
    pub(crate) serving_expires: SystemTime,
    pub(crate) ca_expires: SystemTime,
    /// When the current CA was made.
    pub(crate) ca_since: SystemTime,
    pub(crate) hosts: String,
}

fn secs(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        .to_string()
}

fn time(text: &str) -> Option<SystemTime> {
    text.parse::<u64>()
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// What a replica should do with the material it read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Nothing yet; look again after this long.
    Keep(Duration),
    /// Issue a new serving certificate (with the current CA).
    Serving,
    /// Make a new CA; the bundle keeps the old one beside it.
    Ca,
}

impl Material {
    pub(crate) fn generate(
        operator: &str,
        hosts: &[String],
        config: &SelfManaged,
    ) -> Result<Self, CertError> {
        let now = SystemTime::now();
        let ca = certs::new_ca(operator, config.ca_validity)?;
        let serving = certs::issue(operator, &ca.key_pem, hosts, config.validity)?;
        Ok(Self {
            bundle: ca.cert_pem.clone(),
            issuer: ca.cert_pem.clone(),
            ca,
            serving,
            serving_expires: now + config.validity,
            ca_expires: now + config.ca_validity,
            ca_since: now,
            hosts: hosts.join(","),
        })
    }

    /// A new serving certificate from the current CA. A CA replaced before stays in the bundle
    /// for one more serving certificate, because replicas pick the new certificate up one by one;
    /// after that it is dropped.
    pub(crate) fn reissue(
        &self,
        operator: &str,
        hosts: &[String],
        config: &SelfManaged,
    ) -> Result<Self, CertError> {
        let now = SystemTime::now();
        let validity = config
            .validity
            .min(self.ca_expires.duration_since(now).unwrap_or_default());
        Ok(Self {
            serving: certs::issue(operator, &self.ca.key_pem, hosts, validity)?,
            issuer: self.ca.cert_pem.clone(),
            bundle: if self.issuer == self.ca.cert_pem {
                self.ca.cert_pem.clone()
            } else {
                format!("{}{}", self.ca.cert_pem, self.issuer)
            },
            serving_expires: now + validity,
            hosts: hosts.join(","),
            ..self.clone()
        })
    }

    /// A new CA, trusted beside the old one; the serving certificate stays until replicas and
    /// the API server have seen the new bundle.
    pub(crate) fn new_ca(&self, operator: &str, config: &SelfManaged) -> Result<Self, CertError> {
        let now = SystemTime::now();
        let ca = certs::new_ca(operator, config.ca_validity)?;
        Ok(Self {
            bundle: format!("{}{}", ca.cert_pem, self.issuer),
            ca,
            ca_expires: now + config.ca_validity,
            ca_since: now,
            ..self.clone()
        })
    }

    /// The pure renewal decision at `now`.
    pub(crate) fn renewal(
        &self,
        now: SystemTime,
        hosts: &[String],
        config: &SelfManaged,
    ) -> Renewal {
        let left = |t: SystemTime| t.duration_since(now).unwrap_or_default();
        if left(self.ca_expires) <= config.ca_validity / 3 && self.issuer == self.ca.cert_pem {
            return Renewal::Ca;
        }
        let settled = now.duration_since(self.ca_since).unwrap_or_default() >= config.propagation();
        if self.hosts != hosts.join(",")
            || left(self.serving_expires) <= config.rotate_before
            || (self.issuer != self.ca.cert_pem && settled)
        {
            return Renewal::Serving;
        }
        let mut next = left(self.serving_expires).saturating_sub(config.rotate_before);
        if self.issuer != self.ca.cert_pem {
            next = next.min(config.propagation());
        }
        Renewal::Keep(next.min(config.check_every()))
    }

    pub(crate) fn to_secret(&self) -> (BTreeMap<String, ByteString>, BTreeMap<String, String>) {
        let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
        let data = BTreeMap::from([
            (CA_CERT.to_owned(), bytes(&self.ca.cert_pem)),
            (CA_KEY.to_owned(), bytes(&self.ca.key_pem)),
            (CA_BUNDLE.to_owned(), bytes(&self.bundle)),
            (TLS_CERT.to_owned(), bytes(&self.serving.cert_pem)),
            (TLS_KEY.to_owned(), bytes(&self.serving.key_pem)),
            (TLS_ISSUER.to_owned(), bytes(&self.issuer)),
        ]);
        let annotations = BTreeMap::from([
            (TLS_EXPIRES.to_owned(), secs(self.serving_expires)),
            (CA_EXPIRES.to_owned(), secs(self.ca_expires)),
            (CA_SINCE.to_owned(), secs(self.ca_since)),
            (HOSTS.to_owned(), self.hosts.clone()),
        ]);
        (data, annotations)
    }

    /// Read the material back; `None` when a part is missing (the Secret is then rewritten).
    pub(crate) fn from_secret(
        data: &BTreeMap<String, ByteString>,
        annotations: &BTreeMap<String, String>,
    ) -> Option<Self> {
        let text = |key: &str| {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let when = |key: &str| annotations.get(key).and_then(|t| time(t));
        Some(Self {
            ca: Pair {
                cert_pem: text(CA_CERT)?,
                key_pem: text(CA_KEY)?,
            },
            bundle: text(CA_BUNDLE)?,
            serving: Pair {
                cert_pem: text(TLS_CERT)?,
                key_pem: text(TLS_KEY)?,
            },
            issuer: text(TLS_ISSUER)?,
            serving_expires: when(TLS_EXPIRES)?,
            ca_expires: when(CA_EXPIRES)?,
            ca_since: when(CA_SINCE)?,
            hosts: annotations.get(HOSTS)?.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> SelfManaged {
        SelfManaged::default()
            .validity(Duration::from_secs(30))
            .rotate_before(Duration::from_secs(10))
            .ca_validity(Duration::from_secs(3600))
    }

    #[test]
    fn the_secret_round_trips_and_a_fresh_certificate_is_kept() {
        let hosts = vec!["127.0.0.1".to_owned()];
        let material = Material::generate("op", &hosts, &config()).unwrap();
        let (data, annotations) = material.to_secret();
        let back = Material::from_secret(&data, &annotations).unwrap();
        // Times are kept to the second.
        assert_eq!(back.serving, material.serving);
        assert_eq!(back.bundle, material.bundle);
        let now = SystemTime::now();
        assert!(matches!(
            back.renewal(now, &hosts, &config()),
            Renewal::Keep(_)
        ));
        assert_eq!(
            back.renewal(now + Duration::from_secs(21), &hosts, &config()),
            Renewal::Serving
        );
        assert_eq!(
            back.renewal(now, &["other".to_owned()], &config()),
            Renewal::Serving,
            "changed hosts need a new certificate"
        );
    }

    #[test]
    fn a_new_ca_is_trusted_beside_the_old_until_the_serving_certificate_follows() {
        let hosts = vec!["127.0.0.1".to_owned()];
        let config = config();
        let material = Material::generate("op", &hosts, &config).unwrap();
        let late = SystemTime::now() + Duration::from_secs(2500);
        assert_eq!(material.renewal(late, &hosts, &config), Renewal::Ca);
        let rotated = material.new_ca("op", &config).unwrap();
        assert!(rotated.bundle.contains(&material.ca.cert_pem));
        assert!(rotated.bundle.contains(&rotated.ca.cert_pem));
        assert_eq!(
            rotated.serving, material.serving,
            "still served until settled"
        );
        let now = SystemTime::now();
        assert!(matches!(
            rotated.renewal(now, &hosts, &config),
            Renewal::Keep(_)
        ));
        let settled = now + config.propagation();
        assert_eq!(rotated.renewal(settled, &hosts, &config), Renewal::Serving);
        let reissued = rotated.reissue("op", &hosts, &config).unwrap();
        assert!(
            reissued.bundle.contains(&material.ca.cert_pem),
            "kept while replicas still serve the old certificate"
        );
        assert_eq!(reissued.issuer, reissued.ca.cert_pem);
        let next = reissued.reissue("op", &hosts, &config).unwrap();
        assert_eq!(next.bundle, next.ca.cert_pem, "the old CA is dropped");
    }
}
