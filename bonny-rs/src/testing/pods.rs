//! Clients that authenticate as a pod: a ServiceAccount, a Pod object that uses it (no kubelet
//! runs it) and a token bound to that Pod through the TokenRequest API, as every real pod
//! gets. The API server then puts the pod's name in the user's `extra`
//! ([`POD_NAME_EXTRA`](super::POD_NAME_EXTRA)), which an admission policy can check.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use super::{Error, kubeconfig};

/// How long a pod token is valid: longer than any test.
const TOKEN_SECONDS: i64 = 24 * 60 * 60;
/// The image named in the Pod object; nothing ever pulls it.
const IMAGE: &str = "bonny.invalid/never-run:0";

/// A pod's identity on the test API server: its names and a kubeconfig whose token is bound
/// to the Pod. From [`TestEnv::pod_identity`](super::TestEnv::pod_identity).
///
/// Requests through it are made by user `system:serviceaccount:<namespace>:<service account>`
/// with groups `system:serviceaccounts`, `system:serviceaccounts:<namespace>` and
/// `system:authenticated`; RBAC grants it nothing until a binding does. The token stops
/// working when the Pod object is deleted.
#[derive(Debug, Clone)]
pub struct PodIdentity {
    namespace: String,
    service_account: String,
    pod: String,
    pod_uid: String,
    kubeconfig: PathBuf,
}

impl PodIdentity {
    /// Creates the ServiceAccount (if missing) and the Pod (if missing), requests a token bound
    /// to the Pod, and writes a kubeconfig for it into `dir`.
    pub(crate) async fn create(
        admin: &kube::Client,
        server_url: &str,
        ca_pem: &str,
        dir: &Path,
        namespace: &str,
        service_account: &str,
        pod: &str,
    ) -> Result<PodIdentity, Error> {
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(service_account.to_owned()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        create_if_missing(&accounts, &account, || {
            format!("create ServiceAccount {namespace}/{service_account}")
        })
        .await?;

        let pods: Api<Pod> = Api::namespaced(admin.clone(), namespace);
        let object = Pod {
            metadata: ObjectMeta {
                name: Some(pod.to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: Some(service_account.to_owned()),
                automount_service_account_token: Some(false),
                containers: vec![Container {
                    name: "main".to_owned(),
                    image: Some(IMAGE.to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let created =
            create_if_missing(&pods, &object, || format!("create Pod {namespace}/{pod}")).await?;
        let identity_error = |reason: String| Error::PodIdentity {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            reason,
        };
        let uses = created
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref());
        if uses != Some(service_account) {
            return Err(identity_error(format!(
                "the existing Pod runs as service account {uses:?}, not {service_account:?}; \
                 pick another pod name"
            )));
        }
        let pod_uid = created.metadata.uid.clone().ok_or_else(|| {
            identity_error("the API server returned the Pod without a uid".into())
        })?;

        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_owned()),
                    kind: Some("Pod".to_owned()),
                    name: Some(pod.to_owned()),
                    uid: Some(pod_uid.clone()),
                }),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let issued = accounts
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .map_err(|e| {
                Error::kube(
                    format!("request a token for {namespace}/{service_account} bound to Pod {pod}"),
                    e,
                )
            })?;
        let token = issued
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| identity_error("the TokenRequest came back without a token".into()))?;

        let kubeconfig = dir.join(format!("pod-{namespace}-{pod}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{service_account}");
        kubeconfig::write_namespaced(&kubeconfig, server_url, ca_pem, &user, &token, namespace)?;
        tracing::debug!(%namespace, %pod, %service_account, "pod identity ready");
        Ok(PodIdentity {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod: pod.to_owned(),
            pod_uid,
            kubeconfig,
        })
    }

    /// A client that authenticates with the pod-bound token; its default namespace is the
    /// pod's.
    ///
    /// # Errors
    /// [`Error::Kubeconfig`] if the kubeconfig cannot be loaded.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        kubeconfig::client(&self.kubeconfig).await
    }

    /// The kubeconfig file, for a child process (an operator replica). It lives as long as
    /// the environment.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The Pod's name: what the API server reports as the user's pod-name extra.
    pub fn pod_name(&self) -> &str {
        &self.pod
    }

    /// The Pod's uid.
    pub fn pod_uid(&self) -> &str {
        &self.pod_uid
    }

    /// The namespace of the Pod and its ServiceAccount.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The ServiceAccount's name.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The user name requests are made as: `system:serviceaccount:<namespace>:<name>`.
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }
}

/// Creates `object`, or reads it when one of that name exists.
async fn create_if_missing<K>(
    api: &Api<K>,
    object: &K,
    action: impl Fn() -> String,
) -> Result<K, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), object).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let name = object.meta().name.clone().unwrap_or_default();
            api.get(&name).await.map_err(|e| Error::kube(action(), e))
        }
        Err(e) => Err(Error::kube(action(), e)),
    }
}
