//! The operator's own manifests, from its controllers and settings.

use super::Operator;
use crate::{
    Error,
    manifest::{self, Manifests, Options},
};

impl Operator {
    /// The manifests that deploy this operator: CRDs, RBAC and the Deployment.
    ///
    /// # Errors
    /// [`Error::Crd`] when a controller's CRD versions do not merge.
    pub fn manifests(&self, options: &Options) -> Result<Manifests, Error> {
        Ok(manifest::build(
            &self.name,
            &self.registrations,
            &self.namespaces,
            self.leader.as_ref(),
            self.webhooks.as_ref(),
            options,
        )?)
    }
}
