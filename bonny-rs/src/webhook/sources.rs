//! Where the serving certificate comes from: the self-managed Secret the replicas share (and
//! the CA bundle written where the API server reads it), or files mounted into the pod.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration},
        core::v1::Secret,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client,
    api::{PostParams, Resource},
};
use tokio_util::sync::CancellationToken;

use super::{
    SelfManaged, WebhookError,
    certs::{CertSlot, Pair},
    material::{Material, Renewal},
};

/// How long to wait after a failed round before the next.
const RETRY: Duration = Duration::from_secs(2);

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// The shared Secret: created by whichever replica comes first, renewed by whichever replica
/// sees it due first; every write carries the resourceVersion it read, so a replica that loses
/// a race reads the winner's material instead of overwriting it.
pub(crate) struct SecretStore {
    pub(crate) api: Api<Secret>,
    pub(crate) name: String,
    pub(crate) operator: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) config: SelfManaged,
}

impl SecretStore {
    fn secret(&self, material: &Material, resource_version: Option<String>) -> Secret {
        let (data, annotations) = material.to_secret();
        Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                annotations: Some(annotations),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "bonny-rs".to_owned(),
                    )]
                    .into(),
                ),
                resource_version,
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Secret::default()
        }
    }

    /// One round: the material to serve now, and how long until the next round.
    pub(crate) async fn sync(&self) -> Result<(Material, Duration), WebhookError> {
        let secret_err = |source| WebhookError::Secret {
            name: self.name.clone(),
            source,
        };
        loop {
            let existing = self.api.get_opt(&self.name).await.map_err(secret_err)?;
            let (next, resource_version) = match existing {
                None => (
                    Material::generate(&self.operator, &self.hosts, &self.config)?,
                    None,
                ),
                Some(secret) => {
                    let read = Material::from_secret(
                        &secret.data.clone().unwrap_or_default(),
                        &secret.metadata.annotations.clone().unwrap_or_default(),
                    );
                    let next = match read {
                        None => {
                            tracing::warn!(secret = %self.name, "the webhook certificate Secret is incomplete; replacing it");
                            Material::generate(&self.operator, &self.hosts, &self.config)?
                        }
                        Some(material) => {
                            match material.renewal(SystemTime::now(), &self.hosts, &self.config) {
                                Renewal::Keep(after) => return Ok((material, after)),
                                Renewal::Serving => {
                                    material.reissue(&self.operator, &self.hosts, &self.config)?
                                }
                                Renewal::Ca => material.new_ca(&self.operator, &self.config)?,
                            }
                        }
                    };
                    (next, secret.metadata.resource_version.clone())
                }
            };
            let creating = resource_version.is_none();
            let secret = self.secret(&next, resource_version);
            let written = if creating {
                self.api.create(&PostParams::default(), &secret).await
            } else {
                self.api
                    .replace(&self.name, &PostParams::default(), &secret)
                    .await
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %self.name, created = creating, "wrote webhook certificates");
                    let after = match next.renewal(SystemTime::now(), &self.hosts, &self.config) {
                        Renewal::Keep(after) => after,
                        _ => Duration::ZERO,
                    };
                    return Ok((next, after));
                }
                // Another replica wrote first: read what it wrote.
                Err(err) if is_conflict(&err) => continue,
                Err(err) => return Err(secret_err(err)),
            }
        }
    }
}

/// Writes the CA bundle into our webhook configurations and the CRDs we convert.
pub(crate) struct Injector {
    pub(crate) client: Client,
    pub(crate) configuration: String,
    pub(crate) validating: BTreeSet<String>,
    pub(crate) mutating: BTreeSet<String>,
    pub(crate) crds: Vec<String>,
}

fn set(slot: &mut Option<ByteString>, bundle: &[u8]) -> bool {
    if slot.as_ref().is_some_and(|b| b.0 == bundle) {
        return false;
    }
    *slot = Some(ByteString(bundle.to_vec()));
    true
}

impl Injector {
    /// Write `bundle` everywhere it is missing; `Ok(true)` once every target that exists has
    /// it (a missing configuration is skipped: it may not be applied yet).
    pub(crate) async fn inject(&self, bundle: &str) -> Result<bool, kube::Error> {
        let bundle = bundle.as_bytes();
        let mut done = true;
        if !self.validating.is_empty() {
            done &= patch::<ValidatingWebhookConfiguration>(
                &self.client,
                &self.configuration,
                |config| {
                    let mut changed = false;
                    for hook in config.webhooks.iter_mut().flatten() {
                        if self.validating.contains(&hook.name) {
                            changed |= set(&mut hook.client_config.ca_bundle, bundle);
                        }
                    }
                    changed
                },
            )
            .await?;
        }
        if !self.mutating.is_empty() {
            done &= patch::<MutatingWebhookConfiguration>(
                &self.client,
                &self.configuration,
                |config| {
                    let mut changed = false;
                    for hook in config.webhooks.iter_mut().flatten() {
                        if self.mutating.contains(&hook.name) {
                            changed |= set(&mut hook.client_config.ca_bundle, bundle);
                        }
                    }
                    changed
                },
            )
            .await?;
        }
        for crd in &self.crds {
            done &= patch::<CustomResourceDefinition>(&self.client, crd, |crd| {
                match crd
                    .spec
                    .conversion
                    .as_mut()
                    .filter(|c| c.strategy == "Webhook")
                    .and_then(|c| c.webhook.as_mut())
                    .and_then(|w| w.client_config.as_mut())
                {
                    Some(client_config) => set(&mut client_config.ca_bundle, bundle),
                    None => false,
                }
            })
            .await?;
        }
        Ok(done)
    }
}

