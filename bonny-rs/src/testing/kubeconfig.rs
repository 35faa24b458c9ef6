//! Kubeconfig files for the environment's users, and clients built from them.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Error;

/// A static bearer token and the kubeconfig file that carries it.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) token: String,
    pub(crate) kubeconfig: PathBuf,
}

impl Credentials {
    pub(crate) fn new(user: &str, dir: &Path) -> Credentials {
        Credentials {
            user: user.to_owned(),
            token: random_token(),
            kubeconfig: dir.join(format!("{user}.kubeconfig")),
        }
    }
}

/// 128 random bits in hex: unguessable enough for a loopback test server.
pub(crate) fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Writes a kubeconfig for `server` that trusts `ca_pem` and sends `token`.
pub(crate) fn write(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> Result<(), Error> {
    write_namespaced(path, server, ca_pem, user, token, "default")
}

/// As [`write`], with `namespace` as the context's default namespace.
pub(crate) fn write_namespaced(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
    namespace: &str,
) -> Result<(), Error> {
    std::fs::write(path, render(server, ca_pem, user, token, namespace))
        .map_err(|e| Error::io(format!("write the kubeconfig {}", path.display()), e))
}

fn render(server: &str, ca_pem: &str, user: &str, token: &str, namespace: &str) -> String {
    // JSON strings are YAML scalars, and quoting every value keeps the document valid
    // whatever the user name holds.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: bonny-testing\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca_data}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             token: {token}\n\
         contexts:\n\
         - name: bonny-testing\n  \
           context:\n    \
             cluster: bonny-testing\n    \
             user: {user}\n    \
             namespace: {namespace}\n\
         current-context: bonny-testing\n",
        server = q(server),
        ca_data = q(&ca_data),
        user = q(user),
        token = q(token),
        namespace = q(namespace),
    )
}

/// A client from a kubeconfig file written by [`write`].
pub(crate) async fn client(path: &Path) -> Result<kube::Client, Error> {
    let kubeconfig_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(Box::new(e)))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| kubeconfig_error(Box::new(e)))?;
    kube::Client::try_from(config).map_err(|e| kubeconfig_error(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_kubeconfig_parses() {
        let text = render("https://127.0.0.1:6443", "PEM", "al\"ice", "abc", "ops");
        let parsed = Kubeconfig::from_yaml(&text).expect("valid kubeconfig");
        assert_eq!(parsed.current_context.as_deref(), Some("bonny-testing"));
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
        assert_eq!(parsed.auth_infos[0].name, "al\"ice");
        let context = parsed.contexts[0].context.as_ref().expect("context");
        assert_eq!(context.namespace.as_deref(), Some("ops"));
    }
}
