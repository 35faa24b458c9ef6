//! Rendering manifests as YAML: one stream, or a kustomize tree.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::Manifests;

/// Why manifests could not be rendered or written.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// An object did not serialize.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// Which object.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// YAML output failed.
    #[error("cannot render {what} as YAML: {message}")]
    Yaml {
        /// Which object.
        what: String,
        /// Why.
        message: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}; check that the directory is writable")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One rendered object: its file name in a tree and its YAML.
struct Document {
    file: String,
    yaml: String,
}

fn document(file: String, object: &impl Serialize) -> Result<Document, RenderError> {
    // Going through serde_json drops `null`s and fixes key order, so output is deterministic.
    let value: Value = serde_json::to_value(object).map_err(|source| RenderError::Serialize {
        what: file.clone(),
        source,
    })?;
    let yaml = serde_saphyr::to_string(&value).map_err(|err| RenderError::Yaml {
        what: file.clone(),
        message: err.to_string(),
    })?;
    Ok(Document { file, yaml })
}

impl Manifests {
    fn documents(&self, crds_only: bool) -> Result<Vec<Document>, RenderError> {
        let mut docs = Vec::new();
        for crd in &self.crds {
            let name = crd.metadata.name.as_deref().unwrap_or("crd");
            docs.push(document(format!("crd-{name}.yaml"), crd)?);
        }
        if crds_only {
            return Ok(docs);
        }
        docs.push(document(
            "service-account.yaml".into(),
            &self.service_account,
        )?);
        docs.push(document("cluster-role.yaml".into(), &self.cluster_role)?);
        if let Some(binding) = &self.cluster_role_binding {
            docs.push(document("cluster-role-binding.yaml".into(), binding)?);
        }
        for binding in &self.role_bindings {
            let namespace = binding.metadata.namespace.as_deref().unwrap_or("default");
            docs.push(document(format!("role-binding-{namespace}.yaml"), binding)?);
        }
        if let Some(fence) = &self.fence {
            docs.push(document("leader-fence-lease.yaml".into(), &fence.lease)?);
            docs.push(document("leader-fence-policy.yaml".into(), &fence.policy)?);
            docs.push(document(
                "leader-fence-binding.yaml".into(),
                &fence.binding,
            )?);
        }
        if let Some(webhooks) = &self.webhooks {
            docs.push(document("webhook-secret-role.yaml".into(), &webhooks.role)?);
            docs.push(document(
                "webhook-secret-role-binding.yaml".into(),
                &webhooks.role_binding,
            )?);
            if let Some(service) = &webhooks.service {
                docs.push(document("webhook-service.yaml".into(), service)?);
            }
        }
        docs.push(document("deployment.yaml".into(), &self.deployment)?);
        if let Some(webhooks) = &self.webhooks {
            // After the Deployment: the configurations only take effect once it can answer.
            if let Some(config) = &webhooks.validating {
                docs.push(document("validating-webhooks.yaml".into(), config)?);
            }
            if let Some(config) = &webhooks.mutating {
                docs.push(document("mutating-webhooks.yaml".into(), config)?);
            }
        }
        Ok(docs)
    }

    /// Every manifest as one multi-document YAML stream, in apply order.
    ///
    /// # Errors
    /// When an object cannot be serialized.
    pub fn to_yaml(&self) -> Result<String, RenderError> {
        Ok(join(self.documents(false)?))
    }

    /// Only the CRDs, as a multi-document YAML stream.
    ///
    /// # Errors
    /// When a CRD cannot be serialized.
    pub fn crds_yaml(&self) -> Result<String, RenderError> {
        Ok(join(self.documents(true)?))
    }

    /// Write one file per object into `dir` plus a `kustomization.yaml` listing them.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn write_tree(&self, dir: &Path) -> Result<(), RenderError> {
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|source| RenderError::Write {
                path: path.display().to_string(),
                source,
            })
        };
        std::fs::create_dir_all(dir).map_err(|source| RenderError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        let docs = self.documents(false)?;
        let mut kustomization = String::from(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n",
        );
        for doc in &docs {
            write(&dir.join(&doc.file), &doc.yaml)?;
            kustomization.push_str(&format!("- {}\n", doc.file));
        }
        write(&dir.join("kustomization.yaml"), &kustomization)
    }
}

fn join(docs: Vec<Document>) -> String {
    docs.into_iter()
        .map(|doc| format!("---\n{}", doc.yaml))
        .collect::<Vec<_>>()
        .join("")
}