/// Read, change, replace with the read resourceVersion; `Ok(false)` when the object is missing
/// or another writer came between (the next round tries again).
async fn patch<K>(
    client: &Client,
    name: &str,
    change: impl Fn(&mut K) -> bool,
) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let Some(mut object) = api.get_opt(name).await? else {
        tracing::debug!(kind = %K::kind(&()), name, "not there yet to write the CA bundle into");
        return Ok(false);
    };
    if !change(&mut object) {
        return Ok(true);
    }
    match api.replace(name, &PostParams::default(), &object).await {
        Ok(_) => {
            tracing::info!(kind = %K::kind(&()), name, "wrote the webhook CA bundle");
            Ok(true)
        }
        Err(err) if is_conflict(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Keep the slot filled from the shared Secret and the bundle written, until `stop`.
pub(crate) async fn run_self_managed(
    store: SecretStore,
    injector: Injector,
    slot: Arc<CertSlot>,
    settled: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut injected: Option<String> = None;
    loop {
        let after = match store.sync().await {
            Ok((material, after)) => {
                match slot.install(&material.serving) {
                    Ok(true) => tracing::info!("serving a new webhook certificate"),
                    Ok(false) => {}
                    Err(err) => {
                        tracing::error!(error = %err, "cannot load the webhook certificate")
                    }
                }
                if injected.as_deref() != Some(material.bundle.as_str()) {
                    match injector.inject(&material.bundle).await {
                        Ok(true) => injected = Some(material.bundle.clone()),
                        Ok(false) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "cannot write the webhook CA bundle");
                        }
                    }
                }
                if injected.as_deref() == Some(material.bundle.as_str()) {
                    settled.send_replace(slot.is_loaded());
                    after
                } else {
                    after.min(RETRY)
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot sync the webhook certificates");
                RETRY
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(after.max(Duration::from_millis(200))) => {}
        }
    }
}

/// Certificates from files (`tls.crt`, `tls.key`, as cert-manager mounts them), reloaded when
/// either changes.
pub(crate) async fn run_files(
    dir: PathBuf,
    poll: Duration,
    slot: Arc<CertSlot>,
    settled: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
) {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let mut seen: Option<(SystemTime, SystemTime)> = None;
    loop {
        let stamp = |path: &PathBuf| std::fs::metadata(path).and_then(|m| m.modified());
        match (stamp(&cert), stamp(&key)) {
            (Ok(c), Ok(k)) if seen != Some((c, k)) => {
                let read = std::fs::read_to_string(&cert)
                    .and_then(|cert_pem| Ok((cert_pem, std::fs::read_to_string(&key)?)));
                match read {
                    Ok((cert_pem, key_pem)) => match slot.install(&Pair { cert_pem, key_pem }) {
                        Ok(_) => {
                            tracing::info!(dir = %dir.display(), "loaded the webhook certificate");
                            seen = Some((c, k));
                            settled.send_replace(true);
                        }
                        Err(err) => {
                            tracing::error!(dir = %dir.display(), error = %err, "cannot load the webhook certificate")
                        }
                    },
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), error = %err, "cannot read the webhook certificate")
                    }
                }
            }
            (Ok(_), Ok(_)) => {}
            (Err(err), _) | (_, Err(err)) => {
                if seen.is_none() {
                    tracing::warn!(dir = %dir.display(), error = %err, "waiting for the webhook certificate files tls.crt and tls.key");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::webhook::certs;

    /// Polls `done` every 20 ms until it holds, failing after 10 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn mounted_files_are_loaded_and_reloaded_when_they_change() {
        let dir = std::env::temp_dir().join(format!(
            "bonny-webhook-files-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = certs::new_ca("op", Duration::from_secs(3600)).unwrap();
        let hosts = vec!["127.0.0.1".to_owned()];
        let write = |pair: &Pair| {
            std::fs::write(dir.join("tls.key"), &pair.key_pem).unwrap();
            std::fs::write(dir.join("tls.crt"), &pair.cert_pem).unwrap();
        };
        let slot = Arc::new(CertSlot::default());
        let (settled, mut settled_rx) = tokio::sync::watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_files(
            dir.clone(),
            Duration::from_millis(20),
            slot.clone(),
            settled,
            stop.clone(),
        ));
        // Nothing mounted yet: not loaded, not settled.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!slot.is_loaded());
        let first = certs::issue("op", &ca.key_pem, &hosts, Duration::from_secs(60)).unwrap();
        write(&first);
        settled_rx.wait_for(|s| *s).await.unwrap();
        until("the first pair", || {
            slot.current_pair().as_ref() == Some(&first)
        })
        .await;
        // Rewritten (as cert-manager renews): the new pair is served. File times can have a
        // coarse resolution, so the rewrite waits until it shows.
        let second = certs::issue("op", &ca.key_pem, &hosts, Duration::from_secs(60)).unwrap();
        let before = std::fs::metadata(dir.join("tls.crt"))
            .unwrap()
            .modified()
            .unwrap();
        loop {
            write(&second);
            if std::fs::metadata(dir.join("tls.crt"))
                .unwrap()
                .modified()
                .unwrap()
                != before
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until("the renewed pair", || {
            slot.current_pair().as_ref() == Some(&second)
        })
        .await;
        stop.cancel();
        task.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
